// The robust strategies on small inputs computed by hand from their papers:
// coordinate-wise median and trimmed mean (Yin et al., ICML 2018), Krum and
// Multi-Krum (Blanchard et al., NeurIPS 2017), with rows trained by some
// sites only, interaction weights and failed sites.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "algorithms/strategy.h"
#include "base/random.h"
#include "tests/algorithms/make_strategy.h"

namespace fedrec {
namespace {

// One site's update: per block, values (rows * cols) and row weights (0 = the
// site did not train the row; its values there are ignored).
struct Site {
  uint32_t id;
  std::vector<std::vector<float>> values;
  std::vector<std::vector<double>> weight;
};

// What the coordinator hands a strategy that needs individual updates: the
// sums and the updates, ascending by site.
AggregateInput Input(const std::vector<ParamBlock>& global, const std::vector<Site>& sites,
                     uint32_t round = 1) {
  AggregateInput in;
  in.round = round;
  for (const ParamBlock& b : global) {
    in.weighted_sum.emplace_back(b.data.size(), 0.0);
    in.row_weight.emplace_back(b.rows, 0.0);
  }
  for (const Site& s : sites) {
    SiteUpdate u;
    u.site = s.id;
    for (size_t b = 0; b < global.size(); ++b) {
      const uint32_t cols = global[b].cols;
      u.weight.push_back(s.weight[b]);
      u.values.emplace_back(global[b].data.size(), 0.0f);
      for (uint32_t r = 0; r < global[b].rows; ++r) {
        const double w = s.weight[b][r];
        if (w == 0.0) continue;
        in.row_weight[b][r] += w;
        for (uint32_t c = 0; c < cols; ++c) {
          const size_t x = size_t{r} * cols + c;
          u.values[b][x] = s.values[b][x];
          in.weighted_sum[b][x] += w * s.values[b][x];
        }
      }
    }
    in.updates.push_back(std::move(u));
  }
  in.sites = static_cast<uint32_t>(sites.size());
  return in;
}

constexpr float kSkip = 0;  // a value in a row the site did not train

TEST(RobustStrategies, AllNeedIndividualUpdates) {
  for (const char* name : {"fedmedian", "fedtrimmedavg", "krum", "multikrum"})
    EXPECT_TRUE(Make(name)->NeedsIndividualUpdates()) << name;
}

TEST(FedMedianTest, CoordinateWiseMedianOfTheSitesThatTrainedEachRowIgnoringWeights) {
  std::vector<ParamBlock> global = {ParamBlock("item_factors", Scope::kGlobal, 3, 2),
                                    ParamBlock("global_mean", Scope::kGlobalAverage, 1, 1)};
  global[0].data = {9, 9, 8, 8, 7, 7};
  global[1].data = {0};
  // Site 3 failed and sent nothing. Row 0: col 0 median {1, 2, 100} = 2,
  // col 1 median {50, -1, 0} = 0 (a different site per coordinate; site 1's
  // weight 100 does not count). Row 1: sites 0 and 2, an even count: the mean
  // of 10 and 20 (and of 30 and 40). Row 2: nobody, kept. The mean
  // statistic is the weighted average (3*2 + 4*1 + 6*1) / 4 = 4.
  const std::vector<Site> sites = {
      {0, {{1, 50, 10, 30, kSkip, kSkip}, {3}}, {{1, 5, 0}, {2}}},
      {1, {{2, -1, kSkip, kSkip, kSkip, kSkip}, {4}}, {{100, 0, 0}, {1}}},
      {2, {{100, 0, 20, 40, kSkip, kSkip}, {6}}, {{1, 1, 0}, {1}}},
  };
  AggregateInput in = Input(global, sites);
  in.failures = 1;
  in.failed = {3};
  ASSERT_TRUE(Make("fedmedian")->Aggregate(in, &global).ok());
  EXPECT_EQ(global[0].data, (std::vector<float>{2, 0, 15, 35, 7, 7}));
  EXPECT_EQ(global[1].data, (std::vector<float>{4}));
}

TEST(FedMedianTest, ServerLearningRateStepsTowardTheMedian) {
  std::vector<ParamBlock> global = {ParamBlock("item_bias", Scope::kGlobal, 1, 1)};
  global[0].data = {10};
  const std::vector<Site> sites = {{0, {{4}}, {{1}}}, {1, {{6}}, {{1}}}, {2, {{1000}}, {{1}}}};
  // x + eta (median - x) = 10 + 0.5 * (6 - 10) = 8.
  ASSERT_TRUE(Make("fedmedian", {}, 0.5)->Aggregate(Input(global, sites), &global).ok());
  EXPECT_EQ(global[0].data, (std::vector<float>{8}));
}

TEST(FedTrimmedAvgTest, CutsFloorBetaNValuesFromEachEndPerRow) {
  std::vector<ParamBlock> global = {ParamBlock("item_bias", Scope::kGlobal, 3, 1)};
  global[0].data = {9, 8, 7};
  // beta 0.2. Row 0, five sites: cut 1 per end of {1, 2, 3, 4, 100} -> 3.
  // Row 1, four sites: floor(0.8) = 0 cut, the plain unweighted mean
  // (10 + 20 + 30 - 1000) / 4 = -235. Row 2: nobody, kept.
  const std::vector<Site> sites = {
      {0, {{100, 10, kSkip}}, {{1, 7, 0}}},  {1, {{2, 20, kSkip}}, {{1, 1, 0}}},
      {4, {{1, 30, kSkip}}, {{9, 1, 0}}},    {5, {{4, -1000, kSkip}}, {{1, 1, 0}}},
      {6, {{3, kSkip, kSkip}}, {{1, 0, 0}}},
  };
  AggregateInput in = Input(global, sites);
  in.failures = 2;
  in.failed = {2, 3};
  ASSERT_TRUE(Make("fedtrimmedavg")->Aggregate(in, &global).ok());
  EXPECT_EQ(global[0].data, (std::vector<float>{3, -235, 7}));
}

TEST(FedTrimmedAvgTest, LargerBetaCutsMoreAndTheServerRateSteps) {
  std::vector<ParamBlock> global = {ParamBlock("item_bias", Scope::kGlobal, 1, 1)};
  global[0].data = {0};
  // beta 0.4 over three sites: floor(1.2) = 1 cut per end of {1, 5, 9} -> 5;
  // eta 2: 0 + 2 * (5 - 0) = 10.
  const std::vector<Site> sites = {{0, {{9}}, {{1}}}, {1, {{1}}, {{1}}}, {2, {{5}}, {{1}}}};
  ASSERT_TRUE(
      Make("fedtrimmedavg", {{"beta", 0.4}}, 2.0)->Aggregate(Input(global, sites), &global).ok());
  EXPECT_EQ(global[0].data, (std::vector<float>{10}));
}

TEST(FedTrimmedAvgTest, BetaOutsideItsRangeIsRefusedNamingTheKey) {
  StrategyOptions options;
  options.params = {{"beta", 0.5}};
  auto created = StrategyRegistry::WithBuiltins().Create("fedtrimmedavg", options);
  ASSERT_FALSE(created.ok());
  EXPECT_NE(created.status().message().find("strategy.fedtrimmedavg.beta: expected a number in "
                                            "[0, 0.5), found 0.5"),
            std::string::npos)
      << created.status().message();
}

// Five sites over two rows x 1 column, global (0, 0); site 3 is Byzantine.
// Vectors with the global value in untrained rows: v0 = (1, 1), v1 = (1.5, 0),
// v2 = (2, 1), v3 = (10, 10), v4 = (1, 0). Squared distances:
//   d01 1.25  d02 1     d03 162     d04 1
//   d12 1.25  d13 172.25 d14 0.25
//   d23 145   d24 2
//   d34 181
// With f = 1 each site sums its n - f - 2 = 2 closest: s0 1 + 1 = 2,
// s1 0.25 + 1.25 = 1.5, s2 1 + 1.25 = 2.25, s3 145 + 162 = 307, s4 0.25 + 1 = 1.25.
std::vector<Site> KrumSites() {
  return {
      {0, {{1, 1}}, {{2, 1}}},   {1, {{1.5f, kSkip}}, {{1, 0}}}, {2, {{2, 1}}, {{1, 1}}},
      {3, {{10, 10}}, {{1, 1}}}, {4, {{1, kSkip}}, {{1, 0}}},
  };
}

TEST(KrumTest, AdoptsTheBestScoringSiteAndItsUntrainedRowsKeepTheirValue) {
  for (double f : {1.0, -1.0}) {  // -1 derives floor((5 - 3) / 2) = 1
    std::vector<ParamBlock> global = {ParamBlock("item_bias", Scope::kGlobal, 2, 1)};
    ASSERT_TRUE(Make("krum", {{"f", f}})->Aggregate(Input(global, KrumSites()), &global).ok());
    // Site 4 (score 1.25): row 0 -> 1; it did not train row 1, which keeps 0.
    EXPECT_EQ(global[0].data, (std::vector<float>{1, 0})) << "f = " << f;
  }
}

TEST(MultiKrumTest, AveragesTheMBestWithInteractionWeights) {
  std::vector<ParamBlock> global = {ParamBlock("item_bias", Scope::kGlobal, 2, 1)};
  // m = 3: sites 4 (1.25), 1 (1.5), 0 (2). Row 0: (2 * 1 + 1 * 1.5 + 1 * 1) / 4
  // = 1.125. Row 1: only site 0 of them trained it -> 1.
  ASSERT_TRUE(
      Make("multikrum", {{"f", 1}, {"m", 3}})->Aggregate(Input(global, KrumSites()), &global).ok());
  EXPECT_EQ(global[0].data, (std::vector<float>{1.125f, 1}));
}

TEST(MultiKrumTest, DefaultMIsNMinusF) {
  std::vector<ParamBlock> global = {ParamBlock("item_bias", Scope::kGlobal, 2, 1)};
  // m = 5 - 1 = 4 drops site 3: row 0 (2 * 1 + 1.5 + 2 + 1) / 5 = 1.3; row 1
  // (1 * 1 + 1 * 1) / 2 = 1 (sites 0 and 2).
  ASSERT_TRUE(Make("multikrum", {{"f", 1}})->Aggregate(Input(global, KrumSites()), &global).ok());
  EXPECT_FLOAT_EQ(global[0].data[0], 1.3f);
  EXPECT_FLOAT_EQ(global[0].data[1], 1.0f);
}

TEST(MultiKrumTest, AveragingEverySiteIsFedAvg) {
  Rng rng(5, 0, 0, Purpose::kUser);
  std::vector<ParamBlock> shapes = {ParamBlock("item_factors", Scope::kGlobal, 20, 4),
                                    ParamBlock("global_mean", Scope::kGlobalAverage, 1, 1)};
  std::vector<Site> sites;
  for (uint32_t s = 0; s < 6; ++s) {
    Site site{s, {}, {}};
    for (const ParamBlock& b : shapes) {
      std::vector<float>& v = site.values.emplace_back();
      for (size_t i = 0; i < b.data.size(); ++i) v.push_back(static_cast<float>(rng.Normal()));
      std::vector<double>& w = site.weight.emplace_back();
      for (uint32_t r = 0; r < b.rows; ++r) w.push_back(static_cast<double>(rng.Below(4)));
    }
    sites.push_back(site);
  }
  std::vector<ParamBlock> by_multikrum = shapes, by_fedavg = shapes;
  const AggregateInput in = Input(shapes, sites);
  ASSERT_TRUE(Make("multikrum", {{"f", 0}, {"m", 6}})->Aggregate(in, &by_multikrum).ok());
  ASSERT_TRUE(Make("fedavg")->Aggregate(in, &by_fedavg).ok());
  for (size_t b = 0; b < shapes.size(); ++b) {
    for (size_t i = 0; i < shapes[b].data.size(); ++i)
      EXPECT_FLOAT_EQ(by_multikrum[b].data[i], by_fedavg[b].data[i]) << b << ", " << i;
  }
}

TEST(KrumTest, TooFewSitesForFIsRefusedKeepingTheModelAndNamingTheNumbers) {
  std::vector<ParamBlock> global = {ParamBlock("item_bias", Scope::kGlobal, 2, 1)};
  global[0].data = {3, 4};
  const Status refused =
      Make("krum", {{"f", 2}})->Aggregate(Input(global, KrumSites(), 7), &global);
  EXPECT_EQ(refused.code(), Status::Code::kAborted);
  EXPECT_NE(refused.message().find("krum, round 7: 5 site updates, the rule needs more than "
                                   "2f + 2 = 6 with strategy.krum.f = 2"),
            std::string::npos)
      << refused.message();
  EXPECT_EQ(global[0].data, (std::vector<float>{3, 4}));
}

TEST(KrumTest, DerivedFNeedsThreeSites) {
  std::vector<ParamBlock> global = {ParamBlock("item_bias", Scope::kGlobal, 2, 1)};
  std::vector<Site> two = KrumSites();
  two.resize(2);
  const Status refused = Make("multikrum")->Aggregate(Input(global, two, 2), &global);
  EXPECT_EQ(refused.code(), Status::Code::kAborted);
  EXPECT_NE(
      refused.message().find("multikrum, round 2: 2 site update(s), the rule needs at least 3"),
      std::string::npos)
      << refused.message();
}

TEST(KrumTest, FThatIsNotAnIntegerIsRefusedNamingTheKey) {
  StrategyOptions options;
  options.params = {{"f", 1.5}};
  auto created = StrategyRegistry::WithBuiltins().Create("krum", options);
  ASSERT_FALSE(created.ok());
  EXPECT_NE(created.status().message().find("strategy.krum.f: expected an integer >= -1"),
            std::string::npos)
      << created.status().message();
}

TEST(RobustStrategies, SumsWithoutIndividualUpdatesAreAnErrorNamingTheSetting) {
  std::vector<ParamBlock> global = {ParamBlock("item_bias", Scope::kGlobal, 2, 1)};
  for (const char* name : {"fedmedian", "fedtrimmedavg", "krum", "multikrum"}) {
    AggregateInput in = Input(global, KrumSites());
    in.updates.clear();  // what a secure sum yields
    const Status s = Make(name)->Aggregate(in, &global);
    EXPECT_EQ(s.code(), Status::Code::kInvalidArgument) << name;
    EXPECT_NE(s.message().find("expected each reporting site's update (5 sites reported), found "
                               "0; this strategy needs individual updates, which only "
                               "security.aggregation = \"none\" provides"),
              std::string::npos)
        << s.message();
  }
}

TEST(RobustStrategies, UpdateOfTheWrongShapeIsAnErrorNamingSiteAndBlock) {
  std::vector<ParamBlock> global = {ParamBlock("item_bias", Scope::kGlobal, 2, 1)};
  AggregateInput in = Input(global, KrumSites(), 4);
  in.updates[2].values[0].resize(1);
  const Status s = Make("fedmedian")->Aggregate(in, &global);
  EXPECT_NE(s.message().find("fedmedian, round 4, site 2: block 'item_bias' has shape 2x1, the "
                             "update has 2 row weights and 1 values"),
            std::string::npos)
      << s.message();
}

}  // namespace
}  // namespace fedrec
