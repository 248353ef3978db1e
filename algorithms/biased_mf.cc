// Biased MF (Koren) behind the Model seam: MfTrainer's SGD on explicit
// ratings, user factors and biases local, item factors, item biases and the
// global mean global. Results are those of MfTrainer bit for bit.
#include <Eigen/Core>
#include <algorithm>
#include <cstring>
#include <limits>

#include "algorithms/mf_trainer.h"
#include "algorithms/model.h"
#include "base/little_endian.h"

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

  // The local blocks, then the training order: epochs shuffle it in place,
  // so the next epoch's order depends on it.
  bool SupportsCheckpoint() const override { return true; }
  Status SaveState(std::ostream& out) const override {
    FEDREC_RETURN_IF_ERROR(SaveBlocks(out, false));
    const std::vector<Rating>& train = trainer_.train();
    out << "train_order " << train.size() << '\n';
    std::vector<uint8_t> bytes;
    bytes.reserve(train.size() * kRatingBytes);
    for (const Rating& r : train) {
      uint32_t value;
      std::memcpy(&value, &r.value, 4);
      AppendLe(&bytes, r.user);
      AppendLe(&bytes, r.item);
      AppendLe(&bytes, value);
      AppendLe(&bytes, static_cast<uint64_t>(r.time));
    }
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
    if (!out) return Status::IoError("writing the training order failed");
    return Status::Ok();
  }
  Status LoadState(std::istream& in, const std::string& where) override {
    // Read and check everything before changing the model.
    const std::vector<ParamBlock> local_before = LocalCopy();
    FEDREC_RETURN_IF_ERROR(LoadBlocks(in, false, where));
    std::string word;
    size_t count = 0;
    in >> word >> count;
    in.get();
    const size_t expected = trainer_.train().size();
    Status status;
    std::vector<Rating> order(count);
    if (!in || word != "train_order" || count != expected) {
      status =
          Status::InvalidArgument(where + ": expected \"train_order " + std::to_string(expected) +
                                  "\", found \"" + word + " " + std::to_string(count) + "\"");
    } else {
      std::vector<uint8_t> bytes(count * kRatingBytes);
      in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
      if (in.gcount() != static_cast<std::streamsize>(bytes.size())) {
        status = Status::InvalidArgument(where + ": the training order is truncated");
      } else {
        for (size_t i = 0; i < count; ++i) {
          const uint8_t* p = bytes.data() + i * kRatingBytes;
          order[i].user = GetLe<uint32_t>(p);
          order[i].item = GetLe<uint32_t>(p + 4);
          const uint32_t value = GetLe<uint32_t>(p + 8);
          std::memcpy(&order[i].value, &value, 4);
          order[i].time = static_cast<int64_t>(GetLe<uint64_t>(p + 12));
        }
        status = trainer_.RestoreOrder(std::move(order)).WithContext(where);
      }
    }
    if (!status.ok()) RestoreLocal(local_before);
    return status;
  }

 private:
  std::vector<ParamBlock> LocalCopy() const {
    std::vector<ParamBlock> copy;
    for (const ParamBlock& b : trainer_.model().blocks())
      if (!IsGlobal(b.scope)) copy.push_back(b);
    return copy;
  }
  void RestoreLocal(const std::vector<ParamBlock>& copy) {
    size_t next = 0;
    for (ParamBlock& b : trainer_.model().blocks())
      if (!IsGlobal(b.scope)) b.data = copy[next++].data;
  }

  static constexpr size_t kRatingBytes = 20;  // user, item, value, time (little-endian)

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
