// Biased MF (Koren) behind the Model seam: MfTrainer's SGD on explicit
// ratings, user factors and biases local, item factors, item biases and the
// global mean global. Results are those of MfTrainer bit for bit.

// GCC 12 reports Eigen's AVX-512 double kernels (the reconstruction's
// products) as reading an uninitialized register, as in ials.cc: a false
// positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "algorithms/mf_trainer.h"
#include "algorithms/model.h"
#include "algorithms/spd_solver.h"
#include "base/little_endian.h"
#include "base/random.h"

namespace fedrec {

namespace {

class BiasedMf : public Model {
 public:
  BiasedMf(const MfTrainerOptions& options, ModelData data)
      : Model(static_cast<uint32_t>(data.user_keys.size()), data.items),
        trainer_(options, data.items, std::move(data.train), data.user_keys),
        user_keys_(data.user_keys),
        sgd_(options.sgd) {}

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
  bool TrainsClippedPerUser() const override { return true; }
  Result<PerUserStats> TrainClippedPerUser(const TrainPlan& plan, const PerUserClip& clip,
                                           std::vector<ParamBlock>* sum) override;

  bool CountsLocalSteps() const override { return true; }
  bool SupportsControlVariates() const override { return true; }

  // Each user's row [p_u, b_u] minimizes the objective the SGD descends,
  // over the user's training ratings with the item rows and the global mean
  // fixed:
  //   sum_j (r_j - mu - b_i - b_u - p_u . q_i)^2 + n_u (reg |p_u|^2 + bias_reg b_u^2)
  // (the SGD applies reg at each of the user's n_u ratings: ALS-WR's
  // weighting), solved exactly in double with the ratings summed in (user,
  // item, value) order, so the rows do not depend on the training order. A
  // user without training ratings gets the minimizer without data, 0.
  bool ReconstructLocal() override;

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
    std::vector<std::vector<float>> local_before = LocalValues();
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
    if (!status.ok()) RestoreLocalValues(std::move(local_before));
    return status;
  }

 private:
  static constexpr size_t kRatingBytes = 20;  // user, item, value, time (little-endian)
  // The training ratings grouped by user (sorted by user, then item, then
  // value), independent of the training order of train().
  void GroupByUser();

  MfTrainer trainer_;
  mutable uint32_t total_ = 0;  // the global mean's weight, viewed by Upload
  std::vector<uint64_t> user_keys_;
  SgdOptions sgd_;
  std::vector<Rating> by_user_;       // GroupByUser
  std::vector<uint32_t> user_begin_;  // user u's ratings: by_user_[user_begin_[u], [u + 1])
};

void BiasedMf::GroupByUser() {
  by_user_ = trainer_.train();
  std::sort(by_user_.begin(), by_user_.end(), [](const Rating& a, const Rating& b) {
    if (a.user != b.user) return a.user < b.user;
    if (a.item != b.item) return a.item < b.item;
    return a.value < b.value;
  });
  user_begin_.assign(users() + 1, 0);
  for (const Rating& r : by_user_) ++user_begin_[r.user + 1];
  for (uint32_t u = 0; u < users(); ++u) user_begin_[u + 1] += user_begin_[u];
}

bool BiasedMf::ReconstructLocal() {
  MfModel& m = trainer_.model();
  const uint32_t k = m.factors();
  const std::vector<ParamBlock>& held = m.blocks();
  for (const ParamBlock& block : held) {
    if (block.data.size() != static_cast<size_t>(block.rows) * block.cols) return false;
  }
  if (user_begin_.size() != users() + 1) GroupByUser();
  const double mu = m.global_mean();
  Eigen::MatrixXd a(k + 1, k + 1);
  Eigen::VectorXd y(k + 1), z(k + 1);
  SpdSolver solver(k + 1);
  for (uint32_t u = 0; u < users(); ++u) {
    const uint32_t begin = user_begin_[u], end = user_begin_[u + 1];
    float* p = m.user_factors() + static_cast<size_t>(u) * k;
    float& bu = m.user_bias()[u];
    if (begin == end) {
      std::fill(p, p + k, 0.0f);
      bu = 0.0f;
      continue;
    }
    a.setZero();
    y.setZero();
    for (uint32_t j = begin; j < end; ++j) {
      const Rating& r = by_user_[j];
      const float* q = m.item_factors() + static_cast<size_t>(r.item) * k;
      for (uint32_t c = 0; c < k; ++c) z[c] = q[c];
      z[k] = 1.0;
      a.noalias() += z * z.transpose();
      y += (static_cast<double>(r.value) - mu - m.item_bias()[r.item]) * z;
    }
    const double n = end - begin;
    a.diagonal().head(k).array() += n * sgd_.reg;
    a(k, k) += n * sgd_.bias_reg;
    const Eigen::VectorXd& x = solver.Solve(a, y);
    for (uint32_t c = 0; c < k; ++c) p[c] = static_cast<float>(x[c]);
    bu = static_cast<float>(x[k]);
  }
  return true;
}

// Each user trains its own copy of its items' rows with the SGD of SgdEpoch
// (one rating at a time, biases then factors), in an order drawn per user
// and epoch; its change of those rows is clipped and summed. The global mean
// is not trained, so its change is zero.
Result<PerUserStats> BiasedMf::TrainClippedPerUser(const TrainPlan& plan, const PerUserClip& clip,
                                                   std::vector<ParamBlock>* sum) {
  ParamBlock* sum_bias = FindBlock(*sum, MfModel::kItemBias);
  ParamBlock* sum_factors = FindBlock(*sum, MfModel::kItemFactors);
  MfModel& m = trainer_.model();
  const uint32_t k = m.factors();
  if (sum_bias == nullptr || sum_factors == nullptr || sum_bias->data.size() != m.items() ||
      sum_factors->data.size() != static_cast<size_t>(m.items()) * k) {
    return Status::InvalidArgument(
        "per-user training: expected sum blocks item_bias and item_factors shaped as the model's");
  }
  if (user_begin_.size() != users() + 1) GroupByUser();
  SgdOptions sgd = sgd_;
  sgd.lr = plan.lr;
  PerUserStats stats;
  std::vector<float> q, b, q0, b0;
  std::vector<uint32_t> order;
  const float mu = m.global_mean();
  for (uint32_t u = 0; u < users(); ++u) {
    const uint32_t begin = user_begin_[u], end = user_begin_[u + 1];
    if (begin == end) continue;
    const uint64_t key = u < user_keys_.size() ? user_keys_[u] : u;
    if (clip.user_fraction < 1.0) {
      Rng pick(clip.seed, plan.round, key, Purpose::kDpUserSample);
      if (!(pick.Uniform() < clip.user_fraction)) continue;
    }
    const uint32_t n = end - begin;
    q.resize(static_cast<size_t>(n) * k);
    b.resize(n);
    for (uint32_t j = 0; j < n; ++j) {
      const uint32_t item = by_user_[begin + j].item;
      std::copy_n(m.item_factors() + static_cast<size_t>(item) * k, k, q.data() + size_t{j} * k);
      b[j] = m.item_bias()[item];
    }
    q0 = q;
    b0 = b;
    order.resize(n);
    std::iota(order.begin(), order.end(), 0u);
    float* p = m.user_factors() + static_cast<size_t>(u) * k;
    float& bu = m.user_bias()[u];
    for (uint64_t epoch = plan.epoch_offset; epoch < plan.epoch_offset + plan.epochs; ++epoch) {
      const float lr = sgd.LearningRate(epoch);
      Rng shuffle(clip.seed, epoch, key, Purpose::kDpUserOrder);
      shuffle.Shuffle(std::span<uint32_t>(order));
      for (uint32_t j : order) {
        float* qi = q.data() + size_t{j} * k;
        float dot = 0.0f;
        for (uint32_t f = 0; f < k; ++f) dot += p[f] * qi[f];
        const float e = by_user_[begin + j].value - (mu + bu + b[j] + dot);
        stats.loss.sum += static_cast<double>(e) * e;
        ++stats.loss.count;
        bu += lr * (e - sgd.bias_reg * bu);
        b[j] += lr * (e - sgd.bias_reg * b[j]);
        for (uint32_t f = 0; f < k; ++f) {
          const float pf = p[f];
          p[f] += lr * (e * qi[f] - sgd.reg * pf);
          qi[f] += lr * (e * pf - sgd.reg * qi[f]);
        }
      }
    }
    double norm2 = 0.0;
    for (size_t x = 0; x < q.size(); ++x) norm2 += double(q[x] - q0[x]) * double(q[x] - q0[x]);
    for (size_t x = 0; x < b.size(); ++x) norm2 += double(b[x] - b0[x]) * double(b[x] - b0[x]);
    const double norm = std::sqrt(norm2);
    const double scale = norm > clip.clip ? clip.clip / norm : 1.0;
    if (norm <= clip.clip) ++stats.unclipped;
    ++stats.users;
    for (uint32_t j = 0; j < n; ++j) {
      const uint32_t item = by_user_[begin + j].item;
      sum_bias->data[item] += static_cast<float>(scale * (b[j] - b0[j]));
      float* row = sum_factors->data.data() + static_cast<size_t>(item) * k;
      const float* now = q.data() + size_t{j} * k;
      const float* was = q0.data() + size_t{j} * k;
      for (uint32_t f = 0; f < k; ++f) row[f] += static_cast<float>(scale * (now[f] - was[f]));
    }
  }
  for (uint64_t epoch = plan.epoch_offset; epoch < plan.epoch_offset + plan.epochs; ++epoch)
    stats.loss.lr_sum += sgd.LearningRate(epoch);
  stats.loss.lr_first = sgd.LearningRate(plan.epoch_offset);
  return stats;
}

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
         trainer.draw_global = !data.global_arrives;
         return std::unique_ptr<Model>(std::make_unique<BiasedMf>(trainer, std::move(data)));
       }});
}

}  // namespace fedrec
