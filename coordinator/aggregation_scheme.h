// The coordinator's part of an aggregation scheme: how a round's updates
// (and an evaluation's metric sums) reach the coordinator as sums. One
// implementation per scheme, so the round loop (Coordinator::RunRound) is
// written once:
//   none      sites send their updates in the clear; the coordinator folds
//             them into per-row sums in site order (coordinator/aggregator.h)
//   secagg    SecAgg / SecAgg+ (crypto/secagg.h): the coordinator learns
//             only the sum of the masked fixed-point updates
//   paillier  threshold Paillier (crypto/paillier_round.h): it adds
//             ciphertexts and a threshold of sites decrypts the sum
// The site's part is in the Worker (worker/worker.h).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string_view>
#include <vector>

#include "algorithms/strategy.h"
#include "base/param_block.h"
#include "base/status.h"
#include "coordinator/coordinator.h"
#include "coordinator/site_link.h"
#include "crypto/update_codec.h"
#include "protocol/messages.h"

namespace fedrec {

// What a scheme may use of the coordinator.
struct SchemeContext {
  const CoordinatorOptions* options = nullptr;
  SiteLink* link = nullptr;
  // The shapes of a site's upload: the model's, then the strategy's extra
  // blocks (SiteExtraShapes).
  const std::vector<ParamBlock>* upload = nullptr;
  // The fixed-point format of encrypted updates (the configured one, widened
  // by the model for statistics); ring_bits is chosen per round.
  FixedPointFormat format;
  // Send a plan or an evaluation request to `sites`, each with the global
  // model when it does not hold the current version.
  std::function<Status(RoundPlan*, const std::vector<uint32_t>&)> send_plan;
  std::function<Status(EvalRequest*, const std::vector<uint32_t>&)> send_eval;
  // What the sites' evaluation sums hold (the model's tasks, AUC bins, warm
  // and cold groups), and the tasks they are reported under.
  EvalLayout eval_layout;
  std::vector<TaskSpec> eval_tasks;
};

class CoordinatorScheme {
 public:
  virtual ~CoordinatorScheme() = default;
  virtual Aggregation kind() const = 0;

  // Whether a round's evaluation can ride on the next round's sum
  // (CoordinatorOptions::eval_with_next_round).
  virtual bool CarriesEvaluation() const { return false; }

  // Completes `plan` with the scheme's parameters, sends it to `selected` and
  // gathers their updates into `input` (sums, sites summed, failures) and the
  // training loss into metrics->train_mse. `individual`: the strategy needs
  // each site's update (only the plain scheme can give them). With
  // `evaluate_previous` (only when CarriesEvaluation()) the sites evaluate
  // the plan's model first and its sums, added alongside, go there. A round
  // that ends early (too few sites) sets metrics->aborted and returns OK; an
  // error means the transport failed.
  virtual Status Round(RoundPlan plan, const std::vector<uint32_t>& selected, bool individual,
                       RoundMetrics* metrics, AggregateInput* input,
                       RoundMetrics* evaluate_previous) = 0;

  // Evaluates model `version` at `sites`: merges the sums into `metrics` and
  // sets metrics->evaluated (left unset when too few sites finished).
  virtual Status Evaluate(uint32_t round, uint64_t version, const std::vector<uint32_t>& sites,
                          RoundMetrics* metrics) = 0;
};

// The scheme of `kind`, on `context` (which must outlive it).
std::unique_ptr<CoordinatorScheme> MakeCoordinatorScheme(Aggregation kind, SchemeContext context);

}  // namespace fedrec
