#include "coordinator/coordinator.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <utility>

#include "coordinator/aggregator.h"

namespace fedrec {

namespace {

using Clock = std::chrono::steady_clock;

// Receives the answers of `sites` to one request of `round`: a message of type
// M or a SiteError from each, until all answered or `deadline` passed. Frames of
// other rounds or types, and frames that do not decode, are logged and dropped.
// `on_reply(site, message)` and `on_failure(site, reason)` are called once per
// site at most; sites still silent at the deadline get on_failure too.
template <typename M, typename OnReply, typename OnFailure>
Status Collect(Transport* transport, const std::map<int, uint32_t>& site_of_rank, uint32_t round,
               const std::vector<uint32_t>& sites, Clock::time_point deadline, OnReply on_reply,
               OnFailure on_failure) {
  std::set<uint32_t> waiting(sites.begin(), sites.end());
  while (!waiting.empty()) {
    const auto now = Clock::now();
    if (now >= deadline) break;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
    Result<Envelope> envelope = transport->Recv(
        std::min(left + std::chrono::milliseconds(1), std::chrono::milliseconds(1000)));
    if (!envelope.ok()) {
      if (envelope.status().code() == Status::Code::kTimeout) continue;
      return envelope.status().WithContext("coordinator, round " + std::to_string(round));
    }
    auto site_it = site_of_rank.find(envelope->from);
    Result<FrameView> frame = DecodeFrame(envelope->bytes);
    if (!frame.ok()) {
      spdlog::warn("coordinator, round {}: dropped a frame from rank {}: {}", round, envelope->from,
                   frame.status().message());
      continue;
    }
    if (site_it == site_of_rank.end()) {
      spdlog::warn("coordinator, round {}: dropped {} from rank {}, which is not a site", round,
                   MessageTypeName(frame->header.type), envelope->from);
      continue;
    }
    const uint32_t site = site_it->second;
    if (frame->header.round != round || !waiting.contains(site)) {
      spdlog::warn(
          "coordinator, round {}: dropped a late or unexpected {} of round {} from site {}", round,
          MessageTypeName(frame->header.type), frame->header.round, site);
      continue;
    }
    if (frame->header.type == MessageType::kSiteError) {
      Result<SiteError> error = DecodeMessage<SiteError>(*frame);
      waiting.erase(site);
      on_failure(site, error.ok() ? error->message : error.status().message());
      continue;
    }
    if (frame->header.type != M::kType) {
      spdlog::warn("coordinator, round {}: dropped {} from site {}, expected {}", round,
                   MessageTypeName(frame->header.type), site, MessageTypeName(M::kType));
      continue;
    }
    Result<M> message = DecodeMessage<M>(*frame);
    waiting.erase(site);
    if (!message.ok()) {
      on_failure(site, message.status().message());
      continue;
    }
    on_reply(site, std::move(message).value());
  }
  for (uint32_t site : waiting) {
    on_failure(site, std::string("no ") + MessageTypeName(M::kType) + " before the round timeout");
  }
  return Status::Ok();
}

}  // namespace

Coordinator::Coordinator(const CoordinatorOptions& options, std::vector<ParamBlock> initial_global,
                         std::unique_ptr<Strategy> strategy, Transport* transport)
    : options_(options),
      global_(std::move(initial_global)),
      strategy_(std::move(strategy)),
      transport_(transport),
      site_version_(options.site_ranks.size(), UINT64_MAX) {
  for (uint32_t s = 0; s < options_.site_ranks.size(); ++s)
    site_of_rank_[options_.site_ranks[s]] = s;
}

std::string Coordinator::SiteName(uint32_t site) const {
  return "site " + std::to_string(site) + " (rank " + std::to_string(options_.site_ranks[site]) +
         ")";
}

template <typename M>
Status Coordinator::SendWithModel(M* message, const std::vector<uint32_t>& sites, uint32_t round) {
  const uint32_t rank = static_cast<uint32_t>(transport_->rank());
  for (uint32_t site : sites) {
    message->includes_model = site_version_[site] != version_;
    message->model = message->includes_model ? global_ : std::vector<ParamBlock>{};
    FEDREC_RETURN_IF_ERROR(
        transport_->Send(options_.site_ranks[site], EncodeMessage(*message, round, rank)));
    site_version_[site] = version_;
  }
  return Status::Ok();
}

Status Coordinator::RunRound(uint32_t round, RoundMetrics* metrics) {
  const uint32_t num_sites = static_cast<uint32_t>(options_.site_ranks.size());
  const std::vector<uint32_t> selected =
      strategy_->SelectSites(round, num_sites, options_.fraction, options_.seed);
  metrics->sites_selected = static_cast<uint32_t>(selected.size());

  RoundPlan plan;
  plan.round = round;
  plan.model_version = version_;
  plan.local_epochs = options_.local_epochs;
  plan.epoch_offset = static_cast<uint64_t>(round - 1) * options_.local_epochs;
  plan.lr = options_.lr;
  FEDREC_RETURN_IF_ERROR(SendWithModel(&plan, selected, round));

  UpdateAggregator aggregator(global_, version_, round, selected);
  const auto deadline = Clock::now() + options_.round_timeout;
  FEDREC_RETURN_IF_ERROR(Collect<ModelUpdate>(
      transport_, site_of_rank_, round, selected, deadline,
      [&](uint32_t site, ModelUpdate update) {
        if (Status added = aggregator.Add(site, std::move(update)); !added.ok()) {
          spdlog::warn("coordinator: {} {}", SiteName(site), added.message());
          site_version_[site] = UINT64_MAX;
        }
      },
      [&](uint32_t site, const std::string& reason) {
        spdlog::warn("coordinator, round {}: {} failed: {}", round, SiteName(site), reason);
        aggregator.Fail(site);
        site_version_[site] = UINT64_MAX;  // resend the model next time
      }));
  const AggregateInput input = aggregator.Finish();
  metrics->failures = input.failures;
  metrics->sites_reported = input.sites;
  metrics->train_mse = aggregator.train_count() ? aggregator.train_squared_error() /
                                                      static_cast<double>(aggregator.train_count())
                                                : 0.0;

  if (input.sites < std::max<uint32_t>(options_.min_sites, 1)) {
    metrics->aborted = true;
    spdlog::warn(
        "coordinator, round {}: aborted, {} of {} selected sites reported (need {}); "
        "the model is unchanged",
        round, input.sites, selected.size(), options_.min_sites);
    return Status::Ok();
  }
  FEDREC_RETURN_IF_ERROR(strategy_->Aggregate(input, &global_)
                             .WithContext("coordinator, round " + std::to_string(round)));
  for (const ParamBlock& block : global_) {
    for (size_t i = 0; i < block.data.size(); ++i) {
      if (std::isfinite(block.data[i])) continue;
      return Status::Aborted("coordinator, round " + std::to_string(round) +
                             ": training diverged: block '" + block.name + "' entry " +
                             std::to_string(i) + " became " + std::to_string(block.data[i]) +
                             " after aggregation; lower train.lr or " + "federation.server_lr");
    }
  }
  ++version_;
  return Status::Ok();
}

Status Coordinator::Evaluate(uint32_t round, RoundMetrics* metrics) {
  const uint32_t num_sites = static_cast<uint32_t>(options_.site_ranks.size());
  std::vector<uint32_t> sites(num_sites);
  for (uint32_t s = 0; s < num_sites; ++s) sites[s] = s;
  EvalRequest request;
  request.round = round;
  request.model_version = version_;
  FEDREC_RETURN_IF_ERROR(SendWithModel(&request, sites, round));

  std::vector<std::optional<EvalReport>> reports(num_sites);
  FEDREC_RETURN_IF_ERROR(Collect<EvalReport>(
      transport_, site_of_rank_, round, sites, Clock::now() + options_.round_timeout,
      [&](uint32_t site, EvalReport report) { reports[site] = std::move(report); },
      [&](uint32_t site, const std::string& reason) {
        spdlog::warn("coordinator, round {}: evaluation at {} failed: {}", round, SiteName(site),
                     reason);
        site_version_[site] = UINT64_MAX;
      }));
  for (const auto& report : reports) {  // site order: fixed summation order
    if (!report) continue;
    metrics->test.Merge(ErrorSums{report->squared_error, report->absolute_error, report->count});
    metrics->ranking.Merge(RankingSums{report->precision, report->recall, report->ndcg,
                                       report->hit_rate, report->ranked_users});
  }
  metrics->evaluated = true;
  return Status::Ok();
}

Status Coordinator::Run(const std::function<void(const RoundMetrics&)>& on_round) {
  if (options_.site_ranks.empty()) {
    ShutdownSites("no sites", true);
    return Status::InvalidArgument("coordinator: the federation has no sites");
  }
  Status status;
  for (uint32_t round = 1; round <= options_.rounds && status.ok(); ++round) {
    const auto start = Clock::now();
    const TrafficStats before = transport_->stats();
    RoundMetrics metrics;
    metrics.round = round;
    status = RunRound(round, &metrics);
    const bool last = round == options_.rounds;
    if (status.ok() && (last || (options_.eval_every > 0 && round % options_.eval_every == 0))) {
      status = Evaluate(round, &metrics);
    }
    const TrafficStats after = transport_->stats();
    metrics.bytes_sent = after.bytes_sent - before.bytes_sent;
    metrics.bytes_received = after.bytes_received - before.bytes_received;
    metrics.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    if (status.ok() && on_round) on_round(metrics);
  }
  ShutdownSites(status.ok() ? "training finished" : status.message(), !status.ok());
  return status;
}

void Coordinator::ShutdownSites(const std::string& reason, bool failed) {
  Shutdown shutdown{reason};
  shutdown.failed = failed;
  const uint32_t rank = static_cast<uint32_t>(transport_->rank());
  for (int site_rank : options_.site_ranks) {
    Status sent = transport_->Send(site_rank, EncodeMessage(shutdown, 0, rank));
    if (!sent.ok())
      spdlog::debug("coordinator: shutdown of rank {}: {}", site_rank, sent.message());
  }
}

}  // namespace fedrec
