// iALS / WMF (implicit alternating least squares) behind the Model seam, with
// the frequency-scaled regularization of Rendle et al., "Revisiting the
// performance of iALS on item recommendation benchmarks" (RecSys 2022).
//
// S = positive (user, item) pairs (train interactions with value >=
// positive_threshold, duplicates counted once), W = user factors (local block
// "user_factors"), H = item factors (global block "item_factors"):
//   L = sum_{(u,i) in S} (<w_u,h_i> - 1)^2 + alpha0 * sum_u sum_i <w_u,h_i>^2
//       + reg * ( sum_u (|I_u| + alpha0*|I|)^nu ||w_u||^2
//               + sum_i (|U_i| + alpha0*|U|)^nu ||h_i||^2 )
// One round is one exact ALS sweep:
//   user step (at the site, on every new H):
//     (sum_{i in I_u} h_i h_i^T + alpha0 H^T H + reg_u I) w_u = sum_{i in I_u} h_i
//   item step (at the coordinator, from sums over sites):
//     (sum_{u in U_i} w_u w_u^T + alpha0 W^T W + reg_i I) h_i = sum_{u in U_i} w_u
// The item step needs only sums over users, so sites upload per-item sums and
// their user Gram matrix, and the federated run equals the centralized one.
//
// Initial item factors: N(0, (init_std / sqrt(k))^2) per entry, so the
// initial scores <w,h> have a spread independent of k (ALS forgets the scale
// after a sweep; the results barely depend on it). Default keys, tuned on
// MovieLens 100K (u1 split, k = 32, every interaction a positive): reg 0.3,
// alpha0 1, reg_exponent 0.5, 16 iterations give P@10 0.378 / NDCG@10 0.446.

// GCC 12 reports Eigen's AVX-512 double kernels (GEMM, reductions) as
// reading an uninitialized register: _mm256_undefined_pd is undefined on
// purpose there, so the warning is a false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <Eigen/Cholesky>
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "algorithms/interactions.h"
#include "algorithms/model.h"
#include "algorithms/spd_solver.h"
#include "base/random.h"

namespace fedrec {

namespace {

constexpr std::string_view kItemFactors = "item_factors";
constexpr std::string_view kUserFactors = "user_factors";
constexpr std::string_view kItemStats = "item_stats";
constexpr std::string_view kUserGram = "user_gram";

using RowMajorF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using RowMajorD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

struct IalsOptions {
  uint32_t factors = 32;
  uint32_t iterations = 16;
  double reg = 0.0;           // lambda
  double alpha0 = 0.0;        // weight of every (user, item) pair's <w,h>^2
  double reg_exponent = 1.0;  // nu
  float init_std = 0.0f;      // per entry of the initial item factors
  uint64_t seed = 1;
  float positive_threshold = 0.0f;
};

// Entries of the upper triangle of a k x k matrix.
size_t Triangle(uint32_t k) { return static_cast<size_t>(k) * (k + 1) / 2; }

// Writes the upper triangle of the symmetric `a`, row by row, to out[0..Triangle(k)).
void PackUpper(const Eigen::MatrixXd& a, float* out) {
  const Eigen::Index k = a.rows();
  for (Eigen::Index r = 0; r < k; ++r) {
    for (Eigen::Index c = r; c < k; ++c) *out++ = static_cast<float>(a(r, c));
  }
}

// Fills the symmetric `a` (already k x k) from a packed upper triangle.
void UnpackUpper(const double* in, Eigen::MatrixXd* a) {
  const Eigen::Index k = a->rows();
  for (Eigen::Index r = 0; r < k; ++r) {
    for (Eigen::Index c = r; c < k; ++c) {
      (*a)(r, c) = *in;
      (*a)(c, r) = *in;
      ++in;
    }
  }
}

// Rows gathered per matrix product: bounds the workspace whatever a user's
// or an item's number of positives, and is large enough for blocked products.
constexpr Eigen::Index kChunkRows = 256;

// *outer = sum of x x^T and *sum = sum of x over the rows x = source.row(r),
// r in `rows`, gathered kChunkRows at a time into `buffer` (kChunkRows x k):
// a fixed order, so the same inputs give the same bits.
void SumOuterProducts(const RowMajorD& source, std::span<const uint32_t> rows, RowMajorD* buffer,
                      Eigen::MatrixXd* outer, Eigen::VectorXd* sum) {
  outer->setZero();
  sum->setZero();
  for (size_t start = 0; start < rows.size(); start += kChunkRows) {
    const Eigen::Index n =
        static_cast<Eigen::Index>(std::min<size_t>(kChunkRows, rows.size() - start));
    for (Eigen::Index j = 0; j < n; ++j) buffer->row(j) = source.row(rows[start + j]);
    outer->noalias() += buffer->topRows(n).transpose() * buffer->topRows(n);
    *sum += buffer->topRows(n).colwise().sum().transpose();
  }
}

class Ials : public Model {
 public:
  Ials(const IalsOptions& options, uint32_t users, uint32_t items, std::vector<Rating> train)
      : Model(users, items), options_(options), train_(std::move(train)) {
    const uint32_t k = options_.factors;
    blocks_.reserve(2);
    blocks_.emplace_back(std::string(kItemFactors), Scope::kGlobal, items, k);
    blocks_.emplace_back(std::string(kUserFactors), Scope::kLocal, users, k);
    // Item i's row comes from its own stream, so every site and the
    // coordinator start from the same H whatever their data.
    ParamBlock& h = blocks_[0];
    for (uint32_t i = 0; i < items; ++i) {
      Rng rng(options_.seed, 0, i, Purpose::kInitItem);
      float* row = h.Row(i);
      for (uint32_t c = 0; c < k; ++c) {
        row[c] = static_cast<float>(static_cast<double>(options_.init_std) * rng.Normal());
      }
    }
    BuildPositives();
  }

  std::string_view name() const override { return "ials"; }
  // Its state between rounds is its local blocks (the default SaveState).
  bool SupportsCheckpoint() const override { return true; }
  std::vector<ParamBlock>& blocks() override { return blocks_; }

  // Users are always solved against the latest items, so evaluation and
  // serving never see users from an older H.
  void OnGlobalModel() override {
    SolveUsers();
    users_solved_ = true;
    stats_current_ = false;
  }

  // One ALS round: the user step (unless OnGlobalModel already took it for
  // the current H), then the statistics of the item step. The plan's epochs
  // and learning rate do not apply. Loss: squared error on the positives.
  LossSums Train(const TrainPlan&) override {
    if (!users_solved_) {
      SolveUsers();
      users_solved_ = true;
    }
    stats_current_ = false;  // the local blocks may have been loaded or edited since
    ComputeStats();
    const uint32_t k = options_.factors;
    const Eigen::Map<const RowMajorF> h(blocks_[0].data.data(), items_, k);
    const Eigen::Map<const RowMajorF> w(blocks_[1].data.data(), users_, k);
    LossSums loss;
    for (uint32_t u = 0; u < users_; ++u) {
      for (uint32_t i : by_user_.Row(u)) {
        const double e = static_cast<double>(w.row(u).dot(h.row(i))) - 1.0;
        loss.sum += e * e;
      }
    }
    loss.count = by_user_.entries.size();
    return loss;
  }

  std::vector<ParamBlock> UploadShapes() const override {
    const uint32_t k = options_.factors;
    std::vector<ParamBlock> shapes(2);
    shapes[0].name = kItemStats;
    shapes[0].scope = Scope::kGlobal;
    shapes[0].rows = items_;
    shapes[0].cols = static_cast<uint32_t>(Triangle(k) + k + 1);
    shapes[1].name = kUserGram;
    shapes[1].scope = Scope::kGlobal;
    shapes[1].rows = 1;
    shapes[1].cols = static_cast<uint32_t>(Triangle(k) + 1);
    return shapes;
  }

  // The statistics computed by the last Train; computed here from the
  // current factors when no Train has run since the last global model.
  std::vector<DenseBlockView> Upload() const override {
    ComputeStats();
    return {DenseBlockView{item_weights_, item_stats_}, DenseBlockView{gram_weight_, user_gram_}};
  }

  bool SolvesFromSums() const override { return true; }

  // Gram sums grow with the users, and the solve needs them to ~1e-5.
  UploadRange AdjustUploadRange(const UploadRange&) const override { return {16777216.0f, 16, 1}; }

  // The item step from the sums of the sites' statistics. Every nonzero
  // upload weight is 1 (capped at 1 under secure aggregation), so the
  // weighted sums are the plain sums over sites, i.e. over users.
  Status Apply(const AggregateInput& sums, Strategy*,
               std::vector<ParamBlock>* global) const override {
    const uint32_t k = options_.factors;
    const std::vector<ParamBlock> shapes = UploadShapes();
    if (sums.weighted_sum.size() != shapes.size() || sums.row_weight.size() != shapes.size()) {
      return Status::InvalidArgument("ials: expected sums of " + std::to_string(shapes.size()) +
                                     " upload blocks (item_stats, user_gram), found " +
                                     std::to_string(sums.weighted_sum.size()));
    }
    for (size_t b = 0; b < shapes.size(); ++b) {
      const size_t values = static_cast<size_t>(shapes[b].rows) * shapes[b].cols;
      if (sums.weighted_sum[b].size() != values || sums.row_weight[b].size() != shapes[b].rows) {
        return Status::InvalidArgument("ials: sums of " + shapes[b].name + " should have " +
                                       std::to_string(shapes[b].rows) + " rows and " +
                                       std::to_string(values) + " values, found " +
                                       std::to_string(sums.row_weight[b].size()) + " rows and " +
                                       std::to_string(sums.weighted_sum[b].size()) + " values");
      }
    }
    ParamBlock* h = global ? FindBlock(*global, kItemFactors) : nullptr;
    if (h == nullptr || h->rows != items_ || h->cols != k || h->data.size() != size_t{items_} * k) {
      return Status::InvalidArgument(
          "ials: expected a global block item_factors of " + std::to_string(items_) + " x " +
          std::to_string(k) +
          (h ? ", found " + std::to_string(h->rows) + " x " + std::to_string(h->cols)
             : ", found none"));
    }

    const size_t tri = Triangle(k);
    const size_t stats_cols = shapes[0].cols;
    Eigen::MatrixXd gram(k, k);
    UnpackUpper(sums.weighted_sum[1].data(), &gram);
    const double users = std::round(sums.weighted_sum[1][tri]);
    gram *= options_.alpha0;

    Eigen::MatrixXd a(k, k);
    Eigen::VectorXd b(k);
    SpdSolver solver(k);
    for (uint32_t i = 0; i < items_; ++i) {
      float* out = h->Row(i);
      const double* stats = sums.weighted_sum[0].data() + i * stats_cols;
      const double count = std::round(stats[tri + k]);
      if (sums.row_weight[0][i] == 0.0 || count <= 0.0) {
        std::fill(out, out + k, 0.0f);
        continue;
      }
      UnpackUpper(stats, &a);
      a += gram;
      a.diagonal().array() +=
          options_.reg * std::pow(count + options_.alpha0 * users, options_.reg_exponent);
      b = Eigen::Map<const Eigen::VectorXd>(stats + tri, k);
      const Eigen::VectorXd& x = solver.Solve(a, b);
      for (uint32_t c = 0; c < k; ++c) out[c] = static_cast<float>(x[c]);
    }
    return Status::Ok();
  }

  uint32_t StepsToConverge() const override { return options_.iterations; }

  void Score(uint32_t user, std::span<float> out) const override {
    const uint32_t k = options_.factors;
    const Eigen::Map<const RowMajorF> h(blocks_[0].data.data(), items_, k);
    const Eigen::Map<const Eigen::VectorXf> w(blocks_[1].Row(user), k);
    Eigen::Map<Eigen::VectorXf> scores(out.data(), items_);
    scores.noalias() = h * w;
  }

  const std::vector<Rating>& train() const override { return train_; }

 private:
  // by_user_: each user's positive items, ascending and distinct; by_item_:
  // each item's positive users, ascending.
  void BuildPositives() {
    by_user_ = UserPositives(train_, users_, options_.positive_threshold);
    by_item_ = Transpose(by_user_, items_);
  }

  // The user step for every local user against the current item factors.
  void SolveUsers() {
    const uint32_t k = options_.factors;
    if (users_ == 0) return;
    const RowMajorD h =
        Eigen::Map<const RowMajorF>(blocks_[0].data.data(), items_, k).cast<double>();
    Eigen::MatrixXd gram(k, k);
    gram.setZero();
    gram.selfadjointView<Eigen::Lower>().rankUpdate(h.transpose(), options_.alpha0);
    gram.triangularView<Eigen::StrictlyUpper>() = gram.transpose();

    RowMajorD buffer(kChunkRows, k);
    Eigen::MatrixXd a(k, k);
    Eigen::VectorXd b(k);
    SpdSolver solver(k);
    ParamBlock& w = blocks_[1];
    for (uint32_t u = 0; u < users_; ++u) {
      const std::span<const uint32_t> items = by_user_.Row(u);
      float* out = w.Row(u);
      if (items.empty()) {  // no positives: the minimizer is 0
        std::fill(out, out + k, 0.0f);
        continue;
      }
      SumOuterProducts(h, items, &buffer, &a, &b);
      a += gram;
      a.diagonal().array() +=
          options_.reg * std::pow(static_cast<double>(items.size()) + options_.alpha0 * items_,
                                  options_.reg_exponent);
      const Eigen::VectorXd& x = solver.Solve(a, b);
      for (uint32_t c = 0; c < k; ++c) out[c] = static_cast<float>(x[c]);
    }
  }

  // The upload: per item the site's sum of w w^T (upper triangle), sum of w
  // and positive-user count; the Gram matrix of all the site's users and
  // their number. Sums in double, in ascending user order.
  void ComputeStats() const {
    if (stats_current_) return;
    const uint32_t k = options_.factors;
    const size_t tri = Triangle(k);
    const size_t cols = tri + k + 1;
    item_stats_.assign(items_ * cols, 0.0f);
    item_weights_.assign(items_, 0);
    user_gram_.assign(tri + 1, 0.0f);
    gram_weight_.assign(1, 0);
    const RowMajorD w =
        Eigen::Map<const RowMajorF>(blocks_[1].data.data(), users_, k).cast<double>();

    Eigen::MatrixXd a(k, k);
    if (users_ > 0) {
      a.noalias() = w.transpose() * w;
      PackUpper(a, user_gram_.data());
      user_gram_[tri] = static_cast<float>(users_);
      gram_weight_[0] = 1;
    }
    RowMajorD buffer(kChunkRows, k);
    Eigen::VectorXd sum(k);
    for (uint32_t i = 0; i < items_; ++i) {
      const std::span<const uint32_t> users = by_item_.Row(i);
      if (users.empty()) continue;
      SumOuterProducts(w, users, &buffer, &a, &sum);
      float* out = item_stats_.data() + i * cols;
      PackUpper(a, out);
      for (uint32_t c = 0; c < k; ++c) out[tri + c] = static_cast<float>(sum[c]);
      out[tri + k] = static_cast<float>(users.size());
      item_weights_[i] = 1;
    }
    stats_current_ = true;
  }

  IalsOptions options_;
  std::vector<Rating> train_;
  std::vector<ParamBlock> blocks_;  // item_factors (global), user_factors (local)
  Csr by_user_;
  Csr by_item_;
  bool users_solved_ = false;  // since the last global update

  // The upload, owned here and viewed by Upload (see ComputeStats).
  mutable bool stats_current_ = false;
  mutable std::vector<float> item_stats_;
  mutable std::vector<uint32_t> item_weights_;
  mutable std::vector<float> user_gram_;
  mutable std::vector<uint32_t> gram_weight_;
};

// options.Param(key) as a count in [1, max], or an error naming the key.
Result<uint32_t> CountParam(const ModelOptions& options, const std::string& key, uint32_t max) {
  const double v = options.Param(key);
  if (!(v >= 1.0 && v <= max) || v != std::floor(v)) {
    return Status::InvalidArgument("model.ials." + key + " must be an integer in [1, " +
                                   std::to_string(max) + "], found " + std::to_string(v));
  }
  return static_cast<uint32_t>(v);
}

// options.Param(key) as a finite value >= 0 (> 0 when `positive`), or an
// error naming the key.
Result<double> RealParam(const ModelOptions& options, const std::string& key, bool positive) {
  const double v = options.Param(key);
  if (!(positive ? v > 0.0 : v >= 0.0) || !std::isfinite(v)) {
    return Status::InvalidArgument("model.ials." + key + " must be a finite value " +
                                   (positive ? "> 0" : ">= 0") + ", found " + std::to_string(v));
  }
  return v;
}

}  // namespace

void RegisterIals(ModelRegistry* registry) {
  registry->Register(
      {"ials",
       "implicit ALS / WMF with frequency-scaled regularization (Rendle et al. 2022); exact "
       "when federated (model.factors, model.init_std / sqrt(factors) per entry)",
       {
           {"iterations", 16, "ALS sweeps (epochs of `fedrec train`, rounds of `fedrec sim`)"},
           {"reg", 0.3, "lambda: L2 weight, scaled per row by (frequency + alpha0 * n)^nu; > 0"},
           {"alpha0", 1.0, "weight of the squared score of every (user, item) pair"},
           {"reg_exponent", 0.5, "nu: exponent of the frequency scaling of lambda"},
       },
       [](const ModelOptions& options, ModelData data) -> Result<std::unique_ptr<Model>> {
         IalsOptions o;
         if (options.factors < 1 || options.factors > 4096) {
           return Status::InvalidArgument("model.factors for ials must be in [1, 4096], found " +
                                          std::to_string(options.factors));
         }
         o.factors = options.factors;
         FEDREC_ASSIGN_OR_RETURN(o.iterations, CountParam(options, "iterations", 1u << 20));
         FEDREC_ASSIGN_OR_RETURN(o.reg, RealParam(options, "reg", true));
         FEDREC_ASSIGN_OR_RETURN(o.alpha0, RealParam(options, "alpha0", false));
         FEDREC_ASSIGN_OR_RETURN(o.reg_exponent, RealParam(options, "reg_exponent", false));
         if (!(options.init_std >= 0.0f) || !std::isfinite(options.init_std)) {
           return Status::InvalidArgument("model.init_std must be a finite value >= 0, found " +
                                          std::to_string(options.init_std));
         }
         o.init_std =
             static_cast<float>(options.init_std / std::sqrt(static_cast<double>(o.factors)));
         o.seed = options.seed;
         o.positive_threshold = options.positive_threshold;
         const uint32_t users = static_cast<uint32_t>(data.user_keys.size());
         for (size_t n = 0; n < data.train.size(); ++n) {
           const Rating& r = data.train[n];
           if (r.user >= users || r.item >= data.items) {
             return Status::InvalidArgument(
                 "ials: interaction " + std::to_string(n) + " has user " + std::to_string(r.user) +
                 " and item " + std::to_string(r.item) + ", expected user < " +
                 std::to_string(users) + " and item < " + std::to_string(data.items));
           }
         }
         return std::unique_ptr<Model>(
             std::make_unique<Ials>(o, users, data.items, std::move(data.train)));
       }});
}

}  // namespace fedrec
