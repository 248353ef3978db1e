// Multi-task models (shared_bottom, mmoe, ple) trained federated: one site is
// centralized training bit for bit, ten sites land near it, and what the
// coordinator receives holds no local block.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "apps/job.h"
#include "crypto/sha256.h"
#include "protocol/frame.h"
#include "protocol/messages.h"
#include "tests/federation/federate.h"
#include "tests/federation/recording_transport.h"
#include "tests/federation/spawn.h"
#include "worker/worker.h"

namespace fedrec {
namespace {

Config MultiTaskConfig(const std::string& model, uint32_t sites) {
  Config config = SmallConfig();
  config.model.name = model;
  config.data.synthetic.side_features = true;
  config.federation.sites = sites;
  config.federation.rounds = 4;
  config.federation.local_epochs = 1;
  config.train.epochs = 4;
  // Sites decay their rate per global epoch as centralized training does, and
  // plain FedAvg makes one site's model the global one.
  config.federation.lr_decay = config.train.lr_decay;
  config.federation.server_lr = 1.0;
  return config;
}

CentralizedResult Central(const Config& config) {
  Result<Dataset> dataset = LoadDataset(config);
  EXPECT_TRUE(dataset.ok()) << dataset.status().ToString();
  Result<CentralizedResult> result = TrainCentralized(config, *dataset, nullptr);
  EXPECT_TRUE(result.ok()) << result.status().ToString();
  return std::move(result).value();
}

class MultiTaskFederated : public ::testing::TestWithParam<std::string> {};

TEST_P(MultiTaskFederated, OneSiteEqualsCentralizedBitForBit) {
  const Config config = MultiTaskConfig(GetParam(), 1);
  const CentralizedResult central = Central(config);
  const FederatedRun federated = Federate(config);
  ASSERT_EQ(federated.rounds.size(), 4u);
  ASSERT_EQ(federated.global.size(), central.global.size());
  for (size_t b = 0; b < central.global.size(); ++b) {
    EXPECT_TRUE(federated.global[b].data == central.global[b].data)
        << "block " << central.global[b].name << " differs";
  }
  EXPECT_EQ(ModelSha256(federated.global), ModelSha256(central.global));
  EXPECT_EQ(federated.rounds.back().test.Rmse(), central.eval.errors.Rmse());
}

TEST_P(MultiTaskFederated, TenSitesUnderSecAggLandWithinTwoPercentOfCentralized) {
  // The federation's own defaults (server step, sites' schedule, local
  // epochs a round: the model's own, 3) against centralized training's.
  Config config = MultiTaskConfig(GetParam(), 10);
  const Config defaults;
  config.security.aggregation = "secagg";
  config.federation.lr_decay = defaults.federation.lr_decay;
  config.federation.server_lr = defaults.federation.server_lr;
  config.federation.local_epochs = defaults.federation.local_epochs;
  config.federation.rounds = 12;
  config.train.epochs = 12;
  const CentralizedResult central = Central(config);
  const FederatedRun federated = Federate(config);
  ASSERT_EQ(federated.rounds.size(), 12u);
  const double fed = federated.rounds.back().test.Rmse(), cen = central.eval.errors.Rmse();
  EXPECT_LT(fed, 1.02 * cen) << "federated " << fed << ", centralized " << cen;
}

INSTANTIATE_TEST_SUITE_P(Models, MultiTaskFederated,
                         ::testing::Values("shared_bottom", "mmoe", "ple"));

TEST(MultiTaskFederatedPrivacy, LocalBlocksNeverReachTheCoordinator) {
  Config config = MultiTaskConfig("mmoe", 3);
  config.federation.rounds = 2;
  config.model.params["mmoe.local_towers"] = 1;
  Result<FederatedData> data = LoadFederatedData(config);
  ASSERT_TRUE(data.ok()) << data.status().ToString();
  const uint32_t items = data->dataset.items.size();
  // The sites' model: which blocks are local.
  const WorkerOptions site_options = SiteOptions(config, *data);
  ModelData probe;
  probe.items = items;
  probe.train = data->sites[0].train;
  probe.user_keys = data->sites[0].user_keys;
  probe.user_features = data->sites[0].user_features;
  probe.item_features = data->item_features;
  Result<std::unique_ptr<Model>> site_model = site_options.make_model(probe);
  ASSERT_TRUE(site_model.ok()) << site_model.status().ToString();
  std::set<std::string> local, global;
  for (const ParamBlock& b : (*site_model)->blocks())
    (IsGlobal(b.scope) ? global : local).insert(b.name);
  ASSERT_TRUE(local.count("user_emb") && local.count("user_bias"));
  ASSERT_GT(local.size(), 2u);  // towers and task gates too (local_towers)

  std::vector<std::vector<uint8_t>> received;
  testing::SpawnRanks(4, [&](int rank, Transport& t) {
    if (rank == 0) {
      testing::RecordingTransport recording(&t);
      Result<std::unique_ptr<Model>> server = MakeServerModel(config, items);
      ASSERT_TRUE(server.ok()) << server.status().ToString();
      CoordinatorOptions options = MakeCoordinatorOptions(config);
      options.site_ranks = {1, 2, 3};
      options.items = items;
      Coordinator coordinator(options, std::move(server).value(),
                              std::move(StrategyRegistry::WithBuiltins()
                                            .Create("fedavg", MakeStrategyOptions(config))
                                            .value()),
                              &recording);
      EXPECT_TRUE(coordinator.Run(nullptr).ok());
      received = std::move(recording.received);
      return;
    }
    WorkerOptions options = site_options;
    options.site = static_cast<uint32_t>(rank - 1);
    Worker worker(options, items, data->sites[rank - 1], &t);
    EXPECT_TRUE(worker.Serve(std::chrono::seconds(60)).ok());
  });
  size_t updates = 0;
  for (const auto& bytes : received) {
    Result<FrameView> frame = DecodeFrame(bytes);
    ASSERT_TRUE(frame.ok());
    if (frame->header.type != MessageType::kModelUpdate) continue;
    Result<ModelUpdate> update = DecodeMessage<ModelUpdate>(*frame);
    ASSERT_TRUE(update.ok());
    ++updates;
    std::set<std::string> names;
    for (const BlockUpdate& b : update->blocks) {
      EXPECT_EQ(local.count(b.name), 0u) << "local block " << b.name << " reached the coordinator";
      names.insert(b.name);
    }
    EXPECT_EQ(names, global);  // every global block, nothing else
  }
  EXPECT_EQ(updates, 6u);  // 3 sites x 2 rounds
}

}  // namespace
}  // namespace fedrec
