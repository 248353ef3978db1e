#include "coordinator/scheme_common.h"

#include <spdlog/spdlog.h>

namespace fedrec {

namespace {

template <typename Group>
GroupSums GroupOf(const Group& g, const std::vector<TaskEvalSums>& tasks,
                  const std::vector<TaskSpec>& specs) {
  GroupSums out;
  out.errors = ErrorSums{g.squared_error, g.absolute_error, g.count};
  out.ranking.precision = g.precision;
  out.ranking.recall = g.recall;
  out.ranking.ndcg = g.ndcg;
  out.ranking.hit_rate = g.hit_rate;
  out.ranking.f1 = g.f1;
  out.ranking.map = g.map;
  out.ranking.users = g.ranked_users;
  out.tasks.resize(specs.size());
  for (size_t t = 0; t < specs.size() && t < tasks.size(); ++t) {
    TaskSums& k = out.tasks[t];
    k.spec = specs[t];
    if (specs[t].kind == TaskKind::kRating) {
      k.errors = ErrorSums{tasks[t].squared_error, tasks[t].absolute_error, tasks[t].count};
    } else {
      k.binary.log_loss = tasks[t].log_loss;
      k.binary.count = tasks[t].count;
      k.binary.positives = tasks[t].positives;
      k.binary.negatives = tasks[t].negatives;
    }
  }
  return out;
}

}  // namespace

EvalSums SumsOfReport(const EvalReport& report, const std::vector<TaskSpec>& tasks) {
  EvalSums sums;
  sums.all = GroupOf(report, report.tasks, tasks);
  sums.all.ranking.recommended = report.recommended;
  sums.warm_cold = report.groups.size() == 2;
  if (sums.warm_cold) {
    sums.warm = GroupOf(report.groups[0], report.groups[0].tasks, tasks);
    sums.cold = GroupOf(report.groups[1], report.groups[1].tasks, tasks);
  }
  return sums;
}

void MergeSums(const EvalSums& sums, RoundMetrics* metrics) {
  metrics->test.Merge(sums.all.errors);
  metrics->ranking.Merge(sums.all.ranking);
  if (metrics->tasks.empty()) {
    metrics->tasks = sums.all.tasks;
  } else {
    for (size_t t = 0; t < metrics->tasks.size() && t < sums.all.tasks.size(); ++t)
      metrics->tasks[t].Merge(sums.all.tasks[t]);
  }
  if (sums.warm_cold) {
    metrics->warm_cold = true;
    metrics->warm.Merge(sums.warm);
    metrics->cold.Merge(sums.cold);
  }
}

void MergeReport(const EvalReport& report, const std::vector<TaskSpec>& tasks,
                 RoundMetrics* metrics) {
  MergeSums(SumsOfReport(report, tasks), metrics);
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
    FEDREC_RETURN_IF_ERROR(
        transport.Send(rank, EncodeMessage(close, round, static_cast<uint32_t>(transport.rank()))));
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
    Result<FrameView> frame = DecodeFrame(*envelope);
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
