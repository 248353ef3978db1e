// The multi-task recommenders shared_bottom, mmoe and ple behind the Model
// seam (algorithms/multitask_model.cc).
// GCC 12 reports Eigen's AVX-512 kernels as reading an uninitialized
// register (_mm512_undefined_*, undefined on purpose): a false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "algorithms/model.h"
#include "algorithms/strategy.h"
#include "base/random.h"
#include "data/synthetic.h"

namespace fedrec {
namespace {

struct Split {
  ModelData data;
  std::vector<Rating> test;
};

// Synthetic ratings (data/synthetic.h), the last fifth of a shuffle held out.
Split SyntheticSplit(uint32_t users, uint32_t items, uint64_t ratings, uint64_t seed) {
  SyntheticOptions options;
  options.users = users;
  options.items = items;
  options.ratings = ratings;
  options.seed = seed;
  SyntheticData synthetic = GenerateSynthetic(options);
  std::vector<Rating> all = synthetic.dataset.train;
  Rng rng(seed, 0, 0, Purpose::kSplit);
  rng.Shuffle(std::span<Rating>(all));
  Split split;
  split.data.items = items;
  const size_t cut = all.size() * 4 / 5;
  split.data.train.assign(all.begin(), all.begin() + cut);
  split.test.assign(all.begin() + cut, all.end());
  for (uint32_t u = 0; u < users; ++u) split.data.user_keys.push_back(5000 + u);
  return split;
}

std::unique_ptr<Model> Make(const std::string& name, const std::map<std::string, double>& params,
                            ModelData data) {
  ModelOptions options;
  options.factors = 16;
  options.seed = 11;
  options.params = params;
  Result<std::unique_ptr<Model>> model =
      ModelRegistry::WithBuiltins().Create(name, options, std::move(data));
  EXPECT_TRUE(model.ok()) << model.status().message();
  if (!model.ok()) return nullptr;
  (*model)->OnInitialModel();
  return std::move(model).value();
}

void TrainEpochs(Model* model, uint32_t epochs, float lr = 0.01f) {
  for (uint32_t e = 0; e < epochs; ++e) {
    TrainPlan plan;
    plan.round = e + 1;
    plan.epoch_offset = e;
    plan.lr = lr;
    model->Train(plan);
  }
}

double Rmse(const Model& model, const std::vector<Rating>& test) {
  double sum = 0.0;
  for (const Rating& r : test) {
    const double d = model.Predict(r.user, r.item) - r.value;
    sum += d * d;
  }
  return std::sqrt(sum / test.size());
}

const char* const kArchitectures[] = {"shared_bottom", "mmoe", "ple"};

TEST(MultiTaskModel, EveryArchitectureBeatsTheGlobalMeanOnSyntheticRatings) {
  const Split split = SyntheticSplit(300, 200, 15000, 3);
  double mean = 0.0;
  for (const Rating& r : split.data.train) mean += r.value;
  mean /= split.data.train.size();
  double baseline = 0.0;
  for (const Rating& r : split.test) baseline += (r.value - mean) * (r.value - mean);
  baseline = std::sqrt(baseline / split.test.size());
  for (const char* name : kArchitectures) {
    std::unique_ptr<Model> model = Make(name, {}, split.data);
    ASSERT_TRUE(model);
    EXPECT_TRUE(model->PredictsRatings());
    TrainEpochs(model.get(), 10);
    const double rmse = Rmse(*model, split.test);
    EXPECT_LT(rmse, 0.93 * baseline) << name << ": global mean " << baseline;
  }
}

TEST(MultiTaskModel, UserBlocksAreLocalAndNeverUploaded) {
  const Split split = SyntheticSplit(40, 30, 600, 4);
  for (const char* name : kArchitectures) {
    std::unique_ptr<Model> model = Make(name, {}, split.data);
    TrainEpochs(model.get(), 1);
    bool local_seen = false;
    for (const ParamBlock& b : model->blocks()) {
      if (b.name == "user_emb" || b.name == "user_bias") {
        EXPECT_EQ(b.scope, Scope::kLocal);
      }
      if (!IsGlobal(b.scope)) local_seen = true;
      EXPECT_FALSE(local_seen && IsGlobal(b.scope)) << "global block after a local one: " << b.name;
    }
    const std::vector<ParamBlock> shapes = model->UploadShapes();
    const std::vector<DenseBlockView> views = model->Upload();
    ASSERT_EQ(shapes.size(), views.size());
    for (size_t b = 0; b < shapes.size(); ++b) {
      EXPECT_TRUE(IsGlobal(shapes[b].scope)) << shapes[b].name;
      EXPECT_NE(shapes[b].name, "user_emb");
      EXPECT_NE(shapes[b].name, "user_bias");
      EXPECT_EQ(views[b].weights.size(), shapes[b].rows) << shapes[b].name;
      EXPECT_EQ(views[b].values.size(), size_t{shapes[b].rows} * shapes[b].cols);
      // Network rows weigh every example of the site.
      if (shapes[b].name.starts_with("net.")) {
        EXPECT_GT(views[b].weights[0], 0u);
      }
    }
  }
}

TEST(MultiTaskModel, LocalTowersKeepTowersAndTaskGatesAtTheSite) {
  const Split split = SyntheticSplit(40, 30, 600, 4);
  std::unique_ptr<Model> model = Make("mmoe", {{"local_towers", 1}}, split.data);
  int towers = 0, experts = 0;
  for (const ParamBlock& b : model->blocks()) {
    if (b.name.starts_with("net.tower") || b.name.starts_with("net.l0.g")) {
      EXPECT_EQ(b.scope, Scope::kLocal) << b.name;
      ++towers;
    }
    if (b.name.starts_with("net.l0.es")) {
      EXPECT_EQ(b.scope, Scope::kGlobal) << b.name;
      ++experts;
    }
  }
  EXPECT_GT(towers, 0);
  EXPECT_GT(experts, 0);
  for (const ParamBlock& shape : model->UploadShapes()) {
    EXPECT_FALSE(shape.name.starts_with("net.tower")) << shape.name;
  }
}

TEST(MultiTaskModel, IdDropoutTrainsWithoutTheUsersRowsOnTheDroppedInteractions) {
  const Split split = SyntheticSplit(40, 30, 900, 6);
  for (const char* name : kArchitectures) {
    // Every interaction anonymous: the users' rows keep their initial values
    // while the rest of the model learns.
    std::unique_ptr<Model> all = Make(name, {{"id_dropout", 1}}, split.data);
    const std::vector<ParamBlock> before = all->blocks();
    TrainEpochs(all.get(), 2);
    for (size_t b = 0; b < before.size(); ++b) {
      const ParamBlock& block = all->blocks()[b];
      if (block.name == "user_emb" || block.name == "user_bias") {
        EXPECT_EQ(block.data, before[b].data) << name << " " << block.name;
      } else if (block.name == "item_emb" || block.name.starts_with("net.")) {
        EXPECT_NE(block.data, before[b].data) << name << " " << block.name;
      }
    }
    // Some anonymous: deterministic, and a different model from none.
    std::unique_ptr<Model> half = Make(name, {{"id_dropout", 0.5}}, split.data);
    std::unique_ptr<Model> again = Make(name, {{"id_dropout", 0.5}}, split.data);
    std::unique_ptr<Model> none = Make(name, {}, split.data);
    TrainEpochs(half.get(), 2);
    TrainEpochs(again.get(), 2);
    TrainEpochs(none.get(), 2);
    EXPECT_TRUE(half->blocks() == again->blocks()) << name;
    EXPECT_FALSE(half->blocks() == none->blocks()) << name;
  }
  ModelOptions options;
  options.params = {{"id_dropout", 1.5}};
  Result<std::unique_ptr<Model>> refused =
      ModelRegistry::WithBuiltins().Create("mmoe", options, split.data);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("id_dropout: expected a share in [0, 1], found 1.5"),
            std::string::npos)
      << refused.status().message();
}

// Ratings of a site whose scenario differs from the federation's: its
// users rate every item `shift` lower (clamped to [1, 5]).
Split ShiftedSite(const Split& base, float shift) {
  Split site = base;
  for (std::vector<Rating>* list : {&site.data.train, &site.test}) {
    for (Rating& r : *list) r.value = std::clamp(r.value - shift, 1.0f, 5.0f);
  }
  return site;
}

TEST(MultiTaskModel, AdaptedTowersFitTheSitesScenarioAndNeverReachTheUpload) {
  const Split federation = SyntheticSplit(120, 60, 6000, 7);
  const Split site = ShiftedSite(SyntheticSplit(120, 60, 6000, 7), 0.8f);
  for (const char* name : kArchitectures) {
    // The federation's model, trained on the unshifted ratings.
    std::unique_ptr<Model> global = Make(name, {}, federation.data);
    TrainEpochs(global.get(), 4);
    const std::vector<ParamBlock> model = global->GlobalBlocks();

    std::unique_ptr<Model> adapted = Make(name, {{"local_towers", 2}}, site.data);
    std::unique_ptr<Model> plain = Make(name, {}, site.data);
    std::unique_ptr<Model> still =
        Make(name, {{"local_towers", 2}, {"adapt_lr_scale", 0}}, site.data);
    // Too few held-out examples to choose by: the global heads.
    std::unique_ptr<Model> small =
        Make(name, {{"local_towers", 2}, {"adapt_min_holdout", 1e6}}, site.data);
    ASSERT_TRUE(adapted->SetGlobalBlocks(model));
    ASSERT_TRUE(plain->SetGlobalBlocks(model));
    ASSERT_TRUE(still->SetGlobalBlocks(model));
    ASSERT_TRUE(small->SetGlobalBlocks(model));
    EXPECT_EQ(Rmse(*small, site.test), Rmse(*plain, site.test)) << name;
    // The site predicts its scenario better with its own towers; a copy that
    // does not improve on the held-out examples is not kept.
    EXPECT_LT(Rmse(*adapted, site.test), 0.98 * Rmse(*plain, site.test)) << name;
    EXPECT_EQ(Rmse(*still, site.test), Rmse(*plain, site.test)) << name;
    // The towers are federated: the upload carries the global values, and
    // training starts from them, not from the site's copy.
    const std::vector<DenseBlockView> up_adapted = adapted->Upload();
    const std::vector<DenseBlockView> up_plain = plain->Upload();
    ASSERT_EQ(up_adapted.size(), up_plain.size());
    for (size_t b = 0; b < up_plain.size(); ++b) {
      EXPECT_TRUE(std::equal(up_adapted[b].values.begin(), up_adapted[b].values.end(),
                             up_plain[b].values.begin(), up_plain[b].values.end()))
          << name << " block " << b;
    }
    TrainEpochs(adapted.get(), 1);
    TrainEpochs(plain.get(), 1);
    EXPECT_TRUE(adapted->GlobalBlocks() == plain->GlobalBlocks()) << name;
  }
}

TEST(MultiTaskModel, SameSeedGivesBitIdenticalBlocks) {
  const Split split = SyntheticSplit(50, 40, 1500, 5);
  const std::map<std::string, double> params = {
      {"click_weight", 1}, {"uncertainty", 1}, {"levels", 2}};
  std::unique_ptr<Model> a = Make("ple", params, split.data);
  std::unique_ptr<Model> b = Make("ple", params, split.data);
  TrainEpochs(a.get(), 2);
  TrainEpochs(b.get(), 2);
  EXPECT_TRUE(a->blocks() == b->blocks());
  std::unique_ptr<Model> other_seed;
  {
    ModelOptions options;
    options.factors = 16;
    options.seed = 12;
    options.params = params;
    other_seed =
        std::move(ModelRegistry::WithBuiltins().Create("ple", options, split.data)).value();
  }
  TrainEpochs(other_seed.get(), 2);
  EXPECT_FALSE(a->blocks() == other_seed->blocks());
}

TEST(MultiTaskModel, ATaskWithWeightZeroIsAbsent) {
  const Split split = SyntheticSplit(20, 20, 200, 6);
  std::unique_ptr<Model> both = Make("mmoe", {{"click_weight", 0}}, split.data);
  ASSERT_EQ(both->Tasks().size(), 2u);
  EXPECT_EQ(both->Tasks()[0].name, "rating");
  EXPECT_EQ(both->Tasks()[1].name, "like");
  EXPECT_EQ(both->Tasks()[1].kind, TaskKind::kLike);
  EXPECT_FLOAT_EQ(both->Tasks()[1].threshold, 4.0f);
  std::unique_ptr<Model> like_only =
      Make("mmoe", {{"rating_weight", 0}, {"click_weight", 0}}, split.data);
  ASSERT_EQ(like_only->Tasks().size(), 1u);
  EXPECT_EQ(like_only->Tasks()[0].kind, TaskKind::kLike);
  EXPECT_FALSE(like_only->PredictsRatings());
  std::unique_ptr<Model> three = Make("shared_bottom", {}, split.data);  // click on by default
  ASSERT_EQ(three->Tasks().size(), 3u);
  EXPECT_EQ(three->Tasks()[2].kind, TaskKind::kClick);
  ModelOptions options;
  options.params = {{"rating_weight", 0}, {"like_weight", 0}, {"click_weight", 0}};
  Result<std::unique_ptr<Model>> none =
      ModelRegistry::WithBuiltins().Create("ple", options, split.data);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("at least one of"), std::string::npos);
}

TEST(MultiTaskModel, PredictTasksAgreesWithPredictAndScore) {
  const Split split = SyntheticSplit(30, 25, 500, 7);
  std::unique_ptr<Model> model = Make("ple", {{"click_weight", 1}}, split.data);
  TrainEpochs(model.get(), 2);
  std::vector<float> scores(model->items());
  for (uint32_t u : {0u, 7u, 29u}) {
    model->Score(u, scores);
    for (uint32_t i : {0u, 3u, 24u}) {
      float tasks[3];
      model->PredictTasks(u, i, tasks);
      EXPECT_FLOAT_EQ(tasks[0], model->Predict(u, i));
      EXPECT_GT(tasks[1], 0.0f);
      EXPECT_LT(tasks[1], 1.0f);
      EXPECT_GT(tasks[2], 0.0f);
      EXPECT_LT(tasks[2], 1.0f);
      // Score: the probability of a liked interaction, P(click) * P(like).
      EXPECT_NEAR(scores[i], tasks[1] * tasks[2], 1e-5f);
    }
  }
}

TEST(MultiTaskModel, ClickTaskRanksInteractedItemsAboveOthers) {
  const Split split = SyntheticSplit(300, 300, 6000, 8);
  std::unique_ptr<Model> model =
      Make("mmoe", {{"rating_weight", 0}, {"like_weight", 0}, {"click_weight", 1}, {"batch", 64}},
           split.data);
  TrainEpochs(model.get(), 10, 0.1f);
  // Held-out interactions against random items, per user (an AUC estimate).
  std::vector<float> scores(model->items());
  Rng rng(8);
  uint64_t wins = 0, pairs = 0;
  for (const Rating& r : split.test) {
    model->Score(r.user, scores);
    const uint32_t j = static_cast<uint32_t>(rng.Below(model->items()));
    wins += scores[r.item] > scores[j];
    ++pairs;
  }
  EXPECT_GT(static_cast<double>(wins) / pairs, 0.7);
}

TEST(MultiTaskModel, ColdUsersDoNotChangeGlobalBlocksAndFoldInFitsThem) {
  const Split split = SyntheticSplit(60, 50, 2000, 9);
  ModelData warm = split.data;
  // Cold users come after the warm ones, with a few ratings each.
  ModelData with_cold = split.data;
  constexpr uint32_t kCold = 10;
  Rng rng(9);
  with_cold.cold_users.assign(60, 0);
  for (uint32_t c = 0; c < kCold; ++c) {
    with_cold.user_keys.push_back(9000 + c);
    with_cold.cold_users.push_back(1);
    for (int n = 0; n < 6; ++n) {
      with_cold.train.push_back(
          Rating{60 + c, static_cast<uint32_t>(rng.Below(50)), c % 2 == 0 ? 5.0f : 1.0f, 0});
    }
  }
  // A high fold-in rate: these users' ratings are all 5 or all 1, far from the mean.
  const std::map<std::string, double> params = {{"click_weight", 1}, {"foldin_lr_scale", 10}};
  std::unique_ptr<Model> a = Make("mmoe", params, warm);
  std::unique_ptr<Model> b = Make("mmoe", params, with_cold);
  TrainEpochs(a.get(), 2);
  TrainEpochs(b.get(), 2);
  const std::vector<ParamBlock> ga = a->GlobalBlocks(), gb = b->GlobalBlocks();
  ASSERT_EQ(ga.size(), gb.size());
  for (size_t k = 0; k < ga.size(); ++k) EXPECT_TRUE(ga[k] == gb[k]) << ga[k].name;

  // Fold-in fits the cold users' own ratings (the global model frozen).
  std::map<std::string, double> no_foldin = params;
  no_foldin["foldin_epochs"] = 0;
  std::unique_ptr<Model> c = Make("mmoe", no_foldin, with_cold);
  TrainEpochs(c.get(), 2);
  std::vector<Rating> cold_ratings(with_cold.train.end() - kCold * 6, with_cold.train.end());
  EXPECT_LT(Rmse(*b, cold_ratings), 0.8 * Rmse(*c, cold_ratings));
  // Adopting new global blocks folds them in again, and leaves the blocks as given.
  const std::vector<ParamBlock> before = b->GlobalBlocks();
  ASSERT_TRUE(b->SetGlobalBlocks(before));
  EXPECT_TRUE(b->GlobalBlocks() == before);
}

FeatureTable UserFeatures(uint32_t users) {
  FeatureTable t;
  t.fields = {{"age", false, 3, {}}, {"activity", true, 0, {}}};
  t.rows = users;
  t.offsets.push_back(0);
  for (uint32_t u = 0; u < users; ++u) {
    if (u % 5 != 0) t.ids.push_back(u % 3);  // every fifth user: age missing
    t.offsets.push_back(static_cast<uint32_t>(t.ids.size()));
    t.numeric.push_back(static_cast<float>(u % 7) / 7.0f);
  }
  return t;
}

FeatureTable ItemFeatures(uint32_t items) {
  FeatureTable t;
  t.fields = {{"genres", false, 4, {}}};
  t.rows = items;
  t.offsets.push_back(0);
  for (uint32_t i = 0; i < items; ++i) {
    t.ids.push_back(i % 4);
    if (i % 3 == 0) t.ids.push_back((i + 1) % 4);  // two genres
    t.offsets.push_back(static_cast<uint32_t>(t.ids.size()));
  }
  return t;
}

TEST(MultiTaskModel, SideFeaturesAreEmbeddedAndTheirRowsUploaded) {
  Split split = SyntheticSplit(60, 50, 2000, 10);
  split.data.user_features = UserFeatures(60);
  split.data.item_features = std::make_shared<const FeatureTable>(ItemFeatures(50));
  for (const char* name : kArchitectures) {
    std::unique_ptr<Model> model = Make(name, {}, split.data);
    TrainEpochs(model.get(), 3);
    const std::vector<ParamBlock> shapes = model->UploadShapes();
    const std::vector<DenseBlockView> views = model->Upload();
    bool age = false, genres = false;
    for (size_t b = 0; b < shapes.size(); ++b) {
      if (shapes[b].name == "ufeat.age") {
        age = true;
        EXPECT_EQ(shapes[b].rows, 3u);
        for (uint32_t r = 0; r < 3; ++r) EXPECT_GT(views[b].weights[r], 0u);
      }
      if (shapes[b].name == "ifeat.genres") {
        genres = true;
        for (uint32_t r = 0; r < 4; ++r) EXPECT_GT(views[b].weights[r], 0u);
      }
    }
    EXPECT_TRUE(age && genres) << name;
    const double rmse = Rmse(*model, split.test);
    EXPECT_TRUE(std::isfinite(rmse));
    EXPECT_LT(rmse, 1.5);
  }
}

TEST(MultiTaskModel, BadSideFeaturesAreAClearError) {
  Split split = SyntheticSplit(20, 20, 200, 11);
  FeatureTable users = UserFeatures(20);
  users.ids[0] = 7;  // vocabulary 3
  split.data.user_features = users;
  ModelOptions options;
  Result<std::unique_ptr<Model>> model =
      ModelRegistry::WithBuiltins().Create("mmoe", options, split.data);
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find("expected an id < 3, found 7"), std::string::npos)
      << model.status().message();
  options.params["levels"] = 0;
  model = ModelRegistry::WithBuiltins().Create("ple", options, SyntheticSplit(5, 5, 10, 1).data);
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find("model.ple.levels"), std::string::npos);
}

TEST(MultiTaskModel, ProximalTermKeepsGlobalBlocksNearTheRoundsStart) {
  const Split split = SyntheticSplit(60, 50, 2000, 12);
  std::unique_ptr<Model> plain = Make("mmoe", {}, split.data);
  std::unique_ptr<Model> prox = Make("mmoe", {}, split.data);
  const std::vector<ParamBlock> start = plain->GlobalBlocks();
  TrainPlan plan;
  plan.round = 1;
  plan.epochs = 3;
  plan.lr = 0.1f;
  plain->Train(plan);
  plan.proximal_mu = 50.0f;
  prox->Train(plan);
  auto distance = [&](const Model& model) {
    double d = 0.0;
    const std::vector<ParamBlock> now = model.GlobalBlocks();
    for (size_t b = 0; b < now.size(); ++b) {
      for (size_t i = 0; i < now[b].data.size(); ++i) {
        d += std::pow(now[b].data[i] - start[b].data[i], 2);
      }
    }
    return d;
  };
  EXPECT_LT(distance(*prox), 0.5 * distance(*plain));
}

TEST(MultiTaskModel, TwoSitesAveragedByFedAvgBeatTheGlobalMean) {
  const Split split = SyntheticSplit(300, 200, 15000, 13);
  // Site 0 holds users 0..149, site 1 the rest, each numbering its own from 0.
  ModelData sites[2];
  for (uint32_t s = 0; s < 2; ++s) {
    sites[s].items = 200;
    sites[s].shard = s;
    for (uint32_t u = 0; u < 150; ++u) sites[s].user_keys.push_back(5000 + 150 * s + u);
  }
  for (const Rating& r : split.data.train) {
    Rating local = r;
    local.user = r.user % 150;
    sites[r.user / 150].train.push_back(local);
  }
  // An item site 0 never saw uploads nothing from site 0.
  std::vector<bool> seen(200, false);
  for (const Rating& r : sites[0].train) seen[r.item] = true;
  const uint32_t unseen =
      static_cast<uint32_t>(std::find(seen.begin(), seen.end(), false) - seen.begin());
  std::unique_ptr<Model> models[2] = {Make("shared_bottom", {}, sites[0]),
                                      Make("shared_bottom", {}, sites[1])};
  Result<std::unique_ptr<Strategy>> strategy =
      StrategyRegistry::WithBuiltins().Create("fedavg", StrategyOptions{});
  ASSERT_TRUE(strategy.ok());
  for (uint32_t round = 1; round <= 8; ++round) {
    AggregateInput sums;
    sums.round = round;
    for (auto& model : models) {
      TrainPlan plan;
      plan.round = round;
      plan.epoch_offset = round - 1;
      plan.lr = 0.02f;
      model->Train(plan);
      AddUpload(*model, &sums);
    }
    if (round == 1 && unseen < 200) {
      const std::vector<ParamBlock> shapes = models[0]->UploadShapes();
      const std::vector<DenseBlockView> views = models[0]->Upload();
      for (size_t b = 0; b < shapes.size(); ++b) {
        if (shapes[b].name == "item_emb") {
          EXPECT_EQ(views[b].weights[unseen], 0u);
        }
      }
    }
    std::vector<ParamBlock> global = models[0]->GlobalBlocks();
    ASSERT_TRUE(models[0]->Apply(sums, strategy->get(), &global).ok());
    for (auto& model : models) ASSERT_TRUE(model->SetGlobalBlocks(global));
  }
  double mean = 0.0;
  for (const Rating& r : split.data.train) mean += r.value;
  mean /= split.data.train.size();
  double baseline = 0.0, error = 0.0;
  for (const Rating& r : split.test) {
    const double d = models[r.user / 150]->Predict(r.user % 150, r.item) - r.value;
    error += d * d;
    baseline += (r.value - mean) * (r.value - mean);
  }
  EXPECT_LT(std::sqrt(error / split.test.size()), 0.95 * std::sqrt(baseline / split.test.size()));
}

// One SGD step over one batch of every rating moves each parameter by
// -lr * dL/dw, so (before - after) / lr is the model's own gradient, which the
// finite differences of the loss (recomputed from PredictTasks) check: the
// wide part, every embedding (side features too), the network and the
// uncertainty weights.
class ModelGradient : public ::testing::TestWithParam<const char*> {};

TEST_P(ModelGradient, OneSgdStepMovesEveryParameterByMinusTheRateTimesItsGradient) {
  Split split = SyntheticSplit(30, 20, 200, 14);
  split.data.user_features = UserFeatures(30);
  split.data.item_features = std::make_shared<const FeatureTable>(ItemFeatures(20));
  const std::map<std::string, double> params = {
      {"click_weight", 0},  {"uncertainty", 1},  {"optimizer", 0},     {"l2", 0},
      {"emb_l2", 0},        {"batch", 100000},   {"lr_scale", 1},      {"foldin_epochs", 0},
      {"expert_hidden", 8}, {"tower_hidden", 4}, {"like_weight", 0.7}, {"levels", 2}};
  std::map<std::string, double> own = params;
  if (std::string(GetParam()) != "ple") own.erase("levels");
  std::unique_ptr<Model> model = Make(GetParam(), own, split.data);
  ASSERT_TRUE(model);
  const std::vector<Rating> train = model->train();
  for (ParamBlock& b : model->blocks()) {
    if (b.name == "log_var") b.data = {0.3f, -0.2f};
    if (b.name == "item_bias" || b.name == "user_bias") {
      for (size_t i = 0; i < b.data.size(); ++i) b.data[i] = 0.01f * static_cast<float>(i % 7);
    }
  }
  const ParamBlock* log_var = FindBlock(model->blocks(), "log_var");
  ASSERT_NE(log_var, nullptr);
  auto loss = [&] {
    const float s0 = log_var->data[0], s1 = log_var->data[1];
    double sum = 0.0;
    for (const Rating& r : train) {
      float out[2];
      model->PredictTasks(r.user, r.item, out);
      const double sq = 0.5 * (out[0] - r.value) * (out[0] - r.value);
      const double p = out[1], label = r.value >= 4.0f ? 1.0 : 0.0;
      const double bce = -(label * std::log(p) + (1 - label) * std::log(1 - p));
      sum += std::exp(-s0) * sq + 0.5 * s0 + 0.7 * (std::exp(-s1) * bce + 0.5 * s1);
    }
    return sum / train.size();
  };
  const std::vector<ParamBlock> before = model->blocks();
  constexpr float kLr = 0.01f;
  TrainPlan plan;
  plan.round = 1;
  plan.lr = kLr;
  model->Train(plan);
  const std::vector<ParamBlock> after = model->blocks();
  model->blocks() = before;
  Rng pick(15);
  int checked = 0, mismatched = 0;
  for (size_t b = 0; b < before.size(); ++b) {
    if (before[b].name == "global_mean") continue;  // the sites' mean, not trained
    for (int n = 0; n < 12; ++n) {
      const size_t i = static_cast<size_t>(pick.Below(before[b].data.size()));
      const double analytic = (static_cast<double>(before[b].data[i]) - after[b].data[i]) / kLr;
      float& value = model->blocks()[b].data[i];
      const float saved = value;
      const double eps = 1e-3;
      value = static_cast<float>(saved + eps);
      const double up = loss();
      value = static_cast<float>(saved - eps);
      const double down = loss();
      value = saved;
      const double numeric = (up - down) / (2 * eps);
      ++checked;
      if (std::fabs(numeric - analytic) > 2e-3 + 3e-2 * std::fabs(numeric)) {
        ++mismatched;
        // A ReLU whose input crosses 0 within eps (rare): reported, and counted below.
        std::printf("%s[%zu]: step gives %g, finite differences %g\n", before[b].name.c_str(), i,
                    analytic, numeric);
      }
    }
  }
  EXPECT_GT(checked, 100);
  EXPECT_LE(mismatched, checked / 50) << mismatched << " of " << checked;
}

INSTANTIATE_TEST_SUITE_P(Architectures, ModelGradient,
                         ::testing::Values("shared_bottom", "mmoe", "ple"));

}  // namespace
}  // namespace fedrec
