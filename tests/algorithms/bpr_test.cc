// BPR-MF behind the Model seam: the SGD step against the analytic gradient,
// negative sampling, determinism, upload weights and persistence.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "algorithms/model.h"
#include "base/param_block.h"

namespace fedrec {
namespace {

// `users` users with keys 1000 + u, the given interactions (value 1 unless set).
ModelData MakeData(uint32_t users, uint32_t items, std::vector<Rating> train, uint32_t shard = 0) {
  ModelData data;
  data.items = items;
  data.train = std::move(train);
  for (uint32_t u = 0; u < users; ++u) data.user_keys.push_back(1000 + u);
  data.shard = shard;
  return data;
}

std::unique_ptr<Model> MakeBpr(ModelData data, std::map<std::string, double> params = {},
                               uint32_t factors = 8, uint64_t seed = 7) {
  ModelOptions options;
  options.seed = seed;
  options.factors = factors;
  options.params = std::move(params);
  Result<std::unique_ptr<Model>> model =
      ModelRegistry::WithBuiltins().Create("bpr", options, std::move(data));
  EXPECT_TRUE(model.ok()) << model.status().ToString();
  return model.ok() ? std::move(model).value() : nullptr;
}

ParamBlock& Block(Model& model, const char* name) {
  ParamBlock* block = FindBlock(model.blocks(), name);
  EXPECT_NE(block, nullptr) << name;
  return *block;
}

TrainPlan Epochs(uint64_t first, uint32_t count) {
  TrainPlan plan;
  plan.round = static_cast<uint32_t>(first) + 1;
  plan.epoch_offset = first;
  plan.epochs = count;
  return plan;
}

// The per-item upload weights of the last Train call.
std::vector<uint32_t> Weights(const Model& model) {
  const std::vector<DenseBlockView> views = model.Upload();
  EXPECT_FALSE(views.empty());
  return std::vector<uint32_t>(views[0].weights.begin(), views[0].weights.end());
}

// Users u in [first, last) each with positives `items`.
void AddUsers(std::vector<Rating>* train, uint32_t first, uint32_t last,
              const std::vector<uint32_t>& items) {
  for (uint32_t u = first; u < last; ++u) {
    for (uint32_t i : items) train->push_back({u, i, 1.0f, 0});
  }
}

TEST(Bpr, DeclaresItsBlocks) {
  std::unique_ptr<Model> model = MakeBpr(MakeData(3, 5, {{0, 1, 1.0f, 0}}), {}, 4);
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->name(), "bpr");
  ASSERT_EQ(model->blocks().size(), 3u);
  EXPECT_EQ(model->blocks()[0].name, "item_factors");
  EXPECT_EQ(model->blocks()[0].scope, Scope::kGlobal);
  EXPECT_EQ(model->blocks()[0].rows, 5u);
  EXPECT_EQ(model->blocks()[0].cols, 4u);
  EXPECT_EQ(model->blocks()[1].name, "item_bias");
  EXPECT_EQ(model->blocks()[1].scope, Scope::kGlobal);
  EXPECT_EQ(model->blocks()[1].cols, 1u);
  EXPECT_EQ(model->blocks()[2].name, "user_factors");
  EXPECT_EQ(model->blocks()[2].scope, Scope::kLocal);
  EXPECT_EQ(model->blocks()[2].rows, 3u);
  EXPECT_FALSE(model->SolvesFromSums());
  EXPECT_FALSE(model->PredictsRatings());
}

TEST(Bpr, OneStepMatchesAnalyticGradient) {
  // One user, one positive (item 0), two items: the negative is item 1.
  const double lr = 0.3, decay = 0.5, reg = 0.05, bias_reg = 0.02;
  std::unique_ptr<Model> model =
      MakeBpr(MakeData(1, 2, {{0, 0, 1.0f, 0}}),
              {{"lr", lr}, {"lr_decay", decay}, {"reg", reg}, {"bias_reg", bias_reg}}, 4);
  ASSERT_NE(model, nullptr);
  const std::vector<float> q0 = {0.1f, -0.2f, 0.3f, 0.05f}, q1 = {-0.1f, 0.4f, 0.2f, -0.3f};
  const std::vector<float> p = {0.5f, 0.1f, -0.2f, 0.4f};
  const float b0 = 0.3f, b1 = -0.1f;
  ParamBlock& items = Block(*model, "item_factors");
  ParamBlock& bias = Block(*model, "item_bias");
  ParamBlock& users = Block(*model, "user_factors");
  std::copy(q0.begin(), q0.end(), items.Row(0));
  std::copy(q1.begin(), q1.end(), items.Row(1));
  std::copy(p.begin(), p.end(), users.Row(0));
  bias.data = {b0, b1};

  // Global epoch 2: the rate is lr * decay^2.
  const LossSums loss = model->Train(Epochs(2, 1));

  const double rate = lr * decay * decay;
  double x = static_cast<double>(b0) - b1;
  for (int c = 0; c < 4; ++c) x += static_cast<double>(p[c]) * (q0[c] - q1[c]);
  const double g = 1.0 / (1.0 + std::exp(x));  // d ln sigmoid(x) / dx
  EXPECT_EQ(loss.count, 1u);
  EXPECT_NEAR(loss.sum, -std::log(1.0 / (1.0 + std::exp(-x))), 1e-6);
  for (int c = 0; c < 4; ++c) {
    EXPECT_NEAR(users.Row(0)[c], p[c] + rate * (g * (q0[c] - q1[c]) - reg * p[c]), 1e-6) << c;
    EXPECT_NEAR(items.Row(0)[c], q0[c] + rate * (g * p[c] - reg * q0[c]), 1e-6) << c;
    EXPECT_NEAR(items.Row(1)[c], q1[c] + rate * (-g * p[c] - reg * q1[c]), 1e-6) << c;
  }
  EXPECT_NEAR(bias.data[0], b0 + rate * (g - bias_reg * b0), 1e-6);
  EXPECT_NEAR(bias.data[1], b1 + rate * (-g - bias_reg * b1), 1e-6);
}

TEST(Bpr, LossDecreasesOverEpochs) {
  // Two communities: even users like items 0..14, odd users items 15..29.
  std::vector<Rating> train;
  for (uint32_t u = 0; u < 40; ++u) {
    const uint32_t base = (u % 2) * 15;
    for (uint32_t t = 0; t < 5; ++t) train.push_back({u, base + (u * 7 + t * 3) % 15, 1.0f, 0});
  }
  std::unique_ptr<Model> model = MakeBpr(MakeData(40, 30, train), {{"lr", 0.1}});
  ASSERT_NE(model, nullptr);
  std::vector<double> losses;
  for (uint64_t e = 0; e < 30; ++e) losses.push_back(model->Train(Epochs(e, 1)).Mean());
  EXPECT_NEAR(losses.front(), std::log(2.0), 0.05);  // small initial factors: x ~ 0
  EXPECT_LT(losses.back(), 0.5 * losses.front());
  EXPECT_LT(losses[20], losses[5]);
}

TEST(Bpr, SampledNegativesAreNeverPositives) {
  // With `samples` = S every positive pair is visited exactly S times per
  // epoch, so an item's weight is S * (its positive pairs) + its draws as a
  // negative: items every user holds must show no negative draws at all.
  constexpr uint32_t kS = 20;
  for (double sampling : {0.0, 1.0}) {
    SCOPED_TRACE(sampling);
    std::vector<Rating> train;
    AddUsers(&train, 0, 6, {0, 1, 2});
    std::unique_ptr<Model> model =
        MakeBpr(MakeData(6, 10, train),
                {{"samples", kS}, {"negative_sampling", sampling}, {"popularity_exponent", 3.0}});
    ASSERT_NE(model, nullptr);
    const LossSums loss = model->Train(Epochs(0, 1));
    EXPECT_EQ(loss.count, 18u * kS);
    const std::vector<uint32_t> w = Weights(*model);
    for (uint32_t i = 0; i < 3; ++i) EXPECT_EQ(w[i], 6u * kS) << i;
    EXPECT_EQ(std::accumulate(w.begin() + 3, w.end(), 0u), 18u * kS);
  }
  // A user holding every item but one, under sampling that almost never
  // draws it (so rejection runs out and the bounded fallback answers).
  for (double sampling : {0.0, 1.0}) {
    SCOPED_TRACE(sampling);
    std::vector<Rating> train;
    AddUsers(&train, 0, 1, {0, 1, 2, 3, 4, 5, 6, 7, 8});
    std::unique_ptr<Model> model =
        MakeBpr(MakeData(1, 10, train),
                {{"samples", kS}, {"negative_sampling", sampling}, {"popularity_exponent", 8.0}});
    ASSERT_NE(model, nullptr);
    model->Train(Epochs(0, 1));
    const std::vector<uint32_t> w = Weights(*model);
    for (uint32_t i = 0; i < 9; ++i) EXPECT_EQ(w[i], kS) << i;
    EXPECT_EQ(w[9], 9u * kS);
  }
}

TEST(Bpr, UserHoldingEveryItemIsSkipped) {
  std::vector<Rating> train;
  AddUsers(&train, 0, 1, {0, 1, 2});  // user 0: every item, no negative exists
  AddUsers(&train, 1, 2, {0});
  std::unique_ptr<Model> model = MakeBpr(MakeData(2, 3, train));
  ASSERT_NE(model, nullptr);
  const LossSums loss = model->Train(Epochs(0, 2));
  EXPECT_EQ(loss.count, 2u);  // user 1's pair, once per epoch
}

TEST(Bpr, PopularitySamplingDrawsPopularItemsMoreOften) {
  // Items: 0 held by all 80 users, 1 by users 0..39 (popular), 2..9 by none.
  // Only users 40..79 may draw item 1 as a negative, from items 1..9:
  // uniformly with probability 1/9, by popularity with exponent 0.5 with
  // probability sqrt(41) / (sqrt(41) + 8).
  constexpr uint32_t kS = 10;
  std::vector<Rating> train;
  AddUsers(&train, 0, 40, {0, 1});
  AddUsers(&train, 40, 80, {0});
  auto fraction = [&](double sampling) {
    std::unique_ptr<Model> model =
        MakeBpr(MakeData(80, 10, train),
                {{"samples", kS}, {"negative_sampling", sampling}, {"popularity_exponent", 0.5}});
    if (model == nullptr) return -1.0;
    model->Train(Epochs(0, 1));
    const std::vector<uint32_t> w = Weights(*model);
    const double negatives_of_item1 = static_cast<double>(w[1]) - 40.0 * kS;
    return negatives_of_item1 / (40.0 * kS);
  };
  const double uniform = fraction(0.0);
  const double popular = fraction(1.0);
  EXPECT_NEAR(uniform, 1.0 / 9.0, 0.05);
  EXPECT_NEAR(popular, std::sqrt(41.0) / (std::sqrt(41.0) + 8.0), 0.07);
  EXPECT_GT(popular, 2.5 * uniform);
}

std::vector<Rating> SmallSet() {
  std::vector<Rating> train;
  for (uint32_t u = 0; u < 12; ++u) {
    for (uint32_t t = 0; t < 4; ++t) train.push_back({u, (u * 5 + t * 7) % 20, 1.0f, 0});
  }
  return train;
}

TEST(Bpr, SameSeedSameBitsOtherShardOtherStream) {
  std::unique_ptr<Model> a = MakeBpr(MakeData(12, 20, SmallSet(), 0));
  std::unique_ptr<Model> b = MakeBpr(MakeData(12, 20, SmallSet(), 0));
  std::unique_ptr<Model> c = MakeBpr(MakeData(12, 20, SmallSet(), 1));
  ASSERT_TRUE(a && b && c);
  EXPECT_EQ(a->blocks(), c->blocks());  // the initial model does not depend on the shard
  const LossSums la = a->Train(Epochs(0, 3));
  const LossSums lb = b->Train(Epochs(0, 3));
  c->Train(Epochs(0, 3));
  EXPECT_EQ(la.sum, lb.sum);
  EXPECT_EQ(la.count, lb.count);
  EXPECT_EQ(a->blocks(), b->blocks());
  EXPECT_NE(Block(*a, "item_factors").data, Block(*c, "item_factors").data);
  // Epoch e's triples depend on e alone: training epochs 0..2 in one call or
  // in three gives the same bits.
  std::unique_ptr<Model> d = MakeBpr(MakeData(12, 20, SmallSet(), 0));
  ASSERT_NE(d, nullptr);
  for (uint64_t e = 0; e < 3; ++e) d->Train(Epochs(e, 1));
  EXPECT_EQ(a->blocks(), d->blocks());
}

TEST(Bpr, UserInitDependsOnKeyNotHolder) {
  ModelData one = MakeData(2, 4, {});
  one.user_keys = {55, 77};
  ModelData other = MakeData(1, 4, {}, 3);
  other.user_keys = {77};
  std::unique_ptr<Model> a = MakeBpr(std::move(one));
  std::unique_ptr<Model> b = MakeBpr(std::move(other));
  ASSERT_TRUE(a && b);
  const ParamBlock& pa = Block(*a, "user_factors");
  const ParamBlock& pb = Block(*b, "user_factors");
  EXPECT_TRUE(std::equal(pb.Row(0), pb.Row(0) + pb.cols, pa.Row(1)));
  EXPECT_FALSE(std::equal(pb.Row(0), pb.Row(0) + pb.cols, pa.Row(0)));
}

TEST(Bpr, UploadWeightsCountUpdatesOfTheLastTrain) {
  const std::vector<Rating> train = SmallSet();
  std::unique_ptr<Model> model = MakeBpr(MakeData(12, 20, train));
  ASSERT_NE(model, nullptr);
  std::vector<uint32_t> positives(20, 0);
  for (const Rating& r : train) ++positives[r.item];

  const LossSums loss = model->Train(Epochs(0, 2));
  EXPECT_EQ(loss.count, 2 * train.size());
  const std::vector<DenseBlockView> views = model->Upload();
  const std::vector<ParamBlock> shapes = model->UploadShapes();
  ASSERT_EQ(views.size(), 2u);
  ASSERT_EQ(shapes.size(), 2u);
  for (size_t b = 0; b < 2; ++b) {
    EXPECT_EQ(views[b].weights.size(), shapes[b].rows);
    EXPECT_EQ(views[b].values.data(), model->blocks()[b].data.data());
    EXPECT_TRUE(
        std::equal(views[b].weights.begin(), views[b].weights.end(), views[0].weights.begin()));
  }
  // Each triple updates its positive and its negative row; each positive pair
  // is visited once per epoch.
  uint64_t total = 0;
  for (uint32_t i = 0; i < 20; ++i) {
    EXPECT_GE(views[0].weights[i], 2 * positives[i]) << i;
    total += views[0].weights[i];
  }
  EXPECT_EQ(total, 2 * loss.count);

  // The next call counts afresh.
  const LossSums again = model->Train(Epochs(2, 1));
  const std::vector<uint32_t> w = Weights(*model);
  EXPECT_EQ(std::accumulate(w.begin(), w.end(), uint64_t{0}), 2 * again.count);

  // The server-side model (no users) trains nothing and uploads zero weights.
  std::unique_ptr<Model> server = MakeBpr(MakeData(0, 20, {}));
  ASSERT_NE(server, nullptr);
  EXPECT_EQ(server->Train(Epochs(0, 1)).count, 0u);
  const std::vector<uint32_t> none = Weights(*server);
  EXPECT_EQ(std::accumulate(none.begin(), none.end(), 0u), 0u);
}

TEST(Bpr, PositiveThresholdSelectsPositives) {
  // Item 0 is rated below the threshold: only item 1 is a positive, and item
  // 0 is then the forced negative. train() still returns both interactions.
  ModelOptions options;
  options.factors = 4;
  options.positive_threshold = 4.0f;
  Result<std::unique_ptr<Model>> model = ModelRegistry::WithBuiltins().Create(
      "bpr", options, MakeData(1, 2, {{0, 0, 2.0f, 0}, {0, 1, 5.0f, 0}}));
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  EXPECT_EQ((*model)->train().size(), 2u);
  EXPECT_EQ((*model)->Train(Epochs(0, 1)).count, 1u);
  const std::vector<uint32_t> w = Weights(**model);
  EXPECT_EQ(w, (std::vector<uint32_t>{1, 1}));
}

TEST(Bpr, SaveLoadRoundTripGivesIdenticalScores) {
  std::unique_ptr<Model> trained = MakeBpr(MakeData(12, 20, SmallSet()));
  ASSERT_NE(trained, nullptr);
  trained->Train(Epochs(0, 5));
  std::stringstream global, local;
  ASSERT_TRUE(trained->SaveBlocks(global, true).ok());
  ASSERT_TRUE(trained->SaveBlocks(local, false).ok());

  std::unique_ptr<Model> loaded = MakeBpr(MakeData(12, 20, SmallSet()), {}, 8, /*seed=*/99);
  ASSERT_NE(loaded, nullptr);
  ASSERT_TRUE(loaded->LoadBlocks(global, true, "global").ok());
  ASSERT_TRUE(loaded->LoadBlocks(local, false, "local").ok());
  std::vector<float> want(20), got(20);
  for (uint32_t u = 0; u < 12; ++u) {
    trained->Score(u, want);
    loaded->Score(u, got);
    EXPECT_EQ(want, got) << u;
  }
  // Scores are b_i + p_u . q_i.
  const ParamBlock& q = Block(*trained, "item_factors");
  const ParamBlock& b = Block(*trained, "item_bias");
  const ParamBlock& p = Block(*trained, "user_factors");
  trained->Score(3, want);
  for (uint32_t i = 0; i < 20; ++i) {
    double x = b.data[i];
    for (uint32_t c = 0; c < q.cols; ++c) x += static_cast<double>(p.Row(3)[c]) * q.Row(i)[c];
    EXPECT_NEAR(want[i], x, 1e-5) << i;
  }
}

TEST(Bpr, RejectsBadKeysAndData) {
  const ModelRegistry registry = ModelRegistry::WithBuiltins();
  const std::vector<std::pair<std::string, double>> bad = {
      {"lr", 0.0},      {"lr_decay", -1.0},       {"reg", -0.1},
      {"samples", 0.0}, {"negative_sampling", 2}, {"popularity_exponent", -1.0},
      {"factors", 2.5}};
  for (const auto& [key, value] : bad) {
    ModelOptions options;
    options.params[key] = value;
    Result<std::unique_ptr<Model>> model =
        registry.Create("bpr", options, MakeData(1, 2, {{0, 0, 1.0f, 0}}));
    ASSERT_FALSE(model.ok()) << key;
    EXPECT_NE(model.status().ToString().find(key), std::string::npos) << model.status().ToString();
  }
  Result<std::unique_ptr<Model>> out_of_range =
      registry.Create("bpr", ModelOptions(), MakeData(1, 2, {{0, 2, 1.0f, 0}}));
  EXPECT_FALSE(out_of_range.ok());
  Result<std::unique_ptr<Model>> unknown_user =
      registry.Create("bpr", ModelOptions(), MakeData(1, 2, {{1, 0, 1.0f, 0}}));
  EXPECT_FALSE(unknown_user.ok());
}

}  // namespace
}  // namespace fedrec
