// Multi-task neural recommenders behind the Model seam: "shared_bottom",
// "mmoe" and "ple" (algorithms/multitask_net.h) on the input of each
// (user, item):
//
//   [ user embedding | item embedding | embeddings of the user's and the
//     item's categorical side features (multi-valued fields averaged) |
//     the user's and the item's numeric side features ]
//
// and up to three tasks (a task whose weight is 0 is absent):
//   rating: regression on the rating, with a wide part as in factorization
//           models: out = tower + mu + b_u + b_i + <p_u, q_i>;
//   like:   binary, label rating >= like_threshold; logit = tower + b_u + b_i;
//   click:  binary, the site's interactions against sampled non-interacted
//           items (negatives per interaction from the stream (seed, epoch,
//           shard, kNegative)); logit = tower + b_u + b_i.
// (b_u, b_i: per-task user and item biases.) All three are on by default:
// the click task carries which items each user rated (not only how) into the
// embeddings and shared layers, which lowers the rating RMSE on ML-100K u1
// from about 0.935 to 0.910-0.919 (and raises the like AUC from 0.778 to 0.80).
// Loss per batch: sum over tasks and examples of w_t * loss, over the batch's
// rated interactions (a click negative adds its click loss only).
//
// Blocks, global first: "global_mean" (kGlobalAverage: the sites' mean
// rating), "item_emb" (items x k), "item_bias" (items x T), "ufeat.<f>" and
// "ifeat.<f>" (vocabulary x k per categorical field), "log_var" (1 x T, with
// uncertainty weighting), the network's blocks; local: "user_emb" (users x k),
// "user_bias" (users x T) and, with local_towers = 1, the towers and task
// gates.
//
// Adapted heads (local_towers = 2): the towers and task gates are federated
// like the rest, and whenever a global model arrives a site fine-tunes its
// own copy of them on its data, the rest frozen, and predicts with it.
// adapt_holdout of its examples are held out; each task keeps the heads (the
// global ones, or those after an adaptation epoch) with the least error on
// them by the task's own metric (squared error, 1 - AUC), a change counting
// only when it lowers that error by adapt_min_gain, and a site with fewer
// than adapt_min_holdout held-out examples keeps the global heads. Training
// starts from the global heads and uploads them: the site's copy never
// leaves it. Epoch e of an adaptation is shuffled from (seed, e, shard,
// kAdapt); the held-out split and its click negatives from kAdaptHoldout.
//
// Upload weights: an embedding or bias row weighs the site's examples that
// touched it in the last Train call (0: untouched, the global value stays);
// every row of a network block and log_var weighs the site's examples; the
// global mean weighs the site's ratings.
//
// Cold start: examples of users flagged in ModelData::cold_users never train
// global blocks. After each Train and whenever new global blocks are adopted,
// those users are folded in: foldin_epochs epochs over their own examples that
// step only their user embedding and biases, the global model frozen.
//
// Identity dropout (id_dropout, as DropoutNet): a share of training
// interactions (each with its click negatives) is seen without the user's
// identity, an empty user-embedding bag and no user bias, so the network
// also learns to rate from side features and items alone, as for a user with
// little or no history. The draws come from (seed, epoch, shard, kIdDropout).
//
// FedProx (TrainPlan::proximal_mu): mu * (w - w0) joins the gradient of
// every global row stepped, w0 its value when Train started.
//
// Determinism: epoch e's order and negatives come from (seed, e, shard,
// kShuffle / kNegative); fold-in call c's from (seed, c, shard, kFoldIn);
// initial rows from (seed, 0, item / user key / field row, purpose).
//
// Training runs with denormals flushed to zero (nn.h, FlushDenormals).

// GCC 12 reports Eigen's AVX-512 float kernels as reading an uninitialized
// register (_mm512_undefined_ps, undefined on purpose): a false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <algorithm>
#include <cmath>
#include <istream>
#include <limits>
#include <memory>
#include <numeric>
#include <ostream>
#include <string>
#include <vector>

#include "algorithms/interactions.h"
#include "algorithms/metrics.h"
#include "algorithms/model.h"
#include "algorithms/multitask_net.h"
#include "algorithms/nn.h"
#include "base/random.h"

namespace fedrec {

namespace {

constexpr Purpose kFoldIn = static_cast<Purpose>(static_cast<uint64_t>(Purpose::kUser) + 22);
constexpr Purpose kInitFeature = static_cast<Purpose>(static_cast<uint64_t>(Purpose::kUser) + 23);
constexpr Purpose kIdDropout = static_cast<Purpose>(static_cast<uint64_t>(Purpose::kUser) + 24);
constexpr Purpose kAdapt = static_cast<Purpose>(static_cast<uint64_t>(Purpose::kUser) + 25);
constexpr Purpose kAdaptHoldout = static_cast<Purpose>(static_cast<uint64_t>(Purpose::kUser) + 26);

struct MultiTaskOptions {
  uint64_t seed = 1;
  uint32_t shard = 0;
  uint32_t factors = 32;
  float init_std = 0.05f;
  MultiTaskNetOptions net;
  std::vector<TaskSpec> tasks;
  std::vector<float> weights;  // per task
  bool uncertainty = false;
  OptimizerOptions optimizer;  // the network's (l2 = the key l2)
  float emb_l2 = 0.0f;         // L2 of embedding and bias rows
  float lr_scale = 1.0f;
  float base_lr = 0.01f;  // train.lr
  float lr_decay = 1.0f;  // ModelOptions::sgd.lr_decay
  uint32_t batch = 256;
  uint32_t negatives = 4;
  uint32_t foldin_epochs = 20;
  uint32_t foldin_batch = 16;
  float foldin_lr_scale = 1.0f;
  // Share of training interactions whose user is seen without its identity
  // (embedding row and bias), so the network learns to rate from the side
  // features and items alone, as for a user with no history (DropoutNet).
  float id_dropout = 0.0f;
  // local_towers = 2: the heads (towers and task gates) are federated, and
  // whenever a global model arrives the holder fine-tunes its own copy of
  // them on its data for adapt_epochs epochs, the rest frozen, and predicts
  // with that copy; training and uploads use the global heads.
  // Adaptation holds out adapt_holdout of the holder's examples and keeps,
  // per task, of the global heads and each epoch's, those with the least
  // loss on them (early stopping), so a site's heads are never fitted past
  // what its own data supports.
  bool adapt_heads = false;
  uint32_t adapt_epochs = 3;
  float adapt_holdout = 0.1f;
  uint32_t adapt_min_holdout = 100;  // fewer held-out interactions: the global heads
  float adapt_min_gain = 0.005f;     // least relative drop of a task's held-out error kept
  float adapt_lr_scale = 1.0f;
};

// What a pass over examples steps (MultiTaskModel::RunEpoch).
enum class Pass : uint8_t { kTrain, kFoldIn, kAdapt, kValidate };

struct Example {
  uint32_t user;
  uint32_t item;
  float value;
  bool negative;
  bool anonymous = false;  // the user's embedding and bias left out (id_dropout)
};

// One embedding bag of the input: a block, its first input column, and
// whether it reads the user's or the item's row (field < 0: the row's own id).
struct Bag {
  uint32_t block;
  uint32_t col;
  bool user_side;
  int field;
};

// Per-batch input ids of every bag; kept between batches.
struct BagIds {
  std::vector<std::vector<uint32_t>> offsets, ids;
};

OptimizerOptions EmbeddingOptimizer(const MultiTaskOptions& options) {
  OptimizerOptions o = options.optimizer;
  o.l2 = options.emb_l2;
  return o;
}

class MultiTaskModel : public Model {
 public:
  MultiTaskModel(std::string name, const MultiTaskOptions& options, ModelData data)
      : Model(static_cast<uint32_t>(data.user_keys.size()), data.items),
        name_(std::move(name)),
        options_(options),
        train_(std::move(data.train)),
        user_features_(std::move(data.user_features)),
        item_features_(std::move(data.item_features)),
        cold_(std::move(data.cold_users)),
        optimizer_(options.optimizer),
        emb_optimizer_(EmbeddingOptimizer(options)),
        foldin_optimizer_(EmbeddingOptimizer(options)),
        adapt_optimizer_(options.optimizer),
        foldin_lr_(options.base_lr * options.lr_scale) {
    if (!item_features_) item_features_ = std::make_shared<const FeatureTable>();
    cold_.resize(users_, 0);
    for (size_t t = 0; t < options_.tasks.size(); ++t) {
      heads_.push_back(options_.tasks[t].kind == TaskKind::kRating ? HeadKind::kRegression
                                                                   : HeadKind::kBinary);
      if (options_.tasks[t].kind == TaskKind::kRating) rating_task_ = static_cast<int>(t);
      if (options_.tasks[t].kind == TaskKind::kLike) like_task_ = static_cast<int>(t);
      if (options_.tasks[t].kind == TaskKind::kClick) click_task_ = static_cast<int>(t);
    }
    BuildBlocks(data.user_keys);
    for (uint32_t u = 0; u < users_; ++u) {
      if (cold_[u]) cold_keys_.emplace_back(u, data.user_keys[u]);
    }
    for (size_t i = 0; i < train_.size(); ++i) {
      (cold_[train_[i].user] ? cold_examples_ : warm_examples_).push_back(static_cast<uint32_t>(i));
    }
    if (options_.adapt_heads) {  // a fixed held-out share, drawn from (seed, 1, shard)
      std::vector<uint32_t> order = warm_examples_;
      Rng split(options_.seed, 1, options_.shard, kAdaptHoldout);
      split.Shuffle(std::span<uint32_t>(order));
      const size_t holdout = static_cast<size_t>(
          std::llround(options_.adapt_holdout * static_cast<double>(order.size())));
      if (holdout >= std::max<size_t>(options_.adapt_min_holdout, 1) && holdout < order.size()) {
        adapt_holdout_.assign(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(holdout));
        adapt_train_.assign(order.begin() + static_cast<std::ptrdiff_t>(holdout), order.end());
        std::sort(adapt_holdout_.begin(), adapt_holdout_.end());
        std::sort(adapt_train_.begin(), adapt_train_.end());
      }
    }
    positives_ = UserPositives(train_, users_, -std::numeric_limits<float>::infinity());
    grads_ = net_.MakeGrads();
    for (size_t b = 0; b < blocks_.size(); ++b) {
      if (IsEmbedding(static_cast<uint32_t>(b))) {
        emb_grads_[b].Reset(blocks_[b].rows, blocks_[b].cols);
      }
    }
    example_weight_.assign(1, 0);
  }

  std::string_view name() const override { return name_; }
  std::vector<ParamBlock>& blocks() override { return blocks_; }

  void OnInitialModel() override {
    double sum = 0.0;
    for (uint32_t e : warm_examples_) sum += train_[e].value;
    blocks_[mean_block_].data[0] =
        warm_examples_.empty() ? 0.0f : static_cast<float>(sum / warm_examples_.size());
  }

  void OnGlobalModel() override {
    FoldIn();
    AdaptHeads();
  }

  LossSums Train(const TrainPlan& plan) override {
    const FlushDenormals flush;
    RestoreHeads();  // training moves the global heads, not the site's copy
    for (auto& [b, g] : emb_grads_) g.ClearCounts();
    LossSums loss;
    uint64_t examples = 0;
    // The rate of global epoch e: lr_scale * plan.lr * lr_decay^e (train.lr_decay
    // centrally, federation.lr_decay at sites), as biased MF schedules it.
    SgdOptions schedule;
    schedule.lr = plan.lr * options_.lr_scale;
    schedule.lr_decay = options_.lr_decay;
    // FedProx: the global blocks as the round started.
    proximal_mu_ = plan.proximal_mu;
    anchor_.assign(blocks_.size(), {});
    if (proximal_mu_ > 0.0f) {
      for (size_t b = 0; b < blocks_.size(); ++b) {
        if (IsGlobal(blocks_[b].scope) && b != mean_block_) anchor_[b] = blocks_[b].data;
      }
    }
    for (uint64_t epoch = plan.epoch_offset; epoch < plan.epoch_offset + plan.epochs; ++epoch) {
      const float lr = schedule.LearningRate(epoch);
      foldin_lr_ = lr;
      std::vector<uint32_t>& order = order_;
      order = warm_examples_;
      Rng shuffle(options_.seed, epoch, options_.shard, Purpose::kShuffle);
      shuffle.Shuffle(std::span<uint32_t>(order));
      Rng negatives(options_.seed, epoch, options_.shard, Purpose::kNegative);
      Rng anonymity(options_.seed, epoch, options_.shard, kIdDropout);
      anonymity_ = &anonymity;
      examples += RunEpoch(order, negatives, lr, Pass::kTrain, &loss);
      anonymity_ = nullptr;
      loss.lr_sum += lr;
      if (epoch == plan.epoch_offset) loss.lr_first = lr;
    }
    example_weight_[0] =
        static_cast<uint32_t>(std::min<uint64_t>(examples, std::numeric_limits<uint32_t>::max()));
    FoldIn();
    return loss;
  }

  std::vector<DenseBlockView> Upload() const override {
    rating_weight_ = static_cast<uint32_t>(
        std::min<size_t>(warm_examples_.size(), std::numeric_limits<uint32_t>::max()));
    uint32_t most_rows = 0;
    for (const ParamBlock& block : blocks_) most_rows = std::max(most_rows, block.rows);
    dense_weights_.assign(most_rows, example_weight_[0]);
    std::vector<DenseBlockView> views;
    for (size_t b = 0; b < blocks_.size(); ++b) {
      const ParamBlock& block = blocks_[b];
      if (!IsGlobal(block.scope)) continue;
      std::span<const uint32_t> weights;
      if (b == mean_block_) {
        weights = std::span<const uint32_t>(&rating_weight_, 1);
      } else if (auto it = emb_grads_.find(b); it != emb_grads_.end()) {
        weights = it->second.counts();
      } else {
        weights = std::span<const uint32_t>(dense_weights_).first(block.rows);
      }
      views.push_back(DenseBlockView{weights, HeldGlobal(static_cast<uint32_t>(b))});
    }
    return views;
  }

  // Network weights need finer steps than 2^-8 and may exceed 8.
  UploadRange AdjustUploadRange(const UploadRange& configured) const override {
    UploadRange range = configured;
    range.clip = std::max(range.clip, 64.0f);
    range.frac_bits = std::max<uint32_t>(range.frac_bits, 18);
    return range;
  }

  std::vector<TaskSpec> Tasks() const override { return options_.tasks; }
  bool PredictsRatings() const override { return rating_task_ >= 0; }
  float Predict(uint32_t user, uint32_t item) const override {
    float out[3];
    PredictTasks(user, item, std::span<float>(out, options_.tasks.size()));
    return out[rating_task_];
  }

  void PredictTasks(uint32_t user, uint32_t item, std::span<float> out) const override {
    const Example e{user, item, 0.0f, false};
    Matrix x, final_out;
    NetWorkspace ws;
    BagIds ids;
    Outputs(std::span<const Example>(&e, 1), &ids, &x, &ws, &final_out);
    for (size_t t = 0; t < out.size(); ++t) {
      const float v = final_out(0, static_cast<Eigen::Index>(t));
      out[t] = heads_[t] == HeadKind::kBinary ? Sigmoid(v) : v;
    }
  }

  // The like probability, else the click probability, else the rating.
  void Score(uint32_t user, std::span<float> out) const override {
    // Top-N ranks by the probability of a liked interaction, P(click) *
    // P(like | click) (as entire-space multi-task models do), with the tasks
    // there are: click alone, like alone, else the predicted rating.
    const int task = click_task_ >= 0 ? click_task_ : like_task_ >= 0 ? like_task_ : rating_task_;
    const int also = click_task_ >= 0 && like_task_ >= 0 ? like_task_ : -1;
    constexpr uint32_t kChunk = 512;
    std::vector<Example> batch;
    batch.reserve(kChunk);
    Matrix x, final_out;
    NetWorkspace ws;
    BagIds ids;
    for (uint32_t start = 0; start < items_; start += kChunk) {
      const uint32_t end = std::min(items_, start + kChunk);
      batch.clear();
      for (uint32_t i = start; i < end; ++i) batch.push_back({user, i, 0.0f, false});
      Outputs(batch, &ids, &x, &ws, &final_out);
      for (uint32_t i = start; i < end; ++i) {
        const float v = final_out(i - start, task);
        out[i] = heads_[task] == HeadKind::kBinary ? Sigmoid(v) : v;
        if (also >= 0) out[i] *= Sigmoid(final_out(i - start, also));
      }
    }
  }

  const std::vector<Rating>& train() const override { return train_; }

  // A site's state between rounds: its local blocks, the fold-ins done (they
  // seed the next one's shuffles) and the local optimizers' moments (the
  // fold-in's optimizer starts afresh at every fold-in). Train shuffles its
  // examples from (seed, epoch, shard), so there is no training order to keep.
  bool SupportsCheckpoint() const override { return true; }
  Status SaveState(std::ostream& out) const override {
    FEDREC_RETURN_IF_ERROR(SaveBlocks(out, false));
    out << kStateMagic << ' ' << foldins_ << '\n';
    optimizer_.Save(out);
    emb_optimizer_.Save(out);
    if (!out) return Status::IoError("writing the multi-task site state failed");
    return Status::Ok();
  }
  Status LoadState(std::istream& in, const std::string& where) override {
    std::vector<std::vector<float>> local_before = LocalValues();
    FEDREC_RETURN_IF_ERROR(LoadBlocks(in, false, where));
    std::string magic, version;
    uint64_t foldins = 0;
    in >> magic >> version >> foldins;
    in.get();
    Optimizer optimizer = optimizer_, emb_optimizer = emb_optimizer_;
    Status status;
    if (!in || magic + " " + version != kStateMagic) {
      status = Status::InvalidArgument(where + ": expected \"" + std::string(kStateMagic) +
                                       " <fold-ins>\", found \"" + magic + " " + version + "\"");
    }
    if (status.ok()) status = optimizer.Load(in, where + " (network optimizer)");
    if (status.ok()) status = emb_optimizer.Load(in, where + " (embedding optimizer)");
    if (!status.ok()) {
      RestoreLocalValues(std::move(local_before));
      return status;
    }
    foldins_ = foldins;
    optimizer_ = std::move(optimizer);
    emb_optimizer_ = std::move(emb_optimizer);
    return Status::Ok();
  }

 private:
  static constexpr const char* kStateMagic = "fedrec-multitask-site v1";

  bool IsEmbedding(uint32_t b) const {
    return b == item_emb_ || b == item_bias_ || b == user_emb_ || b == user_bias_ ||
           std::any_of(bags_.begin(), bags_.end(), [b](const Bag& bag) { return bag.block == b; });
  }

  void BuildBlocks(const std::vector<uint64_t>& user_keys) {
    const uint32_t k = options_.factors;
    const uint32_t tasks = static_cast<uint32_t>(options_.tasks.size());
    blocks_.emplace_back("global_mean", Scope::kGlobalAverage, 1, 1);
    blocks_.emplace_back("item_emb", Scope::kGlobal, items_, k);
    for (uint32_t i = 0; i < items_; ++i) {
      InitEmbeddingRow(options_.seed, i, Purpose::kInitItem, options_.init_std,
                       blocks_.back().Row(i), k);
    }
    blocks_.emplace_back("item_bias", Scope::kGlobal, items_, tasks);
    uint32_t col = 2 * k;
    std::vector<Bag> bags;
    auto add_fields = [&](const FeatureTable& table, bool user_side) {
      int c = 0;
      for (const FeatureField& f : table.fields) {
        if (f.numeric) continue;
        const uint32_t b = static_cast<uint32_t>(blocks_.size());
        blocks_.emplace_back((user_side ? "ufeat." : "ifeat.") + f.name, Scope::kGlobal,
                             f.vocabulary, k);
        for (uint32_t r = 0; r < f.vocabulary; ++r) {
          InitEmbeddingRow(options_.seed, (uint64_t{b} << 32) | r, kInitFeature, options_.init_std,
                           blocks_[b].Row(r), k);
        }
        bags.push_back({b, col, user_side, c++});
        col += k;
      }
    };
    add_fields(user_features_, true);
    add_fields(*item_features_, false);
    numeric_col_ = col;
    const uint32_t input = col + user_features_.numerics() + item_features_->numerics();
    if (options_.uncertainty) blocks_.emplace_back("log_var", Scope::kGlobal, 1, tasks);
    blocks_.emplace_back("user_emb", Scope::kLocal, users_, k);
    for (uint32_t u = 0; u < users_; ++u) {
      InitEmbeddingRow(options_.seed, user_keys[u], Purpose::kInitUser, options_.init_std,
                       blocks_.back().Row(u), k);
    }
    blocks_.emplace_back("user_bias", Scope::kLocal, users_, tasks);
    MultiTaskNetOptions net = options_.net;
    net.input = input;
    net.tasks = tasks;
    net.seed = options_.seed;
    net.prefix = "net.";
    net_ = MultiTaskNet(net, &blocks_);
    // Global blocks first: a stable partition, and every index remapped.
    std::vector<uint32_t> order(blocks_.size());
    std::iota(order.begin(), order.end(), 0u);
    std::stable_partition(order.begin(), order.end(),
                          [&](uint32_t b) { return IsGlobal(blocks_[b].scope); });
    std::vector<uint32_t> where(blocks_.size());
    std::vector<ParamBlock> sorted;
    for (uint32_t b : order) {
      where[b] = static_cast<uint32_t>(sorted.size());
      sorted.push_back(std::move(blocks_[b]));
    }
    blocks_ = std::move(sorted);
    net_.Relocate(where);
    for (Bag& bag : bags) bag.block = where[bag.block];
    auto find = [&](std::string_view name) {
      for (uint32_t b = 0; b < blocks_.size(); ++b)
        if (blocks_[b].name == name) return b;
      return std::numeric_limits<uint32_t>::max();
    };
    mean_block_ = find("global_mean");
    item_emb_ = find("item_emb");
    item_bias_ = find("item_bias");
    user_emb_ = find("user_emb");
    user_bias_ = find("user_bias");
    log_var_ = find("log_var");
    // The user and item embeddings are bags of their own ids.
    bags_.push_back({user_emb_, 0, true, -1});
    bags_.push_back({item_emb_, k, false, -1});
    bags_.insert(bags_.end(), bags.begin(), bags.end());
  }

  // Fills the bags' ids for the batch.
  void BuildIds(std::span<const Example> batch, BagIds* ids) const {
    ids->offsets.resize(bags_.size());
    ids->ids.resize(bags_.size());
    for (size_t g = 0; g < bags_.size(); ++g) {
      const Bag& bag = bags_[g];
      std::vector<uint32_t>& offsets = ids->offsets[g];
      std::vector<uint32_t>& list = ids->ids[g];
      offsets.clear();
      list.clear();
      offsets.push_back(0);
      const FeatureTable& table = bag.user_side ? user_features_ : *item_features_;
      for (const Example& e : batch) {
        const uint32_t row = bag.user_side ? e.user : e.item;
        if (bag.field < 0) {
          // An anonymous user's identity is an empty bag: zero, and no gradient.
          if (!(e.anonymous && bag.block == user_emb_)) list.push_back(row);
        } else {
          for (uint32_t id : table.Ids(row, static_cast<uint32_t>(bag.field))) list.push_back(id);
        }
        offsets.push_back(static_cast<uint32_t>(list.size()));
      }
    }
  }

  // The network's input for the batch.
  void Input(std::span<const Example> batch, BagIds* ids, Matrix* x) const {
    BuildIds(batch, ids);
    x->resize(static_cast<Eigen::Index>(batch.size()), net_.options().input);
    for (size_t g = 0; g < bags_.size(); ++g) {
      EmbeddingForward(blocks_[bags_[g].block], ids->offsets[g], ids->ids[g], bags_[g].col, x);
    }
    const uint32_t nu = user_features_.numerics(), ni = item_features_->numerics();
    for (size_t b = 0; b < batch.size(); ++b) {
      float* row = x->row(static_cast<Eigen::Index>(b)).data() + numeric_col_;
      if (nu > 0) std::copy_n(user_features_.Numeric(batch[b].user).data(), nu, row);
      if (ni > 0) std::copy_n(item_features_->Numeric(batch[b].item).data(), ni, row + nu);
    }
  }

  // The tasks' outputs (tower + wide part) for the batch.
  void Outputs(std::span<const Example> batch, BagIds* ids, Matrix* x, NetWorkspace* ws,
               Matrix* out) const {
    Input(batch, ids, x);
    net_.Forward(blocks_, *x, ws);
    *out = ws->out;
    AddWide(batch, *x, out);
  }

  void AddWide(std::span<const Example> batch, const Matrix& x, Matrix* out) const {
    const uint32_t k = options_.factors;
    const uint32_t tasks = static_cast<uint32_t>(heads_.size());
    const float mu = blocks_[mean_block_].data[0];
    for (size_t b = 0; b < batch.size(); ++b) {
      const Eigen::Index r = static_cast<Eigen::Index>(b);
      const float* ub = blocks_[user_bias_].Row(batch[b].user);
      const float* ib = blocks_[item_bias_].Row(batch[b].item);
      // An anonymous user's bias is 0 (0 + b_i == b_i exactly).
      for (uint32_t t = 0; t < tasks; ++t)
        (*out)(r, t) += (batch[b].anonymous ? 0.0f : ub[t]) + ib[t];
      if (rating_task_ >= 0) {
        (*out)(r, rating_task_) += mu + x.row(r).segment(0, k).dot(x.row(r).segment(k, k));
      }
    }
  }

  // Draws an item the user has no interaction with (uniform, rejection).
  uint32_t DrawNegative(Rng& rng, uint32_t user) const {
    const std::span<const uint32_t> seen = positives_.Row(user);
    if (seen.size() >= items_) return static_cast<uint32_t>(rng.Below(items_));
    for (;;) {
      const uint32_t j = static_cast<uint32_t>(rng.Below(items_));
      if (!std::binary_search(seen.begin(), seen.end(), j)) return j;
    }
  }

  // One pass over `order` (indices of train_) in batches. kTrain: every
  // block learns (and rows are counted for upload weights); kFoldIn: only
  // the users' local embeddings and biases; kAdapt: only the heads. Returns
  // the examples trained.
  uint64_t RunEpoch(std::span<const uint32_t> order, Rng& negatives, float lr, Pass pass,
                    LossSums* loss) {
    const bool global = pass == Pass::kTrain;
    const size_t batch = pass == Pass::kFoldIn ? options_.foldin_batch : options_.batch;
    const uint32_t tasks = static_cast<uint32_t>(heads_.size());
    const uint32_t negs = click_task_ >= 0 ? options_.negatives : 0;
    const bool drop_ids = global && options_.id_dropout > 0.0f && anonymity_ != nullptr;
    uint64_t examples = 0;
    for (size_t start = 0; start < order.size(); start += batch) {
      const size_t end = std::min(order.size(), start + batch);
      batch_.clear();
      for (size_t n = start; n < end; ++n) {
        const Rating& r = train_[order[n]];
        // An interaction and its negatives are seen with or without the
        // user's identity together.
        const bool anonymous = drop_ids && anonymity_->Uniform() < options_.id_dropout;
        batch_.push_back({r.user, r.item, r.value, false, anonymous});
        for (uint32_t j = 0; j < negs; ++j) {
          batch_.push_back({r.user, DrawNegative(negatives, r.user), 0.0f, true, anonymous});
        }
      }
      const Eigen::Index rows = static_cast<Eigen::Index>(batch_.size());
      target_.resize(rows, tasks);
      mask_.resize(rows, tasks);
      for (Eigen::Index b = 0; b < rows; ++b) {
        const Example& e = batch_[b];
        for (uint32_t t = 0; t < tasks; ++t) {
          switch (options_.tasks[t].kind) {
            case TaskKind::kRating:
              target_(b, t) = e.value;
              mask_(b, t) = e.negative ? 0.0f : 1.0f;
              break;
            case TaskKind::kLike:
              target_(b, t) = e.value >= options_.tasks[t].threshold ? 1.0f : 0.0f;
              mask_(b, t) = e.negative ? 0.0f : 1.0f;
              break;
            case TaskKind::kClick:
              target_(b, t) = e.negative ? 0.0f : 1.0f;
              mask_(b, t) = 1.0f;
              break;
          }
        }
      }
      loss->sum += Step(pass, lr, 1.0f / static_cast<float>(end - start));
      loss->count += end - start;
      examples += static_cast<uint64_t>(rows);
    }
    return examples;
  }

  // Forward, loss, backward and the optimizer's step over batch_.
  double Step(Pass pass, float lr, float scale) {
    const bool global = pass == Pass::kTrain;
    const uint32_t k = options_.factors;
    const uint32_t tasks = static_cast<uint32_t>(heads_.size());
    Outputs(batch_, &ids_, &x_, &ws_, &out_);
    std::span<const float> log_var;
    std::fill(dlog_var_.begin(), dlog_var_.end(), 0.0f);
    if (options_.uncertainty) log_var = blocks_[log_var_].data;
    const double loss =
        MultiTaskLoss(out_, target_, mask_, heads_, options_.weights, log_var, scale, &dout_,
                      std::span<float>(dlog_var_.data(), options_.uncertainty ? tasks : 0));
    if (pass == Pass::kValidate) {  // each task's metric apart (AdaptHeads)
      for (uint32_t t = 0; t < tasks; ++t) {
        const bool binary = heads_[t] == HeadKind::kBinary;
        for (Eigen::Index r = 0; r < out_.rows(); ++r) {
          if (mask_(r, t) == 0.0f) continue;
          const float y = out_(r, t), label = target_(r, t);
          if (binary) {
            holdout_binary_[t].Add(Sigmoid(y), label > 0.5f);
          } else {
            holdout_sq_[t] += 2.0 * MseLoss(y, label);
          }
        }
      }
      return loss / scale;
    }
    grads_.Zero();
    if (pass == Pass::kAdapt) {  // the heads alone: no input gradient
      net_.Backward(blocks_, x_, dout_, &ws_, &grads_, nullptr);
      for (uint32_t j : net_.head_layers()) {
        const uint32_t b = net_.dense(j).block;
        adapt_optimizer_.Step(
            b, blocks_[b].data,
            std::span<const float>(grads_.dense[j].data(), grads_.dense[j].size()), lr);
      }
      return loss / scale;
    }
    net_.Backward(blocks_, x_, dout_, &ws_, &grads_, &dx_);
    // Wide part: biases, and <p_u, q_i> for the rating (dx carries the
    // embeddings' gradient).
    EmbeddingGrad& ub = emb_grads_[user_bias_];
    EmbeddingGrad& ib = emb_grads_[item_bias_];
    for (size_t b = 0; b < batch_.size(); ++b) {
      const Eigen::Index r = static_cast<Eigen::Index>(b);
      const Example& e = batch_[b];
      float* gi = ib.Touch(e.item);
      for (uint32_t t = 0; t < tasks; ++t) gi[t] += dout_(r, t);
      if (!e.anonymous) {
        float* gu = ub.Touch(e.user);
        for (uint32_t t = 0; t < tasks; ++t) gu[t] += dout_(r, t);
      }
      if (global) ib.Count(e.item);
      if (rating_task_ >= 0) {
        const float d = dout_(r, rating_task_);
        if (d != 0.0f) {
          dx_.row(r).segment(0, k) += d * x_.row(r).segment(k, k);
          dx_.row(r).segment(k, k) += d * x_.row(r).segment(0, k);
        }
      }
    }
    for (size_t g = 0; g < bags_.size(); ++g) {
      const Bag& bag = bags_[g];
      if (!global && bag.block != user_emb_) continue;
      EmbeddingBackward(dx_, ids_.offsets[g], ids_.ids[g], bag.col, &emb_grads_[bag.block], global);
    }
    if (global && proximal_mu_ > 0.0f) AddProximal();
    // Steps.
    for (auto& [b, grad] : emb_grads_) {
      const bool local_user = b == user_emb_ || b == user_bias_;
      if (global) {
        emb_optimizer_.StepRows(b, &blocks_[b], grad, lr);
      } else if (local_user) {
        foldin_optimizer_.StepRows(b, &blocks_[b], grad, lr);
      }
      grad.Clear();
    }
    if (global) {
      for (uint32_t j = 0; j < net_.dense_layers(); ++j) {
        const uint32_t b = net_.dense(j).block;
        optimizer_.Step(b, blocks_[b].data,
                        std::span<const float>(grads_.dense[j].data(), grads_.dense[j].size()), lr);
      }
      if (options_.uncertainty) {
        optimizer_.Step(log_var_, blocks_[log_var_].data,
                        std::span<const float>(dlog_var_.data(), tasks), lr);
      }
    }
    return loss / scale;
  }

  // FedProx: mu * (w - w0) on every global row stepped.
  void AddProximal() {
    const float mu = proximal_mu_;
    for (auto& [b, grad] : emb_grads_) {
      if (anchor_[b].empty()) continue;
      const uint32_t cols = blocks_[b].cols;
      for (uint32_t r : grad.touched()) {
        float* g = grad.Touch(r);
        const float* w = blocks_[b].Row(r);
        const float* w0 = anchor_[b].data() + static_cast<size_t>(r) * cols;
        for (uint32_t c = 0; c < cols; ++c) g[c] += mu * (w[c] - w0[c]);
      }
    }
    for (uint32_t j = 0; j < net_.dense_layers(); ++j) {
      const uint32_t b = net_.dense(j).block;
      if (anchor_[b].empty()) continue;
      for (size_t i = 0; i < anchor_[b].size(); ++i) {
        grads_.dense[j].data()[i] += mu * (blocks_[b].data[i] - anchor_[b][i]);
      }
    }
    if (options_.uncertainty) {
      for (size_t t = 0; t < heads_.size(); ++t) {
        dlog_var_[t] += mu * (blocks_[log_var_].data[t] - anchor_[log_var_][t]);
      }
    }
  }

  // The global value of block b: the saved global heads while the blocks
  // hold the site's adapted copy.
  std::span<const float> HeldGlobal(uint32_t b) const {
    if (adapted_) {
      const auto& heads = net_.head_layers();
      for (size_t h = 0; h < heads.size(); ++h)
        if (net_.dense(heads[h]).block == b) return head_global_[h];
    }
    return blocks_[b].data;
  }

  // local_towers = 2: fine-tunes the heads on this holder's examples, the
  // rest of the model frozen, after keeping their global values. Each task's
  // heads (its gates and tower, which reach no other task) end as they were
  // after the epoch, or as the global ones, with the least loss of that task
  // on the held-out examples; it stops at an epoch that lowers no task's.
  // Every adaptation starts from the global heads with a fresh optimizer, its
  // epochs shuffled from (seed, e, shard, kAdapt).
  void AdaptHeads() {
    if (!options_.adapt_heads || options_.adapt_epochs == 0 || adapt_train_.empty()) return;
    if (blocks_[item_emb_].data.empty()) return;  // global values released
    const FlushDenormals flush;
    const uint32_t tasks = static_cast<uint32_t>(heads_.size());
    const auto& heads = net_.head_layers();
    head_global_.resize(heads.size());
    for (size_t h = 0; h < heads.size(); ++h) head_global_[h] = HeadValues(heads[h]);
    adapted_ = true;
    adapt_optimizer_ = Optimizer(adapt_optimizer_.options());
    std::vector<double> best_loss = HoldoutLosses();
    std::vector<std::vector<std::vector<float>>> best(tasks);  // per task, per head layer
    for (uint32_t t = 0; t < tasks; ++t) {
      for (uint32_t j : net_.head_layers(t)) best[t].push_back(HeadValues(j));
    }
    LossSums ignored;
    for (uint32_t e = 0; e < options_.adapt_epochs; ++e) {
      order_ = adapt_train_;
      Rng shuffle(options_.seed, e, options_.shard, kAdapt);
      shuffle.Shuffle(std::span<uint32_t>(order_));
      RunEpoch(order_, shuffle, foldin_lr_ * options_.adapt_lr_scale, Pass::kAdapt, &ignored);
      const std::vector<double> loss = HoldoutLosses();
      bool improved = false;
      for (uint32_t t = 0; t < tasks; ++t) {
        // Early stopping's min_delta: a change the held-out examples cannot
        // tell from noise is not kept.
        if (!(loss[t] < best_loss[t] * (1.0 - options_.adapt_min_gain))) continue;
        improved = true;
        best_loss[t] = loss[t];
        const auto& layers = net_.head_layers(t);
        for (size_t i = 0; i < layers.size(); ++i) best[t][i] = HeadValues(layers[i]);
      }
      if (!improved) break;
    }
    for (uint32_t t = 0; t < tasks; ++t) {
      const auto& layers = net_.head_layers(t);
      for (size_t i = 0; i < layers.size(); ++i) {
        blocks_[net_.dense(layers[i]).block].data = std::move(best[t][i]);
      }
    }
  }

  const std::vector<float>& HeadValues(uint32_t layer) const {
    return blocks_[net_.dense(layer).block].data;
  }

  // Each task's error on the held-out examples (their click negatives drawn
  // alike every time), by the metric evaluation reports: the squared error
  // of a regression, 1 - AUC of a binary task (its log loss when the
  // held-out examples have one class only).
  std::vector<double> HoldoutLosses() {
    const size_t tasks = heads_.size();
    holdout_sq_.assign(tasks, 0.0);
    holdout_binary_.assign(tasks, BinarySums(kHoldoutAucBins));
    Rng negatives(options_.seed, 0, options_.shard, kAdaptHoldout);
    LossSums ignored;
    RunEpoch(adapt_holdout_, negatives, 0.0f, Pass::kValidate, &ignored);
    std::vector<double> error(tasks);
    for (size_t t = 0; t < tasks; ++t) {
      if (heads_[t] != HeadKind::kBinary) {
        error[t] = holdout_sq_[t];
      } else {
        const double auc = holdout_binary_[t].Auc();
        error[t] = std::isfinite(auc) ? 1.0 - auc : holdout_binary_[t].log_loss;
      }
    }
    return error;
  }

  // Puts the global heads back in place of the adapted copy.
  void RestoreHeads() {
    if (!adapted_) return;
    const auto& heads = net_.head_layers();
    for (size_t h = 0; h < heads.size(); ++h) {
      std::vector<float>& data = blocks_[net_.dense(heads[h]).block].data;
      if (data.size() == head_global_[h].size()) data = head_global_[h];
    }
    adapted_ = false;
  }

  // Trains the cold users' local rows on their own examples, the global
  // model frozen.
  void FoldIn() {
    const FlushDenormals flush;
    if (cold_examples_.empty() || options_.foldin_epochs == 0) return;
    if (blocks_[item_emb_].data.empty()) return;  // global values released
    const uint64_t call = foldins_++;
    // Every fold-in starts the new users afresh against the current global
    // model (their initial rows, a new optimizer state), so a user's few
    // ratings are fitted foldin_epochs times in all, not once per round.
    const uint32_t k = blocks_[user_emb_].cols;
    for (const auto& [u, key] : cold_keys_) {
      InitEmbeddingRow(options_.seed, key, Purpose::kInitUser, options_.init_std,
                       blocks_[user_emb_].Row(u), k);
      std::fill_n(blocks_[user_bias_].Row(u), blocks_[user_bias_].cols, 0.0f);
    }
    foldin_optimizer_ = Optimizer(foldin_optimizer_.options());
    LossSums ignored;
    for (uint32_t e = 0; e < options_.foldin_epochs; ++e) {
      order_ = cold_examples_;
      Rng shuffle(options_.seed, call * options_.foldin_epochs + e, options_.shard, kFoldIn);
      shuffle.Shuffle(std::span<uint32_t>(order_));
      RunEpoch(order_, shuffle, foldin_lr_ * options_.foldin_lr_scale, Pass::kFoldIn, &ignored);
    }
  }

  std::string name_;
  MultiTaskOptions options_;
  std::vector<Rating> train_;
  FeatureTable user_features_;
  std::shared_ptr<const FeatureTable> item_features_;
  std::vector<uint8_t> cold_;
  std::vector<std::pair<uint32_t, uint64_t>> cold_keys_;  // (user, key) of the cold users
  Optimizer optimizer_;
  Optimizer emb_optimizer_;  // embedding and bias rows
  // Fold-in's own state, so folding users in leaves training's steps as they are.
  Optimizer foldin_optimizer_;
  std::vector<HeadKind> heads_;
  int rating_task_ = -1, like_task_ = -1, click_task_ = -1;

  std::vector<ParamBlock> blocks_;
  MultiTaskNet net_;
  std::vector<Bag> bags_;
  uint32_t numeric_col_ = 0;
  uint32_t mean_block_ = 0, item_emb_ = 0, item_bias_ = 0, user_emb_ = 0, user_bias_ = 0,
           log_var_ = 0;

  std::vector<uint32_t> warm_examples_, cold_examples_, order_;
  Csr positives_;
  uint64_t foldins_ = 0;
  Rng* anonymity_ = nullptr;  // id_dropout's draws during a global epoch
  // local_towers = 2: the heads' optimizer while adapting, and their global
  // values (per net_.head_layers()) while the blocks hold the adapted copy.
  Optimizer adapt_optimizer_;
  std::vector<std::vector<float>> head_global_;
  bool adapted_ = false;
  // Its examples (of warm users) that adaptation trains on and holds out.
  std::vector<uint32_t> adapt_train_, adapt_holdout_;
  // Per task, filled by Pass::kValidate.
  static constexpr uint32_t kHoldoutAucBins = 1024;
  std::vector<double> holdout_sq_;
  std::vector<BinarySums> holdout_binary_;
  // Fold-in's learning rate: the last Train's (lr_scale * TrainPlan::lr);
  // before any, lr_scale * train.lr.
  float foldin_lr_ = 0.0f;

  // Training state and workspaces.
  std::map<uint32_t, EmbeddingGrad> emb_grads_;  // by block index
  NetGrads grads_;
  NetWorkspace ws_;
  BagIds ids_;
  std::vector<Example> batch_;
  Matrix x_, out_, dout_, dx_, target_, mask_;
  std::vector<float> dlog_var_ = std::vector<float>(3, 0.0f);
  float proximal_mu_ = 0.0f;
  std::vector<std::vector<float>> anchor_;  // per block: its value at Train's start (FedProx)
  std::vector<uint32_t> example_weight_;
  mutable std::vector<uint32_t> dense_weights_;
  mutable uint32_t rating_weight_ = 0;
};

// Reads a key as a whole number in [lo, hi].
Status WholeKey(const std::string& model, const ModelOptions& options, const std::string& key,
                double lo, double hi, uint32_t* out) {
  const double v = options.Param(key);
  if (!(v >= lo && v <= hi) || v != std::floor(v)) {
    return Status::InvalidArgument("model." + model + "." + key + ": expected a whole number in [" +
                                   std::to_string(static_cast<int64_t>(lo)) + ", " +
                                   std::to_string(static_cast<int64_t>(hi)) + "], found " +
                                   std::to_string(v));
  }
  *out = static_cast<uint32_t>(v);
  return Status::Ok();
}

// Reads a key as a finite number >= lo.
Status RealKey(const std::string& model, const ModelOptions& options, const std::string& key,
               double lo, float* out) {
  const double v = options.Param(key);
  if (!std::isfinite(v) || v < lo) {
    return Status::InvalidArgument("model." + model + "." + key + ": expected a number >= " +
                                   std::to_string(lo) + ", found " + std::to_string(v));
  }
  *out = static_cast<float>(v);
  return Status::Ok();
}

// Checks a feature table against the rows it must have and its vocabularies.
Status CheckFeatures(const std::string& model, const FeatureTable& table, uint32_t rows,
                     const std::string& what) {
  if (table.empty()) return Status::Ok();
  const std::string where = model + ": " + what + " features: ";
  if (table.rows != rows) {
    return Status::InvalidArgument(where + "expected " + std::to_string(rows) + " rows, found " +
                                   std::to_string(table.rows));
  }
  const size_t c = table.categorical();
  // A table of no rows (a coordinator's model) declares the fields only.
  if (rows == 0) return Status::Ok();
  if (c > 0 && table.offsets.size() != static_cast<size_t>(rows) * c + 1) {
    return Status::InvalidArgument(where + "expected " + std::to_string(rows * c + 1) +
                                   " offsets, found " + std::to_string(table.offsets.size()));
  }
  if (table.numeric.size() != static_cast<size_t>(rows) * table.numerics()) {
    return Status::InvalidArgument(
        where + "expected " + std::to_string(static_cast<size_t>(rows) * table.numerics()) +
        " numeric values, found " + std::to_string(table.numeric.size()));
  }
  for (size_t at = 0; at + 1 < table.offsets.size(); ++at) {
    if (table.offsets[at] > table.offsets[at + 1] || table.offsets[at + 1] > table.ids.size()) {
      return Status::InvalidArgument(
          where + "offsets must rise within the " + std::to_string(table.ids.size()) +
          " ids; entry " + std::to_string(at + 1) + " is " + std::to_string(table.offsets[at + 1]));
    }
  }
  std::vector<uint32_t> vocab;
  for (const FeatureField& f : table.fields) {
    if (!f.numeric) vocab.push_back(f.vocabulary);
  }
  for (uint32_t r = 0; r < rows && c > 0; ++r) {
    for (uint32_t f = 0; f < c; ++f) {
      for (uint32_t id : table.Ids(r, f)) {
        if (id >= vocab[f]) {
          return Status::InvalidArgument(
              where + "row " + std::to_string(r) + ", field " + std::to_string(f) +
              ": expected an id < " + std::to_string(vocab[f]) + ", found " + std::to_string(id));
        }
      }
    }
  }
  return Status::Ok();
}

Result<std::unique_ptr<Model>> CreateMultiTask(const std::string& name, Architecture architecture,
                                               const ModelOptions& options, ModelData data) {
  MultiTaskOptions mt;
  mt.seed = options.seed;
  mt.shard = data.shard;
  mt.base_lr = options.sgd.lr;
  mt.lr_decay = options.sgd.lr_decay;
  uint32_t v = 0;
  FEDREC_RETURN_IF_ERROR(WholeKey(name, options, "factors", 0, 4096, &v));
  mt.factors = v > 0 ? v : options.factors;
  if (mt.factors == 0) {
    return Status::InvalidArgument("model.factors: expected at least 1 factor for " + name +
                                   ", found 0");
  }
  float f = 0.0f;
  FEDREC_RETURN_IF_ERROR(RealKey(name, options, "init_std", 0.0, &f));
  mt.init_std = f > 0 ? f : options.init_std;
  MultiTaskNetOptions& net = mt.net;
  net.architecture = architecture;
  uint32_t width = 0, layers = 0;
  FEDREC_RETURN_IF_ERROR(WholeKey(name, options, "expert_hidden", 1, 4096, &width));
  FEDREC_RETURN_IF_ERROR(WholeKey(name, options, "expert_layers", 1, 8, &layers));
  net.expert_hidden.assign(layers, width);
  FEDREC_RETURN_IF_ERROR(WholeKey(name, options, "tower_hidden", 1, 4096, &width));
  FEDREC_RETURN_IF_ERROR(WholeKey(name, options, "tower_layers", 0, 8, &layers));
  net.tower_hidden.assign(layers, width);
  if (architecture == Architecture::kMmoe) {
    FEDREC_RETURN_IF_ERROR(WholeKey(name, options, "experts", 1, 32, &net.experts));
  }
  if (architecture == Architecture::kPle) {
    FEDREC_RETURN_IF_ERROR(WholeKey(name, options, "shared_experts", 1, 16, &net.shared_experts));
    FEDREC_RETURN_IF_ERROR(
        WholeKey(name, options, "specific_experts", 0, 8, &net.specific_experts));
    FEDREC_RETURN_IF_ERROR(WholeKey(name, options, "levels", 1, 4, &net.levels));
  }
  FEDREC_RETURN_IF_ERROR(WholeKey(name, options, "local_towers", 0, 2, &v));
  net.local_towers = v == 1;
  mt.adapt_heads = v == 2;
  FEDREC_RETURN_IF_ERROR(WholeKey(name, options, "adapt_epochs", 0, 1000, &mt.adapt_epochs));
  FEDREC_RETURN_IF_ERROR(RealKey(name, options, "adapt_holdout", 0.0, &mt.adapt_holdout));
  if (mt.adapt_holdout <= 0.0f || mt.adapt_holdout >= 1.0f) {
    return Status::InvalidArgument("model." + name +
                                   ".adapt_holdout: expected a share in (0, 1), found " +
                                   std::to_string(mt.adapt_holdout));
  }
  FEDREC_RETURN_IF_ERROR(RealKey(name, options, "adapt_lr_scale", 0.0, &mt.adapt_lr_scale));
  FEDREC_RETURN_IF_ERROR(
      WholeKey(name, options, "adapt_min_holdout", 0, 1u << 30, &mt.adapt_min_holdout));
  FEDREC_RETURN_IF_ERROR(RealKey(name, options, "adapt_min_gain", 0.0, &mt.adapt_min_gain));
  const std::pair<const char*, TaskKind> tasks[] = {
      {"rating", TaskKind::kRating}, {"like", TaskKind::kLike}, {"click", TaskKind::kClick}};
  for (const auto& [task, kind] : tasks) {
    FEDREC_RETURN_IF_ERROR(RealKey(name, options, std::string(task) + "_weight", 0.0, &f));
    if (f == 0.0f) continue;
    TaskSpec spec{task, kind, 4.0f};
    if (kind == TaskKind::kLike) {
      FEDREC_RETURN_IF_ERROR(RealKey(name, options, "like_threshold", -1e9, &spec.threshold));
    }
    mt.tasks.push_back(spec);
    mt.weights.push_back(f);
  }
  if (mt.tasks.empty()) {
    return Status::InvalidArgument("model." + name +
                                   ": expected at least one of rating_weight, like_weight, "
                                   "click_weight > 0, found all 0");
  }
  FEDREC_RETURN_IF_ERROR(WholeKey(name, options, "uncertainty", 0, 1, &v));
  mt.uncertainty = v == 1;
  FEDREC_RETURN_IF_ERROR(WholeKey(name, options, "optimizer", 0, 2, &v));
  mt.optimizer.kind = static_cast<OptimizerKind>(v);
  FEDREC_RETURN_IF_ERROR(RealKey(name, options, "lr_scale", 0.0, &mt.lr_scale));
  FEDREC_RETURN_IF_ERROR(RealKey(name, options, "l2", 0.0, &mt.optimizer.l2));
  FEDREC_RETURN_IF_ERROR(RealKey(name, options, "emb_l2", 0.0, &mt.emb_l2));
  FEDREC_RETURN_IF_ERROR(WholeKey(name, options, "batch", 1, 1 << 20, &mt.batch));
  FEDREC_RETURN_IF_ERROR(WholeKey(name, options, "negatives", 0, 100, &mt.negatives));
  FEDREC_RETURN_IF_ERROR(WholeKey(name, options, "foldin_epochs", 0, 1000, &mt.foldin_epochs));
  FEDREC_RETURN_IF_ERROR(WholeKey(name, options, "foldin_batch", 1, 1 << 20, &mt.foldin_batch));
  FEDREC_RETURN_IF_ERROR(RealKey(name, options, "foldin_lr_scale", 0.0, &mt.foldin_lr_scale));

  FEDREC_RETURN_IF_ERROR(RealKey(name, options, "id_dropout", 0.0, &mt.id_dropout));
  if (mt.id_dropout > 1.0f) {
    return Status::InvalidArgument("model." + name +
                                   ".id_dropout: expected a share in [0, 1], found " +
                                   std::to_string(mt.id_dropout));
  }

  const size_t users = data.user_keys.size();
  for (size_t n = 0; n < data.train.size(); ++n) {
    const Rating& r = data.train[n];
    if (r.user >= users || r.item >= data.items || !std::isfinite(r.value)) {
      return Status::InvalidArgument(
          name + ": training interaction " + std::to_string(n) + ": expected user < " +
          std::to_string(users) + ", item < " + std::to_string(data.items) +
          " and a finite value, found user " + std::to_string(r.user) + ", item " +
          std::to_string(r.item) + ", value " + std::to_string(r.value));
    }
  }
  if (!data.cold_users.empty() && data.cold_users.size() != users) {
    return Status::InvalidArgument(name + ": expected cold_users for " + std::to_string(users) +
                                   " users, found " + std::to_string(data.cold_users.size()));
  }
  FEDREC_RETURN_IF_ERROR(
      CheckFeatures(name, data.user_features, static_cast<uint32_t>(users), "user"));
  if (data.item_features) {
    // A model of no users (the coordinator's) may get the item fields alone:
    // it never reads an item's features.
    const bool fields_only = users == 0 && data.item_features->rows == 0;
    FEDREC_RETURN_IF_ERROR(
        CheckFeatures(name, *data.item_features, fields_only ? 0 : data.items, "item"));
  }
  return std::unique_ptr<Model>(std::make_unique<MultiTaskModel>(name, mt, std::move(data)));
}

std::vector<ModelKey> MultiTaskKeys(Architecture architecture) {
  std::vector<ModelKey> keys = {
      {"factors", 0, "embedding size (0 = model.factors)"},
      {"init_std", 0, "std of the initial embeddings (0 = model.init_std)"},
      {"expert_hidden", architecture == Architecture::kSharedBottom ? 64.0 : 32.0,
       architecture == Architecture::kSharedBottom ? "width of the shared bottom's layers"
                                                   : "width of each expert's layers"},
      {"expert_layers", 1,
       architecture == Architecture::kSharedBottom ? "layers of the shared bottom"
                                                   : "layers of each expert"},
      {"tower_hidden", 16, "width of each task tower's hidden layers"},
      {"tower_layers", 1, "hidden layers of each task tower (then one output)"},
      {"rating_weight", 1, "loss weight of the rating task (0 = no rating task)"},
      {"like_weight", 1, "loss weight of the like task (0 = no like task)"},
      {"like_threshold", 4, "a rating >= this is a like"},
      {"click_weight", 1,
       "loss weight of the click task (0 = no click task); it also carries which items a user "
       "rated into the shared layers and embeddings, which lowers the rating RMSE"},
      {"negatives", 2, "click task: sampled non-interacted items per interaction"},
      {"uncertainty", 0, "1 = uncertainty weighting of the tasks by learned log-variances"},
      {"optimizer", 2, "local optimizer: 0 sgd, 1 adagrad, 2 adam"},
      {"lr_scale", 0.1,
       "learning rate of global epoch e = lr_scale * the round's base rate (train.lr) * "
       "lr_decay^e (train.lr_decay centrally, federation.lr_decay at sites)"},
      {"l2", 0.003, "L2 regularization of the network's weights"},
      {"emb_l2", 0.002, "L2 regularization of the embedding and bias rows stepped"},
      {"batch", 256, "interactions per minibatch"},
      {"local_towers", 0,
       "1 = towers and task gates stay at the site (kLocal); 2 = they are federated and each "
       "site predicts with its own copy, fine-tuned on its data from every global model"},
      {"adapt_epochs", 3,
       "local_towers = 2: most epochs of fine-tuning a site's towers and task gates, the rest "
       "frozen; each task keeps its heads of the epoch (or the global ones) with the least error "
       "on held-out examples (squared error, or 1 - AUC), and it stops at an epoch that lowers "
       "no task's"},
      {"adapt_holdout", 0.1,
       "local_towers = 2: share of a site's examples held out to choose its towers by"},
      {"adapt_lr_scale", 1,
       "local_towers = 2: fine-tuning's learning rate, as a multiple of training's"},
      {"adapt_min_gain", 0.005,
       "local_towers = 2: least relative drop of a task's held-out error for its adapted heads "
       "to be kept (early stopping's min_delta)"},
      {"adapt_min_holdout", 100,
       "local_towers = 2: a site with fewer held-out interactions than this (too few to choose "
       "by) keeps the global towers"},
      {"foldin_epochs", 20, "epochs that fold cold-start users in, the global model frozen"},
      {"foldin_batch", 16, "interactions per minibatch of fold-in"},
      {"foldin_lr_scale", 1, "fold-in's learning rate, as a multiple of training's"},
      {"id_dropout", 0,
       "share of training interactions seen without the user's embedding and bias, so the "
       "network learns to rate from side features alone (cold start)"},
  };
  if (architecture == Architecture::kMmoe) keys.push_back({"experts", 4, "experts"});
  if (architecture == Architecture::kPle) {
    keys.push_back({"shared_experts", 2, "shared experts per level"});
    keys.push_back({"specific_experts", 1, "task-specific experts per task and level"});
    keys.push_back({"levels", 1, "extraction levels"});
  }
  return keys;
}

}  // namespace

void RegisterMultiTask(ModelRegistry* registry) {
  const std::tuple<const char*, Architecture, const char*> models[] = {
      {"shared_bottom", Architecture::kSharedBottom,
       "multi-task net (rating, like, click) with a shared-bottom MLP and a tower per task, "
       "user / item / side-feature embeddings and a factorization wide part"},
      {"mmoe", Architecture::kMmoe,
       "multi-task net (rating, like, click), multi-gate mixture of experts (MMoE), "
       "user / item / side-feature embeddings and a factorization wide part"},
      {"ple", Architecture::kPle,
       "multi-task net (rating, like, click), progressive layered extraction (PLE), "
       "user / item / side-feature embeddings and a factorization wide part"},
  };
  for (const auto& [name, architecture, doc] : models) {
    const std::string model = name;
    const Architecture arch = architecture;
    ModelInfo info{model, doc, MultiTaskKeys(arch),
                   [model, arch](const ModelOptions& options, ModelData data) {
                     return CreateMultiTask(model, arch, options, std::move(data));
                   }};
    // Plain FedAvg: networks trained with Adam at the sites oscillate when the
    // server steps past the sites' average (federated RMSE on MovieLens 100K
    // u1 0.967 at server_lr 2, 0.928 at 1, centralized 0.912).
    info.server_lr = 1.0;
    // As many passes over the data as the centralized default (train.epochs
    // 60 = federation.rounds 20 x 3): with 2 local epochs, 40 passes left
    // ple 2.3% short of its centralized RMSE on MovieLens 100K u1.
    info.local_epochs = 3;
    registry->Register(std::move(info));
  }
}

}  // namespace fedrec
