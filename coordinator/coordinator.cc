#include "coordinator/coordinator.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <set>
#include <thread>
#include <type_traits>
#include <utility>

#include "base/random.h"
#include "coordinator/aggregator.h"
#include "protocol/paillier.h"
#include "protocol/paillier_round.h"
#include "protocol/secagg.h"

namespace fedrec {

namespace {

using SteadyClock = std::chrono::steady_clock;

}  // namespace

// Receives the answers of `sites` to one request of `round`: a message of type
// M or a SiteError from each, until all answered, the deadline (now +
// round_timeout on the clock) passed, or (virtual clock) nothing more can
// arrive. Frames of other rounds or types, and frames that do not decode, are
// logged and dropped; any frame from a site counts as hearing from it
// (NoteHeard). `on_reply(site, message)` and `on_failure(site, reason)` are
// called once per site at most; a reply that arrived after the deadline, a
// site whose channel was refused and sites still silent at the end get
// on_failure. Silent and refused sites are marked unavailable. Afterwards the
// clock stands at the latest accepted arrival, or at the deadline when a site
// missed it: the same whatever order the frames came in.
template <typename M, typename OnReply, typename OnFailure>
Status Coordinator::Collect(uint32_t round, const std::vector<uint32_t>& sites, OnReply on_reply,
                            OnFailure on_site_failure) {
  const auto on_failure = [&](uint32_t site, const std::string& reason) {
    round_failures_.emplace(site, reason);
    on_site_failure(site, reason);
  };
  const double start = clock_->Now();
  const double deadline = start + std::chrono::duration<double>(options_.round_timeout).count();
  double latest = start;
  bool missed = false;
  std::set<uint32_t> waiting(sites.begin(), sites.end());
  const auto take_refusals = [&] {
    for (const ChannelFailure& refused : transport_->TakeChannelFailures()) {
      auto it = site_of_rank_.find(refused.peer);
      if (it == site_of_rank_.end()) continue;
      MarkUnavailable(it->second, round);
      if (waiting.erase(it->second)) on_failure(it->second, refused.reason);
    }
  };
  while (!waiting.empty()) {
    take_refusals();
    if (waiting.empty()) break;
    std::chrono::milliseconds wait(2);
    if (!clock_->is_virtual()) {
      const double left = deadline - clock_->Now();
      if (left <= 0) break;
      wait = std::min(std::chrono::milliseconds(static_cast<int64_t>(left * 1000) + 1),
                      std::chrono::milliseconds(1000));
    }
    Result<Envelope> envelope = transport_->Recv(wait);
    if (!envelope.ok() && envelope.status().code() == Status::Code::kTimeout &&
        clock_->Quiescent()) {
      // Everything the sites sent is queued here by now: one more poll, which
      // may itself send (a channel's handshake), then nothing can come.
      envelope = transport_->Recv(std::chrono::milliseconds(0));
      if (!envelope.ok() && envelope.status().code() == Status::Code::kTimeout) {
        take_refusals();
        if (clock_->Quiescent()) break;
        continue;
      }
    }
    if (!envelope.ok()) {
      if (envelope.status().code() == Status::Code::kTimeout) continue;
      return envelope.status().WithContext("coordinator, round " + std::to_string(round));
    }
    auto site_it = site_of_rank_.find(envelope->from);
    if (site_it != site_of_rank_.end()) NoteHeard(site_it->second);
    Result<FrameView> frame = DecodeFrame(envelope->bytes);
    if (!frame.ok()) {
      spdlog::warn("coordinator, round {}: dropped a frame from rank {}: {}", round, envelope->from,
                   frame.status().message());
      continue;
    }
    if (site_it == site_of_rank_.end()) {
      spdlog::warn("coordinator, round {}: dropped {} from rank {}, which is not a site", round,
                   MessageTypeName(frame->header.type), envelope->from);
      continue;
    }
    const uint32_t site = site_it->second;
    if (frame->header.type == MessageType::kSiteHello) continue;  // a probe's answer
    if (frame->header.round != round || !waiting.contains(site)) {
      spdlog::warn(
          "coordinator, round {}: dropped a late or unexpected {} of round {} from site {}", round,
          MessageTypeName(frame->header.type), frame->header.round, site);
      continue;
    }
    if (frame->header.type != MessageType::kSiteError && frame->header.type != M::kType) {
      spdlog::warn("coordinator, round {}: dropped {} from site {}, expected {}", round,
                   MessageTypeName(frame->header.type), site, MessageTypeName(M::kType));
      continue;
    }
    waiting.erase(site);
    const double arrival = clock_->ArrivalTime(*envelope);
    if (arrival > deadline) {
      missed = true;
      on_failure(site, std::string("missed the deadline: its ") +
                           MessageTypeName(frame->header.type) + " arrived at " +
                           std::to_string(arrival - start) + " s, the round timeout is " +
                           std::to_string(deadline - start) + " s");
      continue;
    }
    latest = std::max(latest, arrival);
    if (frame->header.type == MessageType::kSiteError) {
      Result<SiteError> error = DecodeMessage<SiteError>(*frame);
      on_failure(site, error.ok() ? error->message : error.status().message());
      continue;
    }
    Result<M> message = DecodeMessage<M>(*frame);
    if (!message.ok()) {
      on_failure(site, message.status().message());
      continue;
    }
    on_reply(site, std::move(message).value());
  }
  for (uint32_t site : waiting) {
    missed = true;
    MarkUnavailable(site, round);
    on_failure(site, std::string("no ") + MessageTypeName(M::kType) + " before the round timeout");
  }
  clock_->AdvanceTo(missed ? deadline : latest);
  return Status::Ok();
}

void Coordinator::MarkUnavailable(uint32_t site, uint32_t round) {
  SiteAvailability& a = availability_[site];
  if (!a.available) return;  // already waiting for it; its back-off runs on
  a.available = false;
  a.heard = false;
  a.backoff = 1;
  a.next_probe = round + 1;
}

void Coordinator::NoteHeard(uint32_t site) { availability_[site].heard = true; }

Status Coordinator::Settle(uint32_t round) {
  for (;;) {
    Result<Envelope> envelope = transport_->Recv(std::chrono::milliseconds(0));
    if (!envelope.ok() && envelope.status().code() == Status::Code::kTimeout &&
        clock_->is_virtual() && !clock_->Quiescent()) {
      envelope = transport_->Recv(std::chrono::milliseconds(2));
      if (!envelope.ok() && envelope.status().code() == Status::Code::kTimeout) continue;
    }
    if (!envelope.ok()) {
      if (envelope.status().code() == Status::Code::kTimeout) break;
      return envelope.status().WithContext("coordinator, round " + std::to_string(round));
    }
    auto it = site_of_rank_.find(envelope->from);
    if (it != site_of_rank_.end()) NoteHeard(it->second);
    spdlog::debug("coordinator, round {}: dropped a late frame from rank {}", round,
                  envelope->from);
  }
  for (const ChannelFailure& refused : transport_->TakeChannelFailures()) {
    auto it = site_of_rank_.find(refused.peer);
    if (it == site_of_rank_.end()) continue;
    spdlog::warn("coordinator, round {}: {}: {}", round, SiteName(it->second), refused.reason);
    MarkUnavailable(it->second, round);
  }
  for (SiteAvailability& a : availability_) {
    if (a.heard) a.available = true;
    a.heard = false;
  }
  return Status::Ok();
}

Status Coordinator::ProbeUnavailable(uint32_t round) {
  const uint32_t rank = static_cast<uint32_t>(transport_->rank());
  for (uint32_t site = 0; site < availability_.size(); ++site) {
    SiteAvailability& a = availability_[site];
    if (a.available || a.next_probe > round) continue;
    SiteHello probe;
    probe.site = site;
    FEDREC_RETURN_IF_ERROR(
        transport_->Send(options_.site_ranks[site], EncodeMessage(probe, round, rank)));
    a.next_probe = round + a.backoff;
    a.backoff = std::min<uint32_t>(a.backoff * 2, kMaxProbeBackoff);
  }
  return Status::Ok();
}

std::vector<uint32_t> Coordinator::AvailableSites() const {
  std::vector<uint32_t> sites;
  for (uint32_t s = 0; s < availability_.size(); ++s)
    if (availability_[s].available) sites.push_back(s);
  return sites;
}

namespace {

// Adds an evaluation's sums (one site's, or the secure total) to the round's.
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

// Training-loss sums (squared error, count) each site reported beside its
// encrypted update.
using TrainLoss = std::map<uint32_t, std::pair<double, uint64_t>>;

// What the strategy gets from an encrypted round: the decoded sums over
// `summed` (ascending), and their training loss added in site order.
void FillEncryptedInput(uint32_t round, DecodedSums decoded, const std::vector<uint32_t>& summed,
                        size_t selected, const TrainLoss& train_loss, AggregateInput* input,
                        RoundMetrics* metrics) {
  input->round = round;
  input->weighted_sum = std::move(decoded.weighted_sum);
  input->row_weight = std::move(decoded.row_weight);
  input->sites = static_cast<uint32_t>(summed.size());
  input->failures = static_cast<uint32_t>(selected - summed.size());
  double squared = 0.0;
  uint64_t count = 0;
  for (uint32_t site : summed) {
    auto it = train_loss.find(site);
    if (it == train_loss.end()) continue;
    squared += it->second.first;
    count += it->second.second;
  }
  metrics->train_mse = count ? squared / static_cast<double>(count) : 0.0;
}

}  // namespace

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
    const auto t0 = SteadyClock::now();
    auto result = step();
    busy_ += SteadyClock::now() - t0;
    return result;
  }

  void Record() const {
    const TrafficStats end = transport_->stats();
    metrics_->secure_bytes =
        (end.bytes_sent - start_.bytes_sent) + (end.bytes_received - start_.bytes_received);
    metrics_->secure_seconds = std::chrono::duration<double>(busy_).count();
  }

  // Ends the round with the model unchanged (too few sites remained, or a
  // step failed); returns OK, as the job goes on.
  Status Abort(const Status& status) const {
    Record();
    metrics_->aborted = true;
    metrics_->abort_reason = status.message();
    spdlog::warn("coordinator, round {}: {} aborted, the model is unchanged: {}", round_, scheme_,
                 status.message());
    return Status::Ok();
  }

 private:
  Transport* transport_;
  const char* scheme_;
  uint32_t round_;
  RoundMetrics* metrics_;
  TrafficStats start_;
  SteadyClock::duration busy_{};
};

Coordinator::Coordinator(const CoordinatorOptions& options, std::vector<ParamBlock> initial_global,
                         std::unique_ptr<Strategy> strategy, Transport* transport)
    : options_(options),
      global_(std::move(initial_global)),
      strategy_(std::move(strategy)),
      transport_(transport),
      clock_(options.clock ? options.clock : &real_clock_),
      availability_(options.site_ranks.size()),
      site_version_(options.site_ranks.size(), UINT64_MAX) {
  for (uint32_t s = 0; s < options_.site_ranks.size(); ++s)
    site_of_rank_[options_.site_ranks[s]] = s;
  for (const ParamBlock& b : global_) upload_.push_back(ShapeOf(b));
  AddSiteExtraShapes();
}

void Coordinator::AddSiteExtraShapes() {
  // Sites upload what their strategy adds (control-variate changes, local
  // steps) after the model's blocks.
  const std::vector<ParamBlock> model_upload(upload_.begin(), upload_.end() - extra_blocks_);
  upload_ = model_upload;
  extra_blocks_ = 0;
  for (ParamBlock& shape : SiteExtraShapes(*strategy_, model_upload)) {
    upload_.push_back(std::move(shape));
    ++extra_blocks_;
  }
}

Coordinator::Coordinator(const CoordinatorOptions& options, std::unique_ptr<Model> model,
                         std::unique_ptr<Strategy> strategy, Transport* transport)
    : Coordinator(options, model->GlobalBlocks(), std::move(strategy), transport) {
  upload_ = model->UploadShapes();
  extra_blocks_ = 0;
  AddSiteExtraShapes();
  model_ = std::move(model);
}

FixedPointFormat Coordinator::UploadFormat() const {
  FixedPointFormat format = options_.format;
  if (!model_) return format;
  const UploadRange range =
      model_->AdjustUploadRange({format.clip, format.frac_bits, format.max_weight});
  format.clip = range.clip;
  format.frac_bits = range.frac_bits;
  format.max_weight = range.max_weight;
  return format;
}

std::string Coordinator::SiteName(uint32_t site) const {
  return "site " + std::to_string(site) + " (rank " + std::to_string(options_.site_ranks[site]) +
         ")";
}

template <typename M>
Status Coordinator::SendWithModel(M* message, const std::vector<uint32_t>& sites, uint32_t round) {
  const uint32_t rank = static_cast<uint32_t>(transport_->rank());
  // The message is the same for every site but for whether it carries the
  // model and, for a round plan, the site's instructions: each variant is
  // encoded once and copied per site.
  constexpr bool kPlan = std::is_same_v<M, RoundPlan>;
  std::map<std::pair<bool, const SiteInstructions*>, std::vector<uint8_t>> frames;
  for (uint32_t site : sites) {
    const bool include = site_version_[site] != version_;
    const SiteInstructions* instructions = kPlan ? &round_config_.For(site) : nullptr;
    auto [it, added] = frames.try_emplace({include, instructions});
    if (added) {
      message->includes_model = include;
      if (include) message->model = global_;
      if constexpr (kPlan) {
        message->local_epochs = instructions->local_epochs;
        message->lr = instructions->lr;
        message->proximal_mu = instructions->proximal_mu;
      }
      it->second = EncodeMessage(*message, round, rank);
      message->model.clear();
    }
    FEDREC_RETURN_IF_ERROR(transport_->Send(options_.site_ranks[site], it->second));
    // A site that trains on the model no longer holds it unchanged.
    site_version_[site] = options_.sites_keep_model && !kPlan ? version_ : UINT64_MAX;
  }
  return Status::Ok();
}

template <typename M>
Status Coordinator::SendTo(const M& message, uint32_t site, uint32_t round) {
  return transport_->Send(options_.site_ranks[site],
                          EncodeMessage(message, round, static_cast<uint32_t>(transport_->rank())));
}

bool Coordinator::EvaluatesWithNextRound(uint32_t round) const {
  return options_.eval_with_next_round && options_.aggregation == Aggregation::kSecAgg &&
         round < options_.rounds && options_.eval_fraction == options_.fraction;
}

Status Coordinator::RunRound(uint32_t round, RoundMetrics* metrics,
                             RoundMetrics* evaluate_previous) {
  const uint32_t num_sites = static_cast<uint32_t>(options_.site_ranks.size());
  FEDREC_RETURN_IF_ERROR(Settle(round));
  FEDREC_RETURN_IF_ERROR(ProbeUnavailable(round));
  // The strategy samples among the sites believed available, the same share
  // of the whole federation as when all are.
  const std::vector<uint32_t> available = AvailableSites();
  metrics->sites_unavailable = num_sites - static_cast<uint32_t>(available.size());
  round_config_ = strategy_->ConfigureRound(RoundContext{round, num_sites, available});
  FEDREC_RETURN_IF_ERROR(CheckRoundConfig(round_config_, available)
                             .WithContext("coordinator, round " + std::to_string(round) +
                                          ": strategy " + std::string(strategy_->name())));
  const std::vector<uint32_t>& selected = round_config_.sites;
  metrics->sites_selected = static_cast<uint32_t>(selected.size());
  metrics->aggregation = AggregationName(options_.aggregation);
  if (selected.empty()) {
    metrics->aborted = true;
    metrics->abort_reason = round_config_.skip_reason.empty() ? "the strategy selected no sites"
                                                              : round_config_.skip_reason;
    spdlog::warn("coordinator, round {}: skipped, {}; the model is unchanged", round,
                 metrics->abort_reason);
    return Status::Ok();
  }

  RoundPlan plan;  // per-site instructions are filled in as it is sent (SendWithModel)
  plan.round = round;
  plan.model_version = version_;
  plan.epoch_offset = static_cast<uint64_t>(round - 1) * options_.local_epochs;
  if (strategy_->UsesControlVariates()) {
    const std::vector<ParamBlock> model_upload(upload_.begin(), upload_.end() - extra_blocks_);
    plan.control = *strategy_->ControlVariates(model_upload);
  }
  if (strategy_->NormalizesUpdates()) {
    // Local steps in units of the round's most epochs: every site's epsilon
    // stays within the fixed-point clip.
    uint32_t most = round_config_.instructions.local_epochs;
    for (const auto& [site, own] : round_config_.per_site) most = std::max(most, own.local_epochs);
    plan.steps_unit = static_cast<float>(std::max<uint32_t>(most, 1));
  }
  plan.job_id = options_.job_id;

  AggregateInput input;
  if (options_.aggregation == Aggregation::kSecAgg) {
    FEDREC_RETURN_IF_ERROR(
        SecAggRound(std::move(plan), selected, metrics, &input, evaluate_previous));
  } else if (options_.aggregation == Aggregation::kPaillier) {
    FEDREC_RETURN_IF_ERROR(PaillierRound(std::move(plan), selected, metrics, &input));
  } else {
    FEDREC_RETURN_IF_ERROR(SendWithModel(&plan, selected, round));
    UpdateAggregator aggregator(upload_, version_, round, selected,
                                strategy_->NeedsIndividualUpdates());
    FEDREC_RETURN_IF_ERROR(Collect<ModelUpdate>(
        round, selected,
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
    input = aggregator.Finish();
    metrics->train_mse =
        aggregator.train_count()
            ? aggregator.train_squared_error() / static_cast<double>(aggregator.train_count())
            : 0.0;
  }
  if (metrics->aborted) return Status::Ok();
  metrics->failures = input.failures;
  metrics->sites_reported = input.sites;
  for (const auto& [site, reason] : round_failures_) {
    if (std::binary_search(selected.begin(), selected.end(), site)) input.failed.push_back(site);
  }
  if (input.failures > 0 && !strategy_->options().accept_failures) {
    metrics->aborted = true;
    metrics->abort_reason = std::to_string(input.failures) + " of " +
                            std::to_string(selected.size()) +
                            " selected sites failed and federation.accept_failures = false";
    spdlog::warn("coordinator, round {}: {}; the model is unchanged", round, metrics->abort_reason);
    return Status::Ok();
  }

  if (input.sites < std::max<uint32_t>(options_.min_sites, 1)) {
    metrics->aborted = true;
    metrics->abort_reason = std::to_string(input.sites) + " of " + std::to_string(selected.size()) +
                            " selected sites reported (need " + std::to_string(options_.min_sites) +
                            ")";
    spdlog::warn("coordinator, round {}: aborted, {}; the model is unchanged", round,
                 metrics->abort_reason);
    return Status::Ok();
  }
  return ApplyAggregate(round, input, metrics);
}

Status Coordinator::ApplyAggregate(uint32_t round, const AggregateInput& input,
                                   RoundMetrics* metrics) {
  const Status applied = model_ ? model_->Apply(input, strategy_.get(), &global_)
                                : strategy_->Aggregate(input, &global_);
  if (applied.code() == Status::Code::kAborted) {  // refused: the model is unchanged
    metrics->aborted = true;
    metrics->abort_reason = applied.message();
    spdlog::warn("coordinator, round {}: {}; the model is unchanged", round, applied.message());
    return Status::Ok();
  }
  FEDREC_RETURN_IF_ERROR(applied.WithContext("coordinator, round " + std::to_string(round)));
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

void Coordinator::LogGraphChoice(const secagg::Params& params) const {
  const size_t n = params.sites.size();
  if (secagg::IsSparse(params)) {
    spdlog::info(
        "security.aggregation = secagg: {} sites per round, using the SecAgg+ graph ({} "
        "neighbours, threshold {}) instead of the complete graph ({} neighbours); set "
        "security.graph = \"complete\" to force it",
        n, params.degree, params.threshold, n - 1);
    return;
  }
  const Result<std::optional<secagg::GraphSize>> size =
      secagg::SparseGraphSize(static_cast<uint32_t>(n), options_.secagg.threat);
  const std::string why = size.ok() && *size
                              ? fmt::format(
                                    "the SecAgg+ graph would need {} of the {} neighbours, more "
                                    "than half",
                                    (*size)->degree, n - 1)
                              : std::string("no SecAgg+ graph meets the threat model at this size");
  spdlog::info(
      "security.aggregation = secagg: {} sites per round, using the complete graph ({} "
      "neighbours, threshold {}): {}; set security.graph = \"sparse\" to force SecAgg+",
      n, n - 1, params.threshold, why);
}

Status Coordinator::SecAggRound(RoundPlan plan, const std::vector<uint32_t>& selected,
                                RoundMetrics* metrics, AggregateInput* input,
                                RoundMetrics* evaluate_previous) {
  const uint32_t round = plan.round;
  FixedPointFormat format = UploadFormat();
  // With sites unavailable, too few may remain for secure aggregation: the
  // round then aborts (the model unchanged) instead of ending the job.
  const bool short_of_sites = metrics->sites_unavailable > 0;
  const auto too_few = [&](const Status& status) {
    if (!short_of_sites) return status;
    metrics->aborted = true;
    metrics->abort_reason = status.message();
    spdlog::warn("coordinator, round {}: aborted with {} site(s) unavailable: {}", round,
                 metrics->sites_unavailable, status.message());
    return Status::Ok();
  };
  Result<uint32_t> ring_bits = ChooseRingBits(static_cast<uint32_t>(selected.size()), format);
  if (!ring_bits.ok()) return too_few(ring_bits.status());
  format.ring_bits = *ring_bits;
  // The training loss travels masked with the update, and the previous
  // round's evaluation sums after it when they ride along (their 16-bit limbs
  // in a 32-bit ring add up exactly for up to kMaxEvalLimbSites sites).
  const bool evaluate = evaluate_previous != nullptr;
  if (evaluate && format.ring_bits == 32 && selected.size() > kMaxEvalLimbSites)
    format.ring_bits = 64;
  const std::vector<ParamBlock> shapes = WithTrainLoss(upload_);
  const uint64_t update_length = EncodedLength(shapes);
  const uint64_t eval_length = evaluate ? EvalWordsLength(options_.items, format.ring_bits) : 0;
  Result<secagg::Params> made =
      secagg::MakeParams(options_.job_id, round, selected, options_.secagg, format.ring_bits,
                         update_length + eval_length);
  if (!made.ok()) return too_few(made.status());
  secagg::Params params = std::move(made).value();
  plan.aggregation = Aggregation::kSecAgg;
  const bool sparse = secagg::IsSparse(params);
  metrics->aggregation = sparse ? "secagg+" : "secagg";
  if (options_.secagg.graph == secagg::Graph::kAuto && sparse_graph_used_ != sparse) {
    LogGraphChoice(params);
    sparse_graph_used_ = sparse;
  }
  secagg::SetPlan(params, &plan);
  SetFormat(format, &plan);
  plan.evaluate = evaluate;
  FEDREC_RETURN_IF_ERROR(SendWithModel(&plan, selected, round));

  SecureRoundCost cost(transport_, "secure aggregation", round, metrics);
  std::vector<uint32_t> survivors;
  FEDREC_ASSIGN_OR_RETURN(std::optional<std::vector<uint64_t>> sum,
                          SecureSum(std::move(params), &cost, &survivors));
  if (!sum) {  // aborted: the model stays unchanged
    metrics->failures = static_cast<uint32_t>(selected.size() - survivors.size());
    return Status::Ok();
  }
  const auto timed = [&cost](auto&& step) { return cost.Timed(step); };
  const auto abort = [&](const Status& status) {
    metrics->failures = static_cast<uint32_t>(selected.size() - survivors.size());
    return cost.Abort(status);
  };
  if (evaluate) {
    Result<EvalReport> totals = timed([&] {
      return DecodeEvalWords(std::span(*sum).subspan(update_length), options_.items,
                             format.ring_bits);
    });
    if (!totals.ok()) return abort(totals.status());
    sum->resize(update_length);
    if (totals->ranked_users == 0) totals->recommended.clear();  // nothing was ranked
    MergeReport(*totals, evaluate_previous);
    evaluate_previous->evaluated = true;
    evaluate_previous->evaluated_in_round = round;
  }
  Result<DecodedSums> decoded = timed([&] { return DecodeSum(shapes, *sum, format); });
  if (!decoded.ok()) return abort(decoded.status());
  cost.Record();

  const double train_loss = TakeTrainLoss(&*decoded);
  FillEncryptedInput(round, std::move(decoded).value(), survivors, selected.size(), {}, input,
                     metrics);
  metrics->train_mse = train_loss;
  return Status::Ok();
}

Result<std::optional<std::vector<uint64_t>>> Coordinator::SecureSum(
    secagg::Params params, SecureRoundCost* cost, std::vector<uint32_t>* survivors) {
  const uint32_t round = params.round;
  const uint32_t threads = options_.unmask_threads
                               ? options_.unmask_threads
                               : std::max(1u, std::thread::hardware_concurrency());
  secagg::Server server(std::move(params), threads);
  const auto timed = [cost](auto&& step) { return cost->Timed(step); };
  const auto fail = [&](uint32_t site, const std::string& reason) {
    spdlog::warn("coordinator, round {}: {} dropped out of secure aggregation: {}", round,
                 SiteName(site), reason);
    site_version_[site] = UINT64_MAX;
  };
  // Below the threshold the round ends with the model unchanged.
  const auto abort = [&](const Status& status) -> Result<std::optional<std::vector<uint64_t>>> {
    *survivors = server.survivors();
    FEDREC_RETURN_IF_ERROR(cost->Abort(status));
    return std::optional<std::vector<uint64_t>>();
  };

  // Collects message M from each of `sites`, handing each to `add` (whose
  // error drops the site).
  const auto collect = [&]<typename M>(std::type_identity<M>, const std::vector<uint32_t>& sites,
                                       auto add) {
    return Collect<M>(
        round, sites,
        [&](uint32_t site, M message) {
          Status added = timed([&] { return add(site, std::move(message)); });
          if (!added.ok()) fail(site, added.message());
        },
        fail);
  };
  // Sends each of `sites` the message `make(site)` returns. Returns what ends
  // the round early: a transport error, or OK once aborted because a message
  // could not be made.
  const auto send_each =
      [&](const std::vector<uint32_t>& sites,
          auto make) -> std::optional<Result<std::optional<std::vector<uint64_t>>>> {
    for (uint32_t site : sites) {
      auto message = timed([&] { return make(site); });
      if (!message.ok()) return abort(message.status());
      if (Status sent = SendTo(*message, site, round); !sent.ok()) return sent;
    }
    return std::nullopt;
  };

  // Step 1: round keys.
  FEDREC_RETURN_IF_ERROR(collect(
      std::type_identity<SecAggKeys>{}, server.params().sites, [&](uint32_t site, SecAggKeys keys) {
        const auto identity = transport_->PeerIdentity(options_.site_ranks[site]);
        return server.AddKeys(site, keys, identity ? *identity : keys.identity_key);
      }));
  if (Status s = timed([&] { return server.FinishKeys(); }); !s.ok()) return abort(s);
  if (auto end = send_each(server.advertised(), [&](uint32_t s) { return server.KeyListFor(s); }))
    return *end;

  // Step 2: encrypted shares, routed to their holders.
  FEDREC_RETURN_IF_ERROR(collect(std::type_identity<SecAggShares>{}, server.advertised(),
                                 [&](uint32_t site, SecAggShares shares) {
                                   return server.AddShares(site, std::move(shares));
                                 }));
  if (Status s = timed([&] { return server.FinishShares(); }); !s.ok()) return abort(s);
  if (auto end = send_each(server.shared(), [&](uint32_t s) { return server.SharesFor(s); }))
    return *end;

  // Step 3: masked inputs, added into the running sum as they arrive.
  // Read in place from each frame: the inputs are model-sized.
  FEDREC_RETURN_IF_ERROR(collect(std::type_identity<SecAggMaskedView>{}, server.shared(),
                                 [&](uint32_t site, const SecAggMaskedView& masked) {
                                   return server.AddMasked(site, masked);
                                 }));
  if (Status s = timed([&] { return server.FinishMasked(); }); !s.ok()) return abort(s);
  *survivors = server.survivors();
  const SecAggUnmaskRequest survivor_list = server.SurvivorList();
  for (uint32_t site : *survivors) FEDREC_RETURN_IF_ERROR(SendTo(survivor_list, site, round));

  // Step 4: the consistency check, the survivors' signatures on the list.
  FEDREC_RETURN_IF_ERROR(collect(std::type_identity<SecAggSurvivorSignature>{}, *survivors,
                                 [&](uint32_t site, const SecAggSurvivorSignature& signature) {
                                   return server.AddSurvivorSignature(site, signature);
                                 }));
  if (Status s = timed([&] { return server.FinishSignatures(); }); !s.ok()) return abort(s);
  // Without a roster sites cannot check the signatures (secagg::Client):
  // sending them would cost each site O(n) bytes for nothing.
  const SecAggUnmaskRequest request = server.UnmaskRequest(options_.sites_hold_roster);
  const std::vector<uint32_t> signers = server.signers();
  for (uint32_t site : signers) FEDREC_RETURN_IF_ERROR(SendTo(request, site, round));

  // Step 5: revealed shares; step 6: unmasking.
  FEDREC_RETURN_IF_ERROR(collect(std::type_identity<SecAggUnmaskShares>{}, signers,
                                 [&](uint32_t site, const SecAggUnmaskShares& shares) {
                                   return server.AddUnmaskShares(site, shares);
                                 }));
  Result<std::vector<uint64_t>> sum = timed([&] { return server.Finish(); });
  if (!sum.ok()) return abort(sum.status());
  return std::optional<std::vector<uint64_t>>(std::move(sum).value());
}

Status Coordinator::PaillierSetup(uint32_t round) {
  const uint32_t num_sites = static_cast<uint32_t>(options_.site_ranks.size());
  if (num_sites == 0) return Status::InvalidArgument("Paillier key set-up: the job has no sites");
  FEDREC_ASSIGN_OR_RETURN(
      const uint32_t threshold,
      paillier_round::DecryptionThreshold(num_sites, options_.secagg.threat.adversarial_rate));
  std::vector<uint32_t> sites(num_sites);
  for (uint32_t s = 0; s < num_sites; ++s) sites[s] = s;
  paillier_ready_.assign(num_sites, false);
  const auto fail = [&](uint32_t site, const std::string& reason) {
    spdlog::warn("coordinator, round {}: {} is left out of the Paillier key set-up: {}", round,
                 SiteName(site), reason);
  };
  // Step 1: every site offers a signed X25519 key. The dealer rotates with the
  // round (sites check it), so a failed set-up is retried next round by the
  // next site.
  PaillierKey request;
  request.round = round;
  request.holder = paillier_round::Dealer(round, num_sites);
  request.modulus_bits = options_.paillier_bits;
  request.job_id = options_.job_id;
  std::map<uint32_t, SecAggKeys> offers;
  for (uint32_t s : sites) FEDREC_RETURN_IF_ERROR(SendTo(request, s, round));
  FEDREC_RETURN_IF_ERROR(Collect<SecAggKeys>(
      round, sites,
      [&](uint32_t site, SecAggKeys keys) {
        if (keys.site != site || keys.round != round) return fail(site, "mislabelled set-up key");
        offers[site] = keys;
      },
      fail));
  if (!offers.contains(request.holder)) {
    return Status::Aborted("Paillier key set-up: the dealer, " + SiteName(request.holder) +
                           ", did not offer a key");
  }
  if (offers.size() < threshold) {
    return Status::Aborted("Paillier key set-up: " + std::to_string(offers.size()) +
                           " sites offered keys, fewer than the decryption threshold " +
                           std::to_string(threshold));
  }
  // Step 2: the dealer deals the shares.
  SecAggKeyList list;
  list.round = round;
  for (const auto& [site, keys] : offers) list.keys.push_back(keys);
  FEDREC_RETURN_IF_ERROR(SendTo(list, request.holder, round));
  std::optional<PaillierKey> dealt;
  FEDREC_RETURN_IF_ERROR(Collect<PaillierKey>(
      round, {request.holder}, [&](uint32_t, PaillierKey key) { dealt = std::move(key); }, fail));
  if (!dealt) return Status::Aborted("Paillier key set-up: the dealer did not deal the key");
  Result<PaillierPublicKey> public_key = PaillierPublicKey::FromBytes(dealt->public_key);
  if (!public_key.ok()) return public_key.status().WithContext("Paillier key from the dealer");
  if (dealt->threshold != threshold || dealt->parties != num_sites) {
    return Status::Aborted("Paillier key set-up: the dealer dealt " +
                           std::to_string(dealt->threshold) + " of " +
                           std::to_string(dealt->parties) + " shares, expected " +
                           std::to_string(threshold) + " of " + std::to_string(num_sites));
  }
  paillier_ready_[request.holder] = true;

  // Step 3: each other site opens its share.
  std::vector<uint32_t> receivers;
  for (const EncryptedShare& sealed : dealt->sealed_private) {
    if (sealed.site >= num_sites || !offers.contains(sealed.site)) continue;
    PaillierKey forward = *dealt;
    forward.sealed_private = {sealed};
    FEDREC_RETURN_IF_ERROR(SendTo(forward, sealed.site, round));
    receivers.push_back(sealed.site);
  }
  std::sort(receivers.begin(), receivers.end());
  FEDREC_RETURN_IF_ERROR(Collect<PaillierKey>(
      round, receivers,
      [&](uint32_t site, const PaillierKey& ack) {
        if (ack.public_key == dealt->public_key)
          paillier_ready_[site] = true;
        else
          fail(site, "acknowledged another public key");
      },
      fail));
  const auto ready =
      static_cast<uint32_t>(std::count(paillier_ready_.begin(), paillier_ready_.end(), true));
  if (ready < threshold) {
    return Status::Aborted("Paillier key set-up: " + std::to_string(ready) +
                           " sites hold a key share, fewer than the decryption threshold " +
                           std::to_string(threshold));
  }
  paillier_public_ = dealt->public_key;
  paillier_threshold_ = threshold;
  spdlog::info(
      "coordinator, round {}: Paillier-{} key dealt by {}; {} of {} sites hold a share, {} "
      "decrypt",
      round, options_.paillier_bits, SiteName(request.holder), ready, num_sites, threshold);
  return Status::Ok();
}

Status Coordinator::PaillierRound(RoundPlan plan, const std::vector<uint32_t>& selected,
                                  RoundMetrics* metrics, AggregateInput* input) {
  const uint32_t round = plan.round;
  SecureRoundCost cost(transport_, "Paillier aggregation", round, metrics);
  const auto abort = [&cost](const Status& status) { return cost.Abort(status); };
  if (paillier_public_.empty()) {
    Status setup = cost.Timed([&] { return PaillierSetup(round); });
    if (!setup.ok()) {
      paillier_public_.clear();
      if (setup.code() != Status::Code::kAborted) return setup;
      return abort(setup);
    }
  }
  const uint32_t threshold = paillier_threshold_;
  std::vector<uint32_t> participants;
  for (uint32_t site : selected) {
    if (paillier_ready_[site]) participants.push_back(site);
  }
  if (participants.size() < threshold) {
    return abort(Status::Aborted(std::to_string(participants.size()) + " of the " +
                                 std::to_string(selected.size()) +
                                 " selected sites hold a Paillier key share; the decryption "
                                 "threshold is " +
                                 std::to_string(threshold)));
  }
  FixedPointFormat format = UploadFormat();
  format.ring_bits = 64;
  plan.aggregation = Aggregation::kPaillier;
  plan.participants = participants;
  SetFormat(format, &plan);
  FEDREC_RETURN_IF_ERROR(SendWithModel(&plan, participants, round));

  FEDREC_ASSIGN_OR_RETURN(PaillierPublicKey public_key,
                          PaillierPublicKey::FromBytes(paillier_public_));
  const uint64_t update_length = EncodedLength(upload_);
  const PackingParams params{static_cast<int>(SignedValueBits(format)),
                             static_cast<int>(participants.size())};
  // The update, then the training loss (paillier_round::EncodeTrainLoss).
  const uint64_t length = update_length + paillier_round::TrainLossSlots(params.value_bits);
  FEDREC_ASSIGN_OR_RETURN(PaillierPacker packer,
                          PaillierPacker::Create(params, public_key.modulus_bits()));
  const size_t ciphertext_bytes = packer.NumPlaintexts(length) * public_key.ciphertext_size();
  PaillierSum request;
  request.round = round;
  request.values = length;
  const auto fail = [&](uint32_t site, const std::string& reason) {
    spdlog::warn("coordinator, round {}: {} failed: {}", round, SiteName(site), reason);
    site_version_[site] = UINT64_MAX;
  };
  // Step 4: the signed encrypted updates, kept to be sent to the decryptors.
  FEDREC_RETURN_IF_ERROR(Collect<PaillierUpdate>(
      round, participants,
      [&](uint32_t site, PaillierUpdate update) {
        if (update.site != site || update.round != round)
          return fail(site, "mislabelled encrypted update");
        if (update.values != length || update.ciphertexts.size() != ciphertext_bytes) {
          return fail(site, "encrypted update of " + std::to_string(update.values) + " values in " +
                                std::to_string(update.ciphertexts.size()) + " bytes, expected " +
                                std::to_string(length) + " in " + std::to_string(ciphertext_bytes));
        }
        request.updates.push_back(std::move(update));
      },
      fail));
  std::sort(request.updates.begin(), request.updates.end(),
            [](const PaillierUpdate& a, const PaillierUpdate& b) { return a.site < b.site; });
  std::vector<uint32_t> reported;
  for (const PaillierUpdate& update : request.updates) reported.push_back(update.site);
  if (reported.size() < threshold) {
    return abort(Status::Aborted(std::to_string(reported.size()) +
                                 " encrypted update(s) arrived; the decryption threshold is " +
                                 std::to_string(threshold)));
  }
  // Step 5: partial decryptions from `threshold` reporting sites, asking the
  // next ones when some fail.
  std::map<uint32_t, std::vector<uint8_t>> partials;
  size_t next = 0;
  while (partials.size() < threshold && next < reported.size()) {
    std::vector<uint32_t> asked;
    while (partials.size() + asked.size() < threshold && next < reported.size())
      asked.push_back(reported[next++]);
    for (uint32_t site : asked) FEDREC_RETURN_IF_ERROR(SendTo(request, site, round));
    FEDREC_RETURN_IF_ERROR(Collect<PaillierDecrypted>(
        round, asked,
        [&](uint32_t site, PaillierDecrypted decrypted) {
          if (decrypted.site != site || decrypted.partials.size() != ciphertext_bytes)
            return fail(site, "a partial decryption of " +
                                  std::to_string(decrypted.partials.size()) + " bytes, expected " +
                                  std::to_string(ciphertext_bytes));
          partials[site] = std::move(decrypted.partials);
        },
        fail));
  }
  if (partials.size() < threshold) {
    return abort(Status::Aborted(std::to_string(partials.size()) +
                                 " partial decryption(s) arrived; the decryption threshold is " +
                                 std::to_string(threshold)));
  }
  // Step 6: combine and decode.
  std::vector<uint32_t> indices;
  std::vector<std::span<const uint8_t>> views;
  for (const auto& [site, bytes] : partials) {
    indices.push_back(site + 1);
    views.push_back(bytes);
  }
  Result<std::vector<int64_t>> sums = cost.Timed([&]() -> Result<std::vector<int64_t>> {
    FEDREC_ASSIGN_OR_RETURN(
        std::vector<uint8_t> plaintexts,
        CombinePartialDecryptions(public_key, static_cast<uint32_t>(options_.site_ranks.size()),
                                  threshold, indices, views));
    return packer.Decode(plaintexts, length, static_cast<int>(reported.size()));
  });
  if (!sums.ok()) return abort(sums.status());
  const auto [squared, count] = paillier_round::DecodeTrainLoss(
      std::span<const int64_t>(*sums).subspan(update_length), params.value_bits);
  std::vector<uint64_t> ring(sums->begin(), sums->begin() + static_cast<ptrdiff_t>(update_length));
  Result<DecodedSums> decoded = cost.Timed([&] { return DecodeSum(upload_, ring, format); });
  if (!decoded.ok()) return abort(decoded.status());
  cost.Record();
  FillEncryptedInput(round, std::move(decoded).value(), reported, selected.size(), TrainLoss{},
                     input, metrics);
  metrics->train_mse = count ? squared / static_cast<double>(count) : 0.0;
  return Status::Ok();
}

std::vector<uint32_t> Coordinator::EvalSites(uint32_t round) const {
  std::vector<uint32_t> sites = AvailableSites();
  if (options_.eval_fraction >= 1.0 || sites.empty()) return sites;
  const size_t want = std::clamp<size_t>(
      static_cast<size_t>(std::llround(options_.eval_fraction * static_cast<double>(sites.size()))),
      1, sites.size());
  Rng rng(options_.seed, round, 0, Purpose::kEvalSample);
  for (size_t i = 0; i < want; ++i) {  // partial Fisher-Yates: a uniform sample
    const size_t j = i + static_cast<size_t>(rng.Below(sites.size() - i));
    std::swap(sites[i], sites[j]);
  }
  sites.resize(want);
  std::sort(sites.begin(), sites.end());
  return sites;
}

Status Coordinator::SecureEvaluate(uint32_t round, RoundMetrics* metrics) {
  const std::vector<uint32_t> sites = EvalSites(round);
  const uint32_t label = EvalSecAggRound(round);
  Result<secagg::Params> made = secagg::MakeParams(options_.job_id, label, sites, options_.secagg,
                                                   64, EvalSumsLength(options_.items));
  if (!made.ok()) {
    if (sites.size() == options_.site_ranks.size()) return made.status();
    spdlog::warn("coordinator, round {}: no secure evaluation with {} site(s) unavailable: {}",
                 round, options_.site_ranks.size() - sites.size(), made.status().message());
    return Status::Ok();
  }
  secagg::Params params = std::move(made).value();
  EvalRequest request;
  request.round = round;
  request.model_version = version_;
  request.aggregation = Aggregation::kSecAgg;
  secagg::SetPlan(params, &request);
  FEDREC_RETURN_IF_ERROR(SendWithModel(&request, sites, round));

  // Its costs and an abort are the evaluation's own, not the round's.
  RoundMetrics eval_metrics;
  SecureRoundCost cost(transport_, "secure evaluation", round, &eval_metrics);
  std::vector<uint32_t> survivors;
  FEDREC_ASSIGN_OR_RETURN(std::optional<std::vector<uint64_t>> sum,
                          SecureSum(std::move(params), &cost, &survivors));
  metrics->secure_bytes += eval_metrics.secure_bytes;
  metrics->secure_seconds += eval_metrics.secure_seconds;
  if (!sum) {
    for (uint32_t s : sites)
      if (!std::binary_search(survivors.begin(), survivors.end(), s)) site_version_[s] = UINT64_MAX;
    return Status::Ok();  // not evaluated this time
  }
  Result<EvalReport> totals = DecodeEvalSums(*sum, options_.items);
  if (!totals.ok())
    return totals.status().WithContext("coordinator, round " + std::to_string(round));
  if (totals->ranked_users == 0) totals->recommended.clear();  // nothing was ranked
  MergeReport(*totals, metrics);
  metrics->evaluated = true;
  return Status::Ok();
}

Status Coordinator::Evaluate(uint32_t round, RoundMetrics* metrics) {
  FEDREC_RETURN_IF_ERROR(Settle(round));
  if (options_.aggregation != Aggregation::kNone) return SecureEvaluate(round, metrics);
  const uint32_t num_sites = static_cast<uint32_t>(options_.site_ranks.size());
  const std::vector<uint32_t> sites = EvalSites(round);
  EvalRequest request;
  request.round = round;
  request.model_version = version_;
  FEDREC_RETURN_IF_ERROR(SendWithModel(&request, sites, round));

  std::vector<std::optional<EvalReport>> reports(num_sites);
  FEDREC_RETURN_IF_ERROR(Collect<EvalReport>(
      round, sites, [&](uint32_t site, EvalReport report) { reports[site] = std::move(report); },
      [&](uint32_t site, const std::string& reason) {
        spdlog::warn("coordinator, round {}: evaluation at {} failed: {}", round, SiteName(site),
                     reason);
        site_version_[site] = UINT64_MAX;
      }));
  for (const auto& report : reports) {  // site order: fixed summation order
    if (report) MergeReport(*report, metrics);
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
  // A round whose evaluation rides on the next round's secure sum: its
  // metrics are reported once that sum is in.
  std::optional<RoundMetrics> waiting;
  for (uint32_t round = 1; round <= options_.rounds && status.ok(); ++round) {
    const auto start = SteadyClock::now();
    const double sim_start = clock_->Now();
    const TrafficStats before = transport_->stats();
    RoundMetrics metrics;
    metrics.round = round;
    status = RunRound(round, &metrics, waiting ? &*waiting : nullptr);
    if (waiting) {
      // The ride did not happen (the round aborted before its sum): the
      // model is still the previous round's, evaluated on its own now.
      if (status.ok() && !waiting->evaluated) status = Evaluate(round - 1, &*waiting);
      if (status.ok()) Report(*waiting, on_round);
      waiting.reset();
    }
    const bool last = round == options_.rounds;
    const bool evaluate =
        status.ok() && (last || (options_.eval_every > 0 && round % options_.eval_every == 0));
    const bool rides = evaluate && EvaluatesWithNextRound(round);
    if (evaluate && !rides) status = Evaluate(round, &metrics);
    const TrafficStats after = transport_->stats();
    metrics.bytes_sent = after.bytes_sent - before.bytes_sent;
    metrics.bytes_received = after.bytes_received - before.bytes_received;
    metrics.seconds = std::chrono::duration<double>(SteadyClock::now() - start).count();
    metrics.sim_seconds = clock_->Now() - sim_start;
    metrics.failed_sites = std::exchange(round_failures_, {});
    if (rides) {
      waiting = std::move(metrics);
    } else if (status.ok()) {
      Report(metrics, on_round);
    }
  }
  ShutdownSites(status.ok() ? "training finished" : status.message(), !status.ok());
  return status;
}

void Coordinator::Report(const RoundMetrics& metrics,
                         const std::function<void(const RoundMetrics&)>& on_round) {
  if (metrics.evaluated && metrics.test.count > 0) {
    EvaluationSummary summary;
    summary.round = metrics.round;
    const double n = static_cast<double>(metrics.test.count);
    summary.rmse = std::sqrt(metrics.test.squared / n);
    summary.mae = metrics.test.absolute / n;
    summary.count = metrics.test.count;
    strategy_->OnEvaluated(summary);
  }
  if (on_round) on_round(metrics);
}

Status CheckRoundConfig(const RoundConfig& config, std::span<const uint32_t> available) {
  for (size_t i = 0; i < config.sites.size(); ++i) {
    const uint32_t site = config.sites[i];
    if (i > 0 && site <= config.sites[i - 1]) {
      return Status::InvalidArgument("selected sites must be strictly ascending, found site " +
                                     std::to_string(site) + " after site " +
                                     std::to_string(config.sites[i - 1]));
    }
    if (!std::binary_search(available.begin(), available.end(), site)) {
      return Status::InvalidArgument("selected site " + std::to_string(site) +
                                     ", which is not among the " +
                                     std::to_string(available.size()) + " available sites");
    }
  }
  const auto check = [](const SiteInstructions& s, const std::string& who) -> Status {
    if (s.local_epochs >= 1 && std::isfinite(s.lr) && s.lr > 0.0f && std::isfinite(s.proximal_mu) &&
        s.proximal_mu >= 0.0f)
      return Status::Ok();
    return Status::InvalidArgument("instructions for " + who +
                                   ": expected local_epochs >= 1, a finite lr > 0 and a finite "
                                   "proximal_mu >= 0, found local_epochs " +
                                   std::to_string(s.local_epochs) + ", lr " + std::to_string(s.lr) +
                                   ", proximal_mu " + std::to_string(s.proximal_mu));
  };
  FEDREC_RETURN_IF_ERROR(check(config.instructions, "every site"));
  for (const auto& [site, instructions] : config.per_site) {
    FEDREC_RETURN_IF_ERROR(check(instructions, "site " + std::to_string(site)));
  }
  return Status::Ok();
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
