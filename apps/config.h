// The configuration of a fedrec job: TOML file + `--set section.key=value`
// overrides over documented defaults. The defaults are the embedded demo
// (synthetic ML-100K-shaped data, 10 sites, 20 rounds) with hyperparameters
// tuned on MovieLens 100K, so real data gets good accuracy without tuning.
//
// Every key is declared once in the schema (config.cc) with its type, default
// and one-line documentation; `fedrec config` prints them all.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "base/status.h"
#include "crypto/dp.h"

namespace fedrec {

class ModelRegistry;

struct Config {
  uint64_t seed = 42;
  // Plug-in libraries (apps/plugin.h) loaded before any strategy or model is
  // created. A relative path in a config file is relative to that file's
  // directory (LoadConfigFile makes it absolute); one from --set, to the
  // working directory.
  std::vector<std::string> plugins;

  struct Data {
    std::string format = "auto";   // auto | ml100k | ml1m | mlcsv | csv
    std::string train;             // rating file; empty = synthetic data
    std::string test;              // held-out file; empty = split `train`
    std::string split = "random";  // random | holdout_last | holdout_random
    double test_fraction = 0.2;
    int64_t holdout_k = 1;
    double rating_min = 1.0;
    double rating_max = 5.0;
    // Implicit-feedback models learn from interactions with a value >= this
    // (every interaction of files without ratings).
    double positive_threshold = 0.0;
    // Repeated (user, item) rows within the training data, and within the
    // test data (each over all its files): error | last | mean
    // (data/rating_checks.h, DuplicatePolicy).
    std::string duplicates = "error";
    // A (user, item) pair in both data.test (data.site_test) and the training
    // files is refused unless this is set.
    bool allow_overlap = false;
    std::string site_train;  // per-site files, "{site}"/"{rank}" (partition = "files")
    std::string site_test;
    // The public item universe of partition = "files": one item ID per line,
    // numbered in file order; sites map their items onto it and report only
    // their count. Empty = the union of the sites' items (needs every site's
    // IDs: fedrec sim, or fedrec run with security.aggregation = "none").
    std::string item_universe;
    // Side features (data/side_features.h): files of user and item features,
    // empty = none; their format (auto | ml100k | ml1m | csv) and the csv
    // columns (ParseFeatureSchema). partition = files: each site's user
    // features from site_user_features ({site}, {rank}), else the shared
    // user_features file, of which a site keeps its own users' rows.
    std::string user_features;
    std::string item_features;
    std::string features_format = "auto";
    std::string user_schema;
    std::string item_schema;
    std::string site_user_features;
    // Cold-start split (data/split.h, ColdStartSplit): a `share` of the users
    // with test ratings and more than `ratings` training ratings keep only
    // `ratings` of them.
    struct ColdStart {
      double share = 0.0;
      int64_t ratings = 3;
    } cold_start;
    struct Synthetic {
      int64_t users = 943;
      int64_t items = 1682;
      int64_t ratings = 100000;
      int64_t rank = 8;
      double noise_std = 0.75;
      double user_skew = 0.9;
      double item_skew = 1.0;
      bool side_features = false;  // MakeSyntheticSideFeatures
    } synthetic;
  } data;

  struct Model {
    std::string name = "mf";  // registered model (algorithms/model.h)
    int64_t factors = 32;
    double init_std = 0.05;
    // model.<name>.<key> values, keyed "<name>.<key>"; defaults come from the
    // model's registration.
    std::map<std::string, double> params;
  } model;

  struct Train {
    int64_t epochs = 60;
    double lr = 0.02;
    double lr_decay = 0.97;
    double reg = 0.09;
    double bias_reg = 0.01;
    // Local SGD on several threads (algorithms/parallel_sgd.h): at most
    // `threads` (0 = every core; fedrec sim: the cores left per site thread).
    int64_t threads = 0;
    std::string schedule = "grid";  // grid | free | sequential
    int64_t blocks = 16;            // grid side
  } train;

  struct Federation {
    int64_t sites = 10;
    std::string partition = "user";  // user | dirichlet | genre | age_group | files
    double dirichlet_alpha = 0.5;
    int64_t item_groups = 10;
    int64_t rounds = 20;
    int64_t local_epochs = 0;      // 0: the model's (ModelInfo::local_epochs)
    int64_t local_epochs_max = 0;  // > local_epochs: each site's epochs drawn per round
    // Per local epoch (global epoch index) at the sites: slower than
    // train.lr_decay, since item rows move by the sites' average step.
    double lr_decay = 0.995;
    double fraction = 1.0;
    int64_t min_sites = 1;
    int64_t min_available = 1;
    bool accept_failures = true;
    // The share of the rounds run that must train (not abort) for the run to
    // succeed: fewer, and fedrec exits 3 after writing everything.
    double min_round_success = 0.5;
    std::string strategy = "fedavg";
    // "strategy.<name>.<key>" settings, stored under "<name>.<key>".
    std::map<std::string, double> strategy_params;
    double server_lr = 0.0;        // 0: the model's (ModelInfo::server_lr)
    double round_timeout = 600.0;  // seconds
    // federated (rounds of local training, combined by the coordinator) | ps
    // (parameter-server training: `sites` workers, cluster.shard_servers
    // shard servers; see Ps below).
    std::string mode = "federated";
  } federation;

  // Parameter-server mode (federation.mode = "ps"): workers pull and push
  // item rows at shard servers (coordinator/shard_server.h).
  struct Ps {
    std::string consistency = "bsp";  // bsp | ssp | async
    int64_t staleness = 2;            // ssp's bound s, in clocks (minibatches)
    std::string optimizer = "sgd";    // sgd | adagrad: applied by the shard servers
    int64_t batch_size = 1000;        // ratings per step, summed over the workers
    double lr = 0.0;                  // shard servers' learning rate of epoch 0; 0 = train.lr
    double adagrad_initial = 0.1;     // Adagrad's initial accumulator
  } ps;

  struct Eval {
    int64_t every = 1;
    double fraction = 1.0;        // share of the available sites asked to evaluate
    bool with_next_round = true;  // secagg: evaluation rides on the next round's sum
    bool follow_on = true;        // secagg: a round evaluated on its own uses its sum's secrets
    bool reconstruct = true;      // a site with never-trained local blocks fits them first
    bool ranking = true;
    int64_t top_k = 10;
    double relevant_threshold = 4.0;
    // Multi-task models (Model::Tasks): sampled negatives per held-out
    // interaction of a click task, and bins of the binary tasks' AUC histograms.
    int64_t click_negatives = 4;
    int64_t auc_bins = 1024;
    // Report warm and cold-start users apart (the cold flags of the data).
    bool warm_cold = false;
    // Each site's own metrics in metrics.jsonl (security.aggregation = none only).
    bool per_site = false;
  } eval;

  struct Security {
    std::string aggregation = "secagg";  // secagg | secagg+ | paillier | none
    double threshold = 0.6;              // secagg: share of a round's sites that must remain
    // secagg's neighbour graph: auto (SecAgg+ when it at least halves the
    // per-site cost) | complete | sparse. secagg+ forces sparse.
    std::string graph = "auto";
    // The colluders and dropouts secure aggregation is sized against (secagg+
    // derives its neighbour graph and threshold from them).
    double adversarial_rate = 0.05;
    double dropout_rate = 0.05;
    double clip = 8.0;
    int64_t quantization_bits = 8;
    int64_t max_weight = 2048;
    int64_t paillier_bits = 2048;
    bool channels = true;                // authenticated, encrypted coordinator-site channels
    std::string coordinator_identity;    // coordinator's private key file (fedrec keygen)
    std::string coordinator_public_key;  // its public key (file or hex), checked by the sites
    std::string site_identity;           // sites' private key files, with {site} or {rank}
    std::string site_public_keys;        // sites' public key files, with {site} or {rank}
    // fedrec run across hosts refuses to start without the four keys above
    // (authenticated channels) unless this is set.
    bool allow_unauthenticated = false;
  } security;

  // Differential privacy (crypto/dp.h): clipping and Gaussian noise of each
  // round's update, and the RDP accountant's budget.
  struct Dp {
    std::string mode = "none";  // none | central | distributed
    std::string unit = "site";  // site | user
    double clip = 0.1;
    double target_quantile = 0.0;
    double clip_lr = 0.2;
    double count_stddev = 0.0;
    double noise_multiplier = 1.0;
    double delta = 1e-5;
    double target_epsilon = 0.0;
    double user_fraction = 1.0;
    double expected_units = 0.0;
  } dp;

  struct Cluster {
    int64_t shard_servers = 0;
    // Two tiers (apps/site_group.h): each site of federated rounds is a group
    // of 1 + site_shard_servers + site_workers ranks that trains in
    // parameter-server mode inside itself (ps.*); 0 workers = one rank a site.
    int64_t site_workers = 0;
    int64_t site_shard_servers = 1;
    double startup_timeout = 120.0;  // seconds for every site to load its data and report
    // Per-process memory cap of federation.mode = "ps" ("512MiB", "2GiB",
    // bytes; empty = none): each shard server and worker refuses a model slice
    // (rows, buffers) that would not fit (base/memory.h ParseByteSize).
    std::string memory_limit;
  } cluster;

  struct Sim {
    int64_t threads = 0;
    bool compare_centralized = true;
    bool share_agreements = true;
    bool share_openings = true;
    // Virtual time (sim/profiles.h): site speed and links, drawn per site.
    double compute_speed = 1e6;  // rating-epochs per simulated second (median)
    double speed_spread = 0.0;   // lognormal sigma of the speed
    double latency_ms = 0.0;
    double bandwidth_mbps = 0.0;  // 0 = unlimited
    double link_spread = 0.0;     // lognormal sigma of latency and bandwidth
    double stragglers = 0.0;      // share of sites
    double straggler_slowdown = 10.0;
    // Availability: always | bernoulli | trace.
    std::string availability = "always";
    double availability_p = 1.0;
    std::string availability_trace;  // "site start end" lines, seconds
    // Byzantine sites (worker/byzantine.h): share of sites, seeded.
    double byzantine_fraction = 0.0;
    std::string byzantine_attack = "sign_flip";  // scale | sign_flip | random
    double byzantine_scale = 10.0;
    // Injected faults (sim/faults.h), seeded.
    struct Faults {
      double dropout = 0.0;                    // chance a site drops out in a round
      std::vector<std::string> dropout_steps;  // empty = every step of the round
      int64_t crash_site = -1;                 // -1 = none
      int64_t crash_round = 0;
      std::string crash_step = "plan";
      int64_t coordinator_crash_round = 0;  // 0 = never
      std::string coordinator_crash_step = "plan";
      double delay_ms = 0.0;
      double frame_loss = 0.0;
      double duplicate = 0.0;
      double corrupt = 0.0;
    } faults;
  } sim;

  // Checkpoint and resume (coordinator/checkpoint.h, worker/site_state.h).
  struct Checkpoint {
    int64_t every = 0;  // a checkpoint after every n-th round and at the end; 0 = none
    std::string dir;    // empty = <run directory>/checkpoint
    std::string
        site_dir;  // fedrec run: a site's own state folder ({site}); empty = <dir>/site-{site}
    std::string resume;  // resume from this checkpoint folder (--resume)
  } checkpoint;

  struct Output {
    std::string dir;     // empty = runs/<command>-<UTC time>
    bool force = false;  // replace the run in a non-empty output.dir (--force)
    bool progress = true;
    // Each site that built its model writes site<s>/ (its users' model, for
    // fedrec recommend); false: only the run's own files.
    bool site_files = true;
  } output;
};

// Reads `path` over the defaults. Unknown keys, wrong types and out-of-range
// values are errors naming path:line and the key.
Result<Config> LoadConfigFile(const std::string& path, Config base = Config());

// Applies one "section.key=value" override.
Status ApplyOverride(Config* config, const std::string& assignment);

// Checks cross-key constraints (ranges, enumerations).
Status ValidateConfig(const Config& config);
// A site's epochs per round: federation.local_epochs, or at 0 the model's
// own (ModelInfo::local_epochs of `registry`, else of the built-ins).
uint32_t LocalEpochs(const Config& config, const ModelRegistry* registry = nullptr);
// The dp.* keys as the coordinator's and sites' options (crypto/dp.h).
DpOptions DpOptionsOf(const Config& config);
// What a run across processes (fedrec run) needs beyond ValidateConfig: sites
// with a roster of identity keys for Paillier (fedrec sim makes its own).
Status ValidateDistributedConfig(const Config& config);

// The resolved configuration as TOML (with each key's documentation as a
// comment when `with_docs`).
std::string ConfigToToml(const Config& config, bool with_docs = false);

// One line per key: "section.key  type  default  documentation".
std::vector<std::string> ConfigKeyDocs();

}  // namespace fedrec
