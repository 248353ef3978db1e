// EASE, item-kNN and popularity behind the Model seam: values against the
// closed forms computed here independently, exactness of federated sums,
// determinism, persistence and the catalogue limit.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "algorithms/model.h"

namespace fedrec {
namespace {

// One training interaction (time 0).
Rating R(uint32_t user, uint32_t item, float value = 1.0f) { return {user, item, value, 0}; }

ModelData DataOf(uint32_t users, uint32_t items, std::vector<Rating> train) {
  ModelData data;
  data.items = items;
  data.train = std::move(train);
  for (uint32_t u = 0; u < users; ++u) data.user_keys.push_back(1000 + u);
  return data;
}

std::unique_ptr<Model> Make(const std::string& name, ModelData data,
                            std::map<std::string, double> params = {}, float threshold = 0.0f) {
  ModelOptions options;
  options.params = std::move(params);
  options.positive_threshold = threshold;
  Result<std::unique_ptr<Model>> model =
      ModelRegistry::WithBuiltins().Create(name, options, std::move(data));
  EXPECT_TRUE(model.ok()) << model.status().ToString();
  return model.ok() ? std::move(model).value() : nullptr;
}

// What the coordinator forms from the sites' uploads: per row, the sum of
// weights and of weight * value, in double.
AggregateInput SumsOf(const std::vector<Model*>& sites) {
  AggregateInput sums;
  for (Model* site : sites) {
    site->Train(TrainPlan{});
    AddUpload(*site, &sums);
  }
  return sums;
}

// Centralized training: the model's Apply over its own upload, adopted.
void Solve(Model* model) {
  std::vector<ParamBlock> global = model->GlobalBlocks();
  const Status applied = model->Apply(SumsOf({model}), nullptr, &global);
  ASSERT_TRUE(applied.ok()) << applied.ToString();
  ASSERT_TRUE(model->SetGlobalBlocks(global));
}

std::vector<float> ScoresOf(const Model& model, uint32_t user) {
  std::vector<float> out(model.items(), -1.0f);
  model.Score(user, out);
  return out;
}

// The one upload block's values, as the site computed them.
std::vector<float> UploadValues(Model* model) {
  model->Train(TrainPlan{});
  const std::vector<DenseBlockView> views = model->Upload();
  EXPECT_EQ(views.size(), 1u);
  return std::vector<float>(views[0].values.begin(), views[0].values.end());
}

const ParamBlock& Global(const Model& model, const std::string& name) {
  const ParamBlock* block = FindBlock(model.blocks(), name);
  EXPECT_NE(block, nullptr) << name;
  static const ParamBlock kMissing;
  return block ? *block : kMissing;
}

// 3 items; users {0,1}, {0,1,2}, {1,2}, {0}: C = [[3,2,1],[2,3,2],[1,2,2]].
// User 1 rates item 0 twice and user 3 rates item 2 below the threshold 3.
ModelData ThreeItems() {
  return DataOf(4, 3,
                {R(0, 0, 5), R(0, 1, 4), R(1, 0, 3), R(1, 1, 5), R(1, 2, 4), R(1, 0, 4), R(2, 1, 3),
                 R(2, 2, 5), R(3, 0, 4), R(3, 2, 1)});
}
constexpr float kThreeItemsThreshold = 3.0f;
const double kThreeItemsC[3][3] = {{3, 2, 1}, {2, 3, 2}, {1, 2, 2}};

// A few dozen users over 25 items with duplicates and below-threshold
// values, from a fixed mt19937 stream (its raw output is portable).
ModelData Synthetic(uint32_t users, uint32_t items) {
  std::mt19937 bits(7);
  std::vector<Rating> train;
  for (uint32_t u = 0; u < users; ++u) {
    const uint32_t count = 3 + bits() % 10;
    for (uint32_t k = 0; k < count; ++k) {
      train.push_back(R(u, bits() % items, static_cast<float>(1 + bits() % 5)));
    }
  }
  return DataOf(users, items, std::move(train));
}

// The users [begin, end) of `data`, renumbered from 0: one site's shard.
ModelData Shard(const ModelData& data, uint32_t begin, uint32_t end, uint32_t shard) {
  ModelData part;
  part.items = data.items;
  part.shard = shard;
  part.user_keys.assign(data.user_keys.begin() + begin, data.user_keys.begin() + end);
  for (Rating r : data.train) {
    if (r.user < begin || r.user >= end) continue;
    r.user -= begin;
    part.train.push_back(r);
  }
  return part;
}

// Two half-shards' uploads summed, applied by a server model holding no
// users, give bit for bit the global block of the centralized model.
void ExpectHalfShardsExact(const std::string& name, const std::map<std::string, double>& params) {
  const ModelData data = Synthetic(40, 25);
  std::unique_ptr<Model> full = Make(name, data, params, 3.0f);
  std::unique_ptr<Model> first = Make(name, Shard(data, 0, 17, 0), params, 3.0f);
  std::unique_ptr<Model> second = Make(name, Shard(data, 17, 40, 1), params, 3.0f);
  std::unique_ptr<Model> server = Make(name, DataOf(0, data.items, {}), params, 3.0f);
  ASSERT_TRUE(full && first && second && server);
  Solve(full.get());

  // Every uploaded value is an integer count within the exact float range.
  for (Model* site : {first.get(), second.get()}) {
    for (float v : UploadValues(site)) {
      ASSERT_EQ(v, std::floor(v));
      ASSERT_GE(v, 0.0f);
      ASSERT_LE(v, 16777216.0f);
    }
  }
  const AggregateInput sums = SumsOf({first.get(), second.get()});
  std::vector<ParamBlock> global = server->GlobalBlocks();
  const Status applied = server->Apply(sums, nullptr, &global);
  ASSERT_TRUE(applied.ok()) << applied.ToString();
  EXPECT_EQ(global, full->GlobalBlocks());
  // The sites adopt it and score as the centralized model does.
  ASSERT_TRUE(first->SetGlobalBlocks(global));
  for (uint32_t u = 0; u < 17; ++u) EXPECT_EQ(ScoresOf(*first, u), ScoresOf(*full, u));
}

void ExpectDeterministic(const std::string& name, const std::map<std::string, double>& params) {
  std::unique_ptr<Model> a = Make(name, Synthetic(30, 20), params, 2.0f);
  std::unique_ptr<Model> b = Make(name, Synthetic(30, 20), params, 2.0f);
  ASSERT_TRUE(a && b);
  Solve(a.get());
  Solve(b.get());
  EXPECT_EQ(a->GlobalBlocks(), b->GlobalBlocks());
  for (uint32_t u = 0; u < 30; ++u) EXPECT_EQ(ScoresOf(*a, u), ScoresOf(*b, u));
}

// Saved global blocks loaded into a fresh model give the same scores.
void ExpectSaveLoadRoundTrip(const std::string& name, const std::map<std::string, double>& params) {
  std::unique_ptr<Model> trained = Make(name, Synthetic(30, 20), params);
  std::unique_ptr<Model> loaded = Make(name, Synthetic(30, 20), params);
  ASSERT_TRUE(trained && loaded);
  Solve(trained.get());
  std::stringstream file;
  ASSERT_TRUE(trained->SaveBlocks(file, /*global=*/true).ok());
  const Status read = loaded->LoadBlocks(file, /*global=*/true, "model file");
  ASSERT_TRUE(read.ok()) << read.ToString();
  EXPECT_EQ(loaded->GlobalBlocks(), trained->GlobalBlocks());
  for (uint32_t u = 0; u < 30; ++u) EXPECT_EQ(ScoresOf(*loaded, u), ScoresOf(*trained, u));
}

// The contract every item model shares: a site of count statistics.
void ExpectCountUploadContract(const std::string& name) {
  std::unique_ptr<Model> model = Make(name, ThreeItems(), {}, kThreeItemsThreshold);
  ASSERT_TRUE(model);
  EXPECT_TRUE(model->SolvesFromSums());
  EXPECT_EQ(model->StepsToConverge(), 1u);
  const UploadRange range = model->AdjustUploadRange(UploadRange{});
  EXPECT_EQ(range.clip, 16777216.0f);
  EXPECT_EQ(range.frac_bits, 0u);
  EXPECT_EQ(range.max_weight, 1u);
  EXPECT_EQ(model->users(), 4u);
  EXPECT_EQ(model->items(), 3u);
  EXPECT_EQ(model->train().size(), ThreeItems().train.size());  // unfiltered
  const LossSums loss = model->Train(TrainPlan{});
  EXPECT_EQ(loss.count, 0u);
  // No local blocks: nothing to save for a site.
  for (const ParamBlock& b : model->blocks()) EXPECT_TRUE(IsGlobal(b.scope)) << b.name;
}

// A model with no users and no items (server, configuration probing), and
// one with items but no users, build, upload zeros and apply.
void ExpectBuildsWithoutData(const std::string& name) {
  for (uint32_t items : {0u, 4u}) {
    std::unique_ptr<Model> model = Make(name, DataOf(0, items, {}));
    ASSERT_TRUE(model);
    EXPECT_EQ(model->items(), items);
    const std::vector<DenseBlockView> views = model->Upload();
    ASSERT_EQ(views.size(), 1u);
    for (uint32_t w : views[0].weights) EXPECT_EQ(w, 0u);
    std::vector<ParamBlock> global = model->GlobalBlocks();
    const Status applied = model->Apply(SumsOf({model.get()}), nullptr, &global);
    EXPECT_TRUE(applied.ok()) << applied.ToString();
  }
}

void ExpectRefusesWrongSums(const std::string& name) {
  std::unique_ptr<Model> model = Make(name, DataOf(0, 3, {}));
  ASSERT_TRUE(model);
  std::vector<ParamBlock> global = model->GlobalBlocks();
  AggregateInput empty;
  EXPECT_EQ(model->Apply(empty, nullptr, &global).code(), Status::Code::kInvalidArgument);
  AggregateInput wrong;
  wrong.weighted_sum.emplace_back(2, 1.0);
  wrong.row_weight.emplace_back(2, 1.0);
  EXPECT_EQ(model->Apply(wrong, nullptr, &global).code(), Status::Code::kInvalidArgument);
}

void ExpectRefusesOutOfRangeInteractions(const std::string& name) {
  ModelOptions options;
  Result<std::unique_ptr<Model>> model =
      ModelRegistry::WithBuiltins().Create(name, options, DataOf(2, 3, {R(0, 3)}));
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), Status::Code::kInvalidArgument);
  EXPECT_NE(model.status().message().find("item < 3"), std::string::npos)
      << model.status().message();
}

void ExpectRefusesLargeCatalogue(const std::string& name) {
  ModelOptions options;
  Result<std::unique_ptr<Model>> model =
      ModelRegistry::WithBuiltins().Create(name, options, DataOf(0, 20000, {}));
  ASSERT_FALSE(model.ok());
  EXPECT_EQ(model.status().code(), Status::Code::kInvalidArgument);
  const std::string& message = model.status().message();
  EXPECT_NE(message.find("max_items = 10000"), std::string::npos) << message;
  EXPECT_NE(message.find("20000 items"), std::string::npos) << message;
  EXPECT_NE(message.find("1.6 GB"), std::string::npos) << message;

  // Raising the key accepts a catalogue; 0 lifts the limit.
  options.params["max_items"] = 3;
  EXPECT_FALSE(ModelRegistry::WithBuiltins().Create(name, options, DataOf(0, 4, {})).ok());
  EXPECT_TRUE(ModelRegistry::WithBuiltins().Create(name, options, DataOf(0, 3, {})).ok());
  options.params["max_items"] = 0;
  EXPECT_TRUE(ModelRegistry::WithBuiltins().Create(name, options, DataOf(0, 40, {})).ok());
  options.params["max_items"] = 2.5;
  EXPECT_FALSE(ModelRegistry::WithBuiltins().Create(name, options, DataOf(0, 2, {})).ok());
}

// --- EASE -----------------------------------------------------------------

// Inverse of a 3 x 3 matrix by cofactors.
void Invert3(const double a[3][3], double inv[3][3]) {
  const double det = a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1]) -
                     a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0]) +
                     a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0]);
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) {
      // inv[i][j] = cofactor(j, i) / det
      const int r0 = (j + 1) % 3, r1 = (j + 2) % 3, c0 = (i + 1) % 3, c1 = (i + 2) % 3;
      inv[i][j] = (a[r0][c0] * a[r1][c1] - a[r0][c1] * a[r1][c0]) / det;
    }
  }
}

TEST(Ease, UploadsBinarizedCooccurrenceCounts) {
  std::unique_ptr<Model> model = Make("ease", ThreeItems(), {}, kThreeItemsThreshold);
  ASSERT_TRUE(model);
  const std::vector<ParamBlock> shapes = model->UploadShapes();
  ASSERT_EQ(shapes.size(), 1u);
  EXPECT_EQ(shapes[0].name, "cooccurrence");
  EXPECT_EQ(shapes[0].rows, 3u);
  EXPECT_EQ(shapes[0].cols, 3u);
  const std::vector<float> values = UploadValues(model.get());
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) EXPECT_EQ(values[i * 3 + j], kThreeItemsC[i][j]) << i << "," << j;
  }
  const std::vector<DenseBlockView> views = model->Upload();
  EXPECT_EQ(std::vector<uint32_t>(views[0].weights.begin(), views[0].weights.end()),
            (std::vector<uint32_t>{1, 1, 1}));

  // An item nobody has as a positive has a zero row of weight 0.
  std::unique_ptr<Model> sparse = Make("ease", DataOf(2, 3, {R(0, 0), R(1, 2), R(1, 0)}));
  ASSERT_TRUE(sparse);
  sparse->Train(TrainPlan{});
  const std::vector<DenseBlockView> sparse_views = sparse->Upload();
  EXPECT_EQ(std::vector<uint32_t>(sparse_views[0].weights.begin(), sparse_views[0].weights.end()),
            (std::vector<uint32_t>{1, 0, 1}));
}

TEST(Ease, MatchesClosedFormOnThreeItems) {
  const double lambda = 1.5;
  std::unique_ptr<Model> model =
      Make("ease", ThreeItems(), {{"lambda", lambda}}, kThreeItemsThreshold);
  ASSERT_TRUE(model);
  Solve(model.get());

  double g[3][3], p[3][3];
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) g[i][j] = kThreeItemsC[i][j] + (i == j ? lambda : 0.0);
  }
  Invert3(g, p);
  const ParamBlock& b = Global(*model, "ease_weights");
  ASSERT_EQ(b.rows, 3u);
  ASSERT_EQ(b.cols, 3u);
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) {
      const double expected = i == j ? 0.0 : -p[i][j] / p[j][j];
      if (i == j) {
        EXPECT_EQ(b.data[i * 3 + j], 0.0f);  // exactly zero
      } else {
        EXPECT_NEAR(b.data[i * 3 + j], expected, 1e-6) << i << "," << j;
        EXPECT_NE(b.data[i * 3 + j], 0.0f);
      }
    }
  }
  // Score(u) = x_u^T B: user 2's positives are items 1 and 2.
  const std::vector<float> scores = ScoresOf(*model, 2);
  for (int j = 0; j < 3; ++j) EXPECT_FLOAT_EQ(scores[j], b.data[3 + j] + b.data[6 + j]);
}

TEST(Ease, SharesTheCountUploadContract) { ExpectCountUploadContract("ease"); }

TEST(Ease, HalfShardsSummedEqualTheFullModelExactly) { ExpectHalfShardsExact("ease", {}); }

TEST(Ease, IsDeterministic) { ExpectDeterministic("ease", {{"lambda", 3.0}}); }

TEST(Ease, SaveLoadRoundTripGivesIdenticalScores) { ExpectSaveLoadRoundTrip("ease", {}); }

TEST(Ease, BuildsWithoutUsersOrItems) { ExpectBuildsWithoutData("ease"); }

TEST(Ease, RefusesSumsOfAnotherShape) { ExpectRefusesWrongSums("ease"); }

TEST(Ease, RefusesInteractionsOutsideTheData) { ExpectRefusesOutOfRangeInteractions("ease"); }

TEST(Ease, RefusesCatalogueAboveMaxItems) { ExpectRefusesLargeCatalogue("ease"); }

TEST(Ease, RefusesNonPositiveLambda) {
  for (double lambda : {0.0, -1.0}) {
    ModelOptions options;
    options.params["lambda"] = lambda;
    Result<std::unique_ptr<Model>> model =
        ModelRegistry::WithBuiltins().Create("ease", options, ThreeItems());
    ASSERT_FALSE(model.ok());
    EXPECT_NE(model.status().message().find("lambda"), std::string::npos);
  }
}

// --- item-kNN -------------------------------------------------------------

TEST(ItemKnn, CosineSimilaritiesOnTinyExample) {
  for (double shrink : {0.0, 1.0}) {
    std::unique_ptr<Model> model = Make(
        "itemknn", ThreeItems(), {{"neighbours", 0}, {"shrink", shrink}}, kThreeItemsThreshold);
    ASSERT_TRUE(model);
    Solve(model.get());
    const ParamBlock& s = Global(*model, "item_similarity");
    ASSERT_EQ(s.rows, 3u);
    ASSERT_EQ(s.cols, 3u);
    for (int i = 0; i < 3; ++i) {
      for (int j = 0; j < 3; ++j) {
        const double expected =
            i == j ? 0.0
                   : kThreeItemsC[i][j] /
                         (std::sqrt(kThreeItemsC[i][i] * kThreeItemsC[j][j]) + shrink);
        EXPECT_NEAR(s.data[i * 3 + j], expected, 1e-6) << i << "," << j << " shrink " << shrink;
      }
    }
    // Score(u, j) = sum over u's positives i of S_ij: user 0 has items 0, 1.
    const std::vector<float> scores = ScoresOf(*model, 0);
    for (int j = 0; j < 3; ++j) EXPECT_FLOAT_EQ(scores[j], s.data[j] + s.data[3 + j]);
  }
}

TEST(ItemKnn, PruningKeepsTheLargestNeighbours) {
  // S01 = 2/3, S02 = 1/sqrt(6), S12 = 2/sqrt(6): each item's best neighbour
  // is 0 -> 1, 1 -> 2, 2 -> 1.
  std::unique_ptr<Model> model =
      Make("itemknn", ThreeItems(), {{"neighbours", 1}}, kThreeItemsThreshold);
  ASSERT_TRUE(model);
  Solve(model.get());
  const ParamBlock& s = Global(*model, "item_similarity");
  const float a = static_cast<float>(2.0 / 3.0);
  const float b = static_cast<float>(2.0 / std::sqrt(6.0));
  const std::vector<float> expected = {0, 0, 0,   // S_0j: item 0 is nobody's best
                                       a, 0, b,   // S_1j
                                       0, b, 0};  // S_2j
  ASSERT_EQ(s.data.size(), expected.size());
  for (size_t k = 0; k < expected.size(); ++k) EXPECT_NEAR(s.data[k], expected[k], 1e-6) << k;
  // Column 0 kept row 1 only, column 1 row 2 only, column 2 row 1 only.
  EXPECT_EQ(s.data[2 * 3 + 0], 0.0f);
  EXPECT_EQ(s.data[0 * 3 + 1], 0.0f);
  EXPECT_EQ(s.data[0 * 3 + 2], 0.0f);
}

TEST(ItemKnn, PruningBreaksTiesByLowerIndex) {
  // Users {0,1} and {0,2}: S_10 = S_20 = 1/sqrt(2); item 0 keeps item 1.
  std::unique_ptr<Model> model =
      Make("itemknn", DataOf(2, 3, {R(0, 0), R(0, 1), R(1, 0), R(1, 2)}), {{"neighbours", 1}});
  ASSERT_TRUE(model);
  Solve(model.get());
  const ParamBlock& s = Global(*model, "item_similarity");
  EXPECT_FLOAT_EQ(s.data[1 * 3 + 0], static_cast<float>(1.0 / std::sqrt(2.0)));
  EXPECT_EQ(s.data[2 * 3 + 0], 0.0f);
}

TEST(ItemKnn, ItemsWithoutPositivesHaveZeroSimilarity) {
  // Item 1 has no positives: C_11 = 0 must not divide 0 by 0.
  std::unique_ptr<Model> model =
      Make("itemknn", DataOf(2, 3, {R(0, 0), R(0, 2), R(1, 0)}), {{"neighbours", 0}});
  ASSERT_TRUE(model);
  Solve(model.get());
  const ParamBlock& s = Global(*model, "item_similarity");
  for (float v : s.data) EXPECT_TRUE(std::isfinite(v));
  for (int k = 0; k < 3; ++k) {
    EXPECT_EQ(s.data[1 * 3 + k], 0.0f);
    EXPECT_EQ(s.data[k * 3 + 1], 0.0f);
  }
  EXPECT_FLOAT_EQ(s.data[0 * 3 + 2], static_cast<float>(1.0 / std::sqrt(2.0)));
}

TEST(ItemKnn, SharesTheCountUploadContract) { ExpectCountUploadContract("itemknn"); }

TEST(ItemKnn, HalfShardsSummedEqualTheFullModelExactly) {
  ExpectHalfShardsExact("itemknn", {{"neighbours", 5}, {"shrink", 2}});
}

TEST(ItemKnn, IsDeterministic) { ExpectDeterministic("itemknn", {{"neighbours", 4}}); }

TEST(ItemKnn, SaveLoadRoundTripGivesIdenticalScores) {
  ExpectSaveLoadRoundTrip("itemknn", {{"neighbours", 6}});
}

TEST(ItemKnn, BuildsWithoutUsersOrItems) { ExpectBuildsWithoutData("itemknn"); }

TEST(ItemKnn, RefusesSumsOfAnotherShape) { ExpectRefusesWrongSums("itemknn"); }

TEST(ItemKnn, RefusesInteractionsOutsideTheData) { ExpectRefusesOutOfRangeInteractions("itemknn"); }

TEST(ItemKnn, RefusesCatalogueAboveMaxItems) { ExpectRefusesLargeCatalogue("itemknn"); }

TEST(ItemKnn, RefusesInvalidKeys) {
  for (const auto& [key, value] : std::vector<std::pair<std::string, double>>{
           {"neighbours", -1}, {"neighbours", 1.5}, {"shrink", -0.5}}) {
    ModelOptions options;
    options.params[key] = value;
    Result<std::unique_ptr<Model>> model =
        ModelRegistry::WithBuiltins().Create("itemknn", options, ThreeItems());
    ASSERT_FALSE(model.ok()) << key << " " << value;
    EXPECT_NE(model.status().message().find(key), std::string::npos) << model.status().message();
  }
}

// --- popularity -----------------------------------------------------------

TEST(Popularity, CountsEachUserOncePerItem) {
  std::unique_ptr<Model> model = Make("popularity", ThreeItems(), {}, kThreeItemsThreshold);
  ASSERT_TRUE(model);
  const std::vector<ParamBlock> shapes = model->UploadShapes();
  ASSERT_EQ(shapes.size(), 1u);
  EXPECT_EQ(shapes[0].name, "item_users");
  EXPECT_EQ(shapes[0].rows, 3u);
  EXPECT_EQ(shapes[0].cols, 1u);
  // Item 0: users 0, 1 (twice), 3; item 1: 0, 1, 2; item 2: 1, 2 (3 below threshold).
  EXPECT_EQ(UploadValues(model.get()), (std::vector<float>{3, 3, 2}));
  Solve(model.get());
  EXPECT_EQ(Global(*model, "item_popularity").data, (std::vector<float>{3, 3, 2}));
  EXPECT_EQ(ScoresOf(*model, 0), (std::vector<float>{3, 3, 2}));
}

TEST(Popularity, UnpopularItemsUploadZeroWeight) {
  std::unique_ptr<Model> model = Make("popularity", DataOf(2, 4, {R(0, 1), R(1, 1), R(1, 3)}));
  ASSERT_TRUE(model);
  model->Train(TrainPlan{});
  const std::vector<DenseBlockView> views = model->Upload();
  EXPECT_EQ(std::vector<uint32_t>(views[0].weights.begin(), views[0].weights.end()),
            (std::vector<uint32_t>{0, 1, 0, 1}));
  EXPECT_EQ(std::vector<float>(views[0].values.begin(), views[0].values.end()),
            (std::vector<float>{0, 2, 0, 1}));
}

TEST(Popularity, SharesTheCountUploadContract) { ExpectCountUploadContract("popularity"); }

TEST(Popularity, HalfShardsSummedEqualTheFullModelExactly) {
  ExpectHalfShardsExact("popularity", {});
}

TEST(Popularity, IsDeterministic) { ExpectDeterministic("popularity", {}); }

TEST(Popularity, SaveLoadRoundTripGivesIdenticalScores) {
  ExpectSaveLoadRoundTrip("popularity", {});
}

TEST(Popularity, BuildsWithoutUsersOrItems) { ExpectBuildsWithoutData("popularity"); }

TEST(Popularity, RefusesSumsOfAnotherShape) { ExpectRefusesWrongSums("popularity"); }

TEST(Popularity, RefusesInteractionsOutsideTheData) {
  ExpectRefusesOutOfRangeInteractions("popularity");
}

TEST(Popularity, HasNoCatalogueLimit) {
  ModelOptions options;
  EXPECT_TRUE(
      ModelRegistry::WithBuiltins().Create("popularity", options, DataOf(0, 20000, {})).ok());
}

}  // namespace
}  // namespace fedrec
