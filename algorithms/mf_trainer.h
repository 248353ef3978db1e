// MfTrainer: local SGD training of biased MF on one shard. The same object
// trains the centralized baseline (`fedrec train`, one shard holding all
// ratings) and each site's local epochs in a federated round, which is why one
// site with E = 1 and full participation reproduces the centralized model bit
// for bit.
//
// Epoch t of shard s shuffles the shard in place with stream
// (seed, t, s, kShuffle) and uses learning rate sgd.LearningRate(t).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "algorithms/mf_model.h"
#include "algorithms/sgd.h"
#include "data/ratings.h"

namespace fedrec {

struct MfTrainerOptions {
  uint32_t factors = 32;
  MfInitOptions init;
  SgdOptions sgd;
  uint32_t shard = 0;  // site index; part of the shuffle stream
};

struct EpochStats {
  double squared_error = 0.0;  // pre-update squared errors summed over the epochs
  uint64_t updates = 0;
  double Mse() const { return updates ? squared_error / static_cast<double>(updates) : 0.0; }
};

class MfTrainer {
 public:
  // `train` uses global user indices; the trainer remaps them to local rows
  // (first-seen order over `train`, then `extra_users`: users held by the shard
  // with no training ratings, e.g. only test ratings). User row init draws from
  // the global index, so it does not depend on the partition.
  MfTrainer(const MfTrainerOptions& options, uint32_t items, std::vector<Rating> train,
            std::span<const uint32_t> extra_users = {});

  // Trains epochs [first_epoch, first_epoch + count) with base learning rate
  // `lr` (the rate of epoch 0; it decays per epoch by sgd.lr_decay).
  EpochStats Train(uint64_t first_epoch, uint32_t count, float lr);

  // Sets mu to the mean of this shard's training ratings.
  void UseShardMean() { model_.set_global_mean(TrainingMean(train_)); }

  MfModel& model() { return model_; }
  const MfModel& model() const { return model_; }
  // Training ratings with local user indices, in their current (shuffled) order.
  const std::vector<Rating>& train() const { return train_; }
  // Local row of a global user, or -1 when the shard does not hold the user.
  int64_t LocalUser(uint32_t global_user) const;
  const std::vector<uint32_t>& global_users() const { return global_users_; }
  // Training ratings per item (the per-row weight of item blocks).
  const std::vector<uint32_t>& item_counts() const { return item_counts_; }
  // Copies `ratings` with users remapped to local rows; ratings of users the
  // shard does not hold are dropped.
  std::vector<Rating> ToLocal(std::span<const Rating> ratings) const;

 private:
  MfTrainerOptions options_;
  std::vector<uint32_t> global_users_;   // local row -> global user index
  std::vector<int64_t> local_of_global_; // global user index -> local row or -1
  std::vector<Rating> train_;
  std::vector<uint32_t> item_counts_;
  MfModel model_;
};

}  // namespace fedrec
