// The Model seam: the registry, biased MF behind it, block files.
#include "algorithms/model.h"

#include <gtest/gtest.h>

#include <cmath>
#include <sstream>

#include "algorithms/interactions.h"
#include "algorithms/metrics.h"
#include "algorithms/mf_trainer.h"
#include "base/random.h"

namespace fedrec {
namespace {

ModelData SmallData(uint32_t users, uint32_t items, uint32_t count, uint64_t seed) {
  ModelData data;
  data.items = items;
  Rng rng(seed);
  for (uint32_t n = 0; n < count; ++n) {
    Rating r;
    r.user = static_cast<uint32_t>(rng.Below(users));
    r.item = static_cast<uint32_t>(rng.Below(items));
    r.value = static_cast<float>(1 + rng.Below(5));
    data.train.push_back(r);
  }
  for (uint32_t u = 0; u < users; ++u) data.user_keys.push_back(1000 + u);
  return data;
}

TEST(ModelRegistry, UnknownNameIsAnErrorListingTheRegisteredModels) {
  Result<std::unique_ptr<Model>> model =
      ModelRegistry::WithBuiltins().Create("wals", ModelOptions{}, ModelData{});
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find("unknown model \"wals\""), std::string::npos);
  EXPECT_NE(model.status().message().find("mf"), std::string::npos);
}

TEST(ModelRegistry, UndeclaredKeyIsAnErrorNamingTheModelsKeys) {
  ModelOptions options;
  options.params["lambda"] = 3;
  Result<std::unique_ptr<Model>> model =
      ModelRegistry::WithBuiltins().Create("mf", options, SmallData(3, 4, 10, 1));
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().message(), "model mf has no key \"lambda\"; its keys: none");
}

TEST(ModelRegistry, DeclaredDefaultsAreFilledInAndOverridesKept) {
  ModelRegistry registry;
  std::map<std::string, double> seen;
  registry.Register({"probe",
                     "records its options",
                     {{"alpha", 0.5, "a"}, {"beta", 2.0, "b"}},
                     [&seen](const ModelOptions& o, ModelData) -> Result<std::unique_ptr<Model>> {
                       seen = o.params;
                       return Status::InvalidArgument("probe builds nothing");
                     }});
  ModelOptions options;
  options.params["beta"] = 7.0;
  EXPECT_FALSE(registry.Create("probe", options, ModelData{}).ok());
  EXPECT_EQ(seen, (std::map<std::string, double>{{"alpha", 0.5}, {"beta", 7.0}}));
}

TEST(BiasedMfModel, TrainsBitForBitAsMfTrainer) {
  ModelData data = SmallData(20, 15, 300, 3);
  MfTrainerOptions trainer_options;
  trainer_options.factors = 8;
  trainer_options.init.seed = 9;
  trainer_options.shard = 2;
  MfTrainer trainer(trainer_options, data.items, data.train, data.user_keys);
  trainer.UseShardMean();
  ModelOptions options;
  options.seed = 9;
  options.factors = 8;
  options.init_std = trainer_options.init.init_std;
  options.sgd = trainer_options.sgd;
  data.shard = 2;
  Result<std::unique_ptr<Model>> model = ModelRegistry::WithBuiltins().Create("mf", options, data);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  (*model)->OnInitialModel();
  for (uint32_t epoch = 0; epoch < 3; ++epoch) {
    const EpochStats stats = trainer.Train(epoch, 1, 0.02f);
    const LossSums loss = (*model)->Train({epoch + 1, epoch, 1, 0.02f});
    EXPECT_EQ(loss.sum, stats.squared_error);
    EXPECT_EQ(loss.count, stats.updates);
  }
  EXPECT_EQ((*model)->blocks(), trainer.model().blocks());
  // Ranking through Model::Score equals MF's own ranking.
  std::vector<Rating> test = SmallData(20, 15, 60, 4).train;
  const RankingSums a = EvaluateRanking(**model, test, {5, 3.0f});
  const RankingSums b = EvaluateRanking(trainer.model(), trainer.train(), test, {5, 3.0f});
  EXPECT_EQ(a.precision, b.precision);
  EXPECT_EQ(a.ndcg, b.ndcg);
  EXPECT_EQ(a.map, b.map);
  EXPECT_EQ(a.recommended, b.recommended);
}

// FedProx's term pulls the item rows toward their value at the start of
// training: none at mu = 0, all the way when lr * mu = 1 (the folded step
// keeps nothing of the drift), part of the way in between.
// Reconstruction (Model::ReconstructLocal) solves each user's ridge
// regression against fixed item rows: at its result the objective's gradient
// in the user's row is zero, the global blocks are untouched, and a user
// without ratings gets zeros.
TEST(BiasedMfModel, ReconstructLocalSolvesEachUsersRegressionWithTheItemsFixed) {
  constexpr uint32_t kUsers = 12, kK = 6;
  ModelData data = SmallData(kUsers - 1, 15, 200, 5);  // user kUsers - 1 has no ratings
  data.user_keys.push_back(1000 + kUsers - 1);
  ModelOptions options;
  options.seed = 4;
  options.factors = kK;
  Result<std::unique_ptr<Model>> made = ModelRegistry::WithBuiltins().Create("mf", options, data);
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  Model& model = **made;
  TrainPlan plan;
  plan.epochs = 3;
  plan.lr = 0.02f;
  model.Train(plan);
  const std::vector<ParamBlock> global_before = CopyGlobalBlocks(model.blocks());
  ASSERT_TRUE(model.ReconstructLocal());
  EXPECT_EQ(CopyGlobalBlocks(model.blocks()), global_before);

  const std::vector<ParamBlock>& blocks = model.blocks();
  const float mu = FindBlock(blocks, MfModel::kGlobalMean)->data[0];
  const std::vector<float>& bi = FindBlock(blocks, MfModel::kItemBias)->data;
  const std::vector<float>& q = FindBlock(blocks, MfModel::kItemFactors)->data;
  const std::vector<float>& bu = FindBlock(blocks, MfModel::kUserBias)->data;
  const std::vector<float>& p = FindBlock(blocks, MfModel::kUserFactors)->data;
  const SgdOptions sgd = options.sgd;
  for (uint32_t u = 0; u < kUsers; ++u) {
    // Half the gradient of sum_j e_j^2 + n (reg |p|^2 + bias_reg b^2).
    std::vector<double> grad(kK + 1, 0.0);
    double n = 0.0, scale = 0.0;
    for (const Rating& r : data.train) {
      if (r.user != u) continue;
      ++n;
      double prediction = mu + bu[u] + bi[r.item];
      for (uint32_t c = 0; c < kK; ++c) prediction += double(p[u * kK + c]) * q[r.item * kK + c];
      const double e = r.value - prediction;
      for (uint32_t c = 0; c < kK; ++c) grad[c] -= e * q[r.item * kK + c];
      grad[kK] -= e;
      scale += std::abs(e);
    }
    if (n == 0) {
      for (uint32_t c = 0; c < kK; ++c) EXPECT_EQ(p[u * kK + c], 0.0f) << "user " << u;
      EXPECT_EQ(bu[u], 0.0f);
      continue;
    }
    for (uint32_t c = 0; c < kK; ++c) grad[c] += n * sgd.reg * p[u * kK + c];
    grad[kK] += n * sgd.bias_reg * bu[u];
    for (uint32_t c = 0; c <= kK; ++c)
      EXPECT_NEAR(grad[c], 0.0, 1e-4 * (1.0 + scale)) << "user " << u << ", entry " << c;
  }
}

// Models without a reconstruction change nothing and say so (iALS solves
// its users against every new model instead).
TEST(ModelSeam, ReconstructLocalIsRefusedByModelsWithoutOne) {
  ModelOptions options;
  options.factors = 4;
  Result<std::unique_ptr<Model>> made =
      ModelRegistry::WithBuiltins().Create("ials", options, SmallData(5, 8, 40, 2));
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  const std::vector<ParamBlock> before = (*made)->blocks();
  EXPECT_FALSE((*made)->ReconstructLocal());
  EXPECT_EQ((*made)->blocks(), before);
}

TEST(BiasedMfModel, ProximalTermPullsItemRowsTowardTheirStartingValue) {
  ModelOptions options;
  options.factors = 4;
  const auto drift = [&](float mu) {
    std::unique_ptr<Model> model =
        std::move(ModelRegistry::WithBuiltins().Create("mf", options, SmallData(8, 6, 120, 7)))
            .value();
    model->OnInitialModel();
    const std::vector<ParamBlock> start = model->GlobalBlocks();
    TrainPlan plan{1, 0, 2, 0.05f};
    plan.proximal_mu = mu;
    model->Train(plan);
    double moved = 0.0;
    const std::vector<ParamBlock> end = model->GlobalBlocks();
    for (size_t b = 1; b < end.size(); ++b) {  // item_bias, item_factors
      for (size_t i = 0; i < end[b].data.size(); ++i)
        moved += std::abs(end[b].data[i] - start[b].data[i]);
    }
    return moved;
  };
  const double free = drift(0.0f);
  EXPECT_GT(free, 0.0);
  EXPECT_EQ(drift(20.0f), 0.0);  // lr * mu = 1
  const double pulled = drift(2.0f);
  EXPECT_GT(pulled, 0.0);
  EXPECT_LT(pulled, 0.8 * free);
}

TEST(ModelBlocks, SaveAndLoadRoundTripGivesIdenticalScores) {
  ModelOptions options;
  options.factors = 4;
  auto make = [&] {
    return std::move(ModelRegistry::WithBuiltins().Create("mf", options, SmallData(6, 9, 50, 5)))
        .value();
  };
  std::unique_ptr<Model> trained = make();
  trained->OnInitialModel();
  trained->Train({1, 0, 2, 0.05f});
  std::stringstream global, local;
  ASSERT_TRUE(trained->SaveBlocks(global, true).ok());
  ASSERT_TRUE(trained->SaveBlocks(local, false).ok());
  options.seed = 77;  // a different initial draw, overwritten by the files
  std::unique_ptr<Model> loaded = make();
  ASSERT_TRUE(loaded->LoadBlocks(global, true, "global").ok());
  ASSERT_TRUE(loaded->LoadBlocks(local, false, "local").ok());
  std::vector<float> a(9), b(9);
  for (uint32_t u = 0; u < 6; ++u) {
    trained->Score(u, a);
    loaded->Score(u, b);
    EXPECT_EQ(a, b);
  }
}

TEST(ModelBlocks, DamagedFilesAreErrorsThatChangeNothing) {
  ModelOptions options;
  options.factors = 4;
  std::unique_ptr<Model> model =
      std::move(ModelRegistry::WithBuiltins().Create("mf", options, SmallData(6, 9, 50, 5)))
          .value();
  const std::vector<ParamBlock> before = model->blocks();
  std::stringstream saved;
  ASSERT_TRUE(model->SaveBlocks(saved, true).ok());
  const std::string bytes = saved.str();

  std::stringstream truncated(bytes.substr(0, bytes.size() - 10));
  Status s = model->LoadBlocks(truncated, true, "m.global");
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("m.global: block item_factors is truncated"), std::string::npos)
      << s.message();

  std::stringstream other("fedrec-model-blocks v1 ease 1\n");
  s = model->LoadBlocks(other, true, "m.global");
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("expected a header \"fedrec-model-blocks v1 mf <blocks>\""),
            std::string::npos)
      << s.message();

  ModelOptions wider = options;
  wider.factors = 5;
  std::unique_ptr<Model> k5 =
      std::move(ModelRegistry::WithBuiltins().Create("mf", wider, SmallData(6, 9, 50, 5))).value();
  std::stringstream mismatched(bytes);
  s = k5->LoadBlocks(mismatched, true, "m.global");
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("expected block \"item_factors 0 9 5\""), std::string::npos)
      << s.message();
  EXPECT_EQ(model->blocks(), before);
}

TEST(RankingSums, F1MapAndCoverageOnAHandWorkedList) {
  // 4 items scored 3 > 2 > 1 > 0 for the one user; relevant: items 1 and 3.
  const std::vector<Rating> test = {{0, 1, 5.0f, 0}, {0, 3, 5.0f, 0}};
  const RankingSums s = EvaluateRanking(1, 4,
                                        [](uint32_t, std::span<float> out) {
                                          for (uint32_t i = 0; i < 4; ++i)
                                            out[i] = 3.0f - static_cast<float>(i);
                                        },
                                        {}, test, {2, 4.0f});
  // Top 2 = items 0, 1: one hit at rank 2.
  EXPECT_DOUBLE_EQ(s.precision, 0.5);
  EXPECT_DOUBLE_EQ(s.recall, 0.5);
  EXPECT_DOUBLE_EQ(s.f1, 0.5);
  EXPECT_DOUBLE_EQ(s.map, (1.0 / 2.0) / 2.0);  // precision at the hit's rank, over min(2, K)
  EXPECT_EQ(s.recommended, (std::vector<uint32_t>{1, 1, 0, 0}));
  EXPECT_EQ(s.CoveredItems(), 2u);
  RankingSums merged = s;
  RankingSums other;
  other.recommended = {0, 2, 0, 1};
  merged.Merge(other);
  EXPECT_EQ(merged.recommended, (std::vector<uint32_t>{1, 3, 0, 1}));
  EXPECT_EQ(merged.CoveredItems(), 3u);
}

TEST(Interactions, UserPositivesAreDistinctAscendingAndAboveTheThreshold) {
  const std::vector<Rating> train = {{1, 4, 5.0f, 0}, {0, 2, 4.0f, 0}, {1, 0, 4.5f, 0},
                                     {1, 4, 4.0f, 0}, {0, 3, 2.0f, 0}, {2, 1, 3.9f, 0}};
  const Csr p = UserPositives(train, 3, 4.0f);
  ASSERT_EQ(p.rows(), 3u);
  EXPECT_EQ(std::vector<uint32_t>(p.Row(0).begin(), p.Row(0).end()), (std::vector<uint32_t>{2}));
  EXPECT_EQ(std::vector<uint32_t>(p.Row(1).begin(), p.Row(1).end()), (std::vector<uint32_t>{0, 4}));
  EXPECT_TRUE(p.Row(2).empty());
  const Csr t = Transpose(p, 5);
  ASSERT_EQ(t.rows(), 5u);
  EXPECT_EQ(std::vector<uint32_t>(t.Row(4).begin(), t.Row(4).end()), (std::vector<uint32_t>{1}));
  EXPECT_EQ(std::vector<uint32_t>(t.Row(2).begin(), t.Row(2).end()), (std::vector<uint32_t>{0}));
  EXPECT_TRUE(t.Row(3).empty());
}

}  // namespace
}  // namespace fedrec
