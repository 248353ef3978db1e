// The site's part of threshold Paillier aggregation (crypto/paillier_round.h):
// the key set-up (offering a set-up key, dealing when this site is the dealer,
// opening its share), a signed encrypted update per round (sliced over the
// shard servers when the plan names some), and a partial decryption of a sum
// of signed updates it has checked (put back together from the shard
// servers' slices when sharded).
#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <optional>

#include "crypto/paillier.h"
#include "crypto/paillier_round.h"
#include "crypto/update_codec.h"
#include "worker/site_scheme.h"
#include "worker/worker.h"

namespace fedrec {
namespace {

constexpr std::string_view kSealingInfo = "fedrec paillier key share";

// Owns secret bytes and wipes them on every way out of a scope.
struct WipedBytes {
  std::vector<uint8_t> bytes;
  ~WipedBytes() { crypto::Cleanse(bytes); }
};

// The key set-up in progress and this site's share of the decryption key
// once it is done.
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

class PaillierSite : public SiteScheme {
 public:
  explicit PaillierSite(SiteContext* context) : c_(*context) {}
  Aggregation kind() const override { return Aggregation::kPaillier; }

  Status OnPlan(RoundPlan plan, std::vector<uint64_t>) override {
    const uint32_t round = plan.round;
    pending_plan_ = std::move(plan);
    sharded_request_.reset();
    shard_slices_.clear();
    return SendPaillierUpdate(round);
  }
  Status OnEvaluation(const EvalRequest& request, const EvalReport&) override {
    return c_.SendError(request.round,
                        "evaluation sums by paillier, expected none or secagg (Paillier rounds "
                        "evaluate through secure aggregation)");
  }
  bool Claims(MessageType type, uint32_t round) const override {
    if (type == MessageType::kPaillierKey || type == MessageType::kPaillierSum) return true;
    // The dealer's key list: a set-up key of this round is out.
    return type == MessageType::kSecAggKeyList && paillier_ && paillier_->setup_key &&
           paillier_->setup_round == round;
  }
  Status OnMessage(const FrameView& frame) override { return OnPaillierMessage(frame); }
  Status OnShardMessage(uint32_t shard, const FrameView& frame) override;

 private:
  Status OnPaillierMessage(const FrameView& frame);
  Status OfferPaillierSetupKey(const PaillierKey& request);
  Status GeneratePaillierKey(const SecAggKeyList& list);
  Status AdoptPaillierKey(const PaillierKey& message);
  Status SendPaillierUpdate(uint32_t round);
  Status PartiallyDecrypt(const PaillierSum& sum);
  // Sharded: once the coordinator's request and every shard server's slices
  // are in, puts each update back together and decrypts (PartiallyDecrypt).
  Status MaybeDecryptSharded(uint32_t round);
  // The party index (1-based position in the roster) of `site`; 0 when the
  // roster does not hold it.
  uint32_t PaillierParty(uint32_t site) const;
  static PackingParams PaillierPacking(const RoundPlan& plan);
  // Trains for the pending plan and encodes the update in its fixed-point
  // form, one uint64_t per element.
  Result<std::vector<uint64_t>> TrainEncoded(std::vector<double>* metrics);

  SiteContext& c_;
  std::optional<RoundPlan> pending_plan_;
  std::unique_ptr<PaillierSiteState> paillier_;
  // Rounds this site encrypted / partially decrypted for last: each is done
  // at most once per round, and never again for an earlier round (kept across
  // key set-ups).
  uint32_t paillier_encrypted_round_ = 0;
  uint32_t paillier_decrypted_round_ = 0;
  // Sharded decryption of the pending plan's round: the coordinator's request
  // (the reporting sites' notices) and each shard server's slices, by shard.
  std::optional<PaillierSum> sharded_request_;
  std::map<uint32_t, PaillierSum> shard_slices_;
};

uint32_t PaillierSite::PaillierParty(uint32_t site) const {
  uint32_t index = 1;
  for (const auto& [roster_site, key] : c_.roster()) {
    if (roster_site == site) return index;
    ++index;
  }
  return 0;
}

Status PaillierSite::OnPaillierMessage(const FrameView& frame) {
  const uint32_t round = frame.header.round;
  switch (frame.header.type) {
    case MessageType::kPaillierKey: {
      Result<PaillierKey> message = DecodeMessage<PaillierKey>(frame);
      if (!message.ok()) return c_.SendError(round, message.status().message());
      if (message->round != round)
        return c_.SendError(
            round, "a Paillier key message labelled round " + std::to_string(message->round));
      if (message->public_key.empty()) return OfferPaillierSetupKey(*message);
      return AdoptPaillierKey(*message);
    }
    case MessageType::kSecAggKeyList: {  // this site deals: generate and share the key
      Result<SecAggKeyList> list = DecodeMessage<SecAggKeyList>(frame);
      if (!list.ok()) return c_.SendError(round, list.status().message());
      return GeneratePaillierKey(*list);
    }
    case MessageType::kPaillierSum: {
      Result<PaillierSum> sum = DecodeMessage<PaillierSum>(frame);
      if (!sum.ok()) return c_.SendError(round, sum.status().message());
      if (sum->round != round)
        return c_.SendError(round,
                            "a decryption request labelled round " + std::to_string(sum->round));
      if (pending_plan_ && pending_plan_->round == round && !pending_plan_->shard_ranks.empty()) {
        if (sharded_request_)
          return c_.SendError(round, "refusing to decrypt: a second decryption request for round " +
                                         std::to_string(round));
        sharded_request_ = std::move(sum).value();
        return MaybeDecryptSharded(round);
      }
      return PartiallyDecrypt(*sum);
    }
    default:
      return c_.SendError(round, std::string("unexpected ") + MessageTypeName(frame.header.type));
  }
}

PackingParams PaillierSite::PaillierPacking(const RoundPlan& plan) {
  return {static_cast<int>(SignedValueBits(FormatOf(plan))),
          static_cast<int>(plan.participants.size())};
}

Status PaillierSite::OfferPaillierSetupKey(const PaillierKey& request) {
  const uint32_t round = request.round;
  if (c_.roster().empty()) {
    return c_.SendError(round,
                        "refusing the Paillier key set-up: this site has no roster of the sites' "
                        "identity keys (security.site_public_keys); Paillier needs one to check "
                        "the dealer's and every site's signatures");
  }
  const auto own = c_.roster().find(c_.options().site);
  if (own == c_.roster().end() || own->second != c_.identity().public_key) {
    return c_.SendError(round,
                        "refusing the Paillier key set-up: this site's identity key is not its "
                        "entry in its roster (security.site_public_keys)");
  }
  const uint32_t parties = static_cast<uint32_t>(c_.roster().size());
  Result<uint32_t> threshold = paillier_round::DecryptionThreshold(
      parties, c_.options().secagg_policy.threat.adversarial_rate);
  if (!threshold.ok()) return c_.SendError(round, threshold.status().message());
  const uint32_t dealer =
      std::next(c_.roster().begin(), paillier_round::Dealer(round, parties))->first;
  if (request.holder != dealer) {
    return c_.SendError(round, "refusing the Paillier key set-up: the request names site " +
                                   std::to_string(request.holder) +
                                   " as the dealer, but the dealer of a set-up in round " +
                                   std::to_string(round) + " is site " + std::to_string(dealer) +
                                   " (roster position (round - 1) mod " + std::to_string(parties) +
                                   ")");
  }
  const int min_bits = c_.options().insecure_test_min_paillier_bits > 0
                           ? c_.options().insecure_test_min_paillier_bits
                           : kPaillierSiteMinModulusBits;
  if (request.modulus_bits < static_cast<uint32_t>(min_bits) ||
      request.modulus_bits > static_cast<uint32_t>(kPaillierMaxModulusBits) ||
      request.modulus_bits % 2 != 0) {
    return c_.SendError(round, "refusing the Paillier key set-up: a modulus of " +
                                   std::to_string(request.modulus_bits) +
                                   " bits requested, expected an even size of at least " +
                                   std::to_string(min_bits) + " bits (minimum modulus)");
  }
  paillier_round::JobId job = c_.options().job_id;
  if (job == paillier_round::JobId{}) {
    job = request.job_id;
  } else if (request.job_id != job) {
    return c_.SendError(round, "refusing the Paillier key set-up: it is for another job");
  }
  auto state = std::make_unique<PaillierSiteState>();
  state->setup_round = round;
  state->dealer = dealer;
  state->modulus_bits = request.modulus_bits;
  state->threshold = *threshold;
  state->parties = parties;
  state->job = job;
  Result<crypto::DhKeyPair> setup = crypto::GenerateDhKey();
  if (!setup.ok()) return c_.SendError(round, setup.status().message());
  state->setup_key = *setup;
  SecAggKeys& offer = state->offered;
  offer.round = round;
  offer.site = c_.options().site;
  offer.identity_key = c_.identity().public_key;
  offer.cipher_key = setup->public_key;
  Result<crypto::Signature> signature =
      crypto::Sign(c_.identity(), paillier_round::OfferTranscript(job, offer));
  if (!signature.ok()) return c_.SendError(round, signature.status().message());
  offer.signature = *signature;
  spdlog::info("{}: Paillier key set-up with site {} dealing, threshold {} of {}", c_.Where(round),
               dealer, *threshold, parties);
  paillier_ = std::move(state);
  return c_.Send(paillier_->offered, round);
}

Status PaillierSite::GeneratePaillierKey(const SecAggKeyList& list) {
  const uint32_t round = list.round;
  if (!paillier_ || !paillier_->setup_key || paillier_->setup_round != round ||
      paillier_->dealer != c_.options().site)
    return c_.SendError(round, "a key list for a Paillier key set-up this site does not deal");
  PaillierSiteState& state = *paillier_;
  std::map<uint32_t, const SecAggKeys*> offers;
  for (const SecAggKeys& offer : list.keys) {
    const auto roster_key = c_.roster().find(offer.site);
    if (roster_key == c_.roster().end()) {
      return c_.SendError(round, "refusing to deal: the key list holds an offer of site " +
                                     std::to_string(offer.site) + ", which is not in the roster");
    }
    if (offer.round != round ||
        !crypto::Verify(roster_key->second, paillier_round::OfferTranscript(state.job, offer),
                        offer.signature)) {
      return c_.SendError(round, "refusing to deal: the set-up offer of site " +
                                     std::to_string(offer.site) +
                                     " does not verify under its roster identity key");
    }
    if (!offers.emplace(offer.site, &offer).second) {
      return c_.SendError(round, "refusing to deal: site " + std::to_string(offer.site) +
                                     " offers twice in the key list");
    }
  }
  offers[c_.options().site] = &state.offered;
  if (offers.size() < state.threshold) {
    return c_.SendError(round, "refusing to deal: " + std::to_string(offers.size()) +
                                   " sites offered keys, fewer than the threshold " +
                                   std::to_string(state.threshold) + " needed to ever decrypt");
  }
  Result<std::vector<PaillierKeyShare>> shares =
      PaillierKeyShare::Deal(static_cast<int>(state.modulus_bits), state.parties, state.threshold);
  if (!shares.ok()) return c_.SendError(round, shares.status().message());
  PaillierKey answer;
  answer.round = round;
  answer.holder = c_.options().site;
  answer.modulus_bits = state.modulus_bits;
  answer.threshold = state.threshold;
  answer.parties = state.parties;
  answer.holder_keys = state.offered;
  answer.public_key = shares->front().public_key().ToBytes();
  for (const auto& [site, offer] : offers) {
    if (site == c_.options().site) continue;
    const PaillierKeyShare& share = (*shares)[PaillierParty(site) - 1];
    const WipedBytes secret{share.ToBytes()};
    const std::vector<uint8_t> context =
        paillier_round::SealingContext(state.job, round, c_.options().site, site, state.threshold,
                                       state.parties, answer.public_key);
    Result<crypto::Key32> shared =
        crypto::AgreeKey(state.setup_key->private_key, offer->cipher_key, context, kSealingInfo);
    if (!shared.ok()) return c_.SendError(round, shared.status().message());
    Result<std::vector<uint8_t>> sealed = crypto::SealOnce(*shared, context, secret.bytes);
    crypto::Cleanse(*shared);
    if (!sealed.ok()) return c_.SendError(round, sealed.status().message());
    answer.sealed_private.push_back({site, std::move(sealed).value()});
  }
  // The dealer keeps its own share; the others die with `shares` (their
  // integers are BN_clear_free'd), as did p, q, lambda and d inside Deal.
  state.share = (*shares)[PaillierParty(c_.options().site) - 1];
  shares->clear();
  crypto::Cleanse(state.setup_key->private_key);
  state.setup_key.reset();
  return c_.Send(answer, round);
}

Status PaillierSite::AdoptPaillierKey(const PaillierKey& message) {
  const uint32_t round = message.round;
  if (!paillier_ || !paillier_->setup_key || paillier_->setup_round != round)
    return c_.SendError(round, "a Paillier key share for a set-up this site did not take part in");
  PaillierSiteState& state = *paillier_;
  if (message.holder != state.dealer) {
    return c_.SendError(round, "refusing the Paillier key share: it names site " +
                                   std::to_string(message.holder) +
                                   " as the dealer, but this set-up's dealer is site " +
                                   std::to_string(state.dealer));
  }
  const SecAggKeys& dealer = message.holder_keys;
  if (dealer.site != state.dealer || dealer.round != round ||
      !crypto::Verify(c_.roster().at(state.dealer),
                      paillier_round::OfferTranscript(state.job, dealer), dealer.signature)) {
    return c_.SendError(round,
                        "refusing the Paillier key share: the dealer's set-up key does not "
                        "verify under the roster identity key of site " +
                            std::to_string(state.dealer));
  }
  if (message.threshold != state.threshold || message.parties != state.parties) {
    return c_.SendError(round, "refusing the Paillier key share: dealt " +
                                   std::to_string(message.threshold) + " of " +
                                   std::to_string(message.parties) + ", expected threshold " +
                                   std::to_string(state.threshold) + " of the roster's " +
                                   std::to_string(state.parties) + " sites");
  }
  Result<PaillierPublicKey> public_key = PaillierPublicKey::FromBytes(message.public_key);
  if (!public_key.ok()) return c_.SendError(round, public_key.status().message());
  if (public_key->modulus_bits() != static_cast<int>(state.modulus_bits)) {
    return c_.SendError(round, "refusing the Paillier key share: the public key has a " +
                                   std::to_string(public_key->modulus_bits()) +
                                   "-bit modulus, expected the " +
                                   std::to_string(state.modulus_bits) + " bits requested");
  }
  if (message.sealed_private.size() != 1 || message.sealed_private[0].site != c_.options().site) {
    return c_.SendError(round, "expected the Paillier key share sealed for this site, found " +
                                   std::to_string(message.sealed_private.size()) + " entries");
  }
  const std::vector<uint8_t> context =
      paillier_round::SealingContext(state.job, round, state.dealer, c_.options().site,
                                     state.threshold, state.parties, message.public_key);
  Result<crypto::Key32> shared =
      crypto::AgreeKey(state.setup_key->private_key, dealer.cipher_key, context, kSealingInfo);
  if (!shared.ok()) return c_.SendError(round, shared.status().message());
  Result<std::vector<uint8_t>> opened =
      crypto::OpenOnce(*shared, context, message.sealed_private[0].sealed);
  crypto::Cleanse(*shared);
  if (!opened.ok())
    return c_.SendError(round, "the sealed Paillier key share: " + opened.status().message());
  const WipedBytes secret{std::move(opened).value()};
  Result<PaillierKeyShare> share = PaillierKeyShare::FromBytes(secret.bytes);
  if (!share.ok()) return c_.SendError(round, share.status().message());
  if (share->index() != PaillierParty(c_.options().site) || share->parties() != state.parties ||
      share->threshold() != state.threshold || !(share->public_key() == *public_key)) {
    return c_.SendError(round,
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
  return c_.Send(ack, round);
}

Status PaillierSite::SendPaillierUpdate(uint32_t round) {
  if (!paillier_ || !paillier_->share)
    return c_.SendError(round, "no Paillier key share: this site missed the key set-up");
  if (round <= paillier_encrypted_round_) {
    return c_.SendError(round, "refusing to encrypt an update for round " + std::to_string(round) +
                                   ": this site already sent one for round " +
                                   std::to_string(paillier_encrypted_round_) +
                                   " (at most one per round)");
  }
  const RoundPlan& plan = *pending_plan_;
  if (!std::binary_search(plan.participants.begin(), plan.participants.end(), c_.options().site))
    return c_.SendError(round, "the plan's participants do not include this site");
  std::vector<double> metrics;
  Result<std::vector<uint64_t>> encoded = TrainEncoded(&metrics);
  if (!encoded.ok()) return c_.SendError(round, encoded.status().message());
  const PackingParams params = PaillierPacking(plan);
  // The update, then its training loss: only their totals are ever decrypted.
  std::vector<int64_t> values(encoded->begin(), encoded->end());
  const std::vector<int64_t> loss = paillier_round::EncodeTrainLoss(
      metrics.at(0), static_cast<uint64_t>(metrics.at(1)), params.value_bits);
  values.insert(values.end(), loss.begin(), loss.end());
  const PaillierKeyShare& share = *paillier_->share;
  Result<std::vector<uint8_t>> ciphertexts = EncryptPacked(share.public_key(), values, params);
  if (!ciphertexts.ok()) return c_.SendError(round, ciphertexts.status().message());
  paillier_encrypted_round_ = round;
  c_.AfterAnswer();
  PaillierUpdate update;
  update.round = round;
  update.site = c_.options().site;
  update.values = values.size();
  update.ciphertexts = std::move(ciphertexts).value();
  Result<crypto::Signature> signature = crypto::Sign(
      c_.identity(), paillier_round::UpdateTranscript(paillier_->job, round, update.site,
                                                      update.values, update.ciphertexts));
  if (!signature.ok()) return c_.SendError(round, signature.status().message());
  update.signature = *signature;
  if (plan.shard_ranks.empty()) return c_.Send(update, round);
  // Sharded: shard server s gets the ciphertexts ShardSlice(ciphertexts, s, S)
  // under the signature of the whole update; the coordinator a notice holding
  // the slices' digests (which tell a decrypting site which shard server sent
  // a slice other than this one).
  const size_t unit = share.public_key().ciphertext_size();
  const uint64_t count = update.ciphertexts.size() / unit;
  const uint32_t shards = static_cast<uint32_t>(plan.shard_ranks.size());
  PaillierUpdate notice = update;
  notice.ciphertexts.clear();
  for (uint32_t s = 0; s < shards; ++s) {
    const Slice slice = ShardSlice(count, s, shards);
    PaillierUpdate part = notice;
    part.ciphertexts.assign(update.ciphertexts.begin() + static_cast<ptrdiff_t>(slice.begin * unit),
                            update.ciphertexts.begin() + static_cast<ptrdiff_t>(slice.end * unit));
    const crypto::Key32 digest = crypto::Sha256(part.ciphertexts);
    notice.ciphertexts.insert(notice.ciphertexts.end(), digest.begin(), digest.end());
    FEDREC_RETURN_IF_ERROR(c_.Send(part, round, plan.shard_ranks[s]));
  }
  return c_.Send(notice, round);
}

Status PaillierSite::OnShardMessage(uint32_t shard, const FrameView& frame) {
  const uint32_t round = frame.header.round;
  const std::string from = "shard server " + std::to_string(shard);
  Result<PaillierSum> slices = DecodeMessage<PaillierSum>(frame);
  if (!slices.ok())
    return c_.SendError(
        round, "refusing to decrypt: the slices from " + from + ": " + slices.status().message());
  if (!pending_plan_ || pending_plan_->round != round || slices->round != round ||
      pending_plan_->aggregation != Aggregation::kPaillier ||
      shard >= pending_plan_->shard_ranks.size()) {
    return c_.SendError(round, "refusing to decrypt: slices from " + from + " labelled round " +
                                   std::to_string(slices->round) +
                                   ", but this site has no sharded Paillier plan for it");
  }
  if (!shard_slices_.emplace(shard, std::move(slices).value()).second)
    return c_.SendError(round, "refusing to decrypt: a second set of slices from " + from +
                                   " for round " + std::to_string(round));
  return MaybeDecryptSharded(round);
}

Status PaillierSite::MaybeDecryptSharded(uint32_t round) {
  const RoundPlan& plan = *pending_plan_;
  const uint32_t shards = static_cast<uint32_t>(plan.shard_ranks.size());
  if (!sharded_request_ || shard_slices_.size() < shards) return Status::Ok();  // more to come
  const auto refuse = [&](const std::string& why) {
    sharded_request_.reset();
    shard_slices_.clear();
    return c_.SendError(round, "refusing to decrypt: " + why);
  };
  if (!paillier_ || !paillier_->share) return refuse("this site holds no Paillier key share");
  PaillierSum sum = std::move(*sharded_request_);
  std::map<uint32_t, PaillierSum> slices = std::move(shard_slices_);
  sharded_request_.reset();
  shard_slices_.clear();
  const PackingParams params = PaillierPacking(plan);
  const uint64_t values =
      EncodedLength(c_.UploadShapes()) + paillier_round::TrainLossSlots(params.value_bits);
  if (sum.values != values) {
    return refuse("the request is for " + std::to_string(sum.values) + " values, expected " +
                  std::to_string(values) + " for this round's update");
  }
  const PaillierPublicKey& public_key = paillier_->share->public_key();
  Result<PaillierPacker> packer = PaillierPacker::Create(params, public_key.modulus_bits());
  if (!packer.ok()) return refuse(packer.status().message());
  const size_t unit = public_key.ciphertext_size();
  const uint64_t count = packer->NumPlaintexts(sum.values);
  for (PaillierUpdate& update : sum.updates) {
    const std::string who = "site " + std::to_string(update.site);
    if (update.ciphertexts.size() != size_t{shards} * 32) {
      return refuse("the coordinator's notice of " + who + " holds " +
                    std::to_string(update.ciphertexts.size()) +
                    " bytes of slice digests, expected " + std::to_string(shards * 32) +
                    " (one SHA-256 digest per shard server)");
    }
    const std::vector<uint8_t> digests = std::move(update.ciphertexts);
    update.ciphertexts.clear();
    update.ciphertexts.reserve(count * unit);
    for (uint32_t s = 0; s < shards; ++s) {
      const std::string from = "shard server " + std::to_string(s) + " (rank " +
                               std::to_string(plan.shard_ranks[s]) + ")";
      const PaillierSum& part = slices.at(s);
      const size_t i = static_cast<size_t>(&update - sum.updates.data());
      if (part.values != sum.values || part.updates.size() != sum.updates.size() ||
          part.updates[i].site != update.site) {
        const std::string found = i < part.updates.size()
                                      ? "site " + std::to_string(part.updates[i].site) + "'s"
                                      : "none";
        return refuse(from + " sent the slices of " + std::to_string(part.updates.size()) +
                      " updates of " + std::to_string(part.values) + " values for round " +
                      std::to_string(round) + " (slice " + std::to_string(i) + ": " + found +
                      "), expected those of the " + std::to_string(sum.updates.size()) +
                      " sites the coordinator names, of " + std::to_string(sum.values) +
                      " values, in the same order (slice " + std::to_string(i) + ": " + who +
                      "'s)");
      }
      const std::vector<uint8_t>& bytes = part.updates[i].ciphertexts;
      const uint64_t expected = ShardSlice(count, s, shards).size() * unit;
      if (bytes.size() != expected) {
        return refuse(from + " sent a slice of " + std::to_string(bytes.size()) + " bytes of " +
                      who + "'s update for round " + std::to_string(round) + ", expected " +
                      std::to_string(expected));
      }
      const crypto::Key32 digest = crypto::Sha256(bytes);
      if (!std::equal(digest.begin(), digest.end(), digests.begin() + s * 32)) {
        return refuse(from + " sent a slice of " + who + "'s update for round " +
                      std::to_string(round) + " other than the one the site sent (SHA-256 " +
                      "digest mismatch)");
      }
      update.ciphertexts.insert(update.ciphertexts.end(), bytes.begin(), bytes.end());
    }
  }
  // The updates as the site signed them: checked and multiplied as unsharded.
  return PartiallyDecrypt(sum);
}

Status PaillierSite::PartiallyDecrypt(const PaillierSum& sum) {
  const uint32_t round = sum.round;
  const auto refuse = [&](const std::string& why) {
    return c_.SendError(round, "refusing to decrypt: " + why);
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
      EncodedLength(c_.UploadShapes()) + paillier_round::TrainLossSlots(params.value_bits);
  if (sum.values != expected) {
    return refuse("the request is for " + std::to_string(sum.values) + " values, expected " +
                  std::to_string(expected) + " for this round's update");
  }
  std::vector<uint32_t> sites;
  for (const PaillierUpdate& update : sum.updates) {
    const std::string who = "the update of site " + std::to_string(update.site);
    const auto roster_key = c_.roster().find(update.site);
    if (roster_key == c_.roster().end()) return refuse(who + " is not a roster site's");
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
  answer.site = c_.options().site;
  answer.partials = std::move(partials).value();
  return c_.Send(answer, round);
}

Result<std::vector<uint64_t>> PaillierSite::TrainEncoded(std::vector<double>* metrics) {
  FEDREC_ASSIGN_OR_RETURN(const LossSums loss, c_.Train(*pending_plan_));
  *metrics = {loss.sum, static_cast<double>(loss.count)};
  FEDREC_RETURN_IF_ERROR(CheckFinite(c_.UploadShapes(), c_.UploadViews()));
  const RoundPlan& plan = *pending_plan_;
  return EncodeUpdate(c_.UploadShapes(), CollectUpdate(c_.UploadShapes(), c_.UploadViews()),
                      FormatOf(plan), c_.options().seed, plan.round, c_.options().site);
}

}  // namespace

std::unique_ptr<SiteScheme> MakePaillierSite(SiteContext* context) {
  return std::make_unique<PaillierSite>(context);
}

}  // namespace fedrec
