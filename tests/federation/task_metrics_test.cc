// Per-task metrics (rating, like, click) and warm/cold-start users through the
// federation: a multi-task model registered by the test runs in the simulator
// under secure aggregation, and its metrics equal the centralized evaluation
// of the same model; each site's own metrics appear only in the clear.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "apps/commands.h"
#include "apps/job.h"
#include "apps/plugin.h"
#include "data/ratings.h"
#include "sim/simulation.h"
#include "tests/federation/federate.h"

namespace fedrec {
namespace {

// A multi-task bias model: a global per-item interaction count (summed over
// the sites from integer upload weights, so the federated model is exactly
// the centralized one, also under secure aggregation) and a local per-user
// mean rating. With c = log(1 + count):
//   rating = user mean + 0.25 (c - 2)
//   like   = sigmoid(2 (user mean - 3.5) + 0.5 (c - 2))
//   click  = sigmoid(c - 2.5)
class TaskBias : public Model {
 public:
  explicit TaskBias(ModelData data)
      : Model(static_cast<uint32_t>(data.user_keys.size()), data.items),
        train_(std::move(data.train)),
        counts_(ItemCounts(train_, data.items)),
        ones_(data.items, 1.0f) {
    blocks_.emplace_back("item_count", Scope::kGlobal, data.items, 1);
    blocks_.emplace_back("user_mean", Scope::kLocal, users(), 1);
    std::vector<double> sum(users(), 0.0), count(users(), 0.0);
    for (const Rating& r : train_) {
      sum[r.user] += r.value;
      count[r.user] += 1.0;
    }
    for (uint32_t u = 0; u < users(); ++u)
      blocks_[1].data[u] = count[u] > 0 ? static_cast<float>(sum[u] / count[u]) : 3.5f;
  }
  std::string_view name() const override { return "task_bias"; }
  std::vector<ParamBlock>& blocks() override { return blocks_; }
  LossSums Train(const TrainPlan&) override { return {0.0, train_.size()}; }
  std::vector<DenseBlockView> Upload() const override { return {DenseBlockView{counts_, ones_}}; }
  bool SolvesFromSums() const override { return true; }
  Status Apply(const AggregateInput& sums, Strategy*,
               std::vector<ParamBlock>* global) const override {
    if (sums.row_weight.size() != 1 || sums.row_weight[0].size() != items())
      return Status::InvalidArgument("task_bias: sums of another shape");
    for (uint32_t i = 0; i < items(); ++i)
      (*global)[0].data[i] = static_cast<float>(sums.row_weight[0][i]);
    return Status::Ok();
  }
  void Score(uint32_t, std::span<float> out) const override {
    std::copy(blocks_[0].data.begin(), blocks_[0].data.end(), out.begin());
  }
  bool PredictsRatings() const override { return true; }
  float Predict(uint32_t user, uint32_t item) const override {
    return blocks_[1].data[user] + 0.25f * (C(item) - 2.0f);
  }
  std::vector<TaskSpec> Tasks() const override {
    return {{"rating", TaskKind::kRating, 0.0f},
            {"like", TaskKind::kLike, 4.0f},
            {"click", TaskKind::kClick, 0.0f}};
  }
  void PredictTasks(uint32_t user, uint32_t item, std::span<float> out) const override {
    out[0] = Predict(user, item);
    out[1] = Sigmoid(2.0f * (blocks_[1].data[user] - 3.5f) + 0.5f * (C(item) - 2.0f));
    out[2] = Sigmoid(C(item) - 2.5f);
  }
  const std::vector<Rating>& train() const override { return train_; }

 private:
  float C(uint32_t item) const { return std::log1p(blocks_[0].data[item]); }
  static float Sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

  std::vector<Rating> train_;
  std::vector<uint32_t> counts_;
  std::vector<float> ones_;
  std::vector<ParamBlock> blocks_;
};

ModelRegistry TaskRegistry() {
  ModelRegistry registry = ModelRegistry::WithBuiltins();
  registry.Register({"task_bias",
                     "per-item counts and per-user mean ratings, three tasks",
                     {},
                     [](const ModelOptions&, ModelData data) -> Result<std::unique_ptr<Model>> {
                       return std::unique_ptr<Model>(std::make_unique<TaskBias>(std::move(data)));
                     }});
  return registry;
}

Config TaskConfig(const std::string& aggregation) {
  Config config = SmallConfig();
  config.model.name = "task_bias";
  config.security.aggregation = aggregation;
  config.federation.rounds = 2;
  config.eval.ranking = true;
  config.eval.warm_cold = true;
  config.eval.click_negatives = 3;
  return config;
}

// Users whose stable key is a multiple of 4 are cold (the test's own flags).
bool Cold(uint64_t key) { return key % 4 == 0; }

struct Runs {
  CentralizedResult central;
  std::vector<RoundMetrics> rounds;
  Status status;
};

Runs CentralAndFederated(const Config& config, const ModelRegistry& registry,
                         const std::function<void(CoordinatorOptions*)>& customize = nullptr,
                         const std::function<void(WorkerOptions*, uint32_t)>& per_site = nullptr) {
  Runs runs;
  Result<FederatedData> data = LoadFederatedData(config);
  EXPECT_TRUE(data.ok()) << data.status().ToString();
  Dataset dataset = data->dataset;
  dataset.cold_users.assign(dataset.users.size(), 0);
  for (uint32_t u = 0; u < dataset.users.size(); ++u)
    dataset.cold_users[u] = Cold(StableIdKey(dataset.users.Raw(u)));
  for (SiteData& site : data->sites) {
    site.cold_users.assign(site.user_keys.size(), 0);
    for (size_t u = 0; u < site.user_keys.size(); ++u) site.cold_users[u] = Cold(site.user_keys[u]);
  }
  Result<CentralizedResult> central = TrainCentralized(config, dataset, nullptr, &registry);
  EXPECT_TRUE(central.ok()) << central.status().ToString();
  if (central.ok()) runs.central = std::move(central).value();

  Result<std::unique_ptr<Model>> server = MakeServerModel(config, dataset.items.size(), &registry);
  EXPECT_TRUE(server.ok()) << server.status().ToString();
  WorkerOptions workers = MakeWorkerOptions(config);
  workers.make_model = [&](ModelData d) { return MakeModel(config, std::move(d), &registry); };
  auto strategy = StrategyRegistry::WithBuiltins().Create("fedavg", MakeStrategyOptions(config));
  EXPECT_TRUE(strategy.ok());
  CoordinatorOptions coordinator = MakeCoordinatorOptions(config);
  if (customize) customize(&coordinator);
  SimulationOptions options;
  options.shard_servers = static_cast<uint32_t>(config.cluster.shard_servers);
  options.customize_site = per_site;
  if (per_site) {  // sites given a roster check survivor signatures: send them
    WorkerOptions probe;
    per_site(&probe, 0);
    coordinator.sites_hold_roster = probe.roster && !probe.roster->empty();
  }
  Result<SimulationResult> result =
      RunSimulation(options, coordinator, std::move(server).value(), std::move(strategy).value(),
                    workers, dataset.items.size(), std::move(data->sites),
                    [&](const RoundMetrics& m) { runs.rounds.push_back(m); });
  runs.status = result.status();
  return runs;
}

// Reals of the secure sum: fixed point with 32 fractional bits per site, and
// another summation order than the centralized run's.
void ExpectNearReal(double federated, double central, const std::string& what) {
  EXPECT_NEAR(federated, central, 1e-6 * std::max(1.0, std::abs(central))) << what;
}

void ExpectSameTasks(const std::vector<TaskSums>& federated, const std::vector<TaskSums>& central,
                     const std::string& group) {
  ASSERT_EQ(federated.size(), 3u) << group;
  ASSERT_EQ(central.size(), 3u) << group;
  for (size_t t = 0; t < 3; ++t) {
    const std::string what = group + " task " + central[t].spec.name;
    EXPECT_EQ(federated[t].spec.name, central[t].spec.name) << what;
    if (central[t].spec.kind == TaskKind::kRating) {
      EXPECT_EQ(federated[t].errors.count, central[t].errors.count) << what;
      ExpectNearReal(federated[t].errors.squared, central[t].errors.squared, what);
      ExpectNearReal(federated[t].errors.absolute, central[t].errors.absolute, what);
      continue;
    }
    // Counts and histograms are integers: exact, and so is the AUC.
    EXPECT_EQ(federated[t].binary.count, central[t].binary.count) << what;
    EXPECT_EQ(federated[t].binary.positives, central[t].binary.positives) << what;
    EXPECT_EQ(federated[t].binary.negatives, central[t].binary.negatives) << what;
    EXPECT_EQ(federated[t].binary.Auc(), central[t].binary.Auc()) << what;
    ExpectNearReal(federated[t].binary.log_loss, central[t].binary.log_loss, what);
  }
}

void ExpectSameGroup(const ErrorSums& errors, const RankingSums& ranking,
                     const std::vector<TaskSums>& tasks, const GroupSums& central,
                     const std::string& group) {
  EXPECT_EQ(errors.count, central.errors.count) << group;
  ExpectNearReal(errors.squared, central.errors.squared, group + " squared error");
  EXPECT_EQ(ranking.users, central.ranking.users) << group;
  ExpectNearReal(ranking.ndcg, central.ranking.ndcg, group + " ndcg");
  ExpectNearReal(ranking.precision, central.ranking.precision, group + " precision");
  ExpectSameTasks(tasks, central.tasks, group);
}

TEST(TaskMetricsFederated, SecAggSimTaskAndWarmColdMetricsEqualTheCentralizedEvaluation) {
  const ModelRegistry registry = TaskRegistry();
  const Config config = TaskConfig("secagg");
  const Runs runs = CentralAndFederated(config, registry);
  ASSERT_TRUE(runs.status.ok()) << runs.status.ToString();
  const EvalResult& central = runs.central.eval;
  ASSERT_EQ(central.tasks.size(), 3u);
  ASSERT_TRUE(central.warm_cold);
  EXPECT_GT(central.cold.errors.count, 0u);
  EXPECT_GT(central.warm.errors.count, central.cold.errors.count);
  EXPECT_EQ(central.warm.errors.count + central.cold.errors.count, central.errors.count);
  EXPECT_GT(central.tasks[2].binary.Auc(), 0.55);  // popular items are clicked more
  uint64_t click_negatives = 0;
  for (uint64_t n : central.tasks[2].binary.negatives) click_negatives += n;
  EXPECT_EQ(click_negatives, 3 * central.tasks[0].errors.count);

  // Round 1's evaluation rides on round 2's secure sum; round 2's has its own.
  ASSERT_EQ(runs.rounds.size(), 2u);
  EXPECT_EQ(runs.rounds[0].evaluated_in_round, 2u);
  EXPECT_EQ(runs.rounds[1].evaluated_in_round, 0u);
  for (const RoundMetrics& m : runs.rounds) {
    const std::string round = "round " + std::to_string(m.round);
    ASSERT_TRUE(m.evaluated) << round;
    EXPECT_NE(m.aggregation, "none");
    GroupSums all;
    all.errors = central.errors;
    all.ranking = central.ranking;
    all.tasks = central.tasks;
    ExpectSameGroup(m.test, m.ranking, m.tasks, all, round + " all users");
    EXPECT_EQ(m.ranking.recommended, central.ranking.recommended) << round;
    ASSERT_TRUE(m.warm_cold) << round;
    ExpectSameGroup(m.warm.errors, m.warm.ranking, m.warm.tasks, central.warm, round + " warm");
    ExpectSameGroup(m.cold.errors, m.cold.ranking, m.cold.tasks, central.cold, round + " cold");
    EXPECT_TRUE(m.sites.empty()) << round;  // never per site under secure aggregation
  }
}

// The other paths that carry evaluation sums: Paillier rounds (evaluated
// through secure aggregation) and sharded aggregation, in the clear and under
// SecAgg (the riding evaluation's words sliced over the shard servers).
class TaskMetricsPath : public testing::TestWithParam<std::string> {};

TEST_P(TaskMetricsPath, TaskAndWarmColdMetricsEqualTheCentralizedEvaluation) {
  const ModelRegistry registry = TaskRegistry();
  const std::string path = GetParam();
  Config config = TaskConfig(path.substr(0, path.find(' ')));
  std::function<void(WorkerOptions*, uint32_t)> per_site;
  if (path == "paillier") {
    config.federation.sites = 5;
    config.security.paillier_bits = 1024;
    per_site = PaillierTestSites(5);
  } else {
    config.cluster.shard_servers = 2;
  }
  const Runs runs = CentralAndFederated(config, registry, nullptr, per_site);
  ASSERT_TRUE(runs.status.ok()) << runs.status.ToString();
  const EvalResult& central = runs.central.eval;
  ASSERT_EQ(runs.rounds.size(), 2u);
  for (const RoundMetrics& m : runs.rounds) {
    const std::string round = path + ", round " + std::to_string(m.round);
    ASSERT_TRUE(m.evaluated) << round;
    EXPECT_FALSE(m.aborted) << round << ": " << m.abort_reason;
    GroupSums all;
    all.errors = central.errors;
    all.ranking = central.ranking;
    all.tasks = central.tasks;
    ExpectSameGroup(m.test, m.ranking, m.tasks, all, round + " all users");
    ASSERT_TRUE(m.warm_cold) << round;
    ExpectSameGroup(m.warm.errors, m.warm.ranking, m.warm.tasks, central.warm, round + " warm");
    ExpectSameGroup(m.cold.errors, m.cold.ranking, m.cold.tasks, central.cold, round + " cold");
  }
}

INSTANTIATE_TEST_SUITE_P(Paths, TaskMetricsPath,
                         testing::Values("paillier", "secagg sharded", "none sharded"),
                         [](const testing::TestParamInfo<std::string>& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), ' ', '_');
                           return name;
                         });

TEST(TaskMetricsFederated, PerSiteMetricsInTheClearAddUpToTheFederationsTotals) {
  const ModelRegistry registry = TaskRegistry();
  Config config = TaskConfig("none");
  config.eval.per_site = true;
  ASSERT_TRUE(ValidateConfig(config).ok());
  const Runs runs = CentralAndFederated(config, registry);
  ASSERT_TRUE(runs.status.ok()) << runs.status.ToString();
  ASSERT_FALSE(runs.rounds.empty());
  const RoundMetrics& m = runs.rounds.back();
  ASSERT_EQ(m.sites.size(), static_cast<size_t>(config.federation.sites));
  EvalSums total;
  for (size_t s = 0; s < m.sites.size(); ++s) {
    EXPECT_EQ(m.sites[s].site, s);
    ASSERT_EQ(m.sites[s].sums.all.tasks.size(), 3u);
    EXPECT_TRUE(m.sites[s].sums.warm_cold);
    total.all.Merge(m.sites[s].sums.all);
    total.cold.Merge(m.sites[s].sums.cold);
  }
  EXPECT_EQ(total.all.errors.count, m.test.count);
  EXPECT_EQ(total.all.ranking.users, m.ranking.users);
  EXPECT_EQ(total.cold.errors.count, m.cold.errors.count);
  for (size_t t = 1; t < 3; ++t) {
    EXPECT_EQ(total.all.tasks[t].binary.positives, m.tasks[t].binary.positives);
    EXPECT_EQ(total.all.tasks[t].binary.negatives, m.tasks[t].binary.negatives);
  }
  // In the clear the totals equal the centralized evaluation too.
  ExpectSameTasks(m.tasks, runs.central.eval.tasks, "in the clear");
}

TEST(TaskMetricsFederated, PerSiteMetricsAreRefusedUnderSecureAggregation) {
  Config config = TaskConfig("secagg");
  config.eval.per_site = true;
  const Status refused = ValidateConfig(config);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.message().find("eval.per_site"), std::string::npos) << refused.message();
  EXPECT_NE(refused.message().find("security.aggregation = \"secagg\""), std::string::npos)
      << refused.message();
  // A coordinator asked for them anyway refuses before any round.
  const ModelRegistry registry = TaskRegistry();
  config.eval.per_site = false;
  const Runs runs = CentralAndFederated(
      config, registry, [](CoordinatorOptions* options) { options->eval_per_site = true; });
  ASSERT_FALSE(runs.status.ok());
  EXPECT_NE(runs.status.message().find("eval.per_site needs security.aggregation = none"),
            std::string::npos)
      << runs.status.message();
  EXPECT_TRUE(runs.rounds.empty());
}

std::vector<nlohmann::json> ReadLines(const std::string& path) {
  std::vector<nlohmann::json> lines;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

TEST(TaskMetricsFederated, FedrecSimWritesPerTaskAndWarmColdMetrics) {
  const ModelRegistry models = TaskRegistry();
  const StrategyRegistry strategies = StrategyRegistry::WithBuiltins();
  Config config = TaskConfig("secagg");
  config.output.dir = (std::filesystem::temp_directory_path() / "fedrec-task-metrics-sim").string();
  config.output.force = true;
  std::filesystem::remove_all(config.output.dir);
  ASSERT_EQ(RunSim(config, Registries{&strategies, &models}), 0);
  const std::vector<nlohmann::json> lines = ReadLines(config.output.dir + "/metrics.jsonl");
  ASSERT_EQ(lines.size(), 2u);
  for (const nlohmann::json& line : lines) {
    ASSERT_TRUE(line.contains("tasks")) << line.dump();
    EXPECT_TRUE(line["tasks"]["rating"]["rmse"].is_number()) << line.dump();
    EXPECT_TRUE(line["tasks"]["like"]["auc"].is_number()) << line.dump();
    EXPECT_TRUE(line["tasks"]["click"]["log_loss"].is_number()) << line.dump();
    EXPECT_TRUE(line["test_rmse"].is_number());  // existing fields unchanged
    EXPECT_TRUE(line.contains("ndcg@10"));
    // No cold flags from the data here: every user is warm.
    EXPECT_EQ(line["warm"]["count"], line["tasks"]["rating"]["count"]);
    EXPECT_EQ(line["cold"]["count"], 0);
    EXPECT_TRUE(line["cold"]["rmse"].is_null());
    EXPECT_TRUE(line["warm"]["tasks"]["click"]["auc"].is_number());
    EXPECT_FALSE(line.contains("sites"));
  }
  std::ifstream summary_file(config.output.dir + "/summary.json");
  const nlohmann::json summary = nlohmann::json::parse(summary_file);
  EXPECT_EQ(summary["tasks"], lines.back()["tasks"]);
  EXPECT_EQ(summary["warm"], lines.back()["warm"]);
  // The configured scheme, and the one its rounds ran as (secagg picks a graph per round).
  EXPECT_EQ(summary["aggregation"], "secagg");
  std::set<std::string> used;
  for (const nlohmann::json& line : lines) used.insert(line["aggregation"].get<std::string>());
  EXPECT_EQ(summary["aggregation_used"].get<std::set<std::string>>(), used);
  ASSERT_TRUE(summary.contains("centralized_tasks"));
  EXPECT_EQ(summary["centralized_tasks"]["click"]["count"], summary["tasks"]["click"]["count"]);
  EXPECT_EQ(summary["centralized_tasks"]["like"]["auc"], summary["tasks"]["like"]["auc"]);
  std::filesystem::remove_all(config.output.dir);
}

TEST(TaskMetricsConfig, OutOfRangeEvalKeysAreClearErrors) {
  Config config = TaskConfig("secagg");
  config.eval.auc_bins = 1;
  EXPECT_NE(ValidateConfig(config).message().find(
                "eval.auc_bins: expected an integer in [2, 1048576], found 1"),
            std::string::npos)
      << ValidateConfig(config).message();
  config = TaskConfig("secagg");
  config.eval.click_negatives = -1;
  EXPECT_NE(ValidateConfig(config).message().find("eval.click_negatives"), std::string::npos);
}

}  // namespace
}  // namespace fedrec
