// Model: the one interface the Worker, `fedrec train`, the simulator,
// evaluation and serving use. Biased MF, BPR, iALS, EASE, item-kNN and
// popularity are peers behind it; a new model is one file with a Model
// subclass and one ModelRegistry::Register call (a plug-in library does the
// same on the registry the application hands it).
//
// A model owns named parameter blocks (base/param_block.h): global blocks
// (the same at every site, combined by the coordinator), local blocks (never
// leave the site: user factors) and global-average blocks (statistics).
//
// One federated round, as the roles see it:
//   site:        SetGlobalBlocks(broadcast) -> Train(plan) -> Upload()
//   coordinator: sums of the sites' uploads (in the clear or under secure
//                aggregation) -> Apply(sums, strategy, &global)
// Gradient models (MF, BPR) upload their trained global blocks with per-row
// weights and let the strategy average them. Closed-form models (iALS's item
// step, EASE, item-kNN, popularity) upload additive statistics instead (item
// Gram sums, co-occurrence counts) and Apply solves from their sums, which is
// why they are exact when federated: a sum over sites is a sum over users.
//
// Thread-safety: none; one model per thread. Scoring (Score) is const and may
// run concurrently on one model.
#pragma once

#include <cstdint>
#include <functional>
#include <istream>
#include <map>
#include <memory>
#include <ostream>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "algorithms/sgd.h"
#include "algorithms/strategy.h"
#include "base/param_block.h"
#include "base/param_keys.h"
#include "base/status.h"
#include "data/features.h"
#include "data/ratings.h"

namespace fedrec {

// Options every model reads; model-specific ones are in `params`
// ("model.<name>.<key>" in the configuration, stored under "<key>").
struct ModelOptions {
  uint64_t seed = 1;
  uint32_t factors = 32;
  float init_std = 0.05f;
  SgdOptions sgd;  // train.* (biased MF)
  // Interactions with a value >= this are positives for implicit-feedback
  // models (every interaction when the data has no ratings).
  float positive_threshold = 0.0f;
  std::map<std::string, double> params;

  // params[key]. REQUIRES: the key is declared by the model (the registry
  // fills in declared defaults).
  double Param(const std::string& key) const;
};

// One site's (or the centralized run's) data, with users numbered 0..n-1 by
// the holder and items in the federation's shared index space.
struct ModelData {
  uint32_t items = 0;
  std::vector<Rating> train;
  std::vector<uint64_t> user_keys;  // StableIdKey of each user's raw ID (seeds per-user streams)
  uint32_t shard = 0;               // site index: part of every per-site random stream
  // Side features (data/features.h); empty tables when the data has none.
  // Users: one row per local user, private to the holder. Items: one row per
  // item of the federation's index space, public and the same at every site.
  FeatureTable user_features;
  std::shared_ptr<const FeatureTable> item_features;
  // Per local user: 1 = a cold-start user (data.cold_start): a new user with
  // few ratings, whom models that can fold users in train with the global
  // model frozen. Empty: none.
  std::vector<uint8_t> cold_users;
  // True at a site: the coordinator sends the global blocks (SetGlobalBlocks)
  // before they are read, so a model need not draw their initial values, and
  // holds them only from then on.
  bool global_arrives = false;
};

// One objective of a multi-task model, and how evaluation labels a held-out
// interaction for it:
//   kRating: regression on the rating value (RMSE/MAE of the prediction).
//   kLike:   binary, label = rating >= threshold (AUC, log loss).
//   kClick:  binary on implicit data, label 1 for a held-out interaction and
//            0 for sampled items the user never interacted with (AUC, log loss).
enum class TaskKind { kRating, kLike, kClick };
struct TaskSpec {
  std::string name;  // "rating", "like", "click"
  TaskKind kind = TaskKind::kRating;
  float threshold = 4.0f;  // kLike
};

// What one local training call is asked to do.
struct TrainPlan {
  uint32_t round = 0;         // 1-based round (epoch + 1 for centralized training)
  uint64_t epoch_offset = 0;  // global index of the first epoch (schedules, shuffling)
  uint32_t epochs = 1;
  float lr = 0.01f;  // base learning rate sent by the coordinator (gradient models)
  // FedProx: (mu/2)||w - w0||^2 on the global rows, w0 their value when
  // training starts (gradient models; 0 = none).
  float proximal_mu = 0.0f;
  // SCAFFOLD: per global block (matched by name), the correction c - c_i
  // added to the gradient of each row at each visit. Only for models that
  // SupportsControlVariates(); nullptr = none.
  const std::vector<ParamBlock>* drift = nullptr;
};

// Additive training-loss sums: mean loss = sum / count.
struct LossSums {
  double sum = 0.0;
  uint64_t count = 0;
  // Sum of the learning rates of the epochs trained: a row visited v times
  // per epoch took v * lr_sum of step size in all (SCAFFOLD's K * eta).
  double lr_sum = 0.0;
  // The first epoch's learning rate: lr_sum / lr_first is the epochs trained,
  // counted at the rate the call started with (FedNova's local steps).
  double lr_first = 0.0;
  double Mean() const { return count ? sum / static_cast<double>(count) : 0.0; }
};

// User-level differential privacy (dp.unit = user, crypto/dp.h): what one
// TrainClippedPerUser call is asked, and what it reports.
struct PerUserClip {
  double clip = 0.0;           // L2 bound of each user's change of the upload blocks
  double user_fraction = 1.0;  // each user's chance of taking part in the round
  uint64_t seed = 1;           // run seed: user sampling and rating order
};
struct PerUserStats {
  LossSums loss;
  uint32_t users = 0;      // users that took part
  uint32_t unclipped = 0;  // of them, those whose change was within the clip
};

// The range of upload values the fixed-point encoding of encrypted
// aggregation covers (crypto/update_codec.h): values clipped to
// [-clip, clip], frac_bits fractional bits, per-row weights capped.
struct UploadRange {
  float clip = 8.0f;
  uint32_t frac_bits = 8;
  uint64_t max_weight = 2048;
};

class Model {
 public:
  virtual ~Model() = default;
  virtual std::string_view name() const = 0;

  // All blocks, global ones first. The Model owns them.
  virtual std::vector<ParamBlock>& blocks() = 0;
  const std::vector<ParamBlock>& blocks() const { return const_cast<Model*>(this)->blocks(); }
  uint32_t users() const { return users_; }
  uint32_t items() const { return items_; }

  // Copies of the global blocks (what the coordinator holds and broadcasts).
  std::vector<ParamBlock> GlobalBlocks() const;
  // Overwrites the global blocks (matched by name, shapes must agree), then
  // calls OnGlobalModel. False, with nothing changed, on a mismatch.
  bool SetGlobalBlocks(const std::vector<ParamBlock>& global);
  // The same taking the values of `global` (moved out on success).
  bool SetGlobalBlocks(std::vector<ParamBlock>&& global);

  // Frees the values of the global blocks (their names and shapes stay), so
  // a site that is not in a round holds its data and local blocks and nothing
  // model-sized. The next use of the model must be SetGlobalBlocks. Models
  // that keep views of their global values elsewhere override it (and may
  // keep them).
  virtual void ReleaseGlobal();

  // Called once at a site that starts from the initial model (version 0),
  // before its first Train: per-site statistics of the initial model (MF's
  // global mean starts at the site's own mean).
  virtual void OnInitialModel() {}
  // Called after new global blocks were adopted (closed-form models refresh
  // their local blocks: iALS solves its users against the new items).
  virtual void OnGlobalModel() {}
  // Fits the local blocks (the holder's users' rows) to its own training
  // data with the global blocks held fixed, as Federated Reconstruction
  // (Singhal et al., NeurIPS 2021) rebuilds a client's local parameters. A
  // site evaluates so when its local blocks were never trained (one that a
  // sampled federation has not reached yet): their initial values would
  // measure the draw, not the global model. Returns false, changing nothing,
  // when the model has no such fit (its local blocks are used as they are).
  virtual bool ReconstructLocal() { return false; }

  // Trains on the local data for the plan; returns the training-loss sums.
  virtual LossSums Train(const TrainPlan& plan) = 0;
  // True when a global row's upload weight is its visits per epoch and Train
  // reports lr_sum and lr_first: the row took weight * lr_sum / lr_first
  // steps at the starting rate (FedNova normalizes updates by them).
  virtual bool CountsLocalSteps() const { return false; }
  // True when, in addition, Train applies TrainPlan::drift (SCAFFOLD's
  // control variates).
  virtual bool SupportsControlVariates() const { return false; }

  // What a site uploads after Train: shapes (no values) of the upload blocks
  // and the blocks read in place, one view per shape. Default: the global
  // blocks themselves, each row weighted by the site's interactions of it.
  virtual std::vector<ParamBlock> UploadShapes() const;
  virtual std::vector<DenseBlockView> Upload() const = 0;
  // User-level DP: trains each user that takes part (stream (seed, round,
  // user key, kDpUserSample) < user_fraction) on their own ratings alone,
  // starting from the global blocks, clips that user's change of the upload
  // blocks to L2 norm clip.clip and adds it to *sum (shaped as UploadShapes(),
  // zero on entry). The global blocks are left as they were; the users' local
  // blocks keep their training. Default: an error naming the model (it cannot).
  virtual bool TrainsClippedPerUser() const { return false; }
  virtual Result<PerUserStats> TrainClippedPerUser(const TrainPlan& plan, const PerUserClip& clip,
                                                   std::vector<ParamBlock>* sum);

  // True when uploads are additive statistics that Apply solves from, not
  // parameters for the strategy to average. Such models also solve in
  // centralized training (one shard: Apply over its own upload).
  virtual bool SolvesFromSums() const { return false; }
  // The fixed-point format the upload needs under encrypted aggregation,
  // given the configured one (statistics need a wider range than parameters).
  virtual UploadRange AdjustUploadRange(const UploadRange& configured) const { return configured; }
  // Coordinator: the next global blocks from the round's sums of uploads.
  // Default: the strategy's step. Error when the sums do not fit the model.
  virtual Status Apply(const AggregateInput& sums, Strategy* strategy,
                       std::vector<ParamBlock>* global) const;
  // Steps after which more change nothing (closed-form models: 1); 0 = no limit.
  virtual uint32_t StepsToConverge() const { return 0; }

  // Scores of every item for local user `user` (higher = better), written to
  // out[0..items). REQUIRES: user < users(), out.size() == items().
  virtual void Score(uint32_t user, std::span<float> out) const = 0;
  // Explicit-rating models predict ratings (RMSE/MAE are reported for them).
  virtual bool PredictsRatings() const { return false; }
  // REQUIRES: PredictsRatings().
  virtual float Predict(uint32_t user, uint32_t item) const;
  // Multi-task models: their tasks, and each task's prediction for one
  // (user, item): a rating for kRating, a probability in (0, 1) for kLike and
  // kClick. Evaluation reports metrics per task from them. Default: none.
  virtual std::vector<TaskSpec> Tasks() const { return {}; }
  // REQUIRES: out.size() == Tasks().size(), user < users(), item < items().
  virtual void PredictTasks(uint32_t user, uint32_t item, std::span<float> out) const;

  // The local training interactions, in their current order.
  virtual const std::vector<Rating>& train() const = 0;

  // Writes / reads the blocks of the given scopes (global: the coordinator's
  // model file; local: a site's own file). Load checks names and shapes and
  // fails with what was expected and found. Format: a header line naming the
  // model, then each block's name, scope, rows, cols and little-endian floats.
  // The header starts with kBlocksMagic (writers that stream a model's blocks
  // without holding them, apps/ps_job.cc, write the same format).
  static constexpr std::string_view kBlocksMagic = "fedrec-model-blocks v1";
  Status SaveBlocks(std::ostream& out, bool global) const;
  Status LoadBlocks(std::istream& in, bool global, const std::string& where);

  // Checkpoints (checkpoint.every > 0): true when SaveState / LoadState hold
  // everything Train carries from one call to the next besides the global
  // blocks (local blocks, the training order, local optimizer state), so a
  // site resumed from them trains exactly as one that never stopped. Models
  // that keep more than they save say false (the default, for plug-ins) and
  // checkpointing is refused for them.
  virtual bool SupportsCheckpoint() const { return false; }
  // The site's state between rounds. Default: the local blocks
  // (SaveBlocks(out, false)). LoadState checks what it reads and leaves the
  // model unchanged on an error naming `where`.
  virtual Status SaveState(std::ostream& out) const { return SaveBlocks(out, false); }
  virtual Status LoadState(std::istream& in, const std::string& where) {
    return LoadBlocks(in, false, where);
  }

 protected:
  Model(uint32_t users, uint32_t items) : users_(users), items_(items) {}

  // The local blocks' values, in block order, and putting them back: a
  // LoadState that reads more after LoadBlocks restores them on a later
  // error, so a bad file leaves the model unchanged.
  std::vector<std::vector<float>> LocalValues() const;
  void RestoreLocalValues(std::vector<std::vector<float>> values);

  uint32_t users_;
  uint32_t items_;
};

// Adds `model`'s upload to `sums` as plain aggregation at the coordinator
// does: per upload block and row, row_weight += w and weighted_sum += w *
// value, in double. Sizes `sums` from UploadShapes on its first use and counts
// one more site.
void AddUpload(const Model& model, AggregateInput* sums);

// One closed-form step over the model's own upload: what the coordinator does
// with the sites' sums, for one holder of every user (centralized training):
// Apply, then adopt the result. REQUIRES: model->SolvesFromSums().
Status SolveFromOwnSums(Model* model, uint32_t round);

// Per-row weights of a site's interactions, for uploads: weight[i] = number of
// interactions with item i (capped at UINT32_MAX).
std::vector<uint32_t> ItemCounts(std::span<const Rating> train, uint32_t items);

// One model-specific configuration key: model.<model>.<key>.
using ModelKey = ParamKey;

using ModelFactory =
    std::function<Result<std::unique_ptr<Model>>(const ModelOptions& options, ModelData data)>;

struct ModelInfo {
  std::string name;
  std::string doc;  // one line
  std::vector<ModelKey> keys;
  ModelFactory create;
  // The server step of federated rounds when the configuration leaves
  // federation.server_lr at 0 (1 = plain FedAvg).
  double server_lr = 2.0;
  // A site's epochs per round when the configuration leaves
  // federation.local_epochs at 0.
  uint32_t local_epochs = 2;
};

class ModelRegistry {
 public:
  // A registry holding the built-in models: mf, bpr, ials, ease, itemknn, popularity,
  // shared_bottom, mmoe, ple.
  static ModelRegistry WithBuiltins();
  void Register(ModelInfo info);
  // Fills in defaults of the model's keys absent from options.params and
  // creates it. Errors: unknown name (listing the registered ones), a key the
  // model does not declare, or the model's own refusal of the data.
  Result<std::unique_ptr<Model>> Create(const std::string& name, ModelOptions options,
                                        ModelData data) const;
  const ModelInfo* Find(const std::string& name) const;
  std::vector<std::string> Names() const;

 private:
  std::map<std::string, ModelInfo> models_;
};

// Registration of the built-ins, one per model file.
void RegisterBiasedMf(ModelRegistry* registry);
void RegisterBpr(ModelRegistry* registry);
void RegisterIals(ModelRegistry* registry);
void RegisterItemModels(ModelRegistry* registry);  // ease, itemknn, popularity
void RegisterMultiTask(ModelRegistry* registry);   // shared_bottom, mmoe, ple

}  // namespace fedrec
