#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "data/split.h"
#include "data/synthetic.h"

namespace fedrec {
namespace {

struct Split {
  IdMap users;
  std::vector<Rating> train, test;
};

// Synthetic ratings split 80/20 at random.
Split MakeSplit(uint64_t seed = 3) {
  SyntheticOptions o;
  o.users = 300;
  o.items = 200;
  o.ratings = 9000;
  o.seed = seed;
  SyntheticData d = GenerateSynthetic(o);
  Result<SplitResult> split = RandomSplit(d.dataset.train, 0.2, seed);
  EXPECT_TRUE(split.ok());
  return Split{d.dataset.users, std::move(split->train), std::move(split->test)};
}

std::map<uint32_t, std::vector<Rating>> ByUser(const std::vector<Rating>& ratings) {
  std::map<uint32_t, std::vector<Rating>> by;
  for (const Rating& r : ratings) by[r.user].push_back(r);
  return by;
}

TEST(ColdStart, ColdUsersKeepExactlyNOfTheirTrainingRatingsAndOthersAreUntouched) {
  Split s = MakeSplit();
  const std::vector<Rating> before = s.train, test = s.test;
  ColdStartOptions o;
  o.share = 0.2;
  o.ratings = 3;
  o.seed = 11;
  Result<std::vector<uint8_t>> cold = ColdStartSplit(s.users, s.test, o, &s.train);
  ASSERT_TRUE(cold.ok()) << cold.status().message();
  ASSERT_EQ(cold->size(), s.users.size());
  EXPECT_EQ(s.test, test);  // the test set stays as it is
  const auto old_by = ByUser(before), new_by = ByUser(s.train), test_by = ByUser(test);
  size_t n_cold = 0, eligible = 0;
  for (uint32_t u = 0; u < s.users.size(); ++u) {
    const auto o_it = old_by.find(u);
    const size_t had = o_it == old_by.end() ? 0 : o_it->second.size();
    const bool has_test = test_by.count(u) > 0;
    eligible += has_test && had > o.ratings;
    const auto n_it = new_by.find(u);
    const std::vector<Rating> now = n_it == new_by.end() ? std::vector<Rating>() : n_it->second;
    if ((*cold)[u]) {
      ++n_cold;
      EXPECT_TRUE(has_test) << u;
      EXPECT_GT(had, o.ratings) << u;
      ASSERT_EQ(now.size(), o.ratings) << u;
      // The kept ratings are some of the user's own, in input order.
      size_t at = 0;
      for (const Rating& r : now) {
        while (at < had && !(o_it->second[at] == r)) ++at;
        EXPECT_LT(at, had) << "user " << u << " kept a rating it did not have";
        ++at;
      }
    } else {
      EXPECT_EQ(now, had == 0 ? std::vector<Rating>() : o_it->second) << u;
    }
  }
  // A seeded share of the eligible users: about 20%.
  EXPECT_GT(n_cold, eligible / 10);
  EXPECT_LT(n_cold, eligible * 3 / 10);
  // Warm users' ratings stay in input order around the dropped ones.
  std::vector<Rating> warm_before, warm_after;
  for (const Rating& r : before)
    if (!(*cold)[r.user]) warm_before.push_back(r);
  for (const Rating& r : s.train)
    if (!(*cold)[r.user]) warm_after.push_back(r);
  EXPECT_EQ(warm_before, warm_after);
}

TEST(ColdStart, SameSeedSameSplitOtherSeedOtherUsers) {
  ColdStartOptions o;
  o.share = 0.3;
  o.seed = 5;
  Split a = MakeSplit(), b = MakeSplit();
  Result<std::vector<uint8_t>> ca = ColdStartSplit(a.users, a.test, o, &a.train);
  Result<std::vector<uint8_t>> cb = ColdStartSplit(b.users, b.test, o, &b.train);
  ASSERT_TRUE(ca.ok() && cb.ok());
  EXPECT_EQ(*ca, *cb);
  EXPECT_EQ(a.train, b.train);
  Split c = MakeSplit();
  o.seed = 6;
  Result<std::vector<uint8_t>> cc = ColdStartSplit(c.users, c.test, o, &c.train);
  ASSERT_TRUE(cc.ok());
  EXPECT_NE(*ca, *cc);
}

TEST(ColdStart, ChoiceFollowsTheRawIdNotTheIndex) {
  // The same users interned in the opposite order: the same users turn cold
  // and keep the same ratings.
  IdMap forward, backward;
  std::vector<Rating> train_f, test_f, train_b, test_b;
  const uint32_t n = 60;
  for (uint32_t u = 0; u < n; ++u) forward.Intern("user" + std::to_string(u));
  for (uint32_t u = n; u-- > 0;) backward.Intern("user" + std::to_string(u));
  for (uint32_t u = 0; u < n; ++u) {
    for (uint32_t i = 0; i < 8; ++i) {
      train_f.push_back(Rating{u, i, static_cast<float>(1 + i % 5), i});
      train_b.push_back(Rating{n - 1 - u, i, static_cast<float>(1 + i % 5), i});
    }
    test_f.push_back(Rating{u, 9, 4, 0});
    test_b.push_back(Rating{n - 1 - u, 9, 4, 0});
  }
  ColdStartOptions o;
  o.share = 0.5;
  o.ratings = 2;
  Result<std::vector<uint8_t>> cf = ColdStartSplit(forward, test_f, o, &train_f);
  Result<std::vector<uint8_t>> cb = ColdStartSplit(backward, test_b, o, &train_b);
  ASSERT_TRUE(cf.ok() && cb.ok());
  size_t n_cold = 0;
  for (uint32_t u = 0; u < n; ++u) {
    EXPECT_EQ((*cf)[u], (*cb)[n - 1 - u]) << u;
    n_cold += (*cf)[u];
    EXPECT_EQ((*cf)[u] != 0, ColdStartChosen(o, "user" + std::to_string(u)));
  }
  EXPECT_GT(n_cold, 0u);
  EXPECT_LT(n_cold, n);
  auto items_of = [](const std::vector<Rating>& train, uint32_t user) {
    std::vector<uint32_t> items;
    for (const Rating& r : train)
      if (r.user == user) items.push_back(r.item);
    return items;
  };
  for (uint32_t u = 0; u < n; ++u) EXPECT_EQ(items_of(train_f, u), items_of(train_b, n - 1 - u));
}

TEST(ColdStart, UsersWithoutTestRatingsOrWithFewRatingsStayWarm) {
  IdMap users;
  users.Intern("a");  // 5 train, test: eligible
  users.Intern("b");  // 5 train, no test
  users.Intern("c");  // 3 train, test: not more than N
  std::vector<Rating> train, test = {Rating{0, 9, 3, 0}, Rating{2, 9, 3, 0}};
  for (uint32_t i = 0; i < 5; ++i) train.push_back(Rating{0, i, 3, 0});
  for (uint32_t i = 0; i < 5; ++i) train.push_back(Rating{1, i, 3, 0});
  for (uint32_t i = 0; i < 3; ++i) train.push_back(Rating{2, i, 3, 0});
  ColdStartOptions o;
  o.share = 1.0;
  o.ratings = 3;
  Result<std::vector<uint8_t>> cold = ColdStartSplit(users, test, o, &train);
  ASSERT_TRUE(cold.ok());
  EXPECT_EQ(*cold, (std::vector<uint8_t>{1, 0, 0}));
  EXPECT_EQ(train.size(), 3u + 5u + 3u);
}

TEST(ColdStart, OffLeavesTrainAsItIsAndBadShareIsAnError) {
  Split s = MakeSplit();
  const std::vector<Rating> before = s.train;
  ColdStartOptions o;
  o.share = 0.0;
  Result<std::vector<uint8_t>> off = ColdStartSplit(s.users, s.test, o, &s.train);
  ASSERT_TRUE(off.ok());
  EXPECT_TRUE(off->empty());
  EXPECT_EQ(s.train, before);
  o.share = 1.5;
  Result<std::vector<uint8_t>> bad = ColdStartSplit(s.users, s.test, o, &s.train);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("share must be in [0, 1], found 1.5"), std::string::npos)
      << bad.status().message();
  EXPECT_EQ(s.train, before);
  // A rating of a user outside the IdMap is an error, not a crash.
  std::vector<Rating> train = {Rating{7, 0, 3, 0}};
  IdMap one;
  one.Intern("x");
  o.share = 0.5;
  EXPECT_FALSE(ColdStartSplit(one, {}, o, &train).ok());
  EXPECT_EQ(train.size(), 1u);
}

}  // namespace
}  // namespace fedrec
