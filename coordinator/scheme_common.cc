#include "coordinator/scheme_common.h"

#include <spdlog/spdlog.h>

namespace fedrec {

void MergeReport(const EvalReport& report, RoundMetrics* metrics) {
  metrics->test.Merge(ErrorSums{report.squared_error, report.absolute_error, report.count});
  RankingSums ranking;
  ranking.precision = report.precision;
  ranking.recall = report.recall;
  ranking.ndcg = report.ndcg;
  ranking.hit_rate = report.hit_rate;
  ranking.f1 = report.f1;
  ranking.map = report.map;
  ranking.users = report.ranked_users;
  ranking.recommended = report.recommended;
  metrics->ranking.Merge(ranking);
}

void FillEncryptedInput(uint32_t round, DecodedSums decoded, const std::vector<uint32_t>& summed,
                        size_t selected, AggregateInput* input) {
  input->round = round;
  input->weighted_sum = std::move(decoded.weighted_sum);
  input->row_weight = std::move(decoded.row_weight);
  input->sites = static_cast<uint32_t>(summed.size());
  input->failures = static_cast<uint32_t>(selected - summed.size());
}

void SecureRoundCost::Record() const {
  const TrafficStats end = transport_->stats();
  metrics_->secure_bytes =
      (end.bytes_sent - start_.bytes_sent) + (end.bytes_received - start_.bytes_received);
  metrics_->secure_seconds = std::chrono::duration<double>(busy_).count();
}

Status SecureRoundCost::Abort(const Status& status) const {
  Record();
  metrics_->aborted = true;
  metrics_->abort_reason = status.message();
  spdlog::warn("coordinator, round {}: {} aborted, the model is unchanged: {}", round_, scheme_,
               status.message());
  return Status::Ok();
}

std::unique_ptr<CoordinatorScheme> MakeCoordinatorScheme(Aggregation kind, SchemeContext context) {
  switch (kind) {
    case Aggregation::kSecAgg:
      return MakeSecAggScheme(std::move(context));
    case Aggregation::kPaillier:
      return MakePaillierScheme(std::move(context));
    case Aggregation::kNone:
      break;
  }
  return MakePlainScheme(std::move(context));
}

}  // namespace fedrec
