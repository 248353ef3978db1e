#include "algorithms/mf_trainer.h"

#include <algorithm>

#include "base/random.h"

namespace fedrec {

namespace {

uint32_t MaxUserPlusOne(const std::vector<Rating>& train, std::span<const uint32_t> extra) {
  uint32_t n = 0;
  for (const Rating& r : train) n = std::max(n, r.user + 1);
  for (uint32_t u : extra) n = std::max(n, u + 1);
  return n;
}

}  // namespace

MfTrainer::MfTrainer(const MfTrainerOptions& options, uint32_t items, std::vector<Rating> train,
                     std::span<const uint32_t> extra_users)
    : options_(options), train_(std::move(train)), item_counts_(items, 0) {
  local_of_global_.assign(MaxUserPlusOne(train_, extra_users), -1);
  auto intern = [&](uint32_t global) {
    int64_t& local = local_of_global_[global];
    if (local < 0) {
      local = static_cast<int64_t>(global_users_.size());
      global_users_.push_back(global);
    }
    return static_cast<uint32_t>(local);
  };
  for (Rating& r : train_) {
    r.user = intern(r.user);
    ++item_counts_[r.item];
  }
  for (uint32_t u : extra_users) intern(u);
  model_ = MfModel(static_cast<uint32_t>(global_users_.size()), items, options_.factors);
  model_.InitGlobal(options_.init);
  model_.InitUsers(options_.init, global_users_);
}

EpochStats MfTrainer::Train(uint64_t first_epoch, uint32_t count, float lr) {
  SgdOptions sgd = options_.sgd;
  sgd.lr = lr;
  EpochStats stats;
  for (uint64_t epoch = first_epoch; epoch < first_epoch + count; ++epoch) {
    Rng rng(options_.init.seed, epoch, options_.shard, Purpose::kShuffle);
    rng.Shuffle(std::span<Rating>(train_));
    stats.squared_error += SgdEpoch(&model_, train_, sgd.LearningRate(epoch), sgd);
    stats.updates += train_.size();
  }
  return stats;
}

int64_t MfTrainer::LocalUser(uint32_t global_user) const {
  return global_user < local_of_global_.size() ? local_of_global_[global_user] : -1;
}

std::vector<Rating> MfTrainer::ToLocal(std::span<const Rating> ratings) const {
  std::vector<Rating> out;
  out.reserve(ratings.size());
  for (Rating r : ratings) {
    const int64_t local = LocalUser(r.user);
    if (local < 0) continue;
    r.user = static_cast<uint32_t>(local);
    out.push_back(r);
  }
  return out;
}

}  // namespace fedrec
