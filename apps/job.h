// What the `fedrec` command does, as functions over a Config: load data, build
// sites, train centrally or federate, and report. Separate from main() so tests
// and other front ends (the MPI runner) reuse it.
#pragma once

#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "algorithms/metrics.h"
#include "algorithms/mf_trainer.h"
#include "algorithms/model.h"
#include "algorithms/strategy.h"
#include "apps/config.h"
#include "apps/progress.h"
#include "base/status.h"
#include "coordinator/coordinator.h"
#include "crypto/secure_transport.h"
#include "data/ratings.h"
#include "data/side_features.h"
#include "sim/simulation.h"
#include "worker/worker.h"

namespace fedrec {

// A dataset with its sites. For partition = files, each site's data comes from
// its own files; otherwise the partitioner assigns users to sites.
struct FederatedData {
  Dataset dataset;              // all train and test ratings, global indices
  std::vector<SiteData> sites;  // empty until partitioned
  std::vector<std::vector<std::string>> site_user_ids;  // raw user IDs of each site's users
  // The item side features by the dataset's item indices, one copy shared
  // by every site (WorkerOptions::item_features); null: none.
  std::shared_ptr<const FeatureTable> item_features;
};

// The configured side-feature files keyed by raw ID: data.user_features (or,
// with `site` and partition = files, data.site_user_features of that site)
// and data.item_features, or the synthetic data's side features
// (data.synthetic.side_features). Null: none. Errors name the config key.
struct SideFeatureFiles {
  std::shared_ptr<const FeatureFile> users;
  std::shared_ptr<const FeatureFile> items;
};
Result<SideFeatureFiles> LoadSideFeatureFiles(const Config& config,
                                              std::optional<uint32_t> site = std::nullopt);

// Loads the configured data: rating files (+ split) or synthetic data.
// Checks made on the rating files (errors name path:line):
// - data.duplicates: a (user, item) pair repeated in the training data, or
//   in the test data, is refused ("error") or merged ("last", "mean"); over
//   the whole file before any split, so a split never puts copies of one pair
//   on both sides;
// - with data.test: the same file as data.train is refused, and so is a pair
//   in both files unless data.allow_overlap.
// Logs the data summary (DatasetStatsLine) at info level.
Result<Dataset> LoadDataset(const Config& config);
// Loads data and splits it into sites as configured. partition = files:
// each site's own files, checked site by site as above (the same raw user ID
// at two sites is two people, so a pair at two sites is neither a duplicate
// nor an overlap). Logs the data summary with the ratings per site.
Result<FederatedData> LoadFederatedData(const Config& config);

// What was loaded, for the log and summary.json ("data").
struct DatasetStats {
  uint64_t users = 0;  // IDs in the dataset's user and item maps (items: with
  uint64_t items = 0;  // data.item_universe, the whole universe)
  uint64_t train = 0;  // ratings, after the split, duplicates and cold start
  uint64_t test = 0;
  double density = 0.0;  // (train + test) / (users * items); 0 when either is 0
  // Federated runs: the number of sites and their ratings (train + test)
  // per site; sites == 0: not split into sites.
  uint64_t sites = 0;
  uint64_t site_ratings_min = 0;
  double site_ratings_median = 0.0;  // the mean of the middle two for an even count
  uint64_t site_ratings_max = 0;
};
// The stats of `dataset`, with the per-site figures of `sites` when given
// (LoadFederatedData's FederatedData::sites).
DatasetStats ComputeDatasetStats(const Dataset& dataset, std::span<const SiteData> sites = {});
// (train + test) / (users * items) of `stats`, 0 when the matrix is empty.
double Density(const DatasetStats& stats);
// The one-line summary LoadDataset/LoadFederatedData log: "data: 943 users,
// 1682 items, 80000 train and 20000 test ratings, density 0.06305[; 10 sites,
// ratings per site min .. median .. max ..]".
std::string DatasetStatsLine(const DatasetStats& stats);
// How many users each site holds, for the partition's log line: every site's
// count ("3, 4, 3") up to 20 sites, above that "min 1 median 1 max 1 over
// 100000 sites" so a large federation does not print one number per site.
std::string UsersPerSiteLine(const std::vector<std::vector<uint32_t>>& users);
// {"users":..,"items":..,"train":..,"test":..,"density":..} plus, with sites,
// "sites":.. and "site_ratings":{"min":..,"median":..,"max":..}: the
// "data" object of summary.json.
nlohmann::json DatasetStatsJson(const DatasetStats& stats);

// One site's data as a separate process loads it (`fedrec run`): its own files
// (partition = files) or its part of the partitioned dataset, with the raw IDs
// of its item indices, to be mapped onto the coordinator's item catalogue.
struct LocalSite {
  SiteData data;
  std::vector<std::string> item_ids;  // raw ID of each item index in `data`
  std::vector<std::string> user_ids;  // raw ID of each of the site's users
  // True when the items are numbered by data.item_universe (item_ids is the
  // universe): the site reports only its size, never its own items.
  bool in_universe = false;
  // The item side features by the indices of `item_ids` (after
  // AdoptItemCatalogue: by the catalogue's), the same at every site since
  // every site lays the same public rows out by the same item order; null:
  // none. `item_feature_rows` holds the rows by raw ID, for that re-layout.
  std::shared_ptr<const FeatureTable> item_features;
  std::shared_ptr<const FeatureFile> item_feature_rows;
};
Result<LocalSite> LoadLocalSite(const Config& config, uint32_t site);
// Renumbers the site's items to their index in `catalogue` (the federation's
// item order), and lays its item features out in that order. Error naming
// the item when the catalogue lacks one.
Status AdoptItemCatalogue(const std::vector<std::string>& catalogue, LocalSite* site);

// The published item universe (data.item_universe): one item ID per line, in
// order; blank lines are skipped. Errors name the file (and path:line for an
// ID listed twice); an empty universe is an error.
Result<std::vector<std::string>> ReadItemUniverse(const std::string& path);

// The job identifier: SHA-256(the resolved config as ConfigToToml writes it ||
// the coordinator's identity public key || nonce). The coordinator draws a
// fresh 32-byte nonce per job (NewJobId); sites learn the result from the
// coordinator over the authenticated channel, never from their config.
crypto::Key32 JobId(const Config& config, const crypto::Key32& coordinator_key,
                    const crypto::Key32& nonce);
Result<crypto::Key32> NewJobId(const Config& config, const crypto::Key32& coordinator_key);
// The job of the popularity baseline that `fedrec run` trains before the
// model over the same channels (its rounds must not be confused with the
// model's rounds of the same number): SHA-256("fedrec popularity baseline" ||
// job).
crypto::Key32 PopularityJobId(const crypto::Key32& job);

// Checks of `fedrec run` that depend on the job's shape, made on every rank
// before any data is read. `hosts` is each rank's MPI_Get_processor_name.
// - On more than one host, the channels must be authenticated (channels on
//   and the four identity/public-key settings) unless
//   security.allow_unauthenticated = true.
// - Per-site files with encrypted aggregation need data.item_universe: else
//   every site's item IDs would reach the coordinator.
// InvalidArgument saying what is expected.
Status CheckRunConfig(const Config& config, const std::vector<std::string>& hosts);

MfTrainerOptions TrainerOptions(const Config& config);
// The options of the configured model (model.*, train.*, data.positive_threshold).
ModelOptions MakeModelOptions(const Config& config);
// The configured model (model.name) built from `data`, from `registry` (the
// built-ins when null). Errors name the config key.
Result<std::unique_ptr<Model>> MakeModel(const Config& config, ModelData data,
                                         const ModelRegistry* registry = nullptr);
// The model's part at the coordinator: built from no data (its global blocks
// are the initial model every site also draws).
Result<std::unique_ptr<Model>> MakeServerModel(const Config& config, uint32_t items,
                                               const ModelRegistry* registry = nullptr);
// Checks the federation settings against what the model needs: a model that
// solves from the sums of every site's statistics (Model::SolvesFromSums) is
// exact only when every site takes part in every round (federation.fraction = 1).
Status CheckFederatedModel(const Config& config, const Model& model, const Strategy& strategy);
// Rounds (fedrec sim/run) and epochs (fedrec train) after capping them at the
// model's steps to converge (closed-form models need one).
int64_t EffectiveRounds(const Config& config, const ModelRegistry* registry = nullptr);
int64_t EffectiveEpochs(const Config& config, const ModelRegistry* registry = nullptr);
// Worker options with make_model building the configured model (from
// `registry`, which must then outlive the workers; the built-ins when null).
WorkerOptions MakeWorkerOptions(const Config& config, const ModelRegistry* registry = nullptr);
// security.aggregation as the wire enum (secagg and secagg+ are both kSecAgg).
Aggregation AggregationOf(const Config& config);
CoordinatorOptions MakeCoordinatorOptions(const Config& config);
// The secure-aggregation policy (security.*) coordinator and sites share.
secagg::Policy SecAggPolicy(const Config& config);
StrategyOptions MakeStrategyOptions(const Config& config);
// The simulator's virtual time, availability and Byzantine sites from sim.* (profiles drawn
// from the seed, the trace file read): errors name the key or file:line.
Status SetSimulationProfiles(const Config& config, uint32_t sites, SimulationOptions* options);

// The channel set-up of one rank of a job (coordinator: site == nullopt):
// its identity (security.*_identity key files, else an ephemeral key made
// now) and the peer keys it enforces (security.site_public_keys at the
// coordinator, security.coordinator_public_key at a site; none = any identity
// is accepted). `site_ranks[s]` is the rank of site s; the coordinator is rank 0.
// `peer_name`: RankNames(site_ranks) made once by a caller that sets up many
// ranks (made here when null).
Result<SecureTransportOptions> ChannelOptions(
    const Config& config, std::optional<uint32_t> site, const std::vector<int>& site_ranks,
    const std::vector<int>& shard_ranks = {},
    std::function<std::string(int rank)> peer_name = nullptr);
// Names ranks in channel messages: "coordinator (rank 0)", "site 3 (rank 4)",
// "shard server (rank 1)". O(sites) to make, O(1) per name when the site
// ranks are contiguous (every launch mode).
std::function<std::string(int rank)> RankNames(const std::vector<int>& site_ranks);
// A shard server's channel options (cluster.shard_servers > 0 in federated
// rounds): shard servers are the coordinator's own processes and present its
// identity (security.coordinator_identity; `coordinator_identity` when one
// was made for this run, as in the simulator); they admit the sites the
// coordinator admits, and learn the job like a site.
Result<SecureTransportOptions> ShardChannelOptions(
    const Config& config, const std::vector<int>& site_ranks, const std::vector<int>& shard_ranks,
    const std::optional<crypto::SigningKey>& coordinator_identity = std::nullopt);
// Every site's identity key from security.site_public_keys (sites 0..sites-1;
// empty when the key is not set): what the coordinator admits on its
// channels and what each site checks its secure-aggregation neighbours
// against.
Result<std::map<uint32_t, crypto::Key32>> SiteRoster(const Config& config, uint32_t sites);
// Logs once, at the coordinator, what the channels authenticate.
void LogChannelSecurity(const Config& config);

struct EvalResult {
  ErrorSums errors;
  RankingSums ranking;
  std::vector<TaskSums> tasks;  // per task of a multi-task model (Model::Tasks())
  bool warm_cold = false;       // eval.warm_cold: warm and cold users apart
  GroupSums warm, cold;
};

// One evaluation point of a run (epoch of `fedrec train`, round of `fedrec sim`).
struct ProgressPoint {
  uint32_t step = 0, steps = 0;
  double train_mse = 0.0;
  bool evaluated = false;
  EvalResult eval;
};

struct CentralizedResult {
  std::vector<ParamBlock> global;
  EvalResult eval;
  double seconds = 0.0;          // training and evaluation, data loading excluded
  std::unique_ptr<Model> model;  // the trained model, with every user
};

// Evaluates `model` on `test` (RMSE/MAE when it predicts ratings, top-N
// metrics when eval.ranking is on, per-task metrics of multi-task models;
// warm and cold users apart with eval.warm_cold, by `cold_users`).
// `user_keys`: each user's stable key (click tasks' negatives).
EvalResult Evaluate(const Config& config, const Model& model, std::span<const Rating> test,
                    std::span<const uint64_t> user_keys = {},
                    std::span<const uint8_t> cold_users = {});
// Whether evaluation reports warm and cold-start users apart: the same at
// the coordinator and every site, from the configuration alone.
bool EvalWarmCold(const Config& config);
// The evaluation options of the configuration (eval.*).
EvalOptions MakeEvalOptions(const Config& config);

// Centralized training: the configured model over all training interactions,
// EffectiveEpochs(config) epochs (closed-form models solve from their own
// sums each epoch, as the coordinator does from the sites').
Result<CentralizedResult> TrainCentralized(
    const Config& config, const Dataset& dataset,
    const std::function<void(const ProgressPoint&)>& on_epoch,
    const ModelRegistry* registry = nullptr);

// The popularity baseline on the same data and protocol (model popularity,
// trained centrally: its federated form sums to the same integer counts).
Result<EvalResult> PopularityBaseline(const Config& config, const Dataset& dataset);

// Writes the global model as text: one "<block>\t<values>" line per global
// block that is not per item (MF: global_mean), then one line per item
// "<raw item id>\t<values of the item's row in every per-item block>", so
// results name the dataset's own IDs.
Status SaveGlobalModel(const std::string& path, const std::vector<ParamBlock>& global,
                       const IdMap& items);
// The two header lines model.tsv starts with: "# fedrec-model-tsv v1 ..."
// (the format and its version), then "#columns\titem\t<block>[<cols>]..." naming
// the per-item blocks whose rows follow each item ID, in order.
std::string ModelTsvHeader(const std::vector<std::pair<std::string, uint32_t>>& item_blocks);

// Writes the run directory: resolved config, metrics.jsonl, summary.json; and
// shows progress on stderr (apps/progress.h).
class RunOutput {
 public:
  // Creates the directory: config.output.dir, or runs/<command>-<UTC time>
  // with a suffix (-2, -3...) when a run of the same second has it. An
  // explicit output.dir that is not empty is refused unless output.force
  // (`--force`: the files an earlier run wrote there are removed first) or
  // checkpoint.resume (the run resumed writes where it left off).
  static Result<RunOutput> Create(const Config& config, const std::string& command);

  const std::string& dir() const { return dir_; }
  // Appends one JSON object as a line of metrics.jsonl.
  void WriteMetrics(const std::string& json_line);
  // Progress: the run has `steps` of `unit` (done_before of them by the run
  // it resumes); step `step` ended with `metrics`; inside the next step,
  // `done` of `total` sites answered `what`.
  void PlanSteps(std::string_view unit, uint64_t steps, uint64_t done_before = 0);
  void Step(std::string_view unit, uint64_t step, uint64_t steps, std::string_view metrics);
  void Within(std::string_view what, uint64_t done, uint64_t total);
  void EndProgress();
  // Writes summary.json.
  Status WriteSummary(const std::string& json);

 private:
  std::string dir_;
  std::shared_ptr<std::ofstream> metrics_;
  std::shared_ptr<ProgressReporter> progress_;
};

}  // namespace fedrec
