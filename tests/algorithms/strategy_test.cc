#include "algorithms/strategy.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "base/random.h"

namespace fedrec {
namespace {

// Sums of w_s * value_s and w_s per row, as the coordinator learns them.
struct SiteUpdate {
  std::vector<float> values;   // rows * cols
  std::vector<double> weight;  // per row
};

AggregateInput Sum(const ParamBlock& shape, const std::vector<SiteUpdate>& sites) {
  AggregateInput in;
  in.weighted_sum.assign(1, std::vector<double>(shape.data.size(), 0.0));
  in.row_weight.assign(1, std::vector<double>(shape.rows, 0.0));
  for (const SiteUpdate& s : sites) {
    for (uint32_t r = 0; r < shape.rows; ++r) {
      in.row_weight[0][r] += s.weight[r];
      for (uint32_t c = 0; c < shape.cols; ++c) {
        const size_t x = size_t{r} * shape.cols + c;
        in.weighted_sum[0][x] += s.weight[r] * s.values[x];
      }
    }
  }
  in.sites = static_cast<uint32_t>(sites.size());
  return in;
}

std::unique_ptr<Strategy> MakeFedAvg(double server_lr = 1.0) {
  StrategyOptions options;
  options.server_lr = server_lr;
  auto created = StrategyRegistry::WithBuiltins().Create("fedavg", options);
  EXPECT_TRUE(created.ok()) << created.status().ToString();
  return std::move(created).value();
}

TEST(FedAvgTest, RowsBecomeTheWeightedAverageAndUnweightedRowsKeepTheirValue) {
  std::vector<ParamBlock> global = {ParamBlock("item_factors", Scope::kGlobal, 3, 2)};
  global[0].data = {9, 9, 8, 8, 7, 7};
  // Row 0: site A (1, 2) weight 1, site B (3, 4) weight 3 -> (2.5, 3.5).
  // Row 1: only site B (5, 6) weight 2 -> (5, 6).  Row 2: nobody -> unchanged.
  const std::vector<SiteUpdate> sites = {
      {{1, 2, 100, 100, 100, 100}, {1, 0, 0}},
      {{3, 4, 5, 6, 100, 100}, {3, 2, 0}},
  };
  auto fedavg = MakeFedAvg();
  ASSERT_TRUE(fedavg->Aggregate(Sum(global[0], sites), &global).ok());
  EXPECT_EQ(global[0].data, (std::vector<float>{2.5f, 3.5f, 5, 6, 7, 7}));
}

TEST(FedAvgTest, OneSiteGivesExactlyItsValues) {
  Rng rng(3, 0, 0, Purpose::kUser);
  std::vector<ParamBlock> global = {ParamBlock("item_bias", Scope::kGlobal, 50, 1),
                                    ParamBlock("item_factors", Scope::kGlobal, 50, 8)};
  AggregateInput in;
  std::vector<std::vector<float>> values;
  for (const ParamBlock& b : global) {
    SiteUpdate site;
    for (uint32_t x = 0; x < b.rows * b.cols; ++x) {
      site.values.push_back(static_cast<float>(rng.Normal()));
    }
    for (uint32_t r = 0; r < b.rows; ++r) site.weight.push_back(1.0 + rng.Below(1000));
    const AggregateInput one = Sum(b, {site});
    in.weighted_sum.push_back(one.weighted_sum[0]);
    in.row_weight.push_back(one.row_weight[0]);
    values.push_back(site.values);
  }
  auto fedavg = MakeFedAvg();
  ASSERT_TRUE(fedavg->Aggregate(in, &global).ok());
  for (size_t b = 0; b < global.size(); ++b) EXPECT_EQ(global[b].data, values[b]) << b;
}

TEST(FedAvgTest, ServerLearningRateStepsPartWay) {
  std::vector<ParamBlock> global = {ParamBlock("item_bias", Scope::kGlobal, 1, 1)};
  global[0].data = {1.0f};
  auto fedavg = MakeFedAvg(0.5);
  ASSERT_TRUE(fedavg->Aggregate(Sum(global[0], {{{3.0f}, {2.0}}}), &global).ok());
  EXPECT_FLOAT_EQ(global[0].data[0], 2.0f);
}

TEST(FedAvgTest, ShapeMismatchIsAnInvalidArgument) {
  std::vector<ParamBlock> global = {ParamBlock("item_bias", Scope::kGlobal, 2, 1)};
  auto fedavg = MakeFedAvg();
  AggregateInput no_blocks;
  EXPECT_EQ(fedavg->Aggregate(no_blocks, &global).code(), Status::Code::kInvalidArgument);
  const ParamBlock other("item_bias", Scope::kGlobal, 3, 1);
  const Status wrong_rows = fedavg->Aggregate(Sum(other, {{{1, 2, 3}, {1, 1, 1}}}), &global);
  EXPECT_EQ(wrong_rows.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(wrong_rows.message().find("item_bias"), std::string::npos) << wrong_rows.message();
}

TEST(StrategyRegistryTest, UnknownNameErrorListsRegisteredNames) {
  StrategyRegistry registry = StrategyRegistry::WithBuiltins();
  registry.Register("custom", [](const StrategyOptions& o) -> Result<std::unique_ptr<Strategy>> {
    return std::unique_ptr<Strategy>(new FedAvg(o));
  });
  EXPECT_EQ(registry.Names(), (std::vector<std::string>{"custom", "fedavg"}));
  const auto missing = registry.Create("fedprox-typo", StrategyOptions{});
  ASSERT_FALSE(missing.ok());
  const std::string& message = missing.status().message();
  EXPECT_EQ(missing.status().code(), Status::Code::kInvalidArgument);
  EXPECT_NE(message.find("fedprox-typo"), std::string::npos) << message;
  EXPECT_NE(message.find("fedavg"), std::string::npos) << message;
  EXPECT_NE(message.find("custom"), std::string::npos) << message;
  EXPECT_TRUE(registry.Create("custom", StrategyOptions{}).ok());
}

TEST(StrategyRegistryTest, CreatesFedAvgAndRejectsNonPositiveServerLr) {
  const StrategyRegistry registry = StrategyRegistry::WithBuiltins();
  auto fedavg = registry.Create("fedavg", StrategyOptions{});
  ASSERT_TRUE(fedavg.ok());
  EXPECT_EQ((*fedavg)->name(), "fedavg");
  EXPECT_FALSE((*fedavg)->NeedsIndividualUpdates());
  StrategyOptions zero;
  zero.server_lr = 0.0;
  EXPECT_FALSE(registry.Create("fedavg", zero).ok());
}

TEST(SelectSitesTest, DeterministicSortedDistinctAndOfTheRequestedSize) {
  auto fedavg = MakeFedAvg();
  const std::vector<uint32_t> a = fedavg->SelectSites(3, 100, 0.1, 42);
  EXPECT_EQ(a, fedavg->SelectSites(3, 100, 0.1, 42));
  EXPECT_EQ(a.size(), 10u);
  EXPECT_TRUE(std::is_sorted(a.begin(), a.end()));
  EXPECT_EQ(std::set<uint32_t>(a.begin(), a.end()).size(), a.size());
  for (uint32_t s : a) EXPECT_LT(s, 100u);
  // Another round or seed draws another sample.
  EXPECT_NE(a, fedavg->SelectSites(4, 100, 0.1, 42));
  EXPECT_NE(a, fedavg->SelectSites(3, 100, 0.1, 43));
  // Rounding, at least one site, and everyone at fraction 1.
  EXPECT_EQ(fedavg->SelectSites(0, 10, 0.25, 1).size(), 3u);  // round(2.5) = 3
  EXPECT_EQ(fedavg->SelectSites(0, 10, 0.01, 1).size(), 1u);
  EXPECT_EQ(fedavg->SelectSites(0, 5, 1.0, 1), (std::vector<uint32_t>{0, 1, 2, 3, 4}));
}

TEST(SelectSitesTest, EverySiteIsSelectedSometimes) {
  auto fedavg = MakeFedAvg();
  std::vector<int> count(20, 0);
  for (uint32_t round = 0; round < 400; ++round) {
    for (uint32_t s : fedavg->SelectSites(round, 20, 0.25, 7)) ++count[s];
  }
  // 400 rounds x 5 of 20 sites: 100 each on average.
  for (int c : count) {
    EXPECT_GT(c, 60);
    EXPECT_LT(c, 140);
  }
}

}  // namespace
}  // namespace fedrec
