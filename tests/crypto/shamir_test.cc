#include "crypto/shamir.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "crypto/crypto.h"

namespace fedrec::shamir {
namespace {

Secret RandomSecret() {
  Secret secret;
  EXPECT_TRUE(crypto::RandomBytes(secret).ok());
  return secret;
}

// The shares held by the holders at indices `chosen` of `xs`.
Result<Secret> ReconstructFrom(const std::vector<uint32_t>& xs,
                               const std::vector<ShareValue>& shares,
                               const std::vector<size_t>& chosen) {
  std::vector<uint32_t> sub_xs;
  std::vector<ShareValue> sub_ys;
  for (size_t i : chosen) {
    sub_xs.push_back(xs[i]);
    sub_ys.push_back(shares[i]);
  }
  FEDREC_ASSIGN_OR_RETURN(Interpolator interpolator, Interpolator::Create(sub_xs));
  return interpolator.Reconstruct(sub_ys);
}

TEST(Shamir, FieldArithmeticMatchesWideIntegers) {
  std::mt19937_64 rng(7);
  for (int i = 0; i < 10000; ++i) {
    const uint64_t a = rng() % kPrime, b = rng() % kPrime;
    const unsigned __int128 product = static_cast<unsigned __int128>(a) * b;
    EXPECT_EQ(FieldMul(a, b), static_cast<uint64_t>(product % kPrime));
    EXPECT_EQ(FieldAdd(a, b), (a + b) % kPrime);
    EXPECT_EQ(FieldSub(a, b), (a + kPrime - b) % kPrime);
    if (a != 0) {
      EXPECT_EQ(FieldMul(a, FieldInverse(a)), 1u);
    }
  }
  EXPECT_EQ(FieldMul(kPrime - 1, kPrime - 1), 1u);  // (-1)^2
}

TEST(Shamir, AnyThresholdSubsetReconstructs) {
  const std::vector<uint32_t> xs = {3, 1, 9, 4, 12, 7, 100000};
  const uint32_t t = 4;
  const Secret secret = RandomSecret();
  Result<std::vector<ShareValue>> shares = Split(secret, t, xs);
  ASSERT_TRUE(shares.ok()) << shares.status().ToString();
  ASSERT_EQ(shares->size(), xs.size());
  int subsets = 0;
  for (uint32_t mask = 0; mask < (1u << xs.size()); ++mask) {
    std::vector<size_t> chosen;
    for (size_t i = 0; i < xs.size(); ++i)
      if (mask >> i & 1) chosen.push_back(i);
    if (chosen.size() < t) continue;
    Result<Secret> got = ReconstructFrom(xs, *shares, chosen);  // t or more shares
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_EQ(*got, secret) << "holder mask " << mask;
    ++subsets;
  }
  EXPECT_EQ(subsets, 35 + 21 + 7 + 1);
}

TEST(Shamir, FewerThanThresholdGiveSomethingElse) {
  const std::vector<uint32_t> xs = {1, 2, 3, 4, 5, 6};
  const uint32_t t = 4;
  for (int trial = 0; trial < 20; ++trial) {
    const Secret secret = RandomSecret();
    Result<std::vector<ShareValue>> shares = Split(secret, t, xs);
    ASSERT_TRUE(shares.ok());
    // Interpolating t-1 points fits a lower-degree polynomial: its value at 0
    // is unrelated to the secret (mostly not even a 32-byte encoding).
    Result<Secret> got = ReconstructFrom(xs, *shares, {0, 2, 5});
    if (got.ok()) {
      EXPECT_NE(*got, secret);
    }
  }
}

TEST(Shamir, SerializeParseRoundTrip) {
  Result<std::vector<ShareValue>> shares = Split(RandomSecret(), 3, std::vector<uint32_t>{1, 2, 3});
  ASSERT_TRUE(shares.ok());
  for (const ShareValue& share : *shares) {
    const auto bytes = Serialize(share);
    Result<ShareValue> parsed = Parse(bytes);
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, share);
  }
}

TEST(Shamir, ParseRejectsCorruptElementsAndLengths) {
  ShareValue share = {1, 2, 3, 4, kPrime - 1};
  auto bytes = Serialize(share);
  EXPECT_TRUE(Parse(bytes).ok());
  // Element 2 set to p: not a field element.
  for (int b = 0; b < 8; ++b) bytes[16 + b] = static_cast<uint8_t>(kPrime >> (8 * b));
  Result<ShareValue> bad = Parse(bytes);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), Status::Code::kCorruption);
  EXPECT_NE(bad.status().message().find("element 2"), std::string::npos) << bad.status().message();
  // All-ones bytes: far above p.
  std::vector<uint8_t> ones(kShareSize, 0xff);
  EXPECT_EQ(Parse(ones).status().code(), Status::Code::kCorruption);
  std::vector<uint8_t> short_share(kShareSize - 1, 0);
  EXPECT_EQ(Parse(short_share).status().code(), Status::Code::kCorruption);
}

TEST(Shamir, AlteredShareIsDetectedOrGivesAnotherSecret) {
  const std::vector<uint32_t> xs = {1, 2, 3, 4, 5};
  int detected = 0;
  for (int trial = 0; trial < 50; ++trial) {
    const Secret secret = RandomSecret();
    Result<std::vector<ShareValue>> shares = Split(secret, 3, xs);
    ASSERT_TRUE(shares.ok());
    // A wrong share: element 0 off by a random nonzero field element.
    uint64_t offset = 0;
    while (offset == 0) {
      ASSERT_TRUE(crypto::RandomBytes(std::span(reinterpret_cast<uint8_t*>(&offset), 8)).ok());
      offset %= kPrime;
    }
    (*shares)[1][0] = FieldAdd((*shares)[1][0], offset);
    Result<Secret> got = ReconstructFrom(xs, *shares, {0, 1, 2});
    if (!got.ok()) {
      EXPECT_EQ(got.status().code(), Status::Code::kCorruption);
      ++detected;
    } else {
      EXPECT_NE(*got, secret);
    }
  }
  // Limb 0 must stay below 2^56: a randomly shifted limb survives that with
  // probability 2^-5 per trial. (A small shift may well go unnoticed, which is
  // why secagg also checks a reconstructed key against its public key.)
  EXPECT_GT(detected, 30);
}

TEST(Shamir, RejectsBadHoldersAndThresholds) {
  const Secret secret = RandomSecret();
  EXPECT_EQ(Split(secret, 2, std::vector<uint32_t>{1, 2, 2}).status().code(),
            Status::Code::kInvalidArgument);
  EXPECT_EQ(Split(secret, 2, std::vector<uint32_t>{0, 1, 2}).status().code(),
            Status::Code::kInvalidArgument);
  EXPECT_EQ(Split(secret, 4, std::vector<uint32_t>{1, 2, 3}).status().code(),
            Status::Code::kInvalidArgument);
  EXPECT_EQ(Split(secret, 0, std::vector<uint32_t>{1, 2, 3}).status().code(),
            Status::Code::kInvalidArgument);
  EXPECT_EQ(Interpolator::Create({5, 5}).status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(Interpolator::Create({}).status().code(), Status::Code::kInvalidArgument);
  Result<Interpolator> interpolator = Interpolator::Create({1, 2});
  ASSERT_TRUE(interpolator.ok());
  EXPECT_EQ(interpolator->Reconstruct(std::vector<ShareValue>(3)).status().code(),
            Status::Code::kInvalidArgument);
}

TEST(Shamir, OneInterpolatorServesManySecrets) {
  const std::vector<uint32_t> xs = {2, 5, 7, 11, 13};
  Result<Interpolator> interpolator = Interpolator::Create(xs);
  ASSERT_TRUE(interpolator.ok());
  for (int i = 0; i < 100; ++i) {
    const Secret secret = RandomSecret();
    Result<std::vector<ShareValue>> shares = Split(secret, 5, xs);
    ASSERT_TRUE(shares.ok());
    Result<Secret> got = interpolator->Reconstruct(*shares);
    ASSERT_TRUE(got.ok());
    EXPECT_EQ(*got, secret);
  }
}

}  // namespace
}  // namespace fedrec::shamir
