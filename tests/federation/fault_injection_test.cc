// Fault injection in the simulator (sim/faults.h): sites drop out at every
// step of plain and securely aggregated rounds, straggle, crash, and their
// frames are lost, duplicated or damaged. Every round must either aggregate
// exactly the sites that survived it (checked against a plaintext shadow sum
// of their weights kept here) or abort cleanly, damaged and duplicated frames
// must never change the model, and training must still converge.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <iostream>
#include <memory>
#include <set>

#include "base/random.h"
#include "crypto/sha256.h"
#include "tests/federation/federate.h"

namespace fedrec {
namespace {

// What the coordinator handed the strategy in one round.
struct Aggregated {
  uint32_t round = 0;
  std::vector<uint32_t> selected;
  std::vector<uint32_t> failed;
  uint32_t sites = 0;
  std::vector<std::vector<double>> row_weight;
  std::vector<SiteUpdate> updates;  // when individual updates were asked for
};

// A strategy that records its input and delegates to FedAvg.
class RecordingStrategy : public Strategy {
 public:
  RecordingStrategy(std::unique_ptr<Strategy> inner, bool individual,
                    std::vector<Aggregated>* record)
      : Strategy(inner->options()),
        inner_(std::move(inner)),
        individual_(individual),
        record_(record) {}
  std::string_view name() const override { return "recording"; }
  bool NeedsIndividualUpdates() const override { return individual_; }
  RoundConfig ConfigureRound(const RoundContext& context) override {
    RoundConfig config = inner_->ConfigureRound(context);
    selected_ = config.sites;
    return config;
  }
  Status Aggregate(const AggregateInput& input, std::vector<ParamBlock>* global) override {
    record_->push_back(Aggregated{input.round, selected_, input.failed, input.sites,
                                  input.row_weight, input.updates});
    return inner_->Aggregate(input, global);
  }

 private:
  std::unique_ptr<Strategy> inner_;
  bool individual_;
  std::vector<Aggregated>* record_;
  std::vector<uint32_t> selected_;
};

struct FaultyRun {
  bool ok = false;
  std::string error;
  std::vector<ParamBlock> global;
  std::vector<RoundMetrics> rounds;
  std::vector<Aggregated> aggregated;
  FaultCounts faults;
};

FaultyRun RunWithFaults(const Config& config, const FaultOptions& faults, uint32_t threads = 2,
                        bool individual = false) {
  FaultyRun run;
  Result<FederatedData> data = LoadFederatedData(config);
  EXPECT_TRUE(data.ok()) << data.status().ToString();
  Result<std::unique_ptr<Model>> server = MakeServerModel(config, data->dataset.items.size());
  EXPECT_TRUE(server.ok()) << server.status().ToString();
  CoordinatorOptions coordinator = MakeCoordinatorOptions(config);
  coordinator.rounds = static_cast<uint32_t>(EffectiveRounds(config));
  auto inner = StrategyRegistry::WithBuiltins().Create(config.federation.strategy,
                                                       MakeStrategyOptions(config));
  EXPECT_TRUE(inner.ok()) << inner.status().ToString();
  auto strategy =
      std::make_unique<RecordingStrategy>(std::move(inner).value(), individual, &run.aggregated);
  SimulationOptions options;
  options.threads = threads;
  Status profiled =
      SetSimulationProfiles(config, static_cast<uint32_t>(data->sites.size()), &options);
  EXPECT_TRUE(profiled.ok()) << profiled.ToString();
  options.faults = faults;
  Result<SimulationResult> result =
      RunSimulation(options, coordinator, std::move(server).value(), std::move(strategy),
                    SiteOptions(config, *data), data->dataset.items.size(), std::move(data->sites),
                    [&](const RoundMetrics& m) { run.rounds.push_back(m); });
  run.ok = result.ok();
  if (!result.ok()) {
    run.error = result.status().ToString();
    return run;
  }
  run.global = result->global;
  run.faults = result->faults;
  return run;
}

std::string ModelHash(const std::vector<ParamBlock>& global) { return ModelSha256(global); }

double FinalRmse(const std::vector<RoundMetrics>& rounds) {
  for (auto it = rounds.rbegin(); it != rounds.rend(); ++it)
    if (it->evaluated) return it->test.Rmse();
  return NAN;
}

// A tiny federation: many short runs stay cheap.
Config TinyConfig(uint64_t seed, uint32_t sites, const std::string& aggregation) {
  Config config;
  config.seed = seed;
  config.data.synthetic.users = 12 * sites;
  config.data.synthetic.items = 24;
  config.data.synthetic.ratings = 80 * sites;
  config.model.factors = 2;
  config.federation.sites = sites;
  config.federation.rounds = 17;
  config.federation.round_timeout = 5.0;
  config.eval.ranking = false;
  config.eval.every = 4;
  config.security.aggregation = aggregation;
  config.security.threshold = 0.5;
  config.sim.compare_centralized = false;
  return config;
}

// Each site's per-row weights, from one fault-free round that shows the
// coordinator individual updates: they depend only on the site's data, so
// they are the same in every round and run of this config.
std::map<uint32_t, std::vector<std::vector<double>>> SiteWeights(Config config) {
  config.security.aggregation = "none";
  config.federation.rounds = 1;
  config.sim.stragglers = 0.0;  // every site reports
  const FaultyRun run = RunWithFaults(config, FaultOptions{}, 2, /*individual=*/true);
  EXPECT_TRUE(run.ok) << run.error;
  std::map<uint32_t, std::vector<std::vector<double>>> weights;
  if (run.aggregated.size() != 1) return weights;
  for (const SiteUpdate& update : run.aggregated[0].updates) weights[update.site] = update.weight;
  EXPECT_EQ(weights.size(), config.federation.sites);
  return weights;
}

TEST(FaultInjection, RandomDropoutsAggregateExactlyTheSurvivorsOrAbortCleanly) {
  Rng rng(20261206);
  uint32_t rounds = 0, aggregated = 0, aborted = 0, dropped_rounds = 0;
  std::set<std::string> steps_seen;
  for (uint32_t run_index = 0; rounds < 1000; ++run_index) {
    const std::string aggregation = run_index % 2 == 0 ? "secagg" : "none";
    const uint32_t sites = 6 + static_cast<uint32_t>(rng.Below(6));  // 6..11
    Config config = TinyConfig(100 + run_index, sites, aggregation);
    config.sim.stragglers = 0.15;
    config.sim.straggler_slowdown = 1e6;  // a straggler misses the deadline
    config.sim.compute_speed = 1e5;
    const auto weights = SiteWeights(config);
    FaultOptions faults;
    faults.seed = 1000 + run_index;
    faults.dropout = 0.4 * rng.Uniform();
    faults.duplicate = 0.05;
    const FaultyRun run = RunWithFaults(config, faults);
    ASSERT_TRUE(run.ok) << run.error;
    ASSERT_EQ(run.rounds.size(), config.federation.rounds);
    size_t next = 0;  // into run.aggregated, in round order
    for (const RoundMetrics& m : run.rounds) {
      ++rounds;
      std::set<uint32_t> failed_in_steps;
      for (const auto& [step, failed] : m.failed_steps) {
        steps_seen.insert(step);
        failed_in_steps.insert(failed.begin(), failed.end());
      }
      ASSERT_EQ(failed_in_steps.size(), m.failed_sites.size()) << "round " << m.round;
      if (!m.failed_sites.empty()) ++dropped_rounds;
      if (m.aborted) {
        ++aborted;
        EXPECT_FALSE(m.abort_reason.empty());
        EXPECT_TRUE(next == run.aggregated.size() || run.aggregated[next].round != m.round)
            << "aborted round " << m.round << " changed the model";
        continue;
      }
      ASSERT_LT(next, run.aggregated.size()) << "round " << m.round;
      const Aggregated& a = run.aggregated[next++];
      ASSERT_EQ(a.round, m.round);
      ++aggregated;
      // The survivors: selected sites whose update reached the sum, i.e. that
      // did not fail before or at the upload. A site that failed later (its
      // survivor signature, its unmasking shares, its evaluation) is in the
      // sum: secure aggregation recovers without it.
      std::set<uint32_t> lost;
      for (const char* step : {"plan", "keys", "shares", "upload"}) {
        if (auto it = m.failed_steps.find(step); it != m.failed_steps.end())
          lost.insert(it->second.begin(), it->second.end());
      }
      std::vector<uint32_t> survivors;
      for (uint32_t s : a.selected)
        if (!lost.contains(s)) survivors.push_back(s);
      for (uint32_t s : lost) {
        EXPECT_TRUE(std::binary_search(a.failed.begin(), a.failed.end(), s))
            << "site " << s << " lost in round " << m.round
            << " but not in the strategy's failures";
      }
      EXPECT_EQ(a.sites, survivors.size()) << "round " << m.round;
      EXPECT_EQ(m.sites_reported, survivors.size());
      if (aggregation == "secagg") {
        EXPECT_GE(survivors.size(), static_cast<size_t>(std::ceil(0.5 * a.selected.size())));
      }
      // The plaintext shadow sum of the survivors' weights.
      ASSERT_FALSE(a.row_weight.empty());
      for (size_t b = 0; b < a.row_weight.size(); ++b) {
        for (size_t r = 0; r < a.row_weight[b].size(); ++r) {
          double shadow = 0.0;
          for (uint32_t s : survivors) shadow += weights.at(s)[b][r];
          ASSERT_NEAR(a.row_weight[b][r], shadow, 1e-6 * (1.0 + shadow))
              << aggregation << " run " << run_index << " round " << m.round << " block " << b
              << " row " << r;
        }
      }
    }
    EXPECT_EQ(next, run.aggregated.size());
  }
  EXPECT_GE(rounds, 1000u);
  EXPECT_GT(aggregated, rounds / 2);
  EXPECT_GT(dropped_rounds, rounds / 4);
  // Sites failed at every step the coordinator waits on (a site that drops
  // at the plan fails at its first answer; survivor signatures are only
  // asked of sites that hold the roster, which these do not).
  for (const char* step : {"keys", "shares", "upload", "unmask"})
    EXPECT_TRUE(steps_seen.contains(step)) << step;
  std::cout << rounds << " rounds: " << aggregated << " aggregated, " << aborted << " aborted, "
            << dropped_rounds << " with failed sites\n";
  RecordProperty("rounds", static_cast<int>(rounds));
  RecordProperty("aborted", static_cast<int>(aborted));
}

Config SmallFaultConfig(const std::string& aggregation) {
  Config config = SmallConfig();
  config.federation.sites = 8;
  config.federation.rounds = 12;
  config.federation.round_timeout = 5.0;
  config.security.aggregation = aggregation;
  config.security.threshold = 0.5;
  return config;
}

void ExpectConvergesUnderDropouts(const std::string& aggregation) {
  const Config config = SmallFaultConfig(aggregation);
  const FaultyRun clean = RunWithFaults(config, FaultOptions{});
  FaultOptions faults;
  faults.seed = 3;
  faults.dropout = 0.4;
  faults.duplicate = 0.05;
  const FaultyRun faulty = RunWithFaults(config, faults);
  ASSERT_TRUE(clean.ok && faulty.ok) << clean.error << faulty.error;
  uint32_t failed = 0;
  for (const RoundMetrics& m : faulty.rounds)
    failed += static_cast<uint32_t>(m.failed_sites.size());
  EXPECT_GT(failed, 0u);
  double first = NAN;  // the first evaluated round's
  for (const RoundMetrics& m : faulty.rounds) {
    if (m.evaluated) {
      first = m.test.Rmse();
      break;
    }
  }
  const double clean_rmse = FinalRmse(clean.rounds), faulty_rmse = FinalRmse(faulty.rounds);
  EXPECT_LT(faulty_rmse, first);
  EXPECT_LT(faulty_rmse, 1.05 * clean_rmse) << "clean " << clean_rmse;
}

TEST(FaultInjection, PlainTrainingConvergesWithFortyPercentDropouts) {
  ExpectConvergesUnderDropouts("none");
}

TEST(FaultInjection, SecAggTrainingConvergesWithFortyPercentDropouts) {
  ExpectConvergesUnderDropouts("secagg");
}

TEST(FaultInjection, DuplicatedFramesNeverChangeTheModel) {
  for (const std::string aggregation : {"none", "secagg"}) {
    const Config config = SmallFaultConfig(aggregation);
    const FaultyRun clean = RunWithFaults(config, FaultOptions{});
    FaultOptions faults;
    faults.duplicate = 0.3;
    const FaultyRun duplicated = RunWithFaults(config, faults);
    ASSERT_TRUE(clean.ok && duplicated.ok) << clean.error << duplicated.error;
    EXPECT_GT(duplicated.faults.duplicated, 10u);
    for (const RoundMetrics& m : duplicated.rounds)
      EXPECT_TRUE(m.failed_sites.empty()) << aggregation << " round " << m.round;
    EXPECT_EQ(ModelHash(duplicated.global), ModelHash(clean.global)) << aggregation;
  }
}

TEST(FaultInjection, DamagedFramesAreRejectedAndActLikeLostOnes) {
  // The same draws damage (corrupt) or lose (frame_loss) the same frames: a
  // damaged frame must be caught by its checksum and never reach a role, so
  // the model is the one of losing it.
  for (const std::string aggregation : {"none", "secagg"}) {
    const Config config = SmallFaultConfig(aggregation);
    FaultOptions damaged;
    damaged.seed = 11;
    damaged.corrupt = 0.05;
    FaultOptions lost = damaged;
    lost.corrupt = 0.0;
    lost.frame_loss = 0.05;
    const FaultyRun a = RunWithFaults(config, damaged);
    const FaultyRun b = RunWithFaults(config, lost);
    ASSERT_TRUE(a.ok && b.ok) << a.error << b.error;
    EXPECT_GT(a.faults.corrupted, 0u);
    EXPECT_EQ(a.faults.corrupted, b.faults.lost);
    EXPECT_EQ(ModelHash(a.global), ModelHash(b.global)) << aggregation;
    for (size_t r = 0; r < a.rounds.size() && r < b.rounds.size(); ++r) {
      EXPECT_EQ(a.rounds[r].failed_sites.size(), b.rounds[r].failed_sites.size());
      EXPECT_EQ(a.rounds[r].aborted, b.rounds[r].aborted);
    }
  }
}

TEST(FaultInjection, SameFaultsGiveTheSameModelWhateverTheThreadCount) {
  const Config config = SmallFaultConfig("secagg");
  FaultOptions faults;
  faults.seed = 5;
  faults.dropout = 0.3;
  faults.duplicate = 0.1;
  faults.corrupt = 0.02;
  faults.delay_s = 0.5;
  const FaultyRun one = RunWithFaults(config, faults, 1);
  const FaultyRun three = RunWithFaults(config, faults, 3);
  ASSERT_TRUE(one.ok && three.ok) << one.error << three.error;
  EXPECT_EQ(ModelHash(one.global), ModelHash(three.global));
  ASSERT_EQ(one.rounds.size(), three.rounds.size());
  for (size_t r = 0; r < one.rounds.size(); ++r)
    EXPECT_EQ(one.rounds[r].failed_steps, three.rounds[r].failed_steps) << "round " << r + 1;
}

TEST(FaultInjection, CrashedSiteCostsOneTimeoutThenIsSkipped) {
  Config config = SmallFaultConfig("secagg");
  FaultOptions faults;
  faults.silences.push_back(SiteSilence{3, 2, RoundStep::kUpload, /*crash=*/true});
  const FaultyRun run = RunWithFaults(config, faults);
  ASSERT_TRUE(run.ok) << run.error;
  ASSERT_EQ(run.rounds.size(), config.federation.rounds);
  EXPECT_TRUE(run.rounds[0].failed_sites.empty());
  const RoundMetrics& crash = run.rounds[1];
  EXPECT_FALSE(crash.aborted) << crash.abort_reason;
  ASSERT_TRUE(crash.failed_steps.contains("upload"));
  EXPECT_EQ(crash.failed_steps.at("upload"), std::vector<uint32_t>{3});
  for (size_t r = 2; r < run.rounds.size(); ++r) {
    const RoundMetrics& m = run.rounds[r];
    EXPECT_EQ(m.sites_unavailable, 1u) << "round " << m.round;
    EXPECT_TRUE(m.failed_sites.empty()) << "round " << m.round << " waited for the dead site";
    EXPECT_EQ(m.sites_reported, config.federation.sites - 1);
  }
}

TEST(FaultInjection, SiteSlowedByDelaysMissesTheDeadlineAsAFailure) {
  Config config = SmallFaultConfig("none");
  config.federation.rounds = 2;
  FaultOptions faults;
  faults.delay_s = 10.0;  // every frame to a site arrives after the 5 s round timeout
  const FaultyRun run = RunWithFaults(config, faults);
  ASSERT_TRUE(run.ok) << run.error;
  ASSERT_FALSE(run.rounds.empty());
  EXPECT_TRUE(run.rounds[0].aborted);
  ASSERT_TRUE(run.rounds[0].failed_steps.contains("upload"));
  EXPECT_EQ(run.rounds[0].failed_steps.at("upload").size(), config.federation.sites);
}

TEST(FaultInjection, CoordinatorCrashEndsTheRunWithAnErrorNamingIt) {
  Config config = SmallFaultConfig("secagg");
  FaultOptions faults;
  faults.coordinator_crash_round = 3;
  faults.coordinator_crash_step = RoundStep::kShares;
  const FaultyRun run = RunWithFaults(config, faults);
  ASSERT_FALSE(run.ok);
  EXPECT_NE(run.error.find("coordinator crashed at round 3, step shares"), std::string::npos)
      << run.error;
  // Rounds 1 and 2 ran (under secure aggregation round 2's evaluation rides
  // on round 3, which never came).
  EXPECT_GE(run.rounds.size(), 1u);
  EXPECT_LE(run.rounds.size(), 2u);
}

// The last round is evaluated as the follow-on of its secure sum
// (eval.follow_on): the same totals as a secure evaluation of its own, and
// when a survivor stays silent the others are evaluated by one.
TEST(FaultInjection, FollowOnEvaluationEqualsItsOwnSecureSumAndFallsBackToOne) {
  Config config = SmallFaultConfig("secagg");
  config.federation.rounds = 2;
  for (const bool silent : {false, true}) {
    FaultOptions faults;
    // Site 3 never sends its evaluation sums of round 2 (their frames carry
    // the evaluation's round label).
    if (silent) faults.silences.push_back(SiteSilence{3, EvalSecAggRound(2), RoundStep::kUpload});
    Config own = config;
    own.eval.follow_on = false;
    const FaultyRun follow_on = RunWithFaults(config, faults);
    const FaultyRun separate = RunWithFaults(own, faults);
    ASSERT_TRUE(follow_on.ok && separate.ok) << follow_on.error << separate.error;
    ASSERT_EQ(follow_on.rounds.size(), 2u);
    ASSERT_EQ(separate.rounds.size(), 2u);
    const RoundMetrics& a = follow_on.rounds[1];
    const RoundMetrics& b = separate.rounds[1];
    ASSERT_TRUE(a.evaluated && b.evaluated);
    const uint32_t evaluated = config.federation.sites - (silent ? 1 : 0);
    EXPECT_EQ(a.sites_evaluated, evaluated);
    EXPECT_EQ(b.sites_evaluated, evaluated);
    EXPECT_EQ(a.test.Rmse(), b.test.Rmse());
    EXPECT_EQ(a.test.count, b.test.count);
    EXPECT_EQ(ModelHash(follow_on.global), ModelHash(separate.global));
  }
}

TEST(FaultInjection, DropoutDrawsDependOnlyOnSeedRoundAndSite) {
  FaultOptions a;
  a.seed = 9;
  a.dropout = 0.3;
  uint32_t drops = 0;
  std::map<RoundStep, uint32_t> by_step;
  for (uint32_t round = 1; round <= 200; ++round) {
    for (uint32_t site = 0; site < 20; ++site) {
      const RoundStep step = DropoutStep(a, round, site);
      EXPECT_EQ(step, DropoutStep(a, round, site));
      if (step != RoundStep::kNone) {
        ++drops;
        ++by_step[step];
      }
    }
  }
  // 4,000 draws at 30 %: within 5 standard deviations of 1,200.
  EXPECT_NEAR(drops, 1200.0, 5 * std::sqrt(4000 * 0.3 * 0.7));
  EXPECT_EQ(by_step.size(), 6u);  // plan, keys, shares, upload, signature, unmask
  EXPECT_FALSE(by_step.contains(RoundStep::kEval));
}

}  // namespace
}  // namespace fedrec
