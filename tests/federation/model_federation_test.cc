// The Model seam end to end: a model registered by a test runs federated
// through the simulator; closed-form models are exact when federated (also
// under secure aggregation); fedrec recommend serves from a run directory.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <sstream>
#include <string>

#include "apps/commands.h"
#include "apps/job.h"
#include "crypto/sha256.h"
#include "examples/plugin_model/bayesian_average.h"
#include "sim/simulation.h"
#include "tests/federation/federate.h"

namespace fedrec {
namespace {

// A toy model the roles know nothing about: each item's mean rating, trained
// per site and averaged by FedAvg with per-row weights = the site's ratings.
class ItemMean : public Model {
 public:
  // `poisoned`: training leaves a NaN in the first trained row (a diverged site).
  explicit ItemMean(ModelData data, bool poisoned = false)
      : Model(static_cast<uint32_t>(data.user_keys.size()), data.items),
        train_(std::move(data.train)),
        counts_(ItemCounts(train_, data.items)),
        poisoned_(poisoned) {
    blocks_.emplace_back("item_mean", Scope::kGlobal, data.items, 1);
  }
  std::string_view name() const override { return "item_mean"; }
  std::vector<ParamBlock>& blocks() override { return blocks_; }
  LossSums Train(const TrainPlan&) override {
    std::vector<double> sum(items(), 0.0);
    for (const Rating& r : train_) sum[r.item] += r.value;
    for (uint32_t i = 0; i < items(); ++i) {
      if (counts_[i]) blocks_[0].data[i] = static_cast<float>(sum[i] / counts_[i]);
    }
    if (poisoned_ && !train_.empty()) blocks_[0].data[train_[0].item] = std::nanf("");
    return {0.0, train_.size()};
  }
  std::vector<DenseBlockView> Upload() const override {
    return {DenseBlockView{counts_, blocks_[0].data}};
  }
  void Score(uint32_t, std::span<float> out) const override {
    std::copy(blocks_[0].data.begin(), blocks_[0].data.end(), out.begin());
  }
  const std::vector<Rating>& train() const override { return train_; }

 private:
  std::vector<Rating> train_;
  std::vector<uint32_t> counts_;
  bool poisoned_;
  std::vector<ParamBlock> blocks_;
};

TEST(ModelSeam, ModelRegisteredByATestRunsFederatedThroughTheSimulator) {
  ModelRegistry registry;
  registry.Register({"item_mean",
                     "each item's mean rating",
                     {},
                     [](const ModelOptions&, ModelData data) -> Result<std::unique_ptr<Model>> {
                       return std::unique_ptr<Model>(std::make_unique<ItemMean>(std::move(data)));
                     }});
  Config config = SmallConfig();
  config.model.name = "item_mean";
  config.federation.rounds = 1;
  config.federation.server_lr = 1.0;
  config.eval.ranking = true;
  Result<FederatedData> data = LoadFederatedData(config);
  ASSERT_TRUE(data.ok()) << data.status().ToString();
  const Dataset dataset = data->dataset;
  Result<std::unique_ptr<Model>> server = MakeServerModel(config, dataset.items.size(), &registry);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  WorkerOptions workers = MakeWorkerOptions(config);
  workers.make_model = [&](ModelData d) { return MakeModel(config, std::move(d), &registry); };
  auto strategy = StrategyRegistry::WithBuiltins().Create("fedavg", MakeStrategyOptions(config));
  ASSERT_TRUE(strategy.ok());
  std::vector<RoundMetrics> rounds;
  Result<SimulationResult> result =
      RunSimulation(SimulationOptions{}, MakeCoordinatorOptions(config), std::move(server).value(),
                    std::move(strategy).value(), workers, dataset.items.size(),
                    std::move(data->sites), [&](const RoundMetrics& m) { rounds.push_back(m); });
  ASSERT_TRUE(result.ok()) << result.status().ToString();

  std::vector<double> sum(dataset.items.size(), 0.0), count(dataset.items.size(), 0.0);
  for (const Rating& r : dataset.train) {
    sum[r.item] += r.value;
    count[r.item] += 1;
  }
  const ParamBlock* mean = FindBlock(result->global, "item_mean");
  ASSERT_NE(mean, nullptr);
  for (uint32_t i = 0; i < dataset.items.size(); ++i) {
    if (count[i] == 0) continue;
    EXPECT_NEAR(mean->data[i], sum[i] / count[i], 1e-5) << "item " << i;
  }
  ASSERT_EQ(rounds.size(), 1u);
  EXPECT_EQ(rounds[0].sites_reported, 10u);
  EXPECT_GT(rounds[0].ranking.users, 0u);  // evaluated through Model::Score at every site
  EXPECT_EQ(rounds[0].test.count, 0u);     // no rating predictions: no RMSE
}

// A diverged site's NaN never reaches an encrypted sum: the site refuses to
// send it, and the round goes on without that site.
TEST(ModelSeam, NonFiniteUpdateIsRefusedAtTheSiteUnderEncryptedAggregation) {
  for (const char* scheme : {"secagg", "paillier"}) {
    ModelRegistry registry;
    registry.Register({"item_mean",
                       "each item's mean rating",
                       {},
                       [](const ModelOptions&, ModelData data) -> Result<std::unique_ptr<Model>> {
                         const bool poisoned = data.shard == 2;
                         return std::unique_ptr<Model>(
                             std::make_unique<ItemMean>(std::move(data), poisoned));
                       }});
    Config config = SmallConfig();
    config.model.name = "item_mean";
    config.federation.rounds = 1;
    config.security.aggregation = scheme;
    config.security.paillier_bits = 1024;
    Result<FederatedData> data = LoadFederatedData(config);
    ASSERT_TRUE(data.ok());
    const uint32_t items = data->dataset.items.size();
    Result<std::unique_ptr<Model>> server = MakeServerModel(config, items, &registry);
    ASSERT_TRUE(server.ok());
    auto strategy = StrategyRegistry::WithBuiltins().Create("fedavg", MakeStrategyOptions(config));
    ASSERT_TRUE(strategy.ok());
    std::vector<RoundMetrics> rounds;
    SimulationOptions options;
    if (std::string(scheme) == "paillier") options.customize_site = PaillierTestSites(10);
    Result<SimulationResult> result =
        RunSimulation(options, MakeCoordinatorOptions(config), std::move(server).value(),
                      std::move(strategy).value(), MakeWorkerOptions(config, &registry), items,
                      std::move(data->sites), [&](const RoundMetrics& m) { rounds.push_back(m); });
    ASSERT_TRUE(result.ok()) << scheme << ": " << result.status().ToString();
    ASSERT_EQ(rounds.size(), 1u);
    EXPECT_FALSE(rounds[0].aborted) << scheme << ": " << rounds[0].abort_reason;
    EXPECT_EQ(rounds[0].sites_reported, 9u) << scheme;
    EXPECT_EQ(rounds[0].failures, 1u) << scheme;
    for (float v : FindBlock(result->global, "item_mean")->data)
      ASSERT_TRUE(std::isfinite(v)) << scheme;
  }
}

TEST(ModelSeam, OutOfTreeExampleModelIsExactUnderSecureAggregation) {
  ModelRegistry registry = ModelRegistry::WithBuiltins();
  bayes_example::RegisterBayesianAverage(&registry);
  Config config = SmallConfig();
  config.model.name = "bayes";
  config.security.aggregation = "secagg";
  config.eval.ranking = true;
  Result<FederatedData> data = LoadFederatedData(config);
  ASSERT_TRUE(data.ok()) << data.status().ToString();
  const Dataset dataset = data->dataset;
  Result<CentralizedResult> central = TrainCentralized(config, dataset, nullptr, &registry);
  ASSERT_TRUE(central.ok()) << central.status().ToString();
  Result<std::unique_ptr<Model>> server = MakeServerModel(config, dataset.items.size(), &registry);
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  CoordinatorOptions coordinator = MakeCoordinatorOptions(config);
  coordinator.rounds = static_cast<uint32_t>(EffectiveRounds(config, &registry));
  EXPECT_EQ(coordinator.rounds, 1u);
  auto strategy = StrategyRegistry::WithBuiltins().Create("fedavg", MakeStrategyOptions(config));
  ASSERT_TRUE(strategy.ok());
  Result<SimulationResult> result = RunSimulation(
      SimulationOptions{}, coordinator, std::move(server).value(), std::move(strategy).value(),
      MakeWorkerOptions(config, &registry), dataset.items.size(), std::move(data->sites), nullptr);
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  EXPECT_EQ(ModelSha256(result->global), ModelSha256(central->global));
}

std::unique_ptr<Strategy> FedAvgOf(const Config& config) {
  return std::move(StrategyRegistry::WithBuiltins().Create("fedavg", MakeStrategyOptions(config)))
      .value();
}

TEST(ModelSeam, ModelsThatSolveFromSumsRefuseSampledRounds) {
  for (const char* name : {"ials", "ease", "itemknn", "popularity"}) {
    Config config = SmallConfig();
    config.model.name = name;
    config.federation.fraction = 0.5;
    Result<std::unique_ptr<Model>> model = MakeServerModel(config, 10);
    ASSERT_TRUE(model.ok());
    const Status checked = CheckFederatedModel(config, **model, *FedAvgOf(config));
    ASSERT_FALSE(checked.ok()) << name;
    EXPECT_NE(checked.message().find("federation.fraction: expected 1 for model"),
              std::string::npos);
  }
  Config sgd = SmallConfig();
  sgd.model.name = "bpr";
  sgd.federation.fraction = 0.5;
  Result<std::unique_ptr<Model>> bpr = MakeServerModel(sgd, 10);
  ASSERT_TRUE(bpr.ok());
  EXPECT_TRUE(CheckFederatedModel(sgd, **bpr, *FedAvgOf(sgd)).ok());
}

TEST(ModelSeam, ControlVariateAndNormalizingStrategiesNeedAModelThatCountsItsSteps) {
  for (const std::string name : {"scaffold", "fednova"}) {
    Config config = SmallConfig();
    config.federation.strategy = name;
    std::unique_ptr<Strategy> strategy =
        std::move(StrategyRegistry::WithBuiltins().Create(name, MakeStrategyOptions(config)))
            .value();
    config.model.name = "bpr";
    Result<std::unique_ptr<Model>> bpr = MakeServerModel(config, 10);
    ASSERT_TRUE(bpr.ok());
    const Status refused = CheckFederatedModel(config, **bpr, *strategy);
    EXPECT_EQ(refused.code(), Status::Code::kInvalidArgument);
    EXPECT_NE(refused.message().find("federation.strategy = \"" + name + "\""), std::string::npos)
        << refused.message();
    EXPECT_NE(refused.message().find("model.name = \"bpr\""), std::string::npos);
    config.model.name = "mf";
    Result<std::unique_ptr<Model>> mf = MakeServerModel(config, 10);
    ASSERT_TRUE(mf.ok());
    EXPECT_TRUE(CheckFederatedModel(config, **mf, *strategy).ok());
  }
}

TEST(ModelSeam, UnknownModelNameListsTheRegisteredOnes) {
  Config config = SmallConfig();
  config.model.name = "svdpp";
  Result<std::unique_ptr<Model>> model = MakeServerModel(config, 10);
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find("model.name"), std::string::npos);
  for (const char* name : {"mf", "bpr", "ials", "ease", "itemknn", "popularity"})
    EXPECT_NE(model.status().message().find(name), std::string::npos) << name;
}

Config ImplicitConfig(const std::string& model, const std::string& aggregation) {
  Config config = SmallConfig();
  config.model.name = model;
  config.eval.ranking = true;
  config.security.aggregation = aggregation;
  return config;
}

CentralizedResult Central(const Config& config) {
  Result<Dataset> dataset = LoadDataset(config);
  EXPECT_TRUE(dataset.ok());
  Result<CentralizedResult> result = TrainCentralized(config, *dataset, nullptr);
  EXPECT_TRUE(result.ok()) << result.status().ToString();
  return std::move(result).value();
}

double Precision(const RankingSums& r) { return r.users ? r.precision / r.users : 0.0; }
double Ndcg(const RankingSums& r) { return r.users ? r.ndcg / r.users : 0.0; }

// Largest |a - b| over the blocks, relative to the largest |b|.
double RelativeDifference(const std::vector<ParamBlock>& a, const std::vector<ParamBlock>& b) {
  EXPECT_EQ(a.size(), b.size());
  double diff = 0.0, scale = 0.0;
  for (size_t k = 0; k < std::min(a.size(), b.size()); ++k) {
    EXPECT_EQ(a[k].data.size(), b[k].data.size());
    for (size_t i = 0; i < std::min(a[k].data.size(), b[k].data.size()); ++i) {
      diff = std::max(diff, std::abs(static_cast<double>(a[k].data[i]) - b[k].data[i]));
      scale = std::max(scale, std::abs(static_cast<double>(b[k].data[i])));
    }
  }
  return scale > 0 ? diff / scale : diff;
}

class ExactItemModels : public testing::TestWithParam<std::string> {};

TEST_P(ExactItemModels, FederatedUnderSecAggEqualCentralizedExactly) {
  Config config = ImplicitConfig(GetParam(), "secagg");
  const CentralizedResult central = Central(config);
  const FederatedRun federated = Federate(config);
  ASSERT_EQ(federated.rounds.size(), 1u);  // one closed-form step
  // security.graph = auto takes the SecAgg+ graph at this many sites.
  EXPECT_EQ(federated.rounds[0].aggregation, "secagg+");
  EXPECT_EQ(ModelSha256(federated.global), ModelSha256(central.global));
  // Every user's list is the same; only the order of the sums over users differs.
  EXPECT_EQ(federated.rounds[0].ranking.users, central.eval.ranking.users);
  // Securely summed in fixed point (kEvalFracBits): equal within its rounding.
  EXPECT_NEAR(federated.rounds[0].ranking.precision, central.eval.ranking.precision, 1e-6);
  EXPECT_NEAR(federated.rounds[0].ranking.ndcg, central.eval.ranking.ndcg, 1e-6);
  EXPECT_EQ(federated.rounds[0].ranking.recommended, central.eval.ranking.recommended);
}

INSTANTIATE_TEST_SUITE_P(Models, ExactItemModels, testing::Values("ease", "itemknn", "popularity"));

Config IalsConfig(const std::string& aggregation, uint32_t sites) {
  Config config = ImplicitConfig("ials", aggregation);
  config.federation.sites = sites;
  config.model.params["ials.iterations"] = 4;
  config.federation.rounds = 4;
  config.train.epochs = 4;
  return config;
}

TEST(IalsFederated, OneSiteEqualsCentralizedBitForBit) {
  Config config = IalsConfig("none", 1);
  const CentralizedResult central = Central(config);
  const FederatedRun federated = Federate(config);
  ASSERT_EQ(federated.rounds.size(), 4u);
  EXPECT_EQ(ModelSha256(federated.global), ModelSha256(central.global));
  EXPECT_NEAR(Precision(federated.rounds.back().ranking), Precision(central.eval.ranking), 1e-12);
}

TEST(IalsFederated, TenSitesInTheClearEqualCentralizedToFloatRounding) {
  Config config = IalsConfig("none", 10);
  const CentralizedResult central = Central(config);
  const FederatedRun federated = Federate(config);
  EXPECT_LT(RelativeDifference(federated.global, central.global), 1e-4);
  EXPECT_NEAR(Precision(federated.rounds.back().ranking), Precision(central.eval.ranking), 1e-3);
  EXPECT_NEAR(Ndcg(federated.rounds.back().ranking), Ndcg(central.eval.ranking), 1e-3);
}

TEST(IalsFederated, TenSitesUnderSecAggEqualCentralizedToFixedPointError) {
  Config config = IalsConfig("secagg", 10);
  const CentralizedResult central = Central(config);
  const FederatedRun federated = Federate(config);
  // security.graph = auto: SecAgg+ at ten sites (degree 4 of the 9 others).
  EXPECT_EQ(federated.rounds.back().aggregation, "secagg+");
  EXPECT_LT(RelativeDifference(federated.global, central.global), 1e-3);
  EXPECT_NEAR(Precision(federated.rounds.back().ranking), Precision(central.eval.ranking), 2e-3);
}

class EveryModel : public testing::TestWithParam<std::string> {};

TEST_P(EveryModel, FederatedModelIsBitIdenticalForOneAndFourSimThreads) {
  Config config = ImplicitConfig(GetParam(), "none");
  config.federation.rounds = 3;
  const FederatedRun one = Federate(config, 1);
  const FederatedRun four = Federate(config, 4);
  EXPECT_EQ(ModelSha256(one.global), ModelSha256(four.global));
  ASSERT_FALSE(one.rounds.empty());
  EXPECT_EQ(one.rounds.back().ranking.precision, four.rounds.back().ranking.precision);
}

// Every model trains under every encrypted scheme: the closed-form ones give
// the plaintext model exactly, the others the plaintext accuracy within
// fixed-point error.
TEST_P(EveryModel, TrainsUnderEveryEncryptedSchemeAsInTheClear) {
  Config plain = ImplicitConfig(GetParam(), "none");
  plain.federation.sites = 4;
  plain.federation.rounds = 3;
  plain.security.paillier_bits = 1024;  // the test's speed; the default is 2048
  const FederatedRun clear = Federate(plain);
  ASSERT_FALSE(clear.rounds.empty());
  const bool exact = GetParam() == "ease" || GetParam() == "itemknn" || GetParam() == "popularity";
  for (const char* scheme : {"secagg+", "paillier"}) {
    Config config = plain;
    config.security.aggregation = scheme;
    const FederatedRun run = std::string(scheme) == "paillier"
                                 ? Federate(config, 2, PaillierTestSites(4))
                                 : Federate(config);
    ASSERT_EQ(run.rounds.size(), clear.rounds.size()) << scheme;
    for (const RoundMetrics& m : run.rounds)
      EXPECT_FALSE(m.aborted) << scheme << ": " << m.abort_reason;
    if (exact) {
      EXPECT_EQ(ModelSha256(run.global), ModelSha256(clear.global)) << scheme;
    } else {
      EXPECT_NEAR(Precision(run.rounds.back().ranking), Precision(clear.rounds.back().ranking),
                  0.02)
          << scheme;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Models, EveryModel,
                         testing::Values("mf", "bpr", "ials", "ease", "itemknn", "popularity"));

// A run directory made by `fedrec sim` / `fedrec train` in the test's temp dir.
std::string RunDir(const std::string& name) {
  const char* tmp = std::getenv("FEDREC_TEST_TMPDIR");
  const std::string dir =
      (tmp ? std::string(tmp) : std::filesystem::temp_directory_path().string()) + "/" + name;
  std::filesystem::remove_all(dir);
  return dir;
}

TEST(Recommend, NeverReturnsAnItemTheUserRatedInTraining) {
  for (const char* model : {"ease", "mf"}) {
    Config config = ImplicitConfig(model, "none");
    config.federation.rounds = 2;
    config.sim.compare_centralized = false;
    config.output.dir = RunDir(std::string("recommend-") + model);
    config.output.force = true;
    ASSERT_EQ(RunSim(config), 0);
    Result<Dataset> dataset = LoadDataset(config);
    ASSERT_TRUE(dataset.ok());
    std::map<std::string, std::set<std::string>> seen;
    for (const Rating& r : dataset->train)
      seen[dataset->users.Raw(r.user)].insert(dataset->items.Raw(r.item));
    int checked = 0;
    for (const auto& [user, items] : seen) {
      if (++checked > 40) break;
      RecommendRequest request{config.output.dir, user, 20, false, ""};
      Result<Recommendations> answer = Recommend(request);
      ASSERT_TRUE(answer.ok()) << answer.status().ToString();
      EXPECT_TRUE(answer->holder.starts_with("site")) << answer->holder;
      EXPECT_EQ(answer->items.size(), 20u);
      for (const Recommendation& rec : answer->items)
        EXPECT_FALSE(items.contains(rec.item))
            << model << ": user " << user << " item " << rec.item;
      for (size_t k = 1; k < answer->items.size(); ++k)
        EXPECT_GE(answer->items[k - 1].score, answer->items[k].score);
    }
  }
}

TEST(Recommend, UnknownUserOrRunDirectoryIsAClearError) {
  Config config = ImplicitConfig("popularity", "none");
  config.output.dir = RunDir("recommend-errors");
  config.output.force = true;
  Result<Dataset> dataset = LoadDataset(config);
  ASSERT_TRUE(dataset.ok());
  ASSERT_EQ(RunTrain(config), 0);
  Result<Recommendations> unknown = Recommend({config.output.dir, "no-such-user", 10, false, ""});
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("user \"no-such-user\" is not in"), std::string::npos)
      << unknown.status().message();
  Result<Recommendations> no_run = Recommend({config.output.dir + "-missing", "1", 10, false, ""});
  ASSERT_FALSE(no_run.ok());
  EXPECT_NE(no_run.status().message().find("no run directory"), std::string::npos);
  // A centralized run serves from its own folder.
  Result<Recommendations> ok = Recommend({config.output.dir, dataset->users.Raw(0), 5, false, ""});
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(ok->holder, "central");
}

TEST(Recommend, ARunWithoutSiteFilesWritesNoSiteFolderAndSaysWhyItCannotServe) {
  Config config = ImplicitConfig("popularity", "none");
  config.federation.rounds = 1;
  config.sim.compare_centralized = false;
  config.output.dir = RunDir("recommend-no-site-files");
  config.output.force = true;
  config.output.site_files = false;
  ASSERT_EQ(RunSim(config), 0);
  EXPECT_TRUE(std::filesystem::exists(config.output.dir + "/model.global"));
  for (const auto& entry : std::filesystem::directory_iterator(config.output.dir))
    EXPECT_FALSE(entry.is_directory()) << entry.path();
  Result<Dataset> dataset = LoadDataset(config);
  ASSERT_TRUE(dataset.ok());
  Result<Recommendations> none =
      Recommend({config.output.dir, dataset->users.Raw(0), 5, false, ""});
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("output.site_files = false"), std::string::npos)
      << none.status().message();
}

// A sampled run's sites that were only asked to evaluate never trained
// their users' rows: their folders say so, and `fedrec recommend` serves
// their users from rows fitted to their interactions, as their evaluation
// did (eval.reconstruct), so the list differs from the initial rows' one;
// users of sites that trained are served the same either way.
TEST(Recommend, UntrainedSitesServeTheirUsersFromRowsFittedAsTheyEvaluated) {
  Config config = ImplicitConfig("mf", "none");
  config.federation.sites = 40;
  config.federation.fraction = 0.25;
  config.eval.fraction = 0.25;
  config.federation.rounds = 1;
  config.sim.compare_centralized = false;
  config.output.dir = RunDir("recommend-untrained");
  config.output.force = true;
  ASSERT_EQ(RunSim(config), 0);
  std::vector<std::string> trained_users, untrained_users;
  for (uint32_t site = 0; site < 40; ++site) {
    const std::string folder = config.output.dir + "/site" + std::to_string(site);
    if (!std::filesystem::exists(folder)) continue;  // never contacted
    std::ifstream users(folder + "/users.tsv");
    std::string first;
    ASSERT_TRUE(std::getline(users, first)) << folder;
    (std::filesystem::exists(folder + "/untrained") ? untrained_users : trained_users)
        .push_back(first);
  }
  EXPECT_EQ(trained_users.size(), 10u);  // a quarter of the sites trained
  ASSERT_FALSE(untrained_users.empty());

  const auto serve = [&](const std::string& user) {
    Result<Recommendations> answer = Recommend({config.output.dir, user, 10, false, ""});
    EXPECT_TRUE(answer.ok()) << answer.status().ToString();
    std::vector<std::string> items;
    if (answer.ok()) {
      for (const Recommendation& rec : answer->items) items.push_back(rec.item);
    }
    return items;
  };
  std::map<std::string, std::vector<std::string>> fitted;
  for (const auto* users : {&trained_users, &untrained_users}) {
    for (const std::string& user : *users) fitted[user] = serve(user);
  }
  // The same run served with its users' initial rows.
  const std::string toml = config.output.dir + "/config.toml";
  std::stringstream text;
  text << std::ifstream(toml).rdbuf();
  std::string edited = text.str();
  const size_t at = edited.find("reconstruct = true");
  ASSERT_NE(at, std::string::npos);
  edited.replace(at, std::string("reconstruct = true").size(), "reconstruct = false");
  std::ofstream(toml) << edited;
  for (const std::string& user : trained_users) EXPECT_EQ(serve(user), fitted[user]) << user;
  size_t changed = 0;
  for (const std::string& user : untrained_users) changed += serve(user) != fitted[user];
  EXPECT_EQ(changed, untrained_users.size());
}

// Writes the synthetic data of `config` into `dir` as `user,item` lines (no
// ratings: implicit feedback) and a `u.item` title file for every item.
std::string WriteImplicitDataWithTitles(const Config& config, const std::string& dir) {
  Result<Dataset> dataset = LoadDataset(config);
  EXPECT_TRUE(dataset.ok());
  std::filesystem::create_directories(dir);
  std::ofstream data(dir + "/clicks.csv");
  for (const std::vector<Rating>* part : {&dataset->train, &dataset->test}) {
    for (const Rating& r : *part)
      data << dataset->users.Raw(r.user) << ',' << dataset->items.Raw(r.item) << '\n';
  }
  std::ofstream titles(dir + "/u.item", std::ios::binary);
  for (uint32_t i = 0; i < dataset->items.size(); ++i)  // ISO-8859-1, as MovieLens ships it
    titles << dataset->items.Raw(i) << "|Caf\xe9 " << dataset->items.Raw(i) << "|01-Jan-1995||\n";
  return dir + "/clicks.csv";
}

TEST(Recommend, ImplicitClicksTrainAndServeWithTitlesFromTheItemFile) {
  Config config = ImplicitConfig("ease", "none");
  const std::string dir = RunDir("recommend-implicit");
  config.data.train = WriteImplicitDataWithTitles(config, dir + "/data");
  config.output.dir = dir + "/run";
  config.output.force = true;
  ASSERT_EQ(RunTrain(config), 0);  // data.format = auto detects user,item lines
  std::ifstream summary_file(config.output.dir + "/summary.json");
  const std::string summary((std::istreambuf_iterator<char>(summary_file)),
                            std::istreambuf_iterator<char>());
  EXPECT_NE(summary.find("\"test_rmse\": null"), std::string::npos) << summary;
  EXPECT_NE(summary.find("\"lift_precision@10\""), std::string::npos) << summary;
  std::ifstream users(config.output.dir + "/central/users.tsv");
  std::string user;
  ASSERT_TRUE(std::getline(users, user));
  Result<Recommendations> answer = Recommend({config.output.dir, user, 3, false, ""});
  ASSERT_TRUE(answer.ok()) << answer.status().ToString();
  ASSERT_EQ(answer->items.size(), 3u);
  for (const Recommendation& rec : answer->items)
    EXPECT_EQ(rec.title, "Caf\xc3\xa9 " + rec.item);  // converted to UTF-8
  // An ML-1M `movies.dat` given with --items.
  {
    std::ofstream movies(dir + "/movies.dat");
    for (const Recommendation& rec : answer->items)
      movies << rec.item << "::Movie " << rec.item << " (1995)::Drama|Romance\n";
  }
  Result<Recommendations> titled =
      Recommend({config.output.dir, user, 3, false, dir + "/movies.dat"});
  ASSERT_TRUE(titled.ok()) << titled.status().ToString();
  for (const Recommendation& rec : titled->items)
    EXPECT_EQ(rec.title, "Movie " + rec.item + " (1995)");
  Result<Recommendations> missing =
      Recommend({config.output.dir, user, 3, false, dir + "/no-movies.dat"});
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("no-movies.dat"), std::string::npos);
}

TEST(Recommend, SavedAndLoadedModelScoresAsTheRunEvaluated) {
  // The global model file round-trips: loading it into a fresh server model
  // gives the blocks the run ended with.
  Config config = ImplicitConfig("itemknn", "none");
  config.output.dir = RunDir("recommend-roundtrip");
  config.output.force = true;
  ASSERT_EQ(RunTrain(config), 0);
  Result<Dataset> dataset = LoadDataset(config);
  ASSERT_TRUE(dataset.ok());
  Result<CentralizedResult> central = TrainCentralized(config, *dataset, nullptr);
  ASSERT_TRUE(central.ok());
  Result<std::unique_ptr<Model>> loaded = MakeServerModel(config, dataset->items.size());
  ASSERT_TRUE(loaded.ok());
  std::ifstream in(config.output.dir + "/model.global", std::ios::binary);
  ASSERT_TRUE((*loaded)->LoadBlocks(in, true, "model.global").ok());
  EXPECT_EQ(ModelSha256((*loaded)->GlobalBlocks()), ModelSha256(central->global));
}

}  // namespace
}  // namespace fedrec
