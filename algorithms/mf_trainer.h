// MfTrainer: local SGD training of biased MF on one shard. The same object
// trains the centralized baseline (`fedrec train`, one shard holding all
// ratings) and each site's local epochs in a federated round, which is why one
// site with E = 1 and full participation reproduces the centralized model bit
// for bit.
//
// Epoch t of shard s uses learning rate sgd.LearningRate(t) and visits every
// rating once in an order drawn from stream (seed, t, s, kShuffle): with
// sgd.parallel.schedule = kSequential the whole shard shuffled in place, one
// thread; otherwise the blocks of a grid on several threads
// (algorithms/parallel_sgd.h), kGrid giving the same model for any number of
// threads.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "algorithms/mf_model.h"
#include "algorithms/sgd.h"
#include "base/status.h"
#include "data/ratings.h"

namespace fedrec {

class ParallelSgd;

struct MfTrainerOptions {
  uint32_t factors = 32;
  MfInitOptions init;
  SgdOptions sgd;
  uint32_t shard = 0;  // site index; part of the shuffle stream
  // False: the item factors and biases are not drawn nor held until set
  // (ModelData::global_arrives).
  bool draw_global = true;
};

struct EpochStats {
  double squared_error = 0.0;  // pre-update squared errors summed over the epochs
  uint64_t updates = 0;
  double lr_sum = 0.0;    // the epochs' learning rates summed
  double lr_first = 0.0;  // the first epoch's learning rate
  double Mse() const { return updates ? squared_error / static_cast<double>(updates) : 0.0; }
};

class MfTrainer {
 public:
  // `train` uses the shard's own user indices 0..user_keys.size()-1; user row u
  // is initialised from user_keys[u] (see MfModel::InitUsers).
  // REQUIRES: every train user < user_keys.size(), every item < items.
  MfTrainer(const MfTrainerOptions& options, uint32_t items, std::vector<Rating> train,
            std::span<const uint64_t> user_keys);
  ~MfTrainer();
  MfTrainer(MfTrainer&&) noexcept;

  // Trains epochs [first_epoch, first_epoch + count) with base learning rate
  // `lr` (the rate of epoch 0; it decays per epoch by sgd.lr_decay).
  // proximal_mu > 0 (FedProx) adds (mu/2)||q_i - q_i0||^2 for every item row
  // (factors and bias), q_i0 its value when the call starts: its gradient
  // step, taken at each of the epoch's visits of the row, is folded in at the
  // end of the epoch as q_i0 + (q_i - q_i0) (1 - lr mu)^visits.
  // `drift` (SCAFFOLD), when given, holds per item row a term added to the
  // gradient at each visit (blocks matched by name: item_bias,
  // item_factors), folded in at the end of each epoch as - lr visits drift.
  EpochStats Train(uint64_t first_epoch, uint32_t count, float lr, float proximal_mu = 0.0f,
                   const std::vector<ParamBlock>* drift = nullptr);

  // Sets mu to the mean of this shard's training ratings.
  void UseShardMean() { model_.set_global_mean(TrainingMean(train_)); }

  MfModel& model() { return model_; }
  const MfModel& model() const { return model_; }
  // Training ratings in their current training order (the grid's blocks,
  // each shuffled, unless the schedule is kSequential).
  const std::vector<Rating>& train() const { return train_; }
  // Replaces the training order with `order` (a checkpoint's): error, with
  // nothing changed, unless it holds the same ratings. REQUIRES: no Train
  // call yet (the parallel schedule lays the order out on its first call,
  // and laying out a laid-out order changes nothing).
  Status RestoreOrder(std::vector<Rating> order);
  // Training ratings per item (the per-row weight of item blocks).
  const std::vector<uint32_t>& item_counts() const { return item_counts_; }

 private:
  void ApplyDrift(const std::vector<ParamBlock>& drift, float epoch_lr);

  MfTrainerOptions options_;
  std::vector<Rating> train_;
  std::vector<uint32_t> item_counts_;
  MfModel model_;
  std::unique_ptr<ParallelSgd> parallel_;  // made by the first Train (not kSequential)
};

}  // namespace fedrec
