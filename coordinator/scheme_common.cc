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

Status AnnounceShards(const SchemeContext& context, ShardRound announce, RoundPlan* plan) {
  const std::vector<int>& ranks = context.options->shard_ranks;
  const SiteLink& link = *context.link;
  announce.shards = static_cast<uint32_t>(ranks.size());
  announce.site_ranks.clear();
  for (uint32_t site : announce.sites) announce.site_ranks.push_back(link.rank_of(site));
  Transport& transport = *link.transport();
  for (uint32_t s = 0; s < ranks.size(); ++s) {
    announce.shard = s;
    FEDREC_RETURN_IF_ERROR(transport.Send(
        ranks[s],
        EncodeMessage(announce, announce.round, static_cast<uint32_t>(transport.rank()))));
  }
  plan->shard_ranks.assign(ranks.begin(), ranks.end());
  return Status::Ok();
}

Result<std::vector<ShardSums>> CloseShards(const SchemeContext& context, const ShardClose& close) {
  const std::vector<int>& ranks = context.options->shard_ranks;
  Transport& transport = *context.link->transport();
  const uint32_t round = close.round;
  const std::string where = "coordinator, round " + std::to_string(round);
  for (int rank : ranks) {
    FEDREC_RETURN_IF_ERROR(transport.Send(
        rank, EncodeMessage(close, round, static_cast<uint32_t>(transport.rank()))));
  }
  std::vector<std::optional<ShardSums>> answers(ranks.size());
  size_t missing = ranks.size();
  const auto deadline = std::chrono::steady_clock::now() + context.options->round_timeout;
  while (missing > 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      std::string silent;
      for (size_t s = 0; s < ranks.size(); ++s)
        if (!answers[s]) silent += (silent.empty() ? "" : ", ") + std::to_string(ranks[s]);
      return Status::Timeout(where + ": no slice sums from the shard server(s) at rank(s) " +
                             silent + " within the round timeout");
    }
    Result<Envelope> envelope = transport.Recv(std::min(left, std::chrono::milliseconds(1000)));
    if (!envelope.ok()) {
      if (envelope.status().code() == Status::Code::kTimeout) continue;
      return envelope.status().WithContext(where);
    }
    const auto shard = std::find(ranks.begin(), ranks.end(), envelope->from);
    Result<FrameView> frame = DecodeFrame(envelope->bytes);
    if (shard == ranks.end() || !frame.ok() || frame->header.type != MessageType::kShardSums ||
        frame->header.round != round) {
      spdlog::debug("{}: dropped a frame from rank {} while waiting for the shard servers", where,
                    envelope->from);
      continue;
    }
    const size_t s = static_cast<size_t>(shard - ranks.begin());
    Result<ShardSums> sums = DecodeMessage<ShardSums>(*frame);
    if (!sums.ok()) return sums.status().WithContext(where + ", shard server " + std::to_string(s));
    if (!sums->error.empty()) return Status::Aborted(sums->error);
    if (sums->shard != s) {
      return Status::Aborted(where + ": the shard server at rank " + std::to_string(ranks[s]) +
                             " answered as shard " + std::to_string(sums->shard) + ", expected " +
                             std::to_string(s));
    }
    if (!answers[s]) --missing;
    answers[s] = std::move(sums).value();
  }
  std::vector<ShardSums> out;
  for (auto& answer : answers) out.push_back(std::move(*answer));
  return out;
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
