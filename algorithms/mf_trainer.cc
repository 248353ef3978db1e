#include "algorithms/mf_trainer.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <string>
#include <tuple>

#include "algorithms/parallel_sgd.h"
#include "base/random.h"

namespace fedrec {

MfTrainer::MfTrainer(const MfTrainerOptions& options, uint32_t items, std::vector<Rating> train,
                     std::span<const uint64_t> user_keys)
    : options_(options),
      train_(std::move(train)),
      item_counts_(items, 0),
      model_(static_cast<uint32_t>(user_keys.size()), items, options.factors, options.draw_global) {
  for (const Rating& r : train_) {
    assert(r.user < user_keys.size() && r.item < items);
    ++item_counts_[r.item];
  }
  if (options_.draw_global) model_.InitGlobal(options_.init);
  model_.InitUsers(options_.init, user_keys);
}

MfTrainer::~MfTrainer() = default;
MfTrainer::MfTrainer(MfTrainer&&) noexcept = default;

EpochStats MfTrainer::Train(uint64_t first_epoch, uint32_t count, float lr, float proximal_mu,
                            const std::vector<ParamBlock>* drift) {
  SgdOptions sgd = options_.sgd;
  sgd.lr = lr;
  EpochStats stats;
  const uint32_t k = model_.factors();
  std::vector<float> anchor_factors, anchor_bias;
  if (proximal_mu > 0.0f) {
    anchor_factors.assign(model_.item_factors(),
                          model_.item_factors() + static_cast<size_t>(model_.items()) * k);
    anchor_bias.assign(model_.item_bias(), model_.item_bias() + model_.items());
  }
  const bool sequential = sgd.parallel.schedule == SgdSchedule::kSequential;
  if (!sequential && !parallel_ && count > 0) {
    parallel_ =
        std::make_unique<ParallelSgd>(std::span<Rating>(train_), model_.users(), model_.items(),
                                      sgd.parallel, options_.init.seed, options_.shard);
  }
  for (uint64_t epoch = first_epoch; epoch < first_epoch + count; ++epoch) {
    const float epoch_lr = sgd.LearningRate(epoch);
    if (sequential) {
      Rng rng(options_.init.seed, epoch, options_.shard, Purpose::kShuffle);
      rng.Shuffle(std::span<Rating>(train_));
      stats.squared_error += SgdEpoch(&model_, train_, epoch_lr, sgd);
    } else {
      stats.squared_error += parallel_->Epoch(&model_, epoch, epoch_lr, sgd);
    }
    stats.updates += train_.size();
    if (epoch == first_epoch) stats.lr_first = epoch_lr;
    stats.lr_sum += epoch_lr;
    if (drift != nullptr) ApplyDrift(*drift, epoch_lr);
    if (proximal_mu <= 0.0f) continue;
    const double keep = 1.0 - std::min(1.0, double{epoch_lr} * proximal_mu);
    for (uint32_t i = 0; i < model_.items(); ++i) {
      if (item_counts_[i] == 0) continue;
      const float shrink = static_cast<float>(std::pow(keep, item_counts_[i]));
      float* q = model_.item_factors() + static_cast<size_t>(i) * k;
      const float* q0 = anchor_factors.data() + static_cast<size_t>(i) * k;
      for (uint32_t f = 0; f < k; ++f) q[f] = q0[f] + (q[f] - q0[f]) * shrink;
      float& b = model_.item_bias()[i];
      b = anchor_bias[i] + (b - anchor_bias[i]) * shrink;
    }
  }
  return stats;
}

Status MfTrainer::RestoreOrder(std::vector<Rating> order) {
  const auto key = [](const Rating& a, const Rating& b) {
    return std::tie(a.user, a.item, a.time, a.value) < std::tie(b.user, b.item, b.time, b.value);
  };
  std::vector<Rating> mine = train_, theirs = order;
  std::sort(mine.begin(), mine.end(), key);
  std::sort(theirs.begin(), theirs.end(), key);
  if (mine != theirs) {
    return Status::InvalidArgument("the saved training order holds other ratings than the site's " +
                                   std::to_string(train_.size()) + " training ratings");
  }
  std::copy(order.begin(), order.end(), train_.begin());  // keeps train_'s buffer
  return Status::Ok();
}

void MfTrainer::ApplyDrift(const std::vector<ParamBlock>& drift, float epoch_lr) {
  for (const ParamBlock& d : drift) {
    const bool factors = d.name == MfModel::kItemFactors;
    if (!factors && d.name != MfModel::kItemBias) continue;
    float* values = factors ? model_.item_factors() : model_.item_bias();
    const uint32_t cols = factors ? model_.factors() : 1;
    if (d.rows != model_.items() || d.cols != cols) continue;  // checked by the caller
    for (uint32_t i = 0; i < model_.items(); ++i) {
      if (item_counts_[i] == 0) continue;
      const float step = epoch_lr * static_cast<float>(item_counts_[i]);
      float* row = values + static_cast<size_t>(i) * cols;
      const float* dr = d.Row(i);
      for (uint32_t c = 0; c < cols; ++c) row[c] -= step * dr[c];
    }
  }
}

}  // namespace fedrec
