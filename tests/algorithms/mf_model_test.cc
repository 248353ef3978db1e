#include "algorithms/mf_model.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "base/random.h"

namespace fedrec {
namespace {

// The factors a row gets from stream (seed, 0, site, purpose).
std::vector<float> ExpectedRow(uint64_t seed, uint64_t site, Purpose purpose, float init_std,
                               uint32_t k) {
  Rng rng(seed, 0, site, purpose);
  std::vector<float> row(k);
  for (float& x : row) x = static_cast<float>(static_cast<double>(init_std) * rng.Normal());
  return row;
}

std::vector<float> Row(const float* data, uint32_t row, uint32_t k) {
  return std::vector<float>(data + static_cast<size_t>(row) * k,
                            data + static_cast<size_t>(row + 1) * k);
}

TEST(MfModelTest, BlocksHaveDocumentedOrderNamesScopesAndShapes) {
  const MfModel model(4, 6, 3);
  const auto& b = model.blocks();
  ASSERT_EQ(b.size(), 5u);
  EXPECT_EQ(b[0].name, "global_mean");
  EXPECT_EQ(b[1].name, "item_bias");
  EXPECT_EQ(b[2].name, "item_factors");
  EXPECT_EQ(b[3].name, "user_bias");
  EXPECT_EQ(b[4].name, "user_factors");
  const Scope scopes[] = {Scope::kGlobalAverage, Scope::kGlobal, Scope::kGlobal, Scope::kLocal,
                          Scope::kLocal};
  const uint32_t rows[] = {1, 6, 6, 4, 4};
  const uint32_t cols[] = {1, 1, 3, 1, 3};
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(b[i].scope, scopes[i]) << b[i].name;
    EXPECT_EQ(b[i].rows, rows[i]) << b[i].name;
    EXPECT_EQ(b[i].cols, cols[i]) << b[i].name;
    EXPECT_EQ(b[i].data.size(), size_t{rows[i]} * cols[i]) << b[i].name;
  }
  EXPECT_EQ(model.users(), 4u);
  EXPECT_EQ(model.items(), 6u);
  EXPECT_EQ(model.factors(), 3u);
  EXPECT_EQ(model.global_mean(), 0.0f);
}

TEST(MfModelTest, ItemRowsComeFromTheirItemStreamsAndBiasesStartAtZero) {
  MfModel model(3, 5, 4);
  model.item_bias()[2] = 7.0f;  // overwritten by init
  model.set_global_mean(3.5f);  // left alone by init
  MfInitOptions init;
  init.init_std = 0.25f;
  init.seed = 17;
  model.InitGlobal(init);
  for (uint32_t i = 0; i < 5; ++i) {
    EXPECT_EQ(Row(model.item_factors(), i, 4), ExpectedRow(17, i, Purpose::kInitItem, 0.25f, 4))
        << "item " << i;
    EXPECT_EQ(model.item_bias()[i], 0.0f);
  }
  EXPECT_EQ(model.global_mean(), 3.5f);
  // InitGlobal does not touch user rows.
  for (float x : model.blocks()[4].data) EXPECT_EQ(x, 0.0f);
}

TEST(MfModelTest, UserRowsComeFromTheirUserKeyStreams) {
  MfInitOptions init;
  init.seed = 5;
  // Key u for row u without keys.
  MfModel all(10, 2, 6);
  all.InitUsers(init);
  for (uint32_t u = 0; u < 10; ++u) {
    EXPECT_EQ(Row(all.user_factors(), u, 6), ExpectedRow(5, u, Purpose::kInitUser, 0.1f, 6));
  }
  // A site holding the users keyed {7, 2, 9}: each row equals that user's row in
  // the all-users model, whichever local index it has.
  MfModel site(3, 2, 6);
  site.user_bias()[1] = 1.0f;
  const std::vector<uint64_t> ids = {7, 2, 9};
  site.InitUsers(init, ids);
  for (uint32_t u = 0; u < 3; ++u) {
    EXPECT_EQ(Row(site.user_factors(), u, 6), Row(all.user_factors(), ids[u], 6));
    EXPECT_EQ(site.user_bias()[u], 0.0f);
  }
  // InitUsers does not touch item rows.
  for (float x : site.blocks()[2].data) EXPECT_EQ(x, 0.0f);
}

TEST(MfModelTest, InitialFactorsHaveMeanZeroAndTheRequestedSpread) {
  MfModel model(500, 500, 32);
  MfInitOptions init;
  init.init_std = 0.3f;
  model.InitGlobal(init);
  model.InitUsers(init);
  for (int b : {2, 4}) {
    double sum = 0.0, sq = 0.0;
    const auto& data = model.blocks()[b].data;
    for (float x : data) {
      sum += x;
      sq += double{x} * x;
    }
    const double n = static_cast<double>(data.size());
    const double mean = sum / n;
    EXPECT_NEAR(mean, 0.0, 0.01);
    EXPECT_NEAR(std::sqrt(sq / n - mean * mean), 0.3, 0.01);
  }
}

TEST(MfModelTest, DifferentSeedsGiveDifferentFactorsAndUserItemStreamsDiffer) {
  MfModel a(4, 4, 8), b(4, 4, 8);
  MfInitOptions init;
  a.InitGlobal(init);
  a.InitUsers(init);
  init.seed = 2;
  b.InitGlobal(init);
  b.InitUsers(init);
  EXPECT_NE(a.blocks()[2].data, b.blocks()[2].data);
  EXPECT_NE(a.blocks()[4].data, b.blocks()[4].data);
  // User u and item u do not share a stream.
  EXPECT_NE(a.blocks()[2].data, a.blocks()[4].data);
}

TEST(MfModelTest, PredictIsMeanPlusBiasesPlusDot) {
  MfModel model(2, 3, 2);
  model.set_global_mean(3.0f);
  model.user_bias()[1] = 0.5f;
  model.item_bias()[2] = -0.25f;
  float* p = model.user_factors() + 2;  // user 1
  p[0] = 1.0f;
  p[1] = 2.0f;
  float* q = model.item_factors() + 4;  // item 2
  q[0] = 0.5f;
  q[1] = -1.5f;
  EXPECT_FLOAT_EQ(model.Predict(1, 2), 3.0f + 0.5f - 0.25f + (0.5f - 3.0f));
  EXPECT_FLOAT_EQ(model.Predict(0, 2), 3.0f - 0.25f);  // user 0: zero bias and factors
}

TEST(MfModelTest, GlobalBlocksAreCopiesOfTheGlobalBlocksAndRoundTrip) {
  MfModel a(3, 4, 2);
  MfInitOptions init;
  a.InitGlobal(init);
  a.InitUsers(init);
  a.set_global_mean(3.25f);
  a.item_bias()[1] = 0.5f;
  const std::vector<ParamBlock> global = a.GlobalBlocks();
  ASSERT_EQ(global.size(), 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(global[i], a.blocks()[i]);

  MfModel b(5, 4, 2);  // another site: different user count, same global shape
  ASSERT_TRUE(b.SetGlobalBlocks(global));
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(b.blocks()[i], a.blocks()[i]);
  EXPECT_EQ(b.global_mean(), 3.25f);
  // Local blocks untouched.
  for (float x : b.blocks()[4].data) EXPECT_EQ(x, 0.0f);
}

TEST(MfModelTest, SetGlobalBlocksMatchesByName) {
  MfModel a(1, 2, 2);
  a.set_global_mean(4.0f);
  a.item_bias()[0] = 1.0f;
  std::vector<ParamBlock> reversed = a.GlobalBlocks();
  std::swap(reversed[0], reversed[2]);
  MfModel b(1, 2, 2);
  ASSERT_TRUE(b.SetGlobalBlocks(reversed));
  EXPECT_EQ(b.global_mean(), 4.0f);
  EXPECT_EQ(b.item_bias()[0], 1.0f);
}

TEST(MfModelTest, SetGlobalBlocksRejectsMissingOrMisshapenBlocksAndChangesNothing) {
  MfModel a(2, 3, 2);
  a.set_global_mean(2.0f);
  a.item_bias()[0] = 9.0f;
  MfModel target(2, 3, 2);
  target.set_global_mean(1.0f);

  std::vector<ParamBlock> missing = a.GlobalBlocks();
  missing.pop_back();  // no item_factors
  EXPECT_FALSE(target.SetGlobalBlocks(missing));

  std::vector<ParamBlock> misshapen = a.GlobalBlocks();
  misshapen[2] = ParamBlock(MfModel::kItemFactors, Scope::kGlobal, 3, 3);
  EXPECT_FALSE(target.SetGlobalBlocks(misshapen));

  std::vector<ParamBlock> wrong_rows = a.GlobalBlocks();
  wrong_rows[1] = ParamBlock(MfModel::kItemBias, Scope::kGlobal, 4, 1);
  EXPECT_FALSE(target.SetGlobalBlocks(wrong_rows));

  // The blocks checked before the bad one were not copied either.
  EXPECT_EQ(target.global_mean(), 1.0f);
  EXPECT_EQ(target.item_bias()[0], 0.0f);
}

}  // namespace
}  // namespace fedrec
