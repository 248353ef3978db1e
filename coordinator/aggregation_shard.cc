#include "coordinator/aggregation_shard.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>

#include "coordinator/aggregator.h"
#include "crypto/secagg.h"
#include "crypto/secagg_prg.h"

namespace fedrec {

static_assert(kShardWordAlign == secagg::kMaskPieceAlign,
              "a shard's slice of the masked input must start where a site can mask a piece");

struct AggregationShard::Round {
  ShardRound plan;
  std::string where;  // "shard server s (rank r), round n"
  std::map<int, uint32_t> site_of_rank;
  // In the clear: the slice's blocks (rows ShardSlice(rows, shard, shards))
  // and each site's slice, kept until the close names the sites to fold.
  std::vector<ParamBlock> shapes;
  std::map<uint32_t, ModelUpdate> updates;
  // Secure aggregation: the slice's words and their running masked sum.
  Slice words;
  std::vector<uint8_t> sum;
  // Paillier: the slice's ciphertexts, and each site's signed slice, kept
  // until the round ends (the decrypting sites multiply them themselves).
  Slice ciphertexts;
  std::map<uint32_t, PaillierUpdate> encrypted;
  std::map<uint32_t, int> rank_of_site;
  std::set<uint32_t> received;              // slices taken (in the sum, or kept)
  std::map<uint32_t, std::string> refused;  // slices refused, with why
  bool cut = false;                         // secagg: no more slices after the cut
  std::optional<ShardClose> close;          // the request being answered
};

AggregationShard::AggregationShard(int coordinator_rank, Transport* transport, unsigned threads)
    : coordinator_rank_(coordinator_rank), transport_(transport), threads_(std::max(threads, 1u)) {}

AggregationShard::~AggregationShard() = default;

Status AggregationShard::Serve(std::chrono::milliseconds idle_timeout) {
  for (;;) {
    Result<Envelope> envelope = transport_->Recv(idle_timeout);
    if (!envelope.ok()) {
      return envelope.status().WithContext("shard server (rank " +
                                           std::to_string(transport_->rank()) + ")");
    }
    bool done = false;
    FEDREC_RETURN_IF_ERROR(Handle(*envelope, &done));
    if (done) return Status::Ok();
  }
}

Status AggregationShard::Handle(const Envelope& envelope, bool* done) {
  *done = false;
  Result<FrameView> frame = DecodeFrame(envelope);
  const std::string me = "shard server (rank " + std::to_string(transport_->rank()) + ")";
  if (!frame.ok()) {
    spdlog::warn("{}: dropped a frame from rank {}: {}", me, envelope.from,
                 frame.status().message());
    return Status::Ok();
  }
  if (envelope.from == coordinator_rank_) {
    switch (frame->header.type) {
      case MessageType::kShardRound:
        return OnRound(*frame);
      case MessageType::kShardClose:
        return OnClose(*frame);
      case MessageType::kShutdown:
        *done = true;
        return Status::Ok();
      default:
        spdlog::warn(
            "{}: dropped {} from the coordinator, expected ShardRound, ShardClose or "
            "Shutdown",
            me, MessageTypeName(frame->header.type));
        return Status::Ok();
    }
  }
  if (frame->header.type != MessageType::kModelUpdate &&
      frame->header.type != MessageType::kSecAggMasked &&
      frame->header.type != MessageType::kPaillierUpdate) {
    spdlog::warn(
        "{}: dropped {} from rank {}, expected a site's slice (ModelUpdate, "
        "SecAggMasked or PaillierUpdate)",
        me, MessageTypeName(frame->header.type), envelope.from);
    return Status::Ok();
  }
  const uint32_t round = frame->header.round;
  if (!round_ || round > round_->plan.round) {
    // Its round is not announced yet: kept until it is (a few frames at most:
    // a site sends its slice only after a plan that follows the announcement).
    early_[round].push_back(envelope);
    return Status::Ok();
  }
  return OnSlice(envelope, *frame);
}

Status AggregationShard::OnRound(const FrameView& frame) {
  Result<ShardRound> plan = DecodeMessage<ShardRound>(frame);
  const std::string me = "shard server (rank " + std::to_string(transport_->rank()) + ")";
  if (!plan.ok()) {
    spdlog::error("{}: {}", me, plan.status().message());
    return Answer(ShardSums{frame.header.round, 0, plan.status().message(), {}, {}, {}, {}});
  }
  auto round = std::make_unique<Round>();
  round->where = "shard server " + std::to_string(plan->shard) + " (rank " +
                 std::to_string(transport_->rank()) + "), round " + std::to_string(plan->round);
  const auto refuse = [&](const std::string& why) {
    spdlog::error("{}: {}", round->where, why);
    return Answer(ShardSums{plan->round, plan->shard, round->where + ": " + why, {}, {}, {}, {}});
  };
  if (plan->shards == 0 || plan->shard >= plan->shards)
    return refuse("shard " + std::to_string(plan->shard) + " of " + std::to_string(plan->shards));
  if (plan->site_ranks.size() != plan->sites.size())
    return refuse(std::to_string(plan->site_ranks.size()) + " site ranks for " +
                  std::to_string(plan->sites.size()) + " sites");
  for (size_t i = 0; i < plan->sites.size(); ++i) {
    round->site_of_rank[plan->site_ranks[i]] = plan->sites[i];
    round->rank_of_site[plan->sites[i]] = plan->site_ranks[i];
  }
  if (plan->aggregation == Aggregation::kNone) {
    for (const ShardBlock& block : plan->blocks) {
      const Slice rows = ShardSlice(block.rows, plan->shard, plan->shards);
      ParamBlock shape;
      shape.name = block.name;
      shape.rows = static_cast<uint32_t>(rows.size());
      shape.cols = block.cols;
      round->shapes.push_back(std::move(shape));
    }
  } else if (plan->aggregation == Aggregation::kSecAgg) {
    if (plan->ring_bits != 32 && plan->ring_bits != 64)
      return refuse("a ring of " + std::to_string(plan->ring_bits) + " bits, expected 32 or 64");
    round->words = ShardSlice(plan->length, plan->shard, plan->shards, kShardWordAlign);
    round->sum.assign(round->words.size() * (plan->ring_bits / 8), 0);
  } else if (plan->aggregation == Aggregation::kPaillier) {
    constexpr uint32_t kMaxCiphertextBytes = 4096;  // a 16384-bit modulus squared
    constexpr uint64_t kMaxUpdateBytes = uint64_t{1} << 40;
    if (plan->unit_bytes == 0 || plan->unit_bytes > kMaxCiphertextBytes || plan->length == 0 ||
        plan->values == 0 || plan->length > kMaxUpdateBytes / plan->unit_bytes)
      return refuse("Paillier slices of " + std::to_string(plan->length) + " ciphertexts of " +
                    std::to_string(plan->unit_bytes) + " bytes holding " +
                    std::to_string(plan->values) +
                    " values, expected at least one ciphertext of 1 to " +
                    std::to_string(kMaxCiphertextBytes) + " bytes, at most 2^40 bytes in all");
    round->ciphertexts = ShardSlice(plan->length, plan->shard, plan->shards);
  } else {
    return refuse(std::string("aggregation ") + AggregationName(plan->aggregation) +
                  ", expected none, secagg or paillier");
  }
  round->plan = std::move(plan).value();
  round_ = std::move(round);
  // Slices that came before the announcement, then any of older rounds.
  std::vector<Envelope> early;
  if (auto it = early_.find(round_->plan.round); it != early_.end()) early = std::move(it->second);
  early_.erase(early_.begin(), early_.upper_bound(round_->plan.round));
  for (const Envelope& envelope : early) {
    Result<FrameView> view = DecodeFrame(envelope);
    if (view.ok()) FEDREC_RETURN_IF_ERROR(OnSlice(envelope, *view));
  }
  return Status::Ok();
}

Status AggregationShard::OnSlice(const Envelope& envelope, const FrameView& frame) {
  Round& r = *round_;
  const uint32_t round = frame.header.round;
  const auto site_it = r.site_of_rank.find(envelope.from);
  if (round != r.plan.round || site_it == r.site_of_rank.end()) {
    spdlog::warn("{}: dropped {} of round {} from rank {}, which is not one of the round's sites",
                 r.where, MessageTypeName(frame.header.type), round, envelope.from);
    return Status::Ok();
  }
  const uint32_t site = site_it->second;
  const std::string from =
      "the slice of site " + std::to_string(site) + " (rank " + std::to_string(envelope.from) + ")";
  if (r.received.contains(site) || r.refused.contains(site)) {
    spdlog::warn("{}: dropped a second slice of site {}", r.where, site);
    return Status::Ok();
  }
  if (r.cut) {
    spdlog::warn("{}: dropped {}: it came after the coordinator's cut", r.where, from);
    return Status::Ok();
  }
  const auto refuse = [&](const std::string& why) {
    spdlog::warn("{}: refused {}: {}", r.where, from, why);
    r.refused[site] = from + ": " + why;
    return MaybeAnswer();
  };
  slice_bytes_ += envelope.bytes.size();
  if (r.plan.aggregation == Aggregation::kNone) {
    if (frame.header.type != MessageType::kModelUpdate)
      return refuse(std::string("a ") + MessageTypeName(frame.header.type) +
                    ", expected a ModelUpdate in a round without secure aggregation");
    Result<ModelUpdate> update = DecodeMessage<ModelUpdate>(frame);
    if (!update.ok()) return refuse(update.status().message());
    if (update->round != round || update->model_version != r.plan.model_version)
      return refuse("labelled round " + std::to_string(update->round) + ", model version " +
                    std::to_string(update->model_version) + "; expected round " +
                    std::to_string(round) + ", version " + std::to_string(r.plan.model_version));
    for (const BlockUpdate& block : update->blocks) {
      const ParamBlock* shape = FindBlock(r.shapes, block.name);
      if (shape == nullptr) return refuse("a block '" + block.name + "' the model does not have");
      if (block.cols != shape->cols)
        return refuse("block '" + block.name + "' has " + std::to_string(block.cols) +
                      " columns, expected " + std::to_string(shape->cols));
      if (!block.rows.empty() && block.rows.back() >= shape->rows)
        return refuse("block '" + block.name + "' has slice row " +
                      std::to_string(block.rows.back()) + ", the slice has " +
                      std::to_string(shape->rows) + " rows");
    }
    r.updates.emplace(site, std::move(update).value());
  } else if (r.plan.aggregation == Aggregation::kPaillier) {
    if (frame.header.type != MessageType::kPaillierUpdate)
      return refuse(std::string("a ") + MessageTypeName(frame.header.type) +
                    ", expected a PaillierUpdate slice in a Paillier round");
    Result<PaillierUpdate> update = DecodeMessage<PaillierUpdate>(frame);
    if (!update.ok()) return refuse(update.status().message());
    const uint64_t bytes = r.ciphertexts.size() * r.plan.unit_bytes;
    if (update->round != round || update->site != site || update->values != r.plan.values ||
        update->ciphertexts.size() != bytes) {
      return refuse("round " + std::to_string(update->round) + ", site " +
                    std::to_string(update->site) + ", " + std::to_string(update->values) +
                    " values, " + std::to_string(update->ciphertexts.size()) +
                    " bytes of ciphertexts; expected round " + std::to_string(round) + ", site " +
                    std::to_string(site) + ", " + std::to_string(r.plan.values) + " values, " +
                    std::to_string(bytes) + " bytes (ciphertexts " +
                    std::to_string(r.ciphertexts.begin) + ".." + std::to_string(r.ciphertexts.end) +
                    " of " + std::to_string(r.plan.unit_bytes) + " bytes)");
    }
    r.encrypted.emplace(site, std::move(update).value());
  } else {
    if (frame.header.type != MessageType::kSecAggMasked)
      return refuse(std::string("a ") + MessageTypeName(frame.header.type) +
                    ", expected a SecAggMasked slice in a secure round");
    Result<SecAggMaskedView> masked = DecodeMessage<SecAggMaskedView>(frame);
    if (!masked.ok()) return refuse(masked.status().message());
    const size_t bytes = r.sum.size();
    if (masked->round != round || masked->site != site || masked->ring_bits != r.plan.ring_bits ||
        masked->data.size() != bytes) {
      return refuse("round " + std::to_string(masked->round) + ", site " +
                    std::to_string(masked->site) + ", ring " + std::to_string(masked->ring_bits) +
                    ", " + std::to_string(masked->data.size()) + " bytes; expected round " +
                    std::to_string(round) + ", site " + std::to_string(site) + ", ring " +
                    std::to_string(r.plan.ring_bits) + ", " + std::to_string(bytes) +
                    " bytes (words " + std::to_string(r.words.begin) + ".." +
                    std::to_string(r.words.end) + ")");
    }
    secagg::AddWordsInPlace(r.sum, masked->data, r.plan.ring_bits);
  }
  r.received.insert(site);
  return MaybeAnswer();
}

Status AggregationShard::OnClose(const FrameView& frame) {
  Result<ShardClose> close = DecodeMessage<ShardClose>(frame);
  if (!close.ok() || !round_ || close->round != round_->plan.round) {
    const std::string why = !close.ok() ? close.status().message()
                                        : "a close request for round " +
                                              std::to_string(frame.header.round) +
                                              ", which this shard server was not told of";
    spdlog::error("shard server (rank {}): {}", transport_->rank(), why);
    return Answer(
        ShardSums{frame.header.round, round_ ? round_->plan.shard : 0, why, {}, {}, {}, {}});
  }
  if (!std::is_sorted(close->sites.begin(), close->sites.end()) ||
      std::adjacent_find(close->sites.begin(), close->sites.end()) != close->sites.end()) {
    return Answer(ShardSums{close->round,
                            round_->plan.shard,
                            round_->where + ": the close request's sites are not ascending",
                            {},
                            {},
                            {},
                            {}});
  }
  round_->close = std::move(close).value();
  return MaybeAnswer();
}

Status AggregationShard::MaybeAnswer() {
  if (!round_ || !round_->close) return Status::Ok();
  Round& r = *round_;
  const ShardClose& close = *r.close;
  for (uint32_t site : close.sites) {
    if (!r.received.contains(site) && !r.refused.contains(site)) return Status::Ok();  // in flight
  }
  ShardSums sums;
  sums.round = r.plan.round;
  sums.shard = r.plan.shard;
  const auto fail = [&](const std::string& why) {
    sums.error = r.where + ": " + why;
    r.close.reset();
    return Answer(std::move(sums));
  };
  for (uint32_t site : close.sites) {
    if (auto it = r.refused.find(site); it != r.refused.end()) return fail(it->second);
  }
  if (r.plan.aggregation == Aggregation::kPaillier) return ForwardSlices();
  if (close.cut) {  // secagg: the sites summed, and no more
    r.cut = true;
    sums.sites.assign(r.received.begin(), r.received.end());
    r.close.reset();
    return Answer(std::move(sums));
  }
  if (r.plan.aggregation == Aggregation::kNone) {
    // Folded in site order over the slice, exactly as the coordinator folds
    // whole updates (UpdateAggregator), so the sums are the same.
    UpdateAggregator aggregator(r.shapes, r.plan.model_version, r.plan.round, close.sites);
    for (uint32_t site : close.sites) {
      auto it = r.updates.find(site);
      if (Status added = aggregator.Add(site, std::move(it->second)); !added.ok())
        return fail(added.message());
      r.updates.erase(it);
    }
    AggregateInput input = aggregator.Finish();
    for (size_t b = 0; b < r.shapes.size(); ++b) {
      sums.row_weight.insert(sums.row_weight.end(), input.row_weight[b].begin(),
                             input.row_weight[b].end());
      sums.weighted_sum.insert(sums.weighted_sum.end(), input.weighted_sum[b].begin(),
                               input.weighted_sum[b].end());
    }
    sums.sites = close.sites;
  } else {
    const std::vector<uint32_t> summed(r.received.begin(), r.received.end());
    if (summed != close.sites) {
      return fail("the slice's sum holds " + std::to_string(summed.size()) +
                  " sites' inputs, but the close request names " +
                  std::to_string(close.sites.size()) + " survivors");
    }
    constexpr size_t kMaskBytes = sizeof(secagg::PrgKey) + 1;
    if (close.masks.size() % kMaskBytes != 0)
      return fail("a mask list of " + std::to_string(close.masks.size()) +
                  " bytes, expected a multiple of " + std::to_string(kMaskBytes));
    std::vector<secagg::SignedPrgKey> masks(close.masks.size() / kMaskBytes);
    for (size_t m = 0; m < masks.size(); ++m) {
      const uint8_t* p = close.masks.data() + m * kMaskBytes;
      std::copy_n(p, masks[m].key.size(), masks[m].key.begin());
      masks[m].subtract = p[kMaskBytes - 1] != 0;
    }
    secagg::MaskInPlace(r.sum, r.plan.ring_bits, masks, threads_, nullptr, r.words.begin);
    crypto::Cleanse(std::span(reinterpret_cast<uint8_t*>(masks.data()),
                              masks.size() * sizeof(secagg::SignedPrgKey)));
    sums.words = std::move(r.sum);
    sums.sites = close.sites;
  }
  round_.reset();  // the round is over here
  return Answer(std::move(sums));
}

Status AggregationShard::ForwardSlices() {
  Round& r = *round_;
  const ShardClose close = std::move(*r.close);
  r.close.reset();  // the round stays: the coordinator may ask more decrypting sites
  ShardSums sums;
  sums.round = r.plan.round;
  sums.shard = r.plan.shard;
  PaillierSum slices;
  slices.round = r.plan.round;
  slices.values = r.plan.values;
  for (uint32_t site : close.sites) {
    const auto it = r.encrypted.find(site);
    if (it == r.encrypted.end()) {
      sums.error = r.where + ": the close request names site " + std::to_string(site) +
                   ", which is not one of the round's sites";
      return Answer(std::move(sums));
    }
    slices.updates.push_back(it->second);
  }
  std::vector<int> ranks;
  for (uint32_t site : close.forward_to) {
    const auto rank = r.rank_of_site.find(site);
    if (rank == r.rank_of_site.end()) {
      sums.error = r.where + ": the close request asks to send the slices to site " +
                   std::to_string(site) + ", which is not one of the round's sites";
      return Answer(std::move(sums));
    }
    ranks.push_back(rank->second);
  }
  const std::vector<uint8_t> frame =
      EncodeMessage(slices, r.plan.round, static_cast<uint32_t>(transport_->rank()));
  for (int rank : ranks) FEDREC_RETURN_IF_ERROR(transport_->Send(rank, frame));
  sums.sites = close.sites;
  return Answer(std::move(sums));
}

Status AggregationShard::Answer(ShardSums sums) {
  const uint32_t round = sums.round;
  return transport_->Send(coordinator_rank_,
                          EncodeMessage(sums, round, static_cast<uint32_t>(transport_->rank())));
}

}  // namespace fedrec
