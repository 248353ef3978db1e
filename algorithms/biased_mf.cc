// Biased MF (Koren) behind the Model seam: MfTrainer's SGD on explicit
// ratings, user factors and biases local, item factors, item biases and the
// global mean global. Results are those of MfTrainer bit for bit.
#include <Eigen/Core>
#include <algorithm>
#include <limits>

#include "algorithms/mf_trainer.h"
#include "algorithms/model.h"

namespace fedrec {

namespace {

class BiasedMf : public Model {
 public:
  BiasedMf(const MfTrainerOptions& options, ModelData data)
      : Model(static_cast<uint32_t>(data.user_keys.size()), data.items),
        trainer_(options, data.items, std::move(data.train), data.user_keys) {}

  std::string_view name() const override { return "mf"; }
  std::vector<ParamBlock>& blocks() override { return trainer_.model().blocks(); }

  // Version 0 has no global mean yet: each site starts from its own, and the
  // first aggregation forms the global one.
  void OnInitialModel() override { trainer_.UseShardMean(); }

  LossSums Train(const TrainPlan& plan) override {
    const EpochStats stats =
        trainer_.Train(plan.epoch_offset, plan.epochs, plan.lr, plan.proximal_mu, plan.drift);
    return {stats.squared_error, stats.updates, stats.lr_sum, stats.lr_first};
  }
  bool CountsLocalSteps() const override { return true; }
  bool SupportsControlVariates() const override { return true; }

  // Item rows weigh the site's ratings of the item; the global mean all its ratings.
  std::vector<DenseBlockView> Upload() const override {
    total_ = static_cast<uint32_t>(
        std::min<size_t>(trainer_.train().size(), std::numeric_limits<uint32_t>::max()));
    std::vector<DenseBlockView> views;
    for (const ParamBlock& block : trainer_.model().blocks()) {
      if (!IsGlobal(block.scope)) continue;
      const bool mean = block.name == MfModel::kGlobalMean;
      views.push_back(
          DenseBlockView{mean ? std::span<const uint32_t>(&total_, 1)
                              : std::span<const uint32_t>(trainer_.item_counts()).first(block.rows),
                         block.data});
    }
    return views;
  }

  // b_i + p_u . q_i: mu + b_u is the same for every item of a user.
  void Score(uint32_t user, std::span<float> out) const override {
    const MfModel& m = trainer_.model();
    using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const Eigen::Map<const RowMajor> q(m.item_factors(), m.items(), m.factors());
    const Eigen::Map<const Eigen::VectorXf> b(m.item_bias(), m.items());
    const Eigen::Map<const Eigen::VectorXf> p(
        m.user_factors() + static_cast<size_t>(user) * m.factors(), m.factors());
    Eigen::Map<Eigen::VectorXf> scores(out.data(), m.items());
    scores.noalias() = q * p;
    scores += b;
  }

  bool PredictsRatings() const override { return true; }
  float Predict(uint32_t user, uint32_t item) const override {
    return trainer_.model().Predict(user, item);
  }
  const std::vector<Rating>& train() const override { return trainer_.train(); }

 private:
  MfTrainer trainer_;
  mutable uint32_t total_ = 0;  // the global mean's weight, viewed by Upload
};

}  // namespace

void RegisterBiasedMf(ModelRegistry* registry) {
  registry->Register(
      {"mf",
       "biased matrix factorization on explicit ratings, SGD (model.factors, model.init_std, "
       "train.*)",
       {},
       [](const ModelOptions& options, ModelData data) -> Result<std::unique_ptr<Model>> {
         MfTrainerOptions trainer;
         trainer.factors = options.factors;
         trainer.init.init_std = options.init_std;
         trainer.init.seed = options.seed;
         trainer.sgd = options.sgd;
         trainer.shard = data.shard;
         return std::unique_ptr<Model>(std::make_unique<BiasedMf>(trainer, std::move(data)));
       }});
}

}  // namespace fedrec
