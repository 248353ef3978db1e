#include "crypto/secagg.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "base/log_gamma.h"
#include "crypto/crypto.h"
#include "crypto/secagg_prg.h"
#include "crypto/shamir.h"

namespace fedrec::secagg {
namespace {

using Code = Status::Code;

std::string Str(uint64_t v) { return std::to_string(v); }

void ExpectError(const Status& status, Code code, std::initializer_list<std::string_view> parts) {
  EXPECT_EQ(status.code(), code) << status.ToString();
  for (std::string_view part : parts) {
    EXPECT_NE(status.message().find(part), std::string::npos)
        << "expected \"" << part << "\" in: " << status.message();
  }
}

// Site ids are spread out (not 0..n-1) so positions and ids cannot be mixed up.
std::vector<uint32_t> SiteIds(uint32_t n) {
  std::vector<uint32_t> sites(n);
  for (uint32_t i = 0; i < n; ++i) sites[i] = 3 * i + 2;
  return sites;
}

// The little-endian ring words of `input`.
std::vector<uint8_t> Words(const std::vector<uint64_t>& input, uint32_t ring_bits) {
  std::vector<uint8_t> out;
  for (uint64_t x : input)
    for (uint32_t b = 0; b < ring_bits / 8; ++b) out.push_back(static_cast<uint8_t>(x >> (8 * b)));
  return out;
}

Params Complete(uint32_t n, uint32_t threshold, uint32_t ring_bits, uint64_t length) {
  Params params;
  params.round = 7;
  params.sites = SiteIds(n);
  params.threshold = threshold;
  params.degree = n - 1;
  params.ring_bits = ring_bits;
  params.length = length;
  return params;
}

Params Sparse(uint32_t n, uint32_t degree, uint32_t threshold, uint32_t ring_bits, uint64_t length,
              std::mt19937_64& rng) {
  Params params = Complete(n, threshold, ring_bits, length);
  params.degree = degree;
  // The ring is drawn from the round keys; a quarter of the sites may be
  // missing from the key list.
  params.dropouts = n / 4;
  (void)rng;
  return params;
}

// `params` with a ring seed of its own, as RingSeed would fix it.
Params WithRing(Params params, std::mt19937_64& rng) {
  params.ring_seed.resize(32);
  for (uint8_t& b : params.ring_seed) b = static_cast<uint8_t>(rng());
  return params;
}

// When a site stops answering: before advertising its keys, after advertising,
// after sharing, after masking (it never signs the survivor list), after
// signing (it never reveals), or never.
enum Drop : int {
  kStays = 0,
  kBeforeKeys = 1,
  kAfterKeys = 2,
  kAfterShares = 3,
  kAfterMasking = 4,
  kAfterSigning = 5
};

// Runs a round between one Server and the Clients directly, no transport.
class Driver {
 public:
  // With `with_roster`, every client knows every site's identity key (as
  // with security.site_public_keys); without, it has only what is relayed.
  // The server unmasks on `server_threads` threads.
  explicit Driver(Params params, uint64_t seed = 1, bool with_roster = true,
                  unsigned server_threads = 1, std::optional<Policy> policy = std::nullopt,
                  std::shared_ptr<AgreementMemo> memo = nullptr)
      : params_(std::move(params)), rng_(seed) {
    EXPECT_TRUE(Validate(params_).ok()) << Validate(params_).ToString();
    server_ = std::make_unique<Server>(params_, server_threads);
    for (uint32_t site : params_.sites) {
      Result<crypto::SigningKey> identity = crypto::GenerateSigningKey();
      EXPECT_TRUE(identity.ok());
      identities_.push_back(*identity);
      if (with_roster) roster_[site] = identity->public_key;
    }
    for (size_t i = 0; i < params_.sites.size(); ++i) {
      clients_.push_back(std::make_unique<Client>(params_, params_.sites[i], identities_[i],
                                                  roster_, policy, memo));
      std::vector<uint64_t> input(params_.length);
      for (uint64_t& x : input) x = rng_();  // the high bits must not matter in ring 32
      inputs_.push_back(std::move(input));
    }
    drop_.assign(params_.sites.size(), kStays);
  }

  const Params& params() const { return params_; }
  Server& server() { return *server_; }
  uint32_t Pos(uint32_t site) const {
    return static_cast<uint32_t>(
        std::lower_bound(params_.sites.begin(), params_.sites.end(), site) - params_.sites.begin());
  }
  Client& client(uint32_t site) { return *clients_[Pos(site)]; }
  const crypto::SigningKey& identity(uint32_t site) const { return identities_[Pos(site)]; }
  const std::map<uint32_t, crypto::Key32>& roster() const { return roster_; }
  std::vector<uint64_t>& input(uint32_t site) { return inputs_[Pos(site)]; }
  void SetDrop(uint32_t site, Drop drop) { drop_[Pos(site)] = drop; }
  void SetDrops(const std::vector<int>& drop_by_position) {
    for (size_t i = 0; i < drop_.size(); ++i) drop_[i] = static_cast<Drop>(drop_by_position[i]);
  }

  // Sites that refused a step (their error was Aborted, as expected when too
  // few of their neighbours remain), and unexpected client errors.
  const std::vector<uint32_t>& refused() const { return refused_; }
  // Every masked input the coordinator received, as sent.
  const std::vector<std::vector<uint8_t>>& masked_seen() const { return masked_seen_; }
  // The keys a site advertised in Advertise().
  const SecAggKeys& advertised(uint32_t site) { return advertised_[site]; }
  // The Merkle root over the keys of the sites that advertised (U1).
  crypto::Key32 KeyRoot() {
    std::vector<SecAggKeys> keys;
    for (uint32_t site : server_->advertised()) keys.push_back(advertised_[site]);
    return KeyListRoot(keys);
  }

  Status Advertise() {
    for (uint32_t site : params_.sites) {
      if (drop_[Pos(site)] == kBeforeKeys) continue;
      Result<SecAggKeys> keys = client(site).AdvertiseKeys();
      EXPECT_TRUE(keys.ok()) << keys.status().ToString();
      if (!keys.ok()) continue;
      advertised_[site] = *keys;
      Status added = server_->AddKeys(site, *keys, identity(site).public_key);
      EXPECT_TRUE(added.ok()) << added.ToString();
    }
    return server_->FinishKeys();
  }

  Status Share() {
    for (uint32_t site : server_->advertised()) {
      if (drop_[Pos(site)] == kAfterKeys) continue;
      Result<SecAggKeyList> list = server_->KeyListFor(site);
      EXPECT_TRUE(list.ok()) << list.status().ToString();
      Result<SecAggShares> shares = client(site).ShareKeys(*list);
      if (!Answered(site, shares.status())) continue;
      Status added = server_->AddShares(site, std::move(shares).value());
      EXPECT_TRUE(added.ok()) << added.ToString();
    }
    return server_->FinishShares();
  }

  Status Mask() {
    for (uint32_t site : server_->shared()) {
      if (drop_[Pos(site)] == kAfterShares) continue;
      Result<SecAggRoutedShares> routed = server_->SharesFor(site);
      EXPECT_TRUE(routed.ok()) << routed.status().ToString();
      // Sites hand over their input in wire form (as a vector, or written
      // piece by piece into the buffer they send), or as uint64_t.
      Result<SecAggMasked> masked = Status::Internal("not masked");
      if (site % 3 == 0) {
        masked = client(site).MaskInput(input(site), *routed);
      } else if (site % 3 == 1) {
        masked = client(site).MaskInputWords(Words(input(site), params_.ring_bits), *routed);
      } else {
        const std::vector<uint8_t> words = Words(input(site), params_.ring_bits);
        const size_t width = params_.ring_bits / 8;
        std::vector<uint8_t> buffer(words.size());
        const Status status = client(site).MaskInputInPlace(
            buffer,
            [&](size_t begin, size_t end, uint8_t* out) {
              std::memcpy(out, words.data() + begin * width, (end - begin) * width);
            },
            *routed);
        if (status.ok()) {
          masked = SecAggMasked{params_.round, site, params_.ring_bits, buffer};
        } else {
          masked = status;
        }
      }
      if (!Answered(site, masked.status())) continue;
      masked_seen_.push_back(masked->data);
      Status added = server_->AddMasked(site, *masked);
      EXPECT_TRUE(added.ok()) << added.ToString();
    }
    return server_->FinishMasked();
  }

  // Step 4, the consistency check.
  Status Sign() {
    const SecAggUnmaskRequest list = server_->SurvivorList();
    for (uint32_t site : server_->survivors()) {
      if (drop_[Pos(site)] == kAfterMasking) continue;
      Result<SecAggSurvivorSignature> signature = client(site).SignSurvivors(list);
      EXPECT_TRUE(signature.ok()) << signature.status().ToString();
      if (!signature.ok()) continue;
      Status added = server_->AddSurvivorSignature(site, *signature);
      EXPECT_TRUE(added.ok()) << added.ToString();
    }
    return server_->FinishSignatures();
  }

  Result<std::vector<uint64_t>> Reveal() {
    const SecAggUnmaskRequest request = server_->UnmaskRequest();
    for (uint32_t site : server_->signers()) {
      if (drop_[Pos(site)] == kAfterSigning) continue;
      Result<SecAggUnmaskShares> shares = client(site).Unmask(request);
      EXPECT_TRUE(shares.ok()) << shares.status().ToString();
      if (!shares.ok()) continue;
      Status added = server_->AddUnmaskShares(site, *shares);
      EXPECT_TRUE(added.ok()) << added.ToString();
    }
    return server_->Finish();
  }

  // The whole round; `aborted_at` is the step (1 FinishKeys, 2 FinishShares,
  // 3 FinishMasked, 4 FinishSignatures or Finish) that failed, 0 when the
  // round completed.
  struct Outcome {
    int aborted_at = 0;
    Status status;
    std::vector<uint64_t> sum;
  };
  Outcome Run() {
    Outcome outcome;
    const auto stop = [&](int step, const Status& status) {
      outcome.aborted_at = step;
      outcome.status = status;
      return outcome;
    };
    if (Status s = Advertise(); !s.ok()) return stop(1, s);
    if (Status s = Share(); !s.ok()) return stop(2, s);
    if (Status s = Mask(); !s.ok()) return stop(3, s);
    if (Status s = Sign(); !s.ok()) return stop(4, s);
    Result<std::vector<uint64_t>> sum = Reveal();
    if (!sum.ok()) return stop(4, sum.status());
    outcome.sum = std::move(sum).value();
    return outcome;
  }

  // The plaintext sum of the survivors' inputs mod 2^ring_bits.
  std::vector<uint64_t> PlainSum() const {
    std::vector<uint64_t> sum(params_.length, 0);
    for (uint32_t site : server_->survivors())
      for (size_t i = 0; i < sum.size(); ++i) sum[i] += inputs_[Pos(site)][i];
    if (params_.ring_bits == 32)
      for (uint64_t& x : sum) x &= 0xffffffffu;
    return sum;
  }

 private:
  // A client that refuses because too few remain answers with Aborted; any
  // other client error is a test failure.
  bool Answered(uint32_t site, const Status& status) {
    if (status.ok()) return true;
    EXPECT_EQ(status.code(), Code::kAborted) << status.ToString();
    refused_.push_back(site);
    return false;
  }

  Params params_;
  std::mt19937_64 rng_;
  std::unique_ptr<Server> server_;
  std::vector<crypto::SigningKey> identities_;
  std::map<uint32_t, crypto::Key32> roster_;
  std::vector<std::unique_ptr<Client>> clients_;
  std::vector<std::vector<uint64_t>> inputs_;
  std::vector<Drop> drop_;
  std::vector<uint32_t> refused_;
  std::vector<std::vector<uint8_t>> masked_seen_;
  std::map<uint32_t, SecAggKeys> advertised_;
};

// `keys` with new cipher/mask keys, validly signed by `identity`.
SecAggKeys Resigned(SecAggKeys keys, const crypto::SigningKey& identity) {
  keys.identity_key = identity.public_key;
  keys.signature = *crypto::Sign(identity, KeysSignedMessage(crypto::Key32{}, keys.round, keys.site,
                                                             keys.cipher_key, keys.mask_key));
  return keys;
}

// What the protocol must do for given drops, worked out from the spec alone:
// the step that aborts (0 none) and the survivors.
struct Prediction {
  int aborted_at = 0;
  std::vector<uint32_t> survivors;
};

Prediction Predict(const Params& params, const std::vector<int>& drop) {
  const uint32_t t = params.threshold;
  const size_t n = params.sites.size();
  std::map<uint32_t, std::vector<uint32_t>> nb;
  for (uint32_t site : params.sites) nb[site] = Neighbours(params, site);
  const auto count_in = [](const std::vector<uint32_t>& sites, const std::vector<uint32_t>& set) {
    uint32_t c = 0;
    for (uint32_t s : sites) c += std::binary_search(set.begin(), set.end(), s);
    return c;
  };
  Prediction p;
  std::vector<uint32_t> u1, u2, u3, u4, u5;
  for (size_t i = 0; i < n; ++i)
    if (drop[i] != kBeforeKeys) u1.push_back(params.sites[i]);
  if (u1.size() < t) return {1, {}};
  if (params.degree + 1 < n && u1.size() + params.dropouts < n) return {1, {}};
  for (size_t i = 0; i < n; ++i) {
    const uint32_t site = params.sites[i];
    // A site shares when its key list (itself and its advertised neighbours) reaches t.
    if (std::binary_search(u1.begin(), u1.end(), site) && drop[i] != kAfterKeys &&
        count_in(nb[site], u1) + 1 >= t)
      u2.push_back(site);
  }
  if (u2.size() < t) return {2, {}};
  for (size_t i = 0; i < n; ++i) {
    const uint32_t site = params.sites[i];
    // It masks when it received shares from at least t - 1 neighbours.
    if (std::binary_search(u2.begin(), u2.end(), site) && drop[i] != kAfterShares &&
        count_in(nb[site], u2) + 1 >= t)
      u3.push_back(site);
  }
  if (u3.size() < t) return {3, {}};
  for (size_t i = 0; i < n; ++i)
    if (std::binary_search(u3.begin(), u3.end(), params.sites[i]) && drop[i] != kAfterMasking)
      u4.push_back(params.sites[i]);
  p.survivors = u3;
  if (u4.size() < Quorum(params)) return {4, u3};
  for (size_t i = 0; i < n; ++i)
    if (std::binary_search(u4.begin(), u4.end(), params.sites[i]) && drop[i] != kAfterSigning)
      u5.push_back(params.sites[i]);
  if (u5.size() < t) return {4, u3};
  for (uint32_t u : u2) {
    const bool survived = std::binary_search(u3.begin(), u3.end(), u);
    const uint32_t holders =
        count_in(nb[u], u5) + (survived && std::binary_search(u5.begin(), u5.end(), u));
    if (holders < t) return {4, u3};
  }
  return p;
}

TEST(SecAgg, SumExactOverRandomizedScenarios) {
  std::mt19937_64 rng(20250611);
  int completed = 0, aborted[5] = {0, 0, 0, 0, 0}, sparse_completed = 0, with_drops = 0;
  const int kScenarios = 220;
  for (int scenario = 0; scenario < kScenarios; ++scenario) {
    // Mostly small rounds (the cost is in the signatures and key agreements,
    // quadratic in n for the complete graph), some up to 100 sites.
    uint32_t n;
    if (scenario == 0) {
      n = 3;
    } else if (scenario == 1) {
      n = 100;
    } else if (rng() % 16 != 0) {
      n = 3 + static_cast<uint32_t>(rng() % 10);
    } else {
      n = 13 + static_cast<uint32_t>(rng() % 88);
    }
    const uint32_t max_even_degree = (n - 2) & ~1u;  // sparse degrees must stay below n - 1
    const bool sparse = max_even_degree >= 2 && (scenario == 1 || n > 30 || rng() % 2 == 0);
    uint32_t degree = n - 1;
    if (sparse) degree = 2 * (1 + static_cast<uint32_t>(rng() % std::min(max_even_degree / 2, 6u)));
    const uint32_t threshold = 2 + static_cast<uint32_t>(rng() % degree);
    const uint32_t ring_bits = rng() % 2 ? 32 : 64;
    const uint64_t length = 1 + rng() % 40;
    Params params = sparse ? Sparse(n, degree, threshold, ring_bits, length, rng)
                           : Complete(n, threshold, ring_bits, length);
    params.round = static_cast<uint32_t>(scenario);

    // Each step loses each remaining site with its own probability (0 to 25%).
    double p_drop[6];
    for (double& p : p_drop) p = std::uniform_real_distribution<double>(0.0, 0.25)(rng);
    std::vector<int> drop(n, kStays);
    for (uint32_t i = 0; i < n; ++i) {
      for (int step = kBeforeKeys; step <= kAfterSigning; ++step) {
        if (std::bernoulli_distribution(p_drop[step])(rng)) {
          drop[i] = step;
          break;
        }
      }
    }
    with_drops += std::any_of(drop.begin(), drop.end(), [](int d) { return d != kStays; });

    // Every fourth scenario runs without a roster; the server unmasks on 1 to
    // 3 threads; every other one the sites share their pairwise secrets.
    Driver driver(params, rng(), scenario % 4 != 3, 1 + scenario % 3, std::nullopt,
                  scenario % 2 == 1 ? std::make_shared<AgreementMemo>() : nullptr);
    driver.SetDrops(drop);
    const Driver::Outcome outcome = driver.Run();
    // With the ring the round keys drew (SecAgg+).
    const Prediction predicted = Predict(driver.server().params(), drop);
    const std::string where = "scenario " + Str(scenario) + ": n " + Str(n) + ", degree " +
                              Str(degree) + ", threshold " + Str(threshold) + ", ring " +
                              Str(ring_bits);
    ASSERT_EQ(outcome.aborted_at, predicted.aborted_at)
        << where << ": " << outcome.status.ToString();
    if (outcome.aborted_at != 0) {
      EXPECT_EQ(outcome.status.code(), Code::kAborted)
          << where << ": " << outcome.status.ToString();
      ++aborted[outcome.aborted_at];
      continue;
    }
    EXPECT_EQ(driver.server().survivors(), predicted.survivors) << where;
    ASSERT_EQ(outcome.sum, driver.PlainSum()) << where;
    ++completed;
    sparse_completed += sparse;
  }
  // The scenarios must exercise both outcomes.
  EXPECT_GE(completed, kScenarios / 4);
  EXPECT_GE(sparse_completed, 12);
  EXPECT_GE(aborted[1] + aborted[2] + aborted[3] + aborted[4], 20);
  EXPECT_GE(with_drops, kScenarios / 2);
  std::printf(
      "completed %d (SecAgg+ %d); aborted at keys %d, shares %d, masking %d, unmasking %d\n",
      completed, sparse_completed, aborted[1], aborted[2], aborted[3], aborted[4]);
}

TEST(SecAgg, AgreementMemoGivesThePairsSecretToItsOtherHolderOnce) {
  AgreementMemo memo(/*capacity=*/64 * 2);  // two per shard
  const crypto::Key32 a = *crypto::RandomKey(), b = *crypto::RandomKey(), c = *crypto::RandomKey();
  const crypto::Key32 secret = *crypto::RandomKey();
  EXPECT_FALSE(memo.Take(a, b).has_value());
  memo.Put(a, b, secret);
  EXPECT_FALSE(memo.Take(a, c).has_value()) << "another pair";
  const std::optional<crypto::Key32> taken = memo.Take(b, a);  // the other holder's view
  ASSERT_TRUE(taken.has_value());
  EXPECT_EQ(*taken, secret);
  EXPECT_FALSE(memo.Take(b, a).has_value()) << "erased once taken";
  const AgreementMemo::Counts counts = memo.counts();
  EXPECT_EQ(counts.stored, 1u);
  EXPECT_EQ(counts.taken, 1u);
  EXPECT_EQ(counts.waiting, 0u);
  // Beyond its capacity the memo stores nothing (the sites compute instead).
  for (int i = 0; i < 1000; ++i) memo.Put(*crypto::RandomKey(), *crypto::RandomKey(), secret);
  EXPECT_LE(memo.counts().waiting, 64u * 2);
}

TEST(SecAgg, SitesSharingAnAgreementMemoComputeEachPairOnceForTheSameSum) {
  for (const bool sparse : {false, true}) {
    const uint32_t n = 24;
    std::mt19937_64 rng(11);
    const Params params = sparse ? Sparse(n, 8, 6, 32, 100, rng) : Complete(n, 13, 32, 100);
    auto memo = std::make_shared<AgreementMemo>();
    Driver driver(params, 7, true, 1, std::nullopt, memo);
    const Driver::Outcome outcome = driver.Run();
    ASSERT_TRUE(outcome.status.ok()) << outcome.status.ToString();
    EXPECT_EQ(outcome.sum, driver.PlainSum());
    // Each edge of the graph agrees twice (cipher and mask keys), once per pair.
    const uint64_t edges = uint64_t{n} * params.degree / 2;
    const AgreementMemo::Counts counts = memo->counts();
    EXPECT_EQ(counts.stored, 2 * edges) << (sparse ? "SecAgg+" : "complete graph");
    EXPECT_EQ(counts.taken, 2 * edges);
    EXPECT_EQ(counts.waiting, 0u);
  }
}

// Each survivor's follow-on input for `driver`'s finished round: eval
// inputs drawn from `rng`, `length` elements in ring 64, labelled `label`.
struct FollowOnRun {
  std::map<uint32_t, std::vector<uint64_t>> inputs;
  std::map<uint32_t, SecAggMasked> masked;
};
FollowOnRun MaskFollowOns(Driver& driver, uint64_t length, uint32_t label, std::mt19937_64& rng) {
  FollowOnRun run;
  for (uint32_t site : driver.server().survivors()) {
    std::unique_ptr<FollowOn> follow_on = driver.client(site).TakeFollowOn();
    EXPECT_NE(follow_on, nullptr) << "site " << site;
    if (!follow_on) continue;
    EXPECT_EQ(follow_on->round(), driver.params().round);
    std::vector<uint64_t>& input = run.inputs[site];
    for (uint64_t i = 0; i < length; ++i) input.push_back(rng());
    Result<SecAggMasked> masked = follow_on->MaskInput(input, 64, label);
    EXPECT_TRUE(masked.ok()) << masked.status().ToString();
    if (masked.ok()) run.masked[site] = std::move(masked).value();
  }
  return run;
}

TEST(SecAgg, FollowOnSumOverTheSurvivorsIsExactWithTheRoundsSecrets) {
  std::mt19937_64 rng(20261206);
  constexpr uint32_t kLabel = 0x80000007u;
  constexpr uint64_t kLength = 37;
  for (const bool sparse : {false, true}) {
    Params params = sparse ? Sparse(24, 8, 4, 32, 50, rng) : Complete(7, 4, 64, 50);
    Driver driver(params, rng());
    // Sites that shared but never masked are not survivors: their pairwise
    // masks must be left out of the follow-on by everyone.
    driver.SetDrop(params.sites[1], kAfterShares);
    driver.SetDrop(params.sites[4], kAfterShares);
    const Driver::Outcome outcome = driver.Run();
    ASSERT_EQ(outcome.aborted_at, 0) << outcome.status.ToString();
    ASSERT_EQ(driver.server().survivors().size(), params.sites.size() - 2);
    for (uint32_t dropped : {params.sites[1], params.sites[4]})
      EXPECT_EQ(driver.client(dropped).TakeFollowOn(), nullptr);

    const FollowOnRun run = MaskFollowOns(driver, kLength, kLabel, rng);
    FollowOnSum sum(7, kLabel, driver.server().survivors(), 64, kLength);
    std::vector<uint64_t> plain(kLength, 0);
    for (const auto& [site, masked] : run.masked) {
      EXPECT_NE(masked.data, Words(run.inputs.at(site), 64)) << "site " << site << " unmasked";
      EXPECT_EQ(masked.round, kLabel);
      ASSERT_TRUE(sum.Add(site, SecAggMaskedView{masked.round, masked.site, 64, masked.data}).ok());
      for (uint64_t i = 0; i < kLength; ++i) plain[i] += run.inputs.at(site)[i];
    }
    Result<std::vector<uint64_t>> total = sum.Finish();
    ASSERT_TRUE(total.ok()) << total.status().ToString();
    EXPECT_EQ(*total, plain) << (sparse ? "SecAgg+" : "complete graph");
  }
}

TEST(SecAggAdversary, FollowOnIsMaskedOnceAndOnlyAfterTheSiteRevealed) {
  std::mt19937_64 rng(7);
  Driver driver(Complete(5, 3, 64, 20), 3);
  ASSERT_TRUE(driver.Advertise().ok());
  ASSERT_TRUE(driver.Share().ok());
  ASSERT_TRUE(driver.Mask().ok());
  // Before its reveal a site's survivor list is not settled: no follow-on.
  const uint32_t site = driver.params().sites[0];
  EXPECT_EQ(driver.client(site).TakeFollowOn(), nullptr);
  ASSERT_TRUE(driver.Sign().ok());
  EXPECT_EQ(driver.client(site).TakeFollowOn(), nullptr);
  ASSERT_TRUE(driver.Reveal().ok());
  std::unique_ptr<FollowOn> follow_on = driver.client(site).TakeFollowOn();
  ASSERT_NE(follow_on, nullptr);
  EXPECT_EQ(driver.client(site).TakeFollowOn(), nullptr);  // taken once
  const std::vector<uint64_t> first(8, 1), second(8, 2);
  ASSERT_TRUE(follow_on->MaskInput(first, 64, 1).ok());
  // A second input under the same masks would give away second - first.
  ExpectError(follow_on->MaskInput(second, 64, 1).status(), Code::kAborted,
              {"masked once already", "site " + Str(site)});
}

TEST(SecAggAdversary, FollowOnSumLackingASurvivorStaysMaskedAndCheckedInputsOnly) {
  std::mt19937_64 rng(11);
  constexpr uint32_t kLabel = 0x80000007u;
  Driver driver(Complete(6, 4, 64, 20), 5);
  ASSERT_EQ(driver.Run().aborted_at, 0);
  const FollowOnRun run = MaskFollowOns(driver, 16, kLabel, rng);
  const std::vector<uint32_t>& survivors = driver.server().survivors();
  // Without the last survivor's input the others' masks do not cancel: the
  // coordinator's partial sum is not the sum of their inputs.
  std::vector<uint64_t> partial(16, 0), plain(16, 0);
  for (size_t k = 0; k + 1 < survivors.size(); ++k) {
    const uint32_t site = survivors[k];
    for (size_t i = 0; i < 16; ++i) {
      uint64_t word = 0;
      for (int b = 0; b < 8; ++b) word |= uint64_t{run.masked.at(site).data[8 * i + b]} << (8 * b);
      partial[i] += word;
      plain[i] += run.inputs.at(site)[i];
    }
  }
  for (size_t i = 0; i < 16; ++i) EXPECT_NE(partial[i], plain[i]) << "element " << i;
  FollowOnSum sum(7, kLabel, survivors, 64, 16);
  const auto view = [&](uint32_t site) {
    const SecAggMasked& m = run.masked.at(site);
    return SecAggMaskedView{m.round, m.site, m.ring_bits, m.data};
  };
  for (size_t k = 0; k + 1 < survivors.size(); ++k)
    ASSERT_TRUE(sum.Add(survivors[k], view(survivors[k])).ok());
  ExpectError(sum.Finish().status(), Code::kAborted,
              {"no input from 1 of the 6 survivors", Str(survivors.back())});
  // What Add refuses: a second input, a stranger, another label, site or size.
  ExpectError(sum.Add(survivors[0], view(survivors[0])), Code::kInvalidArgument,
              {"a second input"});
  ExpectError(sum.Add(1000, view(survivors[0])), Code::kInvalidArgument,
              {"not among the round's survivors"});
  SecAggMaskedView other = view(survivors.back());
  other.round = 7;
  ExpectError(sum.Add(survivors.back(), other), Code::kInvalidArgument, {"labelled 7"});
  other = view(survivors.back());
  other.data = other.data.first(8);
  ExpectError(sum.Add(survivors.back(), other), Code::kInvalidArgument,
              {"8 bytes", "expected 16 elements"});
  ASSERT_TRUE(sum.Add(survivors.back(), view(survivors.back())).ok());
  EXPECT_TRUE(sum.Finish().ok());
}

TEST(SecAgg, ServerBatchesCheckSignaturesInParallelAndAddInOrderAsSingleCallsWould) {
  Params params = Complete(6, 4, 64, 8);
  Driver driver(params, 21, true, /*server_threads=*/3);
  std::vector<Server::KeysFrom> keys;
  for (uint32_t site : params.sites) {
    Result<SecAggKeys> advertised = driver.client(site).AdvertiseKeys();
    ASSERT_TRUE(advertised.ok()) << advertised.status().ToString();
    keys.push_back({site, *advertised, driver.identity(site).public_key});
  }
  keys[1].keys.signature[5] ^= 1;  // forged
  keys.push_back(keys[2]);         // the same site again
  keys.back().keys.signature = keys[2].keys.signature;
  std::vector<Status> added = driver.server().AddKeys(keys);
  ASSERT_EQ(added.size(), keys.size());
  ExpectError(added[1], Code::kInvalidArgument, {"bad signature", "site " + Str(params.sites[1])});
  ExpectError(added.back(), Code::kInvalidArgument, {"site " + Str(params.sites[2])});
  for (size_t i : {0, 2, 3, 4, 5}) EXPECT_TRUE(added[i].ok()) << i << ": " << added[i].ToString();
  ASSERT_TRUE(driver.server().FinishKeys().ok());
  EXPECT_EQ(driver.server().advertised().size(), 5u);
}

TEST(SecAgg, ThresholdEdges) {
  // n = 7, t = 4: three sites may go, a fourth may not, at every step.
  const Params params = Complete(7, 4, 64, 16);
  for (int step = kBeforeKeys; step <= kAfterMasking; ++step) {
    for (int lost : {3, 4}) {
      Driver driver(params, 100 + step * 10 + lost);
      for (int i = 0; i < lost; ++i)
        driver.SetDrop(params.sites[static_cast<size_t>(2 * i) % 7], static_cast<Drop>(step));
      const Driver::Outcome outcome = driver.Run();
      const std::string where = "step " + Str(step) + ", " + Str(lost) + " lost";
      if (lost == 3) {
        ASSERT_EQ(outcome.aborted_at, 0) << where << ": " << outcome.status.ToString();
        EXPECT_EQ(outcome.sum, driver.PlainSum()) << where;
        if (step <= kAfterShares) {
          EXPECT_EQ(driver.server().survivors().size(), 4u) << where;
        }
      } else {
        // Sites that leave after masking are still summed; the round fails at
        // unmasking for lack of shares.
        EXPECT_EQ(outcome.aborted_at, step) << where;
        ExpectError(outcome.status, Code::kAborted, {"round 7", "3", "fewer than the threshold 4"});
      }
    }
  }
}

// Wilson-Hilferty: the chi-square upper tail for many degrees of freedom.
double ChiSquarePValue(const std::vector<double>& counts) {
  double total = 0;
  for (double c : counts) total += c;
  const double expected = total / static_cast<double>(counts.size());
  double chi = 0;
  for (double c : counts) chi += (c - expected) * (c - expected) / expected;
  const double k = static_cast<double>(counts.size() - 1);
  const double z = (std::cbrt(chi / k) - (1 - 2 / (9 * k))) / std::sqrt(2 / (9 * k));
  return 0.5 * std::erfc(z / std::sqrt(2.0));
}

double BytesPValue(std::span<const uint8_t> bytes) {
  std::vector<double> counts(256, 0);
  for (uint8_t b : bytes) ++counts[b];
  return ChiSquarePValue(counts);
}

TEST(SecAgg, CoordinatorSeesOnlyUniformBytes) {
  constexpr double kSignificance = 1e-6;
  for (uint32_t ring_bits : {32u, 64u}) {
    Driver driver(Complete(9, 5, ring_bits, 8192), ring_bits);
    // Very non-uniform inputs: zeros, and small counts.
    for (uint32_t site : driver.params().sites) {
      std::vector<uint64_t>& input = driver.input(site);
      for (size_t i = 0; i < input.size(); ++i) input[i] = site % 2 ? 0 : i % 5;
    }
    std::vector<uint8_t> plain_bytes;
    for (uint64_t x : driver.input(driver.params().sites[2]))
      for (uint32_t b = 0; b < ring_bits / 8; ++b) plain_bytes.push_back(uint8_t(x >> (8 * b)));
    EXPECT_LT(BytesPValue(plain_bytes), kSignificance) << "the test must be able to fail";

    driver.SetDrop(driver.params().sites[1], kAfterShares);  // its masks stay in the sum
    driver.SetDrop(driver.params().sites[4], kAfterShares);
    ASSERT_TRUE(driver.Advertise().ok());
    ASSERT_TRUE(driver.Share().ok());
    ASSERT_TRUE(driver.Mask().ok());
    ASSERT_EQ(driver.masked_seen().size(), 7u);
    for (const std::vector<uint8_t>& masked : driver.masked_seen()) {
      EXPECT_EQ(masked.size(), 8192u * ring_bits / 8);
      EXPECT_GT(BytesPValue(masked), kSignificance) << "ring " << ring_bits;
    }
    std::vector<uint8_t> sum_bytes;
    for (uint64_t x : driver.server().masked_sum())
      for (uint32_t b = 0; b < ring_bits / 8; ++b) sum_bytes.push_back(uint8_t(x >> (8 * b)));
    EXPECT_GT(BytesPValue(sum_bytes), kSignificance) << "ring " << ring_bits;
    ASSERT_TRUE(driver.Sign().ok());
    Result<std::vector<uint64_t>> sum = driver.Reveal();
    ASSERT_TRUE(sum.ok()) << sum.status().ToString();
    EXPECT_EQ(*sum, driver.PlainSum());
  }
}

// --- Rejections: the client's key list ---

TEST(SecAgg, ClientRejectsForgedSignature) {
  Driver driver(Complete(4, 3, 64, 8));
  ASSERT_TRUE(driver.Advertise().ok());
  const uint32_t site = driver.params().sites[0];
  Result<SecAggKeyList> list = driver.server().KeyListFor(site);
  ASSERT_TRUE(list.ok());
  SecAggKeyList forged = *list;
  forged.keys[2].signature[10] ^= 0x40;
  Result<SecAggShares> shares = driver.client(site).ShareKeys(forged);
  ExpectError(shares.status(), Code::kInvalidArgument,
              {"round 7", "site " + Str(site), "ShareKeys",
               "keys of site " + Str(forged.keys[2].site), "bad signature"});
  // The client takes no further part, even with the genuine list.
  ExpectError(driver.client(site).ShareKeys(*list).status(), Code::kAborted,
              {"earlier step failed"});
}

TEST(SecAgg, ClientRejectsAlteredKeysInRelayedList) {
  Driver driver(Complete(5, 3, 32, 8));
  ASSERT_TRUE(driver.Advertise().ok());
  const uint32_t site = driver.params().sites[1];
  const SecAggKeyList list = *driver.server().KeyListFor(site);
  const auto try_list = [&](const SecAggKeyList& altered, Code code,
                            std::initializer_list<std::string_view> parts) {
    // A fresh client per attempt: a rejection ends a client's round.
    Client client(driver.params(), site, driver.identity(site), driver.roster());
    Result<SecAggKeys> keys = client.AdvertiseKeys();
    ASSERT_TRUE(keys.ok());
    SecAggKeyList with_own = altered;
    for (SecAggKeys& entry : with_own.keys)
      if (entry.site == site && entry == list.keys[1]) entry = *keys;
    ExpectError(client.ShareKeys(with_own).status(), code, parts);
  };
  {  // A neighbour's mask key replaced: its signature no longer covers it.
    SecAggKeyList altered = list;
    altered.keys[3].mask_key[0] ^= 1;
    try_list(altered, Code::kInvalidArgument,
             {"keys of site " + Str(list.keys[3].site), "bad signature"});
  }
  {  // A neighbour's keys relayed with another site's identity key.
    SecAggKeyList altered = list;
    altered.keys[0].identity_key = driver.identity(list.keys[2].site).public_key;
    try_list(altered, Code::kCorruption,
             {"keys of site " + Str(list.keys[0].site), "not the site's key in this site's roster",
              "substituted in the relay"});
  }
  {  // A neighbour's keys replaced wholesale, signed by a key of the relay's own.
    SecAggKeyList altered = list;
    const crypto::SigningKey relay = *crypto::GenerateSigningKey();
    SecAggKeys& entry = altered.keys[2];
    entry.identity_key = relay.public_key;
    entry.mask_key[3] ^= 8;
    entry.signature =
        *crypto::Sign(relay, KeysSignedMessage(crypto::Key32{}, entry.round, entry.site,
                                               entry.cipher_key, entry.mask_key));
    try_list(altered, Code::kCorruption, {"not the site's key in this site's roster"});
  }
  {  // A site the roster does not know.
    SecAggKeyList altered = list;
    altered.keys[4].site = 999;
    try_list(altered, Code::kInvalidArgument, {"site 999"});
  }
  {  // Missing own keys.
    SecAggKeyList altered = list;
    altered.keys.erase(altered.keys.begin() + 1);
    try_list(altered, Code::kInvalidArgument, {"lacks this site's own keys"});
  }
  {  // Keys for another round.
    SecAggKeyList altered = list;
    altered.round = 8;
    try_list(altered, Code::kInvalidArgument, {"key list for round 8, expected round 7"});
  }
  {  // Not ascending (a duplicate entry).
    SecAggKeyList altered = list;
    altered.keys[3] = altered.keys[2];
    try_list(altered, Code::kInvalidArgument, {"not strictly ascending"});
  }
  {  // Fewer than the threshold: the round cannot complete for this site.
    SecAggKeyList altered = list;
    altered.keys.resize(2);
    try_list(altered, Code::kAborted, {"fewer than the threshold 3"});
  }
}

TEST(SecAgg, ClientRejectsItsOwnKeysAltered) {
  Driver driver(Complete(4, 3, 64, 8));
  ASSERT_TRUE(driver.Advertise().ok());
  const uint32_t site = driver.params().sites[2];
  SecAggKeyList list = *driver.server().KeyListFor(site);
  list.keys[2].cipher_key[5] ^= 2;
  ExpectError(driver.client(site).ShareKeys(list).status(), Code::kInvalidArgument,
              {"site " + Str(site), "differ from the ones it advertised"});
}

TEST(SecAgg, ClientRejectsDuplicateKeysAndStrangers) {
  const Params params = Complete(5, 4, 64, 4);
  Driver driver(params);
  ASSERT_TRUE(driver.Advertise().ok());
  const uint32_t site = params.sites[0];
  {  // Keys of a site that is not a participant of the round.
    SecAggKeyList list = *driver.server().KeyListFor(site);
    list.keys.back().site = params.sites.back() + 1;
    const SecAggKeys stranger = list.keys.back();
    ExpectError(driver.client(site).ShareKeys(list).status(), Code::kInvalidArgument,
                {"keys of site " + Str(stranger.site), "not a participant"});
  }
  {  // A site advertising another site's key, validly signed.
    Client client(params, site, driver.identity(site), driver.roster());
    SecAggKeyList list = *driver.server().KeyListFor(site);
    list.keys[0] = *client.AdvertiseKeys();
    const uint32_t a = params.sites[1], b = params.sites[2];
    list.keys[2].mask_key = driver.advertised(a).cipher_key;
    list.keys[2] = Resigned(list.keys[2], driver.identity(b));
    ExpectError(client.ShareKeys(list).status(), Code::kInvalidArgument,
                {"sites " + Str(a) + " and " + Str(b) + " advertise the same key"});
  }
}

// --- Rejections: the coordinator's checks of what sites send ---

TEST(SecAgg, ServerRejectsBadKeys) {
  const Params params = Complete(4, 3, 64, 8);
  Driver driver(params);
  Server& server = driver.server();
  const uint32_t a = params.sites[0], b = params.sites[1], c = params.sites[2];
  Result<SecAggKeys> keys_a = driver.client(a).AdvertiseKeys();
  Result<SecAggKeys> keys_b = driver.client(b).AdvertiseKeys();
  Result<SecAggKeys> keys_c = driver.client(c).AdvertiseKeys();
  ASSERT_TRUE(keys_a.ok() && keys_b.ok() && keys_c.ok());
  // Signed by an identity other than the channel's.
  ExpectError(server.AddKeys(a, *keys_a, driver.identity(b).public_key), Code::kInvalidArgument,
              {"round 7", "keys from site " + Str(a), "bad signature"});
  // One message per site: a retry is refused.
  ExpectError(server.AddKeys(a, *keys_a, driver.identity(a).public_key), Code::kInvalidArgument,
              {"second keys message from site " + Str(a)});
  // Labelled with another site.
  ExpectError(server.AddKeys(b, *keys_c, driver.identity(c).public_key), Code::kInvalidArgument,
              {"labelled round 7, site " + Str(c), "expected round 7, site " + Str(b)});
  ASSERT_TRUE(server.AddKeys(c, *keys_c, driver.identity(c).public_key).ok());
  // Not a participant.
  ExpectError(server.AddKeys(1000, *keys_c, driver.identity(c).public_key), Code::kInvalidArgument,
              {"site 1000", "not a participant"});
  ExpectError(server.AddKeys(c, *keys_c, driver.identity(c).public_key), Code::kInvalidArgument,
              {"second keys message"});

  // A key another site advertised, and a low-order key, each validly signed.
  const uint32_t d = params.sites[3];
  const auto signed_keys = [&](const crypto::Key32& cipher, const crypto::Key32& mask) {
    SecAggKeys keys;
    keys.round = 7;
    keys.site = d;
    keys.cipher_key = cipher;
    keys.mask_key = mask;
    return Resigned(keys, driver.identity(d));
  };
  Server fresh(params);
  ASSERT_TRUE(fresh.AddKeys(c, *keys_c, driver.identity(c).public_key).ok());
  crypto::Key32 own = crypto::GenerateDhKey()->public_key;
  Status reused =
      fresh.AddKeys(d, signed_keys(own, keys_c->mask_key), driver.identity(d).public_key);
  ExpectError(reused, Code::kInvalidArgument,
              {"keys from site " + Str(d), "site " + Str(c) + " advertised already"});
  Server fresh2(params);
  crypto::Key32 zero{};  // the point of order 1 (u = 0)
  ExpectError(fresh2.AddKeys(d, signed_keys(own, zero), driver.identity(d).public_key),
              Code::kInvalidArgument, {"mask key is a low-order X25519 point"});
}

TEST(SecAgg, LowOrderListHoldsExactlyTheKeysThatZeroEveryAgreement) {
  // OpenSSL refuses (all-zero result) an agreement with each listed point,
  // with bit 255 clear or set, and the check flags each; random keys agree.
  const std::vector<crypto::Key32> points = LowOrderX25519Points();
  EXPECT_EQ(points.size(), 7u);
  for (crypto::Key32 point : points) {
    for (int high = 0; high < 2; ++high) {
      if (high) point[31] |= 0x80;
      EXPECT_TRUE(IsLowOrderX25519(point)) << crypto::ToHex(point);
      for (int trial = 0; trial < 3; ++trial) {
        const Result<crypto::Key32> agreed = crypto::DhSharedSecret(*crypto::RandomKey(), point);
        EXPECT_TRUE(!agreed.ok() || *agreed == crypto::Key32{}) << crypto::ToHex(point);
      }
    }
  }
  for (int trial = 0; trial < 200; ++trial) {
    const crypto::Key32 key = crypto::GenerateDhKey()->public_key;
    EXPECT_FALSE(IsLowOrderX25519(key));
    EXPECT_TRUE(crypto::DhSharedSecret(*crypto::RandomKey(), key).ok());
  }
}

TEST(SecAgg, CoordinatorRefusesEveryLowOrderRoundKey) {
  const Params params = Complete(5, 3, 64, 8);
  Driver driver(params);
  const uint32_t d = params.sites[3];
  const crypto::Key32 own = crypto::GenerateDhKey()->public_key;
  for (crypto::Key32 point : LowOrderX25519Points()) {
    for (int high = 0; high < 2; ++high) {
      if (high) point[31] |= 0x80;
      for (const bool as_mask : {false, true}) {
        SecAggKeys keys;
        keys.round = params.round;
        keys.site = d;
        keys.cipher_key = as_mask ? own : point;
        keys.mask_key = as_mask ? point : own;
        Server server(params);
        ExpectError(
            server.AddKeys(d, Resigned(keys, driver.identity(d)), driver.identity(d).public_key),
            Code::kInvalidArgument,
            {std::string(as_mask ? "mask" : "cipher") + " key is a low-order X25519 point"});
      }
    }
  }
}

TEST(SecAgg, ClientRejectsTamperedSealedShare) {
  Driver driver(Complete(4, 3, 64, 8));
  ASSERT_TRUE(driver.Advertise().ok());
  ASSERT_TRUE(driver.Share().ok());
  const uint32_t site = driver.params().sites[3];
  Result<SecAggRoutedShares> routed = driver.server().SharesFor(site);
  ASSERT_TRUE(routed.ok());
  ASSERT_EQ(routed->shares.size(), 3u);
  SecAggRoutedShares tampered = *routed;
  tampered.shares[1].sealed[20] ^= 0x01;
  Result<SecAggMasked> masked = driver.client(site).MaskInput(driver.input(site), tampered);
  ExpectError(masked.status(), Code::kCorruption,
              {"round 7", "site " + Str(site), "MaskInput",
               "share from site " + Str(tampered.shares[1].site), "does not authenticate"});
  // A share relabelled as coming from another site fails too (AAD binds the sender).
  Driver other(Complete(4, 3, 64, 8));
  ASSERT_TRUE(other.Advertise().ok());
  ASSERT_TRUE(other.Share().ok());
  SecAggRoutedShares swapped = *other.server().SharesFor(site);
  std::swap(swapped.shares[0].sealed, swapped.shares[1].sealed);
  ExpectError(other.client(site).MaskInput(other.input(site), swapped).status(), Code::kCorruption,
              {"does not authenticate"});
}

TEST(SecAgg, ShareOfWrongLengthRejected) {
  Driver driver(Complete(4, 3, 64, 8));
  ASSERT_TRUE(driver.Advertise().ok());
  const uint32_t site = driver.params().sites[0];
  Result<SecAggShares> shares = driver.client(site).ShareKeys(*driver.server().KeyListFor(site));
  ASSERT_TRUE(shares.ok());
  SecAggShares short_share = *shares;
  short_share.shares[0].sealed.pop_back();
  ExpectError(driver.server().AddShares(site, short_share), Code::kInvalidArgument,
              {"shares from site " + Str(site), "share for site " + Str(short_share.shares[0].site),
               "95 bytes, expected 96"});

  // And at the client, a routed share cut short.
  Driver second(Complete(4, 3, 64, 8));
  ASSERT_TRUE(second.Advertise().ok());
  ASSERT_TRUE(second.Share().ok());
  SecAggRoutedShares routed = *second.server().SharesFor(site);
  routed.shares[2].sealed.resize(40);
  ExpectError(second.client(site).MaskInput(second.input(site), routed).status(),
              Code::kInvalidArgument,
              {"share from site " + Str(routed.shares[2].site), "40 bytes, expected 96"});
}

TEST(SecAgg, ServerRejectsSharesThatDoNotMatchTheNeighbours) {
  Driver driver(Complete(5, 3, 64, 8));
  driver.SetDrop(driver.params().sites[4], kBeforeKeys);
  ASSERT_TRUE(driver.Advertise().ok());
  const uint32_t site = driver.params().sites[0];
  const SecAggShares shares = *driver.client(site).ShareKeys(*driver.server().KeyListFor(site));
  ASSERT_EQ(shares.shares.size(), 3u);  // the site that never advertised gets none
  const auto attempt = [&](const SecAggShares& altered,
                           std::initializer_list<std::string_view> parts) {
    Server server(driver.params());
    for (uint32_t s : driver.params().sites) {
      if (s == driver.params().sites[4]) continue;
      // The same advertised keys, into a fresh coordinator.
      ASSERT_TRUE(server.AddKeys(s, driver.advertised(s), driver.identity(s).public_key).ok());
    }
    ASSERT_TRUE(server.FinishKeys().ok());
    ExpectError(server.AddShares(site, altered), Code::kInvalidArgument, parts);
  };
  {
    SecAggShares missing = shares;
    missing.shares.pop_back();
    attempt(missing, {"expected 3 sealed shares", "found 2"});
  }
  {
    SecAggShares stray = shares;
    stray.shares[1].site = driver.params().sites[4];
    attempt(stray, {"addressed to site " + Str(driver.params().sites[4]), "not a neighbour"});
  }
  {
    SecAggShares twice = shares;
    twice.shares[1].site = twice.shares[0].site;
    attempt(twice, {"two shares addressed to site " + Str(shares.shares[0].site)});
  }
  {
    SecAggShares to_self = shares;
    to_self.shares[1].site = site;
    attempt(to_self, {"addressed to site " + Str(site)});
  }
}

TEST(SecAgg, ServerRejectsMaskedVectorOfWrongLengthOrRing) {
  Driver driver(Complete(4, 3, 32, 10));
  ASSERT_TRUE(driver.Advertise().ok());
  ASSERT_TRUE(driver.Share().ok());
  const uint32_t a = driver.params().sites[0], b = driver.params().sites[1];
  const uint32_t c = driver.params().sites[2];
  Result<SecAggMasked> masked_a =
      driver.client(a).MaskInput(driver.input(a), *driver.server().SharesFor(a));
  Result<SecAggMasked> masked_b =
      driver.client(b).MaskInput(driver.input(b), *driver.server().SharesFor(b));
  Result<SecAggMasked> masked_c =
      driver.client(c).MaskInput(driver.input(c), *driver.server().SharesFor(c));
  ASSERT_TRUE(masked_a.ok() && masked_b.ok() && masked_c.ok());
  ASSERT_EQ(masked_a->data.size(), 40u);

  SecAggMasked longer = *masked_a;
  longer.data.push_back(0);
  ExpectError(driver.server().AddMasked(a, longer), Code::kInvalidArgument,
              {"masked input from site " + Str(a), "41 bytes", "10 elements of 4 bytes = 40"});
  SecAggMasked wrong_ring = *masked_b;
  wrong_ring.ring_bits = 64;
  wrong_ring.data.resize(80);
  ExpectError(driver.server().AddMasked(b, wrong_ring), Code::kInvalidArgument,
              {"ring of 64 bits, expected 32"});
  SecAggMasked wrong_round = *masked_c;
  wrong_round.round = 6;
  ExpectError(driver.server().AddMasked(c, wrong_round), Code::kInvalidArgument,
              {"labelled round 6"});
  // Nothing of the rejected vectors entered the sum.
  for (uint64_t x : driver.server().masked_sum()) EXPECT_EQ(x, 0u);
}

TEST(SecAgg, ServerRejectsDuplicateMessages) {
  Driver driver(Complete(4, 3, 64, 8));
  Server& server = driver.server();
  const uint32_t site = driver.params().sites[1];
  std::map<uint32_t, SecAggKeys> keys;
  for (uint32_t s : driver.params().sites) {
    keys[s] = *driver.client(s).AdvertiseKeys();
    ASSERT_TRUE(server.AddKeys(s, keys[s], driver.identity(s).public_key).ok());
  }
  ExpectError(server.AddKeys(site, keys[site], driver.identity(site).public_key),
              Code::kInvalidArgument, {"second keys message from site " + Str(site)});
  ASSERT_TRUE(server.FinishKeys().ok());
  std::map<uint32_t, SecAggShares> shares;
  for (uint32_t s : driver.params().sites) {
    shares[s] = *driver.client(s).ShareKeys(*server.KeyListFor(s));
    ASSERT_TRUE(server.AddShares(s, shares[s]).ok());
  }
  ExpectError(server.AddShares(site, shares[site]), Code::kInvalidArgument,
              {"second shares message from site " + Str(site)});
  ASSERT_TRUE(server.FinishShares().ok());
  std::map<uint32_t, SecAggMasked> masked;
  for (uint32_t s : driver.params().sites) {
    masked[s] = *driver.client(s).MaskInput(driver.input(s), *server.SharesFor(s));
    ASSERT_TRUE(server.AddMasked(s, masked[s]).ok());
  }
  ExpectError(server.AddMasked(site, masked[site]), Code::kInvalidArgument,
              {"second masked input message from site " + Str(site)});
  ASSERT_TRUE(server.FinishMasked().ok());
  std::map<uint32_t, SecAggSurvivorSignature> signatures;
  for (uint32_t s : driver.params().sites) {
    signatures[s] = *driver.client(s).SignSurvivors(server.SurvivorList());
    ASSERT_TRUE(server.AddSurvivorSignature(s, signatures[s]).ok());
  }
  ExpectError(server.AddSurvivorSignature(site, signatures[site]), Code::kInvalidArgument,
              {"second survivor signature message from site " + Str(site)});
  ASSERT_TRUE(server.FinishSignatures().ok());
  std::map<uint32_t, SecAggUnmaskShares> revealed;
  for (uint32_t s : driver.params().sites) {
    revealed[s] = *driver.client(s).Unmask(server.UnmaskRequest());
    ASSERT_TRUE(server.AddUnmaskShares(s, revealed[s]).ok());
  }
  ExpectError(server.AddUnmaskShares(site, revealed[site]), Code::kInvalidArgument,
              {"second unmask shares message from site " + Str(site)});
  Result<std::vector<uint64_t>> sum = server.Finish();
  ASSERT_TRUE(sum.ok()) << sum.status().ToString();
  EXPECT_EQ(*sum, driver.PlainSum());  // the duplicates were not counted twice
}

// --- Rejections: the unmask request ---

class SecAggUnmask : public ::testing::Test {
 protected:
  void SetUp() override {
    driver_.SetDrop(driver_.params().sites[4], kAfterShares);
    ASSERT_TRUE(driver_.Advertise().ok());
    ASSERT_TRUE(driver_.Share().ok());
    ASSERT_TRUE(driver_.Mask().ok());
    ASSERT_TRUE(driver_.Sign().ok());
    request_ = driver_.server().UnmaskRequest();
    ASSERT_EQ(request_.survivors.size(), 5u);
    ASSERT_EQ(request_.signatures.size(), 5u);
  }
  uint32_t site() const { return driver_.params().sites[0]; }

  Driver driver_{Complete(6, 4, 64, 8)};
  SecAggUnmaskRequest request_;
};

TEST_F(SecAggUnmask, RefusesAListOtherThanTheOneItSigned) {
  // The dropped site listed as a survivor to one holder: its seed shares
  // would join the mask-key shares the others reveal.
  SecAggUnmaskRequest other = request_;
  other.survivors.erase(other.survivors.begin() + 2);
  ExpectError(driver_.client(site()).Unmask(other).status(), Code::kInvalidArgument,
              {"round 7", "site " + Str(site()), "Unmask", "consistency check", "not the list",
               "this site signed"});
  ExpectError(driver_.client(site()).Unmask(request_).status(), Code::kAborted,
              {"earlier step failed"});
}

TEST_F(SecAggUnmask, RefusesTooFewForgedOrForeignSignatures) {
  SecAggUnmaskRequest few = request_;
  few.signatures.resize(Quorum(driver_.params()) - 1);
  ExpectError(driver_.client(driver_.params().sites[1]).Unmask(few).status(),
              Code::kInvalidArgument,
              {"consistency check", Str(few.signatures.size()) + " valid signatures",
               "expected at least " + Str(Quorum(driver_.params()))});
  SecAggUnmaskRequest forged = request_;
  forged.signatures[1].signature[5] ^= 1;
  ExpectError(driver_.client(driver_.params().sites[2]).Unmask(forged).status(),
              Code::kInvalidArgument,
              {"consistency check", "signature of site " + Str(forged.signatures[1].site),
               "does not verify"});
  SecAggUnmaskRequest foreign = request_;
  foreign.signatures[0].site = driver_.params().sites[4];  // the dropped site
  std::sort(foreign.signatures.begin(), foreign.signatures.end(),
            [](const SurvivorSignature& a, const SurvivorSignature& b) { return a.site < b.site; });
  ExpectError(driver_.client(driver_.params().sites[3]).Unmask(foreign).status(),
              Code::kInvalidArgument, {"not a listed survivor"});
}

TEST(SecAgg, SignRefusesBadSurvivorLists) {
  Driver driver(Complete(6, 4, 64, 8));
  driver.SetDrop(driver.params().sites[5], kAfterKeys);
  ASSERT_TRUE(driver.Advertise().ok());
  ASSERT_TRUE(driver.Share().ok());
  ASSERT_TRUE(driver.Mask().ok());
  const SecAggUnmaskRequest list = driver.server().SurvivorList();
  const auto sites = driver.params().sites;
  SecAggUnmaskRequest never_shared = list;
  never_shared.survivors.push_back(sites[5]);
  ExpectError(driver.client(sites[1]).SignSurvivors(never_shared).status(), Code::kInvalidArgument,
              {"listed as a survivor but did not send this site shares"});
  SecAggUnmaskRequest few = list;
  few.survivors.resize(3);
  ExpectError(driver.client(sites[0]).SignSurvivors(few).status(), Code::kAborted,
              {"3 survivors, fewer than the threshold 4"});
  SecAggUnmaskRequest without_me = list;
  without_me.survivors.erase(without_me.survivors.begin() + 2);
  ExpectError(driver.client(sites[2]).SignSurvivors(without_me).status(), Code::kInvalidArgument,
              {"this site is not listed among the survivors"});
  SecAggUnmaskRequest unsorted = list;
  std::swap(unsorted.survivors[0], unsorted.survivors[1]);
  ExpectError(driver.client(sites[3]).SignSurvivors(unsorted).status(), Code::kInvalidArgument,
              {"survivor list is not strictly ascending"});
  SecAggUnmaskRequest presigned = list;
  presigned.signatures.push_back(SurvivorSignature{sites[0], {}});
  ExpectError(driver.client(sites[4]).SignSurvivors(presigned).status(), Code::kInvalidArgument,
              {"an unmask request with 1 signatures"});
}

TEST_F(SecAggUnmask, ServerRejectsMalformedRevealedShares) {
  const SecAggUnmaskShares good = *driver_.client(site()).Unmask(request_);
  ASSERT_EQ(good.self_mask_shares.size(), 5u);
  ASSERT_EQ(good.mask_key_shares.size(), 1u);
  const auto attempt = [&](const SecAggUnmaskShares& shares, Code code,
                           std::initializer_list<std::string_view> parts) {
    // Each attempt comes from another survivor: the coordinator takes one message per site.
    ExpectError(driver_.server().AddUnmaskShares(shares.site, shares), code, parts);
  };
  SecAggUnmaskShares missing = good;
  missing.self_mask_shares.pop_back();
  attempt(missing, Code::kInvalidArgument, {"expected self-mask shares of sites"});
  SecAggUnmaskShares too_big = *driver_.client(driver_.params().sites[1]).Unmask(request_);
  too_big.mask_key_shares[0].share.assign(shamir::kShareSize, 0xff);
  attempt(too_big, Code::kCorruption,
          {"mask-key share of site " + Str(driver_.params().sites[4]), "field element"});
  SecAggUnmaskShares short_share = *driver_.client(driver_.params().sites[2]).Unmask(request_);
  short_share.self_mask_shares[0].share.pop_back();
  attempt(short_share, Code::kCorruption, {"39 bytes, expected 40"});
  SecAggUnmaskShares both = *driver_.client(driver_.params().sites[3]).Unmask(request_);
  both.mask_key_shares.push_back(both.self_mask_shares[1]);
  attempt(both, Code::kInvalidArgument, {"expected mask-key shares of sites"});
  // Nobody answered correctly: too few to unmask.
  ExpectError(driver_.server().Finish().status(), Code::kAborted,
              {"0 survivors revealed shares, fewer than the threshold 4"});
}

TEST(SecAgg, BadRevealedMaskKeyShareIsDetected) {
  Driver driver(Complete(5, 3, 64, 8));
  const uint32_t dropped = driver.params().sites[2];
  driver.SetDrop(dropped, kAfterShares);
  ASSERT_TRUE(driver.Advertise().ok());
  ASSERT_TRUE(driver.Share().ok());
  ASSERT_TRUE(driver.Mask().ok());
  ASSERT_TRUE(driver.Sign().ok());
  const SecAggUnmaskRequest request = driver.server().UnmaskRequest();
  for (uint32_t site : request.survivors) {
    SecAggUnmaskShares shares = *driver.client(site).Unmask(request);
    if (site == request.survivors[0]) {
      // A valid field vector, but not the share it was given.
      shares.mask_key_shares[0].share[0] ^= 1;
    }
    ASSERT_TRUE(driver.server().AddUnmaskShares(site, shares).ok());
  }
  Result<std::vector<uint64_t>> sum = driver.server().Finish();
  ASSERT_FALSE(sum.ok());
  // Either the limbs fall outside a 32-byte key, or the key does not match.
  EXPECT_EQ(sum.status().code(), Code::kCorruption) << sum.status().ToString();
  EXPECT_NE(sum.status().message().find("mask key of"), std::string::npos)
      << sum.status().message();
  ExpectError(driver.server().Finish().status(), Code::kAborted, {"after the round aborted"});
}

TEST(SecAgg, ClientRefusesWireFormInputOfWrongSize) {
  std::mt19937_64 rng(6);
  Params params = Sparse(9, 4, 4, 32, 8, rng);
  Driver driver(params);
  ASSERT_TRUE(driver.Advertise().ok());
  ASSERT_TRUE(driver.Share().ok());
  const uint32_t site = params.sites[0];
  std::vector<uint8_t> words = Words(driver.input(site), 32);
  words.pop_back();
  ExpectError(driver.client(site).MaskInputWords(words, *driver.server().SharesFor(site)).status(),
              Code::kInvalidArgument, {"input of 31 bytes", "expected 8 elements of 4 bytes"});
}

TEST(SecAgg, ClientRefusesToMaskBehindTooFewNeighbours) {
  std::mt19937_64 rng(5);
  Params params = Sparse(9, 4, 4, 64, 8, rng);
  Driver driver(params);
  ASSERT_TRUE(driver.Advertise().ok());
  ASSERT_TRUE(driver.Share().ok());
  const uint32_t site = params.sites[0];
  SecAggRoutedShares routed = *driver.server().SharesFor(site);
  ASSERT_EQ(routed.shares.size(), 4u);
  routed.shares.resize(2);  // with itself 3 holders, threshold 4
  ExpectError(driver.client(site).MaskInput(driver.input(site), routed).status(), Code::kAborted,
              {"shares arrived from 2 neighbours", "fewer than the threshold 4"});
}

TEST(SecAgg, StepsOutOfOrderAreRefused) {
  const Params params = Complete(4, 3, 64, 8);
  Driver driver(params);
  const uint32_t site = params.sites[0];
  ExpectError(driver.client(site).ShareKeys(SecAggKeyList{}).status(), Code::kInvalidArgument,
              {"round 7", "site " + Str(site), "out of order", "expected AdvertiseKeys"});
  ExpectError(driver.client(site).AdvertiseKeys().status(), Code::kAborted,
              {"earlier step failed"});

  Server& server = driver.server();
  ExpectError(server.AddShares(site, SecAggShares{}), Code::kInvalidArgument,
              {"AddShares called out of order"});
  ExpectError(server.KeyListFor(site).status(), Code::kInvalidArgument, {"before FinishKeys"});
  ExpectError(server.Finish().status(), Code::kInvalidArgument, {"Finish called out of order"});
  ExpectError(server.FinishMasked(), Code::kInvalidArgument, {"out of order"});
  Client fresh(params, params.sites[1], driver.identity(params.sites[1]));
  ASSERT_TRUE(fresh.AdvertiseKeys().ok());
  ExpectError(fresh.SignSurvivors(SecAggUnmaskRequest{}).status(), Code::kInvalidArgument,
              {"expected ShareKeys next"});
}

TEST(SecAgg, AbortedRoundRefusesLaterSteps) {
  Driver driver(Complete(4, 3, 64, 8));
  for (uint32_t site : {driver.params().sites[0], driver.params().sites[1]})
    driver.SetDrop(site, kBeforeKeys);
  ExpectError(driver.Advertise(), Code::kAborted,
              {"round 7", "2 sites advertised keys, fewer than the threshold 3"});
  ExpectError(driver.server().AddShares(driver.params().sites[2], SecAggShares{}), Code::kAborted,
              {"after the round aborted"});
}

// --- Parameters and the neighbour graph ---

TEST(SecAgg, ValidateRejectsInconsistentParams) {
  std::mt19937_64 rng(1);
  EXPECT_TRUE(Validate(Complete(5, 3, 64, 10)).ok());
  EXPECT_TRUE(Validate(Sparse(10, 4, 3, 32, 10, rng)).ok());
  const auto invalid = [](Params p, std::string_view part) {
    ExpectError(Validate(p), Code::kInvalidArgument, {"parameters", part});
  };
  invalid(Complete(5, 1, 64, 10), "threshold 1");
  invalid(Complete(5, 6, 64, 10), "threshold 6");
  invalid(Complete(5, 3, 16, 10), "ring_bits 16");
  Params unsorted = Complete(5, 3, 64, 10);
  std::swap(unsorted.sites[1], unsorted.sites[2]);
  invalid(unsorted, "strictly ascending");
  invalid(Sparse(10, 3, 3, 64, 10, rng), "even");
  Params short_seed = WithRing(Sparse(10, 4, 3, 64, 10, rng), rng);
  short_seed.ring_seed.resize(5);
  invalid(short_seed, "a ring seed of 5 bytes, expected 32");
  Params seed_with_complete = WithRing(Complete(5, 3, 64, 10), rng);
  invalid(seed_with_complete, "expected none with the complete graph");
  invalid(Sparse(10, 4, 6, 64, 10, rng), "threshold 6");
  invalid(Complete(1, 2, 64, 10), "participants");

  // Neither side crashes on invalid parameters: every step fails.
  Client client(Complete(5, 1, 64, 10), 2, *crypto::GenerateSigningKey());
  ExpectError(client.AdvertiseKeys().status(), Code::kAborted, {"threshold 1"});
  Client outsider(Complete(5, 3, 64, 10), 3, *crypto::GenerateSigningKey());
  ExpectError(outsider.AdvertiseKeys().status(), Code::kAborted, {"not a participant"});
  Server server(Complete(5, 1, 64, 10));
  ExpectError(server.FinishKeys(), Code::kInvalidArgument, {"threshold 1"});
}

TEST(SecAgg, NeighboursFormASymmetricRegularGraph) {
  std::mt19937_64 rng(11);
  for (uint32_t n : {5u, 9u, 20u, 64u}) {
    for (uint32_t degree = 2; degree < n - 1; degree += 2) {
      const Params params = WithRing(Sparse(n, degree, 2, 64, 1, rng), rng);
      for (uint32_t site : params.sites) {
        const std::vector<uint32_t> nb = Neighbours(params, site);
        ASSERT_EQ(nb.size(), degree);
        EXPECT_TRUE(std::is_sorted(nb.begin(), nb.end()));
        EXPECT_FALSE(std::binary_search(nb.begin(), nb.end(), site));
        for (uint32_t other : nb) {
          const std::vector<uint32_t> back = Neighbours(params, other);
          EXPECT_TRUE(std::binary_search(back.begin(), back.end(), site));
        }
      }
    }
  }
  const Params complete = Complete(6, 3, 64, 1);
  EXPECT_EQ(Neighbours(complete, complete.sites[2]),
            (std::vector<uint32_t>{complete.sites[0], complete.sites[1], complete.sites[3],
                                   complete.sites[4], complete.sites[5]}));
  EXPECT_TRUE(Neighbours(complete, 1000).empty());
}

Policy MakePolicy(bool sparse, double fraction, ThreatModel threat = {}) {
  Policy policy;
  policy.graph = sparse ? Graph::kSparse : Graph::kComplete;
  policy.threshold_fraction = fraction;
  policy.threat = threat;
  return policy;
}

TEST(SecAgg, MakeParamsChoosesDegreeAndThreshold) {
  const crypto::Key32 job{};
  std::vector<uint32_t> sites(500);
  for (uint32_t i = 0; i < 500; ++i) sites[i] = i;
  const Policy sparse_policy = MakePolicy(true, 0.5);
  Result<Params> sparse = MakeParams(job, 3, sites, sparse_policy, 32, 100);
  ASSERT_TRUE(sparse.ok()) << sparse.status().ToString();
  EXPECT_EQ(sparse->degree, 28u);  // SparseGraphSize(500, 5% colluders, 5% dropouts)
  EXPECT_EQ(sparse->threshold, 16u);
  EXPECT_EQ(sparse->colluders, 25u);
  EXPECT_EQ(sparse->dropouts, 25u);
  EXPECT_TRUE(sparse->ring_seed.empty());  // drawn from the round keys
  EXPECT_EQ(Quorum(*sparse), 263u);        // more than (500 + 25) / 2
  EXPECT_TRUE(Validate(*sparse).ok());

  Result<Params> complete = MakeParams(job, 3, sites, MakePolicy(false, 0.6), 64, 100);
  ASSERT_TRUE(complete.ok());
  EXPECT_EQ(complete->degree, 499u);
  EXPECT_EQ(complete->threshold, 300u);  // ceil(0.6 * 500)
  EXPECT_TRUE(complete->ring_seed.empty());
  // Below half of the sites plus the colluders the threshold is raised.
  Result<Params> raised = MakeParams(job, 3, sites, MakePolicy(false, 0.2), 64, 100);
  ASSERT_TRUE(raised.ok());
  EXPECT_EQ(raised->threshold, 276u);  // 250 + 25 + 1

  // Small rounds: eight sites get a ring of degree 4; three get the complete
  // graph, whose threshold must exceed 1 + 1 colluder.
  Result<Params> eight =
      MakeParams(job, 1, {1, 2, 3, 4, 5, 6, 7, 8}, MakePolicy(true, 0.01), 64, 1);
  ASSERT_TRUE(eight.ok());
  EXPECT_EQ(eight->degree, 4u);
  EXPECT_EQ(eight->threshold, 2u);
  Result<Params> three = MakeParams(job, 1, {1, 2, 3}, MakePolicy(true, 0.5), 64, 1);
  ASSERT_TRUE(three.ok());
  EXPECT_EQ(three->degree, 2u);
  EXPECT_EQ(three->threshold, 3u);

  EXPECT_EQ(MakeParams(job, 1, {1, 2, 3}, MakePolicy(false, 1.5), 64, 1).status().code(),
            Code::kInvalidArgument);
  EXPECT_EQ(MakeParams(job, 1, {1, 2, 3}, MakePolicy(false, 0.0), 64, 1).status().code(),
            Code::kInvalidArgument);
  EXPECT_EQ(MakeParams(job, 1, {3, 2, 1}, Policy{}, 64, 1).status().code(), Code::kInvalidArgument);
  // Colluders no threshold can outnumber, and a threat model no graph
  // answers, are refused with the numbers.
  const Result<Params> outnumbered = MakeParams(
      job, 4, sites,
      MakePolicy(false, 0.6, ThreatModel{.adversarial_rate = 0.6, .dropout_rate = 0.05}), 64, 1);
  EXPECT_EQ(outnumbered.status().code(), Code::kInvalidArgument);
  EXPECT_NE(outnumbered.status().message().find("500 sites cannot outnumber the 300"),
            std::string::npos)
      << outnumbered.status().ToString();
  const Result<Params> infeasible = MakeParams(
      job, 4, sites, MakePolicy(true, 0.6, {.adversarial_rate = 0.5, .dropout_rate = 0.5}), 64, 1);
  EXPECT_EQ(infeasible.status().code(), Code::kInvalidArgument);
  EXPECT_NE(infeasible.status().message().find("secagg round 4: secagg+ threat model"),
            std::string::npos)
      << infeasible.status().ToString();
}

// P[X >= t] for X hypergeometric (`draws` of `population`, `marked` of them
// marked), by the exact recurrence of consecutive terms in long double: an
// independent check of the LogGamma-based sums in SparseGraphSize.
long double HypergeometricTail(uint32_t population, uint32_t marked, uint32_t draws, uint32_t t) {
  // p(0) = C(population - marked, draws) / C(population, draws)
  std::vector<long double> p(draws + 1, 0.0L);
  const uint32_t low = draws > population - marked ? draws - (population - marked) : 0;
  long double first = 1.0L;  // p(low), built as a product
  for (uint32_t i = 0; i < low; ++i)
    first *= static_cast<long double>(marked - i) / (population - i);
  for (uint32_t i = 0; i < draws - low; ++i)
    first *= static_cast<long double>(population - marked - i) / (population - low - i);
  for (uint32_t i = 0; i < low; ++i)  // the C(draws, low) orderings of the first `low`
    first *= static_cast<long double>(draws - i) / (i + 1);
  p[low] = first;
  for (uint32_t j = low; j < draws && j < marked; ++j) {
    p[j + 1] =
        p[j] * (marked - j) * (draws - j) / ((j + 1.0L) * (population - marked - draws + j + 1.0L));
  }
  long double tail = 0.0L;
  for (uint32_t j = t; j <= draws; ++j) tail += p[j];
  return tail;
}

TEST(SecAgg, SparseGraphSizeMeetsItsBoundsWithTheSmallestDegree) {
  // The degrees of the parameter search of Google's production SecAgg.
  EXPECT_EQ(*SparseGraphSize(100, {}), (GraphSize{12, 6}));
  EXPECT_EQ(*SparseGraphSize(100, {.adversarial_rate = 0.1, .dropout_rate = 0.1}),
            (GraphSize{22, 11}));
  EXPECT_EQ(*SparseGraphSize(1000, {}), (GraphSize{30, 17}));
  EXPECT_FALSE(SparseGraphSize(3, {})->has_value());
  // Four sites: one colluder and one dropout could cut any ring of degree 2.
  EXPECT_FALSE(SparseGraphSize(4, {})->has_value());
  EXPECT_FALSE(SparseGraphSize(100, {.adversarial_rate = 1.0}).ok());
  EXPECT_FALSE(SparseGraphSize(100, {.dropout_rate = -0.1}).ok());
  EXPECT_FALSE(SparseGraphSize(100, {.adversarial_rate = 0.5, .dropout_rate = 0.45}).ok());

  const long double per_site_security = std::ldexp(1.0L, -41);
  const long double per_site_failure = std::ldexp(1.0L, -20);
  for (uint32_t n : {10u, 40u, 100u, 300u, 1000u}) {
    for (double rate : {0.0, 0.05, 0.1, 0.2}) {
      const ThreatModel threat{.adversarial_rate = rate, .dropout_rate = 0.05};
      const std::optional<GraphSize> size = *SparseGraphSize(n, threat);
      const std::string where = "n " + std::to_string(n) + ", colluders " + std::to_string(rate);
      ASSERT_TRUE(size.has_value()) << where;
      const uint32_t colluders = static_cast<uint32_t>(std::ceil(rate * n - 1e-9));
      const uint32_t dropouts = static_cast<uint32_t>(std::ceil(0.05 * n - 1e-9));
      const uint32_t k = size->degree;
      const uint32_t t = size->threshold;
      EXPECT_EQ(k % 2, 0u) << where;
      EXPECT_GE(t, 2u) << where;
      EXPECT_LE(t, k) << where;
      // t colluding neighbours are unlikely; t - 1 would not be (t is smallest).
      EXPECT_LE(HypergeometricTail(n - 1, colluders, k, t), per_site_security / n) << where;
      if (t > 2) {
        EXPECT_GT(HypergeometricTail(n - 1, colluders, k, t - 1), per_site_security / n) << where;
      }
      // Fewer than t surviving neighbours are unlikely.
      const long double short_of_t = 1.0L - HypergeometricTail(n - 1, n - 1 - dropouts, k, t);
      EXPECT_LE(short_of_t, per_site_failure / n * (1.0L + 1e-9L)) << where;
      // And no smaller even degree qualifies: at k - 2 the best threshold is
      // either reachable by the colluders or missed by the survivors (or the
      // ring can be cut, which the search also rejects).
      if (k > 2) {
        const uint32_t smaller = k - 2;
        bool some_threshold = false;
        for (uint32_t u = 2; u <= smaller + 1; ++u) {
          if (HypergeometricTail(n - 1, colluders, smaller, u) <= per_site_security / n &&
              1.0L - HypergeometricTail(n - 1, n - 1 - dropouts, smaller, u) <=
                  per_site_failure / n) {
            some_threshold = true;
          }
        }
        const uint32_t bad = colluders + dropouts;
        bool cut = false;
        if (smaller <= bad) {
          const double log_cut = std::log(n) + std::log(n - smaller - 1.0) - std::log(2.0) +
                                 LogGamma(bad + 1.0) + LogGamma(n - smaller + 1.0) -
                                 LogGamma(n + 1.0) - LogGamma(bad - smaller + 1.0);
          cut = log_cut >= -41.0 * std::log(2.0);
        }
        EXPECT_TRUE(!some_threshold || cut) << where << ": degree " << smaller << " would do";
      }
    }
  }
}

// --- The mask generator ---

// Runs `body` on the VAES mask path (where the CPU has it) and on the
// portable one, with the path's name; leaves acceleration on.
void ForEachMaskPath(const std::function<void(const char* path)>& body) {
  for (bool use_fast : {true, false}) {
    SetPrgAcceleration(use_fast);
    body(use_fast ? "vaes" : "portable");
  }
  SetPrgAcceleration(true);
}

std::vector<uint8_t> RandomBytes(std::mt19937_64& rng, size_t count) {
  std::vector<uint8_t> bytes(count);
  for (uint8_t& b : bytes) b = static_cast<uint8_t>(rng());
  return bytes;
}

// `count` masks with random keys, every second one subtracted.
std::vector<SignedPrgKey> RandomMasks(std::mt19937_64& rng, size_t count) {
  std::vector<SignedPrgKey> masks(count);
  for (size_t m = 0; m < count; ++m) {
    for (uint8_t& b : masks[m].key) b = static_cast<uint8_t>(rng());
    masks[m].subtract = m % 2 == 1;
  }
  return masks;
}

TEST(SecAggPrg, AddsTheAesCtrKeystreamWords) {
  std::mt19937_64 rng(9);
  const bool accelerated = PrgAccelerated();
  for (size_t length : {1ul, 3ul, 15ul, 16ul, 17ul, 127ul, 128ul, 129ul, 1000ul, 5000ul}) {
    PrgKey key;
    for (uint8_t& b : key) b = static_cast<uint8_t>(rng());
    std::vector<uint8_t> stream(length * 8);
    crypto::Keystream(std::span<const uint8_t, 16>(key)).Generate(stream);
    for (bool use_fast : {true, false}) {
      SetPrgAcceleration(use_fast);
      std::vector<uint32_t> w32(length);
      std::vector<uint64_t> w64(length);
      for (size_t i = 0; i < length; ++i) w32[i] = static_cast<uint32_t>(w64[i] = rng());
      const std::vector<uint32_t> start32 = w32;
      const std::vector<uint64_t> start64 = w64;
      AddPrg(key, false, w32);
      AddPrg(key, false, w64);
      for (size_t i = 0; i < length; ++i) {
        uint32_t k32;
        uint64_t k64;
        std::memcpy(&k32, stream.data() + 4 * i, 4);
        std::memcpy(&k64, stream.data() + 8 * i, 8);
        ASSERT_EQ(w32[i], static_cast<uint32_t>(start32[i] + k32)) << length << " " << i;
        ASSERT_EQ(w64[i], start64[i] + k64) << length << " " << i;
      }
      AddPrg(key, true, w32);
      AddPrg(key, true, w64);
      EXPECT_EQ(w32, start32);
      EXPECT_EQ(w64, start64);
    }
  }
  SetPrgAcceleration(true);
  EXPECT_EQ(PrgAccelerated(), accelerated);
  std::printf("VAES mask generator: %s\n", accelerated ? "in use" : "not available");
}

TEST(SecAggPrg, ManyMasksInOnePassEqualTheKeystreamSumAcrossPieces) {
  // 9,000 words cross several 8 KiB pieces in both rings, with a ragged tail.
  std::mt19937_64 rng(11);
  const size_t length = 9000 + 7;
  std::vector<SignedPrgKey> masks(6);
  std::vector<std::vector<uint8_t>> streams;
  for (size_t m = 0; m < masks.size(); ++m) {
    for (uint8_t& b : masks[m].key) b = static_cast<uint8_t>(rng());
    masks[m].subtract = m % 3 == 1;
    std::vector<uint8_t>& stream = streams.emplace_back(length * 8);
    crypto::Keystream(std::span<const uint8_t, 16>(masks[m].key)).Generate(stream);
  }
  std::vector<uint32_t> start32(length);
  std::vector<uint64_t> start64(length);
  for (size_t i = 0; i < length; ++i) start32[i] = static_cast<uint32_t>(start64[i] = rng());
  std::vector<uint32_t> want32 = start32;
  std::vector<uint64_t> want64 = start64;
  for (size_t m = 0; m < masks.size(); ++m) {
    for (size_t i = 0; i < length; ++i) {
      uint32_t k32;
      uint64_t k64;
      std::memcpy(&k32, streams[m].data() + 4 * i, 4);
      std::memcpy(&k64, streams[m].data() + 8 * i, 8);
      want32[i] = masks[m].subtract ? want32[i] - k32 : want32[i] + k32;
      want64[i] = masks[m].subtract ? want64[i] - k64 : want64[i] + k64;
    }
  }
  ForEachMaskPath([&](const char* path) {
    std::vector<uint32_t> w32 = start32;
    std::vector<uint64_t> w64 = start64;
    AddPrgs(masks, w32);
    AddPrgs(masks, w64);
    EXPECT_EQ(w32, want32) << path;
    EXPECT_EQ(w64, want64) << path;
  });
}

TEST(SecAggPrg, SplitOverThreadsEqualsOnePass) {
  // 9,007 elements: five 8 KiB pieces in ring 32, nine in ring 64, ragged tails.
  std::mt19937_64 rng(12);
  const std::vector<SignedPrgKey> masks = RandomMasks(rng, 4);
  for (uint32_t ring_bits : {32u, 64u}) {
    const std::vector<uint8_t> start = RandomBytes(rng, 9007 * ring_bits / 8);
    ForEachMaskPath([&](const char* path) {
      std::vector<uint8_t> one = start;
      MaskInPlace(one, ring_bits, masks, 1);
      EXPECT_NE(one, start);
      for (unsigned threads : {2u, 3u, 16u}) {
        std::vector<uint8_t> split = start;
        MaskInPlace(split, ring_bits, masks, threads);
        EXPECT_EQ(split, one) << "ring " << ring_bits << ", " << threads << " threads, " << path;
      }
    });
  }
}

TEST(SecAggPrg, WritingEachPieceBeforeMaskingEqualsMaskingTheWrittenVector) {
  std::mt19937_64 rng(13);
  const std::vector<SignedPrgKey> masks = RandomMasks(rng, 3);
  for (uint32_t ring_bits : {32u, 64u}) {
    const std::vector<uint8_t> input = RandomBytes(rng, 9007 * ring_bits / 8);
    const size_t width = ring_bits / 8;
    ForEachMaskPath([&](const char* path) {
      std::vector<uint8_t> want = input;
      MaskInPlace(want, ring_bits, masks, 1);
      for (unsigned threads : {1u, 3u}) {
        for (size_t mask_count : {masks.size(), size_t{0}}) {
          std::vector<uint8_t> got(input.size(), 0xAA);  // garbage until written
          std::atomic<size_t> written{0};
          MaskInPlace(got, ring_bits, std::span(masks).first(mask_count), threads,
                      [&](size_t begin, size_t end, uint8_t* out) {
                        ASSERT_LE(end, input.size() / width);
                        std::memcpy(out, input.data() + begin * width, (end - begin) * width);
                        written += end - begin;
                      });
          EXPECT_EQ(written, input.size() / width);
          EXPECT_EQ(got, mask_count == 0 ? input : want)
              << "ring " << ring_bits << ", " << threads << " threads, " << mask_count << " masks, "
              << path;
        }
      }
    });
  }
}

TEST(SecAggPrg, MaskVectorMatchesOnBothPaths) {
  std::mt19937_64 rng(10);
  std::vector<uint64_t> input(777);
  for (uint64_t& x : input) x = rng();
  const std::vector<SignedPrgKey> masks = RandomMasks(rng, 5);
  for (uint32_t ring_bits : {32u, 64u}) {
    SetPrgAcceleration(false);
    const std::vector<uint8_t> portable = MaskVector(input, ring_bits, masks);
    SetPrgAcceleration(true);
    const std::vector<uint8_t> fast = MaskVector(input, ring_bits, masks);
    EXPECT_EQ(portable.size(), input.size() * ring_bits / 8);
    EXPECT_EQ(portable, fast);
  }
}

// ---------------------------------------------------------------------------
// An actively malicious coordinator. Each test drives honest clients (with
// their roster and the job's policy) through the protocol, deviating where
// the attack needs it; every honest site must refuse with an error naming the
// check, and what the coordinator then holds must not reveal the target's
// input.

namespace adversary {

constexpr uint32_t kSites = 10;

Policy JobPolicy() {
  Policy policy;
  policy.graph = Graph::kComplete;  // auto would take a ring of degree 4 for 10 sites
  policy.threshold_fraction = 0.5;  // raised to floor(10 / 2) + 1 colluder + 1 = 7
  return policy;
}

Params JobParams(uint8_t job_byte = 1) {
  crypto::Key32 job{};
  job.fill(job_byte);
  Result<Params> params = MakeParams(job, 7, SiteIds(kSites), JobPolicy(), 64, 16);
  EXPECT_TRUE(params.ok()) << params.status().ToString();
  return *params;
}

// The shares of `target`'s two secrets a coordinator collected.
struct Loot {
  std::vector<uint32_t> seed_holders, key_holders;
};

void Collect(const SecAggUnmaskShares& shares, uint32_t target, Loot* loot) {
  for (const RevealedShare& r : shares.self_mask_shares)
    if (r.site == target) loot->seed_holders.push_back(shares.site);
  for (const RevealedShare& r : shares.mask_key_shares)
    if (r.site == target) loot->key_holders.push_back(shares.site);
}

}  // namespace adversary

TEST(SecAggAdversary, InconsistentSurvivorListsRevealNeitherSecretOfTheTarget) {
  using namespace adversary;
  const Params params = JobParams();
  ASSERT_EQ(params.threshold, 7u);
  ASSERT_EQ(params.colluders, 1u);
  Driver driver(params, 1, true, 1, JobPolicy());
  ASSERT_TRUE(driver.Advertise().ok());
  ASSERT_TRUE(driver.Share().ok());
  ASSERT_TRUE(driver.Mask().ok());
  const uint32_t target = params.sites[0];
  const uint32_t colluder = params.sites[9];  // hands over whatever it holds
  // List A: the target survived (holders reveal its self-mask seed); list B:
  // it dropped (holders reveal its mask key). Each honest site sees one.
  const SecAggUnmaskRequest with_target = driver.server().SurvivorList();
  SecAggUnmaskRequest without_target = with_target;
  without_target.survivors.erase(without_target.survivors.begin());
  std::vector<SurvivorSignature> signed_a, signed_b;
  for (uint32_t site : params.sites) {
    if (site == colluder) continue;
    const bool a = driver.Pos(site) < 5;
    Result<SecAggSurvivorSignature> signature =
        driver.client(site).SignSurvivors(a ? with_target : without_target);
    ASSERT_TRUE(signature.ok()) << signature.status().ToString();
    (a ? signed_a : signed_b).push_back({site, signature->signature});
  }
  // The colluder signs both lists with its identity key.
  for (auto [list, sigs] : {std::pair{&with_target, &signed_a}, {&without_target, &signed_b}}) {
    sigs->push_back(
        {colluder, *crypto::Sign(driver.identity(colluder),
                                 SurvivorsSignedMessage(params.job_id, params.round,
                                                        driver.KeyRoot(), list->survivors))});
  }
  ASSERT_EQ(signed_a.size(), 6u);  // below the quorum of 7 either way
  ASSERT_EQ(signed_b.size(), 5u);

  Loot loot;
  for (uint32_t site : params.sites) {
    if (site == colluder) continue;
    const bool a = driver.Pos(site) < 5;
    SecAggUnmaskRequest request = a ? with_target : without_target;
    request.unmask = true;
    request.signatures = a ? signed_a : signed_b;
    Result<SecAggUnmaskShares> shares = driver.client(site).Unmask(request);
    if (shares.ok()) Collect(*shares, target, &loot);
    ExpectError(shares.status(), Code::kInvalidArgument,
                {"site " + Str(site), "consistency check", "valid signatures on the survivor list",
                 "expected at least 7"});
  }
  // Nor does the other list fool a site that signed the first.
  SecAggUnmaskRequest swapped = without_target;
  swapped.unmask = true;
  swapped.signatures = signed_b;
  Driver fresh(params, 2, true, 1, JobPolicy());
  ASSERT_TRUE(fresh.Advertise().ok());
  ASSERT_TRUE(fresh.Share().ok());
  ASSERT_TRUE(fresh.Mask().ok());
  ASSERT_TRUE(fresh.client(params.sites[1]).SignSurvivors(with_target).ok());
  ExpectError(fresh.client(params.sites[1]).Unmask(swapped).status(), Code::kInvalidArgument,
              {"consistency check", "not the list", "this site signed"});

  // All the coordinator holds of the target: the colluder's two shares.
  loot.seed_holders.push_back(colluder);
  loot.key_holders.push_back(colluder);
  EXPECT_LT(loot.seed_holders.size(), params.threshold);
  EXPECT_LT(loot.key_holders.size(), params.threshold);
}

TEST(SecAggAdversary, ConsistentListLetsTheRoundFinishWithOnlyOneKindOfShare) {
  using namespace adversary;
  const Params params = JobParams();
  Driver driver(params, 3, true, 1, JobPolicy());
  const uint32_t target = params.sites[4];
  driver.SetDrop(target, kAfterShares);  // honestly dropped
  const Driver::Outcome outcome = driver.Run();
  ASSERT_EQ(outcome.aborted_at, 0) << outcome.status.ToString();
  EXPECT_EQ(outcome.sum, driver.PlainSum());
  // Replaying the finished round's unmask request with the target listed as
  // a survivor is refused by every site: the round is over for them.
  SecAggUnmaskRequest replay = driver.server().UnmaskRequest();
  replay.survivors.insert(replay.survivors.begin() + 4, target);
  for (uint32_t site : driver.server().signers()) {
    EXPECT_FALSE(driver.client(site).Unmask(replay).ok());
  }
}

TEST(SecAggAdversary, SitesRefuseALoweredThresholdOrAChosenGraph) {
  using namespace adversary;
  const Params honest = JobParams();
  const auto refused = [&](Params plan, std::initializer_list<std::string_view> parts) {
    Client client(plan, plan.sites[0], *crypto::GenerateSigningKey(), {}, JobPolicy());
    ExpectError(client.AdvertiseKeys().status(), Code::kAborted, parts);
  };
  Params lowered = honest;
  lowered.threshold = 3;
  refused(lowered, {"threshold 3 differs from the 7 this site derives", "refusing the round"});
  Params fewer_colluders = honest;
  fewer_colluders.colluders = 0;
  refused(fewer_colluders, {"colluders 0 differs from the 1"});
  Params sparse = honest;
  sparse.degree = 8;
  refused(sparse, {"degree 8 differs from the 9"});
  Policy sparse_policy = JobPolicy();
  sparse_policy.graph = Graph::kSparse;
  std::vector<uint32_t> sites(100);
  for (uint32_t i = 0; i < 100; ++i) sites[i] = i;
  Result<Params> plus = MakeParams(honest.job_id, 7, sites, sparse_policy, 64, 4);
  ASSERT_TRUE(plus.ok());
  Params chosen_ring = *plus;
  chosen_ring.ring_seed.assign(32, 7);  // the coordinator's own neighbourhoods
  Client client(chosen_ring, 0, *crypto::GenerateSigningKey(), {}, sparse_policy);
  ExpectError(client.AdvertiseKeys().status(), Code::kAborted,
              {"a ring seed of 32 bytes, expected none"});
}

TEST(SecAggAdversary, SecAggPlusRingIsDrawnFromTheRoundKeysAlike) {
  std::mt19937_64 rng(21);
  Params params = Sparse(30, 6, 4, 64, 8, rng);
  Driver driver(params);
  const Driver::Outcome outcome = driver.Run();
  ASSERT_EQ(outcome.aborted_at, 0) << outcome.status.ToString();
  EXPECT_EQ(outcome.sum, driver.PlainSum());
  const Params& fixed = driver.server().params();
  ASSERT_EQ(fixed.ring_seed.size(), 32u);
  // Any change to one advertised key gives another root, and another ring.
  std::vector<SecAggKeys> keys;
  for (uint32_t site : params.sites) keys.push_back(driver.advertised(site));
  EXPECT_EQ(RingSeed(params, 30, KeyListRoot(keys)), fixed.ring_seed);
  keys[3].mask_key[0] ^= 1;
  EXPECT_NE(RingSeed(params, 30, KeyListRoot(keys)), fixed.ring_seed);
  // So does a list with one site fewer (what leaving it out would change).
  keys.pop_back();
  EXPECT_NE(RingSeed(params, 29, KeyListRoot(keys)), fixed.ring_seed);
  // A coordinator leaving out more sites than the threat model's dropouts
  // gets no ring at all.
  Driver thin(params);
  for (uint32_t i = 0; i <= params.dropouts; ++i) thin.SetDrop(params.sites[i], kBeforeKeys);
  ExpectError(thin.Advertise(), Code::kAborted, {"the threat model's dropouts leave"});
}

TEST(SecAggAdversary, KeysAndSharesOfAnotherJobOrRoundAreRefused) {
  using namespace adversary;
  const Params job_a = JobParams(1);
  const Params job_b = JobParams(2);
  Driver a(job_a, 4, true, 1, JobPolicy());
  Driver b(job_b, 5, true, 1, JobPolicy());
  ASSERT_TRUE(a.Advertise().ok());
  ASSERT_TRUE(b.Advertise().ok());
  // Site 3's round keys from job A replayed into job B, under the right
  // identity (b's roster is b's; give site 3 of b the same identity key by
  // re-signing job A's message with b's key): the signature binds job A.
  const uint32_t site = job_b.sites[0];
  SecAggKeyList list = *b.server().KeyListFor(site);
  SecAggKeys replayed = a.advertised(job_a.sites[3]);
  replayed.identity_key = b.identity(job_b.sites[3]).public_key;
  replayed.signature = *crypto::Sign(b.identity(job_b.sites[3]),
                                     KeysSignedMessage(job_a.job_id, replayed.round, replayed.site,
                                                       replayed.cipher_key, replayed.mask_key));
  list.keys[3] = replayed;
  ExpectError(
      b.client(site).ShareKeys(list).status(), Code::kInvalidArgument,
      {"keys of site " + Str(job_b.sites[3]), "bad signature", "from another job or round"});
  // Shares sealed in job A do not open in job B.
  ASSERT_TRUE(a.Share().ok());
  ASSERT_TRUE(b.Share().ok());
  const uint32_t holder = job_b.sites[1];
  SecAggRoutedShares routed = *b.server().SharesFor(holder);
  SecAggRoutedShares foreign = *a.server().SharesFor(holder);
  routed.shares[0] = foreign.shares[0];
  ExpectError(b.client(holder).MaskInput(b.input(holder), routed).status(), Code::kCorruption,
              {"does not authenticate"});
}

TEST(SecAggAdversary, BadSelfMaskSeedShareIsDetectedAndItsHolderNamed) {
  Driver driver(Complete(8, 4, 64, 8));
  ASSERT_TRUE(driver.Advertise().ok());
  ASSERT_TRUE(driver.Share().ok());
  ASSERT_TRUE(driver.Mask().ok());
  ASSERT_TRUE(driver.Sign().ok());
  const SecAggUnmaskRequest request = driver.server().UnmaskRequest();
  const uint32_t liar = request.survivors[1];
  for (uint32_t site : request.survivors) {
    SecAggUnmaskShares shares = *driver.client(site).Unmask(request);
    if (site == liar) shares.self_mask_shares[0].share[0] ^= 1;  // still a field element
    ASSERT_TRUE(driver.server().AddUnmaskShares(site, shares).ok());
  }
  ExpectError(driver.server().Finish().status(), Code::kCorruption,
              {"revealed share of site " + Str(liar), "inconsistent"});
}

// --- The graph by size (security.graph) ---

TEST(SecAgg, AutoGraphIsTheSparseOneOnlyWhenItHalvesTheDegree) {
  const crypto::Key32 job{};
  const auto sites = [](uint32_t n) {
    std::vector<uint32_t> out(n);
    for (uint32_t i = 0; i < n; ++i) out[i] = i;
    return out;
  };
  Policy automatic;
  ASSERT_EQ(automatic.graph, Graph::kAuto);  // the default
  // Eight sites: the SecAgg+ ring would have degree 4 of 7, more than half.
  Result<Params> small = MakeParams(job, 1, sites(8), automatic, 64, 1);
  ASSERT_TRUE(small.ok()) << small.status().ToString();
  EXPECT_FALSE(IsSparse(*small));
  EXPECT_EQ(small->degree, 7u);
  // 500 and 10,000 sites: the ring, 28 and 34 neighbours.
  Result<Params> large = MakeParams(job, 1, sites(500), automatic, 64, 1);
  ASSERT_TRUE(large.ok());
  EXPECT_TRUE(IsSparse(*large));
  EXPECT_EQ(large->degree, 28u);
  Result<Params> huge = MakeParams(job, 1, sites(10000), automatic, 32, 1);
  ASSERT_TRUE(huge.ok());
  EXPECT_EQ(huge->degree, 34u);
  EXPECT_EQ(huge->threshold, 20u);
  // An explicit setting wins either way.
  Policy complete;
  complete.graph = Graph::kComplete;
  Result<Params> forced_complete = MakeParams(job, 1, sites(500), complete, 64, 1);
  ASSERT_TRUE(forced_complete.ok());
  EXPECT_EQ(forced_complete->degree, 499u);
  Policy sparse;
  sparse.graph = Graph::kSparse;
  Result<Params> forced_sparse = MakeParams(job, 1, sites(8), sparse, 64, 1);
  ASSERT_TRUE(forced_sparse.ok());
  EXPECT_EQ(forced_sparse->degree, 4u);
  // A threat model no ring meets: auto falls back, sparse fails.
  Policy heavy = automatic;
  heavy.threat = {0.3, 0.65};  // beyond the 0.9 SecAgg+ is sized for
  Result<Params> fallback = MakeParams(job, 1, sites(100), heavy, 64, 1);
  ASSERT_TRUE(fallback.ok()) << fallback.status().ToString();
  EXPECT_FALSE(IsSparse(*fallback));
  heavy.graph = Graph::kSparse;
  EXPECT_EQ(MakeParams(job, 1, sites(100), heavy, 64, 1).status().code(), Code::kInvalidArgument);
}

TEST(SecAgg, SitesRefuseAPlanWithTheOtherGraph) {
  const crypto::Key32 job{};
  std::vector<uint32_t> sites(500);
  for (uint32_t i = 0; i < 500; ++i) sites[i] = i;
  Policy automatic, complete;
  complete.graph = Graph::kComplete;
  const Params ring = *MakeParams(job, 1, sites, automatic, 64, 1);
  const Params full = *MakeParams(job, 1, sites, complete, 64, 1);
  ExpectError(CheckParams(full, automatic), Code::kInvalidArgument,
              {"differs from the", "graph auto"});
  ExpectError(CheckParams(ring, complete), Code::kInvalidArgument,
              {"differs from the", "graph complete"});
  EXPECT_TRUE(CheckParams(ring, automatic).ok());
  EXPECT_TRUE(CheckParams(full, complete).ok());
}

// --- SecAgg+ key lists: the Merkle commitment to U1 ---

TEST(SecAgg, MerkleProofsVerifyOnlyAtTheirLeaf) {
  std::vector<SecAggKeys> keys(13);
  for (uint32_t i = 0; i < keys.size(); ++i) {
    keys[i].site = 2 * i;
    keys[i].mask_key[0] = static_cast<uint8_t>(i);
  }
  for (size_t leaves = 1; leaves <= keys.size(); ++leaves) {
    const std::span<const SecAggKeys> list(keys.data(), leaves);
    const crypto::Key32 root = KeyListRoot(list);
    for (size_t i = 0; i < leaves; ++i) {
      const MerkleProof proof = KeyListProof(list, i);
      EXPECT_TRUE(VerifyKeyProof(keys[i], i, leaves, proof, root)) << leaves << " " << i;
      EXPECT_FALSE(VerifyKeyProof(keys[i], i ^ 1, leaves, proof, root));
      EXPECT_FALSE(VerifyKeyProof(keys[i], i, leaves + 1, proof, root));
      EXPECT_FALSE(VerifyKeyProof(keys[i], leaves, leaves, proof, root));
      MerkleProof longer = proof;
      longer.siblings.emplace_back();
      EXPECT_FALSE(VerifyKeyProof(keys[i], i, leaves, longer, root));
      SecAggKeys other = keys[i];
      other.signature[0] ^= 1;
      EXPECT_FALSE(VerifyKeyProof(other, i, leaves, proof, root));
    }
  }
}

TEST(SecAgg, SparseKeyListHoldsOnlyTheNeighbourhood) {
  std::mt19937_64 rng(5);
  const Params params = Sparse(40, 6, 4, 64, 4, rng);
  Driver driver(params);
  driver.SetDrop(params.sites[7], kBeforeKeys);
  ASSERT_TRUE(driver.Advertise().ok());
  const Params& fixed = driver.server().params();
  for (uint32_t site : driver.server().advertised()) {
    const SecAggKeyList list = *driver.server().KeyListFor(site);
    EXPECT_EQ(list.members.size(), 5u);  // 40 bits
    EXPECT_LE(list.keys.size(), 7u);     // itself and at most 6 neighbours
    EXPECT_EQ(list.proofs.size(), list.keys.size());
    EXPECT_EQ(list.root, driver.KeyRoot());
    for (const SecAggKeys& entry : list.keys) {
      if (entry.site == site) continue;
      const std::vector<uint32_t> nb = Neighbours(fixed, site);
      EXPECT_TRUE(std::binary_search(nb.begin(), nb.end(), entry.site));
    }
  }
  const Driver::Outcome outcome = [&] {
    Driver::Outcome o;
    if (Status s = driver.Share(); !s.ok()) o.status = s;
    return o;
  }();
  EXPECT_TRUE(outcome.status.ok()) << outcome.status.ToString();
  EXPECT_TRUE(driver.refused().empty());
}

TEST(SecAggAdversary, SparseKeyListsWithBadProofsOrMembershipAreRefused) {
  std::mt19937_64 rng(9);
  const Params params = Sparse(30, 6, 4, 64, 4, rng);  // 7 dropouts allowed
  // A fresh round per attempt: a rejection ends a client's round.
  uint64_t seed = 100;
  const auto attempt = [&](const std::function<void(SecAggKeyList&, Driver&, uint32_t)>& alter,
                           Code code, std::initializer_list<std::string_view> parts) {
    Driver driver(params, ++seed);
    driver.SetDrop(params.sites[29], kBeforeKeys);  // one unmarked position
    ASSERT_TRUE(driver.Advertise().ok());
    const uint32_t site = params.sites[3];
    SecAggKeyList list = *driver.server().KeyListFor(site);
    ASSERT_GE(list.keys.size(), 4u);
    alter(list, driver, site);
    ExpectError(driver.client(site).ShareKeys(list).status(), code, parts);
  };
  // The index of the first entry that is not the site's own.
  const auto neighbour = [](const SecAggKeyList& list, uint32_t site) {
    return list.keys[0].site == site ? size_t{1} : size_t{0};
  };
  {  // A neighbour's entry whose proof does not lead to the root.
    attempt([&](SecAggKeyList& list, Driver&,
                uint32_t site) { list.proofs[neighbour(list, site)].siblings[0][0] ^= 1; },
            Code::kCorruption, {"not in the key list's Merkle root", "bad inclusion proof"});
  }
  {  // A neighbour's keys substituted (validly signed: no roster would help
     // without the commitment), its proof kept.
    attempt(
        [&](SecAggKeyList& list, Driver& driver, uint32_t site) {
          SecAggKeys& entry = list.keys[neighbour(list, site)];
          entry.mask_key[1] ^= 4;
          entry.signature = *crypto::Sign(driver.identity(entry.site),
                                          KeysSignedMessage(params.job_id, entry.round, entry.site,
                                                            entry.cipher_key, entry.mask_key));
        },
        Code::kCorruption, {"not in the key list's Merkle root"});
  }
  {  // Proofs at the wrong leaf index: two neighbours' proofs swapped.
    attempt(
        [&](SecAggKeyList& list, Driver&, uint32_t site) {
          const size_t a = neighbour(list, site);
          const size_t b = list.keys[a + 1].site == site ? a + 2 : a + 1;
          std::swap(list.proofs[a], list.proofs[b]);
        },
        Code::kCorruption, {"at leaf"});
  }
  {  // An entry omitted while the bitmap marks it present.
    attempt(
        [&](SecAggKeyList& list, Driver&, uint32_t site) {
          const size_t i = neighbour(list, site);
          list.keys.erase(list.keys.begin() + static_cast<std::ptrdiff_t>(i));
          list.proofs.erase(list.proofs.begin() + static_cast<std::ptrdiff_t>(i));
        },
        Code::kInvalidArgument, {"membership bitmap marks neighbour site", "omits its keys"});
  }
  {  // A bitmap below n - dropouts.
    attempt(
        [&](SecAggKeyList& list, Driver&, uint32_t) {
          for (uint32_t pos = 10; pos < 17; ++pos) list.members[pos / 8] &= ~(1u << (pos % 8));
        },
        Code::kAborted, {"22 of 30 participants", "the threat model's dropouts leave"});
  }
  {  // The bitmap leaves this site out.
    attempt([&](SecAggKeyList& list, Driver&, uint32_t) { list.members[0] &= ~(1u << 3); },
            Code::kInvalidArgument, {"leaves out this site"});
  }
  {  // This site's own entry altered.
    attempt(
        [&](SecAggKeyList& list, Driver&, uint32_t site) {
          for (SecAggKeys& entry : list.keys)
            if (entry.site == site) entry.cipher_key[0] ^= 1;
        },
        Code::kInvalidArgument, {"differ from the ones it advertised"});
  }
  {  // A bitmap of the wrong size, and proofs missing.
    attempt([&](SecAggKeyList& list, Driver&, uint32_t) { list.members.pop_back(); },
            Code::kInvalidArgument, {"membership bitmap of 3 bytes, expected 4"});
    attempt([&](SecAggKeyList& list, Driver&, uint32_t) { list.proofs.pop_back(); },
            Code::kInvalidArgument, {"Merkle proofs, expected one each"});
  }
  {  // The complete graph's list (every key, no commitment).
    attempt(
        [&](SecAggKeyList& list, Driver&, uint32_t) {
          list.members.clear();
          list.proofs.clear();
        },
        Code::kInvalidArgument, {"membership bitmap of 0 bytes"});
  }
}

TEST(SecAggAdversary, SitesShownDifferentKeyListRootsCannotBothReveal) {
  std::mt19937_64 rng(13);
  const Params params = Sparse(30, 6, 4, 64, 4, rng);
  ASSERT_EQ(Quorum(params), 16u);
  Driver driver(params);  // every site holds the roster
  ASSERT_TRUE(driver.Advertise().ok());
  ASSERT_TRUE(driver.Share().ok());
  ASSERT_TRUE(driver.Mask().ok());
  const SecAggUnmaskRequest list = driver.server().SurvivorList();
  ASSERT_EQ(list.survivors.size(), 30u);
  // Half the sites signed after seeing the genuine root; the coordinator
  // showed the other half another root (another U1), so theirs bind that.
  crypto::Key32 other_root = driver.KeyRoot();
  other_root[0] ^= 1;
  std::vector<SurvivorSignature> genuine, other;
  for (uint32_t site : list.survivors) {
    if (driver.Pos(site) < 15) {
      Result<SecAggSurvivorSignature> signature = driver.client(site).SignSurvivors(list);
      ASSERT_TRUE(signature.ok()) << signature.status().ToString();
      genuine.push_back({site, signature->signature});
    } else {
      other.push_back({site, *crypto::Sign(driver.identity(site),
                                           SurvivorsSignedMessage(params.job_id, params.round,
                                                                  other_root, list.survivors))});
    }
  }
  // Either group alone is below the quorum; together they do not verify
  // under one root.
  SecAggUnmaskRequest request = list;
  request.unmask = true;
  request.signatures = genuine;
  ExpectError(driver.client(list.survivors[0]).Unmask(request).status(), Code::kInvalidArgument,
              {"15 valid signatures", "expected at least 16"});
  request.signatures.insert(request.signatures.end(), other.begin(), other.end());
  ExpectError(
      driver.client(list.survivors[1]).Unmask(request).status(), Code::kInvalidArgument,
      {"signature of site " + Str(other[0].site), "does not verify", "another list, key list"});
}

TEST(SecAgg, WithoutARosterUnmaskingNeedsNoSignatures) {
  std::mt19937_64 rng(17);
  Driver driver(Sparse(30, 6, 4, 32, 16, rng), 3, /*with_roster=*/false);
  driver.SetDrop(driver.params().sites[5], kAfterShares);
  ASSERT_TRUE(driver.Advertise().ok());
  ASSERT_TRUE(driver.Share().ok());
  ASSERT_TRUE(driver.Mask().ok());
  ASSERT_TRUE(driver.Sign().ok());
  const SecAggUnmaskRequest request = driver.server().UnmaskRequest(/*with_signatures=*/false);
  EXPECT_TRUE(request.unmask);
  EXPECT_TRUE(request.signatures.empty());
  for (uint32_t site : driver.server().signers()) {
    Result<SecAggUnmaskShares> shares = driver.client(site).Unmask(request);
    ASSERT_TRUE(shares.ok()) << shares.status().ToString();
    ASSERT_TRUE(driver.server().AddUnmaskShares(site, *shares).ok());
  }
  Result<std::vector<uint64_t>> sum = driver.server().Finish();
  ASSERT_TRUE(sum.ok()) << sum.status().ToString();
  EXPECT_EQ(*sum, driver.PlainSum());
}

TEST(SecAgg, RingNeighboursAtTenThousandSitesAreSymmetric) {
  std::vector<uint32_t> sites(10000);
  for (uint32_t i = 0; i < sites.size(); ++i) sites[i] = 5 * i + 1;
  Result<Params> made = MakeParams(crypto::Key32{}, 1, sites, Policy{}, 32, 1);
  ASSERT_TRUE(made.ok());
  Params params = *made;
  params.ring_seed.assign(32, 0x5a);
  std::set<uint32_t> seen;
  for (uint32_t i = 0; i < 200; ++i) {
    const uint32_t site = sites[(i * 7919) % sites.size()];
    const std::vector<uint32_t> nb = Neighbours(params, site);
    ASSERT_EQ(nb.size(), 34u);
    for (uint32_t other : nb) {
      const std::vector<uint32_t> back = Neighbours(params, other);
      EXPECT_TRUE(std::binary_search(back.begin(), back.end(), site));
    }
    seen.insert(nb.begin(), nb.end());
  }
  EXPECT_GT(seen.size(), 5000u);  // spread over the ring, not clustered by id
}

}  // namespace
}  // namespace fedrec::secagg
