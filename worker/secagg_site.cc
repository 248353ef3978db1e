// The site's part of secure aggregation (SecAgg / SecAgg+, crypto/secagg.h):
// a round's keys, shares, masked input (sliced over the shard servers when the
// plan names some), survivor signature and unmasking shares; also a secure
// evaluation's metric sums, and a previous round's evaluation riding along.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <optional>
#include <span>

#include "crypto/secagg.h"
#include "crypto/update_codec.h"
#include "worker/site_scheme.h"
#include "worker/worker.h"

namespace fedrec {
namespace {

class SecAggSite : public SiteScheme {
 public:
  explicit SecAggSite(SiteContext* context) : c_(*context) {}
  Aggregation kind() const override { return Aggregation::kSecAgg; }

  Status OnPlan(RoundPlan plan, std::vector<uint64_t> ride_eval) override {
    pending_plan_ = std::move(plan);
    secagg_.reset();
    secagg_eval_.reset();
    follow_on_.reset();  // a new round: the last one's masks are spent
    ride_eval_ = std::move(ride_eval);
    const RoundPlan& p = *pending_plan_;
    const uint64_t eval_words = p.evaluate ? EvalWordsLength(c_.eval_layout(), p.ring_bits) : 0;
    secagg::Params params = secagg::ParamsOf(
        p, p.round, p.ring_bits, EncodedLength(WithTrainLoss(c_.UploadShapes())) + eval_words);
    params.ring_seed = p.ring_seed;  // must be empty: CheckParams
    FEDREC_RETURN_IF_ERROR(StartSecAgg(std::move(params)));
    if (!secagg_) return Status::Ok();  // refused or dropped
    // The input is needed only once the shares are routed (step 3): training
    // now overlaps the round trips of the key agreement.
    Result<LossSums> trained = c_.Train(p);
    if (!trained.ok()) {
      secagg_.reset();
      return c_.SendError(p.round, trained.status().message());
    }
    const LossSums loss = *trained;
    secagg_trained_ = {loss.sum, static_cast<double>(loss.count)};
    // The participants (n ids) live on in the client's params: with
    // thousands of simulated sites a second copy per site adds up.
    participants_ = static_cast<uint32_t>(pending_plan_->participants.size());
    pending_plan_->participants.clear();
    pending_plan_->participants.shrink_to_fit();
    if (!c_.options().keep_global_model) {
      // Hold only the rows with a weight until step 3, not the model.
      if (Status finite = CheckFinite(c_.UploadShapes(), c_.UploadViews()); !finite.ok()) {
        secagg_.reset();
        secagg_trained_.reset();
        return c_.SendError(p.round, finite.message());
      }
      HoldUpload();
      c_.AfterAnswer();
    }
    return Status::Ok();
  }

  Status OnEvaluation(const EvalRequest& request, const EvalReport& report) override {
    // The sums go through secure aggregation under their own round label.
    const uint32_t label = EvalSecAggRound(request.round);
    if (request.follow_on) return SendFollowOn(request, report, label);
    RoundPlan plan;  // the round in progress: its label and scheme
    plan.round = label;
    plan.model_version = request.model_version;
    plan.aggregation = Aggregation::kSecAgg;
    plan.ring_bits = 64;
    pending_plan_ = std::move(plan);
    secagg_.reset();
    secagg_trained_.reset();
    const EvalLayout layout = c_.eval_layout();
    secagg_eval_ = EncodeEvalSums(report, layout);
    Status started = StartSecAgg(secagg::ParamsOf(request, label, 64, EvalSumsLength(layout)));
    if (!secagg_) secagg_eval_.reset();
    return started;
  }

  bool Claims(MessageType type, uint32_t) const override {
    return type == MessageType::kSecAggKeyList || type == MessageType::kSecAggRoutedShares ||
           type == MessageType::kSecAggUnmaskRequest;
  }
  Status OnMessage(const FrameView& frame) override { return OnSecAggMessage(frame); }

 private:
  // Checks `params` against the site's policy, sets up the client for the
  // pending round and sends the round keys; the input follows at step 3.
  Status StartSecAgg(secagg::Params params);
  // Keeps the trained upload's weighted rows (held_upload_) so the global
  // values can be freed until step 3.
  void HoldUpload();
  // Step 3: the update (or evaluation sums), encoded and masked straight into
  // the frames that carry it, sent.
  Status SendMaskedInput(const SecAggRoutedShares& routed);
  Status OnSecAggMessage(const FrameView& frame);
  // The evaluation sums as the follow-on sum of the training round.
  Status SendFollowOn(const EvalRequest& request, const EvalReport& report, uint32_t label);

  SiteContext& c_;
  std::optional<RoundPlan> pending_plan_;  // without its participants once trained
  uint32_t participants_ = 0;              // the plan's participant count
  std::unique_ptr<secagg::Client> secagg_;
  // Secure aggregation trains as soon as the round keys are out; these are
  // the training-loss sums of that (the update stays in the model and is
  // encoded only when it is masked, so no model-sized buffer waits).
  std::optional<std::vector<double>> secagg_trained_;
  // The trained upload held from step 1 to step 3 when the site does not keep
  // the global model: per upload block, every row's weight and the values of
  // the rows with a weight (what the coordinator could ever decode).
  struct HeldBlock {
    std::vector<uint32_t> weights;  // one per row
    std::vector<uint32_t> rows;     // rows with a weight, ascending
    std::vector<float> values;      // rows.size() * cols
  };
  std::vector<HeldBlock> held_upload_;
  // A secure evaluation in progress: the encoded metric sums to mask.
  std::optional<std::vector<uint64_t>> secagg_eval_;
  // The previous round's evaluation riding on this round's secure sum
  // (RoundPlan::evaluate): its encoded sums, masked after the update.
  std::vector<uint64_t> ride_eval_;
  // The last training round's follow-on masks, from its client once it
  // revealed (until used, or the next round starts).
  std::unique_ptr<secagg::FollowOn> follow_on_;
};

Status SecAggSite::SendFollowOn(const EvalRequest& request, const EvalReport& report,
                                uint32_t label) {
  std::unique_ptr<secagg::FollowOn> follow_on = std::move(follow_on_);
  if (!follow_on || follow_on->round() != request.round) {
    return c_.SendError(
        label,
        "the coordinator asked for the evaluation sums as the follow-on sum of round " +
            std::to_string(request.round) + ", but this site holds no follow-on masks " +
            (follow_on ? "of that round (only of round " + std::to_string(follow_on->round()) + ")"
                       : std::string("(it did not finish that round's unmasking, or "
                                     "too few of its neighbours survived)")));
  }
  Result<SecAggMasked> masked =
      follow_on->MaskInput(EncodeEvalSums(report, c_.eval_layout()), 64, label);
  if (!masked.ok()) return c_.SendError(label, masked.status().message());
  return c_.Send(*masked, label);
}

Status SecAggSite::StartSecAgg(secagg::Params params) {
  const RoundPlan& p = *pending_plan_;
  secagg_trained_.reset();
  if (Status valid = secagg::CheckParams(params, c_.options().secagg_policy); !valid.ok())
    return c_.SendError(p.round, "secure aggregation parameters: " + valid.message());
  if (!std::binary_search(params.sites.begin(), params.sites.end(), c_.options().site))
    return c_.SendError(p.round, "the plan's participants do not include this site");
  auto client = std::make_unique<secagg::Client>(
      std::move(params), c_.options().site, c_.identity(), c_.roster(), c_.options().secagg_policy,
      c_.options().agreement_memo);
  Result<SecAggKeys> keys = client->AdvertiseKeys();
  if (!keys.ok()) return c_.SendError(p.round, keys.status().message());
  secagg_ = std::move(client);
  return c_.Send(*keys, p.round);
}

void SecAggSite::HoldUpload() {
  const std::vector<ParamBlock> shapes = c_.UploadShapes();
  const std::vector<DenseBlockView> views = c_.UploadViews();
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

Status SecAggSite::SendMaskedInput(const SecAggRoutedShares& routed) {
  const RoundPlan& plan = *pending_plan_;
  if (secagg_eval_) {  // a secure evaluation: the metric sums
    Result<SecAggMasked> masked = secagg_->MaskInput(*secagg_eval_, routed);
    secagg_eval_.reset();
    if (!masked.ok()) return c_.SendError(plan.round, masked.status().message());
    return c_.Send(*masked, plan.round);
  }
  // The upload's views: the model's blocks, or the rows held since step 1
  // laid out densely for the time of masking.
  std::vector<DenseBlockView> views;
  std::vector<std::vector<float>> dense;
  if (!held_upload_.empty()) {
    const std::vector<ParamBlock> shapes = c_.UploadShapes();
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
    if (Status finite = CheckFinite(c_.UploadShapes(), c_.UploadViews()); !finite.ok())
      return c_.SendError(plan.round, finite.message());
    views = c_.UploadViews();
  }
  const FixedPointFormat format = FormatOf(plan);
  // The training loss is masked with the update (update_codec.h).
  const TrainLossRow loss((*secagg_trained_)[0], static_cast<uint64_t>((*secagg_trained_)[1]),
                          format);
  secagg_trained_.reset();
  views.push_back(loss.View());
  Result<RangeEncoder> encoder =
      RangeEncoder::Create(WithTrainLoss(c_.UploadShapes()), std::move(views), format,
                           c_.options().seed, plan.round, c_.options().site);
  if (!encoder.ok()) return c_.SendError(plan.round, encoder.status().message());
  // Distributed DP: the site's share of the round's noise, added to the
  // encoded update before it is masked.
  const NoiseShareAdder noise = c_.DpNoiseShares(
      plan, DpShareSites(participants_, c_.options().secagg_policy.threat.dropout_rate));
  SecAggMasked fields;
  fields.round = plan.round;
  fields.site = c_.options().site;
  fields.ring_bits = plan.ring_bits;
  // The previous round's evaluation sums, when they ride along, follow.
  const uint64_t update_words = encoder->length();
  const uint64_t eval_words = plan.evaluate ? EvalWordsLength(c_.eval_layout(), plan.ring_bits) : 0;
  const uint32_t word_bytes = plan.ring_bits / 8;
  // One frame to the coordinator, or (sharded) one per shard server with its
  // slice of the words, each masked at its offset.
  const uint32_t shards = static_cast<uint32_t>(plan.shard_ranks.size());
  std::vector<MaskedFrame> frames;
  std::vector<std::span<uint8_t>> pieces;
  for (uint32_t s = 0; s < std::max(shards, 1u); ++s) {
    const Slice slice =
        ShardSlice(update_words + eval_words, s, std::max(shards, 1u), kShardWordAlign);
    frames.push_back(EncodeMaskedFrame(fields, slice.size() * word_bytes, plan.round,
                                       static_cast<uint32_t>(c_.transport()->rank())));
    pieces.push_back(frames.back().input);
  }
  const Status masked = secagg_->MaskInputPiecesInPlace(
      pieces,
      [&](size_t begin, size_t end, uint8_t* piece) {
        const uint64_t split = std::clamp<uint64_t>(update_words, begin, end);
        if (begin < split) {
          encoder->Encode(begin, split, piece);
          noise.Add(begin, split, plan.ring_bits, piece);
        }
        if (split < end) {
          WriteEvalWords(ride_eval_, plan.ring_bits, split - update_words, end - update_words,
                         piece + (split - begin) * word_bytes);
        }
      },
      routed);
  held_upload_.clear();
  ride_eval_.clear();
  if (!masked.ok()) return c_.SendError(plan.round, masked.message());
  if (shards == 0) return c_.transport()->Send(c_.coordinator_rank(), std::move(frames[0].frame));
  for (uint32_t s = 0; s < shards; ++s)
    FEDREC_RETURN_IF_ERROR(c_.transport()->Send(plan.shard_ranks[s], std::move(frames[s].frame)));
  return c_.Send(fields, plan.round);  // the notice: the slices are out
}

Status SecAggSite::OnSecAggMessage(const FrameView& frame) {
  const uint32_t round = frame.header.round;
  if (!secagg_ || !pending_plan_ || pending_plan_->round != round) {
    spdlog::warn("{}: dropped {}: no secure-aggregation round {} is in progress here",
                 c_.Where(round), MessageTypeName(frame.header.type), round);
    return Status::Ok();
  }
  switch (frame.header.type) {
    case MessageType::kSecAggKeyList: {
      Result<SecAggKeyList> list = DecodeMessage<SecAggKeyList>(frame);
      if (!list.ok()) return c_.SendError(round, list.status().message());
      Result<SecAggShares> shares = secagg_->ShareKeys(*list);
      if (!shares.ok()) return c_.SendError(round, shares.status().message());
      return c_.Send(*shares, round);
    }
    case MessageType::kSecAggRoutedShares: {
      Result<SecAggRoutedShares> routed = DecodeMessage<SecAggRoutedShares>(frame);
      if (!routed.ok()) return c_.SendError(round, routed.status().message());
      if (!secagg_trained_ && !secagg_eval_) {
        return c_.SendError(round,
                            "routed shares arrived, but this site has not advertised its "
                            "round keys (nor trained) in this round");
      }
      return SendMaskedInput(*routed);
    }
    case MessageType::kSecAggUnmaskRequest: {
      Result<SecAggUnmaskRequest> request = DecodeMessage<SecAggUnmaskRequest>(frame);
      if (!request.ok()) return c_.SendError(round, request.status().message());
      if (!request->unmask) {  // step 4: the consistency check
        Result<SecAggSurvivorSignature> signature = secagg_->SignSurvivors(*request);
        if (!signature.ok()) return c_.SendError(round, signature.status().message());
        return c_.Send(*signature, round);
      }
      Result<SecAggUnmaskShares> shares = secagg_->Unmask(*request);
      // A training round's follow-on masks stay for its evaluation.
      if (shares.ok() && !IsEvalSecAggRound(round)) follow_on_ = secagg_->TakeFollowOn();
      secagg_.reset();  // the round's secrets are spent
      pending_plan_.reset();
      if (!shares.ok()) return c_.SendError(round, shares.status().message());
      return c_.Send(*shares, round);
    }
    default:
      return c_.SendError(round, std::string("unexpected ") + MessageTypeName(frame.header.type));
  }
}

}  // namespace

std::unique_ptr<SiteScheme> MakeSecAggSite(SiteContext* context) {
  return std::make_unique<SecAggSite>(context);
}

}  // namespace fedrec
