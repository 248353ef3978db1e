#include "algorithms/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace fedrec {
namespace {

TEST(ErrorSumsTest, EmptySumsGiveNaN) {
  const ErrorSums empty;
  EXPECT_TRUE(std::isnan(empty.Rmse()));
  EXPECT_TRUE(std::isnan(empty.Mae()));
}

TEST(ErrorSumsTest, AddAndMergeGiveRmseAndMae) {
  ErrorSums a, b;
  a.Add(1.0);
  a.Add(-2.0);
  b.Add(3.0);
  a.Merge(b);
  EXPECT_EQ(a.count, 3u);
  EXPECT_DOUBLE_EQ(a.squared, 14.0);
  EXPECT_DOUBLE_EQ(a.absolute, 6.0);
  EXPECT_DOUBLE_EQ(a.Rmse(), std::sqrt(14.0 / 3.0));
  EXPECT_DOUBLE_EQ(a.Mae(), 2.0);
}

TEST(EvaluateErrorsTest, ClampsPredictionsToTheRatingScale) {
  // k = 0: predictions are mu + b_u + b_i.
  MfModel model(1, 3, 0);
  model.set_global_mean(3.0f);
  model.item_bias()[0] = 3.0f;   // predicts 6.0, clamped to 5
  model.item_bias()[1] = -2.5f;  // predicts 0.5, clamped to 1
  model.item_bias()[2] = 0.5f;   // predicts 3.5
  const std::vector<Rating> test = {{0, 0, 5.0f, 0}, {0, 1, 2.0f, 0}, {0, 2, 4.0f, 0}};
  const ErrorSums sums = EvaluateErrors(model, test, 1.0f, 5.0f);
  // Errors after clamping: 0, 1, 0.5 (unclamped they would be -1, 1.5, 0.5).
  EXPECT_EQ(sums.count, 3u);
  EXPECT_DOUBLE_EQ(sums.squared, 1.25);
  EXPECT_DOUBLE_EQ(sums.absolute, 1.5);
  EXPECT_NEAR(sums.Rmse(), std::sqrt(1.25 / 3.0), 1e-12);
  EXPECT_NEAR(sums.Mae(), 0.5, 1e-12);
}

TEST(EvaluateErrorsTest, UsesFactorsInPredictions) {
  MfModel model(1, 1, 2);
  model.set_global_mean(2.0f);
  model.user_factors()[0] = 1.0f;
  model.user_factors()[1] = 0.5f;
  model.item_factors()[0] = 0.5f;
  model.item_factors()[1] = 1.0f;  // dot = 1: prediction 3
  const std::vector<Rating> test = {{0, 0, 4.0f, 0}};
  EXPECT_DOUBLE_EQ(EvaluateErrors(model, test, 1.0f, 5.0f).Rmse(), 1.0);
}

// One user, five items; k = 1 with p_u = 1, so item i scores q_i + b_i:
//   item:   0    1    2    3    4
//   score:  0.9  0.5  0.7  0.1  0.3
// Train: item 2 (excluded from candidates). Held out: item 0 rated 5 and item 3
// rated 4 (relevant), item 1 rated 2 (not relevant).
// Candidates by score: 0, 1, 4, 3.
MfModel FiveItemModel() {
  MfModel model(2, 5, 1);
  model.user_factors()[0] = 1.0f;
  const float scores[] = {0.9f, 0.5f, 0.7f, 0.1f, 0.3f};
  for (int i = 0; i < 5; ++i) model.item_factors()[i] = scores[i];
  return model;
}
const std::vector<Rating> kTrain = {{0, 2, 3.0f, 0}};
const std::vector<Rating> kTest = {{0, 0, 5.0f, 0}, {0, 3, 4.0f, 0}, {0, 1, 2.0f, 0}};

const double kLog2Of3 = std::log2(3.0);

TEST(EvaluateRankingTest, TopTwoOfHandWorkedExample) {
  // Top 2 = [0, 1]: one hit (item 0) at rank 1 of 2 relevant.
  const RankingSums s = EvaluateRanking(FiveItemModel(), kTrain, kTest, {2, 4.0f});
  EXPECT_EQ(s.users, 1u);
  EXPECT_DOUBLE_EQ(s.precision, 0.5);
  EXPECT_DOUBLE_EQ(s.recall, 0.5);
  EXPECT_DOUBLE_EQ(s.hit_rate, 1.0);
  EXPECT_NEAR(s.ndcg, 1.0 / (1.0 + 1.0 / kLog2Of3), 1e-12);  // 0.6131
}

TEST(EvaluateRankingTest, TopFourOfHandWorkedExampleExcludesTrainItems) {
  // Top 4 = [0, 1, 4, 3]: hits at ranks 1 and 4. Were the train item 2 not
  // excluded, the top 4 would be [0, 2, 1, 4] with one hit.
  const RankingSums s = EvaluateRanking(FiveItemModel(), kTrain, kTest, {4, 4.0f});
  EXPECT_EQ(s.users, 1u);
  EXPECT_DOUBLE_EQ(s.precision, 0.5);
  EXPECT_DOUBLE_EQ(s.recall, 1.0);
  EXPECT_DOUBLE_EQ(s.hit_rate, 1.0);
  EXPECT_NEAR(s.ndcg, (1.0 + 1.0 / std::log2(5.0)) / (1.0 + 1.0 / kLog2Of3), 1e-12);  // 0.8772
}

TEST(EvaluateRankingTest, MissGivesZerosAndPrecisionDividesByK) {
  // Only item 3 relevant (threshold 4 is inclusive); top 1 = [0]: a miss.
  const std::vector<Rating> test = {{0, 3, 4.0f, 0}, {0, 0, 3.5f, 0}};
  const RankingSums miss = EvaluateRanking(FiveItemModel(), kTrain, test, {1, 4.0f});
  EXPECT_EQ(miss.users, 1u);
  EXPECT_DOUBLE_EQ(miss.precision, 0.0);
  EXPECT_DOUBLE_EQ(miss.recall, 0.0);
  EXPECT_DOUBLE_EQ(miss.hit_rate, 0.0);
  EXPECT_DOUBLE_EQ(miss.ndcg, 0.0);
  // K = 10 > 4 candidates: all ranked, one hit at rank 4, precision 1/10.
  const RankingSums all = EvaluateRanking(FiveItemModel(), kTrain, test, {10, 4.0f});
  EXPECT_DOUBLE_EQ(all.precision, 0.1);
  EXPECT_DOUBLE_EQ(all.recall, 1.0);
  EXPECT_NEAR(all.ndcg, 1.0 / std::log2(5.0), 1e-12);
  // A K far beyond the item count allocates nothing of size K.
  const RankingSums huge = EvaluateRanking(FiveItemModel(), kTrain, test, {1u << 30, 4.0f});
  EXPECT_DOUBLE_EQ(huge.recall, 1.0);
  EXPECT_DOUBLE_EQ(huge.precision, 1.0 / (1u << 30));
}

TEST(EvaluateRankingTest, UsersWithoutRelevantHeldOutItemsAreSkipped) {
  // User 1 has only a held-out 3.9 (below the threshold): not counted.
  std::vector<Rating> test = kTest;
  test.push_back({1, 4, 3.9f, 0});
  const RankingSums s = EvaluateRanking(FiveItemModel(), kTrain, test, {2, 4.0f});
  EXPECT_EQ(s.users, 1u);
  EXPECT_DOUBLE_EQ(s.precision, 0.5);
  // With a lower threshold user 1 counts; it has no factors, so all its scores
  // tie and the top 2 is [0, 1] by item index: a miss for item 4.
  const RankingSums low = EvaluateRanking(FiveItemModel(), kTrain, test, {2, 3.5f});
  EXPECT_EQ(low.users, 2u);
  EXPECT_DOUBLE_EQ(low.hit_rate, 1.0);
}

TEST(EvaluateRankingTest, TiesGoToTheLowerItemIndex) {
  MfModel model(1, 4, 1);  // every score 0
  const std::vector<Rating> none;
  const std::vector<Rating> relevant_1 = {{0, 1, 5.0f, 0}};
  const std::vector<Rating> relevant_0 = {{0, 0, 5.0f, 0}};
  EXPECT_DOUBLE_EQ(EvaluateRanking(model, none, relevant_1, {1, 4.0f}).hit_rate, 0.0);
  EXPECT_DOUBLE_EQ(EvaluateRanking(model, none, relevant_0, {1, 4.0f}).hit_rate, 1.0);
  // Excluding item 0 lets item 1 in.
  const std::vector<Rating> train_0 = {{0, 0, 1.0f, 0}};
  EXPECT_DOUBLE_EQ(EvaluateRanking(model, train_0, relevant_1, {1, 4.0f}).hit_rate, 1.0);
}

TEST(EvaluateRankingTest, ItemBiasesCountInTheScore) {
  MfModel model = FiveItemModel();
  model.item_bias()[4] = 1.0f;  // item 4 now scores 1.3, first
  const std::vector<Rating> test = {{0, 4, 5.0f, 0}};
  EXPECT_DOUBLE_EQ(EvaluateRanking(model, kTrain, test, {1, 4.0f}).hit_rate, 1.0);
}

TEST(EvaluateRankingTest, SumsOverUsersAndMerges) {
  // Users 0 and 1 with opposite preferences over 3 items.
  MfModel model(2, 3, 1);
  model.user_factors()[0] = 1.0f;
  model.user_factors()[1] = -1.0f;
  model.item_factors()[0] = 1.0f;
  model.item_factors()[1] = 0.0f;
  model.item_factors()[2] = -1.0f;
  const std::vector<Rating> train;
  const std::vector<Rating> test = {{0, 0, 5.0f, 0}, {1, 0, 5.0f, 0}};
  const RankingSums s = EvaluateRanking(model, train, test, {1, 4.0f});
  EXPECT_EQ(s.users, 2u);
  EXPECT_DOUBLE_EQ(s.hit_rate, 1.0);  // user 0 hits, user 1 (top = item 2) misses
  EXPECT_DOUBLE_EQ(s.precision, 1.0);
  RankingSums merged = s;
  merged.Merge(s);
  EXPECT_EQ(merged.users, 4u);
  EXPECT_DOUBLE_EQ(merged.hit_rate, 2.0);
  EXPECT_DOUBLE_EQ(merged.ndcg, 2.0);
}

}  // namespace
}  // namespace fedrec
