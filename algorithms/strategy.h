// Strategy: the aggregation algorithm, a plug-in registered by name.
//
// A strategy does the three things the coordinator asks of it each round, and
// no I/O:
//   ConfigureRound  which sites take part, and what each is asked to do
//                   (local epochs, learning rate, proximal term);
//   Aggregate       the next global model from what the round produced: the
//                   sums of the sites' updates, the sites that reported and
//                   the ones that failed (keeping the model is a valid answer);
//   OnEvaluated     the round's evaluation, for strategies that adapt to it.
// Its state (momentum, optimizer moments, counters) is a StrategyState,
// written with the final model to the run directory (strategy.json).
//
// Linear strategies (the FedAvg family and the server optimizers) only need
// the per-row *sums* of the sites' weighted values, which is all the
// coordinator learns under secure aggregation, so they work under every
// scheme. A strategy that needs each site's update in the clear (median,
// trimmed mean, Krum) says so, and combining it with secure aggregation is
// refused with an error naming both settings.
//
// Adding a strategy: one Strategy subclass and one StrategyRegistry::Register
// call, in the tree or in a plug-in library (docs/plugins.md).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/param_block.h"
#include "base/param_keys.h"
#include "base/status.h"

namespace fedrec {

// What one site is asked to do in a round.
struct SiteInstructions {
  uint32_t local_epochs = 1;
  float lr = 0.01f;          // base learning rate (of global epoch 0)
  float proximal_mu = 0.0f;  // FedProx: (mu/2)||w - w_round||^2 on the global rows
};

// One site's update in the clear (only for strategies that need individual
// updates, under security.aggregation = "none"), per upload block: row
// weights (0 for rows it did not train) and values, row-major (0 in rows it
// did not train).
struct SiteUpdate {
  uint32_t site = 0;
  std::vector<std::vector<double>> weight;  // [block][row]
  std::vector<std::vector<float>> values;   // [block][row * cols + c]
};

// What the coordinator learnt from the sites of one round: for each global block
// (same order as the model), the per-row sums over sites s of w_{s,r} and of
// w_{s,r} * value_{s,r,c}, where value is the site's locally trained parameter
// and w its weight for that row (its training interactions of the row).
struct AggregateInput {
  uint32_t round = 0;
  std::vector<std::vector<double>> weighted_sum;  // [block][row * cols + c]
  std::vector<std::vector<double>> row_weight;    // [block][row]
  uint32_t sites = 0;                             // sites whose update is in the sums
  uint32_t failures = 0;                          // selected sites that failed or timed out
  std::vector<uint32_t> failed;                   // their ids, ascending (when known)
  // Each reporting site's update, ascending by site: filled only for
  // strategies that NeedsIndividualUpdates().
  std::vector<SiteUpdate> updates;
};

// A strategy's state between rounds: named vectors and scalars.
struct StrategyState {
  std::map<std::string, std::vector<double>> vectors;
  std::map<std::string, double> scalars;
  friend bool operator==(const StrategyState&, const StrategyState&) = default;
};

// Options every strategy reads; a strategy's own keys are in `params`
// ("strategy.<name>.<key>" in the configuration, stored under "<key>").
struct StrategyOptions {
  uint64_t seed = 1;
  double fraction = 1.0;          // share of the sites sampled per round
  uint32_t min_sites = 1;         // fewest sites a round samples (when that many are available)
  uint32_t min_available = 1;     // fewer available sites than this: the round is skipped
  bool accept_failures = true;    // false: a round with a failed site keeps the model
  double server_lr = 1.0;         // step toward the sites' average: 1 = plain FedAvg
  SiteInstructions instructions;  // what every site is asked by default
  // > instructions.local_epochs: each site's epochs of a round are drawn
  // uniformly from [local_epochs, local_epochs_max] (heterogeneous local
  // work), stream (seed, round, site, kLocalEpochs); 0: all the same.
  uint32_t local_epochs_max = 0;
  std::map<std::string, double> params;

  // params[key]. REQUIRES: the key is declared by the strategy (the registry
  // fills in declared defaults).
  double Param(const std::string& key) const;
};

// The coordinator's view when a round starts.
struct RoundContext {
  uint32_t round = 0;                   // 1-based
  uint32_t num_sites = 0;               // registered sites
  std::span<const uint32_t> available;  // sites believed available, ascending
};

// A round's sites and their instructions.
struct RoundConfig {
  std::vector<uint32_t> sites;    // ascending; empty = skip the round
  SiteInstructions instructions;  // for every site not in per_site
  std::map<uint32_t, SiteInstructions> per_site;
  std::string skip_reason;  // why the round is skipped (sites empty)

  const SiteInstructions& For(uint32_t site) const {
    auto it = per_site.find(site);
    return it == per_site.end() ? instructions : it->second;
  }
};

// A round's evaluation, as the coordinator reports it.
struct EvaluationSummary {
  uint32_t round = 0;
  double rmse = 0.0;  // 0 when the model does not predict ratings
  double mae = 0.0;
  uint64_t count = 0;  // test interactions
};

class Strategy {
 public:
  explicit Strategy(StrategyOptions options) : options_(std::move(options)) {}
  virtual ~Strategy() = default;
  virtual std::string_view name() const = 0;
  const StrategyOptions& options() const { return options_; }

  // True when the rule needs each site's update in the clear (median, Krum...).
  virtual bool NeedsIndividualUpdates() const { return false; }

  // True for strategies with control variates (below); the model must
  // SupportsControlVariates().
  virtual bool UsesControlVariates() const { return false; }
  // SCAFFOLD-style control variates: the strategy's server control c, one
  // block per kGlobal block of `upload` (same name and shape), sent to the
  // sites with every plan; the sites upload their change of c_i as the
  // ControlShapes(upload) blocks after the model's, with weight 1 for every
  // row they trained. nullptr (the default): none.
  virtual const std::vector<ParamBlock>* ControlVariates(const std::vector<ParamBlock>& upload) {
    (void)upload;
    return nullptr;
  }

  // True for FedNova-style normalized averaging: each site uploads, per row
  // it trained, x + (y - x) / (epsilon w) with weight w (its visits per
  // epoch; epsilon its epochs at its starting rate, in units the plan
  // names), and after the model's the StepShapes(upload) blocks holding
  // epsilon and 1 / w with weight w. The model must CountsLocalSteps().
  virtual bool NormalizesUpdates() const { return false; }

  // The round's sites and instructions. Default: a uniform sample of the
  // available sites, fraction * num_sites of them (at least min_sites, at most
  // all available) from stream (seed, round, 0, kSample); every site gets
  // options().instructions, with its own local epochs when
  // local_epochs_max asks for heterogeneous work. Skips the round when fewer than min_available
  // sites are available.
  virtual RoundConfig ConfigureRound(const RoundContext& context);

  // Forms the next global model in place from the round's sums (and, for
  // strategies that need them, individual updates). Rows with zero total
  // weight keep their value. Error when the input does not match the model.
  // Aborted, with `global` untouched, when the strategy refuses the round's
  // input (too few sites for its rule): the coordinator keeps the model,
  // reports the round aborted with the message, and the job goes on.
  virtual Status Aggregate(const AggregateInput& input, std::vector<ParamBlock>* global) = 0;

  // The round's evaluation (default: nothing).
  virtual void OnEvaluated(const EvaluationSummary& /*summary*/) {}

  // State for checkpoints; Restore accepts what State returned, and refuses
  // anything else with what was expected and found.
  virtual StrategyState State() const { return {}; }
  virtual Status Restore(const StrategyState& state);

  // Uniform sample of `want` of `count` indices, ascending, from stream
  // (seed, round, 0, kSample): partial Fisher-Yates.
  static std::vector<uint32_t> Sample(uint32_t count, uint32_t want, uint64_t seed, uint32_t round);

 protected:
  StrategyOptions options_;
};

// Checks that `input` matches the shapes of `global` followed by `extra`
// blocks (e.g. control variates); the error names the strategy and the first
// block that differs.
Status CheckAggregateShape(std::string_view strategy, const AggregateInput& input,
                           const std::vector<ParamBlock>& global,
                           const std::vector<ParamBlock>& extra = {});

// The upload blocks of control-variate changes for upload blocks `upload`:
// one per kGlobal block, named "<name>.control", same shape.
std::vector<ParamBlock> ControlShapes(const std::vector<ParamBlock>& upload);

// FedNova's upload blocks for upload blocks `upload`: one per kGlobal block,
// named "<name>.steps", same rows, two columns (epsilon, 1 / w).
std::vector<ParamBlock> StepShapes(const std::vector<ParamBlock>& upload);

// What the sites of `strategy` upload after the model's blocks `upload`:
// ControlShapes, StepShapes or nothing.
std::vector<ParamBlock> SiteExtraShapes(const Strategy& strategy,
                                        const std::vector<ParamBlock>& upload);

// The per-row sites' average avg_r = weighted_sum_r / row_weight_r of every
// row with positive weight, handed to `visit(block, row, avg)` (avg has
// block.cols values). Blocks of scope kGlobalAverage are replaced by their
// average here and not visited.
void ForEachAveragedRow(
    const AggregateInput& input, std::vector<ParamBlock>* global,
    const std::function<void(size_t block, uint32_t row, std::span<const double> avg)>& visit);

// One strategy-specific configuration key: strategy.<name>.<key>.
using StrategyKey = ParamKey;

using StrategyFactory =
    std::function<Result<std::unique_ptr<Strategy>>(const StrategyOptions& options)>;

struct StrategyInfo {
  std::string name;
  std::string doc;  // one line
  std::vector<StrategyKey> keys;
  StrategyFactory create;
};

class StrategyRegistry {
 public:
  // A registry holding the built-in strategies.
  static StrategyRegistry WithBuiltins();
  void Register(StrategyInfo info);
  // Fills in defaults of the strategy's keys absent from options.params and
  // creates it. Errors: unknown name (listing the registered ones), a key the
  // strategy does not declare, or the strategy's refusal of its options.
  Result<std::unique_ptr<Strategy>> Create(const std::string& name, StrategyOptions options) const;
  const StrategyInfo* Find(const std::string& name) const;
  std::vector<std::string> Names() const;

 private:
  std::map<std::string, StrategyInfo> strategies_;
};

// Registration of the built-ins, one per file.
void RegisterLinearStrategies(StrategyRegistry* registry);  // fedavg, fedavgm, fedprox, fedadagrad,
                                                            // fedadam, fedyogi, scaffold, fednova
void RegisterRobustStrategies(
    StrategyRegistry* registry);  // fedmedian, fedtrimmedavg, krum, multikrum

}  // namespace fedrec
