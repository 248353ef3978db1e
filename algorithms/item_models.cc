// Closed-form item models behind the Model seam: EASE (Steck, WWW 2019),
// cosine item-kNN and popularity. Each site uploads integer counts over its
// users (item-item co-occurrences, or per-item user counts); a sum over sites
// is a sum over users, so Apply on the summed counts gives exactly the model
// one site holding every user would build. Uploads are exact integers in
// float (a site holds at most 2^24 users, so no count exceeds 2^24), which
// secure aggregation carries exactly with clip 2^24, no fractional bits and
// row weights capped at 1.
//
// Positives are the training interactions with value >= positive_threshold,
// binarized: a user counts once per item however many interactions it has.
// The models keep no local blocks: a user's own positives are what scoring
// reads.

// GCC 12 reports -Wmaybe-uninitialized inside its own AVX-512 intrinsics
// (_mm256_undefined_pd) when Eigen's double GEMM kernels are inlined into
// the Cholesky factorization: a false positive located in the intrinsic
// headers, which this silences for the headers only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <Eigen/Cholesky>
#include <Eigen/Core>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <string>
#include <utility>

#include "algorithms/interactions.h"
#include "algorithms/model.h"

namespace fedrec {

namespace {

// Counts must stay exact in float: 2^24 is the largest integer up to which
// every integer is representable (and float + 1 saturates there).
constexpr uint32_t kMaxCount = 16777216;

// "412 bytes", "3.2 MB", "1.6 GB".
std::string ByteSize(double bytes) {
  char text[32];
  if (bytes < 1e3) {
    std::snprintf(text, sizeof(text), "%.0f bytes", bytes);
  } else if (bytes < 1e6) {
    std::snprintf(text, sizeof(text), "%.1f kB", bytes / 1e3);
  } else if (bytes < 1e9) {
    std::snprintf(text, sizeof(text), "%.1f MB", bytes / 1e6);
  } else {
    std::snprintf(text, sizeof(text), "%.1f GB", bytes / 1e9);
  }
  return text;
}

// Checks what every item model needs of its data; `max_items` (0: no limit
// applies) guards the items x items matrices.
Status CheckData(const std::string& model, const ModelData& data, double max_items) {
  if (data.user_keys.size() > kMaxCount) {
    return Status::InvalidArgument("model " + model + ": a site may hold at most " +
                                   std::to_string(kMaxCount) +
                                   " users (its uploads count users exactly in float), "
                                   "this one holds " +
                                   std::to_string(data.user_keys.size()));
  }
  const uint32_t users = static_cast<uint32_t>(data.user_keys.size());
  for (size_t k = 0; k < data.train.size(); ++k) {
    const Rating& r = data.train[k];
    if (r.user >= users || r.item >= data.items) {
      return Status::InvalidArgument(
          "model " + model + ": training interaction " + std::to_string(k) + " has user " +
          std::to_string(r.user) + " and item " + std::to_string(r.item) + ", expected user < " +
          std::to_string(users) + " and item < " + std::to_string(data.items));
    }
  }
  if (max_items > 0 && data.items > max_items) {
    const double bytes = 4.0 * data.items * static_cast<double>(data.items);
    return Status::InvalidArgument(
        "model " + model + ": the catalogue has " + std::to_string(data.items) +
        " items, more than model." + model +
        ".max_items = " + std::to_string(static_cast<uint64_t>(max_items)) +
        "; the model holds items x items floats at every site and in every upload, " +
        ByteSize(bytes) + " per matrix here (raise max_items to accept it)");
  }
  return Status::Ok();
}

// A key that must be a whole number in [0, limit].
Status CheckWhole(const std::string& model, const std::string& key, double value, double limit) {
  if (!(value >= 0 && value <= limit) || value != std::floor(value)) {
    return Status::InvalidArgument(
        "model." + model + "." + key + " must be a whole number in [0, " +
        std::to_string(static_cast<uint64_t>(limit)) + "], found " + std::to_string(value));
  }
  return Status::Ok();
}

// What the three models share: binarized positives, a count upload with one
// row per item (weight 1 where the row is non-zero), and a solve of the one
// global block from the summed counts.
class ItemModel : public Model {
 public:
  // The global block and the upload have one row per item and one column
  // (per-item counts) or one per item (`square`: item-item counts).
  ItemModel(ModelData data, float threshold, std::string global_name, std::string upload_name,
            bool square)
      : Model(static_cast<uint32_t>(data.user_keys.size()), data.items),
        train_(std::move(data.train)),
        positives_(UserPositives(train_, users_, threshold)),
        upload_name_(std::move(upload_name)),
        upload_cols_(square ? items_ : 1) {
    blocks_.emplace_back(std::move(global_name), Scope::kGlobal, items_, upload_cols_);
  }

  std::vector<ParamBlock>& blocks() override { return blocks_; }

  // The statistics do not depend on the round: computed once, kept for Upload.
  LossSums Train(const TrainPlan&) override {
    EnsureUpload();
    return {};
  }

  std::vector<ParamBlock> UploadShapes() const override {
    ParamBlock shape;  // no values: an items x items shape must not allocate
    shape.name = upload_name_;
    shape.scope = Scope::kGlobal;
    shape.rows = items_;
    shape.cols = upload_cols_;
    return {shape};
  }

  std::vector<DenseBlockView> Upload() const override {
    EnsureUpload();
    return {DenseBlockView{upload_weights_, upload_values_}};
  }

  bool SolvesFromSums() const override { return true; }
  uint32_t StepsToConverge() const override { return 1; }
  UploadRange AdjustUploadRange(const UploadRange&) const override {
    return {static_cast<float>(kMaxCount), 0, 1};
  }

  Status Apply(const AggregateInput& sums, Strategy*,
               std::vector<ParamBlock>* global) const override {
    const size_t expected = static_cast<size_t>(items_) * upload_cols_;
    if (sums.weighted_sum.size() != 1 || sums.weighted_sum[0].size() != expected) {
      return Status::InvalidArgument(
          "model " + std::string(name()) + " expects the sums of one upload block \"" +
          upload_name_ + "\" of " + std::to_string(expected) + " values, found " +
          std::to_string(sums.weighted_sum.size()) + " blocks" +
          (sums.weighted_sum.empty()
               ? std::string()
               : " (the first of " + std::to_string(sums.weighted_sum[0].size()) + " values)"));
    }
    for (double v : sums.weighted_sum[0]) {
      if (!(v >= 0 && std::isfinite(v))) {
        return Status::InvalidArgument("model " + std::string(name()) +
                                       ": summed counts must be finite and >= 0, found " +
                                       std::to_string(v));
      }
    }
    const ParamBlock& mine = blocks_[0];
    ParamBlock* out = FindBlock(*global, mine.name);
    if (out == nullptr || out->rows != mine.rows || out->cols != mine.cols ||
        out->data.size() != mine.data.size()) {
      return Status::InvalidArgument("model " + std::string(name()) + " expects a global block " +
                                     mine.name + " of " + std::to_string(mine.rows) + " x " +
                                     std::to_string(mine.cols) + " values");
    }
    return Solve(sums.weighted_sum[0], out);
  }

  // Sum of the global block's rows over the user's positive items: x_u^T B.
  void Score(uint32_t user, std::span<float> out) const override {
    const ParamBlock& b = blocks_[0];
    Eigen::Map<Eigen::VectorXf> scores(out.data(), items_);
    scores.setZero();
    for (uint32_t i : positives_.Row(user)) {
      scores += Eigen::Map<const Eigen::VectorXf>(b.Row(i), items_);
    }
  }

  const std::vector<Rating>& train() const override { return train_; }

 protected:
  // Writes the site's counts into values (items x upload_cols, zeroed).
  virtual void CountInto(std::span<float> values) const = 0;
  // The global block from the summed counts (items x upload_cols, row-major).
  virtual Status Solve(std::span<const double> counts, ParamBlock* out) const = 0;

  // Adds 1 to counts[a * items + b] for every pair (a, b) of one user's
  // positives, over all users: X^T X, one sparse outer product per user.
  void CountCooccurrences(std::span<float> counts) const {
    for (uint32_t u = 0; u < users_; ++u) {
      const std::span<const uint32_t> items = positives_.Row(u);
      for (uint32_t a : items) {
        float* row = counts.data() + static_cast<size_t>(a) * items_;
        for (uint32_t b : items) row[b] += 1.0f;
      }
    }
  }

  std::vector<Rating> train_;
  Csr positives_;
  std::vector<ParamBlock> blocks_;

 private:
  void EnsureUpload() const {
    if (upload_ready_) return;
    upload_values_.assign(static_cast<size_t>(items_) * upload_cols_, 0.0f);
    CountInto(upload_values_);
    // Weight 1 on the rows the site has counts for: the coordinator sums
    // weight * value, and counts must be summed as they are, not averaged.
    upload_weights_.assign(items_, 0);
    for (uint32_t i = 0; i < items_; ++i) {
      const float* row = upload_values_.data() + static_cast<size_t>(i) * upload_cols_;
      upload_weights_[i] = std::any_of(row, row + upload_cols_, [](float v) { return v != 0; });
    }
    upload_ready_ = true;
  }

  std::string upload_name_;
  uint32_t upload_cols_;
  mutable bool upload_ready_ = false;
  mutable std::vector<uint32_t> upload_weights_;
  mutable std::vector<float> upload_values_;
};

// Number of users with each item as a positive; scores every item by it.
class Popularity : public ItemModel {
 public:
  Popularity(ModelData data, float threshold)
      : ItemModel(std::move(data), threshold, "item_popularity", "item_users", false) {}

  std::string_view name() const override { return "popularity"; }
  // Its state between rounds is its local blocks (the default SaveState).
  bool SupportsCheckpoint() const override { return true; }

  void Score(uint32_t, std::span<float> out) const override {
    std::copy(blocks_[0].data.begin(), blocks_[0].data.end(), out.begin());
  }

 protected:
  void CountInto(std::span<float> values) const override {
    for (uint32_t i : positives_.entries) values[i] += 1.0f;
  }

  Status Solve(std::span<const double> counts, ParamBlock* out) const override {
    for (uint32_t i = 0; i < items_; ++i) out->data[i] = static_cast<float>(counts[i]);
    return Status::Ok();
  }
};

// EASE: B = I - P diag(1 / diag P) with P = (C + lambda I)^-1, i.e.
// B_ij = -P_ij / P_jj off the diagonal and B_ii = 0.
class Ease : public ItemModel {
 public:
  Ease(ModelData data, float threshold, double lambda)
      : ItemModel(std::move(data), threshold, "ease_weights", "cooccurrence", true),
        lambda_(lambda) {}

  std::string_view name() const override { return "ease"; }
  // Its state between rounds is its local blocks (the default SaveState).
  bool SupportsCheckpoint() const override { return true; }

 protected:
  void CountInto(std::span<float> values) const override { CountCooccurrences(values); }

  Status Solve(std::span<const double> counts, ParamBlock* out) const override {
    const Eigen::Index n = items_;
    if (n == 0) return Status::Ok();
    // C is symmetric (a sum of X^T X), so the row-major sums read as a
    // column-major matrix are C itself.
    Eigen::MatrixXd g = Eigen::Map<const Eigen::MatrixXd>(counts.data(), n, n);
    g.diagonal().array() += lambda_;
    Eigen::LLT<Eigen::Ref<Eigen::MatrixXd>> llt(g);  // factorizes g in place
    if (llt.info() != Eigen::Success) {
      return Status::InvalidArgument("model ease: C + lambda I is not positive definite (lambda " +
                                     std::to_string(lambda_) +
                                     "); the summed co-occurrence counts are not a Gram matrix");
    }
    Eigen::MatrixXd p = Eigen::MatrixXd::Identity(n, n);
    llt.solveInPlace(p);
    using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    Eigen::Map<RowMajor> b(out->data.data(), n, n);
    const Eigen::VectorXd scale = -p.diagonal().cwiseInverse();
    b = (p * scale.asDiagonal()).cast<float>();
    b.diagonal().setZero();
    return Status::Ok();
  }

 private:
  double lambda_;
};

// Cosine item-kNN: S_ij = C_ij / (sqrt(C_ii) sqrt(C_jj) + shrink), S_ii = 0,
// each column j keeping its `neighbours` largest entries (ties: lower i).
class ItemKnn : public ItemModel {
 public:
  ItemKnn(ModelData data, float threshold, uint32_t neighbours, double shrink)
      : ItemModel(std::move(data), threshold, "item_similarity", "cooccurrence", true),
        neighbours_(neighbours),
        shrink_(shrink) {}

  std::string_view name() const override { return "itemknn"; }
  // Its state between rounds is its local blocks (the default SaveState).
  bool SupportsCheckpoint() const override { return true; }

 protected:
  void CountInto(std::span<float> values) const override { CountCooccurrences(values); }

  Status Solve(std::span<const double> counts, ParamBlock* out) const override {
    const uint32_t n = items_;
    std::vector<double> norm(n);
    for (uint32_t i = 0; i < n; ++i) norm[i] = std::sqrt(counts[static_cast<size_t>(i) * n + i]);
    std::fill(out->data.begin(), out->data.end(), 0.0f);
    const uint32_t keep = neighbours_ == 0 ? n : std::min(neighbours_, n);
    std::vector<double> column(n);
    std::vector<uint32_t> order(n);
    for (uint32_t j = 0; j < n; ++j) {
      for (uint32_t i = 0; i < n; ++i) {
        const double denominator = norm[i] * norm[j] + shrink_;
        const double c = counts[static_cast<size_t>(i) * n + j];
        column[i] = i == j || denominator == 0 ? 0.0 : c / denominator;
      }
      std::iota(order.begin(), order.end(), 0u);
      if (keep < n) {
        // The top `keep` by (similarity desc, index asc): a strict total
        // order, so the kept set does not depend on the selection algorithm.
        std::nth_element(order.begin(), order.begin() + keep, order.end(),
                         [&column](uint32_t a, uint32_t b) {
                           return column[a] != column[b] ? column[a] > column[b] : a < b;
                         });
      }
      for (uint32_t k = 0; k < keep; ++k) {
        const uint32_t i = order[k];
        out->data[static_cast<size_t>(i) * n + j] = static_cast<float>(column[i]);
      }
    }
    return Status::Ok();
  }

 private:
  uint32_t neighbours_;
  double shrink_;
};

}  // namespace

void RegisterItemModels(ModelRegistry* registry) {
  const std::string max_items_doc =
      "largest catalogue accepted (items x items floats at every site and in every upload); "
      "0 = no limit";
  registry->Register(
      {"popularity",
       "item popularity: number of users with the item as a positive (exact when federated)",
       {},
       [](const ModelOptions& options, ModelData data) -> Result<std::unique_ptr<Model>> {
         FEDREC_RETURN_IF_ERROR(CheckData("popularity", data, 0));
         return std::unique_ptr<Model>(
             std::make_unique<Popularity>(std::move(data), options.positive_threshold));
       }});
  registry->Register(
      {"ease",
       "EASE (Steck 2019): closed-form item-item weights from summed co-occurrence counts "
       "(exact when federated)",
       {{"lambda", 500.0, "L2 regularization added to the co-occurrence diagonal (> 0)"},
        {"max_items", 10000.0, max_items_doc}},
       [](const ModelOptions& options, ModelData data) -> Result<std::unique_ptr<Model>> {
         const double lambda = options.Param("lambda");
         if (!(lambda > 0 && std::isfinite(lambda))) {
           return Status::InvalidArgument("model.ease.lambda must be finite and > 0, found " +
                                          std::to_string(lambda));
         }
         const double max_items = options.Param("max_items");
         FEDREC_RETURN_IF_ERROR(CheckWhole("ease", "max_items", max_items, 4294967295.0));
         FEDREC_RETURN_IF_ERROR(CheckData("ease", data, max_items));
         return std::unique_ptr<Model>(
             std::make_unique<Ease>(std::move(data), options.positive_threshold, lambda));
       }});
  registry->Register(
      {"itemknn",
       "cosine item-based kNN from summed co-occurrence counts (exact when federated)",
       {{"neighbours", 100.0, "most similar items kept per item (0 = all)"},
        {"shrink", 0.0, "added to the cosine denominator, damping rare pairs (>= 0)"},
        {"max_items", 10000.0, max_items_doc}},
       [](const ModelOptions& options, ModelData data) -> Result<std::unique_ptr<Model>> {
         const double neighbours = options.Param("neighbours");
         FEDREC_RETURN_IF_ERROR(CheckWhole("itemknn", "neighbours", neighbours, 4294967295.0));
         const double shrink = options.Param("shrink");
         if (!(shrink >= 0 && std::isfinite(shrink))) {
           return Status::InvalidArgument("model.itemknn.shrink must be finite and >= 0, found " +
                                          std::to_string(shrink));
         }
         const double max_items = options.Param("max_items");
         FEDREC_RETURN_IF_ERROR(CheckWhole("itemknn", "max_items", max_items, 4294967295.0));
         FEDREC_RETURN_IF_ERROR(CheckData("itemknn", data, max_items));
         return std::unique_ptr<Model>(
             std::make_unique<ItemKnn>(std::move(data), options.positive_threshold,
                                       static_cast<uint32_t>(neighbours), shrink));
       }});
}

}  // namespace fedrec
