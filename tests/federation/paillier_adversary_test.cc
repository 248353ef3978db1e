// Paillier with a deviating coordinator: the test plays the coordinator (and,
// with shard servers, a shard server of its own), drives real Worker objects
// over the in-process transport with crafted messages, and checks that every
// honest site refuses naming the check and that what the adversary received
// does not reveal a site's update.
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "apps/job.h"
#include "crypto/crypto.h"
#include "crypto/paillier.h"
#include "crypto/paillier_round.h"
#include "crypto/update_codec.h"
#include "protocol/inprocess_transport.h"
#include "tests/federation/federate.h"
#include "worker/worker.h"

namespace fedrec {
namespace {

constexpr uint32_t kSites = 4;  // c = 1 colluder at rate 0.05, threshold t = 3
constexpr uint32_t kThreshold = 3;
constexpr uint32_t kTestBits = 1024;
constexpr int kShardRank = kSites + 1;  // the adversary's shard server

Config TinyConfig() {
  Config config = SmallConfig();
  config.data.synthetic.users = 40;
  config.data.synthetic.items = 30;
  config.data.synthetic.ratings = 800;
  config.model.factors = 4;
  config.federation.sites = kSites;
  config.security.aggregation = "paillier";
  return config;
}

// What a site answered: the message, or its SiteError as an Aborted status.
template <typename M>
Result<M> ReplyAs(const std::vector<uint8_t>& bytes) {
  Result<FrameView> frame = DecodeFrame(bytes);
  if (!frame.ok()) return frame.status();
  if (frame->header.type == MessageType::kSiteError) {
    Result<SiteError> error = DecodeMessage<SiteError>(*frame);
    return Status::Aborted(error.ok() ? error->message : error.status().message());
  }
  return DecodeMessage<M>(*frame);
}

// Four honest sites, the adversarial coordinator at rank 0 and its shard
// server at kShardRank.
class Federation {
 public:
  explicit Federation(bool with_roster = true, int min_bits = kTestBits)
      : config_(TinyConfig()), network_(kSites + 2) {
    data_ = std::move(LoadFederatedData(config_)).value();
    for (uint32_t s = 0; s < kSites; ++s) {
      identities_.push_back(*crypto::GenerateSigningKey());
      roster_[s] = identities_.back().public_key;
    }
    for (uint32_t s = 0; s < kSites; ++s) {
      WorkerOptions o = MakeWorkerOptions(config_);
      o.site = s;
      o.identity = identities_[s];
      if (with_roster)
        o.roster = std::make_shared<const std::map<uint32_t, crypto::Key32>>(roster_);
      o.insecure_test_min_paillier_bits = min_bits;
      workers_.push_back(
          std::make_unique<Worker>(o, static_cast<uint32_t>(data_.dataset.items.size()),
                                   data_.sites[s], &network_.endpoint(static_cast<int>(s) + 1)));
    }
  }

  // Sends `message` to `site`, lets it handle it and returns its answer.
  template <typename R, typename M>
  Result<R> Ask(uint32_t site, const M& message, uint32_t round) {
    Transport& coordinator = network_.endpoint(0);
    EXPECT_TRUE(
        coordinator.Send(static_cast<int>(site) + 1, EncodeMessage(message, round, 0)).ok());
    Result<Envelope> in =
        network_.endpoint(static_cast<int>(site) + 1).Recv(std::chrono::seconds(5));
    EXPECT_TRUE(in.ok());
    bool done = false;
    EXPECT_TRUE(workers_[site]->Handle(*in, &done).ok());
    Result<Envelope> out = coordinator.Recv(std::chrono::seconds(5));
    if (!out.ok()) return out.status();
    received_.push_back(out->bytes);
    return ReplyAs<R>(out->bytes);
  }

  // Step 1 for every site.
  std::map<uint32_t, SecAggKeys> Offers(uint32_t round, uint32_t bits = kTestBits) {
    PaillierKey request;
    request.round = round;
    request.holder = paillier_round::Dealer(round, kSites);
    request.modulus_bits = bits;
    std::map<uint32_t, SecAggKeys> offers;
    for (uint32_t s = 0; s < kSites; ++s) {
      Result<SecAggKeys> offer = Ask<SecAggKeys>(s, request, round);
      EXPECT_TRUE(offer.ok()) << offer.status().ToString();
      if (offer.ok()) offers[s] = *offer;
    }
    return offers;
  }

  // An honest key set-up in round 1; returns the public key.
  PaillierPublicKey SetUp() {
    std::map<uint32_t, SecAggKeys> offers = Offers(1);
    SecAggKeyList list;
    list.round = 1;
    for (const auto& [s, k] : offers) list.keys.push_back(k);
    Result<PaillierKey> dealt = Ask<PaillierKey>(0, list, 1);
    EXPECT_TRUE(dealt.ok()) << dealt.status().ToString();
    for (const EncryptedShare& sealed : dealt->sealed_private) {
      PaillierKey forward = *dealt;
      forward.sealed_private = {sealed};
      Result<PaillierKey> ack = Ask<PaillierKey>(sealed.site, forward, 1);
      EXPECT_TRUE(ack.ok()) << ack.status().ToString();
    }
    return *PaillierPublicKey::FromBytes(dealt->public_key);
  }

  RoundPlan Plan(uint32_t round) const {
    RoundPlan plan;
    plan.round = round;
    plan.model_version = 0;
    plan.includes_model = true;
    plan.model = MakeServerModel(config_, static_cast<uint32_t>(data_.dataset.items.size()))
                     .value()
                     ->GlobalBlocks();
    plan.aggregation = Aggregation::kPaillier;
    for (uint32_t s = 0; s < kSites; ++s) plan.participants.push_back(s);
    FixedPointFormat format = MakeCoordinatorOptions(config_).format;
    format.ring_bits = 64;
    SetFormat(format, &plan);
    return plan;
  }

  // Every site's signed encrypted update of `round`.
  std::vector<PaillierUpdate> Updates(uint32_t round) {
    const RoundPlan plan = Plan(round);
    std::vector<PaillierUpdate> updates;
    for (uint32_t s = 0; s < kSites; ++s) {
      Result<PaillierUpdate> update = Ask<PaillierUpdate>(s, plan, round);
      EXPECT_TRUE(update.ok()) << update.status().ToString();
      updates.push_back(*update);
    }
    return updates;
  }

  // Sharded (one shard server, kShardRank): every site's notice to the
  // coordinator, and in `slices` its slice as the shard server received it.
  std::vector<PaillierUpdate> ShardedUpdates(uint32_t round, std::vector<PaillierUpdate>* slices) {
    RoundPlan plan = Plan(round);
    plan.shard_ranks = {kShardRank};
    std::vector<PaillierUpdate> notices;
    for (uint32_t s = 0; s < kSites; ++s) {
      Result<PaillierUpdate> notice = Ask<PaillierUpdate>(s, plan, round);
      EXPECT_TRUE(notice.ok()) << notice.status().ToString();
      notices.push_back(*notice);
      Result<Envelope> slice = network_.endpoint(kShardRank).Recv(std::chrono::seconds(5));
      EXPECT_TRUE(slice.ok());
      slices->push_back(*ReplyAs<PaillierUpdate>(slice->bytes));
    }
    return notices;
  }

  // Sharded decryption: the coordinator's request and the shard server's
  // slices reach `site`, which answers once it holds both.
  Result<PaillierDecrypted> AskSharded(uint32_t site, const PaillierSum& request,
                                       const PaillierSum& slices, uint32_t round) {
    Transport& site_end = network_.endpoint(static_cast<int>(site) + 1);
    EXPECT_TRUE(network_.endpoint(0)
                    .Send(static_cast<int>(site) + 1, EncodeMessage(request, round, 0))
                    .ok());
    EXPECT_TRUE(network_.endpoint(kShardRank)
                    .Send(static_cast<int>(site) + 1, EncodeMessage(slices, round, kShardRank))
                    .ok());
    for (int i = 0; i < 2; ++i) {
      Result<Envelope> in = site_end.Recv(std::chrono::seconds(5));
      EXPECT_TRUE(in.ok());
      bool done = false;
      EXPECT_TRUE(workers_[site]->Handle(*in, &done).ok());
    }
    Result<Envelope> out = network_.endpoint(0).Recv(std::chrono::seconds(5));
    if (!out.ok()) return out.status();
    received_.push_back(out->bytes);
    return ReplyAs<PaillierDecrypted>(out->bytes);
  }

  // How many partial decryptions the adversary has received so far.
  size_t PartialsReceived() const {
    size_t count = 0;
    for (const auto& bytes : received_) {
      Result<FrameView> frame = DecodeFrame(bytes);
      if (frame.ok() && frame->header.type == MessageType::kPaillierDecrypted) ++count;
    }
    return count;
  }

  const crypto::SigningKey& identity(uint32_t site) const { return identities_[site]; }

 private:
  Config config_;
  InProcessNetwork network_;
  FederatedData data_;
  std::vector<crypto::SigningKey> identities_;
  std::map<uint32_t, crypto::Key32> roster_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::vector<uint8_t>> received_;
};

void ExpectRefusal(const Status& status, const std::string& check) {
  ASSERT_FALSE(status.ok()) << "expected a refusal naming \"" << check << "\"";
  EXPECT_NE(status.message().find(check), std::string::npos) << status.message();
}

PaillierSum SumOf(uint32_t round, const std::vector<PaillierUpdate>& updates) {
  PaillierSum sum;
  sum.round = round;
  sum.values = updates.at(0).values;
  sum.updates = updates;
  return sum;
}

TEST(PaillierAdversary, SiteWithoutARosterRefusesTheKeySetUp) {
  Federation federation(/*with_roster=*/false);
  PaillierKey request;
  request.round = 1;
  request.modulus_bits = kTestBits;
  for (uint32_t s = 0; s < kSites; ++s)
    ExpectRefusal(federation.Ask<SecAggKeys>(s, request, 1).status(), "no roster");
}

TEST(PaillierAdversary, SmallModulusRequestIsRefusedBySites) {
  Federation federation(/*with_roster=*/true, /*min_bits=*/0);  // the real 2048-bit floor
  for (uint32_t bits : {256u, 1024u}) {
    PaillierKey request;
    request.round = 1;
    request.holder = 0;
    request.modulus_bits = bits;
    for (uint32_t s = 0; s < kSites; ++s)
      ExpectRefusal(federation.Ask<SecAggKeys>(s, request, 1).status(), "minimum modulus");
  }
}

TEST(PaillierAdversary, DealerOtherThanTheRoundsRotationIsRefused) {
  Federation federation;
  PaillierKey request;
  request.round = 1;
  request.holder = 2;  // a colluder, say; round 1's dealer is site 0
  request.modulus_bits = kTestBits;
  for (uint32_t s = 0; s < kSites; ++s)
    ExpectRefusal(federation.Ask<SecAggKeys>(s, request, 1).status(),
                  "the dealer of a set-up in round 1 is site 0");
}

TEST(PaillierAdversary, ForgedSetUpOfferIsRefusedAndNoShareIsSealedToIt) {
  Federation federation;
  std::map<uint32_t, SecAggKeys> offers = federation.Offers(1);
  // The coordinator replaces site 3's offer by its own key, signed with its
  // own (non-roster) identity, relaying that identity with it.
  const crypto::SigningKey coordinator = *crypto::GenerateSigningKey();
  const crypto::DhKeyPair mine = *crypto::GenerateDhKey();
  SecAggKeys forged = offers[3];
  forged.identity_key = coordinator.public_key;
  forged.cipher_key = mine.public_key;
  forged.signature = *crypto::Sign(coordinator, paillier_round::OfferTranscript({}, forged));
  offers[3] = forged;
  SecAggKeyList list;
  list.round = 1;
  for (const auto& [s, k] : offers) list.keys.push_back(k);
  Result<PaillierKey> dealt = federation.Ask<PaillierKey>(0, list, 1);
  ExpectRefusal(dealt.status(), "does not verify under its roster identity key");
  // The dealer answered with an error only: nothing sealed to the forged key.
}

TEST(PaillierAdversary, CoordinatorPosingAsTheDealerIsRefused) {
  Federation federation;
  std::map<uint32_t, SecAggKeys> offers = federation.Offers(1);
  // The coordinator deals a key it knows, posing as site 0 with its own
  // identity key, and seals site 1's share to site 1's offered key.
  const crypto::SigningKey coordinator = *crypto::GenerateSigningKey();
  const crypto::DhKeyPair mine = *crypto::GenerateDhKey();
  auto shares = PaillierKeyShare::Deal(kTestBits, kSites, kThreshold);
  ASSERT_TRUE(shares.ok());
  PaillierKey fake;
  fake.round = 1;
  fake.holder = 0;
  fake.modulus_bits = kTestBits;
  fake.threshold = kThreshold;
  fake.parties = kSites;
  fake.public_key = (*shares)[0].public_key().ToBytes();
  fake.holder_keys.round = 1;
  fake.holder_keys.site = 0;
  fake.holder_keys.identity_key = coordinator.public_key;
  fake.holder_keys.cipher_key = mine.public_key;
  fake.holder_keys.signature =
      *crypto::Sign(coordinator, paillier_round::OfferTranscript({}, fake.holder_keys));
  const std::vector<uint8_t> context =
      paillier_round::SealingContext({}, 1, 0, 1, kThreshold, kSites, fake.public_key);
  const crypto::Key32 key = *crypto::AgreeKey(mine.private_key, offers[1].cipher_key, context,
                                              "fedrec paillier key share");
  fake.sealed_private = {{1, *crypto::SealOnce(key, context, (*shares)[1].ToBytes())}};
  ExpectRefusal(federation.Ask<PaillierKey>(1, fake, 1).status(),
                "does not verify under the roster identity key of site 0");
  // Site 1 holds no key: it encrypts nothing the coordinator could decrypt.
  ExpectRefusal(federation.Ask<PaillierUpdate>(1, federation.Plan(2), 2).status(),
                "no Paillier key share");
}

class PaillierAdversaryDecryption : public ::testing::Test {
 protected:
  void SetUp() override {
    public_key_ = std::make_unique<PaillierPublicKey>(federation_.SetUp());
    updates_ = federation_.Updates(kRound);
    ASSERT_EQ(updates_.size(), kSites);
  }
  static constexpr uint32_t kRound = 2;
  Federation federation_;
  std::unique_ptr<PaillierPublicKey> public_key_;
  std::vector<PaillierUpdate> updates_;
};

TEST_F(PaillierAdversaryDecryption, SingleSitesCiphertextIsNotDecrypted) {
  // The target is site 2: its update alone, claimed to be the round's sum.
  for (uint32_t s : {0u, 1u, 3u}) {
    ExpectRefusal(
        federation_.Ask<PaillierDecrypted>(s, SumOf(kRound, {updates_[2]}), kRound).status(),
        "at least the threshold 3");
  }
}

TEST_F(PaillierAdversaryDecryption, FewerThanThresholdSitesAreNotDecrypted) {
  // Sites 2 and 3 (a colluder can subtract its own update and read site 2's).
  for (uint32_t s : {0u, 1u, 2u}) {
    ExpectRefusal(
        federation_.Ask<PaillierDecrypted>(s, SumOf(kRound, {updates_[2], updates_[3]}), kRound)
            .status(),
        "at least the threshold 3");
  }
}

TEST_F(PaillierAdversaryDecryption, ForgedOrUnsignedCiphertextsAreRefused) {
  // Site 2's real update plus encryptions of zero posing as sites 0 and 1: the
  // "sum" would be site 2's update.
  const std::vector<int64_t> zeros(updates_[0].values, 0);
  const PackingParams params{static_cast<int>(SignedValueBits(FormatOf(federation_.Plan(kRound)))),
                             static_cast<int>(kSites)};
  std::vector<PaillierUpdate> forged = {updates_[0], updates_[1], updates_[2]};
  for (uint32_t s : {0u, 1u}) {
    forged[s].ciphertexts = *EncryptPacked(*public_key_, zeros, params);
  }
  forged[0].signature = {};  // unsigned
  const crypto::SigningKey coordinator = *crypto::GenerateSigningKey();
  forged[1].signature = *crypto::Sign(
      coordinator, paillier_round::UpdateTranscript({}, kRound, 1, forged[1].values,
                                                    forged[1].ciphertexts));  // wrong key
  for (uint32_t s = 0; s < kSites; ++s) {
    ExpectRefusal(federation_.Ask<PaillierDecrypted>(s, SumOf(kRound, forged), kRound).status(),
                  "does not carry a valid signature");
  }
  // Only site 1's forgery (signed with a non-roster key) in the request.
  forged[0] = updates_[0];
  for (uint32_t s = 0; s < kSites; ++s) {
    ExpectRefusal(federation_.Ask<PaillierDecrypted>(s, SumOf(kRound, forged), kRound).status(),
                  "the update of site 1 does not carry a valid signature");
  }
}

TEST_F(PaillierAdversaryDecryption, SecondRequestForTheSameRoundIsRefused) {
  // Honest: every site decrypts the sum of all four once; the coordinator
  // learns the total, which is what it is entitled to.
  std::vector<std::vector<uint8_t>> partials;
  std::vector<uint32_t> indices;
  for (uint32_t s = 0; s < kSites; ++s) {
    Result<PaillierDecrypted> d =
        federation_.Ask<PaillierDecrypted>(s, SumOf(kRound, updates_), kRound);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    partials.push_back(d->partials);
    indices.push_back(s + 1);
  }
  std::vector<std::span<const uint8_t>> views(partials.begin(), partials.end());
  EXPECT_TRUE(CombinePartialDecryptions(*public_key_, kSites, kThreshold, indices, views).ok());
  // Then it asks for the sum without site 3, whose difference with the first
  // would be site 3's update: every site refuses.
  const std::vector<PaillierUpdate> without3 = {updates_[0], updates_[1], updates_[2]};
  for (uint32_t s = 0; s < kSites; ++s) {
    ExpectRefusal(federation_.Ask<PaillierDecrypted>(s, SumOf(kRound, without3), kRound).status(),
                  "already answered a decryption request for round 2");
  }
  EXPECT_EQ(federation_.PartialsReceived(), kSites);  // the first request's only
  // An earlier round is refused too.
  ExpectRefusal(federation_.Ask<PaillierDecrypted>(0, SumOf(1, updates_), 1).status(),
                "already answered");
}

// With shard servers: the coordinator holds only notices, and a shard server
// (which presents the coordinator's identity) only slices; the decrypting
// sites still check every site's signature over its whole update.
class PaillierAdversaryShardedDecryption : public ::testing::Test {
 protected:
  void SetUp() override {
    federation_.SetUp();
    notices_ = federation_.ShardedUpdates(kRound, &slices_);
    ASSERT_EQ(slices_.size(), kSites);
  }
  static constexpr uint32_t kRound = 2;
  Federation federation_;
  std::vector<PaillierUpdate> notices_, slices_;
};

TEST_F(PaillierAdversaryShardedDecryption, HonestSlicesAreDecrypted) {
  for (uint32_t s = 0; s < kSites; ++s) {
    EXPECT_EQ(notices_[s].ciphertexts.size(), 32u) << "one digest per shard server";
    Result<PaillierDecrypted> d =
        federation_.AskSharded(s, SumOf(kRound, notices_), SumOf(kRound, slices_), kRound);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
  }
  EXPECT_EQ(federation_.PartialsReceived(), kSites);
}

TEST_F(PaillierAdversaryShardedDecryption, TamperedOrMisSizedSliceIsRefusedNamingTheShardServer) {
  std::vector<PaillierUpdate> tampered = slices_;
  tampered[2].ciphertexts[7] ^= 1;
  ExpectRefusal(
      federation_.AskSharded(0, SumOf(kRound, notices_), SumOf(kRound, tampered), kRound).status(),
      "shard server 0 (rank 5) sent a slice of site 2's update for round 2 other than "
      "the one the site sent");
  std::vector<PaillierUpdate> short_slice = slices_;
  short_slice[3].ciphertexts.pop_back();
  ExpectRefusal(
      federation_.AskSharded(1, SumOf(kRound, notices_), SumOf(kRound, short_slice), kRound)
          .status(),
      "shard server 0 (rank 5) sent a slice of");
  // The coordinator and its shard server agreeing on a digest of the tampered
  // slice: the signature over the whole update still fails.
  std::vector<PaillierUpdate> forged_notices = notices_;
  const crypto::Key32 digest = crypto::Sha256(tampered[2].ciphertexts);
  forged_notices[2].ciphertexts.assign(digest.begin(), digest.end());
  ExpectRefusal(
      federation_.AskSharded(2, SumOf(kRound, forged_notices), SumOf(kRound, tampered), kRound)
          .status(),
      "the update of site 2 does not carry a valid signature");
}

TEST_F(PaillierAdversaryShardedDecryption, SingleSitesSliceIsNotDecrypted) {
  // The coordinator and its shard server claim site 2's update is the sum.
  for (uint32_t s : {0u, 1u, 3u}) {
    ExpectRefusal(
        federation_.AskSharded(s, SumOf(kRound, {notices_[2]}), SumOf(kRound, {slices_[2]}), kRound)
            .status(),
        "at least the threshold 3");
  }
  // Slices of other sites than the request names.
  ExpectRefusal(
      federation_
          .AskSharded(2, SumOf(kRound, notices_),
                      SumOf(kRound, {slices_[0], slices_[1], slices_[3], slices_[3]}), kRound)
          .status(),
      "expected those of the 4 sites the coordinator names");
}

TEST_F(PaillierAdversaryDecryption, UpdatesAreEncryptedOncePerRound) {
  // The same plan again is a duplicate frame: the site ignores it (no
  // second update). A plan of the round that is not byte-identical would be
  // refused ("already sent one for round 2").
  const Status again =
      federation_.Ask<PaillierUpdate>(1, federation_.Plan(kRound), kRound).status();
  ASSERT_FALSE(again.ok());
  EXPECT_TRUE(again.message().find("already sent one for round 2") != std::string::npos ||
              again.code() == Status::Code::kTimeout)
      << again.message();
}

}  // namespace
}  // namespace fedrec
