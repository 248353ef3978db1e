#include "worker/worker.h"

#include <spdlog/spdlog.h>

#include <string>
#include <utility>

namespace fedrec {

namespace {

MfTrainerOptions WithShard(MfTrainerOptions options, uint32_t site) {
  options.shard = site;
  return options;
}

// The site's trained values of every global row it touched, each weighted by
// the site's training ratings of that row (mu: all its ratings).
std::vector<BlockUpdate> CollectUpdate(const MfTrainer& trainer) {
  const MfModel& model = trainer.model();
  const auto& counts = trainer.item_counts();
  std::vector<BlockUpdate> blocks;
  for (const ParamBlock& block : model.blocks()) {
    if (!IsGlobal(block.scope)) continue;
    BlockUpdate update;
    update.name = block.name;
    update.cols = block.cols;
    if (block.name == MfModel::kGlobalMean) {
      if (!trainer.train().empty()) {
        update.rows.push_back(0);
        update.weights.push_back(static_cast<float>(trainer.train().size()));
        update.values.push_back(block.data[0]);
      }
    } else {  // item-indexed blocks
      for (uint32_t item = 0; item < block.rows; ++item) {
        if (counts[item] == 0) continue;
        update.rows.push_back(item);
        update.weights.push_back(static_cast<float>(counts[item]));
        update.values.insert(update.values.end(), block.Row(item), block.Row(item) + block.cols);
      }
    }
    blocks.push_back(std::move(update));
  }
  return blocks;
}

}  // namespace

Worker::Worker(const WorkerOptions& options, uint32_t items, SiteData data, Transport* transport)
    : options_(options),
      transport_(transport),
      trainer_(WithShard(options.trainer, options.site), items, std::move(data.train),
               data.user_keys),
      test_(std::move(data.test)) {}

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

Status Worker::AdoptModel(bool included, const std::vector<ParamBlock>& model, uint64_t version,
                          uint32_t round) {
  if (included) {
    if (!trainer_.model().SetGlobalBlocks(model)) {
      return Status::InvalidArgument(
          Where(round) + ": the global model sent does not match this " + "site's model shape (" +
          std::to_string(trainer_.model().items()) +
          " items, k = " + std::to_string(trainer_.model().factors()) + ")");
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

Status Worker::OnRoundPlan(const FrameView& frame) {
  Result<RoundPlan> plan = DecodeMessage<RoundPlan>(frame);
  if (!plan.ok()) return SendError(frame.header.round, plan.status().message());
  Status adopted = AdoptModel(plan->includes_model, plan->model, plan->model_version, plan->round);
  if (!adopted.ok()) return SendError(plan->round, adopted.message());
  // Version 0 is the initial model, which has no global mean yet: each site
  // starts from its own mean, and the first aggregation forms the global one.
  if (plan->model_version == 0) trainer_.UseShardMean();

  const EpochStats stats = trainer_.Train(plan->epoch_offset, plan->local_epochs, plan->lr);
  ModelUpdate update;
  update.round = plan->round;
  update.model_version = plan->model_version;
  update.num_examples = trainer_.train().size();
  update.train_squared_error = stats.squared_error;
  update.train_count = stats.updates;
  update.blocks = CollectUpdate(trainer_);
  return transport_->Send(
      options_.coordinator_rank,
      EncodeMessage(update, plan->round, static_cast<uint32_t>(transport_->rank())));
}

Status Worker::OnEvalRequest(const FrameView& frame) {
  Result<EvalRequest> request = DecodeMessage<EvalRequest>(frame);
  if (!request.ok()) return SendError(frame.header.round, request.status().message());
  Status adopted =
      AdoptModel(request->includes_model, request->model, request->model_version, request->round);
  if (!adopted.ok()) return SendError(request->round, adopted.message());

  const MfModel& model = trainer_.model();
  EvalReport report;
  report.round = request->round;
  const ErrorSums errors = EvaluateErrors(model, test_, options_.rating_min, options_.rating_max);
  report.squared_error = errors.squared;
  report.absolute_error = errors.absolute;
  report.count = errors.count;
  if (options_.evaluate_ranking) {
    const RankingSums ranking = EvaluateRanking(model, trainer_.train(), test_, options_.ranking);
    report.precision = ranking.precision;
    report.recall = ranking.recall;
    report.ndcg = ranking.ndcg;
    report.hit_rate = ranking.hit_rate;
    report.ranked_users = ranking.users;
  }
  return transport_->Send(
      options_.coordinator_rank,
      EncodeMessage(report, request->round, static_cast<uint32_t>(transport_->rank())));
}

Status Worker::Handle(const Envelope& envelope, bool* done) {
  *done = false;
  Result<FrameView> frame = DecodeFrame(envelope.bytes);
  if (!frame.ok()) {
    // The round is unreadable; log and carry on (the coordinator times the site out).
    spdlog::warn("site {}: dropped a frame from rank {}: {}", options_.site, envelope.from,
                 frame.status().message());
    return Status::Ok();
  }
  if (envelope.from != options_.coordinator_rank) {
    return SendError(frame->header.round, "frame from rank " + std::to_string(envelope.from) +
                                              ", expected only the coordinator (rank " +
                                              std::to_string(options_.coordinator_rank) + ")");
  }
  switch (frame->header.type) {
    case MessageType::kRoundPlan:
      return OnRoundPlan(*frame);
    case MessageType::kEvalRequest:
      return OnEvalRequest(*frame);
    case MessageType::kShutdown: {
      *done = true;
      Result<Shutdown> shutdown = DecodeMessage<Shutdown>(*frame);
      shutdown_ = shutdown.ok() ? *shutdown : Shutdown{shutdown.status().message(), true};
      return Status::Ok();
    }
    default:
      return SendError(frame->header.round,
                       std::string("unexpected ") + MessageTypeName(frame->header.type) +
                           " message at a site; expected RoundPlan, EvalRequest or Shutdown");
  }
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
