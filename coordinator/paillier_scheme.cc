// Threshold Paillier aggregation (crypto/paillier_round.h): the sites share
// a decryption key dealt once (and again after a failed set-up); each round
// they send signed encrypted updates, the coordinator multiplies them and a
// threshold of sites partially decrypt the sum. Evaluation sums go through
// secure aggregation (SecureEvaluate).
//
// With shard servers (CoordinatorOptions::shard_ranks) each site sends shard
// server s the ciphertexts ShardSlice(ciphertexts, s, S) of its signed update
// and the coordinator only a notice (the slices' digests, the signature); at
// decryption the shard servers send their slices of the reporting sites'
// updates straight to the decrypting sites, which put each update back
// together, check its signature and multiply as without shard servers. The
// coordinator thus receives neither the updates nor their bytes, and sends
// the decrypting sites the notices instead of every update.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>

#include "coordinator/scheme_common.h"
#include "crypto/paillier.h"
#include "crypto/paillier_round.h"

namespace fedrec {
namespace {

class PaillierScheme : public CoordinatorScheme {
 public:
  explicit PaillierScheme(SchemeContext context) : c_(std::move(context)) {}
  Aggregation kind() const override { return Aggregation::kPaillier; }

  Status Round(RoundPlan plan, const std::vector<uint32_t>& selected, bool /*individual*/,
               RoundMetrics* metrics, AggregateInput* input, RoundMetrics*) override {
    SiteLink& link = *c_.link;
    const uint32_t round = plan.round;
    const std::vector<int>& shard_ranks = c_.options->shard_ranks;
    const bool sharded = !shard_ranks.empty();
    SecureRoundCost cost(link.transport(), "Paillier aggregation", round, metrics);
    const auto abort = [&cost](const Status& status) { return cost.Abort(status); };
    if (paillier_public_.empty()) {
      Status setup = cost.Timed([&] { return Setup(round); });
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
    FixedPointFormat format = c_.format;
    format.ring_bits = 64;
    plan.aggregation = Aggregation::kPaillier;
    plan.participants = participants;
    SetFormat(format, &plan);
    FEDREC_ASSIGN_OR_RETURN(PaillierPublicKey public_key,
                            PaillierPublicKey::FromBytes(paillier_public_));
    const uint64_t update_length = EncodedLength(*c_.upload);
    const PackingParams params{static_cast<int>(SignedValueBits(format)),
                               static_cast<int>(participants.size())};
    // The update, then the training loss (paillier_round::EncodeTrainLoss).
    const uint64_t length = update_length + paillier_round::TrainLossSlots(params.value_bits);
    FEDREC_ASSIGN_OR_RETURN(PaillierPacker packer,
                            PaillierPacker::Create(params, public_key.modulus_bits()));
    const size_t ciphertexts = packer.NumPlaintexts(length);
    const size_t ciphertext_bytes = ciphertexts * public_key.ciphertext_size();
    // Sharded, the site's notice holds a SHA-256 digest per slice instead.
    const size_t update_bytes = sharded ? shard_ranks.size() * 32 : ciphertext_bytes;
    if (sharded) {
      ShardRound announce;
      announce.round = round;
      announce.aggregation = Aggregation::kPaillier;
      announce.model_version = plan.model_version;
      announce.sites = participants;
      announce.length = ciphertexts;
      announce.values = length;
      announce.unit_bytes = static_cast<uint32_t>(public_key.ciphertext_size());
      FEDREC_RETURN_IF_ERROR(AnnounceShards(c_, std::move(announce), &plan));
    }
    FEDREC_RETURN_IF_ERROR(c_.send_plan(&plan, participants));
    PaillierSum request;
    request.round = round;
    request.values = length;
    const auto fail = [&](uint32_t site, const std::string& reason) {
      spdlog::warn("coordinator, round {}: {} failed: {}", round, link.SiteName(site), reason);
      link.ForgetModel(site);
    };
    // Step 4: the signed encrypted updates (sharded: the notices), kept to be
    // sent to the decryptors.
    FEDREC_RETURN_IF_ERROR(link.Collect<PaillierUpdate>(
        round, participants,
        [&](uint32_t site, PaillierUpdate update) {
          if (update.site != site || update.round != round)
            return fail(site, "mislabelled encrypted update");
          if (update.values != length || update.ciphertexts.size() != update_bytes) {
            return fail(site,
                        std::string(sharded ? "encrypted update notice" : "encrypted update") +
                            " of " + std::to_string(update.values) + " values in " +
                            std::to_string(update.ciphertexts.size()) + " bytes, expected " +
                            std::to_string(length) + " in " + std::to_string(update_bytes) +
                            (sharded ? " (a SHA-256 digest per shard server's slice)" : ""));
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
      if (sharded) {  // the shard servers send the asked sites their slices
        ShardClose close;
        close.round = round;
        close.sites = reported;
        close.forward_to = asked;
        Result<std::vector<ShardSums>> forwarded = CloseShards(c_, close);
        if (!forwarded.ok()) {
          if (forwarded.status().code() != Status::Code::kAborted) return forwarded.status();
          return abort(forwarded.status());
        }
      }
      for (uint32_t site : asked) FEDREC_RETURN_IF_ERROR(link.SendTo(request, site, round));
      FEDREC_RETURN_IF_ERROR(link.Collect<PaillierDecrypted>(
          round, asked,
          [&](uint32_t site, PaillierDecrypted decrypted) {
            if (decrypted.site != site || decrypted.partials.size() != ciphertext_bytes)
              return fail(site, "a partial decryption of " +
                                    std::to_string(decrypted.partials.size()) +
                                    " bytes, expected " + std::to_string(ciphertext_bytes));
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
          CombinePartialDecryptions(public_key, link.num_sites(), threshold, indices, views));
      return packer.Decode(plaintexts, length, static_cast<int>(reported.size()));
    });
    if (!sums.ok()) return abort(sums.status());
    const auto [squared, count] = paillier_round::DecodeTrainLoss(
        std::span<const int64_t>(*sums).subspan(update_length), params.value_bits);
    std::vector<uint64_t> ring(sums->begin(),
                               sums->begin() + static_cast<ptrdiff_t>(update_length));
    Result<DecodedSums> decoded = cost.Timed([&] { return DecodeSum(*c_.upload, ring, format); });
    if (!decoded.ok()) return abort(decoded.status());
    cost.Record();
    FillEncryptedInput(round, std::move(decoded).value(), reported, selected.size(), input);
    metrics->train_mse = count ? squared / static_cast<double>(count) : 0.0;
    return Status::Ok();
  }

  Status Evaluate(uint32_t round, uint64_t version, const std::vector<uint32_t>& sites,
                  RoundMetrics* metrics) override {
    return SecureEvaluate(c_, round, version, sites, metrics);
  }

 private:
  Status Setup(uint32_t round) {
    const CoordinatorOptions& options = *c_.options;
    SiteLink& link = *c_.link;
    const uint32_t num_sites = link.num_sites();
    if (num_sites == 0) return Status::InvalidArgument("Paillier key set-up: the job has no sites");
    FEDREC_ASSIGN_OR_RETURN(
        const uint32_t threshold,
        paillier_round::DecryptionThreshold(num_sites, options.secagg.threat.adversarial_rate));
    std::vector<uint32_t> sites(num_sites);
    for (uint32_t s = 0; s < num_sites; ++s) sites[s] = s;
    paillier_ready_.assign(num_sites, false);
    const auto fail = [&](uint32_t site, const std::string& reason) {
      spdlog::warn("coordinator, round {}: {} is left out of the Paillier key set-up: {}", round,
                   link.SiteName(site), reason);
    };
    // Step 1: every site offers a signed X25519 key. The dealer rotates with the
    // round (sites check it), so a failed set-up is retried next round by the
    // next site.
    PaillierKey request;
    request.round = round;
    request.holder = paillier_round::Dealer(round, num_sites);
    request.modulus_bits = options.paillier_bits;
    request.job_id = options.job_id;
    std::map<uint32_t, SecAggKeys> offers;
    for (uint32_t s : sites) FEDREC_RETURN_IF_ERROR(link.SendTo(request, s, round));
    FEDREC_RETURN_IF_ERROR(link.Collect<SecAggKeys>(
        round, sites,
        [&](uint32_t site, SecAggKeys keys) {
          if (keys.site != site || keys.round != round) return fail(site, "mislabelled set-up key");
          offers[site] = keys;
        },
        fail));
    if (!offers.contains(request.holder)) {
      return Status::Aborted("Paillier key set-up: the dealer, " + link.SiteName(request.holder) +
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
    FEDREC_RETURN_IF_ERROR(link.SendTo(list, request.holder, round));
    std::optional<PaillierKey> dealt;
    FEDREC_RETURN_IF_ERROR(link.Collect<PaillierKey>(
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
      FEDREC_RETURN_IF_ERROR(link.SendTo(forward, sealed.site, round));
      receivers.push_back(sealed.site);
    }
    std::sort(receivers.begin(), receivers.end());
    FEDREC_RETURN_IF_ERROR(link.Collect<PaillierKey>(
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
        round, options.paillier_bits, link.SiteName(request.holder), ready, num_sites, threshold);
    return Status::Ok();
  }

  SchemeContext c_;
  // The public key (serialized) set up with the sites, which sites hold a
  // share of the decryption key, and how many shares decrypt.
  std::vector<uint8_t> paillier_public_;
  std::vector<bool> paillier_ready_;
  uint32_t paillier_threshold_ = 0;
};

}  // namespace

std::unique_ptr<CoordinatorScheme> MakePaillierScheme(SchemeContext context) {
  return std::make_unique<PaillierScheme>(std::move(context));
}

}  // namespace fedrec
