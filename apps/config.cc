#include "apps/config.h"

#include <fmt/format.h>
#include <toml++/toml.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <variant>

#include "algorithms/model.h"
#include "base/memory.h"
#include "crypto/paillier.h"
#include "crypto/paillier_round.h"
#include "data/side_features.h"
#include "protocol/frame.h"

namespace fedrec {

namespace {

using Target =
    std::variant<int64_t*, uint64_t*, double*, bool*, std::string*, std::vector<std::string>*>;

struct Key {
  const char* path;
  const char* doc;
  std::function<Target(Config&)> bind;
};

#define FEDREC_KEY(path, member, doc)                        \
  Key {                                                      \
    path, doc, [](Config& c) -> Target { return &c.member; } \
  }

const std::vector<Key>& Schema() {
  static const std::vector<Key> keys = {
      FEDREC_KEY("seed", seed, "seed of every random stream (data, init, shuffling, sampling)"),
      FEDREC_KEY("plugins", plugins,
                 "plug-in libraries to load, registering strategies and models (docs/plugins.md); "
                 "relative paths are relative to the config file's directory (--set: to the "
                 "working directory); --set plugins=a.so,b.so"),
      FEDREC_KEY("data.format", data.format,
                 "rating file format: auto | ml100k | ml1m | mlcsv | csv | implicit "
                 "(user,item[,timestamp])"),
      FEDREC_KEY("data.train", data.train,
                 "training (or whole) rating file; empty = synthetic data"),
      FEDREC_KEY("data.test", data.test, "held-out rating file; empty = split data.train"),
      FEDREC_KEY("data.split", data.split,
                 "split when data.test is empty: random | holdout_last | holdout_random"),
      FEDREC_KEY("data.test_fraction", data.test_fraction, "test share for split = random"),
      FEDREC_KEY("data.holdout_k", data.holdout_k, "ratings per user held out (holdout_*)"),
      FEDREC_KEY("data.rating_min", data.rating_min, "lowest valid rating"),
      FEDREC_KEY("data.rating_max", data.rating_max, "highest valid rating"),
      FEDREC_KEY("data.duplicates", data.duplicates,
                 "a (user, item) pair rated more than once in the training data, or in the test "
                 "data (partition = files: of one site): error (refuse, naming both "
                 "file:line) | last (keep the row read last) | mean (average the values, keep "
                 "the latest timestamp). Default error: MovieLens files never repeat a pair, so "
                 "a repeat means concatenated files or a bad export, and keeping both rows would "
                 "weigh the pair twice and could put one copy in train and one in test"),
      FEDREC_KEY("data.allow_overlap", data.allow_overlap,
                 "accept (user, item) pairs present in both the training and the test files "
                 "(data.test, data.site_test): test ratings the model trained on, so metrics "
                 "are too good; false refuses them, naming a pair and the count"),
      FEDREC_KEY(
          "data.site_train", data.site_train,
          "per-site training files, {site} = site index, {rank} = MPI rank (partition = files)"),
      FEDREC_KEY("data.site_test", data.site_test,
                 "per-site test files ({site}, {rank}); empty = split each site's file"),
      FEDREC_KEY("data.item_universe", data.item_universe,
                 "partition = files: the public item list (one ID per line) every site maps its "
                 "items onto, so no site's own item IDs leave it; empty = the union of the sites' "
                 "items (fedrec sim; fedrec run only with security.aggregation = none)"),
      FEDREC_KEY("data.user_features", data.user_features,
                 "user side-feature file (ml100k u.user, ml1m users.dat, or csv with "
                 "data.user_schema); empty = none"),
      FEDREC_KEY("data.item_features", data.item_features,
                 "item side-feature file (ml100k u.item, ml1m movies.dat, or csv with "
                 "data.item_schema); empty = none"),
      FEDREC_KEY("data.features_format", data.features_format,
                 "side-feature file format: auto | ml100k | ml1m | csv (auto: csv when a schema "
                 "is set, else detected from the first line)"),
      FEDREC_KEY("data.user_schema", data.user_schema,
                 "csv user features: columns, e.g. \"id,age:numeric:0:100,occupation:hash:64\" "
                 "(README, side features)"),
      FEDREC_KEY("data.item_schema", data.item_schema,
                 "csv item features: columns, e.g. \"id,title:skip,genres:multi:;:hash:32\""),
      FEDREC_KEY("data.site_user_features", data.site_user_features,
                 "partition = files: per-site user feature files ({site}, {rank}); empty = "
                 "data.user_features, each site keeping its users' rows"),
      FEDREC_KEY("data.positive_threshold", data.positive_threshold,
                 "implicit-feedback models learn from interactions with a value >= this"),
      FEDREC_KEY("data.cold_start.share", data.cold_start.share,
                 "share of the users with test ratings made cold-start users (0 = off)"),
      FEDREC_KEY("data.cold_start.ratings", data.cold_start.ratings,
                 "training ratings a cold-start user keeps"),
      FEDREC_KEY("data.synthetic.users", data.synthetic.users, "synthetic data: users"),
      FEDREC_KEY("data.synthetic.items", data.synthetic.items, "synthetic data: items"),
      FEDREC_KEY("data.synthetic.ratings", data.synthetic.ratings, "synthetic data: ratings"),
      FEDREC_KEY("data.synthetic.rank", data.synthetic.rank, "synthetic data: rank of the truth"),
      FEDREC_KEY("data.synthetic.noise_std", data.synthetic.noise_std,
                 "synthetic data: rating noise (std)"),
      FEDREC_KEY("data.synthetic.user_skew", data.synthetic.user_skew,
                 "synthetic data: Zipf exponent of user activity"),
      FEDREC_KEY("data.synthetic.item_skew", data.synthetic.item_skew,
                 "synthetic data: Zipf exponent of item popularity"),
      FEDREC_KEY("data.synthetic.side_features", data.synthetic.side_features,
                 "synthetic data: user and item side features derived from the true factors"),
      FEDREC_KEY("model.name", model.name,
                 "the model: mf | bpr | ials | ease | itemknn | popularity (or a plug-in's name)"),
      FEDREC_KEY("model.factors", model.factors, "latent factors k"),
      FEDREC_KEY("model.init_std", model.init_std, "std of the initial factors"),
      FEDREC_KEY("train.epochs", train.epochs,
                 "epochs of centralized training (fedrec train) and of federation.mode = ps"),
      FEDREC_KEY("train.lr", train.lr, "SGD learning rate of epoch 0"),
      FEDREC_KEY("train.lr_decay", train.lr_decay, "learning rate of epoch e = lr * lr_decay^e"),
      FEDREC_KEY("train.reg", train.reg, "L2 regularization of factors"),
      FEDREC_KEY("train.bias_reg", train.bias_reg, "L2 regularization of biases"),
      FEDREC_KEY("train.threads", train.threads,
                 "most threads of local SGD (fedrec train, a site's epochs) and of a ps "
                 "worker (two or more: one makes its minibatches); 0 = every core (fedrec sim: "
                 "the cores per site thread), and for a ps worker one, or two in fedrec sim when "
                 "every worker has two cores; a shard uses one per 20,000 ratings"),
      FEDREC_KEY("train.schedule", train.schedule,
                 "order of SGD updates: grid (blocks on all threads; the same model for any "
                 "thread count) | free (FPSGD's free blocks: never waits for a given block, not "
                 "reproducible) | sequential (one thread over the whole shuffled shard)"),
      FEDREC_KEY("train.blocks", train.blocks,
                 "grid and free: ratings split into blocks x blocks user-item blocks (a shard "
                 "with fewer than 256 ratings per block uses fewer); at most `blocks` threads "
                 "train at once"),
      FEDREC_KEY("federation.sites", federation.sites,
                 "number of sites (federation.mode = ps: workers)"),
      FEDREC_KEY(
          "federation.partition", federation.partition,
          "how data is split into sites: user | dirichlet | genre | age_group | files (README)"),
      FEDREC_KEY("federation.dirichlet_alpha", federation.dirichlet_alpha,
                 "Dirichlet concentration (smaller = more non-IID)"),
      FEDREC_KEY("federation.item_groups", federation.item_groups,
                 "item groups for the Dirichlet partition"),
      FEDREC_KEY("federation.rounds", federation.rounds, "federated rounds"),
      FEDREC_KEY("federation.local_epochs", federation.local_epochs,
                 "local epochs per round at each selected site (0 = the model's own: 3 for "
                 "shared_bottom, mmoe and ple, else 2)"),
      FEDREC_KEY("federation.local_epochs_max", federation.local_epochs_max,
                 "0, or at least federation.local_epochs: each selected site's epochs of a round "
                 "drawn uniformly from [local_epochs, local_epochs_max] (heterogeneous local "
                 "work, as FedNova addresses)"),
      FEDREC_KEY("federation.lr_decay", federation.lr_decay,
                 "sites' learning rate of global epoch e = train.lr * lr_decay^e (federated runs "
                 "take more epochs than centralized ones, so their rate decays more slowly than "
                 "train.lr_decay)"),
      FEDREC_KEY("federation.fraction", federation.fraction, "share of sites selected per round"),
      FEDREC_KEY("federation.min_sites", federation.min_sites,
                 "fewest updates for a round to count (else the model is unchanged)"),
      FEDREC_KEY("federation.min_available", federation.min_available,
                 "fewest available sites a round starts with (else it is skipped)"),
      FEDREC_KEY("federation.accept_failures", federation.accept_failures,
                 "a round whose selected sites failed still updates the model (false: keeps it)"),
      FEDREC_KEY("federation.min_round_success", federation.min_round_success,
                 "share of the rounds run that must train (not abort) for the run to succeed; "
                 "fewer, and fedrec exits 3 after writing the summary and the model (0: only a "
                 "run in which no round trained fails)"),
      FEDREC_KEY("federation.strategy", federation.strategy,
                 "aggregation strategy (registered name; its own keys are strategy.<name>.<key>)"),
      FEDREC_KEY("federation.server_lr", federation.server_lr,
                 "server step toward the sites' average (1 = FedAvg); 0 = the model's own: 2 "
                 "for mf, bpr, ials and the closed-form models, 1 for the multi-task models"),
      FEDREC_KEY("federation.round_timeout", federation.round_timeout,
                 "seconds to wait for the sites of each step of a round (fedrec sim: simulated "
                 "seconds)"),
      FEDREC_KEY("federation.mode", federation.mode,
                 "federated (rounds of local training combined by the coordinator) | ps "
                 "(parameter-server training of mf: federation.sites workers pull and push item "
                 "rows at cluster.shard_servers shard servers for train.epochs epochs; ps.*)"),
      FEDREC_KEY("ps.consistency", ps.consistency,
                 "federation.mode = ps: bsp (every step sees every worker's previous steps; "
                 "deterministic) | ssp (a worker reads at most ps.staleness steps ahead of the "
                 "slowest) | async (never waits)"),
      FEDREC_KEY("ps.staleness", ps.staleness,
                 "ssp: how many steps a worker may run ahead of the slowest (0 = bsp)"),
      FEDREC_KEY("ps.optimizer", ps.optimizer,
                 "optimizer the shard servers apply to pushed item gradients: sgd | adagrad"),
      FEDREC_KEY("ps.batch_size", ps.batch_size,
                 "ratings per step summed over the workers (each worker's share is its part of "
                 "the data)"),
      FEDREC_KEY("ps.lr", ps.lr,
                 "shard servers' learning rate of epoch 0, decaying by train.lr_decay; 0 = "
                 "train.lr"),
      FEDREC_KEY("ps.adagrad_initial", ps.adagrad_initial,
                 "adagrad: initial value of each accumulator (> 0)"),
      FEDREC_KEY("eval.every", eval.every, "evaluate every n rounds/epochs (and after the last)"),
      FEDREC_KEY("eval.fraction", eval.fraction,
                 "share of the available sites asked to evaluate, sampled anew each evaluation "
                 "(cross-device federations evaluate on a sample)"),
      FEDREC_KEY("eval.with_next_round", eval.with_next_round,
                 "with secure aggregation (secagg) and eval.fraction = federation.fraction, the "
                 "sites of round r + 1 evaluate round r's model before training and mask the "
                 "metric sums with their update: one secure sum per round instead of two"),
      FEDREC_KEY("eval.follow_on", eval.follow_on,
                 "with secure aggregation (secagg), when the sites evaluating a round on its own "
                 "(the last) are the sites its secure sum summed, they mask the metric sums with "
                 "that sum's pairwise secrets (a follow-on sum) instead of running a second "
                 "secure aggregation"),
      FEDREC_KEY("eval.reconstruct", eval.reconstruct,
                 "a site whose local blocks (its users' rows) were never trained, e.g. one a "
                 "sampled federation has not reached yet, evaluates with them fitted to its own "
                 "training data with the global model fixed (models that can: mf), then puts "
                 "them back, and fedrec recommend serves its users so; false: with their "
                 "initial values"),
      FEDREC_KEY("eval.ranking", eval.ranking, "also compute top-N metrics"),
      FEDREC_KEY("eval.top_k", eval.top_k, "K of Precision/Recall/NDCG/HR@K"),
      FEDREC_KEY("eval.click_negatives", eval.click_negatives,
                 "click tasks of multi-task models: items the user never interacted with, "
                 "sampled per held-out interaction as negatives"),
      FEDREC_KEY("eval.auc_bins", eval.auc_bins,
                 "bins of predicted probability in the AUC histograms of binary tasks (AUC is "
                 "exact up to the bin width, and the same federated as centralized)"),
      FEDREC_KEY("eval.warm_cold", eval.warm_cold,
                 "also report warm and cold-start users apart (metrics under \"warm\" and "
                 "\"cold\"; always on with data.cold_start.share > 0)"),
      FEDREC_KEY("eval.per_site", eval.per_site,
                 "record each site's own metrics in metrics.jsonl (security.aggregation = none "
                 "only: secure aggregation shows the coordinator only the sum)"),
      FEDREC_KEY("eval.relevant_threshold", eval.relevant_threshold,
                 "held-out ratings >= this are relevant for top-N metrics"),
      FEDREC_KEY("security.aggregation", security.aggregation,
                 "how updates are combined: secagg | secagg+ | paillier | none (in the clear)"),
      FEDREC_KEY("security.graph", security.graph,
                 "secagg neighbour graph: auto (the SecAgg+ graph when its degree is at most half "
                 "of a round's sites, else complete) | complete | sparse (= secagg+)"),
      FEDREC_KEY("security.threshold", security.threshold,
                 "secagg: share of a round's sites that must remain (secagg+ derives its own)"),
      FEDREC_KEY("security.adversarial_rate", security.adversarial_rate,
                 "share of a round's sites that may collude with the coordinator: secagg+ sizes "
                 "its neighbour graph and threshold for them, secagg's threshold must exceed them"),
      FEDREC_KEY("security.dropout_rate", security.dropout_rate,
                 "share of a round's sites expected to drop out: secagg+ sizes its graph so a "
                 "round fails from dropped neighbours with probability below 2^-20"),
      FEDREC_KEY("security.clip", security.clip,
                 "encrypted updates: parameter values are clipped to [-clip, clip]"),
      FEDREC_KEY("security.quantization_bits", security.quantization_bits,
                 "encrypted updates: fractional bits of the fixed-point encoding"),
      FEDREC_KEY("security.max_weight", security.max_weight,
                 "encrypted updates: per-row weights (ratings) are capped to this"),
      FEDREC_KEY("security.paillier_bits", security.paillier_bits, "Paillier modulus bits"),
      FEDREC_KEY("security.channels", security.channels,
                 "authenticate and encrypt every coordinator-site frame (AES-256-GCM)"),
      FEDREC_KEY("security.coordinator_identity", security.coordinator_identity,
                 "coordinator's private key file (fedrec keygen); empty = ephemeral"),
      FEDREC_KEY("security.coordinator_public_key", security.coordinator_public_key,
                 "coordinator's public key (.pub file or hex) that sites require"),
      FEDREC_KEY("security.site_identity", security.site_identity,
                 "sites' private key files, {site}/{rank} pattern; empty = ephemeral"),
      FEDREC_KEY("security.site_public_keys", security.site_public_keys,
                 "sites' public key files ({site}/{rank} pattern): the coordinator admits only "
                 "these, each site checks its secure-aggregation neighbours against them"),
      FEDREC_KEY("security.allow_unauthenticated", security.allow_unauthenticated,
                 "let fedrec run span several hosts without identity keys (channels then trust "
                 "any peer that answers)"),
      FEDREC_KEY("dp.mode", dp.mode,
                 "differential privacy of each round's update: none | central (the coordinator "
                 "adds Gaussian noise to the sum) | distributed (each site adds its Skellam share "
                 "of the noise before secure aggregation; needs security.aggregation = secagg or "
                 "secagg+)"),
      FEDREC_KEY("dp.unit", dp.unit,
                 "what the privacy protects: site (a site's whole update) | user (one user's "
                 "ratings; model mf)"),
      FEDREC_KEY("dp.clip", dp.clip,
                 "L2 norm each unit's update is clipped to (adaptive clipping: its initial value)"),
      FEDREC_KEY("dp.target_quantile", dp.target_quantile,
                 "0 = fixed dp.clip; in (0, 1): adaptive clipping, the clip follows this quantile "
                 "of the units' update norms (Andrew et al. 2021)"),
      FEDREC_KEY("dp.clip_lr", dp.clip_lr,
                 "adaptive clipping: clip <- clip * exp(-clip_lr (unclipped share - quantile))"),
      FEDREC_KEY("dp.count_stddev", dp.count_stddev,
                 "adaptive clipping: noise stddev on the count of unclipped units, > "
                 "dp.noise_multiplier / 2 (about the units per round / 20)"),
      FEDREC_KEY("dp.noise_multiplier", dp.noise_multiplier,
                 "noise stddev over the clip norm (z), for the whole round"),
      FEDREC_KEY("dp.delta", dp.delta, "delta of the reported (epsilon, delta)"),
      FEDREC_KEY("dp.target_epsilon", dp.target_epsilon,
                 "0 = no budget; else training stops before a round that would spend more"),
      FEDREC_KEY("dp.user_fraction", dp.user_fraction,
                 "dp.unit = user: each user's chance of taking part in a round"),
      FEDREC_KEY("dp.expected_units", dp.expected_units,
                 "0 = average over the units that took part (their count is released as "
                 "dp_units); > 0: the fixed denominator, the expected units per round: the count "
                 "stays private (sites do not report it)"),
      FEDREC_KEY("cluster.shard_servers", cluster.shard_servers,
                 "shard servers: ranks 1..S after the coordinator in fedrec run, threads in fedrec "
                 "sim; they hold the item rows (federation.mode = ps) or sum slices of the sites' "
                 "updates (federated rounds; 0 = the coordinator sums)"),
      FEDREC_KEY("cluster.site_workers", cluster.site_workers,
                 "two tiers: workers of each site, which trains its local epochs in "
                 "parameter-server mode (ps.*) over its own ranks; 0 = a site is one rank"),
      FEDREC_KEY("cluster.site_shard_servers", cluster.site_shard_servers,
                 "two tiers: shard servers of each site holding its copy of the item rows "
                 "(with cluster.site_workers > 0)"),
      FEDREC_KEY("cluster.startup_timeout", cluster.startup_timeout,
                 "seconds fedrec run waits for every site to load its data"),
      FEDREC_KEY("cluster.memory_limit", cluster.memory_limit,
                 "per-process memory cap of federation.mode = ps, e.g. 512MiB, 2GiB or bytes; "
                 "each shard server and worker refuses a model slice that does not fit; empty = "
                 "none"),
      FEDREC_KEY("sim.threads", sim.threads, "site threads of fedrec sim; 0 = all cores"),
      FEDREC_KEY("sim.compare_centralized", sim.compare_centralized,
                 "fedrec sim also trains the centralized baseline and reports both"),
      FEDREC_KEY("sim.share_agreements", sim.share_agreements,
                 "simulated sites compute each pairwise secure-aggregation secret once per pair "
                 "(X25519 is symmetric; same results); false = each site its own, as deployed"),
      FEDREC_KEY("sim.share_openings", sim.share_openings,
                 "with channels, simulated sites hash and decrypt each broadcast (the model) once "
                 "for all its receivers (the same bytes and key; same results); false = each "
                 "site its own, as deployed"),
      FEDREC_KEY("sim.compute_speed", sim.compute_speed,
                 "simulated sites' median speed: rating-epochs trained per simulated second"),
      FEDREC_KEY("sim.speed_spread", sim.speed_spread,
                 "lognormal sigma of the sites' speeds (0 = all equal)"),
      FEDREC_KEY("sim.latency_ms", sim.latency_ms,
                 "median one-way latency of a site's link, simulated milliseconds"),
      FEDREC_KEY("sim.bandwidth_mbps", sim.bandwidth_mbps,
                 "median bandwidth of a site's link, megabits per second; 0 = unlimited"),
      FEDREC_KEY("sim.link_spread", sim.link_spread,
                 "lognormal sigma of the sites' latencies and bandwidths"),
      FEDREC_KEY("sim.stragglers", sim.stragglers,
                 "share of sites that are stragglers (exactly round(share x sites), seeded)"),
      FEDREC_KEY("sim.straggler_slowdown", sim.straggler_slowdown,
                 "a straggler's speed is divided by this"),
      FEDREC_KEY("sim.availability", sim.availability,
                 "when simulated sites are online: always | bernoulli | trace"),
      FEDREC_KEY("sim.availability_p", sim.availability_p,
                 "bernoulli: chance a site is online in a round"),
      FEDREC_KEY("sim.availability_trace", sim.availability_trace,
                 "trace: file of \"site start end\" online windows in simulated seconds"),
      FEDREC_KEY("sim.byzantine_fraction", sim.byzantine_fraction,
                 "share of sites that are Byzantine (exactly round(share x sites), seeded): they "
                 "send sim.byzantine_attack instead of their trained parameters"),
      FEDREC_KEY("sim.byzantine_attack", sim.byzantine_attack,
                 "what Byzantine sites send, per trained value, x received, t trained, s "
                 "sim.byzantine_scale: scale (x + s(t - x)) | sign_flip (x - s(t - x)) | random "
                 "(N(0, s^2))"),
      FEDREC_KEY("sim.byzantine_scale", sim.byzantine_scale,
                 "s of sim.byzantine_attack, a number > 0"),
      FEDREC_KEY("checkpoint.every", checkpoint.every,
                 "fedrec sim/run: write a checkpoint (global model, strategy state, metrics, each "
                 "site's local state) after every n-th round, at the end and on SIGINT/SIGTERM; "
                 "federation.mode = ps: after every n-th epoch and the last (each shard server's "
                 "rows and optimizer state, each worker's users); 0 = none"),
      FEDREC_KEY("checkpoint.dir", checkpoint.dir,
                 "folder of the checkpoints; empty = <run directory>/checkpoint (a resumed run "
                 "goes on writing into the folder it resumed from)"),
      FEDREC_KEY("checkpoint.site_dir", checkpoint.site_dir,
                 "a site's own state folder, {site} pattern (fedrec run: each site's own disk); "
                 "empty = <checkpoint.dir>/site-{site}"),
      FEDREC_KEY("checkpoint.resume", checkpoint.resume,
                 "resume from this checkpoint folder (what --resume sets); the configuration "
                 "must be the one that wrote it but for checkpoint.* and output.*"),
      FEDREC_KEY("sim.faults.dropout", sim.faults.dropout,
                 "chance that a site drops out in a round (seeded per round and site): silent "
                 "from one of sim.faults.dropout_steps to the round's end"),
      FEDREC_KEY("sim.faults.dropout_steps", sim.faults.dropout_steps,
                 "steps a dropout happens at, picked uniformly: plan, keys, shares, upload, "
                 "signature, unmask, eval; empty = all but eval (a step the round lacks "
                 "silences the next one it has)"),
      FEDREC_KEY("sim.faults.crash_site", sim.faults.crash_site,
                 "site that crashes for good at sim.faults.crash_round and crash_step; -1 = none"),
      FEDREC_KEY("sim.faults.crash_round", sim.faults.crash_round,
                 "round (1-based) of sim.faults.crash_site's crash"),
      FEDREC_KEY("sim.faults.crash_step", sim.faults.crash_step,
                 "step of sim.faults.crash_site's crash: plan, keys, shares, upload, signature, "
                 "unmask or eval"),
      FEDREC_KEY("sim.faults.coordinator_crash_round", sim.faults.coordinator_crash_round,
                 "round in which the coordinator crashes (the run ends with an error); 0 = never"),
      FEDREC_KEY("sim.faults.coordinator_crash_step", sim.faults.coordinator_crash_step,
                 "step at which the coordinator crashes: it dies sending that step's first frame"),
      FEDREC_KEY("sim.faults.delay_ms", sim.faults.delay_ms,
                 "extra delay of every frame a site receives, simulated milliseconds (with "
                 "federation.round_timeout: late sites miss deadlines)"),
      FEDREC_KEY("sim.faults.frame_loss", sim.faults.frame_loss,
                 "chance that a frame between a site and the coordinator is lost (each way)"),
      FEDREC_KEY("sim.faults.duplicate", sim.faults.duplicate,
                 "chance that a frame between a site and the coordinator is delivered twice"),
      FEDREC_KEY("sim.faults.corrupt", sim.faults.corrupt,
                 "chance that a frame between a site and the coordinator has a bit flipped on "
                 "its way (its checksum rejects it)"),
      FEDREC_KEY("output.dir", output.dir, "run directory; empty = runs/<command>-<UTC time>"),
      FEDREC_KEY("output.force", output.force,
                 "write into a non-empty output.dir, removing the files an earlier run wrote "
                 "there (config, metrics, summary, model files, site folders); --force"),
      FEDREC_KEY("output.progress", output.progress,
                 "progress on stderr: a bar redrawn in place on a terminal, else a log line "
                 "every 10 s"),
      FEDREC_KEY("output.site_files", output.site_files,
                 "each site that built its model writes site<s>/ (users.tsv, interactions.tsv, "
                 "model.local) for fedrec recommend; false: only the run's own files (a large "
                 "simulation that needs its metrics and global model)"),
  };
  return keys;
}
#undef FEDREC_KEY

// A plug-in's own key: "model.<name>.<key>" or "strategy.<name>.<key>".
struct PluginParam {
  std::string section;  // "model" or "strategy"
  std::string key;      // "<name>.<key>"
};

// The plug-in key `path` names, or nothing when it has another form.
std::optional<PluginParam> PluginParamOf(std::string_view path) {
  for (const char* section : {"model", "strategy"}) {
    const std::string prefix = std::string(section) + ".";
    if (!path.starts_with(prefix)) continue;
    const std::string_view rest = path.substr(prefix.size());
    const auto dot = rest.find('.');
    if (dot == std::string_view::npos || dot == 0 || dot + 1 == rest.size()) return std::nullopt;
    if (rest.find('.', dot + 1) != std::string_view::npos) return std::nullopt;
    // Names are TOML bare keys (letters, digits, '_', '-'), so ConfigToToml
    // renders them as they are (a --set of any other bytes broke the
    // rendered file; found by fuzz_config).
    const bool bare = std::all_of(rest.begin(), rest.end(), [](char c) {
      return c == '.' || c == '_' || c == '-' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
             (c >= '0' && c <= '9');
    });
    if (!bare) return std::nullopt;
    return PluginParam{section, std::string(rest)};
  }
  return std::nullopt;
}

// The keys the built-in model or strategy `name` declares; nullptr when no
// built-in has that name (a plug-in's keys are checked when it is created).
const std::vector<ParamKey>* BuiltinKeys(const std::string& section, const std::string& name) {
  static const ModelRegistry models = ModelRegistry::WithBuiltins();
  static const StrategyRegistry strategies = StrategyRegistry::WithBuiltins();
  if (section == "model") {
    const ModelInfo* info = models.Find(name);
    return info ? &info->keys : nullptr;
  }
  const StrategyInfo* info = strategies.Find(name);
  return info ? &info->keys : nullptr;
}

// Checks a plug-in key against the built-ins, then stores it.
Status SetPluginParam(const PluginParam& param, double value, const std::string& where,
                      Config* config) {
  const std::string owner = param.key.substr(0, param.key.find('.'));
  const std::string name = param.key.substr(param.key.find('.') + 1);
  if (const std::vector<ParamKey>* keys = BuiltinKeys(param.section, owner)) {
    std::vector<std::string> known;
    bool declared = false;
    for (const ParamKey& k : *keys) {
      declared = declared || k.key == name;
      known.push_back(param.section + "." + owner + "." + k.key);
    }
    if (!declared) {
      return Status::InvalidArgument(
          where + ": unknown key; " + param.section + " " + owner + " has " +
          (known.empty() ? std::string("no keys of its own") : JoinNames(known)));
    }
  }
  (param.section == "model" ? config->model.params
                            : config->federation.strategy_params)[param.key] = value;
  return Status::Ok();
}

const Key* FindKey(std::string_view path) {
  for (const Key& k : Schema())
    if (path == k.path) return &k;
  return nullptr;
}

const char* TypeName(const Target& t) {
  switch (t.index()) {
    case 0:
      return "integer";
    case 1:
      return "non-negative integer";
    case 2:
      return "number";
    case 3:
      return "boolean (true or false)";
    case 5:
      return "array of strings";
    default:
      return "string";
  }
}

std::string Known(std::string_view path) {
  // Keys of the same section, to help with typos.
  const auto dot = path.rfind('.');
  const std::string_view section = dot == std::string_view::npos ? "" : path.substr(0, dot);
  std::string out;
  for (const Key& k : Schema()) {
    std::string_view kp = k.path;
    const auto kd = kp.rfind('.');
    if ((kd == std::string_view::npos ? "" : kp.substr(0, kd)) == section)
      out += (out.empty() ? "" : ", ") + std::string(kp);
  }
  if (out.empty()) {
    for (const Key& k : Schema()) {
      std::string_view kp = k.path;
      std::string top(kp.substr(0, kp.find('.')));
      if (out.find(top) == std::string::npos) out += (out.empty() ? "" : ", ") + top;
    }
    return "known sections and keys: " + out;
  }
  return "known keys here: " + out;
}

// A TOML basic string: quotes and backslashes escaped, and every control
// character but tab (which TOML refuses raw) as \uXXXX, so any value set
// through --set renders to a file that loads back (found by fuzz_config).
std::string Quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') out += '\\';
    if ((u < 0x20 && c != '\t') || u == 0x7f) {
      out += fmt::format("\\u{:04x}", u);
      continue;
    }
    out += c;
  }
  return out + "\"";
}

// True when `text` is well-formed UTF-8 (no overlong forms, surrogates or
// code points above U+10FFFF), as TOML requires of every string.
bool IsUtf8(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    const auto b = static_cast<unsigned char>(text[i]);
    size_t n = 0;
    uint32_t cp = 0;
    if (b < 0x80) {
      ++i;
      continue;
    } else if (b >= 0xc2 && b <= 0xdf) {
      n = 1, cp = b & 0x1f;
    } else if (b >= 0xe0 && b <= 0xef) {
      n = 2, cp = b & 0x0f;
    } else if (b >= 0xf0 && b <= 0xf4) {
      n = 3, cp = b & 0x07;
    } else {
      return false;
    }
    for (size_t k = 1; k <= n; ++k) {
      if (i + k >= text.size()) return false;
      const auto c = static_cast<unsigned char>(text[i + k]);
      if ((c & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (c & 0x3f);
    }
    if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    i += n + 1;
  }
  return true;
}

std::string Render(const Target& t) {
  return std::visit(
      [](auto* p) -> std::string {
        using T = std::remove_pointer_t<decltype(p)>;
        if constexpr (std::is_same_v<T, std::string>)
          return Quote(*p);
        else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
          std::string out;
          for (const std::string& s : *p) out += (out.empty() ? "" : ", ") + Quote(s);
          return "[" + out + "]";
        } else if constexpr (std::is_same_v<T, bool>)
          return *p ? "true" : "false";
        else if constexpr (std::is_same_v<T, double>) {
          std::string s = fmt::format("{}", *p);
          if (s.find_first_of(".eE") == std::string::npos && s.find("inf") == std::string::npos &&
              s.find("nan") == std::string::npos)
            s += ".0";
          return s;
        } else
          return fmt::format("{}", *p);
      },
      t);
}

// Parses text into the target; `where` prefixes errors.
Status ParseInto(const Target& target, std::string_view text, const std::string& where) {
  auto bad = [&](const char* expected) {
    return Status::InvalidArgument(where + ": expected " + expected + ", found \"" +
                                   std::string(text) + "\"");
  };
  if (!IsUtf8(text)) return bad("UTF-8 text");
  if (auto* s = std::get_if<std::string*>(&target)) {
    if (text.size() >= 2 && text.front() == '"' && text.back() == '"')
      text = text.substr(1, text.size() - 2);
    **s = std::string(text);
    return Status::Ok();
  }
  if (auto* list = std::get_if<std::vector<std::string>*>(&target)) {
    // a,b,c (empty: no entries), or a TOML array ["a", "b"].
    std::vector<std::string> items;
    if (text.starts_with('[')) {
      toml::table parsed;
      try {
        parsed = toml::parse("value = " + std::string(text));
      } catch (const toml::parse_error&) {
        return bad("a TOML array of strings or comma-separated values");
      }
      const toml::array* array = parsed["value"].as_array();
      if (array == nullptr) return bad("a TOML array of strings or comma-separated values");
      for (const toml::node& element : *array) {
        if (!element.is_string()) return bad("an array of strings");
        items.push_back(*element.value<std::string>());
      }
    } else {
      for (size_t start = 0; start < text.size();) {
        const size_t comma = std::min(text.find(',', start), text.size());
        if (comma == start) return bad("comma-separated values, none empty");
        items.emplace_back(text.substr(start, comma - start));
        start = comma + 1;
        if (comma + 1 == text.size()) return bad("comma-separated values, none empty");
      }
    }
    **list = std::move(items);
    return Status::Ok();
  }
  if (auto* b = std::get_if<bool*>(&target)) {
    if (text == "true")
      **b = true;
    else if (text == "false")
      **b = false;
    else
      return bad("true or false");
    return Status::Ok();
  }
  const char* first = text.data();
  const char* last = text.data() + text.size();
  if (auto* i = std::get_if<int64_t*>(&target)) {
    int64_t v;
    auto [p, ec] = std::from_chars(first, last, v);
    if (ec != std::errc() || p != last) return bad("an integer");
    **i = v;
  } else if (auto* u = std::get_if<uint64_t*>(&target)) {
    uint64_t v;
    auto [p, ec] = std::from_chars(first, last, v);
    if (ec != std::errc() || p != last) return bad("a non-negative integer");
    **u = v;
  } else if (auto* d = std::get_if<double*>(&target)) {
    double v;
    auto [p, ec] = std::from_chars(first, last, v);
    if (ec != std::errc() || p != last) return bad("a number");
    **d = v;
  }
  return Status::Ok();
}

// "a string", "an integer", "an array"...: the node's TOML type.
std::string NodeTypeName(const toml::node& node) {
  std::ostringstream out;
  out << node.type();
  const std::string type = out.str();
  return (type.find_first_of("aeiou") == 0 ? "an " : "a ") + type;
}

Status SetFromNode(const Target& target, const toml::node& node, const std::string& where) {
  if (auto* list = std::get_if<std::vector<std::string>*>(&target)) {
    const toml::array* array = node.as_array();
    if (array == nullptr)
      return Status::InvalidArgument(where + ": expected an array of strings, found " +
                                     NodeTypeName(node));
    std::vector<std::string> items;
    for (size_t i = 0; i < array->size(); ++i) {
      const toml::node& element = *array->get(i);
      if (!element.is_string())
        return Status::InvalidArgument(
            fmt::format("{}: expected an array of strings, found {} at index {}", where,
                        NodeTypeName(element), i));
      items.push_back(*element.value<std::string>());
    }
    **list = std::move(items);
  } else if (auto* s = std::get_if<std::string*>(&target)) {
    if (!node.is_string()) return Status::InvalidArgument(where + ": expected a string");
    **s = *node.value<std::string>();
  } else if (auto* b = std::get_if<bool*>(&target)) {
    if (!node.is_boolean()) return Status::InvalidArgument(where + ": expected true or false");
    **b = *node.value<bool>();
  } else if (auto* i = std::get_if<int64_t*>(&target)) {
    if (!node.is_integer()) return Status::InvalidArgument(where + ": expected an integer");
    **i = *node.value<int64_t>();
  } else if (auto* u = std::get_if<uint64_t*>(&target)) {
    if (!node.is_integer() || *node.value<int64_t>() < 0)
      return Status::InvalidArgument(where + ": expected a non-negative integer");
    **u = static_cast<uint64_t>(*node.value<int64_t>());
  } else if (auto* d = std::get_if<double*>(&target)) {
    if (!node.is_number()) return Status::InvalidArgument(where + ": expected a number");
    **d = *node.value<double>();
  }
  return Status::Ok();
}

Status Walk(const toml::table& table, const std::string& prefix, const std::string& file,
            Config* config) {
  for (auto&& [k, node] : table) {
    const std::string path =
        prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
    const std::string where = file + ":" + std::to_string(node.source().begin.line) + ": " + path;
    if (const toml::table* sub = node.as_table()) {
      if (FindKey(path) != nullptr)
        return Status::InvalidArgument(where + ": expected a value, found a table");
      FEDREC_RETURN_IF_ERROR(Walk(*sub, path, file, config));
      continue;
    }
    const Key* key = FindKey(path);
    if (key == nullptr) {
      const std::optional<PluginParam> param = PluginParamOf(path);
      if (!param) return Status::InvalidArgument(where + ": unknown key; " + Known(path));
      double value = 0.0;
      FEDREC_RETURN_IF_ERROR(SetFromNode(&value, node, where));
      FEDREC_RETURN_IF_ERROR(SetPluginParam(*param, value, where, config));
      continue;
    }
    FEDREC_RETURN_IF_ERROR(SetFromNode(key->bind(*config), node, where));
    if (path == "plugins") {
      // Relative to the file that names them, wherever fedrec runs from.
      const std::filesystem::path dir = std::filesystem::absolute(file).parent_path();
      for (std::string& plugin : config->plugins) {
        if (!plugin.empty() && std::filesystem::path(plugin).is_relative())
          plugin = (dir / plugin).lexically_normal().string();
      }
    }
  }
  return Status::Ok();
}

}  // namespace

Result<Config> LoadConfigFile(const std::string& path, Config base) {
  toml::table table;
  try {
    table = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    const auto& src = e.source();
    if (src.begin.line == 0)
      return Status::NotFound("config " + path + ": " + std::string(e.description()));
    return Status::InvalidArgument(path + ":" + std::to_string(src.begin.line) + ":" +
                                   std::to_string(src.begin.column) + ": " +
                                   std::string(e.description()));
  }
  FEDREC_RETURN_IF_ERROR(Walk(table, "", path, &base));
  return base;
}

Status ApplyOverride(Config* config, const std::string& assignment) {
  const auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) {
    return Status::InvalidArgument("--set " + assignment +
                                   ": expected section.key=value, found no '='");
  }
  const std::string path = assignment.substr(0, eq);
  const Key* key = FindKey(path);
  if (key == nullptr) {
    const std::optional<PluginParam> param = PluginParamOf(path);
    if (!param)
      return Status::InvalidArgument("--set " + assignment + ": unknown key '" + path + "'; " +
                                     Known(path));
    double value = 0.0;
    FEDREC_RETURN_IF_ERROR(
        ParseInto(&value, std::string_view(assignment).substr(eq + 1), "--set " + assignment));
    return SetPluginParam(*param, value, "--set " + assignment, config);
  }
  return ParseInto(key->bind(*config), std::string_view(assignment).substr(eq + 1),
                   "--set " + assignment);
}

DpOptions DpOptionsOf(const Config& config) {
  DpOptions o;
  const std::string& mode = config.dp.mode;
  o.mode = mode == "central"       ? DpMode::kCentral
           : mode == "distributed" ? DpMode::kDistributed
                                   : DpMode::kNone;
  o.unit = config.dp.unit == "user" ? DpUnit::kUser : DpUnit::kSite;
  o.clip = config.dp.clip;
  o.target_quantile = config.dp.target_quantile;
  o.clip_lr = config.dp.clip_lr;
  o.count_stddev = config.dp.count_stddev;
  o.noise_multiplier = config.dp.noise_multiplier;
  o.delta = config.dp.delta;
  o.target_epsilon = config.dp.target_epsilon;
  o.user_fraction = config.dp.user_fraction;
  o.expected_units = config.dp.expected_units;
  return o;
}

namespace {

// dp.*: the values, and what they need of the rest of the configuration.
Status ValidateDp(const Config& c) {
  const auto fail = [](const std::string& key, const std::string& expected,
                       const std::string& found) {
    return Status::InvalidArgument("config " + key + ": expected " + expected + ", found " + found);
  };
  if (c.dp.mode != "none" && c.dp.mode != "central" && c.dp.mode != "distributed")
    return fail("dp.mode", "none | central | distributed", "\"" + c.dp.mode + "\"");
  if (c.dp.unit != "site" && c.dp.unit != "user")
    return fail("dp.unit", "site | user", "\"" + c.dp.unit + "\"");
  if (c.dp.mode == "none") return Status::Ok();
  if (Status values = ValidateDpOptions(DpOptionsOf(c)); !values.ok())
    return Status::InvalidArgument("config: " + values.message());
  if (c.dp.mode == "distributed" && c.security.aggregation != "secagg" &&
      c.security.aggregation != "secagg+")
    return fail("dp.mode",
                "central, or security.aggregation = secagg or secagg+ with dp.mode = "
                "\"distributed\" (the sites' noise shares are added in secure aggregation's "
                "integer ring, so that the coordinator never sees the sum without noise)",
                "\"distributed\" with security.aggregation = \"" + c.security.aggregation + "\"");
  if (c.federation.mode != "federated")
    return fail("dp.mode", "none with federation.mode = \"" + c.federation.mode + "\"",
                "\"" + c.dp.mode + "\"");
  return Status::Ok();
}

}  // namespace

uint32_t LocalEpochs(const Config& config, const ModelRegistry* registry) {
  if (config.federation.local_epochs > 0)
    return static_cast<uint32_t>(config.federation.local_epochs);
  const ModelInfo* info = nullptr;
  if (registry != nullptr) info = registry->Find(config.model.name);
  static const ModelRegistry builtins = ModelRegistry::WithBuiltins();
  if (info == nullptr) info = builtins.Find(config.model.name);
  return info != nullptr ? info->local_epochs : ModelInfo{}.local_epochs;
}

Status ValidateConfig(const Config& c) {
  auto fail = [](const std::string& key, const std::string& expected, const std::string& found) {
    return Status::InvalidArgument("config " + key + ": expected " + expected + ", found " + found);
  };
  auto positive = [&](const char* key, int64_t v) {
    return v >= 1 ? Status::Ok() : fail(key, "an integer >= 1", std::to_string(v));
  };
  auto one_of = [&](const char* key, const std::string& v, std::initializer_list<const char*> ok) {
    std::string list;
    for (const char* o : ok) {
      if (v == o) return Status::Ok();
      list += (list.empty() ? "" : " | ") + std::string(o);
    }
    return fail(key, list, "\"" + v + "\"");
  };
  for (size_t i = 0; i < c.plugins.size(); ++i) {
    if (c.plugins[i].empty())
      return fail(fmt::format("plugins[{}]", i), "the path of a plug-in library", "\"\"");
  }
  FEDREC_RETURN_IF_ERROR(
      one_of("data.format", c.data.format, {"auto", "ml100k", "ml1m", "mlcsv", "csv", "implicit"}));
  FEDREC_RETURN_IF_ERROR(
      one_of("data.split", c.data.split, {"random", "holdout_last", "holdout_random"}));
  FEDREC_RETURN_IF_ERROR(one_of("data.duplicates", c.data.duplicates, {"error", "last", "mean"}));
  FEDREC_RETURN_IF_ERROR(one_of("federation.partition", c.federation.partition,
                                {"user", "dirichlet", "genre", "age_group", "files"}));
  FEDREC_RETURN_IF_ERROR(
      one_of("data.features_format", c.data.features_format, {"auto", "ml100k", "ml1m", "csv"}));
  for (const auto& [key, schema] : {std::pair{"data.user_schema", &c.data.user_schema},
                                    std::pair{"data.item_schema", &c.data.item_schema}}) {
    if (schema->empty()) continue;
    if (Result<FeatureSchema> parsed = ParseFeatureSchema(*schema); !parsed.ok())
      return Status::InvalidArgument("config " + std::string(key) + ": " +
                                     parsed.status().message());
  }
  if (c.data.features_format == "csv") {
    if (!c.data.user_features.empty() && c.data.user_schema.empty())
      return fail("data.user_schema",
                  "the columns of data.user_features with data.features_format = csv", "\"\"");
    if (!c.data.item_features.empty() && c.data.item_schema.empty())
      return fail("data.item_schema",
                  "the columns of data.item_features with data.features_format = csv", "\"\"");
  }
  if (!c.data.site_user_features.empty()) {
    if (c.federation.partition != "files")
      return fail("data.site_user_features", "to be empty unless federation.partition = files",
                  "\"" + c.data.site_user_features + "\"");
    if (c.data.site_user_features.find("{site}") == std::string::npos &&
        c.data.site_user_features.find("{rank}") == std::string::npos)
      return fail("data.site_user_features", "a path pattern containing {site} or {rank}",
                  "\"" + c.data.site_user_features + "\"");
  }
  if (!(c.data.cold_start.share >= 0.0 && c.data.cold_start.share <= 1.0))
    return fail("data.cold_start.share", "a number in [0, 1] (0 = off)",
                fmt::format("{}", c.data.cold_start.share));
  if (c.data.cold_start.ratings < 0 || c.data.cold_start.ratings > (int64_t{1} << 30))
    return fail("data.cold_start.ratings", "an integer in [0, 2^30]",
                std::to_string(c.data.cold_start.ratings));
  {
    const bool synthetic_features = c.data.train.empty() && c.data.synthetic.side_features;
    if (c.federation.partition == "genre" && c.data.item_features.empty() && !synthetic_features)
      return fail("data.item_features",
                  "an item feature file with a \"genres\" field for federation.partition = genre "
                  "(or synthetic data with data.synthetic.side_features = true)",
                  "\"\"");
    if (c.federation.partition == "age_group" && c.data.user_features.empty() &&
        !synthetic_features)
      return fail("data.user_features",
                  "a user feature file with an \"age_group\" field for federation.partition = "
                  "age_group (or synthetic data with data.synthetic.side_features = true)",
                  "\"\"");
  }
  if (!(c.data.test_fraction >= 0.0 && c.data.test_fraction < 1.0))
    return fail("data.test_fraction", "a number in [0, 1)",
                fmt::format("{}", c.data.test_fraction));
  if (!(c.data.rating_min < c.data.rating_max))
    return fail("data.rating_max", "a value above data.rating_min",
                fmt::format("{} <= {}", c.data.rating_max, c.data.rating_min));
  FEDREC_RETURN_IF_ERROR(positive("data.holdout_k", c.data.holdout_k));
  FEDREC_RETURN_IF_ERROR(positive("data.synthetic.users", c.data.synthetic.users));
  FEDREC_RETURN_IF_ERROR(positive("data.synthetic.items", c.data.synthetic.items));
  FEDREC_RETURN_IF_ERROR(positive("data.synthetic.ratings", c.data.synthetic.ratings));
  FEDREC_RETURN_IF_ERROR(positive("data.synthetic.rank", c.data.synthetic.rank));
  // The generator keeps the density at most one half (data/synthetic.h).
  if (const uint64_t pairs = static_cast<uint64_t>(c.data.synthetic.users) *
                             static_cast<uint64_t>(c.data.synthetic.items) / 2;
      c.data.train.empty() && static_cast<uint64_t>(c.data.synthetic.ratings) > pairs) {
    return fail("data.synthetic.ratings",
                fmt::format("at most {} (half of the {} x {} user-item pairs of "
                            "data.synthetic.users x data.synthetic.items)",
                            pairs, c.data.synthetic.users, c.data.synthetic.items),
                std::to_string(c.data.synthetic.ratings));
  }
  if (c.model.name.empty()) return fail("model.name", "a registered model name", "\"\"");
  if (c.model.factors < 1 || c.model.factors > 4096)
    return fail("model.factors", "an integer in [1, 4096]", std::to_string(c.model.factors));
  if (!(c.model.init_std >= 0.0))
    return fail("model.init_std", "a number >= 0", fmt::format("{}", c.model.init_std));
  FEDREC_RETURN_IF_ERROR(positive("train.epochs", c.train.epochs));
  if (!(c.train.lr > 0.0)) return fail("train.lr", "a number > 0", fmt::format("{}", c.train.lr));
  if (!(c.train.lr_decay > 0.0 && c.train.lr_decay <= 1.0))
    return fail("train.lr_decay", "a number in (0, 1]", fmt::format("{}", c.train.lr_decay));
  if (!(c.federation.lr_decay > 0.0 && c.federation.lr_decay <= 1.0))
    return fail("federation.lr_decay", "a number in (0, 1]",
                fmt::format("{}", c.federation.lr_decay));
  if (!(c.train.reg >= 0.0))
    return fail("train.reg", "a number >= 0", fmt::format("{}", c.train.reg));
  if (!(c.train.bias_reg >= 0.0))
    return fail("train.bias_reg", "a number >= 0", fmt::format("{}", c.train.bias_reg));
  if (c.train.threads < 0 || c.train.threads > 4096)
    return fail("train.threads", "an integer in [0, 4096] (0 = every core)",
                std::to_string(c.train.threads));
  if (SgdSchedule schedule; !ParseSgdSchedule(c.train.schedule, &schedule))
    return fail("train.schedule", "grid, free or sequential", "\"" + c.train.schedule + "\"");
  if (c.train.blocks < 1 || c.train.blocks > 4096)
    return fail("train.blocks", "an integer in [1, 4096]", std::to_string(c.train.blocks));
  FEDREC_RETURN_IF_ERROR(positive("federation.sites", c.federation.sites));
  FEDREC_RETURN_IF_ERROR(positive("federation.rounds", c.federation.rounds));
  if (c.federation.local_epochs < 0) {
    return fail("federation.local_epochs", "0 (the model's own) or a whole number >= 1",
                fmt::format("{}", c.federation.local_epochs));
  }
  if (c.federation.local_epochs_max != 0 && c.federation.local_epochs_max < LocalEpochs(c)) {
    return fail("federation.local_epochs_max",
                fmt::format("0 or a whole number >= federation.local_epochs ({})", LocalEpochs(c)),
                fmt::format("{}", c.federation.local_epochs_max));
  }
  FEDREC_RETURN_IF_ERROR(positive("federation.item_groups", c.federation.item_groups));
  if (!(c.federation.fraction > 0.0 && c.federation.fraction <= 1.0))
    return fail("federation.fraction", "a number in (0, 1]",
                fmt::format("{}", c.federation.fraction));
  if (!(c.federation.dirichlet_alpha > 0.0))
    return fail("federation.dirichlet_alpha", "a number > 0",
                fmt::format("{}", c.federation.dirichlet_alpha));
  if (c.federation.min_sites < 0)
    return fail("federation.min_sites", "an integer >= 0", std::to_string(c.federation.min_sites));
  if (!(c.federation.min_round_success >= 0.0 && c.federation.min_round_success <= 1.0))
    return fail("federation.min_round_success", "a share in [0, 1]",
                fmt::format("{}", c.federation.min_round_success));
  if (c.federation.min_available < 0)
    return fail("federation.min_available", "an integer >= 0",
                std::to_string(c.federation.min_available));
  if (!(c.federation.round_timeout > 0.0))
    return fail("federation.round_timeout", "seconds > 0",
                fmt::format("{}", c.federation.round_timeout));
  if (c.federation.partition == "files" && c.data.site_train.find("{site}") == std::string::npos &&
      c.data.site_train.find("{rank}") == std::string::npos)
    return fail("data.site_train",
                "a path pattern containing {site} or {rank} (federation.partition = files)",
                "\"" + c.data.site_train + "\"");
  // Parameter-server mode (federation.mode = "ps"): cluster.shard_servers
  // shard servers hold the item rows.
  FEDREC_RETURN_IF_ERROR(one_of("federation.mode", c.federation.mode, {"federated", "ps"}));
  if (c.federation.mode == "ps") {
    if (c.cluster.shard_servers < 1 || c.cluster.shard_servers > 4096)
      return fail("cluster.shard_servers",
                  "an integer in [1, 4096] with federation.mode = \"ps\" (the shard servers hold "
                  "the item rows)",
                  std::to_string(c.cluster.shard_servers));
    if (c.model.name != "mf")
      return fail("model.name",
                  "mf with federation.mode = \"ps\" (the parameter-server mode "
                  "trains biased MF)",
                  "\"" + c.model.name + "\"");
    FEDREC_RETURN_IF_ERROR(one_of("ps.consistency", c.ps.consistency, {"bsp", "ssp", "async"}));
    FEDREC_RETURN_IF_ERROR(one_of("ps.optimizer", c.ps.optimizer, {"sgd", "adagrad"}));
  } else {
    // Federated rounds: shard servers sum slices of the sites' updates.
    if (c.cluster.shard_servers < 0 || c.cluster.shard_servers > 4096)
      return fail("cluster.shard_servers", "an integer in [0, 4096]",
                  std::to_string(c.cluster.shard_servers));
    if (c.cluster.site_workers < 0 || c.cluster.site_workers > 4096)
      return fail("cluster.site_workers", "an integer in [0, 4096] (0 = a site is one rank)",
                  std::to_string(c.cluster.site_workers));
    if (c.cluster.site_workers > 0) {
      if (c.cluster.site_shard_servers < 1 || c.cluster.site_shard_servers > 4096)
        return fail("cluster.site_shard_servers",
                    "an integer in [1, 4096] with cluster.site_workers > 0 (they hold the "
                    "site's item rows)",
                    std::to_string(c.cluster.site_shard_servers));
      if (c.model.name != "mf")
        return fail("model.name",
                    "mf with cluster.site_workers > 0 (a site trains biased MF in "
                    "parameter-server mode)",
                    "\"" + c.model.name + "\"");
      // A plug-in strategy asking for either is refused by the site at its
      // first round (apps/site_group.cc).
      if (c.federation.strategy == "fedprox" || c.federation.strategy == "scaffold")
        return fail("federation.strategy",
                    "a strategy that aggregates plain updates (e.g. fedavg) with "
                    "cluster.site_workers > 0 (a site training in parameter-server mode applies "
                    "no proximal term or control variates)",
                    "\"" + c.federation.strategy + "\"");
      FEDREC_RETURN_IF_ERROR(one_of("ps.consistency", c.ps.consistency, {"bsp", "ssp", "async"}));
      FEDREC_RETURN_IF_ERROR(one_of("ps.optimizer", c.ps.optimizer, {"sgd", "adagrad"}));
    }
  }
  if (c.ps.staleness < 0 || c.ps.staleness > 1000000)
    return fail("ps.staleness", "an integer in [0, 1000000]", std::to_string(c.ps.staleness));
  FEDREC_RETURN_IF_ERROR(positive("ps.batch_size", c.ps.batch_size));
  if (!(c.ps.lr >= 0.0))
    return fail("ps.lr", "a number >= 0 (0 = train.lr)", fmt::format("{}", c.ps.lr));
  if (!(c.ps.adagrad_initial > 0.0))
    return fail("ps.adagrad_initial", "a number > 0", fmt::format("{}", c.ps.adagrad_initial));
  if (!(c.cluster.startup_timeout > 0.0))
    return fail("cluster.startup_timeout", "seconds > 0",
                fmt::format("{}", c.cluster.startup_timeout));
  if (!c.cluster.memory_limit.empty()) {
    Result<uint64_t> limit = ParseByteSize(c.cluster.memory_limit);
    if (!limit.ok())
      return Status::InvalidArgument("config cluster.memory_limit: " + limit.status().message());
    if (*limit == 0)
      return fail("cluster.memory_limit", "a cap above 0 bytes (empty = none)",
                  "\"" + c.cluster.memory_limit + "\"");
  }
  FEDREC_RETURN_IF_ERROR(one_of("security.aggregation", c.security.aggregation,
                                {"secagg", "secagg+", "paillier", "none"}));
  FEDREC_RETURN_IF_ERROR(
      one_of("security.graph", c.security.graph, {"auto", "complete", "sparse"}));
  if (c.security.aggregation == "secagg+" && c.security.graph == "complete")
    return fail("security.graph",
                "auto or sparse with security.aggregation = \"secagg+\" (which is the sparse "
                "graph); use security.aggregation = \"secagg\" for the complete graph",
                "\"complete\"");
  if (!(c.security.threshold > 0.0 && c.security.threshold <= 1.0))
    return fail("security.threshold", "a number in (0, 1]",
                fmt::format("{}", c.security.threshold));
  if (!(c.security.adversarial_rate >= 0.0 && c.security.adversarial_rate < 1.0))
    return fail("security.adversarial_rate", "a number in [0, 1)",
                fmt::format("{}", c.security.adversarial_rate));
  if (!(c.security.dropout_rate >= 0.0 && c.security.dropout_rate < 1.0))
    return fail("security.dropout_rate", "a number in [0, 1)",
                fmt::format("{}", c.security.dropout_rate));
  if ((c.security.aggregation == "secagg+" ||
       (c.security.aggregation == "secagg" && c.security.graph == "sparse")) &&
      c.security.adversarial_rate + c.security.dropout_rate > 0.9)
    return fail("security.dropout_rate",
                "with security.adversarial_rate at most 0.9 in all (no secagg+ graph exists "
                "beyond that)",
                fmt::format("{} + {}", c.security.adversarial_rate, c.security.dropout_rate));
  if (c.security.aggregation == "secagg" && !(c.security.threshold > c.security.adversarial_rate))
    return fail("security.threshold",
                fmt::format("more than security.adversarial_rate ({}), so colluding sites "
                            "cannot reconstruct a site's masks",
                            c.security.adversarial_rate),
                fmt::format("{}", c.security.threshold));
  if (!(c.security.clip > 0.0))
    return fail("security.clip", "a number > 0", fmt::format("{}", c.security.clip));
  if (c.security.quantization_bits < 0 || c.security.quantization_bits > 40)
    return fail("security.quantization_bits", "an integer in [0, 40]",
                std::to_string(c.security.quantization_bits));
  FEDREC_RETURN_IF_ERROR(positive("security.max_weight", c.security.max_weight));
  if (c.security.paillier_bits < 512 || c.security.paillier_bits > 8192 ||
      c.security.paillier_bits % 64 != 0)
    return fail("security.paillier_bits", "a multiple of 64 in [512, 8192]",
                std::to_string(c.security.paillier_bits));
  if (c.security.aggregation == "paillier") {
    if (c.security.paillier_bits < kPaillierSiteMinModulusBits)
      return fail("security.paillier_bits",
                  "at least " + std::to_string(kPaillierSiteMinModulusBits) +
                      " with security.aggregation = \"paillier\" (sites refuse smaller moduli)",
                  std::to_string(c.security.paillier_bits));
    Result<uint32_t> threshold = paillier_round::DecryptionThreshold(
        static_cast<uint32_t>(std::max<int64_t>(c.federation.sites, 0)),
        c.security.adversarial_rate);
    if (!threshold.ok())
      return Status::InvalidArgument("config federation.sites / security.adversarial_rate: " +
                                     threshold.status().message());
  }
  // Parameter-server mode has no rounds to aggregate: security.aggregation
  // does not apply to it.
  if (c.security.aggregation != "none" && c.federation.mode != "ps") {
    const double per_round =
        std::max(1.0, std::round(c.federation.fraction * static_cast<double>(c.federation.sites)));
    if (per_round < 3)
      return fail("security.aggregation",
                  "\"none\", or at least 3 sites per round (with fewer, one site's update "
                  "follows from the sum and the other's)",
                  fmt::format("\"{}\" with {} site(s) per round (federation.sites = {}, "
                              "federation.fraction = {})",
                              c.security.aggregation, per_round, c.federation.sites,
                              c.federation.fraction));
  }
  FEDREC_RETURN_IF_ERROR(ValidateDp(c));
  for (const auto& [key, value] :
       {std::pair{"security.site_identity", c.security.site_identity},
        std::pair{"security.site_public_keys", c.security.site_public_keys}}) {
    if (!value.empty() && value.find("{site}") == std::string::npos &&
        value.find("{rank}") == std::string::npos)
      return fail(key, "a path pattern containing {site} or {rank}", "\"" + value + "\"");
  }
  {
    // The identities and the public keys that check them come as a set: a
    // partial set would leave one direction unauthenticated.
    const std::pair<const char*, const std::string*> keys[] = {
        {"security.coordinator_identity", &c.security.coordinator_identity},
        {"security.coordinator_public_key", &c.security.coordinator_public_key},
        {"security.site_identity", &c.security.site_identity},
        {"security.site_public_keys", &c.security.site_public_keys}};
    std::string set, missing;
    for (const auto& [key, value] : keys) {
      std::string& list = value->empty() ? missing : set;
      list += (list.empty() ? "" : ", ") + std::string(key);
    }
    if (!set.empty() && !missing.empty()) {
      return fail(missing.substr(0, missing.find(',')),
                  "a value: the identity and public-key settings go together (set: " + set +
                      "; missing: " + missing + "; `fedrec keygen --dir keys --sites " +
                      std::to_string(c.federation.sites) + "` prints all four)",
                  "nothing");
    }
  }
  if (!c.data.item_universe.empty() && c.federation.partition != "files")
    return fail("data.item_universe", "to be empty unless federation.partition = files",
                "\"" + c.data.item_universe + "\" with federation.partition = \"" +
                    c.federation.partition + "\"");
  if (c.checkpoint.every < 0 || c.checkpoint.every > 1000000000)
    return fail("checkpoint.every", "an integer in [0, 1e9] (0 = no checkpoints)",
                std::to_string(c.checkpoint.every));
  FEDREC_RETURN_IF_ERROR(positive("eval.every", c.eval.every));
  if (!(c.eval.fraction > 0.0 && c.eval.fraction <= 1.0))
    return fail("eval.fraction", "a number in (0, 1]", fmt::format("{}", c.eval.fraction));
  FEDREC_RETURN_IF_ERROR(positive("eval.top_k", c.eval.top_k));
  if (c.eval.click_negatives < 0 || c.eval.click_negatives > 1000)
    return fail("eval.click_negatives", "an integer in [0, 1000]",
                std::to_string(c.eval.click_negatives));
  if (c.eval.auc_bins < 2 || c.eval.auc_bins > (int64_t{1} << 20))
    return fail("eval.auc_bins", "an integer in [2, 1048576]", std::to_string(c.eval.auc_bins));
  if (c.eval.per_site && c.security.aggregation != "none")
    return fail("eval.per_site",
                "false unless security.aggregation = \"none\" (under secure aggregation the "
                "coordinator learns only the sum over the sites)",
                "true with security.aggregation = \"" + c.security.aggregation + "\"");
  if (c.sim.threads < 0)
    return fail("sim.threads", "an integer >= 0", std::to_string(c.sim.threads));
  if (!(c.sim.compute_speed > 0.0) || !std::isfinite(c.sim.compute_speed))
    return fail("sim.compute_speed", "a number > 0", fmt::format("{}", c.sim.compute_speed));
  for (const auto& [key, value] :
       {std::pair<const char*, double>{"sim.speed_spread", c.sim.speed_spread},
        {"sim.latency_ms", c.sim.latency_ms},
        {"sim.bandwidth_mbps", c.sim.bandwidth_mbps},
        {"sim.link_spread", c.sim.link_spread}}) {
    if (!(value >= 0.0) || !std::isfinite(value))
      return fail(key, "a number >= 0", fmt::format("{}", value));
  }
  if (!(c.sim.stragglers >= 0.0 && c.sim.stragglers <= 1.0))
    return fail("sim.stragglers", "a number in [0, 1]", fmt::format("{}", c.sim.stragglers));
  if (!(c.sim.straggler_slowdown >= 1.0) || !std::isfinite(c.sim.straggler_slowdown))
    return fail("sim.straggler_slowdown", "a number >= 1",
                fmt::format("{}", c.sim.straggler_slowdown));
  for (const auto& [key, value] :
       {std::pair<const char*, double>{"sim.faults.dropout", c.sim.faults.dropout},
        {"sim.faults.frame_loss", c.sim.faults.frame_loss},
        {"sim.faults.duplicate", c.sim.faults.duplicate},
        {"sim.faults.corrupt", c.sim.faults.corrupt}}) {
    if (!(value >= 0.0 && value <= 1.0))
      return fail(key, "a number in [0, 1]", fmt::format("{}", value));
  }
  if (!(c.sim.faults.frame_loss + c.sim.faults.duplicate + c.sim.faults.corrupt <= 1.0)) {
    return fail(
        "sim.faults.frame_loss + duplicate + corrupt", "at most 1",
        fmt::format("{}", c.sim.faults.frame_loss + c.sim.faults.duplicate + c.sim.faults.corrupt));
  }
  if (!(c.sim.faults.delay_ms >= 0.0) || !std::isfinite(c.sim.faults.delay_ms))
    return fail("sim.faults.delay_ms", "a number >= 0", fmt::format("{}", c.sim.faults.delay_ms));
  for (const std::string& step : c.sim.faults.dropout_steps) {
    if (!ParseRoundStep(step).ok())
      return fail("sim.faults.dropout_steps",
                  "plan, keys, shares, upload, signature, unmask or eval", "\"" + step + "\"");
  }
  for (const auto& [key, step] :
       {std::pair<const char*, const std::string*>{"sim.faults.crash_step",
                                                   &c.sim.faults.crash_step},
        {"sim.faults.coordinator_crash_step", &c.sim.faults.coordinator_crash_step}}) {
    if (!ParseRoundStep(*step).ok())
      return fail(key, "plan, keys, shares, upload, signature, unmask or eval",
                  "\"" + *step + "\"");
  }
  if (c.sim.faults.crash_site < -1 ||
      (c.sim.faults.crash_site >= 0 && c.sim.faults.crash_site >= c.federation.sites))
    return fail("sim.faults.crash_site", "-1 or a site index below federation.sites",
                std::to_string(c.sim.faults.crash_site));
  if (c.sim.faults.crash_site >= 0 && c.sim.faults.crash_round < 1)
    return fail("sim.faults.crash_round", "a round >= 1 when sim.faults.crash_site is set",
                std::to_string(c.sim.faults.crash_round));
  if (c.sim.faults.coordinator_crash_round < 0)
    return fail("sim.faults.coordinator_crash_round", "an integer >= 0",
                std::to_string(c.sim.faults.coordinator_crash_round));
  if (c.sim.availability != "always" && c.sim.availability != "bernoulli" &&
      c.sim.availability != "trace")
    return fail("sim.availability", "always, bernoulli or trace", "\"" + c.sim.availability + "\"");
  if (!(c.sim.availability_p >= 0.0 && c.sim.availability_p <= 1.0))
    return fail("sim.availability_p", "a number in [0, 1]",
                fmt::format("{}", c.sim.availability_p));
  if (c.sim.availability == "trace" && c.sim.availability_trace.empty())
    return fail("sim.availability_trace", "a trace file with sim.availability = \"trace\"",
                "nothing");
  if (!(c.sim.byzantine_fraction >= 0.0 && c.sim.byzantine_fraction < 1.0))
    return fail("sim.byzantine_fraction", "a number in [0, 1)",
                fmt::format("{}", c.sim.byzantine_fraction));
  if (c.sim.byzantine_attack != "scale" && c.sim.byzantine_attack != "sign_flip" &&
      c.sim.byzantine_attack != "random")
    return fail("sim.byzantine_attack", "scale, sign_flip or random",
                "\"" + c.sim.byzantine_attack + "\"");
  if (!(c.sim.byzantine_scale > 0.0) || !std::isfinite(c.sim.byzantine_scale))
    return fail("sim.byzantine_scale", "a finite number > 0",
                fmt::format("{}", c.sim.byzantine_scale));
  return Status::Ok();
}

Status ValidateDistributedConfig(const Config& c) {
  if (c.security.aggregation == "paillier" && c.security.site_public_keys.empty()) {
    return Status::InvalidArgument(
        "config security.site_public_keys: expected the sites' public key files with "
        "security.aggregation = \"paillier\" (sites check the key dealer's and each other's "
        "signatures against them; make keys with `fedrec keygen --dir keys --sites " +
        std::to_string(c.federation.sites) +
        "` and set security.site_public_keys = \"keys/site{site}.pub\" and "
        "security.site_identity = \"keys/site{site}.key\"), found nothing");
  }
  return Status::Ok();
}

namespace {

// The chosen plug-in's own keys, with the registered defaults filled in, then
// any other plug-in's keys of the section that were set.
void RenderPluginParams(const std::string& section, const std::string& chosen,
                        const std::map<std::string, double>& set, bool with_docs,
                        std::string* out) {
  std::map<std::string, std::map<std::string, double>> params;
  if (const std::vector<ParamKey>* keys = BuiltinKeys(section, chosen)) {
    for (const ParamKey& k : *keys) params[chosen][k.key] = k.default_value;
  }
  for (const auto& [key, value] : set)
    params[key.substr(0, key.find('.'))][key.substr(key.find('.') + 1)] = value;
  for (auto& [owner, keys] : params) {
    *out += "\n[" + section + "." + owner + "]\n";
    const std::vector<ParamKey>* declared = BuiltinKeys(section, owner);
    for (auto& [key, value] : keys) {
      if (with_docs && declared != nullptr) {
        for (const ParamKey& k : *declared) {
          if (k.key == key) *out += "# " + k.doc + "\n";
        }
      }
      *out += key + " = " + Render(Target(&value)) + "\n";
    }
  }
}

}  // namespace

std::string ConfigToToml(const Config& config, bool with_docs) {
  Config copy = config;  // bind() needs a mutable Config
  std::string out, section;
  for (const Key& k : Schema()) {
    std::string_view path = k.path;
    const auto dot = path.rfind('.');
    const std::string sec = dot == std::string_view::npos ? "" : std::string(path.substr(0, dot));
    const std::string name(dot == std::string_view::npos ? path : path.substr(dot + 1));
    if (sec != section) {
      out += "\n[" + sec + "]\n";
      section = sec;
    }
    if (with_docs) out += "# " + std::string(k.doc) + "\n";
    out += name + " = " + Render(k.bind(copy)) + "\n";
  }
  RenderPluginParams("model", config.model.name, config.model.params, with_docs, &out);
  RenderPluginParams("strategy", config.federation.strategy, config.federation.strategy_params,
                     with_docs, &out);
  return out;
}

std::vector<std::string> ConfigKeyDocs() {
  Config defaults;
  std::vector<std::string> lines;
  for (const Key& k : Schema()) {
    const Target t = k.bind(defaults);
    lines.push_back(
        fmt::format("| `{}` | {} | `{}` | {} |", k.path, TypeName(t), Render(t), k.doc));
  }
  const auto add = [&lines](const std::string& section, const std::string& name,
                            const std::vector<ParamKey>& keys) {
    for (const ParamKey& k : keys) {
      double value = k.default_value;
      lines.push_back(fmt::format("| `{}.{}.{}` | number | `{}` | {} |", section, name, k.key,
                                  Render(Target(&value)), k.doc));
    }
  };
  const ModelRegistry models = ModelRegistry::WithBuiltins();
  for (const std::string& name : models.Names()) add("model", name, models.Find(name)->keys);
  const StrategyRegistry strategies = StrategyRegistry::WithBuiltins();
  for (const std::string& name : strategies.Names())
    add("strategy", name, strategies.Find(name)->keys);
  return lines;
}

}  // namespace fedrec
