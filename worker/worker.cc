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
#include "protocol/secagg.h"
#include "protocol/update_codec.h"

namespace fedrec {

namespace {

// The site's upload in its sparse form: the rows of every upload block the
// site has a weight for, each with its weight.
std::vector<BlockUpdate> CollectUpdate(const Model& model) {
  const std::vector<ParamBlock> shapes = model.UploadShapes();
  const std::vector<DenseBlockView> views = model.Upload();
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

// What a site signs when it offers its X25519 key for the Paillier key set-up.
std::vector<uint8_t> SetupTranscript(const SecAggKeys& keys) {
  static constexpr std::string_view kLabel = "fedrec paillier key set-up v1";
  std::vector<uint8_t> out(kLabel.begin(), kLabel.end());
  AppendLe(&out, keys.round);
  AppendLe(&out, keys.site);
  out.insert(out.end(), keys.cipher_key.begin(), keys.cipher_key.end());
  return out;
}

// Salt and AAD of the private key the holder seals for `site`.
std::vector<uint8_t> SealingContext(uint32_t round, uint32_t holder, uint32_t site) {
  std::vector<uint8_t> out;
  for (uint32_t v : {round, holder, site}) AppendLe(&out, v);
  return out;
}

constexpr std::string_view kSealingInfo = "fedrec paillier private key";

}  // namespace

// A site's part of Paillier aggregation: the key set-up in progress and the
// shared key pair once it is done.
struct PaillierSiteState {
  uint32_t setup_round = 0;
  uint32_t holder = 0;
  uint32_t modulus_bits = 0;
  std::optional<crypto::DhKeyPair> setup_key;
  SecAggKeys offered;  // this site's signed set-up key
  std::optional<PaillierPrivateKey> key;
};

Worker::Worker(const WorkerOptions& options, uint32_t items, SiteData data, Transport* transport)
    : options_(options),
      transport_(transport),
      test_(std::move(data.test)),
      items_(items),
      job_id_(options.job_id) {
  Result<std::unique_ptr<Model>> model = MakeModel(options_, items, std::move(data));
  if (model.ok()) {
    model_ = std::move(model).value();
  } else {
    model_status_ = model.status().WithContext("site " + std::to_string(options_.site));
    spdlog::error("{}", model_status_.message());
  }
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
  if (!model_status_.ok()) return model_status_;
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

TrainPlan PlanOf(const RoundPlan& plan) {
  TrainPlan train;
  train.round = plan.round;
  train.epoch_offset = plan.epoch_offset;
  train.epochs = plan.local_epochs;
  train.lr = plan.lr;
  return train;
}

}  // namespace

Status Worker::OnRoundPlan(const FrameView& frame) {
  Result<RoundPlan> plan = DecodeMessage<RoundPlan>(frame);
  if (!plan.ok()) return SendError(frame.header.round, plan.status().message());
  Status adopted = AdoptModel(plan->includes_model, plan->model, plan->model_version, plan->round);
  if (!adopted.ok()) return SendError(plan->round, adopted.message());
  // Version 0 is the initial model, which has no global mean yet: each site
  // starts from its own mean, and the first aggregation forms the global one.
  if (plan->model_version == 0) model_->OnInitialModel();

  if (plan->aggregation != Aggregation::kNone) {
    if (Status job = AdoptJob(plan->job_id); !job.ok())
      return SendError(plan->round, job.message());
    pending_plan_ = std::move(plan).value();
    secagg_.reset();
    if (pending_plan_->aggregation == Aggregation::kSecAgg) {
      secagg_eval_.reset();
      FEDREC_RETURN_IF_ERROR(StartSecAgg(EncodedLength(WithTrainLoss(UploadShapes()))));
      if (!secagg_) return Status::Ok();  // refused or dropped
      // The input is needed only once the shares are routed (step 3): training
      // now overlaps the round trips of the key agreement.
      secagg_trained_ = TrainLocally();
      return Status::Ok();
    }
    return OnPaillierMessage(frame);
  }

  const LossSums loss = model_->Train(PlanOf(*plan));
  ModelUpdate update;
  update.round = plan->round;
  update.model_version = plan->model_version;
  update.num_examples = model_->train().size();
  update.train_squared_error = loss.sum;
  update.train_count = loss.count;
  update.blocks = CollectUpdate(*model_);
  return transport_->Send(
      options_.coordinator_rank,
      EncodeMessage(update, plan->round, static_cast<uint32_t>(transport_->rank())));
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

Status Worker::StartSecAgg(uint64_t length) {
  const RoundPlan& p = *pending_plan_;
  secagg::Params params;
  params.job_id = p.job_id;
  params.round = p.round;
  params.sites = p.participants;
  params.threshold = p.threshold;
  params.degree = p.degree;
  params.colluders = p.colluders;
  params.dropouts = p.dropouts;
  params.ring_order = p.ring_order;
  params.ring_bits = p.ring_bits;
  params.length = length;
  secagg_trained_.reset();
  if (Status valid = secagg::CheckParams(params, options_.secagg_policy); !valid.ok())
    return SendError(p.round, "secure aggregation parameters: " + valid.message());
  if (!std::binary_search(params.sites.begin(), params.sites.end(), options_.site))
    return SendError(p.round, "the plan's participants do not include this site");
  auto client = std::make_unique<secagg::Client>(std::move(params), options_.site, identity_,
                                                 options_.roster, options_.secagg_policy);
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

std::vector<double> Worker::TrainLocally() {
  const LossSums loss = model_->Train(PlanOf(*pending_plan_));
  return {loss.sum, static_cast<double>(loss.count)};
}

Result<std::vector<uint64_t>> Worker::TrainEncoded(std::vector<double>* metrics) {
  *metrics = TrainLocally();
  FEDREC_RETURN_IF_ERROR(CheckFinite(*model_));
  const RoundPlan& plan = *pending_plan_;
  return EncodeUpdate(UploadShapes(), CollectUpdate(*model_), FormatOf(plan), options_.seed,
                      plan.round, options_.site);
}

Status Worker::SendMaskedInput(const SecAggRoutedShares& routed) {
  const RoundPlan& plan = *pending_plan_;
  if (secagg_eval_) {  // a secure evaluation: the metric sums
    Result<SecAggMasked> masked = secagg_->MaskInput(*secagg_eval_, routed);
    secagg_eval_.reset();
    if (!masked.ok()) return SendError(plan.round, masked.status().message());
    return Send(*masked, plan.round);
  }
  if (Status finite = CheckFinite(*model_); !finite.ok())
    return SendError(plan.round, finite.message());
  const FixedPointFormat format = FormatOf(plan);
  // The training loss is masked with the update (update_codec.h).
  const TrainLossRow loss((*secagg_trained_)[0], static_cast<uint64_t>((*secagg_trained_)[1]),
                          format);
  secagg_trained_.reset();
  std::vector<DenseBlockView> views = model_->Upload();
  views.push_back(loss.View());
  Result<RangeEncoder> encoder =
      RangeEncoder::Create(WithTrainLoss(UploadShapes()), std::move(views), format, options_.seed,
                           plan.round, options_.site);
  if (!encoder.ok()) return SendError(plan.round, encoder.status().message());
  SecAggMasked fields;
  fields.round = plan.round;
  fields.site = options_.site;
  fields.ring_bits = plan.ring_bits;
  MaskedFrame out = EncodeMaskedFrame(fields, encoder->length() * (plan.ring_bits / 8), plan.round,
                                      static_cast<uint32_t>(transport_->rank()));
  const Status masked = secagg_->MaskInputInPlace(
      out.input,
      [&encoder](size_t begin, size_t end, uint8_t* piece) { encoder->Encode(begin, end, piece); },
      routed);
  if (!masked.ok()) return SendError(plan.round, masked.message());
  return transport_->Send(options_.coordinator_rank, std::move(out.frame));
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
      if (request->signatures.empty()) {  // step 4: the consistency check
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

Status Worker::OnEvalRequest(const FrameView& frame) {
  Result<EvalRequest> request = DecodeMessage<EvalRequest>(frame);
  if (!request.ok()) return SendError(frame.header.round, request.status().message());
  Status adopted =
      AdoptModel(request->includes_model, request->model, request->model_version, request->round);
  if (!adopted.ok()) return SendError(request->round, adopted.message());

  EvalReport report;
  report.round = request->round;
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
  if (request->aggregation == Aggregation::kSecAgg) {
    if (Status job = AdoptJob(request->job_id); !job.ok())
      return SendError(request->round, job.message());
    // The sums go through secure aggregation under their own round label.
    RoundPlan plan;
    plan.round = EvalSecAggRound(request->round);
    plan.model_version = request->model_version;
    plan.aggregation = Aggregation::kSecAgg;
    plan.participants = request->participants;
    plan.threshold = request->threshold;
    plan.degree = request->degree;
    plan.colluders = request->colluders;
    plan.dropouts = request->dropouts;
    plan.ring_bits = 64;
    plan.job_id = request->job_id;
    pending_plan_ = std::move(plan);
    secagg_.reset();
    secagg_trained_.reset();
    secagg_eval_ = EncodeEvalSums(report, items_);
    Status started = StartSecAgg(EvalSumsLength(items_));
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

Status Worker::OnPaillierMessage(const FrameView& frame) {
  const uint32_t round = frame.header.round;
  switch (frame.header.type) {
    case MessageType::kRoundPlan: {  // pending_plan_ holds the decoded plan
      if (!paillier_ || !paillier_->key)
        return SendError(round, "no Paillier key: this site missed the key set-up");
      if (Drops(round, 3)) return Status::Ok();
      std::vector<double> metrics;
      Result<std::vector<uint64_t>> encoded = TrainEncoded(&metrics);
      if (!encoded.ok()) return SendError(round, encoded.status().message());
      std::vector<int64_t> values(encoded->size());
      for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<int64_t>((*encoded)[i]);
      const PackingParams params = PaillierPacking(*pending_plan_);
      Result<std::vector<uint8_t>> ciphertexts = EncryptPacked(*paillier_->key, values, params);
      if (!ciphertexts.ok()) return SendError(round, ciphertexts.status().message());
      PaillierUpdate update;
      update.round = round;
      update.site = options_.site;
      update.values = values.size();
      update.ciphertexts = std::move(ciphertexts).value();
      update.metrics = std::move(metrics);
      return Send(update, round);
    }
    case MessageType::kPaillierKey: {
      Result<PaillierKey> message = DecodeMessage<PaillierKey>(frame);
      if (!message.ok()) return SendError(round, message.status().message());
      if (message->public_key.empty()) {  // set-up request: offer a fresh signed key
        paillier_ = std::make_unique<PaillierSiteState>();
        paillier_->setup_round = round;
        paillier_->holder = message->holder;
        paillier_->modulus_bits = message->modulus_bits;
        Result<crypto::DhKeyPair> setup = crypto::GenerateDhKey();
        if (!setup.ok()) return SendError(round, setup.status().message());
        paillier_->setup_key = *setup;
        SecAggKeys& offer = paillier_->offered;
        offer.round = round;
        offer.site = options_.site;
        offer.identity_key = identity_.public_key;
        offer.cipher_key = setup->public_key;
        Result<crypto::Signature> signature = crypto::Sign(identity_, SetupTranscript(offer));
        if (!signature.ok()) return SendError(round, signature.status().message());
        offer.signature = *signature;
        return Send(offer, round);
      }
      return AdoptPaillierKey(*message);
    }
    case MessageType::kSecAggKeyList: {  // this site holds the key: generate and seal it
      Result<SecAggKeyList> list = DecodeMessage<SecAggKeyList>(frame);
      if (!list.ok()) return SendError(round, list.status().message());
      return GeneratePaillierKey(*list);
    }
    case MessageType::kPaillierSum: {
      Result<PaillierSum> sum = DecodeMessage<PaillierSum>(frame);
      if (!sum.ok()) return SendError(round, sum.status().message());
      if (!paillier_ || !paillier_->key || !pending_plan_ || pending_plan_->round != round)
        return SendError(round, "asked to decrypt a sum of a round this site is not part of");
      // A "sum" of one update is that site's update: never decrypt it.
      if (sum->additions < 2) {
        return SendError(round, "refusing to decrypt a sum of " + std::to_string(sum->additions) +
                                    " update(s): at least 2 are needed to hide each one");
      }
      Result<std::vector<int64_t>> sums =
          DecryptPacked(*paillier_->key, sum->ciphertexts, sum->values,
                        static_cast<int>(sum->additions), PaillierPacking(*pending_plan_));
      if (!sums.ok()) return SendError(round, sums.status().message());
      PaillierDecrypted decrypted;
      decrypted.round = round;
      decrypted.sums = std::move(sums).value();
      return Send(decrypted, round);
    }
    default:
      return SendError(round, std::string("unexpected ") + MessageTypeName(frame.header.type));
  }
}

PackingParams Worker::PaillierPacking(const RoundPlan& plan) {
  return {static_cast<int>(SignedValueBits(FormatOf(plan))),
          static_cast<int>(plan.participants.size())};
}

Status Worker::GeneratePaillierKey(const SecAggKeyList& list) {
  const uint32_t round = list.round;
  if (!paillier_ || !paillier_->setup_key || paillier_->setup_round != round ||
      paillier_->holder != options_.site)
    return SendError(round, "a key list for a Paillier key set-up this site does not hold");
  Result<PaillierPrivateKey> key =
      PaillierPrivateKey::Generate(static_cast<int>(paillier_->modulus_bits));
  if (!key.ok()) return SendError(round, key.status().message());
  // The serialized private key is wiped on every way out of this function.
  struct WipedBytes {
    std::vector<uint8_t> bytes;
    ~WipedBytes() { crypto::Cleanse(bytes); }
  } wiped{key->ToBytes()};
  const std::vector<uint8_t>& secret = wiped.bytes;
  PaillierKey answer;
  answer.round = round;
  answer.holder = options_.site;
  answer.modulus_bits = paillier_->modulus_bits;
  answer.holder_keys = paillier_->offered;
  answer.public_key = key->public_key().ToBytes();
  for (const SecAggKeys& peer : list.keys) {
    if (peer.site == options_.site) continue;
    if (peer.round != round ||
        !crypto::Verify(peer.identity_key, SetupTranscript(peer), peer.signature)) {
      return SendError(round, "the set-up key of site " + std::to_string(peer.site) +
                                  " does not carry a valid signature of its identity");
    }
    const std::vector<uint8_t> context = SealingContext(round, options_.site, peer.site);
    Result<crypto::Key32> shared =
        crypto::AgreeKey(paillier_->setup_key->private_key, peer.cipher_key, context, kSealingInfo);
    if (!shared.ok()) return SendError(round, shared.status().message());
    Result<std::vector<uint8_t>> sealed = crypto::SealOnce(*shared, context, secret);
    crypto::Cleanse(*shared);
    if (!sealed.ok()) return SendError(round, sealed.status().message());
    answer.sealed_private.push_back({peer.site, std::move(sealed).value()});
  }
  paillier_->key = std::move(key).value();
  crypto::Cleanse(paillier_->setup_key->private_key);
  paillier_->setup_key.reset();
  return Send(answer, round);
}

Status Worker::AdoptPaillierKey(const PaillierKey& message) {
  const uint32_t round = message.round;
  if (!paillier_ || !paillier_->setup_key || paillier_->setup_round != round)
    return SendError(round, "a Paillier key for a set-up this site did not take part in");
  const SecAggKeys& holder = message.holder_keys;
  if (holder.site != message.holder || holder.round != round ||
      !crypto::Verify(holder.identity_key, SetupTranscript(holder), holder.signature)) {
    return SendError(round, "the Paillier key of holder site " + std::to_string(message.holder) +
                                " does not carry a valid signature of the holder's identity");
  }
  if (message.sealed_private.size() != 1 || message.sealed_private[0].site != options_.site) {
    return SendError(round, "expected the Paillier private key sealed for this site, found " +
                                std::to_string(message.sealed_private.size()) + " entries");
  }
  const std::vector<uint8_t> context = SealingContext(round, message.holder, options_.site);
  Result<crypto::Key32> shared =
      crypto::AgreeKey(paillier_->setup_key->private_key, holder.cipher_key, context, kSealingInfo);
  if (!shared.ok()) return SendError(round, shared.status().message());
  Result<std::vector<uint8_t>> secret =
      crypto::OpenOnce(*shared, context, message.sealed_private[0].sealed);
  crypto::Cleanse(*shared);
  if (!secret.ok())
    return SendError(round, "the sealed Paillier key: " + secret.status().message());
  Result<PaillierPrivateKey> key = PaillierPrivateKey::FromBytes(*secret);
  crypto::Cleanse(*secret);
  if (!key.ok()) return SendError(round, key.status().message());
  if (key->public_key().ToBytes() != message.public_key)
    return SendError(round, "the sealed Paillier private key does not match the public key sent");
  paillier_->key = std::move(key).value();
  crypto::Cleanse(paillier_->setup_key->private_key);
  paillier_->setup_key.reset();
  PaillierKey ack;
  ack.round = round;
  ack.holder = message.holder;
  ack.public_key = message.public_key;
  return Send(ack, round);
}

}  // namespace fedrec
