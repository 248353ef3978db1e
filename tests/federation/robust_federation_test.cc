// Robust aggregation in whole federations: individual updates reach the
// strategy, Byzantine sites (sim.byzantine_*) send their attacks, and the
// robust rules hold federated MF where FedAvg does not.
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <string>
#include <vector>

#include "apps/job.h"
#include "coordinator/aggregator.h"
#include "sim/profiles.h"
#include "tests/federation/federate.h"

namespace fedrec {
namespace {

ModelUpdate UpdateOf(uint32_t round, std::vector<uint32_t> rows, std::vector<float> weights,
                     std::vector<float> values) {
  ModelUpdate u;
  u.round = round;
  u.model_version = 0;
  u.blocks.push_back(
      BlockUpdate{"item_bias", 1, std::move(rows), std::move(weights), std::move(values)});
  return u;
}

TEST(UpdateAggregator, KeepsEachSitesUpdateDenseAndAscendingWhenAsked) {
  const std::vector<ParamBlock> shapes = {ParamBlock("item_bias", Scope::kGlobal, 3, 1)};
  UpdateAggregator aggregator(shapes, 0, 1, {0, 2, 5}, /*keep_updates=*/true);
  // Out of order: site 5, then 2, then 0; site 2 sends rows 0 and 2 only.
  ASSERT_TRUE(aggregator.Add(5, UpdateOf(1, {1}, {4}, {7})).ok());
  ASSERT_TRUE(aggregator.Add(2, UpdateOf(1, {0, 2}, {1, 3}, {1, 2})).ok());
  ASSERT_TRUE(aggregator.Add(0, UpdateOf(1, {0}, {2}, {3})).ok());
  const AggregateInput in = aggregator.Finish();
  ASSERT_EQ(in.updates.size(), 3u);
  EXPECT_EQ(in.updates[0].site, 0u);
  EXPECT_EQ(in.updates[1].site, 2u);
  EXPECT_EQ(in.updates[2].site, 5u);
  EXPECT_EQ(in.updates[1].weight[0], (std::vector<double>{1, 0, 3}));
  EXPECT_EQ(in.updates[1].values[0], (std::vector<float>{1, 0, 2}));
  EXPECT_EQ(in.updates[2].weight[0], (std::vector<double>{0, 4, 0}));
  // The sums are filled as well.
  EXPECT_EQ(in.row_weight[0], (std::vector<double>{3, 4, 3}));
  EXPECT_EQ(in.weighted_sum[0], (std::vector<double>{1 + 6, 28, 6}));
}

TEST(UpdateAggregator, KeepsNoUpdatesForStrategiesOfSums) {
  const std::vector<ParamBlock> shapes = {ParamBlock("item_bias", Scope::kGlobal, 3, 1)};
  UpdateAggregator aggregator(shapes, 0, 1, {0, 1});
  ASSERT_TRUE(aggregator.Add(1, UpdateOf(1, {1}, {4}, {7})).ok());
  ASSERT_TRUE(aggregator.Add(0, UpdateOf(1, {0}, {2}, {3})).ok());
  const AggregateInput in = aggregator.Finish();
  EXPECT_TRUE(in.updates.empty());
  EXPECT_EQ(in.sites, 2u);
}

TEST(ByzantineSites, ExactlyRoundedShareDrawnFromTheSeed) {
  const std::vector<uint32_t> chosen = ChooseByzantineSites(0.2, 10, 7);
  ASSERT_EQ(chosen.size(), 2u);
  EXPECT_LT(chosen[0], chosen[1]);
  EXPECT_LT(chosen[1], 10u);
  EXPECT_EQ(ChooseByzantineSites(0.2, 10, 7), chosen);
  EXPECT_EQ(ChooseByzantineSites(0.25, 100, 7).size(), 25u);
  EXPECT_TRUE(ChooseByzantineSites(0.0, 10, 7).empty());
}

TEST(ByzantineSites, BadSettingsAreRefusedNamingTheKey) {
  Config config;
  config.sim.byzantine_attack = "flip";
  Status s = ValidateConfig(config);
  EXPECT_NE(s.message().find("sim.byzantine_attack"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("scale, sign_flip or random"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("\"flip\""), std::string::npos) << s.message();
  config = Config();
  config.sim.byzantine_fraction = 1.0;
  s = ValidateConfig(config);
  EXPECT_NE(s.message().find("sim.byzantine_fraction"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("[0, 1)"), std::string::npos) << s.message();
  config = Config();
  config.sim.byzantine_scale = 0.0;
  s = ValidateConfig(config);
  EXPECT_NE(s.message().find("sim.byzantine_scale"), std::string::npos) << s.message();
}

TEST(ByzantineSites, ModelUploadingStatisticsIsRefusedNamingTheModel) {
  Config config = SmallConfig();
  config.model.name = "ials";
  config.federation.sites = 2;
  config.federation.rounds = 1;
  config.sim.byzantine_fraction = 0.5;
  Result<FederatedData> data = LoadFederatedData(config);
  ASSERT_TRUE(data.ok()) << data.status().ToString();
  Result<std::unique_ptr<Model>> server = MakeServerModel(config, data->dataset.items.size());
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  SimulationOptions options;
  ASSERT_TRUE(SetSimulationProfiles(config, 2, &options).ok());
  Result<SimulationResult> run = RunSimulation(
      options, MakeCoordinatorOptions(config), std::move(server).value(),
      std::move(StrategyRegistry::WithBuiltins().Create("fedavg", MakeStrategyOptions(config)))
          .value(),
      MakeWorkerOptions(config), data->dataset.items.size(), std::move(data->sites), nullptr);
  ASSERT_FALSE(run.ok());
  EXPECT_NE(run.status().message().find("found model ials"), std::string::npos)
      << run.status().message();
}

// One site, one round, plain FedAvg: the global model is the site's upload,
// so an attacked run shows the attack's values against the honest run.
TEST(ByzantineSites, SignFlipAndScaleSendTheStepTurnedAndStretched) {
  Config config = SmallConfig();
  config.federation.sites = 1;
  config.federation.rounds = 1;
  config.federation.server_lr = 1.0;
  Result<FederatedData> data = LoadFederatedData(config);
  ASSERT_TRUE(data.ok());
  const std::vector<ParamBlock> initial =
      MakeServerModel(config, data->dataset.items.size()).value()->GlobalBlocks();
  const FederatedRun honest = Federate(config);
  config.sim.byzantine_fraction = 0.6;  // round(0.6 x 1) = the one site
  config.sim.byzantine_scale = 3.0;
  for (const std::string attack : {"sign_flip", "scale"}) {
    config.sim.byzantine_attack = attack;
    const FederatedRun attacked = Federate(config);
    const double s = attack == "scale" ? 3.0 : -3.0;
    ASSERT_EQ(attacked.global.size(), honest.global.size());
    size_t changed = 0;
    for (size_t b = 0; b < honest.global.size(); ++b) {
      const ParamBlock& h = honest.global[b];
      const ParamBlock& a = attacked.global[b];
      for (size_t i = 0; i < h.data.size(); ++i) {
        const double x = initial[b].data[i], t = h.data[i];
        // Statistics (the global mean) are sent as trained.
        const double expected = h.scope == Scope::kGlobal ? x + s * (t - x) : t;
        EXPECT_NEAR(a.data[i], expected, 1e-5 + 1e-5 * std::abs(expected))
            << attack << ", block " << h.name << ", entry " << i;
        changed += t != x;
      }
    }
    EXPECT_GT(changed, 100u) << "the honest site trained too little to tell";
  }
}

TEST(ByzantineSites, KrumWithTooFewSitesRefusesEachRoundKeepingTheModel) {
  Config config = SmallConfig();
  config.federation.sites = 2;
  config.federation.rounds = 2;
  config.federation.strategy = "krum";
  Result<FederatedData> data = LoadFederatedData(config);
  ASSERT_TRUE(data.ok());
  const std::vector<ParamBlock> initial =
      MakeServerModel(config, data->dataset.items.size()).value()->GlobalBlocks();
  const FederatedRun run = Federate(config);
  ASSERT_EQ(run.rounds.size(), 2u);
  for (const RoundMetrics& m : run.rounds) {
    EXPECT_TRUE(m.aborted);
    EXPECT_NE(m.abort_reason.find("krum, round " + std::to_string(m.round) +
                                  ": 2 site update(s), the rule needs at least 3"),
              std::string::npos)
        << m.abort_reason;
  }
  for (size_t b = 0; b < initial.size(); ++b)
    EXPECT_EQ(run.global[b].data, initial[b].data) << initial[b].name;
}

// Ten sites, two of them Byzantine, federated MF on small synthetic low-rank
// ratings dense enough that most item rows are trained at every site: the
// per-row rules tolerate Byzantine sites while they are fewer than a share
// beta (trimmed mean) or half (median) of the sites that trained a row, so a
// row trained by few sites is where 2 of 10 can outvote the others.
Config ByzantineConfig(const std::string& strategy, const std::string& attack) {
  Config config = SmallConfig();
  config.data.synthetic.users = 600;
  config.data.synthetic.items = 200;
  config.data.synthetic.ratings = 40000;
  config.federation.sites = 10;
  config.federation.rounds = 12;
  config.federation.strategy = strategy;
  config.eval.every = config.federation.rounds;  // the final model only
  config.sim.threads = 2;
  if (!attack.empty()) {
    config.sim.byzantine_fraction = 0.2;
    config.sim.byzantine_attack = attack;
    config.sim.byzantine_scale = 10.0;
  }
  return config;
}

// The final test RMSE; NaN when the model diverged (FedAvg under attack: the
// sites' training overflows, their updates are refused and the last round
// aborts with a model that predicts NaN).
double FinalRmse(const std::string& strategy, const std::string& attack) {
  const FederatedRun run = Federate(ByzantineConfig(strategy, attack));
  if (run.rounds.empty() || run.rounds.back().test.count == 0) return NAN;
  return run.rounds.back().test.Rmse();
}

TEST(ByzantineSites, RobustRulesStayWithinFivePercentOfTheCleanRunWhileFedAvgDegrades) {
  for (const std::string strategy : {"fedmedian", "fedtrimmedavg", "krum", "fedavg"}) {
    const double clean = FinalRmse(strategy, "");
    ASSERT_TRUE(std::isfinite(clean)) << strategy;
    for (const std::string attack : {"sign_flip", "scale"}) {
      const double attacked = FinalRmse(strategy, attack);
      std::cout << strategy << ": clean RMSE " << clean << ", 2 of 10 sites Byzantine (" << attack
                << ", scale 10) " << attacked << "\n";
      if (strategy == "fedavg") {
        EXPECT_TRUE(!std::isfinite(attacked) || attacked > 1.2 * clean)
            << "fedavg under " << attack << ": clean " << clean << ", attacked " << attacked;
      } else {
        EXPECT_LT(attacked, 1.05 * clean) << strategy << " under " << attack << ": clean " << clean;
      }
    }
  }
}

}  // namespace
}  // namespace fedrec
