// BPR-MF (Rendle et al., "BPR: Bayesian Personalized Ranking from Implicit
// Feedback", UAI 2009) behind the Model seam.
//
// Score x_ui = b_i + p_u . q_i. For each sampled triple (u, i, j) with i a
// positive of u and j an item u has no positive for, SGD ascends
// ln sigmoid(x_uij), x_uij = x_ui - x_uj, with L2 regularization:
//
//   g    = sigmoid(-x_uij)                (d ln sigmoid(x) / dx)
//   p_u += lr * (g * (q_i - q_j) - reg * p_u)
//   q_i += lr * (g * p_u - reg * q_i)     q_j += lr * (-g * p_u - reg * q_j)
//   b_i += lr * (g - bias_reg * b_i)      b_j += lr * (-g - bias_reg * b_j)
//
// (all right-hand sides use the values before the step).
//
// Blocks: global "item_factors" (items x k) and "item_bias" (items x 1),
// local "user_factors" (users x k). The upload is the global blocks, each row
// weighted by the SGD updates it received (as positive or negative item) in
// the last Train call, so FedAvg averages an item's row over the sites in
// proportion to how much each trained it.
//
// Sampling, per global epoch e: as many triples as the shard has positives
// (times "samples"); the positive pairs are visited in an order shuffled by
// stream (seed, e, shard, kShuffle), cycling when samples > 1, and each
// gets a negative from stream (seed, e, shard, kNegative), drawn uniformly
// or by local popularity and rejected while it is a positive of the user.
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "algorithms/interactions.h"
#include "algorithms/model.h"
#include "base/alias_table.h"
#include "base/random.h"

namespace fedrec {

namespace {

constexpr const char* kItemFactors = "item_factors";
constexpr const char* kItemBias = "item_bias";
constexpr const char* kUserFactors = "user_factors";

// The factory sets every field from ModelOptions and the registered keys.
struct BprOptions {
  uint64_t seed = 1;
  uint32_t shard = 0;
  uint32_t factors = 32;
  float init_std = 0.05f;
  float positive_threshold = 0.0f;
  float lr = 0.2f;
  float lr_decay = 0.95f;
  float reg = 0.02f;
  float bias_reg = 0.01f;
  double samples = 1.0;
  bool popularity = false;           // negative sampling: false = uniform
  double popularity_exponent = 0.5;  // weight of item i = (local count + 1)^exponent
};

// Fills `count` floats at `out` with N(0, stddev^2) draws from `rng`, in order
// (the same draws MfModel's initialisation makes).
void FillNormal(Rng& rng, float stddev, float* out, uint32_t count) {
  for (uint32_t c = 0; c < count; ++c) {
    out[c] = static_cast<float>(static_cast<double>(stddev) * rng.Normal());
  }
}

// -ln sigmoid(x) = -ln(1 - g) for g = sigmoid(-x), the step's own gradient
// factor, so the loss costs one log and no second exp (log1p costs three
// times as much; where 1 - g rounds to 1 the loss is below 6e-8 anyway).
// Below x = -9, 1 - g keeps too few of g's digits, and the rare badly ranked
// triple takes the direct form.
float NegLogSigmoid(float x, float g) {
  return x < -9.0f ? -x + std::log1p(std::exp(x)) : -std::log(1.0f - g);
}

class Bpr : public Model {
 public:
  // REQUIRES: data validated by the factory (indices in range).
  Bpr(const BprOptions& options, ModelData data)
      : Model(static_cast<uint32_t>(data.user_keys.size()), data.items),
        options_(options),
        train_(std::move(data.train)),
        update_counts_(data.items, 0) {
    const uint32_t k = options_.factors;
    blocks_.reserve(3);
    blocks_.emplace_back(kItemFactors, Scope::kGlobal, items_, k);
    blocks_.emplace_back(kItemBias, Scope::kGlobal, items_, 1);
    blocks_.emplace_back(kUserFactors, Scope::kLocal, users_, k);
    // Item biases start at 0; factors are drawn per item / per user key, so a
    // row's initial value does not depend on the site or index holding it.
    for (uint32_t i = 0; i < items_; ++i) {
      Rng rng(options_.seed, 0, i, Purpose::kInitItem);
      FillNormal(rng, options_.init_std, blocks_[0].Row(i), k);
    }
    for (uint32_t u = 0; u < users_; ++u) {
      Rng rng(options_.seed, 0, data.user_keys[u], Purpose::kInitUser);
      FillNormal(rng, options_.init_std, blocks_[2].Row(u), k);
    }
    IndexPositives();
  }

  std::string_view name() const override { return "bpr"; }
  // Its state between rounds is its local blocks (the default SaveState).
  bool SupportsCheckpoint() const override { return true; }
  std::vector<ParamBlock>& blocks() override { return blocks_; }

  LossSums Train(const TrainPlan& plan) override {
    std::fill(update_counts_.begin(), update_counts_.end(), 0u);
    LossSums loss;
    const size_t positives = pairs_.size();
    if (positives == 0) return loss;
    const uint64_t samples = std::max<uint64_t>(
        1, static_cast<uint64_t>(std::llround(static_cast<double>(positives) * options_.samples)));
    SgdOptions schedule;
    schedule.lr = options_.lr;
    schedule.lr_decay = options_.lr_decay;
    for (uint64_t epoch = plan.epoch_offset; epoch < plan.epoch_offset + plan.epochs; ++epoch) {
      // The order starts from the identity every epoch, so epoch e's triples
      // depend only on (seed, e, shard), not on what ran before.
      std::iota(order_.begin(), order_.end(), 0u);
      Rng shuffle(options_.seed, epoch, options_.shard, Purpose::kShuffle);
      shuffle.Shuffle(std::span<uint32_t>(order_));
      Rng negatives(options_.seed, epoch, options_.shard, Purpose::kNegative);
      const float lr = schedule.LearningRate(epoch);
      size_t next = 0;
      for (uint64_t t = 0; t < samples; ++t) {
        const Pair& pair = pairs_[order_[next]];
        if (++next == positives) next = 0;
        const std::span<const uint32_t> seen = Positives(pair.user);
        if (seen.size() >= items_) continue;  // the user has no negative item
        const uint32_t j = DrawNegative(negatives, pair.user, seen);
        loss.sum += Step(pair.user, pair.item, j, lr);
        ++loss.count;
        Count(pair.item);
        Count(j);
      }
    }
    return loss;
  }

  // Both global blocks (the default UploadShapes), weighted per item row by
  // its updates in the last Train call.
  std::vector<DenseBlockView> Upload() const override {
    return {DenseBlockView{update_counts_, blocks_[0].data},
            DenseBlockView{update_counts_, blocks_[1].data}};
  }

  void Score(uint32_t user, std::span<float> out) const override {
    using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const uint32_t k = options_.factors;
    const Eigen::Map<const RowMajor> q(blocks_[0].data.data(), items_, k);
    const Eigen::Map<const Eigen::VectorXf> b(blocks_[1].data.data(), items_);
    const Eigen::Map<const Eigen::VectorXf> p(blocks_[2].Row(user), k);
    Eigen::Map<Eigen::VectorXf> scores(out.data(), items_);
    scores.noalias() = q * p;
    scores += b;
  }

  const std::vector<Rating>& train() const override { return train_; }

 private:
  struct Pair {
    uint32_t user;
    uint32_t item;
  };

  // Positive pairs in train order, each user's sorted distinct positive items
  // (CSR), the visiting order buffer, and the popularity table.
  void IndexPositives() {
    std::vector<uint32_t> item_positives(items_, 0);
    for (const Rating& r : train_) {
      if (!(r.value >= options_.positive_threshold)) continue;
      pairs_.push_back({r.user, r.item});
      ++item_positives[r.item];
    }
    positives_ = UserPositives(train_, users_, options_.positive_threshold);
    // A one-hash bit filter of the positive pairs, 16 bits per pair: a draw
    // that misses it (about 94% of them) is a negative without a search.
    size_t bits = 64;
    while (bits < 16 * positives_.entries.size()) bits *= 2;
    filter_.assign(bits / 64, 0);
    filter_mask_ = bits - 1;
    for (uint32_t u = 0; u < users_; ++u) {
      for (uint32_t i : positives_.Row(u)) {
        const uint64_t h = FilterBit(u, i);
        filter_[h / 64] |= uint64_t{1} << (h % 64);
      }
    }
    order_.resize(pairs_.size());
    if (options_.popularity && !pairs_.empty()) {
      std::vector<double> weights(items_);
      for (uint32_t i = 0; i < items_; ++i) {
        weights[i] =
            std::pow(static_cast<double>(item_positives[i]) + 1.0, options_.popularity_exponent);
      }
      popularity_ = AliasTable(weights);
    }
  }

  std::span<const uint32_t> Positives(uint32_t user) const { return positives_.Row(user); }

  // An item not in `seen` (sorted, fewer than items_). Rejection sampling from
  // the configured distribution; after kMaxDraws rejections (a user holding
  // nearly every item) a uniform draw among the user's non-positives, which
  // is exact for uniform sampling and keeps the cost bounded otherwise.
  // Whether ascending `seen` holds `j`, by a binary search whose steps are
  // conditional moves: a random negative's position is unpredictable, and a
  // branching search spent most of an epoch in mispredictions.
  static bool Contains(std::span<const uint32_t> seen, uint32_t j) {
    if (seen.empty()) return false;
    const uint32_t* base = seen.data();
    size_t n = seen.size();
    while (n > 1) {
      const size_t half = n / 2;
      base = base[half] <= j ? base + half : base;
      n -= half;
    }
    return *base == j;
  }

  uint64_t FilterBit(uint32_t user, uint32_t item) const {
    return Mix64(uint64_t{user} << 32 | item) & filter_mask_;
  }
  // False only when (user, item) is not a positive pair.
  bool MayBePositive(uint32_t user, uint32_t item) const {
    const uint64_t h = FilterBit(user, item);
    return (filter_[h / 64] >> (h % 64)) & 1;
  }

  uint32_t DrawNegative(Rng& rng, uint32_t user, std::span<const uint32_t> seen) const {
    constexpr int kMaxDraws = 256;
    for (int attempt = 0; attempt < kMaxDraws; ++attempt) {
      const uint32_t j =
          options_.popularity ? popularity_.Sample(rng) : static_cast<uint32_t>(rng.Below(items_));
      if (!MayBePositive(user, j) || !Contains(seen, j)) return j;
    }
    // The r-th item (0-based) not in `seen`.
    uint64_t r = rng.Below(items_ - seen.size());
    for (uint32_t p : seen) {
      if (p > r) break;
      ++r;
    }
    return static_cast<uint32_t>(r);
  }

  // One SGD step on (u, i, j); returns -ln sigmoid(x_uij) before the step.
  // The dot product sums in eight lanes combined in a fixed order.
  double Step(uint32_t u, uint32_t i, uint32_t j, float lr) {
    const uint32_t k = options_.factors;
    float* __restrict p = blocks_[2].Row(u);
    float* __restrict qi = blocks_[0].Row(i);
    float* __restrict qj = blocks_[0].Row(j);
    float* bias = blocks_[1].data.data();
    float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    uint32_t c = 0;
    for (; c + 8 <= k; c += 8) {
      for (uint32_t l = 0; l < 8; ++l) lanes[l] += p[c + l] * (qi[c + l] - qj[c + l]);
    }
    float dot = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) +
                ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
    for (; c < k; ++c) dot += p[c] * (qi[c] - qj[c]);
    const float x = (bias[i] - bias[j]) + dot;
    const float g = 1.0f / (1.0f + std::exp(x));  // sigmoid(-x)
    const float reg = options_.reg;
    for (c = 0; c < k; ++c) {
      const float pu = p[c];
      const float qic = qi[c];
      const float qjc = qj[c];
      p[c] = pu + lr * (g * (qic - qjc) - reg * pu);
      qi[c] = qic + lr * (g * pu - reg * qic);
      qj[c] = qjc + lr * (-g * pu - reg * qjc);
    }
    bias[i] += lr * (g - options_.bias_reg * bias[i]);
    bias[j] += lr * (-g - options_.bias_reg * bias[j]);
    return NegLogSigmoid(x, g);
  }

  void Count(uint32_t item) {
    if (update_counts_[item] != std::numeric_limits<uint32_t>::max()) ++update_counts_[item];
  }

  BprOptions options_;
  std::vector<Rating> train_;
  std::vector<ParamBlock> blocks_;
  std::vector<Pair> pairs_;       // positive (user, item) pairs, train order
  Csr positives_;                 // per user: sorted distinct positive items
  std::vector<uint64_t> filter_;  // bit filter of the positive pairs (MayBePositive)
  uint64_t filter_mask_ = 63;
  std::vector<uint32_t> order_;          // visiting order of pairs_, reshuffled per epoch
  AliasTable popularity_;                // built when negative_sampling = 1
  std::vector<uint32_t> update_counts_;  // per item: updates in the last Train call
};

// options.Param(key) when it is a whole number in [lo, hi], else an error.
Status WholeParam(const ModelOptions& options, const std::string& key, double lo, double hi,
                  double* out) {
  const double v = options.Param(key);
  if (!(v >= lo && v <= hi) || v != std::floor(v)) {
    return Status::InvalidArgument("model.bpr." + key + ": expected a whole number in [" +
                                   std::to_string(static_cast<int64_t>(lo)) + ", " +
                                   std::to_string(static_cast<int64_t>(hi)) + "], found " +
                                   std::to_string(v));
  }
  *out = v;
  return Status::Ok();
}

// options.Param(key) when it is finite and > lo (>= lo when `inclusive`).
Status RealParam(const ModelOptions& options, const std::string& key, double lo, bool inclusive,
                 double* out) {
  const double v = options.Param(key);
  const bool ok = std::isfinite(v) && (inclusive ? v >= lo : v > lo);
  if (!ok) {
    return Status::InvalidArgument("model.bpr." + key + ": expected a number " +
                                   (inclusive ? ">= " : "> ") + std::to_string(lo) + ", found " +
                                   std::to_string(v));
  }
  *out = v;
  return Status::Ok();
}

Result<std::unique_ptr<Model>> CreateBpr(const ModelOptions& options, ModelData data) {
  BprOptions bpr;
  bpr.seed = options.seed;
  bpr.shard = data.shard;
  bpr.positive_threshold = options.positive_threshold;
  double v = 0.0;
  FEDREC_RETURN_IF_ERROR(WholeParam(options, "factors", 0, 4096, &v));
  bpr.factors = v > 0 ? static_cast<uint32_t>(v) : options.factors;
  if (bpr.factors == 0) {
    return Status::InvalidArgument("model.factors: expected at least 1 factor for bpr, found 0");
  }
  FEDREC_RETURN_IF_ERROR(RealParam(options, "init_std", 0.0, true, &v));
  bpr.init_std = v > 0 ? static_cast<float>(v) : options.init_std;
  FEDREC_RETURN_IF_ERROR(RealParam(options, "lr", 0.0, false, &v));
  bpr.lr = static_cast<float>(v);
  FEDREC_RETURN_IF_ERROR(RealParam(options, "lr_decay", 0.0, false, &v));
  bpr.lr_decay = static_cast<float>(v);
  FEDREC_RETURN_IF_ERROR(RealParam(options, "reg", 0.0, true, &v));
  bpr.reg = static_cast<float>(v);
  FEDREC_RETURN_IF_ERROR(RealParam(options, "bias_reg", 0.0, true, &v));
  bpr.bias_reg = static_cast<float>(v);
  FEDREC_RETURN_IF_ERROR(RealParam(options, "samples", 0.0, false, &v));
  bpr.samples = v;
  FEDREC_RETURN_IF_ERROR(WholeParam(options, "negative_sampling", 0, 1, &v));
  bpr.popularity = v == 1;
  FEDREC_RETURN_IF_ERROR(RealParam(options, "popularity_exponent", 0.0, true, &v));
  bpr.popularity_exponent = v;
  const size_t users = data.user_keys.size();
  for (const Rating& r : data.train) {
    if (r.user >= users || r.item >= data.items) {
      return Status::InvalidArgument("bpr: expected interactions with user < " +
                                     std::to_string(users) + " and item < " +
                                     std::to_string(data.items) + ", found user " +
                                     std::to_string(r.user) + ", item " + std::to_string(r.item));
    }
  }
  return std::unique_ptr<Model>(std::make_unique<Bpr>(bpr, std::move(data)));
}

}  // namespace

// Defaults tuned on MovieLens 100K u1 (all interactions positive, k = 32):
// a high rate decayed 5% per epoch converges by ~40 epochs, so `fedrec train`
// (60 epochs) and 20 FedAvg rounds x 2 local epochs over 10 sites reach the
// same quality (P@10 ~0.36-0.37 both; popularity 0.21). Uniform negatives
// beat popularity-weighted ones on precision there (0.37 vs 0.34 at 0.5).
void RegisterBpr(ModelRegistry* registry) {
  registry->Register(
      {"bpr",
       "BPR-MF: pairwise ranking from implicit feedback, SGD on sampled (user, positive, "
       "negative) triples (model.factors, model.init_std, data.positive_threshold)",
       {
           {"lr", 0.2, "SGD learning rate of global epoch 0 (train.lr is not used)"},
           {"lr_decay", 0.95, "learning rate of global epoch e = lr * lr_decay^e"},
           {"reg", 0.02, "L2 regularization of user and item factors"},
           {"bias_reg", 0.01, "L2 regularization of item biases"},
           {"samples", 1.0, "triples per epoch, as a multiple of the site's positives"},
           {"negative_sampling", 0, "0 = uniform over items, 1 = by local popularity"},
           {"popularity_exponent", 0.5,
            "popularity sampling draws item i with weight (local positives of i + 1)^exponent"},
           {"factors", 0, "factors of BPR (0 = model.factors)"},
           {"init_std", 0, "std of the initial factors (0 = model.init_std)"},
       },
       CreateBpr});
}

}  // namespace fedrec
