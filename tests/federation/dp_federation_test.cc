// Differential privacy in whole federations (the simulator) and its checks:
// determinism, the budget, sites' own noise floor, configuration errors,
// user-level clipping of MF and the coordinator's DP state.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "algorithms/model.h"
#include "apps/config.h"
#include "apps/job.h"
#include "coordinator/coordinator_dp.h"
#include "crypto/rdp_accountant.h"
#include "tests/federation/dp_config.h"
#include "tests/federation/federate.h"

namespace fedrec {
namespace {

Config DpConfig(const std::string& mode, const std::string& unit) {
  Config config = SmallConfig();
  config.federation.sites = 5;
  config.dp.mode = mode;
  config.dp.unit = unit;
  config.dp.clip = 0.5;
  config.dp.noise_multiplier = 1.0;
  config.federation.server_lr = 5.0;
  return config;
}

bool SameBlocks(const std::vector<ParamBlock>& a, const std::vector<ParamBlock>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i].name != b[i].name || a[i].data != b[i].data) return false;
  return true;
}

TEST(DpFederation, CentralUserLevelRunIsDeterministicAndReportsGrowingEpsilon) {
  Config config = DpConfig("central", "user");
  SetUserDp("central", &config);
  const FederatedRun a = Federate(config, 2);
  const FederatedRun b = Federate(config, 1);
  ASSERT_EQ(a.rounds.size(), 6u);
  ASSERT_FALSE(a.global.empty());
  EXPECT_TRUE(SameBlocks(a.global, b.global));
  double last = 0.0;
  for (const RoundMetrics& m : a.rounds) {
    EXPECT_FALSE(m.aborted) << m.abort_reason;
    ASSERT_TRUE(m.dp.on);
    EXPECT_GT(m.dp.epsilon, last);
    last = m.dp.epsilon;
    EXPECT_EQ(m.dp.delta, 1e-5);
    EXPECT_EQ(m.dp.units, 300u);  // every synthetic user, every round
  }
  // The clip adapts: round 2's differs from the configured start.
  EXPECT_EQ(a.rounds[0].dp.clip, 0.5);
  EXPECT_NE(a.rounds[1].dp.clip, 0.5);
  // The noise is there: another seed gives another model.
  Config other = config;
  other.seed = 8;
  EXPECT_FALSE(SameBlocks(Federate(other, 2).global, a.global));
}

TEST(DpFederation, DistributedNoiseUnderSecAggIsDeterministicAndTrains) {
  Config config = DpConfig("distributed", "site");
  config.security.aggregation = "secagg";
  config.federation.server_lr = 1.0;
  config.dp.clip = 2.0;
  config.dp.noise_multiplier = 0.5;
  const FederatedRun a = Federate(config, 2);
  const FederatedRun b = Federate(config, 1);
  ASSERT_EQ(a.rounds.size(), 6u);
  EXPECT_TRUE(SameBlocks(a.global, b.global));
  for (const RoundMetrics& m : a.rounds) {
    EXPECT_FALSE(m.aborted) << m.abort_reason;
    EXPECT_EQ(m.dp.units, 5u);  // one unit per site
    // Shares sized for 4 of the 5 sites (security.dropout_rate 0.05): all 5
    // in the sum carry more than the configured noise.
    EXPECT_DOUBLE_EQ(m.dp.noise_stddev, std::sqrt(5.0 / 4.0));
  }
  ASSERT_TRUE(a.rounds.back().evaluated);
  const double rmse = std::sqrt(a.rounds.back().test.squared / a.rounds.back().test.count);
  EXPECT_LT(rmse, 2.0);
}

TEST(DpFederation, BudgetStopsBeforeTheTargetEpsilonWithAReason) {
  Config config = DpConfig("central", "site");
  config.federation.rounds = 20;
  config.dp.noise_multiplier = 2.0;
  config.dp.target_epsilon = 4.0;
  const FederatedRun run = Federate(config, 2);
  ASSERT_FALSE(run.rounds.empty());
  EXPECT_LT(run.rounds.size(), 20u);
  const RoundMetrics& last = run.rounds.back();
  EXPECT_LE(last.dp.epsilon, 4.0);
  EXPECT_NE(last.stop_reason.find("dp.target_epsilon"), std::string::npos) << last.stop_reason;
  EXPECT_TRUE(last.evaluated);  // the last round run is evaluated
  RdpAccountant next;
  next.Step(1.0, 2.0, static_cast<uint32_t>(run.rounds.size()) + 1);
  EXPECT_GT(next.Epsilon(1e-5).epsilon, 4.0);
}

TEST(DpFederation, SitesRefuseAPlanWithLessNoiseThanTheyWereConfiguredWith) {
  Config config = DpConfig("central", "site");
  config.federation.rounds = 2;
  const FederatedRun run = Federate(config, 2, [](WorkerOptions* o, uint32_t) {
    o->dp.noise_multiplier = 3.0;  // the coordinator plans for 1
  });
  ASSERT_EQ(run.rounds.size(), 2u);
  for (const RoundMetrics& m : run.rounds) {
    EXPECT_TRUE(m.aborted);
    ASSERT_FALSE(m.failed_sites.empty());
    EXPECT_NE(m.failed_sites.begin()->second.find("requires at least"), std::string::npos)
        << m.failed_sites.begin()->second;
  }
}

TEST(DpConfigCheck, DistributedNeedsSecureAggregation) {
  Config config = DpConfig("distributed", "site");
  config.security.aggregation = "none";
  const Status s = ValidateConfig(config);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("dp.mode"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("secagg"), std::string::npos) << s.message();
  config.security.aggregation = "paillier";
  EXPECT_FALSE(ValidateConfig(config).ok());
  config.security.aggregation = "secagg";
  EXPECT_TRUE(ValidateConfig(config).ok()) << ValidateConfig(config).message();
}

TEST(DpConfigCheck, BadValuesNameTheKeyExpectedAndFound) {
  Config config = DpConfig("centrall", "site");
  Status s = ValidateConfig(config);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("none | central | distributed"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("\"centrall\""), std::string::npos) << s.message();
  config = DpConfig("central", "users");
  EXPECT_NE(ValidateConfig(config).message().find("dp.unit"), std::string::npos);
  config = DpConfig("central", "site");
  config.dp.noise_multiplier = 0.0;
  s = ValidateConfig(config);
  EXPECT_NE(s.message().find("dp.noise_multiplier"), std::string::npos) << s.message();
  config = DpConfig("central", "site");
  config.dp.target_quantile = 0.5;  // no count noise given
  s = ValidateConfig(config);
  EXPECT_NE(s.message().find("dp.count_stddev"), std::string::npos) << s.message();
  config = DpConfig("central", "site");
  config.cluster.shard_servers = 2;  // sharded sums compose with DP
  EXPECT_TRUE(ValidateConfig(config).ok()) << ValidateConfig(config).message();
}

TEST(DpConfigCheck, UserUnitNeedsAModelThatTrainsEachUserApart) {
  Config config = DpConfig("central", "user");
  config.model.name = "bpr";
  Result<std::unique_ptr<Model>> model = MakeServerModel(config, 10);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  auto strategy =
      StrategyRegistry::WithBuiltins().Create("fedavg", MakeStrategyOptions(config)).value();
  const Status s = CheckFederatedModel(config, **model, *strategy);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("dp.unit"), std::string::npos) << s.message();
  config.model.name = "mf";
  auto scaffold =
      StrategyRegistry::WithBuiltins().Create("scaffold", MakeStrategyOptions(config)).value();
  Result<std::unique_ptr<Model>> mf = MakeServerModel(config, 10);
  EXPECT_NE(CheckFederatedModel(config, **mf, *scaffold).message().find("dp.mode"),
            std::string::npos);
}

TEST(DpMf, EachUsersChangeIsClippedAndTheGlobalBlocksStay) {
  ModelData data;
  data.items = 6;
  data.user_keys = {11, 12, 13};
  for (uint32_t u = 0; u < 3; ++u)
    for (uint32_t i = 0; i < 6; i += 1 + u) data.train.push_back({u, i, 1.0f + u + i % 3, 0});
  ModelOptions options;
  options.factors = 4;
  auto model = ModelRegistry::WithBuiltins().Create("mf", options, data).value();
  ASSERT_TRUE(model->TrainsClippedPerUser());
  const std::vector<ParamBlock> before = model->GlobalBlocks();
  TrainPlan plan;
  plan.round = 1;
  plan.epochs = 5;
  plan.lr = 0.1f;
  for (double clip : {1e-3, 1e3}) {
    std::vector<ParamBlock> sum = model->UploadShapes();
    for (ParamBlock& b : sum) b.data.assign(size_t{b.rows} * b.cols, 0.0f);
    PerUserClip c;
    c.clip = clip;
    Result<PerUserStats> stats = model->TrainClippedPerUser(plan, c, &sum);
    ASSERT_TRUE(stats.ok()) << stats.status().ToString();
    EXPECT_EQ(stats->users, 3u);
    EXPECT_EQ(stats->unclipped, clip > 1.0 ? 3u : 0u);
    double norm2 = 0.0;
    for (const ParamBlock& b : sum)
      for (float x : b.data) norm2 += double{x} * x;
    EXPECT_GT(norm2, 0.0);
    EXPECT_LE(std::sqrt(norm2), 3 * clip * (1 + 1e-5));  // three users, each within clip
    EXPECT_TRUE(SameBlocks(model->GlobalBlocks(), before));
    EXPECT_EQ(FindBlock(sum, "global_mean")->data[0], 0.0f);
  }
  // Users sampled at rate 0: nobody takes part.
  std::vector<ParamBlock> sum = model->UploadShapes();
  for (ParamBlock& b : sum) b.data.assign(size_t{b.rows} * b.cols, 0.0f);
  PerUserClip none;
  none.clip = 1.0;
  none.user_fraction = 1e-12;
  EXPECT_EQ(model->TrainClippedPerUser(plan, none, &sum)->users, 0u);
}

TEST(DpMf, ModelsThatCannotTrainEachUserApartSaySo) {
  ModelData data;
  data.items = 3;
  data.user_keys = {1};
  data.train = {{0, 1, 1.0f, 0}};
  auto model = ModelRegistry::WithBuiltins().Create("bpr", ModelOptions(), data).value();
  std::vector<ParamBlock> sum;
  Result<PerUserStats> stats = model->TrainClippedPerUser(TrainPlan(), PerUserClip(), &sum);
  ASSERT_FALSE(stats.ok());
  EXPECT_NE(stats.status().message().find("bpr"), std::string::npos);
}

TEST(CoordinatorDpState, SaveAndLoadCarryTheClipAndTheAccountant) {
  DpOptions options;
  options.mode = DpMode::kCentral;
  options.clip = 0.3;
  CoordinatorDp a(options, 1, 1.0);
  std::vector<ParamBlock> global(1);
  global[0] = ParamBlock("w", Scope::kGlobal, 2, 1);
  global[0].data = {0.0f, 0.0f};
  AggregateInput sums;
  sums.weighted_sum = {{0.1, 0.2}, {1.5}};
  sums.row_weight = {{1, 1}, {3}};
  DpRoundMetrics metrics;
  ASSERT_TRUE(a.Privatize(1, 3, global, &sums, &metrics).ok());
  EXPECT_EQ(sums.weighted_sum.size(), 1u);
  EXPECT_EQ(sums.row_weight[0], (std::vector<double>{3, 3}));  // averaged over 3 units
  EXPECT_GT(metrics.epsilon, 0.0);
  CoordinatorDp b(options, 1, 1.0);
  ASSERT_TRUE(b.LoadState(a.SaveState()).ok());
  EXPECT_EQ(b.accountant().rdp(), a.accountant().rdp());
  EXPECT_EQ(b.clip(), a.clip());
  const Status bad = b.LoadState("dp v2 whatever");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.message().find("expected"), std::string::npos);
}

TEST(DpFederation, FixedDenominatorKeepsTheUnitCountPrivateAndTrainsAsTheExactOne) {
  // Every synthetic user takes part in every round (300 units): with
  // dp.expected_units = 300 the average and the adaptive clip's estimate are
  // the ones of the exact count, but the count is neither sent nor reported.
  // Central noise is drawn alike in both runs; distributed noise on the
  // count is drawn at the scale of the scaled count, so the two runs' noised
  // counts differ by about sqrt(2) x 5 / 300 = 0.024 of a share, and their
  // clips and models a little.
  for (const char* mode : {"central", "distributed"}) {
    SCOPED_TRACE(mode);
    const bool central = std::string(mode) == "central";
    Config exact = DpConfig(mode, "user");
    if (std::string(mode) == "distributed") exact.security.aggregation = "secagg";
    SetUserDp(mode, &exact);
    Config fixed = exact;
    fixed.dp.expected_units = 300.0;
    const FederatedRun a = Federate(exact, 2);
    const FederatedRun b = Federate(fixed, 2);
    ASSERT_EQ(b.rounds.size(), a.rounds.size());
    for (size_t r = 0; r < b.rounds.size(); ++r) {
      EXPECT_FALSE(b.rounds[r].aborted) << b.rounds[r].abort_reason;
      EXPECT_TRUE(a.rounds[r].dp.units_known);
      EXPECT_EQ(a.rounds[r].dp.units, 300u);
      EXPECT_FALSE(b.rounds[r].dp.units_known);
      EXPECT_EQ(b.rounds[r].dp.units, 0u);
      EXPECT_NEAR(b.rounds[r].dp.unclipped_share, a.rounds[r].dp.unclipped_share,
                  central ? 1e-3 : 0.12);
      EXPECT_EQ(b.rounds[r].dp.epsilon, a.rounds[r].dp.epsilon);
    }
    ASSERT_EQ(a.global.size(), b.global.size());
    for (size_t i = 0; i < a.global.size(); ++i) {
      ASSERT_EQ(a.global[i].data.size(), b.global[i].data.size());
      for (size_t j = 0; j < a.global[i].data.size(); ++j)
        ASSERT_NEAR(a.global[i].data[j], b.global[i].data[j], central ? 1e-3 : 0.1)
            << a.global[i].name << " " << j;
    }
  }
}

TEST(CoordinatorDpState, FixedDenominatorAveragesOverTheExpectedUnitsAndReportsNoCount) {
  // Two sites report (weight 1 each) counts scaled by 1 / 40: the sum of
  // (unclipped - units / 2) is 10 / 40 x 40 = 10; the step divides by 40.
  DpOptions options;
  options.mode = DpMode::kDistributed;
  options.clip = 0.5;
  options.noise_multiplier = 1.0;
  options.expected_units = 40.0;
  CoordinatorDp dp(options, 3, 1.0);
  std::vector<ParamBlock> global(1);
  global[0] = ParamBlock("w", Scope::kGlobal, 1, 2);
  global[0].data = {1.0f, -2.0f};
  AggregateInput sums;
  sums.sites = 2;
  sums.weighted_sum = {{4.0, 8.0}, {10.0 / 40.0}};
  sums.row_weight = {{2.0}, {2.0}};
  DpRoundMetrics metrics;
  ASSERT_TRUE(dp.Privatize(1, 2, global, &sums, &metrics).ok());
  EXPECT_FALSE(metrics.units_known);
  EXPECT_EQ(metrics.units, 0u);
  EXPECT_DOUBLE_EQ(metrics.unclipped_share, 10.0 / 40.0 + 0.5);
  ASSERT_EQ(sums.weighted_sum.size(), 1u);
  EXPECT_DOUBLE_EQ(sums.row_weight[0][0], 40.0);
  EXPECT_DOUBLE_EQ(sums.weighted_sum[0][0], 40.0 * 1.0 + 4.0);
  EXPECT_DOUBLE_EQ(sums.weighted_sum[0][1], 40.0 * -2.0 + 8.0);
  // A round without any site is the only one it cannot step.
  AggregateInput none;
  none.weighted_sum = {{0.0, 0.0}, {0.0}};
  none.row_weight = {{0.0}, {0.0}};
  EXPECT_EQ(dp.Privatize(2, 2, global, &none, &metrics).code(), Status::Code::kAborted);
}

TEST(CoordinatorDpState, CentralNoiseHasTheConfiguredStandardDeviation) {
  // 20000 zero sums over 4 units: after Privatize each weighted sum is
  // 4 * 0 + N(0, (z C)^2); the sample variance must be within 5 standard
  // errors of (z C)^2 (fixed seed).
  DpOptions options;
  options.mode = DpMode::kCentral;
  options.clip = 0.25;
  options.noise_multiplier = 3.0;
  CoordinatorDp dp(options, 42, 1.0);
  const uint32_t rows = 20000;
  std::vector<ParamBlock> global(1);
  global[0] = ParamBlock("w", Scope::kGlobal, rows, 1);
  global[0].data.assign(rows, 0.0f);
  AggregateInput sums;
  sums.weighted_sum = {std::vector<double>(rows, 0.0), {0.0}};
  sums.row_weight = {std::vector<double>(rows, 4.0), {4.0}};
  DpRoundMetrics metrics;
  ASSERT_TRUE(dp.Privatize(1, 4, global, &sums, &metrics).ok());
  EXPECT_DOUBLE_EQ(metrics.noise_stddev, 0.75);
  double mean = 0.0, var = 0.0;
  for (double x : sums.weighted_sum[0]) mean += x / rows;
  for (double x : sums.weighted_sum[0]) var += (x - mean) * (x - mean) / (rows - 1);
  const double want = 0.75 * 0.75;
  EXPECT_NEAR(var, want, 5.0 * want * std::sqrt(2.0 / rows));
  EXPECT_NEAR(mean, 0.0, 5.0 * 0.75 / std::sqrt(double{rows}));
}

TEST(CoordinatorDpState, DistributedRoundMissingSharesBeyondTheDropoutsIsChargedAtItsNoise) {
  // 20 sites selected, dropout rate 0.1: shares are sized for 18 sites. 18
  // or more in the sum: charged at z (the noise is at least z C); 12 in the
  // sum: the noise is z C sqrt(12 / 18), and the accountant charges that.
  DpOptions options;
  options.mode = DpMode::kDistributed;
  options.clip = 0.5;
  options.noise_multiplier = 2.0;
  const auto round = [&](CoordinatorDp* dp, uint32_t summed) {
    std::vector<ParamBlock> global(1);
    global[0] = ParamBlock("w", Scope::kGlobal, 1, 1);
    AggregateInput sums;
    sums.sites = summed;
    sums.weighted_sum = {{0.0}, {0.0}};
    sums.row_weight = {{double(summed)}, {double(summed)}};
    DpRoundMetrics metrics;
    EXPECT_TRUE(dp->Privatize(1, 20, global, &sums, &metrics).ok());
    return metrics;
  };
  CoordinatorDp all(options, 1, 1.0, 0.1), floor(options, 1, 1.0, 0.1), few(options, 1, 1.0, 0.1);
  const DpRoundMetrics a = round(&all, 20), f = round(&floor, 18), w = round(&few, 12);
  EXPECT_DOUBLE_EQ(a.noise_stddev, 1.0 * std::sqrt(20.0 / 18.0));
  EXPECT_DOUBLE_EQ(f.noise_stddev, 1.0);
  EXPECT_DOUBLE_EQ(w.noise_stddev, 1.0 * std::sqrt(12.0 / 18.0));
  RdpAccountant at_z, at_less;
  at_z.Step(1.0, 2.0);
  at_less.Step(1.0, 2.0 * std::sqrt(12.0 / 18.0));
  EXPECT_EQ(all.accountant().rdp(), at_z.rdp());  // more noise is never claimed
  EXPECT_EQ(floor.accountant().rdp(), at_z.rdp());
  EXPECT_EQ(few.accountant().rdp(), at_less.rdp());
  EXPECT_GT(w.epsilon, f.epsilon);
}

TEST(DpFederation, DistributedSharesCoverTheThreatModelsDropoutsAndFurtherLossIsCharged) {
  // 10 sites under SecAgg, dropout rate 0.1: every site's share is sized
  // for 90% of the round's sites. Sites dropping before their masked input
  // leave the sum without their shares; each round is charged at the noise
  // its sum holds.
  Config config = DpConfig("distributed", "site");
  config.federation.sites = 10;
  config.security.aggregation = "secagg";
  config.security.dropout_rate = 0.1;
  config.security.adversarial_rate = 0.0;
  config.federation.server_lr = 1.0;
  config.dp.clip = 2.0;
  config.dp.noise_multiplier = 0.5;
  config.sim.faults.dropout = 0.2;
  config.sim.faults.dropout_steps = {"upload"};
  const FederatedRun run = Federate(config, 2);
  RdpAccountant expected;
  uint32_t short_rounds = 0, charged = 0;
  for (const RoundMetrics& m : run.rounds) {
    if (m.aborted) continue;
    ++charged;
    ASSERT_TRUE(m.dp.on);
    // A site that dropped is not selected again until it answers: shares
    // are sized for the round's own selection, minus 10% rounded up.
    const uint32_t share_sites = m.sites_selected - (m.sites_selected + 9) / 10;
    const double factor = std::sqrt(double(m.sites_reported) / share_sites);
    EXPECT_DOUBLE_EQ(m.dp.noise_stddev, 1.0 * factor) << m.round;
    expected.Step(1.0, 0.5 * std::min(1.0, factor));
    EXPECT_DOUBLE_EQ(m.dp.epsilon, expected.Epsilon(config.dp.delta).epsilon) << m.round;
    if (m.sites_reported < share_sites) ++short_rounds;
  }
  EXPECT_GT(charged, 0u);
  EXPECT_GT(short_rounds, 0u) << "no round lost more sites than the threat model allows";
}

}  // namespace
}  // namespace fedrec
