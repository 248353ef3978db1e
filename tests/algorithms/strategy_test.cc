#include "algorithms/strategy.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "base/random.h"
#include "tests/algorithms/make_strategy.h"

namespace fedrec {
namespace {

// Sums of w_s * value_s and w_s per row, as the coordinator learns them.
struct SiteValues {
  std::vector<float> values;   // rows * cols
  std::vector<double> weight;  // per row
};

AggregateInput Sum(const ParamBlock& shape, const std::vector<SiteValues>& sites) {
  AggregateInput in;
  in.weighted_sum.assign(1, std::vector<double>(shape.data.size(), 0.0));
  in.row_weight.assign(1, std::vector<double>(shape.rows, 0.0));
  for (const SiteValues& s : sites) {
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
  const std::vector<SiteValues> sites = {
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
    SiteValues site;
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

// One 1x1 block at `x`, stepped by `strategy` toward sites' values of the row.
double Step(Strategy* strategy, std::vector<ParamBlock>* global,
            const std::vector<SiteValues>& sites) {
  EXPECT_TRUE(strategy->Aggregate(Sum((*global)[0], sites), global).ok());
  return (*global)[0].data[0];
}

TEST(FedAvgTest, StatisticsBlocksTakeTheirAverageWhateverTheServerRate) {
  auto fedavg = Make("fedavg", {}, 2.0);
  std::vector<ParamBlock> global = {ParamBlock("global_mean", Scope::kGlobalAverage, 1, 1)};
  global[0].data = {0};
  // Weighted by interactions: (1 * 3 + 3 * 1) / (1 + 3) = 1.5.
  ASSERT_TRUE(fedavg->Aggregate(Sum(global[0], {{{3}, {1}}, {{1}, {3}}}), &global).ok());
  EXPECT_FLOAT_EQ(global[0].data[0], 1.5f);
}

TEST(FedAvgMTest, MomentumAccumulatesTheAverageSteps) {
  auto fedavgm = Make("fedavgm", {{"momentum", 0.9}, {"eta", 1.0}});
  std::vector<ParamBlock> global = {ParamBlock("item_bias", Scope::kGlobal, 1, 1)};
  // Round 1: Delta 1, m = 1, x = 1. Round 2: Delta 1, m = 0.9 + 1, x = 2.9.
  EXPECT_FLOAT_EQ(Step(fedavgm.get(), &global, {{{1}, {2}}}), 1.0f);
  EXPECT_FLOAT_EQ(Step(fedavgm.get(), &global, {{{2}, {2}}}), 2.9f);
}

TEST(FedOptTest, AdamAdagradAndYogiFollowReddiEtAlAlgorithm2) {
  const std::map<std::string, double> params = {
      {"beta1", 0.9}, {"beta2", 0.99}, {"tau", 0.1}, {"eta", 1.0}};
  // x = 0, Delta = 1: m = 0.1; v0 = tau^2 = 0.01.
  //   adam:    v = 0.99 * 0.01 + 0.01 * 1 = 0.0199,  x = 0.1 / (sqrt(v) + 0.1)
  //   adagrad: v = 0.01 + 1 = 1.01
  //   yogi:    v = 0.01 - 0.01 * 1 * sign(0.01 - 1) = 0.02
  const std::pair<const char*, double> expected[] = {
      {"fedadam", 0.4148218161}, {"fedadagrad", 0.0904987562}, {"fedyogi", 0.4142135624}};
  for (const auto& [name, x] : expected) {
    auto opt = Make(name, params);
    std::vector<ParamBlock> global = {ParamBlock("item_bias", Scope::kGlobal, 1, 1)};
    EXPECT_NEAR(Step(opt.get(), &global, {{{1}, {3}}}), x, 1e-6) << name;
  }
  // Adam's second round from x1 with Delta = 1: m = 0.19, v = 0.029701.
  auto adam = Make("fedadam", params);
  std::vector<ParamBlock> global = {ParamBlock("item_bias", Scope::kGlobal, 1, 1)};
  const double x1 = Step(adam.get(), &global, {{{1}, {1}}});
  EXPECT_NEAR(Step(adam.get(), &global, {{{static_cast<float>(x1 + 1)}, {1}}}), 1.1124797181, 1e-5);
}

TEST(FedOptTest, RowsNoSiteTrainedKeepTheirValueAndTheirMoments) {
  auto adam = Make("fedadam", {{"beta1", 0.9}, {"beta2", 0.99}, {"tau", 0.1}, {"eta", 1.0}});
  std::vector<ParamBlock> global = {ParamBlock("item_bias", Scope::kGlobal, 2, 1)};
  // Row 1 is trained only in round 2: its first step is Adam's first step.
  ASSERT_TRUE(adam->Aggregate(Sum(global[0], {{{1, 0}, {1, 0}}}), &global).ok());
  EXPECT_EQ(global[0].data[1], 0.0f);
  ASSERT_TRUE(adam->Aggregate(Sum(global[0], {{{0, 1}, {0, 1}}}), &global).ok());
  EXPECT_NEAR(global[0].data[1], 0.4148218161, 1e-6);
}

TEST(FedProxTest, AsksSitesForTheProximalTermAndAveragesLikeFedAvg) {
  auto fedprox = Make("fedprox", {{"mu", 0.25}});
  RoundContext context;
  context.round = 1;
  context.num_sites = 3;
  const std::vector<uint32_t> available = {0, 1, 2};
  context.available = available;
  const RoundConfig config = fedprox->ConfigureRound(context);
  EXPECT_EQ(config.sites, available);
  EXPECT_FLOAT_EQ(config.For(1).proximal_mu, 0.25f);
  std::vector<ParamBlock> global = {ParamBlock("item_bias", Scope::kGlobal, 1, 1)};
  EXPECT_FLOAT_EQ(Step(fedprox.get(), &global, {{{1}, {1}}, {{4}, {2}}}), 3.0f);
}

TEST(StrategyStateTest, SavedStateRestoresTheSameNextStep) {
  const std::map<std::string, double> params = {
      {"beta1", 0.9}, {"beta2", 0.99}, {"tau", 0.1}, {"eta", 1.0}};
  auto a = Make("fedyogi", params);
  std::vector<ParamBlock> ga = {ParamBlock("item_bias", Scope::kGlobal, 1, 1)};
  Step(a.get(), &ga, {{{1}, {1}}});
  auto b = Make("fedyogi", params);
  ASSERT_TRUE(b->Restore(a->State()).ok());
  std::vector<ParamBlock> gb = ga;
  EXPECT_EQ(Step(a.get(), &ga, {{{3}, {1}}}), Step(b.get(), &gb, {{{3}, {1}}}));
  EXPECT_EQ(a->State(), b->State());
}

TEST(StrategyStateTest, StateOfBlocksNotInNameOrderRestoresToTheSameNextStep) {
  // A checkpoint keeps the moments by block name; the model's blocks here
  // are not in name order (as a multi-task network's are not).
  const std::map<std::string, double> params = {
      {"beta1", 0.9}, {"beta2", 0.99}, {"tau", 0.1}, {"eta", 1.0}};
  const auto input = [](double a, double b) {
    AggregateInput in;
    in.weighted_sum = {{a, 2 * a}, {b}};
    in.row_weight = {{1}, {1}};
    in.sites = 1;
    return in;
  };
  const std::map<std::string, std::map<std::string, double>> strategies = {
      {"fedadam", params}, {"fedavgm", {{"momentum", 0.9}, {"eta", 1.0}}}};
  for (const auto& [name, keys] : strategies) {
    auto a = Make(name, keys);
    std::vector<ParamBlock> ga = {ParamBlock("item_emb", Scope::kGlobal, 1, 2),
                                  ParamBlock("bias", Scope::kGlobal, 1, 1)};
    ASSERT_TRUE(a->Aggregate(input(1, 3), &ga).ok());
    auto b = Make(name, keys);
    ASSERT_TRUE(b->Restore(a->State()).ok()) << name;
    std::vector<ParamBlock> gb = ga;
    ASSERT_TRUE(a->Aggregate(input(2, -1), &ga).ok());
    const Status stepped = b->Aggregate(input(2, -1), &gb);
    ASSERT_TRUE(stepped.ok()) << name << ": " << stepped.message();
    EXPECT_EQ(ga[0].data, gb[0].data) << name;
    EXPECT_EQ(ga[1].data, gb[1].data) << name;
    EXPECT_EQ(a->State(), b->State()) << name;
  }
}

TEST(StrategyStateTest, RestoreRefusesStateItDoesNotKeepNamingIt) {
  auto fedavg = Make("fedavg");
  StrategyState state;
  state.scalars["count"] = 3;
  const Status refused = fedavg->Restore(state);
  EXPECT_EQ(refused.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(refused.message().find("fedavg"), std::string::npos) << refused.message();
  auto fedavgm = Make("fedavgm");
  state = {};
  state.vectors["velocity.item_bias"] = {1.0};
  const Status unknown = fedavgm->Restore(state);
  EXPECT_NE(unknown.message().find("velocity.item_bias"), std::string::npos) << unknown.message();
  // A restored momentum of another shape is refused at the next step.
  state = {};
  state.vectors["momentum.item_bias"] = {1.0, 2.0};
  ASSERT_TRUE(fedavgm->Restore(state).ok());
  std::vector<ParamBlock> global = {ParamBlock("item_bias", Scope::kGlobal, 1, 1)};
  const Status mismatch = fedavgm->Aggregate(Sum(global[0], {{{1}, {1}}}), &global);
  EXPECT_EQ(mismatch.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(mismatch.message().find("momentum.item_bias"), std::string::npos) << mismatch.message();
}

TEST(ScaffoldTest, StepsTheModelLikeFedAvgAndTheControlByTheSitesChangesScaledToTheFederation) {
  auto scaffold = Make("scaffold");
  EXPECT_TRUE(scaffold->UsesControlVariates());
  std::vector<ParamBlock> global = {ParamBlock("item_bias", Scope::kGlobal, 2, 1)};
  global[0].data = {1, 7};
  const std::vector<ParamBlock>* c = scaffold->ControlVariates(global);
  ASSERT_NE(c, nullptr);
  EXPECT_EQ((*c)[0].data, (std::vector<float>{0, 0}));
  // 2 of the federation's 4 sites report; both trained row 0, neither row 1.
  RoundContext context;
  context.round = 1;
  context.num_sites = 4;
  const std::vector<uint32_t> available = {0, 1, 2, 3};
  context.available = available;
  scaffold->ConfigureRound(context);
  AggregateInput in = Sum(global[0], {{{3, 0}, {1, 0}}, {{5, 0}, {1, 0}}});
  // Their changes of c_i for row 0: 0.5 and 1.5 (unit weights).
  const AggregateInput dc = Sum(global[0], {{{0.5f, 0}, {1, 0}}, {{1.5f, 0}, {1, 0}}});
  in.weighted_sum.push_back(dc.weighted_sum[0]);
  in.row_weight.push_back(dc.row_weight[0]);
  in.sites = 2;
  ASSERT_TRUE(scaffold->Aggregate(in, &global).ok());
  // x: the average 4; row 1 untouched. c: 0 + (2 / 4) * (0.5 + 1.5) / 2 = 0.5.
  EXPECT_EQ(global[0].data, (std::vector<float>{4, 7}));
  EXPECT_EQ((*scaffold->ControlVariates(global))[0].data, (std::vector<float>{0.5f, 0}));
  // The control variates are its state.
  auto restored = Make("scaffold");
  ASSERT_TRUE(restored->Restore(scaffold->State()).ok());
  EXPECT_EQ((*restored->ControlVariates(global))[0].data, (std::vector<float>{0.5f, 0}));
  // Without the control blocks the aggregate does not fit.
  const Status short_input = scaffold->Aggregate(Sum(global[0], {{{3, 0}, {1, 0}}}), &global);
  EXPECT_EQ(short_input.code(), Status::Code::kInvalidArgument);
}

TEST(FedNovaTest, NormalizesEachSitesStepByItsLocalWorkThenScalesByTheMeanWork) {
  auto nova = Make("fednova", {}, 1.0);
  EXPECT_TRUE(nova->NormalizesUpdates());
  std::vector<ParamBlock> global = {ParamBlock("item_bias", Scope::kGlobal, 2, 1)};
  global[0].data = {1, 7};
  // Row 0: site A visits it w = 2 times per epoch for epsilon = 1 epoch
  // (tau = 2) and moves it to 3; site B visits it w = 1 time for epsilon = 3
  // epochs (tau = 3) and moves it to 4. Row 1: nobody trains it.
  // Each uploads x + (y - x) / tau with weight w and the steps row
  // (epsilon, 1 / w) with weight w.
  const float a = 1 + (3 - 1) / 2.0f, b = 1 + (4 - 1) / 3.0f;
  AggregateInput in = Sum(global[0], {{{a, 0}, {2, 0}}, {{b, 0}, {1, 0}}});
  ParamBlock steps_shape("item_bias.steps", Scope::kGlobal, 2, 2);
  const AggregateInput steps =
      Sum(steps_shape, {{{1, 0.5f, 0, 0}, {2, 0}}, {{3, 1, 0, 0}, {1, 0}}});
  in.weighted_sum.push_back(steps.weighted_sum[0]);
  in.row_weight.push_back(steps.row_weight[0]);
  ASSERT_TRUE(nova->Aggregate(in, &global).ok());
  // Wang et al.: d_i = (y_i - x) / tau_i = 1 and 1; sum_i p_i d_i with
  // p = (2/3, 1/3) is 1; tau_eff = mean tau = (2 + 3) / 2 = 2.5; x + 2.5.
  // (FedAvg would give (2 * 3 + 1 * 4) / 3 = 3.33.)
  EXPECT_NEAR(global[0].data[0], 3.5f, 1e-5);
  EXPECT_EQ(global[0].data[1], 7.0f);
  // Equal work everywhere is FedAvg: two sites, w = 1 each, one epoch.
  global[0].data = {1, 7};
  AggregateInput equal = Sum(global[0], {{{3, 0}, {1, 0}}, {{5, 0}, {1, 0}}});
  const AggregateInput unit = Sum(steps_shape, {{{1, 1, 0, 0}, {1, 0}}, {{1, 1, 0, 0}, {1, 0}}});
  equal.weighted_sum.push_back(unit.weighted_sum[0]);
  equal.row_weight.push_back(unit.row_weight[0]);
  ASSERT_TRUE(nova->Aggregate(equal, &global).ok());
  EXPECT_NEAR(global[0].data[0], 4.0f, 1e-6);
  // Without the steps blocks the aggregate does not fit.
  EXPECT_EQ(nova->Aggregate(Sum(global[0], {{{3, 0}, {1, 0}}}), &global).code(),
            Status::Code::kInvalidArgument);
  EXPECT_EQ(StepShapes(global)[0].name, "item_bias.steps");
  EXPECT_EQ(SiteExtraShapes(*nova, global).size(), 1u);
}

class Custom : public Strategy {
 public:
  explicit Custom(const StrategyOptions& o) : Strategy(o) {}
  std::string_view name() const override { return "custom"; }
  Status Aggregate(const AggregateInput&, std::vector<ParamBlock>*) override {
    return Status::Ok();  // keeps the model
  }
};

TEST(StrategyRegistryTest, UnknownNameErrorListsRegisteredNames) {
  StrategyRegistry registry = StrategyRegistry::WithBuiltins();
  registry.Register({"custom", "keeps the model", {}, [](const StrategyOptions& o) {
                       return Result<std::unique_ptr<Strategy>>(std::make_unique<Custom>(o));
                     }});
  const std::vector<std::string> names = registry.Names();
  for (const char* n : {"custom", "fedadagrad", "fedadam", "fedavg", "fedavgm", "fednova",
                        "fedprox", "fedyogi", "scaffold"})
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
  const auto missing = registry.Create("fedprox-typo", StrategyOptions{});
  ASSERT_FALSE(missing.ok());
  const std::string& message = missing.status().message();
  EXPECT_EQ(missing.status().code(), Status::Code::kInvalidArgument);
  EXPECT_NE(message.find("fedprox-typo"), std::string::npos) << message;
  EXPECT_NE(message.find("fedavg"), std::string::npos) << message;
  EXPECT_NE(message.find("custom"), std::string::npos) << message;
  EXPECT_TRUE(registry.Create("custom", StrategyOptions{}).ok());
}

TEST(StrategyRegistryTest, RejectsUndeclaredKeysAndOutOfRangeValues) {
  const StrategyRegistry registry = StrategyRegistry::WithBuiltins();
  StrategyOptions options;
  options.params = {{"momentum", 0.5}};
  const auto undeclared = registry.Create("fedadam", options);
  ASSERT_FALSE(undeclared.ok());
  EXPECT_NE(undeclared.status().message().find("\"momentum\""), std::string::npos);
  EXPECT_NE(undeclared.status().message().find("beta1"), std::string::npos);
  options.params = {{"momentum", 1.0}};
  const auto too_big = registry.Create("fedavgm", options);
  ASSERT_FALSE(too_big.ok());
  EXPECT_NE(too_big.status().message().find("strategy.fedavgm.momentum"), std::string::npos)
      << too_big.status().message();
  StrategyOptions zero;
  zero.server_lr = 0.0;
  EXPECT_FALSE(registry.Create("fedavg", zero).ok());
}

RoundConfig Configure(Strategy* strategy, uint32_t round, uint32_t num_sites,
                      const std::vector<uint32_t>& available) {
  RoundContext context;
  context.round = round;
  context.num_sites = num_sites;
  context.available = available;
  return strategy->ConfigureRound(context);
}

std::vector<uint32_t> Range(uint32_t n) {
  std::vector<uint32_t> all(n);
  for (uint32_t i = 0; i < n; ++i) all[i] = i;
  return all;
}

std::unique_ptr<Strategy> Sampling(double fraction, uint64_t seed = 42, uint32_t min_sites = 1,
                                   uint32_t min_available = 1) {
  StrategyOptions options;
  options.fraction = fraction;
  options.seed = seed;
  options.min_sites = min_sites;
  options.min_available = min_available;
  return std::move(StrategyRegistry::WithBuiltins().Create("fedavg", options)).value();
}

TEST(ConfigureRoundTest, SampleIsDeterministicSortedDistinctAndOfTheRequestedSize) {
  auto s = Sampling(0.1);
  const std::vector<uint32_t> a = Configure(s.get(), 3, 100, Range(100)).sites;
  EXPECT_EQ(a, Configure(s.get(), 3, 100, Range(100)).sites);
  EXPECT_EQ(a.size(), 10u);
  EXPECT_TRUE(std::is_sorted(a.begin(), a.end()));
  EXPECT_EQ(std::set<uint32_t>(a.begin(), a.end()).size(), a.size());
  for (uint32_t site : a) EXPECT_LT(site, 100u);
  // Another round or seed draws another sample.
  EXPECT_NE(a, Configure(s.get(), 4, 100, Range(100)).sites);
  EXPECT_NE(a, Configure(Sampling(0.1, 43).get(), 3, 100, Range(100)).sites);
  // Rounding, at least one site, and everyone at fraction 1.
  EXPECT_EQ(Configure(Sampling(0.25).get(), 0, 10, Range(10)).sites.size(), 3u);  // round(2.5)
  EXPECT_EQ(Configure(Sampling(0.01).get(), 0, 10, Range(10)).sites.size(), 1u);
  EXPECT_EQ(Configure(Sampling(1.0).get(), 0, 5, Range(5)).sites, Range(5));
}

TEST(ConfigureRoundTest, EverySiteIsSelectedSometimes) {
  auto s = Sampling(0.25, 7);
  std::vector<int> count(20, 0);
  for (uint32_t round = 0; round < 400; ++round) {
    for (uint32_t site : Configure(s.get(), round, 20, Range(20)).sites) ++count[site];
  }
  // 400 rounds x 5 of 20 sites: 100 each on average.
  for (int c : count) {
    EXPECT_GT(c, 60);
    EXPECT_LT(c, 140);
  }
}

TEST(ConfigureRoundTest, SamplesAvailableSitesAtTheFederationsShareWithAFloorAndAMinimum) {
  // 10 of 100 sites available, fraction 0.05 of 100 = 5 of the available ones.
  const std::vector<uint32_t> available = {3, 9, 17, 20, 41, 55, 60, 71, 88, 99};
  const RoundConfig five = Configure(Sampling(0.05).get(), 1, 100, available);
  ASSERT_EQ(five.sites.size(), 5u);
  for (uint32_t site : five.sites)
    EXPECT_TRUE(std::binary_search(available.begin(), available.end(), site)) << site;
  // min_sites raises the sample, never beyond the available sites.
  EXPECT_EQ(Configure(Sampling(0.05, 42, 8).get(), 1, 100, available).sites.size(), 8u);
  EXPECT_EQ(Configure(Sampling(0.05, 42, 50).get(), 1, 100, available).sites, available);
  // Fewer available than min_available: the round is skipped, saying why.
  const RoundConfig skipped = Configure(Sampling(0.05, 42, 1, 11).get(), 1, 100, available);
  EXPECT_TRUE(skipped.sites.empty());
  EXPECT_NE(skipped.skip_reason.find("10 sites available, fewer than 11"), std::string::npos)
      << skipped.skip_reason;
}

TEST(ConfigureRoundTest, HeterogeneousEpochsAreDrawnPerSiteAndRoundWithinTheRange) {
  StrategyOptions options;
  options.seed = 7;
  options.instructions.local_epochs = 2;
  options.local_epochs_max = 5;
  auto s = std::move(StrategyRegistry::WithBuiltins().Create("fedavg", options)).value();
  std::set<uint32_t> seen;
  for (uint32_t round = 1; round <= 20; ++round) {
    const RoundConfig config = Configure(s.get(), round, 10, Range(10));
    ASSERT_EQ(config.per_site.size(), 10u);
    for (uint32_t site : config.sites) {
      const uint32_t epochs = config.For(site).local_epochs;
      EXPECT_GE(epochs, 2u);
      EXPECT_LE(epochs, 5u);
      seen.insert(epochs);
    }
    EXPECT_EQ(Configure(s.get(), round, 10, Range(10)).per_site.at(3).local_epochs,
              config.For(3).local_epochs);  // deterministic
  }
  EXPECT_EQ(seen, (std::set<uint32_t>{2, 3, 4, 5}));
  // Without a range every site gets the default.
  EXPECT_TRUE(Configure(Sampling(1.0).get(), 1, 10, Range(10)).per_site.empty());
}

}  // namespace
}  // namespace fedrec
