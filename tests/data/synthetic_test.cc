#include "data/synthetic.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <string>
#include <unordered_set>
#include <vector>

namespace fedrec {
namespace {

// One generation with default options, shared by the shape tests.
const SyntheticData& Defaults() {
  static const SyntheticData data = GenerateSynthetic(SyntheticOptions{});
  return data;
}

double Mean(const std::vector<Rating>& ratings) {
  double sum = 0.0;
  for (const Rating& r : ratings) sum += r.value;
  return sum / static_cast<double>(ratings.size());
}

size_t DistinctPairs(const std::vector<Rating>& ratings) {
  std::unordered_set<uint64_t> pairs;
  for (const Rating& r : ratings) pairs.insert((uint64_t{r.user} << 32) | r.item);
  return pairs.size();
}

TEST(Synthetic, DefaultsHaveMovieLens100kShape) {
  const Dataset& d = Defaults().dataset;
  EXPECT_EQ(d.users.size(), 943u);
  EXPECT_EQ(d.items.size(), 1682u);
  EXPECT_EQ(d.train.size(), 100000u);
  EXPECT_TRUE(d.test.empty());
  EXPECT_EQ(d.users.Raw(0), "0");
  EXPECT_EQ(d.users.Raw(942), "942");
  EXPECT_EQ(d.items.Raw(1681), "1681");
  EXPECT_EQ(d.rating_min, 1.0f);
  EXPECT_EQ(d.rating_max, 5.0f);
}

TEST(Synthetic, DefaultMeanIsCloseToMovieLens) {
  EXPECT_NEAR(Mean(Defaults().dataset.train), 3.53, 0.1);
  for (uint64_t seed : {2, 3, 4}) {
    SyntheticOptions o;
    o.seed = seed;
    EXPECT_NEAR(Mean(GenerateSynthetic(o).dataset.train), 3.53, 0.1) << "seed " << seed;
  }
}

TEST(Synthetic, RoundedValuesAreIntegersOnTheScale) {
  std::vector<int> histogram(6, 0);
  for (const Rating& r : Defaults().dataset.train) {
    ASSERT_EQ(r.value, std::round(r.value));
    ASSERT_GE(r.value, 1.0f);
    ASSERT_LE(r.value, 5.0f);
    ++histogram[static_cast<int>(r.value)];
  }
  for (int v = 1; v <= 5; ++v) EXPECT_GT(histogram[v], 1000) << "rating " << v;
}

TEST(Synthetic, PairsAreDistinctAndIndicesInRange) {
  const Dataset& d = Defaults().dataset;
  EXPECT_EQ(DistinctPairs(d.train), d.train.size());
  for (const Rating& r : d.train) {
    ASSERT_LT(r.user, d.users.size());
    ASSERT_LT(r.item, d.items.size());
  }
}

TEST(Synthetic, EveryUserHasAtLeastTwentyRatingsByDefault) {
  std::vector<int> per_user(943, 0);
  for (const Rating& r : Defaults().dataset.train) ++per_user[r.user];
  EXPECT_GE(*std::min_element(per_user.begin(), per_user.end()), 20);
  // Activity is skewed too: the most active user has many times the minimum.
  EXPECT_GE(*std::max_element(per_user.begin(), per_user.end()), 300);
}

TEST(Synthetic, PopularityIsSkewed) {
  std::vector<int> per_item(1682, 0);
  for (const Rating& r : Defaults().dataset.train) ++per_item[r.item];
  std::sort(per_item.begin(), per_item.end(), std::greater<>());
  const int top = std::accumulate(per_item.begin(), per_item.begin() + 168, 0);
  EXPECT_GT(top, 40000) << "top 10% of items hold " << top << " of 100000 ratings";
}

TEST(Synthetic, SameSeedGivesSameDataAndOtherSeedDiffers) {
  SyntheticOptions o;
  o.users = 200;
  o.items = 300;
  o.ratings = 5000;
  const SyntheticData a = GenerateSynthetic(o), b = GenerateSynthetic(o);
  o.seed = 2;
  const SyntheticData c = GenerateSynthetic(o);
  EXPECT_EQ(a.dataset.train, b.dataset.train);
  EXPECT_EQ(a.user_factors, b.user_factors);
  EXPECT_EQ(a.item_bias, b.item_bias);
  EXPECT_EQ(a.mean, b.mean);
  EXPECT_NE(a.dataset.train, c.dataset.train);
  EXPECT_NE(a.user_factors, c.user_factors);
}

TEST(Synthetic, NoiseFloorIsPositiveAndNearNoiseStd) {
  const SyntheticData& s = Defaults();
  const double floor = s.NoiseFloorRmse(s.dataset.train);
  // Noise 0.75 plus rounding (std 0.29), minus a little clamping.
  EXPECT_GT(floor, 0.65);
  EXPECT_LT(floor, 0.9);
  SyntheticOptions o;
  o.noise_std = 0.25;
  const SyntheticData quiet = GenerateSynthetic(o);
  EXPECT_LT(quiet.NoiseFloorRmse(quiet.dataset.train), floor - 0.2);
}

TEST(Synthetic, NoiselessUnroundedRatingsEqualTheTruth) {
  SyntheticOptions o;
  o.noise_std = 0.0;
  o.round_to_integers = false;
  o.ratings = 20000;
  const SyntheticData s = GenerateSynthetic(o);
  EXPECT_LT(s.NoiseFloorRmse(s.dataset.train), 1e-5);
  bool fractional = false;
  for (const Rating& r : s.dataset.train) fractional |= r.value != std::round(r.value);
  EXPECT_TRUE(fractional);
}

TEST(Synthetic, TruthIsClampedToTheScale) {
  SyntheticOptions o;
  o.users = 100;
  o.items = 100;
  o.ratings = 2000;
  o.item_bias_std = 3.0;  // far outside [1, 5] before clamping
  const SyntheticData s = GenerateSynthetic(o);
  int at_min = 0, at_max = 0;
  for (uint32_t u = 0; u < 100; ++u) {
    for (uint32_t i = 0; i < 100; ++i) {
      const float t = s.Truth(u, i);
      ASSERT_GE(t, 1.0f);
      ASSERT_LE(t, 5.0f);
      at_min += t == 1.0f;
      at_max += t == 5.0f;
    }
  }
  EXPECT_GT(at_min, 0);
  EXPECT_GT(at_max, 0);
}

TEST(Synthetic, RatingsAreCappedAtHalfTheMatrix) {
  SyntheticOptions o;
  o.users = 10;
  o.items = 11;
  o.ratings = 1000;
  const SyntheticData s = GenerateSynthetic(o);
  EXPECT_EQ(s.dataset.train.size(), 55u);
  EXPECT_EQ(DistinctPairs(s.dataset.train), 55u);
  EXPECT_EQ(s.dataset.users.size(), 10u);
}

TEST(Synthetic, UsersAndItemsWithoutRatingsAreStillInterned) {
  SyntheticOptions o;
  o.users = 50;
  o.items = 1000;
  o.ratings = 30;  // fewer ratings than users
  const SyntheticData s = GenerateSynthetic(o);
  EXPECT_EQ(s.dataset.train.size(), 30u);
  EXPECT_EQ(s.dataset.users.size(), 50u);
  EXPECT_EQ(s.dataset.items.size(), 1000u);
  EXPECT_EQ(s.user_bias.size(), 50u);
  EXPECT_EQ(s.item_factors.size(), 1000u * o.rank);
}

TEST(Synthetic, DegenerateOptionsGiveEmptyOrTinyData) {
  SyntheticOptions o;
  o.users = 0;
  EXPECT_TRUE(GenerateSynthetic(o).dataset.train.empty());
  o.users = 5;
  o.items = 1;  // at most users * items / 2 = 2 ratings
  o.rank = 0;
  const SyntheticData s = GenerateSynthetic(o);
  EXPECT_EQ(s.dataset.train.size(), 2u);
  EXPECT_EQ(DistinctPairs(s.dataset.train), 2u);
  EXPECT_GE(s.Truth(0, 0), 1.0f);
  EXPECT_EQ(s.NoiseFloorRmse({}), 0.0);
}

TEST(Synthetic, TimestampsIncreaseAlongTheList) {
  const auto& train = Defaults().dataset.train;
  for (size_t k = 1; k < train.size(); ++k) ASSERT_LT(train[k - 1].time, train[k].time);
  // The list interleaves users like a log rather than grouping them by user.
  size_t user_changes = 0;
  for (size_t k = 1; k < train.size(); ++k) user_changes += train[k].user != train[k - 1].user;
  EXPECT_GT(user_changes, train.size() * 9 / 10);
}

TEST(Synthetic, ExtremePopularitySkewStillGivesDistinctPairs) {
  SyntheticOptions o;
  o.users = 300;
  o.items = 400;
  o.ratings = 50000;  // users at the cap of 200 items need the unpopular tail
  o.item_skew = 3.0;
  const auto start = std::chrono::steady_clock::now();
  const SyntheticData s = GenerateSynthetic(o);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(s.dataset.train.size(), 50000u);
  EXPECT_EQ(DistinctPairs(s.dataset.train), 50000u);
  EXPECT_LT(seconds, 5.0);
}

TEST(Synthetic, GeneratesMillionsOfRatingsInSeconds) {
  SyntheticOptions o;
  o.users = 100000;
  o.items = 20000;
  o.ratings = 1000000;
  const auto start = std::chrono::steady_clock::now();
  const SyntheticData s = GenerateSynthetic(o);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(s.dataset.train.size(), 1000000u);
  EXPECT_EQ(DistinctPairs(s.dataset.train), 1000000u);
  EXPECT_LT(seconds, 10.0);
  RecordProperty("seconds", std::to_string(seconds));
}

}  // namespace
}  // namespace fedrec
