#include "worker/worker.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>
#include <string>
#include <utility>

#include "base/little_endian.h"
#include "protocol/paillier.h"
#include "protocol/paillier_round.h"
#include "protocol/secagg.h"
#include "protocol/update_codec.h"

namespace fedrec {

namespace {

// The site's upload in its sparse form: the rows of every upload block the
// site has a weight for, each with its weight.
std::vector<BlockUpdate> CollectUpdate(const std::vector<ParamBlock>& shapes,
                                       const std::vector<DenseBlockView>& views) {
  std::vector<BlockUpdate> blocks;
  for (size_t b = 0; b < shapes.size(); ++b) {
    const ParamBlock& shape = shapes[b];
    const DenseBlockView& view = views[b];
    BlockUpdate update;
    update.name = shape.name;
    update.cols = shape.cols;
    for (uint32_t row = 0; row < shape.rows; ++row) {
      if (view.weights[row] == 0) continue;
      const float* values = view.values.data() + static_cast<size_t>(row) * shape.cols;
      update.rows.push_back(row);
      update.weights.push_back(static_cast<float>(view.weights[row]));
      update.values.insert(update.values.end(), values, values + shape.cols);
    }
    blocks.push_back(std::move(update));
  }
  return blocks;
}

// Slice `shard` of `shards` of a sparse update: the rows ShardSlice(rows,
// shard, shards) of each block, numbered from the slice's first row.
std::vector<BlockUpdate> SliceRows(const std::vector<ParamBlock>& shapes,
                                   const std::vector<BlockUpdate>& blocks, uint32_t shard,
                                   uint32_t shards) {
  std::vector<BlockUpdate> out;
  for (size_t b = 0; b < blocks.size(); ++b) {
    const BlockUpdate& block = blocks[b];
    const Slice rows = ShardSlice(shapes[b].rows, shard, shards);
    BlockUpdate& slice = out.emplace_back();
    slice.name = block.name;
    slice.cols = block.cols;
    const auto first = std::lower_bound(block.rows.begin(), block.rows.end(), rows.begin);
    const auto last = std::lower_bound(first, block.rows.end(), rows.end);
    const size_t from = static_cast<size_t>(first - block.rows.begin());
    const size_t to = static_cast<size_t>(last - block.rows.begin());
    for (size_t k = from; k < to; ++k)
      slice.rows.push_back(block.rows[k] - static_cast<uint32_t>(rows.begin));
    slice.weights.assign(block.weights.begin() + static_cast<ptrdiff_t>(from),
                         block.weights.begin() + static_cast<ptrdiff_t>(to));
    slice.values.assign(block.values.begin() + static_cast<ptrdiff_t>(from * block.cols),
                        block.values.begin() + static_cast<ptrdiff_t>(to * block.cols));
  }
  return out;
}

// An encrypted update carries no NaN or infinity: the fixed-point encoding
// would turn one into a large finite value that passes every later check and
// can wrap the ring. (Plain updates are checked when they are decoded.)
Status CheckFinite(const Model& model) {
  const std::vector<ParamBlock> shapes = model.UploadShapes();
  const std::vector<DenseBlockView> views = model.Upload();
  for (size_t b = 0; b < shapes.size(); ++b) {
    const std::span<const float> values = views[b].values;
    for (size_t i = 0; i < values.size(); ++i) {
      if (std::isfinite(values[i])) continue;
      const uint32_t cols = std::max<uint32_t>(shapes[b].cols, 1);
      return Status::InvalidArgument(
          "refusing to send an update holding " + std::to_string(values[i]) + " in block '" +
          shapes[b].name + "', row " + std::to_string(i / cols) + ", column " +
          std::to_string(i % cols) +
          ": expected finite values (training diverged; lower the learning rate)");
    }
  }
  return Status::Ok();
}

Result<std::unique_ptr<Model>> MakeModel(const WorkerOptions& options, uint32_t items,
                                         SiteData data) {
  if (!options.make_model)
    return Status::InvalidArgument("no model: WorkerOptions::make_model is not set");
  return options.make_model(
      ModelData{items, std::move(data.train), std::move(data.user_keys), options.site});
}

constexpr std::string_view kSealingInfo = "fedrec paillier key share";

// Owns secret bytes and wipes them on every way out of a scope.
struct WipedBytes {
  std::vector<uint8_t> bytes;
  ~WipedBytes() { crypto::Cleanse(bytes); }
};

}  // namespace

// A site's part of Paillier aggregation: the key set-up in progress and its
// share of the decryption key once it is done.
struct PaillierSiteState {
  uint32_t setup_round = 0;
  uint32_t dealer = 0;
  uint32_t modulus_bits = 0;
  uint32_t threshold = 0;  // derived by this site (paillier_round::DecryptionThreshold)
  uint32_t parties = 0;    // the roster's sites
  paillier_round::JobId job{};
  std::optional<crypto::DhKeyPair> setup_key;
  SecAggKeys offered;  // this site's signed set-up key
  std::optional<PaillierKeyShare> share;
};

Worker::Worker(const WorkerOptions& options, uint32_t items, SiteData data, Transport* transport)
    : options_(options),
      transport_(transport),
      test_(std::move(data.test)),
      items_(items),
      job_id_(options.job_id) {
  data.test.clear();
  data_ = std::move(data);
  if (options_.identity) {
    identity_ = *options_.identity;
  } else {
    // Only fails when the OS CSPRNG is unavailable, which nothing survives.
    Result<crypto::SigningKey> key = crypto::GenerateSigningKey();
    if (!key.ok()) {
      spdlog::critical("site {}: {}", options_.site, key.status().message());
      std::abort();
    }
    identity_ = *key;
  }
}

Worker::~Worker() = default;

Status Worker::EnsureModel() {
  if (model_ || !model_status_.ok()) return model_status_;
  Result<std::unique_ptr<Model>> model = MakeModel(options_, items_, std::move(*data_));
  data_.reset();
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

bool Worker::Drops(uint32_t round, uint32_t step) const {
  return options_.drop_step == step && options_.drop_round == round;
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

Status Worker::AdoptModel(bool included, const std::vector<ParamBlock>& model, uint64_t version,
                          uint32_t round) {
  FEDREC_RETURN_IF_ERROR(EnsureModel());
  if (included) {
    if (!model_->SetGlobalBlocks(model)) {
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
  if (plan->evaluate && plan->aggregation != Aggregation::kSecAgg) {
    return SendError(plan->round, std::string("a plan that evaluates the previous round's model "
                                              "must use secure aggregation (secagg), found ") +
                                      AggregationName(plan->aggregation));
  }
  Status adopted = AdoptModel(plan->includes_model, plan->model, plan->model_version, plan->round);
  if (!adopted.ok()) return SendError(plan->round, adopted.message());
  plan->model.clear();  // adopted: the plan must not hold a second copy through the round
  plan->model.shrink_to_fit();
  // Version 0 is the initial model, which has no global mean yet: each site
  // starts from its own mean, and the first aggregation forms the global one.
  if (plan->model_version == 0) model_->OnInitialModel();
  if (Status control = BeginControl(&*plan); !control.ok())
    return SendError(plan->round, control.message());
  if (Status steps = BeginSteps(*plan); !steps.ok()) return SendError(plan->round, steps.message());
  ride_eval_.clear();
  if (plan->evaluate) {  // the plan's model before training on it: the previous round's
    ride_eval_ = EncodeEvalSums(EvaluateModel(plan->round - 1), items_);
  }

  if (plan->aggregation != Aggregation::kNone) {
    if (Status job = AdoptJob(plan->job_id); !job.ok())
      return SendError(plan->round, job.message());
    pending_plan_ = std::move(plan).value();
    secagg_.reset();
    if (pending_plan_->aggregation == Aggregation::kSecAgg) {
      secagg_eval_.reset();
      const RoundPlan& p = *pending_plan_;
      const uint64_t eval_words = p.evaluate ? EvalWordsLength(items_, p.ring_bits) : 0;
      secagg::Params params = secagg::ParamsOf(
          p, p.round, p.ring_bits, EncodedLength(WithTrainLoss(UploadShapes())) + eval_words);
      params.ring_seed = p.ring_seed;  // must be empty: CheckParams
      FEDREC_RETURN_IF_ERROR(StartSecAgg(std::move(params)));
      if (!secagg_) return Status::Ok();  // refused or dropped
      // The input is needed only once the shares are routed (step 3): training
      // now overlaps the round trips of the key agreement.
      secagg_trained_ = TrainLocally();
      if (!options_.keep_global_model) {
        // Hold only the rows with a weight until step 3, not the model.
        if (Status finite = CheckFinite(*model_); !finite.ok()) {
          secagg_.reset();
          secagg_trained_.reset();
          return SendError(p.round, finite.message());
        }
        HoldUpload();
        AfterAnswer();
      }
      return Status::Ok();
    }
    return OnPaillierMessage(frame);
  }

  const LossSums loss = TrainOn(*plan);
  ModelUpdate update;
  update.round = plan->round;
  update.model_version = plan->model_version;
  update.num_examples = model_->train().size();
  update.train_squared_error = loss.sum;
  update.train_count = loss.count;
  update.blocks = CollectUpdate(UploadShapes(), UploadViews());
  AfterAnswer();
  if (!plan->shard_ranks.empty()) {
    // Sharded: each shard server gets its rows, the coordinator the rest.
    const std::vector<ParamBlock> shapes = UploadShapes();
    std::vector<BlockUpdate> blocks = std::move(update.blocks);
    update.blocks.clear();
    const uint32_t shards = static_cast<uint32_t>(plan->shard_ranks.size());
    for (uint32_t s = 0; s < shards; ++s) {
      ModelUpdate slice = update;
      slice.blocks = SliceRows(shapes, blocks, s, shards);
      FEDREC_RETURN_IF_ERROR(transport_->Send(
          plan->shard_ranks[s],
          EncodeMessage(slice, plan->round, static_cast<uint32_t>(transport_->rank()))));
    }
  }
  return transport_->Send(
      options_.coordinator_rank,
      EncodeMessage(update, plan->round, static_cast<uint32_t>(transport_->rank())));
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
      return Status::InvalidArgument("the plan names rank " + std::to_string(ranks[s]) +
                                     " as shard server " + std::to_string(s) +
                                     ", expected another rank of the job's " +
                                     std::to_string(transport_->size()) +
                                     ", neither this site's nor the coordinator's");
    }
  }
  if (!ranks.empty() && plan.aggregation == Aggregation::kPaillier)
    return Status::InvalidArgument("a Paillier plan with shard servers, expected none");
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

Status Worker::StartSecAgg(secagg::Params params) {
  const RoundPlan& p = *pending_plan_;
  secagg_trained_.reset();
  if (Status valid = secagg::CheckParams(params, options_.secagg_policy); !valid.ok())
    return SendError(p.round, "secure aggregation parameters: " + valid.message());
  if (!std::binary_search(params.sites.begin(), params.sites.end(), options_.site))
    return SendError(p.round, "the plan's participants do not include this site");
  auto client = std::make_unique<secagg::Client>(std::move(params), options_.site, identity_,
                                                 roster(), options_.secagg_policy);
  if (Drops(p.round, 1)) return Status::Ok();
  Result<SecAggKeys> keys = client->AdvertiseKeys();
  if (!keys.ok()) return SendError(p.round, keys.status().message());
  secagg_ = std::move(client);
  return Send(*keys, p.round);
}

template <typename M>
Status Worker::Send(const M& message, uint32_t round) {
  return transport_->Send(options_.coordinator_rank,
                          EncodeMessage(message, round, static_cast<uint32_t>(transport_->rank())));
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

LossSums Worker::TrainOn(const RoundPlan& plan) {
  const LossSums loss = TrainModel(PlanOf(plan, control_));
  control_.Finish(*model_, loss.lr_sum);
  steps_.Finish(model_.get(), loss);
  return loss;
}

std::vector<ParamBlock> Worker::UploadShapes() const {
  std::vector<ParamBlock> shapes = model_->UploadShapes();
  for (ParamBlock& shape : control_.Shapes()) shapes.push_back(std::move(shape));
  for (ParamBlock& shape : steps_.Shapes()) shapes.push_back(std::move(shape));
  return shapes;
}

std::vector<DenseBlockView> Worker::UploadViews() const {
  std::vector<DenseBlockView> views = model_->Upload();
  for (const DenseBlockView& view : control_.Views()) views.push_back(view);
  for (const DenseBlockView& view : steps_.Views()) views.push_back(view);
  return views;
}

std::vector<double> Worker::TrainLocally() {
  const LossSums loss = TrainOn(*pending_plan_);
  return {loss.sum, static_cast<double>(loss.count)};
}

LossSums Worker::TrainModel(const TrainPlan& plan) {
  const bool byzantine = options_.byzantine.kind != ByzantineAttack::Kind::kNone;
  std::vector<ParamBlock> received;
  if (byzantine) received = model_->GlobalBlocks();
  const LossSums loss = model_->Train(plan);
  model_version_ = UINT64_MAX;  // the global blocks now hold this site's training
  if (byzantine)
    ApplyByzantineAttack(options_.byzantine, received, options_.seed, plan.round, options_.site,
                         model_.get());
  return loss;
}

void Worker::HoldUpload() {
  const std::vector<ParamBlock> shapes = UploadShapes();
  const std::vector<DenseBlockView> views = UploadViews();
  held_upload_.assign(shapes.size(), HeldBlock{});
  for (size_t b = 0; b < shapes.size(); ++b) {
    HeldBlock& held = held_upload_[b];
    const uint32_t cols = shapes[b].cols;
    held.weights.assign(views[b].weights.begin(), views[b].weights.end());
    for (uint32_t row = 0; row < shapes[b].rows; ++row) {
      if (held.weights[row] == 0) continue;
      held.rows.push_back(row);
      const float* values = views[b].values.data() + static_cast<size_t>(row) * cols;
      held.values.insert(held.values.end(), values, values + cols);
    }
  }
}

Result<std::vector<uint64_t>> Worker::TrainEncoded(std::vector<double>* metrics) {
  *metrics = TrainLocally();
  FEDREC_RETURN_IF_ERROR(CheckFinite(*model_));
  const RoundPlan& plan = *pending_plan_;
  return EncodeUpdate(UploadShapes(), CollectUpdate(UploadShapes(), UploadViews()), FormatOf(plan),
                      options_.seed, plan.round, options_.site);
}

Status Worker::SendMaskedInput(const SecAggRoutedShares& routed) {
  const RoundPlan& plan = *pending_plan_;
  if (secagg_eval_) {  // a secure evaluation: the metric sums
    Result<SecAggMasked> masked = secagg_->MaskInput(*secagg_eval_, routed);
    secagg_eval_.reset();
    if (!masked.ok()) return SendError(plan.round, masked.status().message());
    return Send(*masked, plan.round);
  }
  // The upload's views: the model's blocks, or the rows held since step 1
  // laid out densely for the time of masking.
  std::vector<DenseBlockView> views;
  std::vector<std::vector<float>> dense;
  if (!held_upload_.empty()) {
    const std::vector<ParamBlock> shapes = UploadShapes();
    for (size_t b = 0; b < held_upload_.size(); ++b) {
      const HeldBlock& held = held_upload_[b];
      const uint32_t cols = shapes[b].cols;
      std::vector<float>& values =
          dense.emplace_back(static_cast<size_t>(shapes[b].rows) * cols, 0.0f);
      for (size_t i = 0; i < held.rows.size(); ++i) {
        std::copy_n(held.values.begin() + static_cast<ptrdiff_t>(i * cols), cols,
                    values.begin() + static_cast<ptrdiff_t>(held.rows[i]) * cols);
      }
      views.push_back(DenseBlockView{held.weights, values});
    }
  } else {
    if (Status finite = CheckFinite(*model_); !finite.ok())
      return SendError(plan.round, finite.message());
    views = UploadViews();
  }
  const FixedPointFormat format = FormatOf(plan);
  // The training loss is masked with the update (update_codec.h).
  const TrainLossRow loss((*secagg_trained_)[0], static_cast<uint64_t>((*secagg_trained_)[1]),
                          format);
  secagg_trained_.reset();
  views.push_back(loss.View());
  Result<RangeEncoder> encoder =
      RangeEncoder::Create(WithTrainLoss(UploadShapes()), std::move(views), format, options_.seed,
                           plan.round, options_.site);
  if (!encoder.ok()) return SendError(plan.round, encoder.status().message());
  SecAggMasked fields;
  fields.round = plan.round;
  fields.site = options_.site;
  fields.ring_bits = plan.ring_bits;
  // The previous round's evaluation sums, when they ride along, follow.
  const uint64_t update_words = encoder->length();
  const uint64_t eval_words = plan.evaluate ? EvalWordsLength(items_, plan.ring_bits) : 0;
  const uint32_t word_bytes = plan.ring_bits / 8;
  // One frame to the coordinator, or (sharded) one per shard server with its
  // slice of the words, each masked at its offset.
  const uint32_t shards = static_cast<uint32_t>(plan.shard_ranks.size());
  std::vector<MaskedFrame> frames;
  std::vector<std::span<uint8_t>> pieces;
  for (uint32_t s = 0; s < std::max(shards, 1u); ++s) {
    const Slice slice = ShardSlice(update_words + eval_words, s, std::max(shards, 1u),
                                   kShardWordAlign);
    frames.push_back(EncodeMaskedFrame(fields, slice.size() * word_bytes, plan.round,
                                       static_cast<uint32_t>(transport_->rank())));
    pieces.push_back(frames.back().input);
  }
  const Status masked = secagg_->MaskInputPiecesInPlace(
      pieces,
      [&](size_t begin, size_t end, uint8_t* piece) {
        const uint64_t split = std::clamp<uint64_t>(update_words, begin, end);
        if (begin < split) encoder->Encode(begin, split, piece);
        if (split < end) {
          WriteEvalWords(ride_eval_, plan.ring_bits, split - update_words, end - update_words,
                         piece + (split - begin) * word_bytes);
        }
      },
      routed);
  held_upload_.clear();
  ride_eval_.clear();
  if (!masked.ok()) return SendError(plan.round, masked.message());
  if (shards == 0) return transport_->Send(options_.coordinator_rank, std::move(frames[0].frame));
  for (uint32_t s = 0; s < shards; ++s)
    FEDREC_RETURN_IF_ERROR(transport_->Send(plan.shard_ranks[s], std::move(frames[s].frame)));
  return Send(fields, plan.round);  // the notice: the slices are out
}

Status Worker::OnSecAggMessage(const FrameView& frame) {
  const uint32_t round = frame.header.round;
  if (!secagg_ || !pending_plan_ || pending_plan_->round != round) {
    spdlog::warn("{}: dropped {}: no secure-aggregation round {} is in progress here", Where(round),
                 MessageTypeName(frame.header.type), round);
    return Status::Ok();
  }
  switch (frame.header.type) {
    case MessageType::kSecAggKeyList: {
      Result<SecAggKeyList> list = DecodeMessage<SecAggKeyList>(frame);
      if (!list.ok()) return SendError(round, list.status().message());
      if (Drops(round, 2)) return Status::Ok();
      Result<SecAggShares> shares = secagg_->ShareKeys(*list);
      if (!shares.ok()) return SendError(round, shares.status().message());
      return Send(*shares, round);
    }
    case MessageType::kSecAggRoutedShares: {
      Result<SecAggRoutedShares> routed = DecodeMessage<SecAggRoutedShares>(frame);
      if (!routed.ok()) return SendError(round, routed.status().message());
      if (Drops(round, 3)) return Status::Ok();
      if (!secagg_trained_ && !secagg_eval_) {
        return SendError(round,
                         "routed shares arrived, but this site has not advertised its "
                         "round keys (nor trained) in this round");
      }
      return SendMaskedInput(*routed);
    }
    case MessageType::kSecAggUnmaskRequest: {
      Result<SecAggUnmaskRequest> request = DecodeMessage<SecAggUnmaskRequest>(frame);
      if (!request.ok()) return SendError(round, request.status().message());
      if (!request->unmask) {  // step 4: the consistency check
        if (Drops(round, 4)) return Status::Ok();
        Result<SecAggSurvivorSignature> signature = secagg_->SignSurvivors(*request);
        if (!signature.ok()) return SendError(round, signature.status().message());
        return Send(*signature, round);
      }
      if (Drops(round, 5)) return Status::Ok();
      Result<SecAggUnmaskShares> shares = secagg_->Unmask(*request);
      secagg_.reset();  // the round's secrets are spent
      pending_plan_.reset();
      if (!shares.ok()) return SendError(round, shares.status().message());
      return Send(*shares, round);
    }
    default:
      return SendError(round, std::string("unexpected ") + MessageTypeName(frame.header.type));
  }
}

EvalReport Worker::EvaluateModel(uint32_t round) const {
  EvalReport report;
  report.round = round;
  const ErrorSums errors = EvaluateErrors(*model_, test_, options_.rating_min, options_.rating_max);
  report.squared_error = errors.squared;
  report.absolute_error = errors.absolute;
  report.count = errors.count;
  if (options_.evaluate_ranking) {
    const RankingSums ranking = EvaluateRanking(*model_, test_, options_.ranking);
    report.precision = ranking.precision;
    report.recall = ranking.recall;
    report.ndcg = ranking.ndcg;
    report.hit_rate = ranking.hit_rate;
    report.f1 = ranking.f1;
    report.map = ranking.map;
    report.ranked_users = ranking.users;
    report.recommended = ranking.recommended;
  }
  return report;
}

Status Worker::OnEvalRequest(const FrameView& frame) {
  Result<EvalRequest> request = DecodeMessage<EvalRequest>(frame);
  if (!request.ok()) return SendError(frame.header.round, request.status().message());
  Status adopted =
      AdoptModel(request->includes_model, request->model, request->model_version, request->round);
  if (!adopted.ok()) return SendError(request->round, adopted.message());

  const EvalReport report = EvaluateModel(request->round);
  AfterAnswer();  // the sums are all the rest of the evaluation needs
  if (request->aggregation == Aggregation::kSecAgg) {
    if (Status job = AdoptJob(request->job_id); !job.ok())
      return SendError(request->round, job.message());
    // The sums go through secure aggregation under their own round label.
    const uint32_t label = EvalSecAggRound(request->round);
    RoundPlan plan;  // the round in progress: its label and scheme
    plan.round = label;
    plan.model_version = request->model_version;
    plan.aggregation = Aggregation::kSecAgg;
    plan.ring_bits = 64;
    pending_plan_ = std::move(plan);
    secagg_.reset();
    secagg_trained_.reset();
    secagg_eval_ = EncodeEvalSums(report, items_);
    Status started = StartSecAgg(secagg::ParamsOf(*request, label, 64, EvalSumsLength(items_)));
    if (!secagg_) secagg_eval_.reset();
    return started;
  }
  if (request->aggregation != Aggregation::kNone) {
    return SendError(request->round, std::string("evaluation sums by ") +
                                         AggregationName(request->aggregation) +
                                         ", expected none or secagg");
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
    case MessageType::kSecAggKeyList:
      if (paillier_ && paillier_->setup_key && paillier_->setup_round == frame->header.round)
        return OnPaillierMessage(*frame);
      return OnSecAggMessage(*frame);
    case MessageType::kSecAggRoutedShares:
    case MessageType::kSecAggUnmaskRequest:
      return OnSecAggMessage(*frame);
    case MessageType::kPaillierKey:
    case MessageType::kPaillierSum:
      return OnPaillierMessage(*frame);
    case MessageType::kSiteHello: {
      // The coordinator's probe of a site it believed unavailable: any answer
      // tells it the site is back.
      SiteHello answer;
      answer.site = options_.site;
      answer.test_ratings = test_.size();
      return Send(answer, frame->header.round);
    }
    case MessageType::kShutdown: {
      *done = true;
      Result<Shutdown> shutdown = DecodeMessage<Shutdown>(*frame);
      shutdown_ = shutdown.ok() ? *shutdown : Shutdown{shutdown.status().message(), true};
      return Status::Ok();
    }
    default:
      return SendError(
          frame->header.round,
          std::string("unexpected ") + MessageTypeName(frame->header.type) +
              " message at a site; expected a round plan, an evaluation request, a step of "
              "encrypted aggregation or Shutdown");
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

uint32_t Worker::PaillierParty(uint32_t site) const {
  uint32_t index = 1;
  for (const auto& [roster_site, key] : roster()) {
    if (roster_site == site) return index;
    ++index;
  }
  return 0;
}

Status Worker::OnPaillierMessage(const FrameView& frame) {
  const uint32_t round = frame.header.round;
  switch (frame.header.type) {
    case MessageType::kRoundPlan:  // pending_plan_ holds the decoded plan
      return SendPaillierUpdate(round);
    case MessageType::kPaillierKey: {
      Result<PaillierKey> message = DecodeMessage<PaillierKey>(frame);
      if (!message.ok()) return SendError(round, message.status().message());
      if (message->round != round)
        return SendError(round,
                         "a Paillier key message labelled round " + std::to_string(message->round));
      if (message->public_key.empty()) return OfferPaillierSetupKey(*message);
      return AdoptPaillierKey(*message);
    }
    case MessageType::kSecAggKeyList: {  // this site deals: generate and share the key
      Result<SecAggKeyList> list = DecodeMessage<SecAggKeyList>(frame);
      if (!list.ok()) return SendError(round, list.status().message());
      return GeneratePaillierKey(*list);
    }
    case MessageType::kPaillierSum: {
      Result<PaillierSum> sum = DecodeMessage<PaillierSum>(frame);
      if (!sum.ok()) return SendError(round, sum.status().message());
      if (sum->round != round)
        return SendError(round,
                         "a decryption request labelled round " + std::to_string(sum->round));
      return PartiallyDecrypt(*sum);
    }
    default:
      return SendError(round, std::string("unexpected ") + MessageTypeName(frame.header.type));
  }
}

PackingParams Worker::PaillierPacking(const RoundPlan& plan) {
  return {static_cast<int>(SignedValueBits(FormatOf(plan))),
          static_cast<int>(plan.participants.size())};
}

Status Worker::OfferPaillierSetupKey(const PaillierKey& request) {
  const uint32_t round = request.round;
  if (roster().empty()) {
    return SendError(round,
                     "refusing the Paillier key set-up: this site has no roster of the sites' "
                     "identity keys (security.site_public_keys); Paillier needs one to check "
                     "the dealer's and every site's signatures");
  }
  const auto own = roster().find(options_.site);
  if (own == roster().end() || own->second != identity_.public_key) {
    return SendError(round,
                     "refusing the Paillier key set-up: this site's identity key is not its "
                     "entry in its roster (security.site_public_keys)");
  }
  const uint32_t parties = static_cast<uint32_t>(roster().size());
  Result<uint32_t> threshold =
      paillier_round::DecryptionThreshold(parties, options_.secagg_policy.threat.adversarial_rate);
  if (!threshold.ok()) return SendError(round, threshold.status().message());
  const uint32_t dealer =
      std::next(roster().begin(), paillier_round::Dealer(round, parties))->first;
  if (request.holder != dealer) {
    return SendError(round, "refusing the Paillier key set-up: the request names site " +
                                std::to_string(request.holder) +
                                " as the dealer, but the dealer of a set-up in round " +
                                std::to_string(round) + " is site " + std::to_string(dealer) +
                                " (roster position (round - 1) mod " + std::to_string(parties) +
                                ")");
  }
  const int min_bits = options_.insecure_test_min_paillier_bits > 0
                           ? options_.insecure_test_min_paillier_bits
                           : kPaillierSiteMinModulusBits;
  if (request.modulus_bits < static_cast<uint32_t>(min_bits) ||
      request.modulus_bits > static_cast<uint32_t>(kPaillierMaxModulusBits) ||
      request.modulus_bits % 2 != 0) {
    return SendError(round, "refusing the Paillier key set-up: a modulus of " +
                                std::to_string(request.modulus_bits) +
                                " bits requested, expected an even size of at least " +
                                std::to_string(min_bits) + " bits (minimum modulus)");
  }
  paillier_round::JobId job = options_.job_id;
  if (job == paillier_round::JobId{}) {
    job = request.job_id;
  } else if (request.job_id != job) {
    return SendError(round, "refusing the Paillier key set-up: it is for another job");
  }
  auto state = std::make_unique<PaillierSiteState>();
  state->setup_round = round;
  state->dealer = dealer;
  state->modulus_bits = request.modulus_bits;
  state->threshold = *threshold;
  state->parties = parties;
  state->job = job;
  Result<crypto::DhKeyPair> setup = crypto::GenerateDhKey();
  if (!setup.ok()) return SendError(round, setup.status().message());
  state->setup_key = *setup;
  SecAggKeys& offer = state->offered;
  offer.round = round;
  offer.site = options_.site;
  offer.identity_key = identity_.public_key;
  offer.cipher_key = setup->public_key;
  Result<crypto::Signature> signature =
      crypto::Sign(identity_, paillier_round::OfferTranscript(job, offer));
  if (!signature.ok()) return SendError(round, signature.status().message());
  offer.signature = *signature;
  spdlog::info("{}: Paillier key set-up with site {} dealing, threshold {} of {}", Where(round),
               dealer, *threshold, parties);
  paillier_ = std::move(state);
  return Send(paillier_->offered, round);
}

Status Worker::GeneratePaillierKey(const SecAggKeyList& list) {
  const uint32_t round = list.round;
  if (!paillier_ || !paillier_->setup_key || paillier_->setup_round != round ||
      paillier_->dealer != options_.site)
    return SendError(round, "a key list for a Paillier key set-up this site does not deal");
  PaillierSiteState& state = *paillier_;
  std::map<uint32_t, const SecAggKeys*> offers;
  for (const SecAggKeys& offer : list.keys) {
    const auto roster_key = roster().find(offer.site);
    if (roster_key == roster().end()) {
      return SendError(round, "refusing to deal: the key list holds an offer of site " +
                                  std::to_string(offer.site) + ", which is not in the roster");
    }
    if (offer.round != round ||
        !crypto::Verify(roster_key->second, paillier_round::OfferTranscript(state.job, offer),
                        offer.signature)) {
      return SendError(round, "refusing to deal: the set-up offer of site " +
                                  std::to_string(offer.site) +
                                  " does not verify under its roster identity key");
    }
    if (!offers.emplace(offer.site, &offer).second) {
      return SendError(round, "refusing to deal: site " + std::to_string(offer.site) +
                                  " offers twice in the key list");
    }
  }
  offers[options_.site] = &state.offered;
  if (offers.size() < state.threshold) {
    return SendError(round, "refusing to deal: " + std::to_string(offers.size()) +
                                " sites offered keys, fewer than the threshold " +
                                std::to_string(state.threshold) + " needed to ever decrypt");
  }
  Result<std::vector<PaillierKeyShare>> shares =
      PaillierKeyShare::Deal(static_cast<int>(state.modulus_bits), state.parties, state.threshold);
  if (!shares.ok()) return SendError(round, shares.status().message());
  PaillierKey answer;
  answer.round = round;
  answer.holder = options_.site;
  answer.modulus_bits = state.modulus_bits;
  answer.threshold = state.threshold;
  answer.parties = state.parties;
  answer.holder_keys = state.offered;
  answer.public_key = shares->front().public_key().ToBytes();
  for (const auto& [site, offer] : offers) {
    if (site == options_.site) continue;
    const PaillierKeyShare& share = (*shares)[PaillierParty(site) - 1];
    const WipedBytes secret{share.ToBytes()};
    const std::vector<uint8_t> context = paillier_round::SealingContext(
        state.job, round, options_.site, site, state.threshold, state.parties, answer.public_key);
    Result<crypto::Key32> shared =
        crypto::AgreeKey(state.setup_key->private_key, offer->cipher_key, context, kSealingInfo);
    if (!shared.ok()) return SendError(round, shared.status().message());
    Result<std::vector<uint8_t>> sealed = crypto::SealOnce(*shared, context, secret.bytes);
    crypto::Cleanse(*shared);
    if (!sealed.ok()) return SendError(round, sealed.status().message());
    answer.sealed_private.push_back({site, std::move(sealed).value()});
  }
  // The dealer keeps its own share; the others die with `shares` (their
  // integers are BN_clear_free'd), as did p, q, lambda and d inside Deal.
  state.share = (*shares)[PaillierParty(options_.site) - 1];
  shares->clear();
  crypto::Cleanse(state.setup_key->private_key);
  state.setup_key.reset();
  return Send(answer, round);
}

Status Worker::AdoptPaillierKey(const PaillierKey& message) {
  const uint32_t round = message.round;
  if (!paillier_ || !paillier_->setup_key || paillier_->setup_round != round)
    return SendError(round, "a Paillier key share for a set-up this site did not take part in");
  PaillierSiteState& state = *paillier_;
  if (message.holder != state.dealer) {
    return SendError(round, "refusing the Paillier key share: it names site " +
                                std::to_string(message.holder) +
                                " as the dealer, but this set-up's dealer is site " +
                                std::to_string(state.dealer));
  }
  const SecAggKeys& dealer = message.holder_keys;
  if (dealer.site != state.dealer || dealer.round != round ||
      !crypto::Verify(roster().at(state.dealer), paillier_round::OfferTranscript(state.job, dealer),
                      dealer.signature)) {
    return SendError(round,
                     "refusing the Paillier key share: the dealer's set-up key does not "
                     "verify under the roster identity key of site " +
                         std::to_string(state.dealer));
  }
  if (message.threshold != state.threshold || message.parties != state.parties) {
    return SendError(round, "refusing the Paillier key share: dealt " +
                                std::to_string(message.threshold) + " of " +
                                std::to_string(message.parties) + ", expected threshold " +
                                std::to_string(state.threshold) + " of the roster's " +
                                std::to_string(state.parties) + " sites");
  }
  Result<PaillierPublicKey> public_key = PaillierPublicKey::FromBytes(message.public_key);
  if (!public_key.ok()) return SendError(round, public_key.status().message());
  if (public_key->modulus_bits() != static_cast<int>(state.modulus_bits)) {
    return SendError(round, "refusing the Paillier key share: the public key has a " +
                                std::to_string(public_key->modulus_bits()) +
                                "-bit modulus, expected the " + std::to_string(state.modulus_bits) +
                                " bits requested");
  }
  if (message.sealed_private.size() != 1 || message.sealed_private[0].site != options_.site) {
    return SendError(round, "expected the Paillier key share sealed for this site, found " +
                                std::to_string(message.sealed_private.size()) + " entries");
  }
  const std::vector<uint8_t> context =
      paillier_round::SealingContext(state.job, round, state.dealer, options_.site, state.threshold,
                                     state.parties, message.public_key);
  Result<crypto::Key32> shared =
      crypto::AgreeKey(state.setup_key->private_key, dealer.cipher_key, context, kSealingInfo);
  if (!shared.ok()) return SendError(round, shared.status().message());
  Result<std::vector<uint8_t>> opened =
      crypto::OpenOnce(*shared, context, message.sealed_private[0].sealed);
  crypto::Cleanse(*shared);
  if (!opened.ok())
    return SendError(round, "the sealed Paillier key share: " + opened.status().message());
  const WipedBytes secret{std::move(opened).value()};
  Result<PaillierKeyShare> share = PaillierKeyShare::FromBytes(secret.bytes);
  if (!share.ok()) return SendError(round, share.status().message());
  if (share->index() != PaillierParty(options_.site) || share->parties() != state.parties ||
      share->threshold() != state.threshold || !(share->public_key() == *public_key)) {
    return SendError(round,
                     "the sealed Paillier key share is not this site's share of the "
                     "public key sent");
  }
  state.share = std::move(share).value();
  crypto::Cleanse(state.setup_key->private_key);
  state.setup_key.reset();
  PaillierKey ack;
  ack.round = round;
  ack.holder = message.holder;
  ack.public_key = message.public_key;
  return Send(ack, round);
}

Status Worker::SendPaillierUpdate(uint32_t round) {
  if (!paillier_ || !paillier_->share)
    return SendError(round, "no Paillier key share: this site missed the key set-up");
  if (round <= paillier_encrypted_round_) {
    return SendError(round, "refusing to encrypt an update for round " + std::to_string(round) +
                                ": this site already sent one for round " +
                                std::to_string(paillier_encrypted_round_) +
                                " (at most one per round)");
  }
  const RoundPlan& plan = *pending_plan_;
  if (!std::binary_search(plan.participants.begin(), plan.participants.end(), options_.site))
    return SendError(round, "the plan's participants do not include this site");
  if (Drops(round, 3)) return Status::Ok();
  std::vector<double> metrics;
  Result<std::vector<uint64_t>> encoded = TrainEncoded(&metrics);
  if (!encoded.ok()) return SendError(round, encoded.status().message());
  const PackingParams params = PaillierPacking(plan);
  // The update, then its training loss: only their totals are ever decrypted.
  std::vector<int64_t> values(encoded->begin(), encoded->end());
  const std::vector<int64_t> loss = paillier_round::EncodeTrainLoss(
      metrics.at(0), static_cast<uint64_t>(metrics.at(1)), params.value_bits);
  values.insert(values.end(), loss.begin(), loss.end());
  const PaillierKeyShare& share = *paillier_->share;
  Result<std::vector<uint8_t>> ciphertexts = EncryptPacked(share.public_key(), values, params);
  if (!ciphertexts.ok()) return SendError(round, ciphertexts.status().message());
  paillier_encrypted_round_ = round;
  AfterAnswer();
  PaillierUpdate update;
  update.round = round;
  update.site = options_.site;
  update.values = values.size();
  update.ciphertexts = std::move(ciphertexts).value();
  Result<crypto::Signature> signature =
      crypto::Sign(identity_, paillier_round::UpdateTranscript(paillier_->job, round, update.site,
                                                               update.values, update.ciphertexts));
  if (!signature.ok()) return SendError(round, signature.status().message());
  update.signature = *signature;
  return Send(update, round);
}

Status Worker::PartiallyDecrypt(const PaillierSum& sum) {
  const uint32_t round = sum.round;
  const auto refuse = [&](const std::string& why) {
    return SendError(round, "refusing to decrypt: " + why);
  };
  if (!paillier_ || !paillier_->share) return refuse("this site holds no Paillier key share");
  if (round <= paillier_decrypted_round_) {
    return refuse("this site already answered a decryption request for round " +
                  std::to_string(paillier_decrypted_round_) +
                  " (at most one per round, never for an earlier round)");
  }
  if (!pending_plan_ || pending_plan_->round != round ||
      pending_plan_->aggregation != Aggregation::kPaillier)
    return refuse("this site has no Paillier plan for round " + std::to_string(round));
  const RoundPlan& plan = *pending_plan_;
  const PaillierSiteState& state = *paillier_;
  const PackingParams params = PaillierPacking(plan);
  const uint64_t expected =
      EncodedLength(UploadShapes()) + paillier_round::TrainLossSlots(params.value_bits);
  if (sum.values != expected) {
    return refuse("the request is for " + std::to_string(sum.values) + " values, expected " +
                  std::to_string(expected) + " for this round's update");
  }
  std::vector<uint32_t> sites;
  for (const PaillierUpdate& update : sum.updates) {
    const std::string who = "the update of site " + std::to_string(update.site);
    const auto roster_key = roster().find(update.site);
    if (roster_key == roster().end()) return refuse(who + " is not a roster site's");
    if (!std::binary_search(plan.participants.begin(), plan.participants.end(), update.site))
      return refuse(who + " is not a participant of round " + std::to_string(round));
    if (std::find(sites.begin(), sites.end(), update.site) != sites.end())
      return refuse(who + " appears twice");
    if (update.round != round || update.values != sum.values ||
        !crypto::Verify(roster_key->second,
                        paillier_round::UpdateTranscript(state.job, update.round, update.site,
                                                         update.values, update.ciphertexts),
                        update.signature)) {
      return refuse(who + " does not carry a valid signature of that site for round " +
                    std::to_string(round) + " under its roster identity key");
    }
    sites.push_back(update.site);
  }
  if (sites.size() < state.threshold) {
    return refuse("a sum of " + std::to_string(sites.size()) +
                  " signed updates; at least the threshold " + std::to_string(state.threshold) +
                  " of distinct roster sites is needed so that no site's update is exposed");
  }
  const PaillierKeyShare& share = *state.share;
  Result<PaillierPacker> packer = PaillierPacker::Create(params, share.public_key().modulus_bits());
  if (!packer.ok()) return refuse(packer.status().message());
  PaillierAccumulator product(share.public_key(), packer->NumPlaintexts(sum.values));
  for (const PaillierUpdate& update : sum.updates) {
    if (Status added = product.Add(update.ciphertexts); !added.ok())
      return refuse("the update of site " + std::to_string(update.site) + ": " + added.message());
  }
  Result<std::vector<uint8_t>> ciphertexts = product.Sums();
  if (!ciphertexts.ok()) return refuse(ciphertexts.status().message());
  Result<std::vector<uint8_t>> partials = share.PartialDecryptMany(*ciphertexts);
  if (!partials.ok()) return refuse(partials.status().message());
  paillier_decrypted_round_ = round;
  PaillierDecrypted answer;
  answer.round = round;
  answer.site = options_.site;
  answer.partials = std::move(partials).value();
  return Send(answer, round);
}

}  // namespace fedrec
