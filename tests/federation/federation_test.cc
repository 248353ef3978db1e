// End-to-end federated MF: simulator vs centralized baseline, determinism.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "apps/job.h"
#include "apps/model_files.h"
#include "crypto/sha256.h"
#include "sim/simulation.h"
#include "tests/federation/federate.h"

namespace fedrec {
namespace {

TEST(Federation, OneSiteFullParticipationOneEpochEqualsCentralizedBitForBit) {
  Config config = SmallConfig();
  config.federation.sites = 1;
  config.federation.server_lr = 1.0;  // plain FedAvg: the site's model becomes the global one
  config.federation.lr_decay = config.train.lr_decay;  // the centralized schedule
  config.train.epochs = config.federation.rounds;
  Result<Dataset> dataset = LoadDataset(config);
  ASSERT_TRUE(dataset.ok());
  Result<CentralizedResult> trained = TrainCentralized(config, *dataset, nullptr);
  ASSERT_TRUE(trained.ok()) << trained.status().ToString();
  const CentralizedResult& central = *trained;
  const FederatedRun federated = Federate(config);
  ASSERT_EQ(federated.global.size(), central.global.size());
  for (size_t b = 0; b < central.global.size(); ++b) {
    EXPECT_EQ(federated.global[b].name, central.global[b].name);
    EXPECT_TRUE(federated.global[b].data == central.global[b].data)
        << "block " << central.global[b].name << " differs";
  }
  EXPECT_EQ(ModelSha256(federated.global), ModelSha256(central.global));
  ASSERT_FALSE(federated.rounds.empty());
  EXPECT_DOUBLE_EQ(federated.rounds.back().test.Rmse(), central.eval.errors.Rmse());
}

// A strategy's state (FedAdam's moments) goes to the run directory's
// strategy.json and comes back into a fresh strategy unchanged.
TEST(Federation, StrategyStateSurvivesItsRunFileAndOtherFilesAreRefusedSayingWhy) {
  const std::string dir = testing::TempDir() + "/strategy_state";
  std::filesystem::create_directories(dir);
  Config config = SmallConfig();
  config.federation.sites = 3;
  config.federation.rounds = 2;
  auto adam = StrategyRegistry::WithBuiltins().Create("fedadam", MakeStrategyOptions(config));
  ASSERT_TRUE(adam.ok());
  std::vector<ParamBlock> global = {ParamBlock("item_bias", Scope::kGlobal, 2, 1)};
  AggregateInput in;
  in.weighted_sum = {{0.3, 0.0}};
  in.row_weight = {{1.0, 0.0}};
  in.sites = 1;
  ASSERT_TRUE((*adam)->Aggregate(in, &global).ok());
  const StrategyState state = (*adam)->State();
  ASSERT_FALSE(state.vectors.empty());
  ASSERT_TRUE(SaveStrategyState(dir, "fedadam", state).ok());
  Result<StrategyState> loaded = LoadStrategyState(dir + "/strategy.json", "fedadam");
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(*loaded, state);  // doubles round-trip exactly
  auto fresh = StrategyRegistry::WithBuiltins().Create("fedadam", MakeStrategyOptions(config));
  ASSERT_TRUE((*fresh)->Restore(*loaded).ok());
  EXPECT_EQ((*fresh)->State(), state);

  const Result<StrategyState> other = LoadStrategyState(dir + "/strategy.json", "fedyogi");
  ASSERT_FALSE(other.ok());
  EXPECT_NE(other.status().message().find(
                "expected the state of strategy fedyogi, found strategy fedadam"),
            std::string::npos)
      << other.status().message();
  std::ofstream(dir + "/bad.json") << R"({"strategy": "fedadam", "vectors": {"m.x": [1, "two"]}})";
  const Result<StrategyState> bad = LoadStrategyState(dir + "/bad.json", "fedadam");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("bad.json: expected vectors.m.x[1] to be a number, "
                                        "found \"two\""),
            std::string::npos)
      << bad.status().message();
  EXPECT_EQ(LoadStrategyState(dir + "/missing.json", "fedadam").status().code(),
            Status::Code::kNotFound);
}

TEST(Federation, TenSitesByUserWithinTwoPercentOfCentralizedRmse) {
  Config config;  // the demo's data: ML-100K-shaped synthetic ratings
  config.eval.ranking = false;
  config.security.aggregation = "none";
  config.federation.sites = 10;
  config.federation.rounds = 20;
  config.train.epochs = config.federation.rounds * LocalEpochs(config);
  Result<Dataset> dataset = LoadDataset(config);
  ASSERT_TRUE(dataset.ok());
  Result<CentralizedResult> trained = TrainCentralized(config, *dataset, nullptr);
  ASSERT_TRUE(trained.ok()) << trained.status().ToString();
  const double central = trained->eval.errors.Rmse();
  const FederatedRun federated = Federate(config);
  ASSERT_EQ(federated.rounds.size(), 20u);
  const double fed = federated.rounds.back().test.Rmse();
  EXPECT_LT(fed, central * 1.02) << "federated " << fed << " vs centralized " << central;
  for (const RoundMetrics& m : federated.rounds) {
    EXPECT_EQ(m.sites_reported, 10u);
    EXPECT_EQ(m.failures, 0u);
    EXPECT_GT(m.bytes_sent, 0u);
    EXPECT_GT(m.bytes_received, 0u);
  }
}

TEST(Simulation, FinalModelIsBitIdenticalForOneTwoAndEightThreads) {
  Config config = SmallConfig();
  config.federation.sites = 12;
  config.federation.fraction = 0.5;
  config.federation.local_epochs = 2;
  const std::string one = ModelSha256(Federate(config, 1).global);
  EXPECT_EQ(one, ModelSha256(Federate(config, 2).global));
  EXPECT_EQ(one, ModelSha256(Federate(config, 8).global));
}

TEST(Simulation, SiteSamplingSelectsTheConfiguredShareEachRound) {
  Config config = SmallConfig();
  config.federation.sites = 10;
  config.federation.fraction = 0.3;
  const FederatedRun run = Federate(config);
  ASSERT_EQ(run.rounds.size(), 6u);
  for (const RoundMetrics& m : run.rounds) {
    EXPECT_EQ(m.sites_selected, 3u);
    EXPECT_EQ(m.sites_reported, 3u);
    EXPECT_TRUE(m.evaluated);
    EXPECT_GT(m.test.count, 0u);
  }
}

TEST(Simulation, FederatedTrainingReducesTestErrorOverRounds) {
  Config config = SmallConfig();
  config.federation.sites = 5;
  const FederatedRun run = Federate(config);
  ASSERT_EQ(run.rounds.size(), 6u);
  EXPECT_LT(run.rounds.back().test.Rmse(), run.rounds.front().test.Rmse());
}

TEST(Simulation, DirichletPartitionTrainsEverySite) {
  Config config = SmallConfig();
  config.federation.sites = 6;
  config.federation.partition = "dirichlet";
  config.federation.dirichlet_alpha = 0.2;
  const FederatedRun run = Federate(config);
  ASSERT_EQ(run.rounds.size(), 6u);
  EXPECT_EQ(run.rounds.back().sites_reported, 6u);
  EXPECT_TRUE(std::isfinite(run.rounds.back().test.Rmse()));
}

}  // namespace
}  // namespace fedrec

namespace fedrec {
namespace {

// Per-site files: each site reads its own file; items are numbered in site
// order (train file, then test file) and users stay at their site.
TEST(Simulation, PerSiteFilesPartitionGivesEachSiteItsOwnFile) {
  const char* tmp = std::getenv("FEDREC_TEST_TMPDIR");
  const std::string dir = std::string(tmp ? tmp : ::testing::TempDir()) + "/site_files";
  std::filesystem::create_directories(dir);
  // Site 0: users a, b; site 1: users b (another person with the same raw ID
  // at another site), c. Items x, y, z; site 1 also rates w.
  std::ofstream(dir + "/site0.csv") << "a,x,5\na,y,3\nb,x,4\nb,z,2\na,z,1\nb,y,4\n";
  std::ofstream(dir + "/site1.csv") << "b,w,5\nc,x,4\nc,w,3\nb,y,2\nc,z,1\nb,x,5\n";
  Config config;
  config.federation.partition = "files";
  config.data.site_train = dir + "/site{site}.csv";
  config.data.format = "csv";
  config.data.test_fraction = 0.0;
  config.federation.sites = 2;
  Result<FederatedData> data = LoadFederatedData(config);
  ASSERT_TRUE(data.ok()) << data.status().ToString();
  ASSERT_EQ(data->sites.size(), 2u);
  EXPECT_EQ(data->sites[0].train.size(), 6u);
  EXPECT_EQ(data->sites[1].train.size(), 6u);
  EXPECT_EQ(data->sites[0].user_keys.size(), 2u);  // a, b
  EXPECT_EQ(data->sites[1].user_keys.size(), 2u);  // b, c
  ASSERT_EQ(data->dataset.items.size(), 4u);
  EXPECT_EQ(data->dataset.items.Raw(3), "w");  // first seen at site 1
  for (const Rating& r : data->sites[1].train) {
    if (r.value == 3.0f) {
      EXPECT_EQ(data->dataset.items.Raw(r.item), "w");
    }
  }

  config.data.site_train = dir + "/missing{site}.csv";
  Result<FederatedData> missing = LoadFederatedData(config);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("site 0"), std::string::npos);
  EXPECT_NE(missing.status().message().find("missing0.csv"), std::string::npos);
}

}  // namespace
}  // namespace fedrec
