// Two tiers (apps/site_group.h): each site of the federated rounds trains its
// local epochs in parameter-server mode over a group of its own shard servers
// and workers. End to end in the simulator: the model is deterministic, the
// same for one or two shard servers per site under bsp, and trains about as
// well as a site that is one rank; the users split over the workers; the
// frames of a site's group and of its coordinator channel keep apart on one
// transport (protocol/rank_split_transport.h); and what two tiers cannot do
// is refused with the key and the value.
#include <gtest/gtest.h>

#include <chrono>
#include <set>
#include <string>
#include <thread>

#include "apps/site_group.h"
#include "protocol/inprocess_transport.h"
#include "protocol/rank_split_transport.h"
#include "tests/federation/federate.h"

namespace fedrec {
namespace {

using std::chrono::milliseconds;

Config TwoTierConfig(int64_t site_workers, int64_t site_shard_servers) {
  Config config = SmallConfig();
  config.federation.sites = 3;
  config.federation.rounds = 4;
  config.federation.round_timeout = 30.0;
  config.cluster.site_workers = site_workers;
  config.cluster.site_shard_servers = site_shard_servers;
  return config;
}

// Federate() with each site's group wired in as `fedrec sim` does.
FederatedRun FederateTwoTiers(const Config& config, uint32_t threads = 2,
                              bool expect_failures = false) {
  Result<FederatedData> data = LoadFederatedData(config);
  EXPECT_TRUE(data.ok()) << data.status().ToString();
  if (!data.ok()) return {};
  SiteGroups groups(config, data->sites);
  EXPECT_EQ(groups.active(), config.cluster.site_workers > 0);
  FederatedRun run = Federate(config, threads, [&groups](WorkerOptions* o, uint32_t site) {
    if (groups.active()) o->trainer = groups.trainer(site);
  });
  Status ended = groups.End();
  EXPECT_TRUE(ended.ok()) << ended.ToString();
  for (const RoundMetrics& m : run.rounds) {
    if (expect_failures) break;
    EXPECT_FALSE(m.aborted) << "round " << m.round << ": " << m.abort_reason;
    EXPECT_TRUE(m.failed_sites.empty())
        << "round " << m.round << ": site " << m.failed_sites.begin()->first << ": "
        << m.failed_sites.begin()->second;
  }
  return run;
}

void ExpectSameModel(const FederatedRun& a, const FederatedRun& b) {
  ASSERT_EQ(a.global.size(), b.global.size());
  for (size_t i = 0; i < a.global.size(); ++i) {
    EXPECT_EQ(a.global[i].name, b.global[i].name);
    EXPECT_EQ(a.global[i].data, b.global[i].data) << "block " << a.global[i].name;
  }
}

TEST(TwoTiers, SameConfigGivesTheSameModelOnEveryRunAndThreadCount) {
  const Config config = TwoTierConfig(2, 1);
  const FederatedRun first = FederateTwoTiers(config, 2);
  ASSERT_FALSE(first.global.empty());
  ExpectSameModel(first, FederateTwoTiers(config, 2));
  ExpectSameModel(first, FederateTwoTiers(config, 1));
}

TEST(TwoTiers, OneOrTwoShardServersPerSiteGiveTheSameModelUnderBsp) {
  const FederatedRun one = FederateTwoTiers(TwoTierConfig(2, 1));
  ASSERT_FALSE(one.global.empty());
  ExpectSameModel(one, FederateTwoTiers(TwoTierConfig(2, 2)));
}

TEST(TwoTiers, TrainsAboutAsWellAsSitesOfOneRank) {
  Config config = TwoTierConfig(3, 2);
  config.federation.rounds = 8;
  const FederatedRun tiers = FederateTwoTiers(config);
  config.cluster.site_workers = 0;
  const FederatedRun flat = FederateTwoTiers(config);
  ASSERT_FALSE(tiers.rounds.empty());
  ASSERT_FALSE(flat.rounds.empty());
  const double tiers_rmse = tiers.rounds.back().test.Rmse();
  const double flat_rmse = flat.rounds.back().test.Rmse();
  EXPECT_LT(tiers_rmse, tiers.rounds.front().test.Rmse());  // it learns
  EXPECT_NE(tiers_rmse, flat_rmse);                         // and trains in its group
  // Minibatch SGD over the group is not the site's serial SGD, but close.
  EXPECT_NEAR(tiers_rmse, flat_rmse, 0.03 * flat_rmse);
  // Two tiers change how a site trains, not what leaves it.
  ASSERT_EQ(tiers.global.size(), flat.global.size());
  for (size_t i = 0; i < flat.global.size(); ++i)
    EXPECT_EQ(tiers.global[i].data.size(), flat.global[i].data.size());
}

TEST(TwoTiers, SiteUsersSplitOverWorkersByUserModuloWorkers) {
  SiteData site;
  for (uint32_t u = 0; u < 7; ++u) {
    site.user_keys.push_back(1000 + u);
    site.train.push_back({u, u % 3, 1.0f + static_cast<float>(u), 0});
    site.train.push_back({u, 5, 2.0f, 0});
    if (u % 2 == 0) site.test.push_back({u, 4, 3.0f, 0});
  }
  const std::vector<SiteData> parts = SplitSiteUsers(site, 3);
  ASSERT_EQ(parts.size(), 3u);
  size_t train = 0, test = 0;
  for (uint32_t w = 0; w < 3; ++w) {
    const SiteData& part = parts[w];
    for (size_t local = 0; local < part.user_keys.size(); ++local)
      EXPECT_EQ(part.user_keys[local], 1000 + local * 3 + w) << "worker " << w;
    for (const Rating& r : part.train) {
      const uint32_t u = r.user * 3 + w;  // the site's user
      ASSERT_LT(r.user, part.user_keys.size());
      EXPECT_TRUE(r.item == u % 3 || r.item == 5);
      if (r.item != 5) {
        EXPECT_EQ(r.value, 1.0f + static_cast<float>(u));
      }
    }
    for (const Rating& r : part.test) EXPECT_EQ((r.user * 3 + w) % 2, 0u);
    train += part.train.size();
    test += part.test.size();
  }
  EXPECT_EQ(parts[0].user_keys.size(), 3u);  // users 0, 3, 6
  EXPECT_EQ(parts[1].user_keys.size(), 2u);  // users 1, 4
  EXPECT_EQ(parts[2].user_keys.size(), 2u);  // users 2, 5
  EXPECT_EQ(train, site.train.size());       // nothing lost
  EXPECT_EQ(test, site.test.size());
}

TEST(TwoTiers, RankSplitTransportRoutesTheGroupsFramesApartFromTheRest) {
  InProcessNetwork network(4);  // rank 0 splits: group {2, 3}, rest {1}
  RankSplitTransport split(&network.endpoint(0), {2, 3});
  ASSERT_TRUE(network.endpoint(1).Send(0, {1}).ok());
  ASSERT_TRUE(network.endpoint(2).Send(0, {2}).ok());
  ASSERT_TRUE(network.endpoint(3).Send(0, {3}).ok());
  ASSERT_TRUE(network.endpoint(1).Send(0, {11}).ok());
  // The group's view sees only 2 and 3, in order, though 1's frame came first.
  Result<Envelope> a = split.group()->Recv(milliseconds(1000));
  Result<Envelope> b = split.group()->Recv(milliseconds(1000));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->from, 2);
  EXPECT_EQ(a->bytes, std::vector<uint8_t>{2});
  EXPECT_EQ(b->from, 3);
  EXPECT_FALSE(split.group()->Recv(milliseconds(50)).ok());  // nothing else of the group
  // The rest keeps the frames the group's view passed over, in order.
  Result<Envelope> c = split.rest()->Recv(milliseconds(1000));
  Result<Envelope> d = split.rest()->Recv(milliseconds(1000));
  ASSERT_TRUE(c.ok() && d.ok());
  EXPECT_EQ(c->bytes, std::vector<uint8_t>{1});
  EXPECT_EQ(d->bytes, std::vector<uint8_t>{11});
  // Sends go straight through either view.
  ASSERT_TRUE(split.group()->Send(3, {7}).ok());
  ASSERT_TRUE(split.rest()->Send(1, {8}).ok());
  Result<Envelope> at3 = network.endpoint(3).Recv(milliseconds(1000));
  Result<Envelope> at1 = network.endpoint(1).Recv(milliseconds(1000));
  ASSERT_TRUE(at3.ok() && at1.ok());
  EXPECT_EQ(at3->from, 0);
  EXPECT_EQ(at3->bytes, std::vector<uint8_t>{7});
  EXPECT_EQ(at1->bytes, std::vector<uint8_t>{8});
  EXPECT_EQ(split.group()->rank(), 0);
  EXPECT_EQ(split.rest()->size(), 4);
}

TEST(TwoTiers, RankSplitTransportViewsReceiveOnTwoThreadsAtOnce) {
  InProcessNetwork network(3);
  RankSplitTransport split(&network.endpoint(0), {2});
  constexpr int kFrames = 200;
  std::vector<uint8_t> got_group, got_rest;
  std::thread group([&] {
    for (int i = 0; i < kFrames; ++i) {
      Result<Envelope> e = split.group()->Recv(milliseconds(5000));
      if (!e.ok()) return;
      got_group.push_back(e->bytes[0]);
    }
  });
  std::thread rest([&] {
    for (int i = 0; i < kFrames; ++i) {
      Result<Envelope> e = split.rest()->Recv(milliseconds(5000));
      if (!e.ok()) return;
      got_rest.push_back(e->bytes[0]);
    }
  });
  for (int i = 0; i < kFrames; ++i) {
    ASSERT_TRUE(network.endpoint(1).Send(0, {static_cast<uint8_t>(i)}).ok());
    ASSERT_TRUE(network.endpoint(2).Send(0, {static_cast<uint8_t>(i)}).ok());
  }
  group.join();
  rest.join();
  ASSERT_EQ(got_group.size(), static_cast<size_t>(kFrames));
  ASSERT_EQ(got_rest.size(), static_cast<size_t>(kFrames));
  for (int i = 0; i < kFrames; ++i) {
    EXPECT_EQ(got_group[i], static_cast<uint8_t>(i));
    EXPECT_EQ(got_rest[i], static_cast<uint8_t>(i));
  }
}

void ExpectConfigError(const Config& config, const std::string& key, const std::string& found) {
  Status status = ValidateConfig(config);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message().find(key), std::string::npos) << status.message();
  EXPECT_NE(status.message().find(found), std::string::npos) << status.message();
}

TEST(TwoTiers, ModelsOtherThanMfAreRefusedWithTheKey) {
  Config config = TwoTierConfig(2, 1);
  config.model.name = "ease";
  ExpectConfigError(config, "model.name", "\"ease\"");
}

TEST(TwoTiers, ProximalAndControlVariateStrategiesAreRefusedWithTheKey) {
  for (const char* strategy : {"fedprox", "scaffold"}) {
    Config config = TwoTierConfig(2, 1);
    config.federation.strategy = strategy;
    ExpectConfigError(config, "federation.strategy", std::string("\"") + strategy + "\"");
  }
}

// A strategy the configuration check does not know (a plug-in) that asks for
// a proximal term: each site fails the round with the reason.
TEST(TwoTiers, ARoundAskingForAProximalTermFailsEachSiteWithTheReason) {
  Config config = TwoTierConfig(2, 1);
  config.federation.strategy = "fedprox";  // past ValidateConfig, as a plug-in is
  config.federation.rounds = 1;
  const FederatedRun run = FederateTwoTiers(config, 2, /*expect_failures=*/true);
  ASSERT_EQ(run.rounds.size(), 1u);
  EXPECT_TRUE(run.rounds[0].aborted);
  ASSERT_EQ(run.rounds[0].failed_sites.size(), 3u);
  for (const auto& [site, reason] : run.rounds[0].failed_sites)
    EXPECT_NE(reason.find("proximal term"), std::string::npos) << "site " << site << ": " << reason;
}

TEST(TwoTiers, OutOfRangeGroupSizesAreRefusedWithTheKey) {
  ExpectConfigError(TwoTierConfig(-1, 1), "cluster.site_workers", "-1");
  ExpectConfigError(TwoTierConfig(5000, 1), "cluster.site_workers", "5000");
  ExpectConfigError(TwoTierConfig(2, 0), "cluster.site_shard_servers", "0");
  EXPECT_TRUE(ValidateConfig(TwoTierConfig(0, 0)).ok());  // one rank per site: unused
}

}  // namespace
}  // namespace fedrec
