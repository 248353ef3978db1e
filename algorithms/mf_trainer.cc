#include "algorithms/mf_trainer.h"

#include <cassert>

#include "base/random.h"

namespace fedrec {

MfTrainer::MfTrainer(const MfTrainerOptions& options, uint32_t items, std::vector<Rating> train,
                     std::span<const uint64_t> user_keys)
    : options_(options),
      train_(std::move(train)),
      item_counts_(items, 0),
      model_(static_cast<uint32_t>(user_keys.size()), items, options.factors) {
  for (const Rating& r : train_) {
    assert(r.user < user_keys.size() && r.item < items);
    ++item_counts_[r.item];
  }
  model_.InitGlobal(options_.init);
  model_.InitUsers(options_.init, user_keys);
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

}  // namespace fedrec
