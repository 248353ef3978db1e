#include "algorithms/metrics.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <vector>

#include "base/random.h"

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

// --- Per-task metrics: AUC histograms, log loss, click negatives -----------

// The exact AUC of scores: pairs ordered right count 1, ties 1/2.
double PairwiseAuc(const std::vector<double>& positives, const std::vector<double>& negatives) {
  double ordered = 0.0;
  for (double p : positives) {
    for (double n : negatives) ordered += p > n ? 1.0 : (p == n ? 0.5 : 0.0);
  }
  return ordered / (static_cast<double>(positives.size()) * negatives.size());
}

TEST(AucHistogram, MatchesTheExactPairwiseAucWithinTheBinResolution) {
  Rng rng(11);
  for (const uint32_t bins : {16u, 1024u}) {
    std::vector<double> positives, negatives;
    BinarySums sums(bins);
    for (int n = 0; n < 2000; ++n) {
      const bool label = rng.Below(3) == 0;
      // Positives lean high: an AUC well inside (0.5, 1).
      const double p = std::clamp(rng.Uniform() * 0.8 + (label ? 0.2 : 0.0), 0.0, 1.0);
      (label ? positives : negatives).push_back(p);
      sums.Add(p, label);
    }
    const double exact = PairwiseAuc(positives, negatives);
    // Only pairs that share a bin can differ, by 1/2 each.
    double same_bin = 0.0;
    for (uint32_t b = 0; b < bins; ++b)
      same_bin += static_cast<double>(sums.positives[b]) * static_cast<double>(sums.negatives[b]);
    const double bound =
        0.5 * same_bin / (static_cast<double>(positives.size()) * negatives.size());
    EXPECT_GT(exact, 0.6);
    EXPECT_LE(std::abs(sums.Auc() - exact), bound + 1e-12) << bins << " bins";
    if (bins == 1024) {
      EXPECT_NEAR(sums.Auc(), exact, 2e-3);
    }
  }
}

TEST(AucHistogram, SumsOfTwoHalvesEqualTheWhole) {
  Rng rng(5);
  BinarySums whole(256), first(256), second(256);
  for (int n = 0; n < 1000; ++n) {
    const double p = rng.Uniform();
    const bool label = rng.Uniform() < p;  // calibrated
    whole.Add(p, label);
    (n % 3 == 0 ? first : second).Add(p, label);
  }
  BinarySums merged = first;
  merged.Merge(second);
  EXPECT_EQ(merged.positives, whole.positives);
  EXPECT_EQ(merged.negatives, whole.negatives);
  EXPECT_EQ(merged.count, whole.count);
  EXPECT_EQ(merged.Auc(), whole.Auc());  // from integer counts: exactly
  EXPECT_NEAR(merged.log_loss, whole.log_loss, 1e-9);
  // An empty side takes the other's bins.
  BinarySums empty;
  empty.Merge(whole);
  EXPECT_EQ(empty.Auc(), whole.Auc());
}

TEST(AucHistogram, WithoutBothLabelsIsNaNAndPerfectSeparationIsOne) {
  BinarySums only_positives(8);
  only_positives.Add(0.9, true);
  EXPECT_TRUE(std::isnan(only_positives.Auc()));
  EXPECT_TRUE(std::isnan(BinarySums(8).LogLoss()));
  BinarySums separated(8);
  separated.Add(0.95, true);
  separated.Add(0.05, false);
  EXPECT_DOUBLE_EQ(separated.Auc(), 1.0);
  BinarySums same_bin(8);  // both in bin 7: a tie
  same_bin.Add(0.99, true);
  same_bin.Add(0.9, false);
  EXPECT_DOUBLE_EQ(same_bin.Auc(), 0.5);
  // The edges: 0, 1, NaN and outside values land in the end bins.
  EXPECT_EQ(BinarySums::Bin(0.0, 8), 0u);
  EXPECT_EQ(BinarySums::Bin(1.0, 8), 7u);
  EXPECT_EQ(BinarySums::Bin(1.5, 8), 7u);
  EXPECT_EQ(BinarySums::Bin(std::nan(""), 8), 0u);
  EXPECT_EQ(BinarySums::Bin(0.125, 8), 1u);
}

TEST(BinarySums, LogLossIsTheMeanNegativeLogLikelihoodWithClampedProbabilities) {
  BinarySums sums(16);
  sums.Add(0.8, true);    // -log 0.8
  sums.Add(0.25, false);  // -log 0.75
  sums.Add(0.0, true);    // clamped: -log 1e-7
  sums.Add(1.0, false);   // clamped: -log 1e-7
  const double expected =
      (-std::log(0.8) - std::log(0.75) - 2 * std::log(BinarySums::kMinProbability)) / 4;
  EXPECT_EQ(sums.count, 4u);
  EXPECT_NEAR(sums.LogLoss(), expected, 1e-9);
  EXPECT_TRUE(std::isfinite(sums.log_loss));
}

TEST(ClickNegatives, AreDeterministicAndNeverASeenItem) {
  const std::vector<uint32_t> sparse_seen = {1, 4, 9, 10, 30};
  const std::vector<uint32_t> a = ClickNegatives(7, 1234, 50, sparse_seen, 40);
  EXPECT_EQ(a.size(), 40u);
  EXPECT_EQ(a, ClickNegatives(7, 1234, 50, sparse_seen, 40));  // same seed and user
  EXPECT_NE(a, ClickNegatives(7, 1235, 50, sparse_seen, 40));  // another user
  EXPECT_NE(a, ClickNegatives(8, 1234, 50, sparse_seen, 40));  // another seed
  for (uint32_t item : a) {
    EXPECT_LT(item, 50u);
    EXPECT_FALSE(std::binary_search(sparse_seen.begin(), sparse_seen.end(), item)) << item;
  }
  // Most items seen: drawn among the few others.
  std::vector<uint32_t> dense_seen;
  for (uint32_t i = 0; i < 50; ++i)
    if (i != 3 && i != 17) dense_seen.push_back(i);
  const std::vector<uint32_t> b = ClickNegatives(7, 99, 50, dense_seen, 30);
  EXPECT_EQ(b.size(), 30u);
  EXPECT_EQ(std::set<uint32_t>(b.begin(), b.end()), (std::set<uint32_t>{3, 17}));
  // Every item seen: none.
  dense_seen = {};
  for (uint32_t i = 0; i < 50; ++i) dense_seen.push_back(i);
  EXPECT_TRUE(ClickNegatives(7, 99, 50, dense_seen, 30).empty());
}

// A multi-task model whose predictions are fixed functions of (user, item):
// rating = 1 + (user + item) % 5, like = (item + 1) / (items + 1), click =
// 1 - like. Users' training interactions are given.
class FixedTaskModel : public Model {
 public:
  FixedTaskModel(uint32_t users, uint32_t items, std::vector<Rating> train)
      : Model(users, items), train_(std::move(train)) {}
  std::string_view name() const override { return "fixed_tasks"; }
  std::vector<ParamBlock>& blocks() override { return blocks_; }
  LossSums Train(const TrainPlan&) override { return {}; }
  std::vector<DenseBlockView> Upload() const override { return {}; }
  void Score(uint32_t user, std::span<float> out) const override {
    for (uint32_t i = 0; i < items(); ++i) out[i] = Like(i) + 0.01f * static_cast<float>(user);
  }
  bool PredictsRatings() const override { return true; }
  float Predict(uint32_t user, uint32_t item) const override {
    return 1.0f + static_cast<float>((user + item) % 5);
  }
  std::vector<TaskSpec> Tasks() const override {
    return {{"rating", TaskKind::kRating, 0.0f},
            {"like", TaskKind::kLike, 4.0f},
            {"click", TaskKind::kClick, 0.0f}};
  }
  void PredictTasks(uint32_t user, uint32_t item, std::span<float> out) const override {
    out[0] = Predict(user, item);
    out[1] = Like(item);
    out[2] = 1.0f - Like(item);
  }
  const std::vector<Rating>& train() const override { return train_; }

 private:
  float Like(uint32_t item) const {
    return static_cast<float>(item + 1) / static_cast<float>(items() + 1);
  }
  std::vector<Rating> train_;
  std::vector<ParamBlock> blocks_;
};

class NoTaskModel : public FixedTaskModel {
 public:
  using FixedTaskModel::FixedTaskModel;
  std::vector<TaskSpec> Tasks() const override { return {}; }
};

TEST(EvaluateTasks, LabelsLikesByThresholdAndDrawsUnseenClickNegatives) {
  const std::vector<Rating> train = {{0, 0, 5.0f, 0}, {1, 2, 1.0f, 0}};
  const std::vector<Rating> test = {
      {0, 5, 5.0f, 0}, {0, 1, 2.0f, 0}, {1, 7, 4.0f, 0}, {1, 3, 3.0f, 0}};
  const FixedTaskModel model(2, 10, train);
  EvalOptions options;
  options.click_negatives = 3;
  options.auc_bins = 100;
  const std::vector<uint64_t> keys = {11, 22};
  const std::vector<TaskSums> sums = EvaluateTasks(model, test, keys, options);
  ASSERT_EQ(sums.size(), 3u);
  // Rating: errors of 1 + (u + i) % 5 clamped to [1, 5] against the values.
  ErrorSums expected_errors;
  for (const Rating& r : test)
    expected_errors.Add(r.value - (1.0 + static_cast<double>((r.user + r.item) % 5)));
  EXPECT_EQ(sums[0].spec.name, "rating");
  EXPECT_EQ(sums[0].errors.count, 4u);
  EXPECT_DOUBLE_EQ(sums[0].errors.squared, expected_errors.squared);
  // Like: items 5 and 7 (>= 4) are positives, 1 and 3 negatives; likes grow
  // with the item, so every positive scores above every negative.
  EXPECT_EQ(sums[1].binary.count, 4u);
  uint64_t positives = 0;
  for (uint64_t n : sums[1].binary.positives) positives += n;
  EXPECT_EQ(positives, 2u);
  EXPECT_DOUBLE_EQ(sums[1].binary.Auc(), 1.0);
  // Click: 4 held-out positives, 3 negatives each, none of them a seen item.
  EXPECT_EQ(sums[2].binary.count, 4u + 12u);
  uint64_t click_positives = 0, click_negatives = 0;
  for (uint64_t n : sums[2].binary.positives) click_positives += n;
  for (uint64_t n : sums[2].binary.negatives) click_negatives += n;
  EXPECT_EQ(click_positives, 4u);
  EXPECT_EQ(click_negatives, 12u);
  // The same negatives as ClickNegatives draws for each user, scored 1 - like.
  BinarySums expected(100);
  for (const Rating& r : test) expected.Add(1.0f - (r.item + 1) / 11.0f, true);
  const std::vector<std::vector<uint32_t>> seen = {{0, 1, 5}, {2, 3, 7}};
  for (uint32_t u = 0; u < 2; ++u) {
    for (uint32_t item : ClickNegatives(options.seed, keys[u], 10, seen[u], 6)) {
      EXPECT_FALSE(std::binary_search(seen[u].begin(), seen[u].end(), item));
      expected.Add(1.0f - (item + 1) / 11.0f, false);
    }
  }
  EXPECT_EQ(sums[2].binary.negatives, expected.negatives);
  EXPECT_EQ(sums[2].binary.positives, expected.positives);
  // Models without tasks report none.
  EXPECT_TRUE(EvaluateTasks(NoTaskModel(2, 10, train), test, keys, options).empty());
}

TEST(EvaluateAll, WarmAndColdUsersAddUpToAllUsers) {
  std::vector<Rating> train, test;
  Rng rng(3);
  const uint32_t users = 30, items = 40;
  for (uint32_t u = 0; u < users; ++u) {
    for (int n = 0; n < 8; ++n) {
      const Rating r{u, static_cast<uint32_t>(rng.Below(items)),
                     1.0f + static_cast<float>(rng.Below(5)), 0};
      (n < 5 ? train : test).push_back(r);
    }
  }
  const FixedTaskModel model(users, items, train);
  std::vector<uint64_t> keys(users);
  std::vector<uint8_t> cold(users, 0);
  for (uint32_t u = 0; u < users; ++u) {
    keys[u] = 1000 + u;
    cold[u] = u % 3 == 0;
  }
  EvalOptions options;
  options.ranking_options.k = 5;
  options.ranking_options.relevant_threshold = 3.0f;
  const EvalSums plain = EvaluateAll(model, test, keys, cold, options);
  EXPECT_FALSE(plain.warm_cold);
  options.warm_cold = true;
  const EvalSums grouped = EvaluateAll(model, test, keys, cold, options);
  ASSERT_TRUE(grouped.warm_cold);
  EXPECT_EQ(grouped.warm.errors.count + grouped.cold.errors.count, test.size());
  EXPECT_GT(grouped.cold.errors.count, 0u);
  EXPECT_GT(grouped.warm.errors.count, grouped.cold.errors.count);
  // All users: the same figures as without groups.
  EXPECT_EQ(grouped.all.errors.count, plain.all.errors.count);
  EXPECT_NEAR(grouped.all.errors.squared, plain.all.errors.squared, 1e-9);
  EXPECT_EQ(grouped.all.ranking.users, plain.all.ranking.users);
  EXPECT_NEAR(grouped.all.ranking.ndcg, plain.all.ranking.ndcg, 1e-9);
  EXPECT_EQ(grouped.all.ranking.recommended, plain.all.ranking.recommended);
  EXPECT_EQ(grouped.warm.ranking.users + grouped.cold.ranking.users, plain.all.ranking.users);
  ASSERT_EQ(grouped.all.tasks.size(), 3u);
  for (size_t t = 0; t < 3; ++t) {
    EXPECT_EQ(grouped.all.tasks[t].binary.positives, plain.all.tasks[t].binary.positives);
    EXPECT_EQ(grouped.all.tasks[t].binary.negatives, plain.all.tasks[t].binary.negatives);
    EXPECT_EQ(grouped.all.tasks[t].errors.count, plain.all.tasks[t].errors.count);
    EXPECT_EQ(grouped.warm.tasks[t].binary.count + grouped.cold.tasks[t].binary.count,
              plain.all.tasks[t].binary.count);
  }
}

}  // namespace
}  // namespace fedrec
