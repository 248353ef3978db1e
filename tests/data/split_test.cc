#include "data/split.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <vector>

#include "data/ratings.h"

namespace fedrec {
namespace {

// `n` ratings over `users` users; `time` is the input position, so order checks are easy.
std::vector<Rating> MakeRatings(size_t n, uint32_t users) {
  std::vector<Rating> all;
  all.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    all.push_back(Rating{static_cast<uint32_t>((i * 7919) % users), static_cast<uint32_t>(i % 101),
                         static_cast<float>(1 + i % 5), static_cast<int64_t>(i)});
  }
  return all;
}

// True when train and test are both increasing in input position and together hold all.
bool KeepsInputOrder(const std::vector<Rating>& all, const SplitResult& s) {
  const auto increasing = [](const std::vector<Rating>& v) {
    return std::is_sorted(v.begin(), v.end(),
                          [](const Rating& a, const Rating& b) { return a.time < b.time; });
  };
  std::vector<Rating> merged(s.train);
  merged.insert(merged.end(), s.test.begin(), s.test.end());
  std::sort(merged.begin(), merged.end(),
            [](const Rating& a, const Rating& b) { return a.time < b.time; });
  return increasing(s.train) && increasing(s.test) && merged == all;
}

TEST(Splits, RandomSplitFractionIsApproximatelyRight) {
  const auto all = MakeRatings(100000, 500);
  for (double f : {0.1, 0.2, 0.5}) {
    Result<SplitResult> s = RandomSplit(all, f, 3);
    ASSERT_TRUE(s.ok());
    EXPECT_NEAR(static_cast<double>(s->test.size()) / all.size(), f, 0.01);
    EXPECT_EQ(s->train.size() + s->test.size(), all.size());
  }
}

TEST(Splits, RandomSplitIsDeterministicGivenSeed) {
  const auto all = MakeRatings(5000, 50);
  Result<SplitResult> a = RandomSplit(all, 0.2, 11), b = RandomSplit(all, 0.2, 11),
                      c = RandomSplit(all, 0.2, 12);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->test, b->test);
  EXPECT_EQ(a->train, b->train);
  EXPECT_NE(a->test, c->test);
}

TEST(Splits, RandomSplitPreservesInputOrder) {
  const auto all = MakeRatings(5000, 50);
  Result<SplitResult> s = RandomSplit(all, 0.3, 5);
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(KeepsInputOrder(all, *s));
}

TEST(Splits, RandomSplitZeroFractionKeepsEverythingInTrain) {
  const auto all = MakeRatings(1000, 10);
  Result<SplitResult> s = RandomSplit(all, 0.0, 1);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->train, all);
  EXPECT_TRUE(s->test.empty());
}

TEST(Splits, RandomSplitRejectsFractionOutsideHalfOpenUnitInterval) {
  const auto all = MakeRatings(10, 2);
  for (double f : {1.0, -0.1, 1.5, std::nan("")}) {
    Result<SplitResult> s = RandomSplit(all, f, 1);
    ASSERT_FALSE(s.ok()) << f;
    EXPECT_EQ(s.status().code(), Status::Code::kInvalidArgument);
    EXPECT_NE(s.status().message().find("[0, 1)"), std::string::npos);
  }
}

TEST(Splits, HoldoutLastByTimePicksLatestRatingsPerUser) {
  // User 0: times 50, 10, 40, 30; user 1: 5, 90, 20.
  const std::vector<Rating> all = {
      {0, 0, 1, 50}, {1, 0, 2, 5},  {0, 1, 3, 10}, {0, 2, 4, 40},
      {1, 1, 5, 90}, {0, 3, 1, 30}, {1, 2, 2, 20},
  };
  Result<SplitResult> s = HoldoutPerUser(all, 2, HoldoutOrder::kLastByTime, 1);
  ASSERT_TRUE(s.ok());
  // Test: user 0's times 50 and 40, user 1's 90 and 20, in input order.
  const std::vector<Rating> want_test = {
      {0, 0, 1, 50}, {0, 2, 4, 40}, {1, 1, 5, 90}, {1, 2, 2, 20}};
  const std::vector<Rating> want_train = {{1, 0, 2, 5}, {0, 1, 3, 10}, {0, 3, 1, 30}};
  EXPECT_EQ(s->test, want_test);
  EXPECT_EQ(s->train, want_train);
}

TEST(Splits, HoldoutLastByTimeBreaksTiesByInputOrder) {
  const std::vector<Rating> all = {{0, 0, 1, 7}, {0, 1, 2, 7}, {0, 2, 3, 7}, {0, 3, 4, 3}};
  Result<SplitResult> s = HoldoutPerUser(all, 1, HoldoutOrder::kLastByTime, 1);
  ASSERT_TRUE(s.ok());
  ASSERT_EQ(s->test.size(), 1u);
  EXPECT_EQ(s->test[0].item, 2u);  // the last of the three at time 7
}

TEST(Splits, HoldoutKeepsUsersWithAtMostKRatingsInTrain) {
  const std::vector<Rating> all = {{0, 0, 1, 1}, {0, 1, 1, 2}, {1, 0, 1, 3},
                                   {2, 0, 1, 4}, {2, 1, 1, 5}, {2, 2, 1, 6}};
  for (HoldoutOrder order : {HoldoutOrder::kLastByTime, HoldoutOrder::kRandom}) {
    Result<SplitResult> s = HoldoutPerUser(all, 2, order, 1);
    ASSERT_TRUE(s.ok());
    ASSERT_EQ(s->test.size(), 2u);
    for (const Rating& r : s->test) EXPECT_EQ(r.user, 2u);
    EXPECT_EQ(s->train.size(), 4u);
  }
}

TEST(Splits, HoldoutRandomTakesExactlyKPerUserAndIsDeterministic) {
  const auto all = MakeRatings(20000, 200);  // 100 ratings per user
  Result<SplitResult> a = HoldoutPerUser(all, 3, HoldoutOrder::kRandom, 9);
  Result<SplitResult> b = HoldoutPerUser(all, 3, HoldoutOrder::kRandom, 9);
  Result<SplitResult> c = HoldoutPerUser(all, 3, HoldoutOrder::kRandom, 10);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  std::map<uint32_t, int> per_user;
  for (const Rating& r : a->test) ++per_user[r.user];
  EXPECT_EQ(per_user.size(), 200u);
  for (const auto& [user, n] : per_user) EXPECT_EQ(n, 3) << "user " << user;
  EXPECT_EQ(a->test, b->test);
  EXPECT_NE(a->test, c->test);
  // Random, not simply the latest: some held-out rating is not among its user's last 3.
  Result<SplitResult> last = HoldoutPerUser(all, 3, HoldoutOrder::kLastByTime, 9);
  ASSERT_TRUE(last.ok());
  EXPECT_NE(a->test, last->test);
}

TEST(Splits, HoldoutPreservesInputOrder) {
  const auto all = MakeRatings(3000, 40);
  for (HoldoutOrder order : {HoldoutOrder::kLastByTime, HoldoutOrder::kRandom}) {
    Result<SplitResult> s = HoldoutPerUser(all, 5, order, 2);
    ASSERT_TRUE(s.ok());
    EXPECT_EQ(s->test.size(), 40u * 5);
    EXPECT_TRUE(KeepsInputOrder(all, *s));
  }
}

TEST(Splits, HoldoutRejectsZeroK) {
  Result<SplitResult> s = HoldoutPerUser(MakeRatings(10, 2), 0, HoldoutOrder::kLastByTime, 1);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), Status::Code::kInvalidArgument);
}

TEST(Splits, EmptyInputGivesEmptySplits) {
  Result<SplitResult> a = RandomSplit({}, 0.2, 1);
  Result<SplitResult> b = HoldoutPerUser({}, 1, HoldoutOrder::kRandom, 1);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_TRUE(a->train.empty() && a->test.empty() && b->train.empty() && b->test.empty());
}

}  // namespace
}  // namespace fedrec
