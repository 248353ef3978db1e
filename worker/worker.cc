#include "worker/worker.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>
#include <sstream>
#include <string>
#include <utility>

#include "base/little_endian.h"
#include "crypto/paillier.h"
#include "crypto/paillier_round.h"
#include "crypto/secagg.h"
#include "crypto/update_codec.h"

namespace fedrec {

namespace {

Result<std::unique_ptr<Model>> MakeModel(const WorkerOptions& options, uint32_t items,
                                         SiteData data) {
  if (!options.make_model)
    return Status::InvalidArgument("no model: WorkerOptions::make_model is not set");
  ModelData model_data;
  model_data.items = items;
  model_data.train = std::move(data.train);
  model_data.user_keys = std::move(data.user_keys);
  model_data.shard = options.site;
  model_data.user_features = std::move(data.user_features);
  model_data.item_features = options.item_features;
  model_data.cold_users = data.cold_users;
  model_data.global_arrives = true;  // every first plan carries the model (SiteLink)
  return options.make_model(std::move(model_data));
}

}  // namespace

Worker::Worker(const WorkerOptions& options, uint32_t items, SiteData data, Transport* transport)
    : options_(options),
      transport_(transport),
      test_(std::move(data.test)),
      user_keys_(data.user_keys),
      cold_users_(data.cold_users),
      items_(items),
      job_id_(options.job_id) {
  schemes_[static_cast<size_t>(Aggregation::kNone)] = MakePlainSite(this);
  schemes_[static_cast<size_t>(Aggregation::kSecAgg)] = MakeSecAggSite(this);
  schemes_[static_cast<size_t>(Aggregation::kPaillier)] = MakePaillierSite(this);
  data.test.clear();
  data_ = std::move(data);
  if (!options_.state_dir.empty()) {
    std::string dir = options_.state_dir;
    for (size_t at; (at = dir.find("{site}")) != std::string::npos;)
      dir.replace(at, 6, std::to_string(options_.site));
    state_ = std::make_unique<SiteStateStore>(dir, options_.site, options_.checkpoint_every,
                                              options_.config_hash);
    if (options_.resume_round > 0) {
      Result<std::optional<SiteStateStore::Saved>> saved =
          state_->TakeForResume(options_.resume_round);
      if (saved.ok() && *saved) {
        if (Status check = state_->Check(**saved, ""); !check.ok()) saved = check;
      }
      if (saved.ok()) {
        resume_state_ = std::move(saved).value();
      } else {  // every request is answered with it: nothing is half-loaded
        model_status_ = saved.status().WithContext("site " + std::to_string(options_.site));
        spdlog::error("{}", model_status_.message());
      }
    }
  }
}

Worker::~Worker() = default;

const crypto::SigningKey& Worker::identity() const {
  std::call_once(identity_once_, [this] {
    if (options_.identity) {
      identity_ = *options_.identity;
      return;
    }
    // Fails only when the OS CSPRNG is unavailable, which nothing survives,
    // or when the simulator cannot make a channel whose options the first
    // site's channel already proved at start-up.
    Result<crypto::SigningKey> key =
        options_.make_identity ? options_.make_identity() : crypto::GenerateSigningKey();
    if (!key.ok()) {
      spdlog::critical("site {}: {}", options_.site, key.status().message());
      std::abort();
    }
    identity_ = *key;
  });
  return identity_;
}

Status Worker::EnsureModel() {
  if (model_ || !model_status_.ok()) return model_status_;
  Result<std::unique_ptr<Model>> model = MakeModel(options_, items_, std::move(*data_));
  data_.reset();
  if (model.ok() && resume_state_) {
    Status loaded = state_->Check(*resume_state_, std::string((*model)->name()));
    if (loaded.ok()) {
      std::istringstream in(resume_state_->state);
      loaded = (*model)->LoadState(in, "site state " + resume_state_->path);
    }
    if (loaded.ok() && !resume_state_->control.empty())
      loaded = control_.Load(resume_state_->control, "site state " + resume_state_->path);
    resume_state_.reset();
    if (!loaded.ok()) model = loaded;
    local_trained_ = loaded.ok();
  }
  if (model.ok()) {
    model_ = std::move(model).value();
  } else {
    model_status_ = model.status().WithContext("site " + std::to_string(options_.site));
    spdlog::error("{}", model_status_.message());
  }
  return model_status_;
}

void Worker::AfterAnswer() {
  if (options_.keep_global_model || !model_) return;
  model_->ReleaseGlobal();
  model_version_ = UINT64_MAX;
}

const std::map<uint32_t, crypto::Key32>& Worker::roster() const {
  static const std::map<uint32_t, crypto::Key32> kNone;
  return options_.roster ? *options_.roster : kNone;
}

std::string Worker::Where(uint32_t round) const {
  return "site " + std::to_string(options_.site) + " (rank " + std::to_string(transport_->rank()) +
         "), round " + std::to_string(round);
}

Status Worker::SendError(uint32_t round, const std::string& message) {
  const std::string where = Where(round);
  SiteError error{round, message.starts_with(where) ? message : where + ": " + message};
  spdlog::warn("{}", error.message);
  return transport_->Send(options_.coordinator_rank,
                          EncodeMessage(error, round, static_cast<uint32_t>(transport_->rank())));
}

Status Worker::AdoptModel(bool included, std::vector<ParamBlock>* model, uint64_t version,
                          uint32_t round) {
  FEDREC_RETURN_IF_ERROR(EnsureModel());
  if (included) {
    if (!model_->SetGlobalBlocks(std::move(*model))) {
      std::string expected;
      for (const ParamBlock& b : model_->GlobalBlocks())
        expected += (expected.empty() ? "" : ", ") + b.name + " " + std::to_string(b.rows) + "x" +
                    std::to_string(b.cols);
      return Status::InvalidArgument(Where(round) +
                                     ": the global model sent does not match this site's " +
                                     std::string(model_->name()) + " model (" + expected + ")");
    }
    model_version_ = version;
    return Status::Ok();
  }
  if (model_version_ != version) {
    return Status::InvalidArgument(
        Where(round) + ": asked to use model version " + std::to_string(version) +
        " without receiving it; this site holds " +
        (model_version_ == UINT64_MAX ? std::string("none") : std::to_string(model_version_)));
  }
  return Status::Ok();
}

namespace {

TrainPlan PlanOf(const RoundPlan& plan, const SiteControl& control) {
  TrainPlan train;
  train.round = plan.round;
  train.epoch_offset = plan.epoch_offset;
  train.epochs = plan.local_epochs;
  train.lr = plan.lr;
  train.proximal_mu = plan.proximal_mu;
  if (control.active()) train.drift = control.drift();
  return train;
}

}  // namespace

Status Worker::OnRoundPlan(const FrameView& frame) {
  Result<RoundPlan> plan = DecodeMessage<RoundPlan>(frame);
  if (!plan.ok()) return SendError(frame.header.round, plan.status().message());
  if (!(plan->proximal_mu >= 0.0f && std::isfinite(plan->proximal_mu))) {
    return SendError(plan->round,
                     "round plan: expected a proximal coefficient that is a finite "
                     "number >= 0, found " +
                         std::to_string(plan->proximal_mu));
  }
  if (Status shards = CheckShardRanks(*plan); !shards.ok())
    return SendError(plan->round, shards.message());
  shard_ranks_ = plan->shard_ranks;
  if (plan->evaluate && plan->aggregation != Aggregation::kSecAgg) {
    return SendError(plan->round, std::string("a plan that evaluates the previous round's model "
                                              "must use secure aggregation (secagg), found ") +
                                      AggregationName(plan->aggregation));
  }
  Status adopted = AdoptModel(plan->includes_model, &plan->model, plan->model_version, plan->round);
  if (!adopted.ok()) return SendError(plan->round, adopted.message());
  plan->model.clear();  // adopted: the plan must not hold a second copy through the round
  plan->model.shrink_to_fit();
  // Version 0 is the initial model, which has no global mean yet: each site
  // starts from its own mean, and the first aggregation forms the global one.
  // Under differential privacy the site's own mean would leave it outside
  // the clipped, noised update: the global mean stays the initial model's.
  if (plan->model_version == 0 && plan->dp_mode == 0) model_->OnInitialModel();
  if (Status control = BeginControl(&*plan); !control.ok())
    return SendError(plan->round, control.message());
  if (Status steps = BeginSteps(*plan); !steps.ok()) return SendError(plan->round, steps.message());
  if (Status dp = dp_.Begin(*model_, *plan, options_.dp); !dp.ok())
    return SendError(plan->round, dp.WithContext(Where(plan->round)).message());
  if (dp_.active() && (!plan->control.empty() || plan->steps_unit != 0.0f || control_.active() ||
                       steps_.active())) {
    return SendError(plan->round, Where(plan->round) +
                                      ": differential privacy with control variates (scaffold) "
                                      "or normalized steps (fednova) is not supported");
  }
  std::vector<uint64_t> ride_eval;
  if (plan->evaluate) {  // the plan's model before training on it: the previous round's
    ride_eval = EncodeEvalSums(EvaluateModel(plan->round - 1), eval_layout());
  }

  if (plan->aggregation != Aggregation::kNone) {
    if (Status job = AdoptJob(plan->job_id); !job.ok())
      return SendError(plan->round, job.message());
  }
  SiteScheme& scheme = *schemes_[static_cast<size_t>(plan->aggregation)];
  return scheme.OnPlan(std::move(plan).value(), std::move(ride_eval));
}

Status Worker::CheckShardRanks(const RoundPlan& plan) const {
  constexpr size_t kMaxShards = 4096;
  const std::vector<int32_t>& ranks = plan.shard_ranks;
  if (ranks.size() > kMaxShards) {
    return Status::InvalidArgument("the plan names " + std::to_string(ranks.size()) +
                                   " shard servers, expected at most " +
                                   std::to_string(kMaxShards));
  }
  for (size_t s = 0; s < ranks.size(); ++s) {
    if (ranks[s] < 0 || ranks[s] >= transport_->size() || ranks[s] == transport_->rank() ||
        ranks[s] == options_.coordinator_rank) {
      return Status::InvalidArgument(
          "the plan names rank " + std::to_string(ranks[s]) + " as shard server " +
          std::to_string(s) + ", expected another rank of the job's " +
          std::to_string(transport_->size()) + ", neither this site's nor the coordinator's");
    }
  }
  return Status::Ok();
}

Status Worker::AdoptJob(const std::array<uint8_t, 32>& job_id) {
  // A request of another job is refused: its signatures and shares would
  // bind that job, and the site takes part in one job only.
  constexpr std::array<uint8_t, 32> kNoJob{};
  if (job_id_ == kNoJob) job_id_ = job_id;
  if (job_id == job_id_) return Status::Ok();
  return Status::InvalidArgument("the request is for job " + crypto::ToHex(job_id).substr(0, 16) +
                                 "..., but this site takes part in job " +
                                 crypto::ToHex(job_id_).substr(0, 16) + "...");
}

Status Worker::BeginControl(RoundPlan* plan) {
  if (plan->control.empty()) {
    control_.End();
    return Status::Ok();
  }
  if (!model_->SupportsControlVariates()) {
    return Status::InvalidArgument(Where(plan->round) +
                                   ": the plan carries control variates "
                                   "(strategy scaffold), which model " +
                                   std::string(model_->name()) + " does not train with");
  }
  FEDREC_RETURN_IF_ERROR(control_.Begin(plan->control, *model_).WithContext(Where(plan->round)));
  plan->control.clear();  // held by control_ for the round
  plan->control.shrink_to_fit();
  return Status::Ok();
}

Status Worker::BeginSteps(const RoundPlan& plan) {
  if (plan.steps_unit == 0.0f) {
    steps_.End();
    return Status::Ok();
  }
  if (!model_->CountsLocalSteps()) {
    return Status::InvalidArgument(Where(plan.round) +
                                   ": the plan asks for an update normalized by local steps "
                                   "(strategy fednova), which model " +
                                   std::string(model_->name()) + " does not count");
  }
  const uint64_t cap = plan.aggregation == Aggregation::kNone ? UINT64_MAX : plan.max_weight;
  return steps_.Begin(*model_, plan.steps_unit, cap).WithContext(Where(plan.round));
}

Result<LossSums> Worker::TrainOn(const RoundPlan& plan) {
  Result<LossSums> trained = dp_.active()
                                 ? dp_.Train(model_.get(), PlanOf(plan, control_), options_.seed,
                                             [this](const TrainPlan& p) { return TrainModel(p); })
                                 : TrainModel(PlanOf(plan, control_));
  if (!trained.ok()) return trained.status().WithContext(Where(plan.round));
  local_trained_ = true;
  const LossSums loss = *trained;
  control_.Finish(*model_, loss.lr_sum);
  steps_.Finish(model_.get(), loss);
  if (state_) {
    FEDREC_RETURN_IF_ERROR(
        state_->Save(plan.round, *model_, control_.Save()).WithContext(Where(plan.round)));
  }
  return loss;
}

std::vector<ParamBlock> Worker::UploadShapes() const {
  if (dp_.active()) return dp_.Shapes();
  std::vector<ParamBlock> shapes = model_->UploadShapes();
  for (ParamBlock& shape : control_.Shapes()) shapes.push_back(std::move(shape));
  for (ParamBlock& shape : steps_.Shapes()) shapes.push_back(std::move(shape));
  return shapes;
}

NoiseShareAdder Worker::DpNoiseShares(const RoundPlan& plan, uint32_t share_sites) const {
  return dp_.NoiseShares(plan.frac_bits, share_sites, options_.seed, plan.round, options_.site);
}

std::vector<DenseBlockView> Worker::UploadViews() const {
  if (dp_.active()) return dp_.Views();
  std::vector<DenseBlockView> views = model_->Upload();
  for (const DenseBlockView& view : control_.Views()) views.push_back(view);
  for (const DenseBlockView& view : steps_.Views()) views.push_back(view);
  return views;
}

Result<LossSums> Worker::TrainModel(const TrainPlan& plan) {
  const bool byzantine = options_.byzantine.kind != ByzantineAttack::Kind::kNone;
  std::vector<ParamBlock> received;
  if (byzantine) received = model_->GlobalBlocks();
  LossSums loss;
  if (options_.trainer) {
    Result<LossSums> trained = options_.trainer->Train(model_.get(), plan);
    if (!trained.ok()) return trained.status();
    loss = *trained;
  } else {
    loss = model_->Train(plan);
  }
  model_version_ = UINT64_MAX;  // the global blocks now hold this site's training
  if (byzantine)
    ApplyByzantineAttack(options_.byzantine, received, options_.seed, plan.round, options_.site,
                         model_.get());
  return loss;
}

EvalLayout Worker::eval_layout() const {
  return EvalLayout{items_, model_ ? BinaryTasks(model_->Tasks()) : std::vector<bool>{},
                    options_.auc_bins, options_.eval_warm_cold};
}

namespace {

template <typename Group>
void FillGroup(const GroupSums& sums, Group* g, std::vector<TaskEvalSums>* tasks) {
  g->squared_error = sums.errors.squared;
  g->absolute_error = sums.errors.absolute;
  g->count = sums.errors.count;
  g->precision = sums.ranking.precision;
  g->recall = sums.ranking.recall;
  g->ndcg = sums.ranking.ndcg;
  g->hit_rate = sums.ranking.hit_rate;
  g->f1 = sums.ranking.f1;
  g->map = sums.ranking.map;
  g->ranked_users = sums.ranking.users;
  tasks->clear();
  for (const TaskSums& t : sums.tasks) {
    TaskEvalSums& k = tasks->emplace_back();
    if (t.spec.kind == TaskKind::kRating) {
      k.squared_error = t.errors.squared;
      k.absolute_error = t.errors.absolute;
      k.count = t.errors.count;
    } else {
      k.log_loss = t.binary.log_loss;
      k.count = t.binary.count;
      k.positives = t.binary.positives;
      k.negatives = t.binary.negatives;
    }
  }
}

}  // namespace

EvalReport Worker::EvaluateModel(uint32_t round) {
  // Local blocks at their initial values: evaluate with them fitted to the
  // site's data, and put the initial values back for training.
  std::vector<std::vector<float>> initial;
  if (options_.reconstruct_local && !local_trained_) {
    for (const ParamBlock& block : model_->blocks()) {
      if (!IsGlobal(block.scope)) initial.push_back(block.data);
    }
    if (!model_->ReconstructLocal()) initial.clear();
  }
  const EvalReport report = EvaluateCurrent(round);
  if (!initial.empty()) {
    size_t next = 0;
    for (ParamBlock& block : model_->blocks()) {
      if (!IsGlobal(block.scope)) block.data = std::move(initial[next++]);
    }
  }
  return report;
}

EvalReport Worker::EvaluateCurrent(uint32_t round) const {
  EvalOptions options;
  options.rating_min = options_.rating_min;
  options.rating_max = options_.rating_max;
  options.ranking = options_.evaluate_ranking;
  options.ranking_options = options_.ranking;
  options.click_negatives = options_.click_negatives;
  options.auc_bins = options_.auc_bins;
  options.warm_cold = options_.eval_warm_cold;
  options.seed = options_.seed;
  const EvalSums sums = EvaluateAll(*model_, test_, user_keys_, cold_users_, options);
  EvalReport report;
  report.round = round;
  FillGroup(sums.all, &report, &report.tasks);
  if (options_.evaluate_ranking) report.recommended = sums.all.ranking.recommended;
  if (sums.warm_cold) {
    report.groups.resize(2);
    FillGroup(sums.warm, &report.groups[0], &report.groups[0].tasks);
    FillGroup(sums.cold, &report.groups[1], &report.groups[1].tasks);
  }
  return report;
}

Status Worker::OnEvalRequest(const FrameView& frame) {
  Result<EvalRequest> request = DecodeMessage<EvalRequest>(frame);
  if (!request.ok()) return SendError(frame.header.round, request.status().message());
  Status adopted =
      AdoptModel(request->includes_model, &request->model, request->model_version, request->round);
  if (!adopted.ok()) return SendError(request->round, adopted.message());

  const EvalReport report = EvaluateModel(request->round);
  AfterAnswer();  // the sums are all the rest of the evaluation needs
  if (request->aggregation != Aggregation::kNone && request->aggregation != Aggregation::kSecAgg) {
    return SendError(request->round, std::string("evaluation sums by ") +
                                         AggregationName(request->aggregation) +
                                         ", expected none or secagg");
  }
  if (request->aggregation != Aggregation::kNone) {
    if (Status job = AdoptJob(request->job_id); !job.ok())
      return SendError(request->round, job.message());
  }
  return schemes_[static_cast<size_t>(request->aggregation)]->OnEvaluation(*request, report);
}

Status Worker::Handle(const Envelope& envelope, bool* done) {
  *done = false;
  Result<FrameView> frame = DecodeFrame(envelope);
  if (!frame.ok()) {
    // The round is unreadable; log and carry on (the coordinator times the site out).
    spdlog::warn("site {}: dropped a frame from rank {}: {}", options_.site, envelope.from,
                 frame.status().message());
    return Status::Ok();
  }
  // A frame delivered twice (a network that duplicates) is handled once:
  // the same type, round, length and checksum as one of the last few frames.
  const FrameKey key{frame->header.type, frame->header.round, frame->header.payload_length,
                     frame->header.checksum, envelope.from};
  if (std::find(recent_.begin(), recent_.end(), key) != recent_.end()) {
    spdlog::debug("site {}: ignored a duplicate {} of round {} from rank {}", options_.site,
                  MessageTypeName(key.type), key.round, envelope.from);
    return Status::Ok();
  }
  recent_.push_back(key);
  if (recent_.size() > kRecentFrames) recent_.pop_front();
  if (envelope.from != options_.coordinator_rank) {
    // A shard server of the last plan sending this decrypting site its slices.
    const auto shard = std::find(shard_ranks_.begin(), shard_ranks_.end(), envelope.from);
    if (shard != shard_ranks_.end() && frame->header.type == MessageType::kPaillierSum) {
      return schemes_[static_cast<size_t>(Aggregation::kPaillier)]->OnShardMessage(
          static_cast<uint32_t>(shard - shard_ranks_.begin()), *frame);
    }
    return SendError(frame->header.round, "frame from rank " + std::to_string(envelope.from) +
                                              ", expected only the coordinator (rank " +
                                              std::to_string(options_.coordinator_rank) +
                                              ") or a Paillier slice from a shard server");
  }
  switch (frame->header.type) {
    case MessageType::kRoundPlan:
      return OnRoundPlan(*frame);
    case MessageType::kEvalRequest:
      return OnEvalRequest(*frame);
    case MessageType::kSecAggKeyList:
    case MessageType::kSecAggRoutedShares:
    case MessageType::kSecAggUnmaskRequest:
    case MessageType::kPaillierKey:
    case MessageType::kPaillierSum:
      // A step of an encrypted scheme's protocol: Paillier's key set-up also
      // relays a key list, so it is asked first.
      for (Aggregation kind : {Aggregation::kPaillier, Aggregation::kSecAgg}) {
        SiteScheme& scheme = *schemes_[static_cast<size_t>(kind)];
        if (scheme.Claims(frame->header.type, frame->header.round)) return scheme.OnMessage(*frame);
      }
      break;
    case MessageType::kSiteHello: {
      // The coordinator's probe of a site it believed unavailable: any answer
      // tells it the site is back.
      SiteHello answer;
      answer.site = options_.site;
      answer.test_ratings = test_.size();
      return SiteContext::Send(answer, frame->header.round);
    }
    case MessageType::kShutdown: {
      *done = true;
      Result<Shutdown> shutdown = DecodeMessage<Shutdown>(*frame);
      shutdown_ = shutdown.ok() ? *shutdown : Shutdown{shutdown.status().message(), true};
      return Status::Ok();
    }
    default:
      break;
  }
  return SendError(
      frame->header.round,
      std::string("unexpected ") + MessageTypeName(frame->header.type) +
          " message at a site; expected a round plan, an evaluation request, a step of "
          "encrypted aggregation or Shutdown");
}

Status Worker::Serve(std::chrono::milliseconds idle_timeout) {
  for (;;) {
    Result<Envelope> envelope = transport_->Recv(idle_timeout);
    if (!envelope.ok())
      return envelope.status().WithContext("site " + std::to_string(options_.site));
    bool done = false;
    FEDREC_RETURN_IF_ERROR(Handle(*envelope, &done));
    if (done) {
      if (shutdown_.failed)
        return Status::Aborted("the coordinator ended the job: " + shutdown_.reason);
      return Status::Ok();
    }
  }
}

}  // namespace fedrec
