// iALS behind the Model seam: each ALS step is the exact minimizer of the
// loss in its variable (checked against a gradient computed here from the
// loss), the item step from summed site uploads equals the centralized one,
// and the model is deterministic and round-trips through SaveBlocks.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "algorithms/model.h"

namespace fedrec {
namespace {

constexpr uint32_t kItems = 6;

struct Hyper {
  uint32_t factors = 3;
  double reg = 0.05;
  double alpha0 = 0.2;
  double nu = 0.7;
  double iterations = 5;
  uint64_t seed = 7;
};

ModelOptions OptionsOf(const Hyper& h) {
  ModelOptions options;
  options.seed = h.seed;
  options.factors = h.factors;
  options.init_std = 0.5f;
  options.positive_threshold = 3.0f;
  options.params = {
      {"iterations", h.iterations}, {"reg", h.reg}, {"alpha0", h.alpha0}, {"reg_exponent", h.nu}};
  return options;
}

// Six users over six items. Values below 3 are not positives: item 5 has
// none, user 5 has none, and (0, 1) appears twice (one positive pair).
std::vector<Rating> AllRatings() {
  return {{0, 0, 5}, {0, 1, 4}, {0, 1, 3}, {0, 3, 5}, {1, 1, 4}, {1, 2, 5}, {1, 5, 1},
          {2, 0, 3}, {2, 2, 4}, {2, 4, 5}, {3, 0, 4}, {3, 3, 3}, {3, 4, 4}, {4, 1, 5},
          {4, 2, 3}, {4, 3, 4}, {4, 4, 5}, {5, 5, 2}, {5, 0, 1}};
}

// The positive pairs of AllRatings as a users x items 0/1 matrix.
std::vector<std::vector<int>> PositiveMatrix(uint32_t users) {
  std::vector<std::vector<int>> p(users, std::vector<int>(kItems, 0));
  for (const Rating& r : AllRatings()) {
    if (r.user < users && r.value >= 3.0f) p[r.user][r.item] = 1;
  }
  return p;
}

// A model of users [first, last) of AllRatings, renumbered from 0; with
// first == last, the coordinator's model (no users).
std::unique_ptr<Model> MakeModel(const Hyper& h, uint32_t first, uint32_t last) {
  ModelData data;
  data.items = kItems;
  for (const Rating& r : AllRatings()) {
    if (r.user < first || r.user >= last) continue;
    Rating shifted = r;
    shifted.user -= first;
    data.train.push_back(shifted);
  }
  for (uint32_t u = first; u < last; ++u) data.user_keys.push_back(1000 + u);
  data.shard = first;
  Result<std::unique_ptr<Model>> model =
      ModelRegistry::WithBuiltins().Create("ials", OptionsOf(h), std::move(data));
  EXPECT_TRUE(model.ok()) << model.status().ToString();
  return model.ok() ? std::move(model).value() : nullptr;
}

// What the coordinator sums: per upload block and row, the weights and the
// weighted values over the given sites.
AggregateInput SumOfUploads(const std::vector<const Model*>& sites) {
  AggregateInput sums;
  for (const Model* site : sites) AddUpload(*site, &sums);
  return sums;
}

TrainPlan PlanFor(uint32_t round) {
  TrainPlan plan;
  plan.round = round;
  plan.epoch_offset = round - 1;
  return plan;
}

// One centralized round, as `fedrec train` runs it.
void CentralizedRound(Model* model, uint32_t round) {
  model->Train(PlanFor(round));
  std::vector<ParamBlock> global = model->GlobalBlocks();
  ASSERT_TRUE(model->Apply(SumOfUploads({model}), nullptr, &global).ok());
  ASSERT_TRUE(model->SetGlobalBlocks(global));
}

const ParamBlock& Block(const Model& model, const std::string& name) {
  const ParamBlock* block = FindBlock(model.blocks(), name);
  EXPECT_NE(block, nullptr) << name;
  return *block;
}

double Dot(const float* a, const float* b, uint32_t k) {
  double dot = 0.0;
  for (uint32_t c = 0; c < k; ++c) dot += static_cast<double>(a[c]) * b[c];
  return dot;
}

// dL/dx for one row x (a user's w_u or an item's h_i) of the loss
//   sum_{positive pairs} (<w,h> - 1)^2 + alpha0 * sum_{all pairs} <w,h>^2
//   + reg * (positives of x + alpha0 * other side's count)^nu * ||x||^2,
// keeping only the terms that involve x. `others` are the rows of the other
// side, `positive[j]` whether (x, others[j]) is a positive pair.
std::vector<double> RowGradient(const Hyper& h, const float* x, const ParamBlock& others,
                                const std::vector<int>& positive) {
  const uint32_t k = h.factors;
  std::vector<double> grad(k, 0.0);
  double count = 0.0;
  for (uint32_t j = 0; j < others.rows; ++j) {
    const float* y = others.Row(j);
    const double score = Dot(x, y, k);
    const double coef = 2.0 * (positive[j] * (score - 1.0) + h.alpha0 * score);
    for (uint32_t c = 0; c < k; ++c) grad[c] += coef * y[c];
    count += positive[j];
  }
  const double reg = h.reg * std::pow(count + h.alpha0 * others.rows, h.nu);
  for (uint32_t c = 0; c < k; ++c) grad[c] += 2.0 * reg * x[c];
  return grad;
}

double MaxAbs(const std::vector<double>& v) {
  double most = 0.0;
  for (double x : v) most = std::max(most, std::abs(x));
  return most;
}

TEST(Ials, UserStepZeroesTheLossGradientOfEveryUser) {
  const Hyper h;
  std::unique_ptr<Model> model = MakeModel(h, 0, 6);
  ASSERT_NE(model, nullptr);
  model->Train(TrainPlan{});  // a fresh model solves its users first
  const ParamBlock& items = Block(*model, "item_factors");
  const ParamBlock& users = Block(*model, "user_factors");
  const std::vector<std::vector<int>> positive = PositiveMatrix(6);
  double largest_factor = 0.0;
  for (uint32_t u = 0; u < 6; ++u) {
    const std::vector<double> grad = RowGradient(h, users.Row(u), items, positive[u]);
    EXPECT_LT(MaxAbs(grad), 1e-5) << "user " << u;
    for (uint32_t c = 0; c < h.factors; ++c)
      largest_factor = std::max(largest_factor, std::abs(double{users.Row(u)[c]}));
  }
  EXPECT_GT(largest_factor, 1e-3);  // not the trivial solution
  for (uint32_t c = 0; c < h.factors; ++c) EXPECT_EQ(users.Row(5)[c], 0.0f);  // no positives
}

TEST(Ials, ItemStepOfApplyZeroesTheLossGradientOfEveryItem) {
  const Hyper h;
  std::unique_ptr<Model> model = MakeModel(h, 0, 6);
  ASSERT_NE(model, nullptr);
  model->Train(TrainPlan{});
  std::vector<ParamBlock> global = model->GlobalBlocks();
  ASSERT_TRUE(model->Apply(SumOfUploads({model.get()}), nullptr, &global).ok());
  const ParamBlock& items = *FindBlock(global, "item_factors");
  const ParamBlock& users = Block(*model, "user_factors");  // the users the stats came from
  const std::vector<std::vector<int>> by_user = PositiveMatrix(6);
  for (uint32_t i = 0; i < kItems; ++i) {
    std::vector<int> positive(6);
    for (uint32_t u = 0; u < 6; ++u) positive[u] = by_user[u][i];
    const std::vector<double> grad = RowGradient(h, items.Row(i), users, positive);
    EXPECT_LT(MaxAbs(grad), 1e-5) << "item " << i;
  }
  for (uint32_t c = 0; c < h.factors; ++c) EXPECT_EQ(items.Row(5)[c], 0.0f);  // no positive users
}

TEST(Ials, UploadsOfTwoHalfShardsSumToTheCentralizedItemStep) {
  const Hyper h;
  std::unique_ptr<Model> whole = MakeModel(h, 0, 6);
  std::unique_ptr<Model> first = MakeModel(h, 0, 3);
  std::unique_ptr<Model> second = MakeModel(h, 3, 6);
  std::unique_ptr<Model> server = MakeModel(h, 0, 0);
  ASSERT_TRUE(whole && first && second && server);
  std::vector<ParamBlock> global = server->GlobalBlocks();
  ASSERT_EQ(global, whole->GlobalBlocks());  // every instance starts from the same items
  for (uint32_t round = 1; round <= 3; ++round) {
    if (round > 1) {
      ASSERT_TRUE(first->SetGlobalBlocks(global));
      ASSERT_TRUE(second->SetGlobalBlocks(global));
    }
    first->Train(PlanFor(round));
    second->Train(PlanFor(round));
    ASSERT_TRUE(server->Apply(SumOfUploads({first.get(), second.get()}), nullptr, &global).ok());
    CentralizedRound(whole.get(), round);
    const ParamBlock& federated = *FindBlock(global, "item_factors");
    const ParamBlock& centralized = Block(*whole, "item_factors");
    ASSERT_EQ(federated.data.size(), centralized.data.size());
    for (size_t n = 0; n < federated.data.size(); ++n) {
      EXPECT_NEAR(federated.data[n], centralized.data[n],
                  1e-5f * (1.0f + std::abs(centralized.data[n])))
          << "round " << round << " value " << n;
    }
  }
}

TEST(Ials, SameSeedGivesIdenticalBits) {
  const Hyper h;
  std::unique_ptr<Model> a = MakeModel(h, 0, 6);
  std::unique_ptr<Model> b = MakeModel(h, 0, 6);
  ASSERT_TRUE(a && b);
  for (uint32_t round = 1; round <= 4; ++round) {
    CentralizedRound(a.get(), round);
    CentralizedRound(b.get(), round);
  }
  EXPECT_EQ(a->blocks(), b->blocks());
  Hyper other = h;
  other.seed = h.seed + 1;
  std::unique_ptr<Model> c = MakeModel(other, 0, 6);
  ASSERT_NE(c, nullptr);
  EXPECT_NE(Block(*c, "item_factors"), Block(*MakeModel(h, 0, 6), "item_factors"));
}

TEST(Ials, SaveAndLoadOfBlocksGivesIdenticalScores) {
  const Hyper h;
  std::unique_ptr<Model> trained = MakeModel(h, 0, 6);
  ASSERT_NE(trained, nullptr);
  for (uint32_t round = 1; round <= 3; ++round) CentralizedRound(trained.get(), round);
  std::stringstream global, local;
  ASSERT_TRUE(trained->SaveBlocks(global, true).ok());
  ASSERT_TRUE(trained->SaveBlocks(local, false).ok());

  Hyper fresh_seed = h;
  fresh_seed.seed = 99;
  std::unique_ptr<Model> loaded = MakeModel(fresh_seed, 0, 6);
  ASSERT_NE(loaded, nullptr);
  ASSERT_TRUE(loaded->LoadBlocks(global, true, "global").ok());
  ASSERT_TRUE(loaded->LoadBlocks(local, false, "local").ok());
  std::vector<float> want(kItems), got(kItems);
  for (uint32_t u = 0; u < 6; ++u) {
    trained->Score(u, want);
    loaded->Score(u, got);
    EXPECT_EQ(want, got) << "user " << u;
  }
}

TEST(Ials, ScoreIsTheDotProductOfUserAndItemFactors) {
  const Hyper h;
  std::unique_ptr<Model> model = MakeModel(h, 0, 6);
  ASSERT_NE(model, nullptr);
  CentralizedRound(model.get(), 1);
  const ParamBlock& items = Block(*model, "item_factors");
  const ParamBlock& users = Block(*model, "user_factors");
  std::vector<float> scores(kItems);
  model->Score(2, scores);
  for (uint32_t i = 0; i < kItems; ++i)
    EXPECT_NEAR(scores[i], Dot(users.Row(2), items.Row(i), h.factors), 1e-6) << "item " << i;
}

TEST(Ials, UploadHoldsPerItemSumsAndTheUserGram) {
  const Hyper h;
  std::unique_ptr<Model> model = MakeModel(h, 0, 6);
  ASSERT_NE(model, nullptr);
  model->Train(TrainPlan{});
  const std::vector<ParamBlock> shapes = model->UploadShapes();
  const std::vector<DenseBlockView> views = model->Upload();
  ASSERT_EQ(shapes.size(), 2u);
  ASSERT_EQ(views.size(), 2u);
  EXPECT_EQ(shapes[0].name, "item_stats");
  EXPECT_EQ(shapes[0].rows, kItems);
  EXPECT_EQ(shapes[0].cols, 6u + 3u + 1u);  // k(k+1)/2 + k + 1 with k = 3
  EXPECT_EQ(shapes[1].name, "user_gram");
  EXPECT_EQ(shapes[1].rows, 1u);
  EXPECT_EQ(shapes[1].cols, 6u + 1u);
  const ParamBlock& users = Block(*model, "user_factors");
  const std::vector<std::vector<int>> positive = PositiveMatrix(6);
  // Item 0: users 0, 2, 3. Check w w^T's (0, 1) entry, the sum's entry 2 and the count.
  const float* row = views[0].values.data();
  double outer01 = 0.0, sum2 = 0.0;
  for (uint32_t u : {0u, 2u, 3u}) {
    outer01 += double{users.Row(u)[0]} * users.Row(u)[1];
    sum2 += users.Row(u)[2];
  }
  EXPECT_EQ(views[0].weights[0], 1u);
  EXPECT_NEAR(row[1], outer01, 1e-6);
  EXPECT_NEAR(row[6 + 2], sum2, 1e-6);
  EXPECT_EQ(row[9], 3.0f);
  // Item 5 has no positive user: weight 0, values 0.
  EXPECT_EQ(views[0].weights[5], 0u);
  for (uint32_t c = 0; c < shapes[0].cols; ++c) EXPECT_EQ(views[0].values[5 * 10 + c], 0.0f);
  EXPECT_EQ(views[1].weights[0], 1u);
  EXPECT_EQ(views[1].values[6], 6.0f);  // every user, with positives or not
  EXPECT_TRUE(model->SolvesFromSums());
  const UploadRange range = model->AdjustUploadRange(UploadRange{});
  EXPECT_EQ(range.clip, 16777216.0f);
  EXPECT_EQ(range.frac_bits, 16u);
  EXPECT_EQ(range.max_weight, 1u);
}

TEST(Ials, ApplyRejectsSumsOfTheWrongShape) {
  const Hyper h;
  std::unique_ptr<Model> server = MakeModel(h, 0, 0);
  ASSERT_NE(server, nullptr);
  std::vector<ParamBlock> global = server->GlobalBlocks();
  AggregateInput none;
  EXPECT_FALSE(server->Apply(none, nullptr, &global).ok());
  std::unique_ptr<Model> site = MakeModel(h, 0, 6);
  ASSERT_NE(site, nullptr);
  site->Train(TrainPlan{});
  AggregateInput sums = SumOfUploads({site.get()});
  sums.weighted_sum[0].pop_back();
  const Status status = server->Apply(sums, nullptr, &global);
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("item_stats"), std::string::npos) << status.message();
}

TEST(Ials, StepsToConvergeIsTheConfiguredIterations) {
  Hyper h;
  h.iterations = 11;
  std::unique_ptr<Model> server = MakeModel(h, 0, 0);
  ASSERT_NE(server, nullptr);
  EXPECT_EQ(server->StepsToConverge(), 11u);
}

TEST(Ials, UnknownKeyIsAnErrorNamingTheKeys) {
  ModelOptions options = OptionsOf(Hyper{});
  options.params["lambda"] = 1.0;
  ModelData data;
  data.items = kItems;
  Result<std::unique_ptr<Model>> model =
      ModelRegistry::WithBuiltins().Create("ials", options, std::move(data));
  ASSERT_FALSE(model.ok());
  const std::string& message = model.status().message();
  EXPECT_NE(message.find("lambda"), std::string::npos) << message;
  for (const char* key : {"iterations", "reg", "alpha0", "reg_exponent"})
    EXPECT_NE(message.find(key), std::string::npos) << key << " in " << message;
}

TEST(Ials, InvalidValuesAndDataAreErrors) {
  const ModelRegistry registry = ModelRegistry::WithBuiltins();
  auto create = [&registry](const std::string& key, double value) {
    ModelOptions options = OptionsOf(Hyper{});
    options.params[key] = value;
    ModelData data;
    data.items = kItems;
    return registry.Create("ials", options, std::move(data));
  };
  EXPECT_FALSE(create("reg", 0.0).ok());
  EXPECT_FALSE(create("alpha0", -1.0).ok());
  EXPECT_FALSE(create("iterations", 2.5).ok());
  EXPECT_FALSE(create("reg_exponent", std::nan("")).ok());
  ModelData outside;
  outside.items = 2;
  outside.user_keys = {1};
  outside.train = {{0, 2, 5}};
  Result<std::unique_ptr<Model>> model =
      registry.Create("ials", OptionsOf(Hyper{}), std::move(outside));
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find("item < 2"), std::string::npos)
      << model.status().message();
}

}  // namespace
}  // namespace fedrec
