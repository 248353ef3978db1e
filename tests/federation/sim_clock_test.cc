// The simulator's virtual clock and the coordinator's belief in site
// availability: stragglers miss deadlines on simulated time, dead sites cost
// one timeout, refused identities fail at once, and none of it depends on
// the machine or the thread count.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <set>
#include <string>

#include "crypto/sha256.h"
#include "federate.h"

namespace fedrec {
namespace {

Config ClockConfig() {
  Config config = SmallConfig();
  config.federation.sites = 8;
  config.federation.rounds = 4;
  config.sim.compare_centralized = false;
  return config;
}

// 40 sites, a quarter of them sampled per round and a quarter evaluating.
Config SampledConfig(int64_t rounds) {
  Config config = ClockConfig();
  config.federation.sites = 40;
  config.federation.rounds = rounds;
  config.federation.fraction = 0.25;
  config.eval.fraction = 0.25;
  return config;
}

std::set<uint32_t> FailedSites(const RoundMetrics& m) {
  std::set<uint32_t> sites;
  for (const auto& [site, reason] : m.failed_sites) sites.insert(site);
  return sites;
}

std::string WriteTrace(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream(path) << text;
  return path;
}

// A rank's channel with `identity`, accepting any peer's identity: the
// coordinator (rank 0) names the job, the sites learn it from its hello.
SecureTransportOptions UnauthenticatedChannel(const crypto::SigningKey& identity, int rank,
                                              const crypto::Key32& job) {
  SecureTransportOptions o;
  o.identity = identity;
  o.authenticate = false;
  if (rank == 0) o.job_id = job;
  o.learn_job = rank != 0;
  return o;
}

TEST(VirtualClock, StragglerProfileMakesExactlyTheExpectedSitesMissTheDeadline) {
  Config config = ClockConfig();
  // A site trains about 2,000 ratings: 0.02 simulated seconds at full speed,
  // 2 s when a straggler, against a 0.5 s deadline.
  config.sim.compute_speed = 1e5;
  config.sim.stragglers = 0.25;
  config.sim.straggler_slowdown = 100;
  config.federation.round_timeout = 0.5;
  std::set<uint32_t> stragglers;
  ProfileDistribution d;
  d.compute_speed = config.sim.compute_speed;
  d.stragglers = config.sim.stragglers;
  d.straggler_slowdown = config.sim.straggler_slowdown;
  const std::vector<SiteProfile> profiles = DrawSiteProfiles(d, 8, config.seed);
  for (uint32_t s = 0; s < profiles.size(); ++s)
    if (profiles[s].straggler) stragglers.insert(s);
  ASSERT_EQ(stragglers.size(), 2u);

  const FederatedRun reference = Federate(config, 1);
  ASSERT_EQ(reference.rounds.size(), 4u);
  for (const RoundMetrics& m : reference.rounds) {
    EXPECT_EQ(FailedSites(m), stragglers) << "round " << m.round;
    EXPECT_EQ(m.sites_reported, 6u);
    // A straggler's late answer is an answer: it stays available.
    EXPECT_EQ(m.sites_unavailable, 0u);
    for (const auto& [site, reason] : m.failed_sites)
      EXPECT_NE(reason.find("missed the deadline"), std::string::npos) << reason;
    // The update step and the evaluation each wait out the deadline.
    EXPECT_DOUBLE_EQ(m.sim_seconds, 1.0) << "round " << m.round;
  }
  for (uint32_t threads : {1u, 2u, 4u}) {
    const FederatedRun run = Federate(config, threads);
    ASSERT_EQ(run.rounds.size(), reference.rounds.size());
    for (size_t r = 0; r < run.rounds.size(); ++r) {
      EXPECT_EQ(run.rounds[r].failed_sites, reference.rounds[r].failed_sites);
      EXPECT_EQ(run.rounds[r].sim_seconds, reference.rounds[r].sim_seconds);
    }
    EXPECT_EQ(ModelSha256(run.global), ModelSha256(reference.global)) << threads << " threads";
  }
}

TEST(VirtualClock, SameSeedSameModelAcrossThreadCountsWithHeterogeneousSites) {
  Config config = ClockConfig();
  config.federation.fraction = 0.75;
  config.federation.round_timeout = 0.05;
  config.sim.compute_speed = 2e5;
  config.sim.speed_spread = 0.8;
  config.sim.latency_ms = 5;
  config.sim.bandwidth_mbps = 50;
  config.sim.link_spread = 0.5;
  config.sim.stragglers = 0.25;
  config.sim.availability = "bernoulli";
  config.sim.availability_p = 0.8;
  const FederatedRun reference = Federate(config, 1);
  ASSERT_EQ(reference.rounds.size(), 4u);
  uint32_t failures = 0;
  for (const RoundMetrics& m : reference.rounds) failures += m.failures;
  EXPECT_GT(failures, 0u);  // the profile matters
  for (uint32_t threads : {2u, 4u, 1u}) {
    const FederatedRun run = Federate(config, threads);
    ASSERT_EQ(run.rounds.size(), reference.rounds.size());
    for (size_t r = 0; r < run.rounds.size(); ++r) {
      EXPECT_EQ(run.rounds[r].failed_sites, reference.rounds[r].failed_sites);
      EXPECT_EQ(run.rounds[r].sites_unavailable, reference.rounds[r].sites_unavailable);
      EXPECT_EQ(run.rounds[r].sites_selected, reference.rounds[r].sites_selected);
      EXPECT_EQ(run.rounds[r].sim_seconds, reference.rounds[r].sim_seconds);
    }
    EXPECT_EQ(ModelSha256(run.global), ModelSha256(reference.global)) << threads << " threads";
  }
}

// The defaults a user gets: secure aggregation with the graph chosen by
// round size (SecAgg+ at 12 sites), over channels, sites freeing the model
// between requests or keeping it: the same model at every thread count.
TEST(VirtualClock, SameSeedSameModelAcrossThreadCountsWithTheDefaultSecureScheme) {
  Config config = ClockConfig();
  config.federation.sites = 12;
  config.federation.rounds = 2;
  config.security.aggregation = Config().security.aggregation;
  std::vector<crypto::SigningKey> keys;
  for (int r = 0; r <= 12; ++r) keys.push_back(*crypto::GenerateSigningKey());
  crypto::Key32 job{};
  job[0] = 5;
  const auto run = [&](uint32_t threads, bool keep) {
    return Federate(
        config, threads, [keep](WorkerOptions* o, uint32_t) { o->keep_global_model = keep; },
        [&, keep](SimulationOptions* options, CoordinatorOptions* c) {
          c->job_id = job;
          c->sites_keep_model = keep;
          options->channel_options = [&keys, job](int rank) {
            return Result<SecureTransportOptions>(
                UnauthenticatedChannel(keys[static_cast<size_t>(rank)], rank, job));
          };
        });
  };
  const FederatedRun reference = run(1, true);
  ASSERT_EQ(reference.rounds.size(), 2u);
  for (const RoundMetrics& m : reference.rounds) {
    EXPECT_EQ(m.aggregation, "secagg+");
    EXPECT_EQ(m.sites_reported, 12u);
  }
  for (const auto& [threads, keep] : {std::pair{3u, true}, {2u, false}, {1u, false}}) {
    const FederatedRun other = run(threads, keep);
    EXPECT_EQ(ModelSha256(other.global), ModelSha256(reference.global))
        << threads << " threads, sites " << (keep ? "keep" : "free") << " the model";
  }
}

// Sampling at scale: a site that no round contacts makes no channel (and no
// identity, a scalar multiplication), and the model is the one of channels
// all made at start-up.
TEST(SampledSites, OnlySitesARoundContactsMakeAChannelAndTheModelIsTheSame) {
  Config config = SampledConfig(2);
  config.security.aggregation = Config().security.aggregation;
  crypto::Key32 job{};
  job[0] = 9;
  const auto run = [&](bool lazy, std::atomic<uint32_t>* made) {
    return Federate(
        config, 2, nullptr, [&, lazy, made](SimulationOptions* options, CoordinatorOptions* c) {
          c->job_id = job;
          options->lazy_site_channels = lazy;
          options->channel_options = [made, job](int rank) -> Result<SecureTransportOptions> {
            made->fetch_add(1);
            FEDREC_ASSIGN_OR_RETURN(const crypto::SigningKey identity,
                                    crypto::GenerateSigningKey());
            return UnauthenticatedChannel(identity, rank, job);
          };
        });
  };
  std::atomic<uint32_t> eager{0}, lazy{0};
  const FederatedRun all = run(false, &eager);
  const FederatedRun contacted = run(true, &lazy);
  ASSERT_EQ(all.rounds.size(), 2u);
  ASSERT_EQ(contacted.rounds.size(), 2u);
  EXPECT_EQ(eager.load(), 41u);  // the coordinator and every site
  // The coordinator, the first site (made at start-up to check the options
  // every site shares), and at most 10 sites per round and 10 evaluating.
  EXPECT_LE(lazy.load(), 1u + 1u + 2u * 10u + 10u);
  EXPECT_GE(lazy.load(), 1u + 10u);
  for (const RoundMetrics& m : contacted.rounds) {
    EXPECT_EQ(m.sites_reported, 10u);
    EXPECT_EQ(m.failures, 0u);
  }
  EXPECT_EQ(ModelSha256(contacted.global), ModelSha256(all.global));
}

// A sampled federation evaluates mostly at sites no round has trained yet:
// they fit their users' rows to their own ratings first (eval.reconstruct),
// which lowers the error of every evaluation (by 2% at least here), and put
// the initial rows back, so the trained model is the same bit for bit. Sites
// that trained are evaluated as they are: with every site in every round,
// nothing changes.
TEST(SampledSites, UntrainedSitesEvaluateWithTheirUsersFittedAndTheModelIsTheSame) {
  Config config = SampledConfig(3);
  const auto run = [&](bool reconstruct) {
    Config c = config;
    c.eval.reconstruct = reconstruct;
    return Federate(c, 2);
  };
  const FederatedRun fitted = run(true), initial = run(false);
  ASSERT_EQ(fitted.rounds.size(), 3u);
  ASSERT_EQ(initial.rounds.size(), 3u);
  EXPECT_EQ(ModelSha256(fitted.global), ModelSha256(initial.global));
  for (size_t r = 0; r < 3; ++r) {
    ASSERT_TRUE(fitted.rounds[r].evaluated && initial.rounds[r].evaluated);
    EXPECT_EQ(fitted.rounds[r].test.count, initial.rounds[r].test.count) << "round " << r + 1;
    EXPECT_LT(fitted.rounds[r].test.Rmse(), 0.98 * initial.rounds[r].test.Rmse())
        << "round " << r + 1;
  }

  config.federation.fraction = 1.0;
  config.eval.fraction = 1.0;
  const FederatedRun all_fitted = run(true), all_initial = run(false);
  EXPECT_EQ(ModelSha256(all_fitted.global), ModelSha256(all_initial.global));
  for (size_t r = 0; r < all_fitted.rounds.size(); ++r) {
    EXPECT_EQ(all_fitted.rounds[r].test.squared, all_initial.rounds[r].test.squared)
        << "round " << r + 1;
  }
}

TEST(Availability, DeadSiteCostsOneTimeoutThenIsSkippedUntilItAnswers) {
  Config config = ClockConfig();
  config.federation.round_timeout = 600;  // would hang the test if waited in real time
  config.sim.availability = "trace";
  // Site 2 is online only long after the run.
  config.sim.availability_trace = WriteTrace("dead_site.trace", "# site start end\n2 1e9 2e9\n");
  const auto start = std::chrono::steady_clock::now();
  const FederatedRun run = Federate(config, 2);
  const double real =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_EQ(run.rounds.size(), 4u);
  EXPECT_EQ(FailedSites(run.rounds[0]), std::set<uint32_t>{2});
  EXPECT_NE(run.rounds[0].failed_sites.at(2).find("before the round timeout"), std::string::npos);
  EXPECT_GE(run.rounds[0].sim_seconds, 600.0);
  EXPECT_EQ(run.rounds[0].sites_unavailable, 0u);
  for (size_t r = 1; r < run.rounds.size(); ++r) {
    EXPECT_EQ(run.rounds[r].sites_unavailable, 1u);
    EXPECT_EQ(run.rounds[r].sites_selected, 7u);
    EXPECT_EQ(run.rounds[r].failures, 0u);
    EXPECT_TRUE(run.rounds[r].failed_sites.empty());
    EXPECT_LT(run.rounds[r].sim_seconds, 600.0);  // never waited for again
  }
  EXPECT_LT(real, 300.0);  // the virtual timeout cost no real time
}

TEST(Availability, SiteThatAnswersAgainIsSampledAgain) {
  Config config = ClockConfig();
  // Each step's frames take 1 simulated second each way; site 2 comes online
  // at 5 s: it misses round 1 (its plan arrives at 1 s), answers the probe of
  // round 2 (sent at 5 s), and is sampled again from round 3.
  config.sim.latency_ms = 1000;
  config.federation.round_timeout = 3;
  config.sim.availability = "trace";
  config.sim.availability_trace = WriteTrace("returning_site.trace", "2 5 1e9\n");
  const FederatedRun run = Federate(config, 2);
  ASSERT_EQ(run.rounds.size(), 4u);
  EXPECT_EQ(FailedSites(run.rounds[0]), std::set<uint32_t>{2});
  EXPECT_EQ(run.rounds[1].sites_unavailable, 1u);
  EXPECT_EQ(run.rounds[1].sites_selected, 7u);
  for (size_t r = 2; r < run.rounds.size(); ++r) {
    EXPECT_EQ(run.rounds[r].sites_unavailable, 0u) << "round " << r + 1;
    EXPECT_EQ(run.rounds[r].sites_selected, 8u);
    EXPECT_EQ(run.rounds[r].sites_reported, 8u);
  }
}

// The same over authenticated channels: the hellos the offline site missed
// are retried once the coordinator sends it a frame of a later round.
TEST(Availability, SiteThatAnswersAgainIsSampledAgainOverAuthenticatedChannels) {
  Config config = ClockConfig();
  config.federation.sites = 4;
  config.sim.latency_ms = 1000;
  config.federation.round_timeout = 3;
  config.sim.availability = "trace";
  config.sim.availability_trace = WriteTrace("returning_site_channels.trace", "2 5 1e9\n");
  std::vector<crypto::SigningKey> keys;
  for (int r = 0; r <= 4; ++r) keys.push_back(*crypto::GenerateSigningKey());
  crypto::Key32 job{};
  job[0] = 9;
  const FederatedRun run =
      Federate(config, 2, nullptr, [&](SimulationOptions* options, CoordinatorOptions* c) {
        c->job_id = job;
        options->channel_options = [&keys, job](int rank) {
          SecureTransportOptions o;
          o.identity = keys[static_cast<size_t>(rank)];
          if (rank == 0) {
            for (int s = 1; s <= 4; ++s) o.peer_keys[s] = keys[static_cast<size_t>(s)].public_key;
            o.job_id = job;
          } else {
            o.peer_keys[0] = keys[0].public_key;
            o.learn_job = true;
          }
          return Result<SecureTransportOptions>(o);
        };
      });
  ASSERT_EQ(run.rounds.size(), 4u);
  EXPECT_EQ(FailedSites(run.rounds[0]), std::set<uint32_t>{2});
  EXPECT_EQ(run.rounds[1].sites_unavailable, 1u);
  for (size_t r = 2; r < run.rounds.size(); ++r) {
    EXPECT_EQ(run.rounds[r].sites_unavailable, 0u) << "round " << r + 1;
    EXPECT_EQ(run.rounds[r].sites_reported, 4u) << "round " << r + 1;
  }
}

// Runs two rounds over authenticated channels in which site 3 (rank 4) is
// refused: by the coordinator (it presents an unknown key) or, with
// `site_refuses`, refusing the coordinator (it expects another key).
std::vector<RoundMetrics> RunWithRefusedSite(bool site_refuses) {
  Config config = ClockConfig();
  config.federation.rounds = 2;
  config.federation.round_timeout = 600;
  Result<FederatedData> data = LoadFederatedData(config);
  EXPECT_TRUE(data.ok()) << data.status().ToString();
  const uint32_t sites = static_cast<uint32_t>(data->sites.size());
  std::vector<crypto::SigningKey> keys;
  for (uint32_t r = 0; r <= sites + 1; ++r) keys.push_back(*crypto::GenerateSigningKey());
  SimulationOptions options;
  options.threads = 2;
  EXPECT_TRUE(SetSimulationProfiles(config, sites, &options).ok());
  crypto::Key32 job{};
  job[0] = 7;
  options.channel_options = [&](int rank) {
    SecureTransportOptions o;
    if (rank == 0) {
      o.identity = keys[0];
      for (uint32_t s = 1; s <= sites; ++s) o.peer_keys[static_cast<int>(s)] = keys[s].public_key;
      o.job_id = job;
    } else {
      const bool rogue = rank == 4;
      o.identity = rogue && !site_refuses ? keys[sites + 1] : keys[static_cast<size_t>(rank)];
      o.peer_keys[0] = rogue && site_refuses ? keys[sites + 1].public_key : keys[0].public_key;
      o.learn_job = true;
    }
    return Result<SecureTransportOptions>(o);
  };
  CoordinatorOptions coordinator = MakeCoordinatorOptions(config);
  coordinator.rounds = 2;
  coordinator.job_id = job;
  Result<std::unique_ptr<Model>> server = MakeServerModel(config, data->dataset.items.size());
  EXPECT_TRUE(server.ok());
  std::vector<RoundMetrics> rounds;
  Result<SimulationResult> result = RunSimulation(
      options, coordinator, std::move(server).value(),
      std::move(StrategyRegistry::WithBuiltins().Create("fedavg", MakeStrategyOptions(config)))
          .value(),
      MakeWorkerOptions(config), data->dataset.items.size(), std::move(data->sites),
      [&](const RoundMetrics& m) { rounds.push_back(m); });
  EXPECT_TRUE(result.ok()) << result.status().ToString();
  return rounds;
}

void ExpectFailedAtOnce(const std::vector<RoundMetrics>& rounds, const std::string& reason_part) {
  ASSERT_EQ(rounds.size(), 2u);
  EXPECT_EQ(FailedSites(rounds[0]), std::set<uint32_t>{3});
  const std::string& reason = rounds[0].failed_sites.at(3);
  EXPECT_NE(reason.find(reason_part), std::string::npos) << reason;
  EXPECT_LT(rounds[0].sim_seconds, 600.0);  // no timeout, simulated or real
  EXPECT_EQ(rounds[0].sites_reported, 7u);
  EXPECT_EQ(rounds[1].sites_unavailable, 1u);
  EXPECT_TRUE(rounds[1].failed_sites.empty());
}

TEST(Availability, RefusedIdentityFailsAtOnceWithTheChannelsReason) {
  ExpectFailedAtOnce(RunWithRefusedSite(false), "channel refused (unknown peer)");
}

TEST(Availability, SiteRefusingTheCoordinatorFailsAtOnceWithItsNotice) {
  ExpectFailedAtOnce(RunWithRefusedSite(true), "refused the channel: channel hello from");
}

TEST(Availability, TraceLineErrorsNameFileAndLine) {
  const std::string path = WriteTrace("bad.trace", "0 0 10\n# comment\n\n1 5 two\n");
  auto windows = ReadAvailabilityTrace(path, 4);
  ASSERT_FALSE(windows.ok());
  EXPECT_NE(windows.status().message().find(path + ":4: expected \"site start end\""),
            std::string::npos)
      << windows.status().message();
  EXPECT_NE(windows.status().message().find("found \"1 5 two\""), std::string::npos);
  windows = ReadAvailabilityTrace(WriteTrace("bad2.trace", "9 0 1\n"), 4);
  ASSERT_FALSE(windows.ok());
  EXPECT_NE(windows.status().message().find(":1: expected a site index in 0..3, found 9"),
            std::string::npos)
      << windows.status().message();
  windows = ReadAvailabilityTrace(WriteTrace("bad3.trace", "1 5 2\n"), 4);
  ASSERT_FALSE(windows.ok());
  EXPECT_NE(windows.status().message().find("expected 0 <= start < end"), std::string::npos);
}

TEST(Availability, ConfigValuesAreCheckedNamingTheKey) {
  Config config = ClockConfig();
  config.sim.availability = "sometimes";
  Status s = ValidateConfig(config);
  EXPECT_NE(s.message().find("sim.availability"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("\"sometimes\""), std::string::npos) << s.message();
  config = ClockConfig();
  config.sim.stragglers = 1.5;
  s = ValidateConfig(config);
  EXPECT_NE(s.message().find("sim.stragglers"), std::string::npos) << s.message();
  config = ClockConfig();
  config.sim.availability = "trace";
  s = ValidateConfig(config);
  EXPECT_NE(s.message().find("sim.availability_trace"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace fedrec
