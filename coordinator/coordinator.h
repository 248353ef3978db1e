// Coordinator: runs the federated round state machine described in
// protocol/messages.h: picks sites, sends plans, folds the sites' updates into
// per-row sums in a fixed (site) order, lets the Strategy form the next global
// model, runs federated evaluation and reports per-round metrics.
//
// It never keeps an individual site's update after folding it into the sums.
// Talks only through a Transport, and judges deadlines on a Clock
// (protocol/clock.h): real time, or virtual time in the simulator.
//
// The round loop is written once: how the sites' updates reach it as sums
// (in the clear, SecAgg, Paillier) is the aggregation scheme's part
// (coordinator/aggregation_scheme.h), and sending, collecting against
// deadlines and site availability are the SiteLink's (coordinator/site_link.h).
//
// Thread-safety: Run() is called from one thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "algorithms/metrics.h"
#include "algorithms/model.h"
#include "algorithms/strategy.h"
#include "base/param_block.h"
#include "base/status.h"
#include "coordinator/coordinator_dp.h"
#include "coordinator/site_link.h"
#include "crypto/secagg.h"
#include "crypto/update_codec.h"
#include "protocol/clock.h"
#include "protocol/messages.h"
#include "protocol/transport.h"

namespace fedrec {

class CoordinatorScheme;
class Coordinator;

struct CoordinatorOptions {
  uint32_t rounds = 20;
  uint32_t local_epochs = 1;
  double fraction = 1.0;  // federation.fraction (the strategy samples; evaluation rides when equal)
  uint32_t min_sites = 1;   // fewer updates than this aborts the round (model unchanged)
  uint32_t eval_every = 1;  // evaluate after every n-th round and after the last
  // Share of the available sites asked to evaluate, sampled per evaluation
  // from the stream (seed, round, 0, kEvalSample).
  double eval_fraction = 1.0;
  // With secure aggregation (secagg), a round's evaluation rides on the next
  // round's secure sum when there is a next round and eval_fraction equals
  // fraction: the sites sampled for round r + 1 evaluate round r's model (the
  // plan's) before training and mask the metric sums with their update, so
  // an evaluated round costs one secure sum and one model download instead
  // of two. The last round, and a round whose next one aborts, are evaluated
  // on their own as before.
  bool eval_with_next_round = true;
  // With secure aggregation (secagg), when the sites asked to evaluate a
  // round on its own (the last one, or a round whose next one aborted) are
  // exactly the sites its secure sum summed (U3; e.g. every site with
  // fractions 1 and none failing), their metric sums are masked with that
  // sum's pairwise secrets (crypto/secagg.h, "Follow-on sum") instead of
  // going through a secure aggregation of their own. Should one not answer,
  // those that did are evaluated by a secure aggregation of their own. A
  // sample of evaluating sites other than the round's is never replaced by
  // the round's: sites that just trained would score the model they fitted.
  bool eval_follow_on = true;
  uint64_t seed = 1;
  // How long the coordinator waits for each step's answers, on `clock`: real
  // time, or virtual time in the simulator.
  std::chrono::milliseconds round_timeout{std::chrono::minutes(10)};
  // The time deadlines are judged on (the Env seam's clock); null = real time.
  // Must outlive the coordinator. The simulator passes its virtual clock.
  Clock* clock = nullptr;
  std::vector<int> site_ranks;  // rank of site s; its size is the number of sites
  // Sharded aggregation (coordinator/aggregation_shard.h): the ranks of the
  // shard servers that sum the slices of the sites' updates, in shard order;
  // empty: the coordinator sums the updates itself. The model is the same.
  std::vector<int> shard_ranks;
  // Items of the federation: with encrypted aggregation the sites' per-item
  // recommendation counts are summed securely over this many items.
  uint64_t items = 0;
  // Evaluation (eval.*): bins of the AUC histograms of binary tasks, whether
  // warm and cold-start users are reported apart, and, with aggregation
  // kNone only, each evaluating site's own metrics (RoundMetrics::sites).
  // Sites are configured alike (WorkerOptions).
  uint32_t auc_bins = 1024;
  bool eval_warm_cold = false;
  bool eval_per_site = false;

  // How updates are combined. kSecAgg and kPaillier never show the coordinator
  // an individual update; they need at least 3 sites per round.
  Aggregation aggregation = Aggregation::kNone;
  // SecAgg: the graph (SecAgg+: O(log n) neighbours instead of all), the
  // share of a round's participants that must remain, and the colluders and
  // dropouts it is sized against. Every site holds the same policy
  // (WorkerOptions::secagg_policy) and checks each plan against it.
  secagg::Policy secagg;
  // Whether every site holds the roster of identity keys
  // (security.site_public_keys) and so checks the survivor signatures of
  // step 5; without it they are not sent (sites could not check them).
  bool sites_hold_roster = false;
  // Threads that unmasking a round's sum may use; 0 = hardware concurrency.
  // (The coordinator is otherwise idle while it unmasks.)
  uint32_t unmask_threads = 0;
  FixedPointFormat format;        // ring_bits is chosen per round (ChooseRingBits)
  uint32_t paillier_bits = 2048;  // Paillier modulus size
  // False: sites free the global model after each answer
  // (WorkerOptions::keep_global_model, set alike), so every request carries
  // the model. True: a site that holds the current version is not sent it
  // again (e.g. the next round's plan after an evaluation).
  bool sites_keep_model = true;
  // Identifies the job (apps: JobId, a hash of the resolved job parameters,
  // the coordinator's identity and a fresh nonce); sent in every plan and
  // bound into every secure-aggregation signature and share.
  std::array<uint8_t, 32> job_id{};

  // Checkpoints (coordinator/checkpoint.h): `on_checkpoint(*this, round)`
  // is called once round `round` is reported, after every
  // `checkpoint_every`-th round, after the last one and when the run is
  // stopped (0 = never; evaluations then never ride on the next round, so
  // every checkpoint holds a fully reported round). Its error ends the run.
  uint32_t checkpoint_every = 0;
  std::function<Status(const Coordinator&, uint32_t round)> on_checkpoint;
  // Polled after every round: true ends the run after that round (its
  // checkpoint written); Run then returns OK and stopped() is true.
  std::function<bool()> stop_requested;
  // Progress inside a round: `done` of `total` awaited sites answered or
  // failed `step` (SiteLink::set_on_progress). Must not block.
  std::function<void(std::string_view step, uint32_t done, uint32_t total)> on_progress;

  // Differential privacy (dp.*, crypto/dp.h; coordinator/coordinator_dp.h).
  // Sites are configured alike (WorkerOptions::dp). With a budget
  // (dp.target_epsilon), Run stops before a round that would exceed it.
  DpOptions dp;
};

// What a coordinator checkpoint holds (coordinator/checkpoint.h). Every
// random stream is derived from (seed, round, site, purpose), so the round is
// the position of all of them.
struct CoordinatorState {
  uint32_t round = 0;  // rounds completed; the run goes on with round + 1
  uint64_t version = 0;
  std::vector<ParamBlock> global;
  std::string strategy;  // its name
  StrategyState strategy_state;
  // Other components' state, by section name (Coordinator::ExtraSections).
  std::vector<std::pair<std::string, std::string>> extra;
};

struct RoundMetrics {
  uint32_t round = 0;  // 1-based
  uint32_t sites_selected = 0;
  uint32_t sites_reported = 0;  // updates folded into the aggregate
  uint32_t failures = 0;        // SiteError, invalid update or timeout
  bool aborted = false;         // too few updates: model unchanged
  double train_mse = 0.0;       // over the local epochs of reporting sites
  bool evaluated = false;
  // The sites whose evaluation the metrics combine (the survivors of a
  // secure evaluation sum): fewer than asked when some failed.
  uint32_t sites_evaluated = 0;
  ErrorSums test;  // combined over sites
  RankingSums ranking;
  // Per task of a multi-task model (Model::Tasks(); empty otherwise), and
  // with CoordinatorOptions::eval_warm_cold the warm and cold users' sums.
  std::vector<TaskSums> tasks;
  bool warm_cold = false;
  GroupSums warm, cold;
  // CoordinatorOptions::eval_per_site: each evaluating site's own sums, in
  // site order.
  struct SiteEval {
    uint32_t site = 0;
    EvalSums sums;
  };
  std::vector<SiteEval> sites;
  uint64_t bytes_sent = 0;  // by the coordinator this round
  uint64_t bytes_received = 0;
  // Wall time of the round including its evaluation, or, when that rode on
  // the next round (evaluated_in_round), including the previous round's.
  double seconds = 0.0;
  // The round whose secure sum carried this round's evaluation (round + 1),
  // 0 when it was evaluated on its own (CoordinatorOptions::eval_with_next_round).
  uint32_t evaluated_in_round = 0;
  // The round's duration on the coordinator's clock: virtual (simulated)
  // time in the simulator, equal to `seconds` on a real clock.
  double sim_seconds = 0.0;
  // Sites the coordinator believed unavailable (silent at a deadline, or
  // refused by the channel, and not heard from since) and so did not sample.
  uint32_t sites_unavailable = 0;
  // Every site that failed a step of the round or its evaluation, with the
  // first reason (missed the deadline, channel refused, its SiteError...).
  std::map<uint32_t, std::string> failed_sites;
  // The same sites by the step they failed at (RoundStepName: "upload",
  // "unmask", ...), each list ascending: who dropped where.
  std::map<std::string, std::vector<uint32_t>> failed_steps;
  // Encrypted aggregation: the bytes of its protocol messages beyond the
  // updates themselves (keys, shares, unmasking; Paillier sums) and the
  // coordinator's time in its steps other than waiting for the updates.
  std::string aggregation = "none";
  uint64_t secure_bytes = 0;
  double secure_seconds = 0.0;
  std::string abort_reason;  // when aborted
  // Differential privacy: the budget spent after this round and the round's
  // clip norm (dp.on false without DP).
  DpRoundMetrics dp;
  // Set on the round after which Run stops early (the privacy budget).
  std::string stop_reason;
};

// Checks a strategy's round configuration: sites strictly ascending and
// available, instructions in range; the error says what was found.
Status CheckRoundConfig(const RoundConfig& config, std::span<const uint32_t> available);

class Coordinator {
 public:
  // `initial_global` are the global blocks of the initial model (version 0);
  // sites upload their trained global blocks and the strategy combines them.
  Coordinator(const CoordinatorOptions& options, std::vector<ParamBlock> initial_global,
              std::unique_ptr<Strategy> strategy, Transport* transport);
  // The global blocks of `model` are the initial model; sites upload what
  // model->UploadShapes() describes and model->Apply forms the next global
  // model from the sums (with the strategy for models that average). The
  // model holds no user (it is built from no data).
  Coordinator(const CoordinatorOptions& options, std::unique_ptr<Model> model,
              std::unique_ptr<Strategy> strategy, Transport* transport);
  virtual ~Coordinator();

  // Runs every round, calling `on_round` after each, then sends Shutdown to
  // every site. Returns the first fatal error (transport failure, every site
  // lost); failures of individual sites are reported in the metrics instead.
  Status Run(const std::function<void(const RoundMetrics&)>& on_round);

  // Sends Shutdown to every site (also done by Run at its end); `failed` tells
  // the sites the job ends on an error.
  void ShutdownSites(const std::string& reason, bool failed = false);

  const std::vector<ParamBlock>& global() const { return global_; }
  // A copy of the global model as of the last round applied to it (or
  // restored), and that round (0: the initial model). Safe to call from
  // another thread while Run runs: `fedrec run` writes it when mpirun ends
  // the job mid-round.
  std::pair<uint32_t, std::vector<ParamBlock>> AppliedModel() const;
  const Strategy& strategy() const { return *strategy_; }
  uint64_t model_version() const { return version_; }
  // The differential-privacy state (clip norm, accountant), null without
  // DP: its SaveState / LoadState carry it across a checkpoint.
  CoordinatorDp* dp() { return dp_.get(); }
  // Why Run stopped before options.rounds (the privacy budget), else empty.
  const std::string& stop_reason() const { return stop_reason_; }

  // Checkpoints: the state after round `round` (call from on_checkpoint),
  // and Restore, before Run, from a state a coordinator of the same model
  // and strategy wrote: Run then goes on with round state.round + 1. Restore
  // checks everything first (block names and shapes, the strategy's name and
  // state, the extra sections) and changes nothing on an error naming what
  // differs.
  CoordinatorState CheckpointState(uint32_t round) const;
  Status Restore(const CoordinatorState& state);
  // Extension point for other components' state (e.g. a privacy
  // accountant): named sections written into every checkpoint, handed back
  // to RestoreExtraSections on resume. The default holds none and refuses a
  // checkpoint that has some.
  virtual std::vector<std::pair<std::string, std::string>> ExtraSections() const { return {}; }
  virtual Status RestoreExtraSections(
      const std::vector<std::pair<std::string, std::string>>& sections);
  // The last round run (or restored), and whether stop_requested ended the run.
  uint32_t completed_round() const { return completed_round_; }
  bool stopped() const { return stopped_; }

 private:
  // `evaluate_previous`: the previous round's metrics, whose evaluation
  // rides on this round's secure sum when it can (sets its `evaluated`).
  Status RunRound(uint32_t round, RoundMetrics* metrics, RoundMetrics* evaluate_previous);
  // Whether the evaluation after `round` can ride on the next round's sum.
  bool EvaluatesWithNextRound(uint32_t round);
  // The aggregation scheme of options_.aggregation (made on first use).
  CoordinatorScheme& scheme();
  // Applies `input` with the strategy and checks the result (diverged -> Aborted).
  // Strategy::Aggregate's refusal (Aborted) ends the round aborted with the
  // model unchanged.
  Status ApplyAggregate(uint32_t round, const AggregateInput& input, RoundMetrics* metrics);
  Status Evaluate(uint32_t round, RoundMetrics* metrics);
  // Sends `message` (RoundPlan or EvalRequest) to `sites`, with the global
  // model only to sites that do not hold the current version yet.
  template <typename M>
  Status SendWithModel(M* message, const std::vector<uint32_t>& sites, uint32_t round);
  // Hands an evaluated round to the strategy (OnEvaluated), then to `on_round`.
  void Report(const RoundMetrics& metrics,
              const std::function<void(const RoundMetrics&)>& on_round);
  // The sites asked to evaluate after `round`: a sample of the available ones.
  std::vector<uint32_t> EvalSites(uint32_t round) const;

  // The round's fixed-point format: the configured one, widened by the model
  // for statistics.
  FixedPointFormat UploadFormat() const;

  CoordinatorOptions options_;
  std::unique_ptr<Model> model_;  // may be null: then uploads are the global blocks
  std::vector<ParamBlock> global_;
  std::vector<ParamBlock> upload_;  // shapes of a site's upload
  std::unique_ptr<Strategy> strategy_;
  RoundConfig round_config_;  // the strategy's sites and instructions for the round in progress
  // Trailing blocks of upload_ that the strategy adds (SiteExtraShapes:
  // SCAFFOLD's control-variate changes, FedNova's local steps).
  size_t extra_blocks_ = 0;
  void AddSiteExtraShapes();
  Transport* transport_;
  RealClock real_clock_;  // the clock when options_.clock is null
  SiteLink link_;
  std::unique_ptr<CoordinatorScheme> scheme_;
  uint64_t version_ = 0;
  uint32_t completed_round_ = 0;
  // Guards the writes of global_ (and applied_round_) against AppliedModel;
  // the round loop's own reads need no lock, it is the only writer.
  mutable std::mutex applied_mu_;
  uint32_t applied_round_ = 0;
  bool stopped_ = false;
  std::unique_ptr<CoordinatorDp> dp_;
  // Appends the dp.count block to upload_ when DP is on.
  void AddDpShape();
  // The round after which Run stops (the privacy budget); 0 = none.
  uint32_t stop_after_ = 0;
  std::string stop_reason_;
};

}  // namespace fedrec
