// Sharded aggregation of federated rounds (cluster.shard_servers = S > 0,
// coordinator/aggregation_shard.h), end to end in the simulator: the shard
// servers sum slices of the updates, the coordinator receives neither the
// updates nor their bytes, and the model is the one S = 0 gives, in the clear,
// under secure aggregation and under threshold Paillier, with dropouts and
// evaluations riding along.
#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "coordinator/aggregation_shard.h"
#include "crypto/sha256.h"
#include "protocol/inprocess_transport.h"
#include "tests/federation/dp_config.h"
#include "tests/federation/federate.h"

namespace fedrec {
namespace {

Config ShardedConfig(const std::string& aggregation, int64_t shards) {
  Config config = SmallConfig();
  config.federation.sites = 6;
  config.federation.rounds = 4;
  config.security.aggregation = aggregation;
  config.cluster.shard_servers = shards;
  config.federation.round_timeout = 20.0;
  return config;
}

void ExpectNoAbort(const FederatedRun& run) {
  for (const RoundMetrics& m : run.rounds)
    EXPECT_FALSE(m.aborted) << "round " << m.round << ": " << m.abort_reason;
}

// Paillier: few sites, a small model and 1024-bit keys keep it fast.
Config ShardedPaillierConfig() {
  Config config = ShardedConfig("paillier", 0);
  config.data.synthetic.users = 60;
  config.data.synthetic.items = 40;
  config.data.synthetic.ratings = 1500;
  config.model.factors = 4;
  config.federation.sites = 5;
  config.federation.rounds = 3;
  config.security.paillier_bits = 1024;
  return config;
}

void ExpectSameModelForEveryShardCount(
    const std::string& aggregation, Config base,
    const std::function<void(WorkerOptions*, uint32_t)>& per_site = nullptr) {
  base.security.aggregation = aggregation;
  base.cluster.shard_servers = 0;
  const FederatedRun alone = Federate(base, 2, per_site);
  ExpectNoAbort(alone);
  ASSERT_FALSE(alone.global.empty());
  for (int64_t shards : {1, 2, 3}) {
    Config config = base;
    config.cluster.shard_servers = shards;
    const FederatedRun sharded = Federate(config, 2, per_site);
    ExpectNoAbort(sharded);
    EXPECT_EQ(ModelSha256(sharded.global), ModelSha256(alone.global))
        << aggregation << " with " << shards << " shard servers";
    ASSERT_EQ(sharded.rounds.size(), alone.rounds.size());
    for (size_t r = 0; r < alone.rounds.size(); ++r) {
      EXPECT_EQ(sharded.rounds[r].sites_reported, alone.rounds[r].sites_reported);
      EXPECT_DOUBLE_EQ(sharded.rounds[r].train_mse, alone.rounds[r].train_mse);
      EXPECT_EQ(sharded.rounds[r].evaluated, alone.rounds[r].evaluated);
      if (alone.rounds[r].evaluated) {
        EXPECT_DOUBLE_EQ(sharded.rounds[r].test.Rmse(), alone.rounds[r].test.Rmse());
      }
    }
  }
}

TEST(ShardedAggregation, InTheClearGivesTheSameModelForZeroToThreeShards) {
  ExpectSameModelForEveryShardCount("none", ShardedConfig("none", 0));
}

TEST(ShardedAggregation, UnderSecAggGivesTheSameModelForZeroToThreeShards) {
  // Evaluations ride on the next round's secure sum, so their words are
  // sliced over the shards too.
  ExpectSameModelForEveryShardCount("secagg", ShardedConfig("secagg", 0));
}

TEST(ShardedAggregation, UnderSecAggPlusGivesTheSameModelForZeroToThreeShards) {
  Config config = ShardedConfig("secagg+", 0);
  config.federation.sites = 40;  // enough sites for a sparse graph
  config.federation.rounds = 2;
  ExpectSameModelForEveryShardCount("secagg+", config);
}

TEST(ShardedAggregation, UnderPaillierGivesTheSameModelForZeroToThreeShards) {
  const Config config = ShardedPaillierConfig();
  ExpectSameModelForEveryShardCount("paillier", config, PaillierTestSites(config.federation.sites));
}

TEST(ShardedAggregation, DifferentialPrivacyGivesTheSameModelForZeroToThreeShards) {
  // The privacy count block and, distributed, each site's noise share are
  // sliced like the model: the shards' sums are the coordinator's own.
  for (const char* mode : {"central", "distributed"}) {
    SCOPED_TRACE(mode);
    Config config = ShardedConfig("secagg", 0);
    SetUserDp(mode, &config);
    ExpectSameModelForEveryShardCount("secagg", config);
  }
}

TEST(ShardedAggregation, ScaffoldExtraBlocksAreSlicedLikeTheModel) {
  Config config = ShardedConfig("secagg", 0);
  config.federation.strategy = "scaffold";
  ExpectSameModelForEveryShardCount("secagg", config);
}

TEST(ShardedAggregation, SiteDroppingBeforeItsMaskedInputGivesTheSameModelAsUnsharded) {
  const auto drop = SilenceSite(2, 2, RoundStep::kUpload);  // shares sent, masked slices never
  Config config = ShardedConfig("secagg", 0);
  config.federation.round_timeout = 3.0;
  const FederatedRun alone = Federate(config, 2, nullptr, drop);
  config.cluster.shard_servers = 2;
  const FederatedRun sharded = Federate(config, 2, nullptr, drop);
  ExpectNoAbort(sharded);
  ASSERT_EQ(sharded.rounds.size(), 4u);
  EXPECT_EQ(sharded.rounds[1].sites_reported, 5u);
  EXPECT_EQ(sharded.rounds[1].failures, 1u);
  EXPECT_EQ(ModelSha256(sharded.global), ModelSha256(alone.global));
}

TEST(ShardedAggregation, PaillierSiteDroppingBeforeItsUpdateGivesTheSameModelAsUnsharded) {
  Config config = ShardedPaillierConfig();
  config.federation.round_timeout = 3.0;
  const auto sites = PaillierTestSites(config.federation.sites);
  // Key share held, encrypted slices never sent.
  const auto drop = SilenceSite(2, 2, RoundStep::kUpload);
  const FederatedRun alone = Federate(config, 2, sites, drop);
  config.cluster.shard_servers = 2;
  const FederatedRun sharded = Federate(config, 2, sites, drop);
  ExpectNoAbort(sharded);
  ASSERT_EQ(sharded.rounds.size(), 3u);
  EXPECT_EQ(sharded.rounds[1].sites_reported, 4u);
  EXPECT_EQ(sharded.rounds[1].failures, 1u);
  EXPECT_EQ(ModelSha256(sharded.global), ModelSha256(alone.global));
}

TEST(ShardedAggregation, PaillierCoordinatorReceivesNoCiphertextUpdate) {
  Config config = ShardedPaillierConfig();
  config.federation.sites = 8;  // threshold 5
  config.federation.rounds = 3;
  config.eval.every = 100;  // only after the last round
  const auto sites = PaillierTestSites(config.federation.sites);
  uint64_t received[2] = {0, 0};
  for (int64_t s : {0, 2}) {
    config.cluster.shard_servers = s;
    const FederatedRun run = Federate(config, 2, sites);
    ExpectNoAbort(run);
    // Round 2: no key set-up nor evaluation, only the updates (or notices)
    // and the partial decryptions.
    received[s == 0 ? 0 : 1] = run.rounds.at(1).bytes_received;
  }
  // 8 encrypted updates and 5 partial decryptions against 8 notices and the
  // same 5 partials.
  EXPECT_LT(received[1] * 2, received[0]);
}

TEST(ShardedAggregation, PaillierSliceOfTheWrongSizeIsRefusedNamingShardSiteAndRound) {
  // Coordinator rank 0, shard server 1 of 2 at rank 1, sites 0 and 1 at
  // ranks 2 and 3; 10 ciphertexts of 8 bytes: slice 1 is ciphertexts 5..10.
  InProcessNetwork network(4);
  AggregationShard shard(0, &network.endpoint(1));
  const auto deliver = [&] {
    Result<Envelope> in = network.endpoint(1).Recv(std::chrono::seconds(5));
    ASSERT_TRUE(in.ok()) << in.status().ToString();
    bool done = false;
    ASSERT_TRUE(shard.Handle(*in, &done).ok());
  };
  ShardRound announce;
  announce.round = 5;
  announce.aggregation = Aggregation::kPaillier;
  announce.shard = 1;
  announce.shards = 2;
  announce.sites = {0, 1};
  announce.site_ranks = {2, 3};
  announce.length = 10;
  announce.values = 100;
  announce.unit_bytes = 8;
  ASSERT_TRUE(network.endpoint(0).Send(1, EncodeMessage(announce, 5, 0)).ok());
  deliver();
  for (uint32_t site : {0u, 1u}) {
    PaillierUpdate slice;
    slice.round = 5;
    slice.site = site;
    slice.values = 100;
    slice.ciphertexts.assign(site == 1 ? 39 : 40, 7);  // site 1's is a byte short
    ASSERT_TRUE(network.endpoint(static_cast<int>(site) + 2)
                    .Send(1, EncodeMessage(slice, 5, site + 2))
                    .ok());
    deliver();
  }
  ShardClose close;
  close.round = 5;
  close.sites = {0, 1};
  close.forward_to = {0};
  ASSERT_TRUE(network.endpoint(0).Send(1, EncodeMessage(close, 5, 0)).ok());
  deliver();
  Result<Envelope> answer = network.endpoint(0).Recv(std::chrono::seconds(5));
  ASSERT_TRUE(answer.ok());
  Result<FrameView> frame = DecodeFrame(*answer);
  ASSERT_TRUE(frame.ok());
  Result<ShardSums> sums = DecodeMessage<ShardSums>(*frame);
  ASSERT_TRUE(sums.ok()) << sums.status().ToString();
  for (const std::string part :
       {"shard server 1 (rank 1), round 5", "the slice of site 1 (rank 3)", "39 bytes",
        "expected round 5, site 1, 100 values, 40 bytes (ciphertexts 5..10 of 8 bytes)"}) {
    EXPECT_NE(sums->error.find(part), std::string::npos) << sums->error;
  }
  // Nothing was sent on to the decrypting site.
  EXPECT_FALSE(network.endpoint(2).Recv(std::chrono::milliseconds(0)).ok());
}

TEST(ShardedAggregation, PaillierShardServerSendsItsSlicesToEachBatchOfDecryptingSites) {
  // Coordinator rank 0, shard server 0 of 1 at rank 1, sites 0..2 at ranks
  // 2..4; 3 ciphertexts of 4 bytes. Site 0 decrypts first, then (as when the
  // first decrypting site fails) sites 1 and 2.
  InProcessNetwork network(5);
  AggregationShard shard(0, &network.endpoint(1));
  const auto deliver = [&] {
    Result<Envelope> in = network.endpoint(1).Recv(std::chrono::seconds(5));
    ASSERT_TRUE(in.ok()) << in.status().ToString();
    bool done = false;
    ASSERT_TRUE(shard.Handle(*in, &done).ok());
  };
  ShardRound announce;
  announce.round = 3;
  announce.aggregation = Aggregation::kPaillier;
  announce.shards = 1;
  announce.sites = {0, 1, 2};
  announce.site_ranks = {2, 3, 4};
  announce.length = 3;
  announce.values = 30;
  announce.unit_bytes = 4;
  ASSERT_TRUE(network.endpoint(0).Send(1, EncodeMessage(announce, 3, 0)).ok());
  deliver();
  for (uint32_t site : {2u, 0u, 1u}) {  // in any order
    PaillierUpdate slice;
    slice.round = 3;
    slice.site = site;
    slice.values = 30;
    slice.ciphertexts.assign(12, static_cast<uint8_t>(site));
    ASSERT_TRUE(network.endpoint(static_cast<int>(site) + 2)
                    .Send(1, EncodeMessage(slice, 3, site + 2))
                    .ok());
    deliver();
  }
  for (const std::vector<uint32_t>& batch : {std::vector<uint32_t>{0}, {1, 2}}) {
    ShardClose close;
    close.round = 3;
    close.sites = {0, 1, 2};
    close.forward_to = batch;
    ASSERT_TRUE(network.endpoint(0).Send(1, EncodeMessage(close, 3, 0)).ok());
    deliver();
    Result<Envelope> answer = network.endpoint(0).Recv(std::chrono::seconds(5));
    ASSERT_TRUE(answer.ok());
    Result<ShardSums> sums = DecodeMessage<ShardSums>(*DecodeFrame(*answer));
    ASSERT_TRUE(sums.ok()) << sums.status().ToString();
    EXPECT_TRUE(sums->error.empty()) << sums->error;
    EXPECT_EQ(sums->sites, (std::vector<uint32_t>{0, 1, 2}));
    for (uint32_t site : batch) {
      Result<Envelope> in =
          network.endpoint(static_cast<int>(site) + 2).Recv(std::chrono::seconds(5));
      ASSERT_TRUE(in.ok());
      EXPECT_EQ(in->from, 1);
      Result<PaillierSum> slices = DecodeMessage<PaillierSum>(*DecodeFrame(*in));
      ASSERT_TRUE(slices.ok()) << slices.status().ToString();
      EXPECT_EQ(slices->values, 30u);
      ASSERT_EQ(slices->updates.size(), 3u);
      for (uint32_t s = 0; s < 3; ++s) {  // site order
        EXPECT_EQ(slices->updates[s].site, s);
        EXPECT_EQ(slices->updates[s].ciphertexts, std::vector<uint8_t>(12, s));
      }
    }
  }
}

TEST(ShardedAggregation, CoordinatorReceivesOnlySumsAndTheShardsTheSlices) {
  for (const std::string aggregation : {"none", "secagg"}) {
    Config config = ShardedConfig(aggregation, 0);
    config.federation.sites = 20;
    config.federation.rounds = 2;
    config.eval.every = 100;  // only after the last round
    uint64_t alone_received = 0, sharded_received = 0;
    for (int64_t s : {0, 2}) {
      config.cluster.shard_servers = s;
      const FederatedRun run = Federate(config);
      ExpectNoAbort(run);
      uint64_t received = 0;
      for (const RoundMetrics& m : run.rounds) received += m.bytes_received;
      (s == 0 ? alone_received : sharded_received) = received;
    }
    // 20 updates against 2 slices of one sum (plus the small notices).
    EXPECT_LT(sharded_received * 3, alone_received) << aggregation;
  }
}

TEST(ShardedAggregation, StrategyNeedingEachUpdateIsRefusedWithShards) {
  Config config = ShardedConfig("none", 2);
  config.federation.strategy = "fedmedian";
  Result<FederatedData> data = LoadFederatedData(config);
  ASSERT_TRUE(data.ok());
  Result<std::unique_ptr<Model>> server = MakeServerModel(config, data->dataset.items.size());
  ASSERT_TRUE(server.ok());
  CoordinatorOptions coordinator = MakeCoordinatorOptions(config);
  auto strategy = StrategyRegistry::WithBuiltins().Create(config.federation.strategy,
                                                          MakeStrategyOptions(config));
  ASSERT_TRUE(strategy.ok());
  SimulationOptions options;
  options.shard_servers = 2;
  Result<SimulationResult> result =
      RunSimulation(options, coordinator, std::move(server).value(), std::move(strategy).value(),
                    MakeWorkerOptions(config), data->dataset.items.size(), std::move(data->sites),
                    [](const RoundMetrics&) {});
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("shard servers"), std::string::npos)
      << result.status().message();
}

}  // namespace
}  // namespace fedrec
