// What the aggregation schemes of coordinator/aggregation_scheme.h share:
// merging evaluation sums, filling the strategy's input from a decoded
// encrypted sum, the cost of an encrypted round, and SecAgg's secure sum
// (which Paillier's evaluation also uses). Internal to coordinator/.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "coordinator/aggregation_scheme.h"
#include "crypto/secagg.h"

namespace fedrec {

// The evaluation sums of a report (one site's, or the secure total), with
// its tasks labelled by `tasks`. REQUIRES: the report fits the layout of
// `tasks` (CheckEvalReport).
EvalSums SumsOfReport(const EvalReport& report, const std::vector<TaskSpec>& tasks);
// Adds an evaluation's sums to the round's.
void MergeSums(const EvalSums& sums, RoundMetrics* metrics);
void MergeReport(const EvalReport& report, const std::vector<TaskSpec>& tasks,
                 RoundMetrics* metrics);

// What the strategy gets from an encrypted round: the decoded sums over
// `summed` (ascending) out of `selected` sites.
void FillEncryptedInput(uint32_t round, DecodedSums decoded, const std::vector<uint32_t>& summed,
                        size_t selected, AggregateInput* input);

// What an encrypted round costs beyond the updates themselves: the traffic
// since the plan went out and the coordinator's own protocol work; written to
// the round's metrics when it ends, completed or aborted.
class SecureRoundCost {
 public:
  SecureRoundCost(Transport* transport, const char* scheme, uint32_t round, RoundMetrics* metrics)
      : transport_(transport),
        scheme_(scheme),
        round_(round),
        metrics_(metrics),
        start_(transport->stats()) {}

  // Runs `step`, counting its time as the coordinator's work.
  template <typename Step>
  auto Timed(Step&& step) {
    const auto t0 = std::chrono::steady_clock::now();
    auto result = step();
    busy_ += std::chrono::steady_clock::now() - t0;
    return result;
  }

  void Record() const;
  // Ends the round with the model unchanged (too few sites remained, or a
  // step failed); returns OK, as the job goes on.
  Status Abort(const Status& status) const;

 private:
  Transport* transport_;
  const char* scheme_;
  uint32_t round_;
  RoundMetrics* metrics_;
  TrafficStats start_;
  std::chrono::steady_clock::duration busy_{};
};

// Steps 1-6 of secure aggregation (crypto/secagg.h) once the plan or
// request is out: the unmasked sum, or nullopt when the round aborted
// (recorded in `cost`); an error only when the transport failed.
// `survivors`: the sites summed.
// `sharded`: the shard servers (announced already) sum the masked inputs'
// slices and unmask them with the masks the coordinator gives them.
Result<std::optional<std::vector<uint64_t>>> SecureSum(const SchemeContext& context,
                                                       secagg::Params params, SecureRoundCost* cost,
                                                       std::vector<uint32_t>* survivors,
                                                       bool sharded = false);

// An evaluation whose metric sums are added by secure aggregation (under its
// own round label, EvalSecAggRound): the coordinator sees only the totals
// over the sites that finished it. The SecAgg and Paillier schemes' Evaluate.
Status SecureEvaluate(const SchemeContext& context, uint32_t round, uint64_t version,
                      const std::vector<uint32_t>& sites, RoundMetrics* metrics);

// Sharded aggregation (CoordinatorOptions::shard_ranks not empty).
// Tells every shard server of the round (`announce` with each one's shard
// index filled in) and sets the plan's shard ranks.
Status AnnounceShards(const SchemeContext& context, ShardRound announce, RoundPlan* plan);
// Sends `close` to every shard server and gathers their answers, in shard
// order. Aborted (the round keeps its model) when a shard answered with an
// error; Timeout when one did not answer within the round timeout (real
// time: shard servers are the job's own processes); other errors are the
// transport's.
Result<std::vector<ShardSums>> CloseShards(const SchemeContext& context, const ShardClose& close);

std::unique_ptr<CoordinatorScheme> MakePlainScheme(SchemeContext context);
std::unique_ptr<CoordinatorScheme> MakeSecAggScheme(SchemeContext context);
std::unique_ptr<CoordinatorScheme> MakePaillierScheme(SchemeContext context);

}  // namespace fedrec
