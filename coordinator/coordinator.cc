#include "coordinator/coordinator.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <type_traits>
#include <utility>

#include "base/random.h"
#include "coordinator/aggregation_scheme.h"

namespace fedrec {

namespace {

using SteadyClock = std::chrono::steady_clock;

}  // namespace

Coordinator::Coordinator(const CoordinatorOptions& options, std::vector<ParamBlock> initial_global,
                         std::unique_ptr<Strategy> strategy, Transport* transport)
    : options_(options),
      global_(std::move(initial_global)),
      strategy_(std::move(strategy)),
      transport_(transport),
      link_(transport, options.clock ? options.clock : &real_clock_, options.site_ranks,
            options.round_timeout) {
  for (const ParamBlock& b : global_) upload_.push_back(ShapeOf(b));
  AddSiteExtraShapes();
  link_.set_on_progress(options.on_progress);
  if (options_.dp.mode != DpMode::kNone)
    dp_ = std::make_unique<CoordinatorDp>(options_.dp, options_.seed, options_.fraction,
                                          options_.secagg.threat.dropout_rate);
  AddDpShape();
}

void Coordinator::AddDpShape() {
  if (dp_) upload_.push_back(DpCountShape());
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
  AddDpShape();
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

Coordinator::~Coordinator() = default;

CoordinatorScheme& Coordinator::scheme() {
  if (scheme_) return *scheme_;
  SchemeContext context;
  context.options = &options_;
  context.link = &link_;
  context.upload = &upload_;
  context.format = UploadFormat();
  context.send_plan = [this](RoundPlan* plan, const std::vector<uint32_t>& sites) {
    return SendWithModel(plan, sites, plan->round);
  };
  context.send_eval = [this](EvalRequest* request, const std::vector<uint32_t>& sites) {
    return SendWithModel(request, sites, request->round);
  };
  if (model_) context.eval_tasks = model_->Tasks();
  context.eval_layout = EvalLayout{options_.items, BinaryTasks(context.eval_tasks),
                                   options_.auc_bins, options_.eval_warm_cold};
  scheme_ = MakeCoordinatorScheme(options_.aggregation, std::move(context));
  return *scheme_;
}

template <typename M>
Status Coordinator::SendWithModel(M* message, const std::vector<uint32_t>& sites, uint32_t round) {
  const uint32_t rank = static_cast<uint32_t>(transport_->rank());
  // The message is the same for every site but for whether it carries the
  // model and, for a round plan, the site's instructions: each variant is
  // encoded once and shared by the sends (a channel encrypts it once).
  constexpr bool kPlan = std::is_same_v<M, RoundPlan>;
  std::map<std::pair<bool, const SiteInstructions*>, SharedFrame> frames;
  for (uint32_t site : sites) {
    const bool include = link_.site_version(site) != version_;
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
      it->second =
          std::make_shared<const std::vector<uint8_t>>(EncodeMessage(*message, round, rank));
      message->model.clear();
    }
    FEDREC_RETURN_IF_ERROR(transport_->SendShared(link_.rank_of(site), it->second));
    // A site that trains on the model no longer holds it unchanged.
    link_.set_site_version(site, options_.sites_keep_model && !kPlan ? version_ : UINT64_MAX);
  }
  return Status::Ok();
}

bool Coordinator::EvaluatesWithNextRound(uint32_t round) {
  return options_.eval_with_next_round && options_.checkpoint_every == 0 &&
         scheme().CarriesEvaluation() && round < options_.rounds && round != stop_after_ &&
         options_.eval_fraction == options_.fraction;
}

Status Coordinator::RunRound(uint32_t round, RoundMetrics* metrics,
                             RoundMetrics* evaluate_previous) {
  const uint32_t num_sites = link_.num_sites();
  FEDREC_RETURN_IF_ERROR(link_.Settle(round));
  FEDREC_RETURN_IF_ERROR(link_.ProbeUnavailable(round));
  // The strategy samples among the sites believed available, the same share
  // of the whole federation as when all are.
  const std::vector<uint32_t> available = link_.AvailableSites();
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
  if (dp_) dp_->FillPlan(&plan);

  AggregateInput input;
  FEDREC_RETURN_IF_ERROR(scheme().Round(std::move(plan), selected,
                                        strategy_->NeedsIndividualUpdates(), metrics, &input,
                                        evaluate_previous));
  if (metrics->aborted) return Status::Ok();
  metrics->failures = input.failures;
  metrics->sites_reported = input.sites;
  for (const auto& [site, reason] : link_.failures()) {
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
  if (dp_) {
    const Status privatized = dp_->Privatize(round, static_cast<uint32_t>(selected.size()), global_,
                                             &input, &metrics->dp);
    if (privatized.code() == Status::Code::kAborted) {
      metrics->aborted = true;
      metrics->abort_reason = privatized.message();
      spdlog::warn("coordinator, round {}: {}; the model is unchanged", round,
                   privatized.message());
      return Status::Ok();
    }
    FEDREC_RETURN_IF_ERROR(privatized);
  }
  return ApplyAggregate(round, input, metrics);
}

Status Coordinator::ApplyAggregate(uint32_t round, const AggregateInput& input,
                                   RoundMetrics* metrics) {
  Status applied;
  {
    std::lock_guard lock(applied_mu_);
    applied = model_ ? model_->Apply(input, strategy_.get(), &global_)
                     : strategy_->Aggregate(input, &global_);
    if (applied.ok()) applied_round_ = round;
  }
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

std::vector<uint32_t> Coordinator::EvalSites(uint32_t round) const {
  std::vector<uint32_t> sites = link_.AvailableSites();
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

Status Coordinator::Evaluate(uint32_t round, RoundMetrics* metrics) {
  FEDREC_RETURN_IF_ERROR(link_.Settle(round));
  link_.set_evaluating(true);
  const Status evaluated = scheme().Evaluate(round, version_, EvalSites(round), metrics);
  link_.set_evaluating(false);
  return evaluated;
}

Status Coordinator::Run(const std::function<void(const RoundMetrics&)>& on_round) {
  if (link_.num_sites() == 0) {
    ShutdownSites("no sites", true);
    return Status::InvalidArgument("coordinator: the federation has no sites");
  }
  if (options_.eval_per_site && options_.aggregation != Aggregation::kNone) {
    ShutdownSites("per-site metrics under secure aggregation", true);
    return Status::InvalidArgument(
        std::string("coordinator: eval.per_site needs security.aggregation = none, found ") +
        AggregationName(options_.aggregation) +
        " (under secure aggregation the coordinator learns only the sum over the sites)");
  }
  double first_epsilon = 0.0;
  if (dp_ && dp_->accountant().steps() == 0 && dp_->BudgetExhausted(&first_epsilon)) {
    ShutdownSites("privacy budget", true);
    return Status::InvalidArgument(fmt::format(
        "coordinator: one round already spends epsilon {:.4g} > dp.target_epsilon = {:.4g} "
        "(delta {:g}); raise dp.noise_multiplier or dp.target_epsilon",
        first_epsilon, options_.dp.target_epsilon, options_.dp.delta));
  }
  Status status;
  // A round whose evaluation rides on the next round's secure sum: its
  // metrics are reported once that sum is in.
  std::optional<RoundMetrics> waiting;
  for (uint32_t round = completed_round_ + 1; round <= options_.rounds && status.ok(); ++round) {
    const auto start = SteadyClock::now();
    const double sim_start = link_.clock()->Now();
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
    // A privacy budget: a round after which one more would spend more than
    // it is the last.
    double next_epsilon = 0.0;
    if (status.ok() && dp_ && round < options_.rounds && dp_->BudgetExhausted(&next_epsilon)) {
      stop_after_ = round;
      stop_reason_ = fmt::format(
          "stopped after round {} of {}: one more round would spend epsilon {:.4g} > "
          "dp.target_epsilon = {:.4g} (delta {:g})",
          round, options_.rounds, next_epsilon, options_.dp.target_epsilon, options_.dp.delta);
      spdlog::warn("coordinator: {}", stop_reason_);
      metrics.stop_reason = stop_reason_;
    }
    const bool last = round == options_.rounds || round == stop_after_;
    const bool evaluate =
        status.ok() && (last || (options_.eval_every > 0 && round % options_.eval_every == 0));
    const bool rides = evaluate && EvaluatesWithNextRound(round);
    if (evaluate && !rides) status = Evaluate(round, &metrics);
    const TrafficStats after = transport_->stats();
    metrics.bytes_sent = after.bytes_sent - before.bytes_sent;
    metrics.bytes_received = after.bytes_received - before.bytes_received;
    metrics.seconds = std::chrono::duration<double>(SteadyClock::now() - start).count();
    metrics.sim_seconds = link_.clock()->Now() - sim_start;
    metrics.failed_sites = link_.TakeFailures();
    for (const auto& [site, step] : link_.TakeFailureSteps())
      metrics.failed_steps[step].push_back(site);
    if (rides) {
      waiting = std::move(metrics);
    } else if (status.ok()) {
      Report(metrics, on_round);
    }
    if (!status.ok()) break;
    completed_round_ = round;
    const bool stop = options_.stop_requested && options_.stop_requested();
    if (stop && waiting) {  // no next round to ride on: evaluated on its own
      status = Evaluate(round, &*waiting);
      if (status.ok()) Report(*waiting, on_round);
      waiting.reset();
      if (!status.ok()) break;
    }
    if (options_.checkpoint_every > 0 && options_.on_checkpoint && !waiting &&
        (stop || last || round % options_.checkpoint_every == 0)) {
      status = options_.on_checkpoint(*this, round)
                   .WithContext("coordinator, checkpoint of round " + std::to_string(round));
    }
    if (stop && status.ok()) {
      stopped_ = true;
      spdlog::warn("coordinator: stopped after round {} of {}", round, options_.rounds);
      break;
    }
    if (round == stop_after_) break;
  }
  ShutdownSites(status.ok() ? "training finished" : status.message(), !status.ok());
  return status;
}

// The checkpoint section that holds the privacy accountant (CoordinatorDp).
constexpr char kDpSection[] = "dp_accountant";

CoordinatorState Coordinator::CheckpointState(uint32_t round) const {
  CoordinatorState state;
  state.round = round;
  state.version = version_;
  state.global = global_;
  state.strategy = std::string(strategy_->name());
  state.strategy_state = strategy_->State();
  state.extra = ExtraSections();
  if (dp_) state.extra.emplace_back(kDpSection, dp_->SaveState());
  return state;
}

Status Coordinator::RestoreExtraSections(
    const std::vector<std::pair<std::string, std::string>>& sections) {
  if (sections.empty()) return Status::Ok();
  return Status::InvalidArgument("the checkpoint holds state of '" + sections.front().first +
                                 "', which this coordinator does not have (another "
                                 "configuration wrote it)");
}

Status Coordinator::Restore(const CoordinatorState& state) {
  const std::string where = "coordinator checkpoint of round " + std::to_string(state.round);
  if (state.round > options_.rounds) {
    return Status::InvalidArgument(where + ": the run has only " + std::to_string(options_.rounds) +
                                   " rounds");
  }
  if (state.strategy != strategy_->name()) {
    return Status::InvalidArgument(where + ": expected strategy " + std::string(strategy_->name()) +
                                   ", found " + state.strategy);
  }
  if (state.global.size() != global_.size()) {
    return Status::InvalidArgument(where + ": expected " + std::to_string(global_.size()) +
                                   " global blocks, found " + std::to_string(state.global.size()));
  }
  for (size_t b = 0; b < global_.size(); ++b) {
    const ParamBlock& want = global_[b];
    const ParamBlock& found = state.global[b];
    if (want.name != found.name || want.scope != found.scope || want.rows != found.rows ||
        want.cols != found.cols || found.data.size() != want.data.size()) {
      return Status::InvalidArgument(where + ": expected global block " + want.name + " " +
                                     std::to_string(want.rows) + "x" + std::to_string(want.cols) +
                                     ", found " + found.name + " " + std::to_string(found.rows) +
                                     "x" + std::to_string(found.cols));
    }
  }
  // The strategy and the extra sections check their own parts (a refusal
  // leaves each unchanged); the strategy is put back when the extra sections
  // are refused.
  // The privacy accountant's section is the coordinator's own: it must be
  // there exactly when DP is on.
  std::vector<std::pair<std::string, std::string>> extra;
  const std::string* dp_state = nullptr;
  for (const auto& section : state.extra) {
    if (section.first == kDpSection) {
      dp_state = &section.second;
    } else {
      extra.push_back(section);
    }
  }
  if ((dp_state != nullptr) != (dp_ != nullptr)) {
    return Status::InvalidArgument(
        where + (dp_ ? ": dp.mode is on, but the checkpoint holds no privacy accountant (it was "
                       "written without differential privacy)"
                     : ": the checkpoint holds a privacy accountant, but dp.mode is none"));
  }
  const std::string dp_before = dp_ ? dp_->SaveState() : std::string();
  if (dp_) FEDREC_RETURN_IF_ERROR(dp_->LoadState(*dp_state).WithContext(where));
  const StrategyState strategy_before = strategy_->State();
  Status restored = strategy_->Restore(state.strategy_state);
  if (restored.ok()) {
    restored = RestoreExtraSections(extra);
    if (!restored.ok()) (void)strategy_->Restore(strategy_before);
  }
  if (!restored.ok()) {
    if (dp_) (void)dp_->LoadState(dp_before);
    return restored.WithContext(where);
  }
  {
    std::lock_guard lock(applied_mu_);
    global_ = state.global;
    applied_round_ = state.round;
  }
  version_ = state.version;
  completed_round_ = state.round;
  return Status::Ok();
}

std::pair<uint32_t, std::vector<ParamBlock>> Coordinator::AppliedModel() const {
  std::lock_guard lock(applied_mu_);
  return {applied_round_, global_};
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
  std::vector<int> ranks = options_.site_ranks;
  ranks.insert(ranks.end(), options_.shard_ranks.begin(), options_.shard_ranks.end());
  for (int site_rank : ranks) {
    Status sent = transport_->Send(site_rank, EncodeMessage(shutdown, 0, rank));
    if (!sent.ok())
      spdlog::debug("coordinator: shutdown of rank {}: {}", site_rank, sent.message());
  }
}

}  // namespace fedrec