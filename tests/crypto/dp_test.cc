#include "crypto/dp.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "base/random.h"
#include "crypto/rdp_accountant.h"

namespace fedrec {
namespace {

// The standard test vector of RDP accounting: 10 steps of (q = 1e-5,
// sigma = 1) then 4 of (q = 1e-4, sigma = 3), orders 2..32, delta = 1e-5.
TEST(RdpAccountant, ReproducesTheHeterogeneousCompositionTestVector) {
  std::vector<uint32_t> orders;
  for (uint32_t a = 2; a <= 32; ++a) orders.push_back(a);
  RdpAccountant accountant(orders);
  accountant.Step(1e-5, 1.0, 10);
  accountant.Step(1e-4, 3.0, 4);
  const EpsilonAtOrder eps = accountant.Epsilon(1e-5);
  EXPECT_NEAR(eps.epsilon, 0.336, 0.001);
  EXPECT_EQ(eps.order, 23u);
  EXPECT_EQ(accountant.steps(), 14u);
}

TEST(RdpAccountant, ImprovedConversionIsTighterThanTheClassicOne) {
  std::vector<uint32_t> orders;
  for (uint32_t a = 2; a <= 32; ++a) orders.push_back(a);
  RdpAccountant accountant(orders);
  accountant.Step(1e-5, 1.0, 10);
  accountant.Step(1e-4, 3.0, 4);
  double classic = INFINITY;
  for (size_t k = 0; k < orders.size(); ++k)
    classic = std::min(classic, accountant.rdp()[k] + std::log(1e5) / (orders[k] - 1.0));
  EXPECT_NEAR(classic, 0.52, 0.01);
  EXPECT_LT(accountant.Epsilon(1e-5).epsilon, classic);
}

TEST(RdpAccountant, FullBatchIsTheGaussianMechanism) {
  for (uint32_t order : {2u, 5u, 32u})
    EXPECT_DOUBLE_EQ(SubsampledGaussianRdp(1.0, 2.0, order), order / 8.0);
  EXPECT_EQ(SubsampledGaussianRdp(0.0, 2.0, 7), 0.0);
  // Sampling only helps.
  EXPECT_LT(SubsampledGaussianRdp(0.1, 2.0, 7), SubsampledGaussianRdp(1.0, 2.0, 7));
}

TEST(RdpAccountant, EpsilonGrowsWithStepsAndShrinksWithNoise) {
  RdpAccountant low, high;
  low.Step(1.0, 4.0, 10);
  high.Step(1.0, 8.0, 10);
  EXPECT_GT(low.Epsilon(1e-5).epsilon, high.Epsilon(1e-5).epsilon);
  const double before = low.Epsilon(1e-5).epsilon;
  const double next = low.EpsilonAfter(1.0, 4.0, 1e-5).epsilon;
  EXPECT_GT(next, before);
  EXPECT_EQ(low.Epsilon(1e-5).epsilon, before);  // EpsilonAfter takes no step
}

TEST(RdpAccountant, StateRoundTripsThroughText) {
  RdpAccountant a;
  a.Step(0.01, 1.1, 100);
  RdpAccountant b;
  ASSERT_TRUE(b.LoadState(a.SaveState()).ok());
  EXPECT_EQ(b.steps(), 100u);
  EXPECT_EQ(b.rdp(), a.rdp());
  EXPECT_EQ(b.Epsilon(1e-5).epsilon, a.Epsilon(1e-5).epsilon);
}

TEST(RdpAccountant, LoadStateRefusesGarbageAndSaysWhatItExpected) {
  RdpAccountant a;
  const Status bad = a.LoadState("not a state");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.message().find("expected"), std::string::npos);
  EXPECT_NE(bad.message().find("not a state"), std::string::npos);
  EXPECT_FALSE(a.LoadState("rdp-accountant v1 steps 3 orders 2 2:0.5 3:-1").ok());
  EXPECT_FALSE(a.LoadState("rdp-accountant v1 steps 3 orders 1 2:0.5 junk").ok());
}

// Sample variance within a 5-sigma confidence bound of the expected one:
// var(s^2) = (mu4 - sigma^4) / n for n samples.
void ExpectVariance(const std::vector<double>& xs, double variance, double kurtosis_excess) {
  const double n = static_cast<double>(xs.size());
  double mean = 0.0;
  for (double x : xs) mean += x;
  mean /= n;
  double s2 = 0.0;
  for (double x : xs) s2 += (x - mean) * (x - mean);
  s2 /= n - 1.0;
  const double se = variance * std::sqrt((2.0 + kurtosis_excess) / n);
  EXPECT_NEAR(s2, variance, 5.0 * se);
  EXPECT_NEAR(mean, 0.0, 5.0 * std::sqrt(variance / n));
}

TEST(DpNoise, SkellamHasVarianceTwiceItsParameter) {
  for (double mu : {0.5, 4.0, 37.0, 2500.0}) {
    Rng rng(7, 1, 2, Purpose::kDpNoise);
    std::vector<double> xs(40000);
    for (double& x : xs) x = static_cast<double>(SampleSkellam(rng, mu));
    // Skellam(mu, mu) has excess kurtosis 1 / (2 mu).
    ExpectVariance(xs, 2.0 * mu, 1.0 / (2.0 * mu));
  }
}

TEST(DpNoise, PoissonHasItsMeanAsMeanAndVariance) {
  for (double mu : {3.0, 150.0}) {
    Rng rng(11, 0, 0, Purpose::kDpNoise);
    const int n = 40000;
    double sum = 0.0, sq = 0.0;
    for (int i = 0; i < n; ++i) {
      const double k = static_cast<double>(SamplePoisson(rng, mu));
      ASSERT_GE(k, 0.0);
      sum += k;
      sq += k * k;
    }
    const double mean = sum / n;
    EXPECT_NEAR(mean, mu, 5.0 * std::sqrt(mu / n));
    EXPECT_NEAR(sq / n - mean * mean, mu, 5.0 * mu * std::sqrt((2.0 + 1.0 / mu) / n));
  }
}

TEST(DpNoise, DistributedSharesSumToTheConfiguredVariance) {
  // 10 sites each add their share to one element of a 64-bit ring; the sum
  // over the sites, decoded at 2^-frac_bits, has variance stddev^2.
  const uint32_t sites = 10, frac_bits = 8;
  const double stddev = 0.75;
  const double mu = SkellamShareMu(stddev, frac_bits, sites);
  const int trials = 20000;
  std::vector<double> sums(trials);
  for (int t = 0; t < trials; ++t) {
    uint64_t total = 0;
    for (uint32_t s = 0; s < sites; ++s) {
      const NoiseShareAdder adder({{1, 1, mu}}, DeriveSeed(3, t, s, Purpose::kDpNoise));
      uint64_t words[2] = {0, 0};
      adder.Add(0, 2, 64, reinterpret_cast<uint8_t*>(words));
      EXPECT_EQ(words[0], 0u);  // the weight is never noised
      total += words[1];
    }
    sums[t] = std::ldexp(static_cast<double>(static_cast<int64_t>(total)), -int{frac_bits});
  }
  ExpectVariance(sums, stddev * stddev, 1.0 / (2.0 * mu * sites));
}

TEST(DpNoise, SharesAreSizedForTheSitesLeftAfterTheThreatModelsDropouts) {
  EXPECT_EQ(DpShareSites(10, 0.05), 9u);   // ceil(0.5) = 1 may drop
  EXPECT_EQ(DpShareSites(20, 0.05), 19u);  // 0.05 * 20 is 1, not 2
  EXPECT_EQ(DpShareSites(20, 0.1), 18u);
  EXPECT_EQ(DpShareSites(5, 0.0), 5u);
  EXPECT_EQ(DpShareSites(1, 0.5), 1u);  // never 0
  EXPECT_EQ(DpShareSites(3, 0.9), 1u);
  // 9 of 10 sites' shares sized for 9 carry the whole variance; all 10, more.
  EXPECT_DOUBLE_EQ(DistributedNoiseStddev(2.0, 9, 9), 2.0);
  EXPECT_DOUBLE_EQ(DistributedNoiseStddev(2.0, 10, 9), 2.0 * std::sqrt(10.0 / 9.0));
  EXPECT_DOUBLE_EQ(DistributedNoiseStddev(2.0, 4, 9), 2.0 * std::sqrt(4.0 / 9.0));
}

TEST(DpNoise, ShareOfARangeIsTheSameWhicheverPiecesItIsAddedIn) {
  const NoiseShareAdder adder({{3, 2, 50.0}, {2, 1, 0.0}, {1, 1, 9.0}}, 99);
  ASSERT_EQ(adder.length(), 9u + 4u + 2u);
  std::vector<uint32_t> whole(adder.length(), 5), pieces(adder.length(), 5);
  adder.Add(0, adder.length(), 32, reinterpret_cast<uint8_t*>(whole.data()));
  for (uint64_t b = 0; b < adder.length(); b += 4) {
    const uint64_t e = std::min<uint64_t>(b + 4, adder.length());
    adder.Add(b, e, 32, reinterpret_cast<uint8_t*>(pieces.data() + b));
  }
  EXPECT_EQ(whole, pieces);
  for (uint64_t e : {0u, 3u, 6u, 9u, 10u, 11u, 12u, 13u}) EXPECT_EQ(whole[e], 5u) << e;
}

TEST(DpClip, ClippingBoundsTheNorm) {
  Rng rng(5, 0, 0, Purpose::kDpNoise);
  for (int t = 0; t < 100; ++t) {
    std::vector<float> a(17), b(40);
    const double scale = std::exp(4.0 * rng.Uniform() - 2.0);
    for (float& x : a) x = static_cast<float>(scale * rng.Normal());
    for (float& x : b) x = static_cast<float>(scale * rng.Normal());
    const std::span<const float> parts[] = {a, b};
    const double norm = L2Norm(parts);
    const double clip = 1.0;
    const double f = ClipFactor(norm, clip);
    for (float& x : a) x = static_cast<float>(x * f);
    for (float& x : b) x = static_cast<float>(x * f);
    const double clipped = L2Norm(parts);
    EXPECT_LE(clipped, clip * (1.0 + 1e-6));
    if (norm <= clip) {
      EXPECT_EQ(f, 1.0);
    }
  }
}

TEST(DpClip, AdaptiveClipConvergesToTheTargetQuantile) {
  // Norms ~ lognormal(0, 1): the 0.7 quantile is exp(0.5244) = 1.689. 1000
  // units a round, count noise stddev 50 (units / 20).
  const double target = 0.7, want = std::exp(0.5244005);
  AdaptiveClip clip(0.05, target, 0.2);
  Rng norms(1, 0, 0, Purpose::kSynthetic), noise(1, 0, 0, Purpose::kDpNoise);
  const int units = 1000;
  for (int round = 0; round < 300; ++round) {
    double centered = 0.0;
    for (int u = 0; u < units; ++u) centered += (std::exp(norms.Normal()) <= clip.clip()) - 0.5;
    centered += 50.0 * noise.Normal();
    clip.Update(centered / units + 0.5);
  }
  EXPECT_NEAR(std::log(clip.clip()), std::log(want), 0.15);
  EXPECT_FALSE(AdaptiveClip(1.0, 0.0, 0.2).adaptive());
}

TEST(DpOptionsCheck, UpdateNoiseLeavesTheTotalMultiplier) {
  DpOptions o;
  o.mode = DpMode::kCentral;
  o.noise_multiplier = 1.0;
  EXPECT_EQ(UpdateNoiseMultiplier(o), 1.0);
  o.target_quantile = 0.5;
  o.count_stddev = 5.0;
  ASSERT_TRUE(ValidateDpOptions(o).ok());
  const double zd = UpdateNoiseMultiplier(o);
  EXPECT_GT(zd, 1.0);
  EXPECT_NEAR(1.0 / (zd * zd) + 1.0 / (4.0 * 25.0), 1.0, 1e-12);
}

TEST(DpOptionsCheck, BadValuesNameTheKeyAndWhatWasFound) {
  DpOptions o;
  o.mode = DpMode::kCentral;
  o.clip = -1.0;
  Status s = ValidateDpOptions(o);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("dp.clip"), std::string::npos);
  EXPECT_NE(s.message().find("-1"), std::string::npos);
  o.clip = 0.1;
  o.target_quantile = 0.5;
  o.count_stddev = 0.1;
  s = ValidateDpOptions(o);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("dp.count_stddev"), std::string::npos);
  o.count_stddev = 10.0;
  o.delta = 0.0;
  EXPECT_NE(ValidateDpOptions(o).message().find("dp.delta"), std::string::npos);
  o.delta = 1e-5;
  o.user_fraction = 0.5;
  EXPECT_NE(ValidateDpOptions(o).message().find("dp.user_fraction"), std::string::npos);
  o.user_fraction = 1.0;
  o.expected_units = -3.0;
  s = ValidateDpOptions(o);
  EXPECT_NE(s.message().find("dp.expected_units: expected 0 (divide by the units that took "
                             "part) or the expected units per round (> 0), found -3"),
            std::string::npos)
      << s.message();
}

}  // namespace
}  // namespace fedrec
