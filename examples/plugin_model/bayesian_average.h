// An out-of-tree model for fedrec: items ranked by their Bayesian average
// rating, (sum of ratings + prior_weight * prior_mean) / (ratings + prior_weight),
// with the prior mean the federation's mean rating.
//
// It shows the Model seam from outside the tree: one class, one registration.
// Its statistics (per-item rating counts and sums) are sums over users, so
// sites upload them and Apply solves from the federation's sums: the model is
// exact under secure aggregation (counts and sums of ratings on a 0.5 grid are
// integers after scaling by 2).
#pragma once

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "algorithms/model.h"

namespace bayes_example {

using fedrec::DenseBlockView;
using fedrec::LossSums;
using fedrec::ParamBlock;
using fedrec::Rating;
using fedrec::Scope;

class BayesianAverage : public fedrec::Model {
 public:
  BayesianAverage(double prior_weight, fedrec::ModelData data)
      : Model(static_cast<uint32_t>(data.user_keys.size()), data.items),
        prior_weight_(prior_weight),
        train_(std::move(data.train)),
        stats_(static_cast<size_t>(data.items) * 2, 0.0f),
        weights_(data.items, 0) {
    blocks_.emplace_back("item_score", Scope::kGlobal, data.items, 1);
  }

  std::string_view name() const override { return "bayes"; }
  std::vector<ParamBlock>& blocks() override { return blocks_; }

  // Per item: the number of ratings and twice their sum (integers for
  // ratings on a half-star grid), so the fixed-point sum is exact.
  LossSums Train(const fedrec::TrainPlan&) override {
    std::fill(stats_.begin(), stats_.end(), 0.0f);
    std::fill(weights_.begin(), weights_.end(), 0u);
    for (const Rating& r : train_) {
      stats_[2 * r.item] += 1.0f;
      stats_[2 * r.item + 1] += 2.0f * r.value;
      weights_[r.item] = 1;
    }
    return {0.0, 0};
  }
  std::vector<ParamBlock> UploadShapes() const override {
    ParamBlock stats;
    stats.name = "rating_stats";
    stats.rows = items();
    stats.cols = 2;
    return {stats};
  }
  std::vector<DenseBlockView> Upload() const override { return {{weights_, stats_}}; }
  bool SolvesFromSums() const override { return true; }
  uint32_t StepsToConverge() const override { return 1; }
  fedrec::UploadRange AdjustUploadRange(const fedrec::UploadRange&) const override {
    return {16777216.0f, 0, 1};  // integers up to 2^24, no fractional bits
  }
  fedrec::Status Apply(const fedrec::AggregateInput& sums, fedrec::Strategy*,
                       std::vector<ParamBlock>* global) const override {
    if (sums.weighted_sum.size() != 1 || sums.weighted_sum[0].size() != 2ull * items())
      return fedrec::Status::InvalidArgument("bayes: sums do not match the catalogue");
    const std::vector<double>& s = sums.weighted_sum[0];
    double count = 0.0, total = 0.0;
    for (uint32_t i = 0; i < items(); ++i) {
      count += s[2 * i];
      total += s[2 * i + 1] / 2.0;
    }
    const double mean = count > 0 ? total / count : 0.0;
    ParamBlock* score = fedrec::FindBlock(*global, "item_score");
    if (score == nullptr) return fedrec::Status::InvalidArgument("bayes: no item_score block");
    for (uint32_t i = 0; i < items(); ++i) {
      score->data[i] = static_cast<float>((s[2 * i + 1] / 2.0 + prior_weight_ * mean) /
                                          (s[2 * i] + prior_weight_));
    }
    return fedrec::Status::Ok();
  }
  void Score(uint32_t, std::span<float> out) const override {
    std::copy(blocks_[0].data.begin(), blocks_[0].data.end(), out.begin());
  }
  const std::vector<Rating>& train() const override { return train_; }

 private:
  double prior_weight_;
  std::vector<Rating> train_;
  std::vector<float> stats_;
  std::vector<uint32_t> weights_;
  std::vector<ParamBlock> blocks_;
};

// Adds "bayes" (key model.bayes.prior_weight) to `registry`.
inline void RegisterBayesianAverage(fedrec::ModelRegistry* registry) {
  registry->Register({"bayes",
                      "items by Bayesian average rating (an out-of-tree example)",
                      {{"prior_weight", 20.0, "pseudo-ratings at the federation's mean rating"}},
                      [](const fedrec::ModelOptions& options,
                         fedrec::ModelData data) -> fedrec::Result<std::unique_ptr<fedrec::Model>> {
                        const double weight = options.Param("prior_weight");
                        if (!(weight > 0.0))
                          return fedrec::Status::InvalidArgument(
                              "model.bayes.prior_weight: expected a number > 0, found " +
                              std::to_string(weight));
                        return std::unique_ptr<fedrec::Model>(
                            std::make_unique<BayesianAverage>(weight, std::move(data)));
                      }});
}

}  // namespace bayes_example
