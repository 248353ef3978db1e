#include "data/partition.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "data/synthetic.h"

namespace fedrec {
namespace {

Dataset SmallSynthetic(uint32_t users = 943, uint64_t seed = 1) {
  SyntheticOptions o;
  o.users = users;
  o.items = 500;
  o.ratings = users * 30ull;
  o.seed = seed;
  return GenerateSynthetic(o).dataset;
}

// `users` users; user u rates the 10 items of group u % groups (items g, g + groups, ...).
Dataset GroupedDataset(uint32_t users, uint32_t groups) {
  Dataset d;
  for (uint32_t u = 0; u < users; ++u) d.users.Intern(std::to_string(u).append("u"));
  for (uint32_t i = 0; i < groups * 10; ++i) d.items.Intern(std::to_string(i).append("i"));
  for (uint32_t u = 0; u < users; ++u) {
    for (uint32_t k = 0; k < 10; ++k) d.train.push_back(Rating{u, u % groups + k * groups, 3, 0});
  }
  return d;
}

std::vector<size_t> UsersPerSite(const std::vector<uint32_t>& site_of_user, uint32_t sites) {
  std::vector<size_t> n(sites, 0);
  for (uint32_t s : site_of_user) {
    EXPECT_LT(s, sites);
    if (s < sites) ++n[s];
  }
  return n;
}

// User-weighted mean total-variation distance between each site's mix of
// groups (u % groups) and the overall mix (uniform in GroupedDataset).
double GroupMixSkew(const std::vector<uint32_t>& site_of_user, uint32_t sites, uint32_t groups) {
  std::vector<std::vector<double>> mix(sites, std::vector<double>(groups, 0.0));
  for (uint32_t u = 0; u < site_of_user.size(); ++u) mix[site_of_user[u]][u % groups] += 1.0;
  double skew = 0.0;
  for (const auto& m : mix) {
    double n = 0.0;
    for (double x : m) n += x;
    if (n == 0.0) continue;
    double tv = 0.0;
    for (double x : m) tv += std::abs(x / n - 1.0 / groups);
    skew += 0.5 * tv * n;
  }
  return skew / static_cast<double>(site_of_user.size());
}

TEST(Partitioners, ByUserPutsEachUserAtExactlyOneSite) {
  const Dataset d = SmallSynthetic();
  PartitionOptions o;
  Result<std::vector<uint32_t>> p = PartitionByUser(d, o);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  ASSERT_EQ(p->size(), d.users.size());
  const auto by_site = SplitBySite(d.train, *p, o.sites);
  ASSERT_EQ(by_site.size(), o.sites);
  size_t total = 0;
  for (uint32_t s = 0; s < o.sites; ++s) {
    total += by_site[s].size();
    for (const Rating& r : by_site[s]) ASSERT_EQ((*p)[r.user], s);
  }
  EXPECT_EQ(total, d.train.size());
}

TEST(Partitioners, ByUserBalancesSitesWithinOneUser) {
  const Dataset d = SmallSynthetic();
  for (uint32_t sites : {1u, 7u, 10u, 100u, 943u}) {
    PartitionOptions o;
    o.sites = sites;
    Result<std::vector<uint32_t>> p = PartitionByUser(d, o);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    const auto n = UsersPerSite(*p, sites);
    const auto [lo, hi] = std::minmax_element(n.begin(), n.end());
    EXPECT_LE(*hi - *lo, 1u) << sites << " sites";
    EXPECT_GE(*lo, 1u);
  }
}

TEST(Partitioners, ByUserIsDeterministicAndSeedDependent) {
  const Dataset d = SmallSynthetic();
  PartitionOptions o;
  const auto a = PartitionByUser(d, o), b = PartitionByUser(d, o);
  o.seed = 2;
  const auto c = PartitionByUser(d, o);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(*a, *b);
  EXPECT_NE(*a, *c);
}

TEST(Partitioners, ByUserRejectsZeroSitesAndMoreSitesThanUsers) {
  const Dataset d = GroupedDataset(5, 2);
  PartitionOptions o;
  o.sites = 0;
  Result<std::vector<uint32_t>> p = PartitionByUser(d, o);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), Status::Code::kInvalidArgument);
  o.sites = 6;
  p = PartitionByUser(d, o);
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find('5'), std::string::npos) << p.status().message();
  EXPECT_NE(p.status().message().find('6'), std::string::npos) << p.status().message();
  o.sites = 5;
  EXPECT_TRUE(PartitionByUser(d, o).ok());
}

TEST(Partitioners, UsersWithoutTrainRatingsStillGetASiteButDoNotCount) {
  Dataset d = GroupedDataset(4, 2);
  d.users.Intern("test_only");
  d.users.Intern("no_ratings");
  d.test.push_back(Rating{4, 0, 4, 0});
  PartitionOptions o;
  o.sites = 4;
  for (const auto& partition : {PartitionByUser, PartitionDirichlet}) {
    Result<std::vector<uint32_t>> p = partition(d, o);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    ASSERT_EQ(p->size(), 6u);
    EXPECT_LT((*p)[4], 4u);
    EXPECT_LT((*p)[5], 4u);
    // Every site has one of the 4 users with train ratings.
    std::vector<uint32_t> first_four(p->begin(), p->begin() + 4);
    std::sort(first_four.begin(), first_four.end());
    EXPECT_EQ(first_four, (std::vector<uint32_t>{0, 1, 2, 3}));
  }
  o.sites = 5;  // only 4 users have train ratings
  EXPECT_FALSE(PartitionByUser(d, o).ok());
  EXPECT_FALSE(PartitionDirichlet(d, o).ok());
}

TEST(Partitioners, RatingIndicesOutsideTheDatasetAreAnError) {
  Dataset d = GroupedDataset(4, 2);
  d.train.push_back(Rating{9, 0, 4, 0});
  PartitionOptions o;
  o.sites = 2;
  EXPECT_EQ(PartitionByUser(d, o).status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(PartitionDirichlet(d, o).status().code(), Status::Code::kInvalidArgument);
}

TEST(Partitioners, DirichletSmallAlphaSkewsGroupMixesMoreThanLargeAlpha) {
  const Dataset d = GroupedDataset(1000, 10);
  for (uint64_t seed : {1, 2, 3}) {
    PartitionOptions o;
    o.sites = 10;
    o.item_groups = 10;
    o.seed = seed;
    o.dirichlet_alpha = 0.05;
    Result<std::vector<uint32_t>> skewed = PartitionDirichlet(d, o);
    o.dirichlet_alpha = 1000.0;
    Result<std::vector<uint32_t>> mixed = PartitionDirichlet(d, o);
    ASSERT_TRUE(skewed.ok() && mixed.ok());
    const double small_alpha = GroupMixSkew(*skewed, 10, 10);
    const double large_alpha = GroupMixSkew(*mixed, 10, 10);
    EXPECT_GT(small_alpha, 0.5) << "seed " << seed;
    EXPECT_LT(large_alpha, 0.2) << "seed " << seed;
  }
}

TEST(Partitioners, DirichletUsesTheDominantGroup) {
  // Every user's ratings are all in one group, and alpha is tiny, so users of
  // one group (almost always) share a site.
  const Dataset d = GroupedDataset(200, 4);
  PartitionOptions o;
  o.sites = 4;
  o.item_groups = 4;
  o.dirichlet_alpha = 0.001;
  Result<std::vector<uint32_t>> p = PartitionDirichlet(d, o);
  ASSERT_TRUE(p.ok());
  // Count users not at their group's most common site: at most the few moved to fill sites.
  size_t misplaced = 0;
  for (uint32_t g = 0; g < 4; ++g) {
    std::vector<size_t> n(4, 0);
    for (uint32_t u = g; u < 200; u += 4) ++n[(*p)[u]];
    misplaced += 50 - *std::max_element(n.begin(), n.end());
  }
  EXPECT_LE(misplaced, 3u);
}

TEST(Partitioners, DirichletLeavesNoSiteEmpty) {
  const Dataset d = SmallSynthetic(300);
  for (uint64_t seed : {1, 2, 3, 4, 5}) {
    PartitionOptions o;
    o.sites = 20;
    o.dirichlet_alpha = 0.01;
    o.item_groups = 3;  // at most 3 sites would get users without the fix-up
    o.seed = seed;
    Result<std::vector<uint32_t>> p = PartitionDirichlet(d, o);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    const auto n = UsersPerSite(*p, o.sites);
    EXPECT_GE(*std::min_element(n.begin(), n.end()), 1u) << "seed " << seed;
  }
  // As many sites as users: one user each.
  const Dataset tiny = GroupedDataset(6, 2);
  PartitionOptions o;
  o.sites = 6;
  o.dirichlet_alpha = 0.01;
  Result<std::vector<uint32_t>> p = PartitionDirichlet(tiny, o);
  ASSERT_TRUE(p.ok());
  const auto n = UsersPerSite(*p, 6);
  EXPECT_EQ(*std::max_element(n.begin(), n.end()), 1u);
}

TEST(Partitioners, DirichletIsDeterministicAndSeedDependent) {
  const Dataset d = SmallSynthetic();
  PartitionOptions o;
  const auto a = PartitionDirichlet(d, o), b = PartitionDirichlet(d, o);
  o.seed = 2;
  const auto c = PartitionDirichlet(d, o);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(*a, *b);
  EXPECT_NE(*a, *c);
}

TEST(Partitioners, DirichletRejectsBadOptions) {
  const Dataset d = GroupedDataset(20, 2);
  const auto code = [&d](double alpha, uint32_t groups, uint32_t sites) {
    PartitionOptions o;
    o.dirichlet_alpha = alpha;
    o.item_groups = groups;
    o.sites = sites;
    return PartitionDirichlet(d, o).status().code();
  };
  EXPECT_EQ(code(0.0, 10, 4), Status::Code::kInvalidArgument);
  EXPECT_EQ(code(-1.0, 10, 4), Status::Code::kInvalidArgument);
  EXPECT_EQ(code(std::nan(""), 10, 4), Status::Code::kInvalidArgument);
  EXPECT_EQ(code(INFINITY, 10, 4), Status::Code::kInvalidArgument);
  EXPECT_EQ(code(0.5, 0, 4), Status::Code::kInvalidArgument);
  EXPECT_EQ(code(0.5, 10, 0), Status::Code::kInvalidArgument);
  EXPECT_EQ(code(0.5, 10, 21), Status::Code::kInvalidArgument);
  EXPECT_EQ(code(0.5, 1000, 20), Status::Code::kOk);  // more groups than items is fine
}

TEST(Partitioners, RegistryFindsBuiltinsAndListsNamesForUnknown) {
  const PartitionerRegistry registry = PartitionerRegistry::WithBuiltins();
  const Dataset d = SmallSynthetic(100);
  PartitionOptions o;
  for (const char* name : {"user", "dirichlet"}) {
    Result<Partitioner> p = registry.Find(name);
    ASSERT_TRUE(p.ok()) << name;
    EXPECT_TRUE((*p)(d, o).ok());
  }
  EXPECT_EQ(registry.Find("user").value()(d, o).value(), PartitionByUser(d, o).value());
  Result<Partitioner> unknown = registry.Find("geo");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("age_group, dirichlet, genre, user"), std::string::npos)
      << unknown.status().message();
}

TEST(Partitioners, RegistryAcceptsNewPartitioners) {
  PartitionerRegistry registry = PartitionerRegistry::WithBuiltins();
  registry.Register("all_at_zero", [](const Dataset& d, const PartitionOptions&) {
    return Result<std::vector<uint32_t>>(std::vector<uint32_t>(d.users.size(), 0));
  });
  Result<Partitioner> p = registry.Find("all_at_zero");
  ASSERT_TRUE(p.ok());
  const Dataset d = GroupedDataset(3, 1);
  EXPECT_EQ((*p)(d, {}).value(), (std::vector<uint32_t>{0, 0, 0}));
}

TEST(Partitioners, SplitBySiteKeepsInputOrderPerSite) {
  const std::vector<Rating> ratings = {{0, 0, 1, 1}, {1, 0, 2, 2}, {2, 1, 3, 3},
                                       {0, 1, 4, 4}, {1, 2, 5, 5}, {2, 2, 1, 6}};
  const std::vector<uint32_t> site_of_user = {1, 0, 1};
  const auto by_site = SplitBySite(ratings, site_of_user, 3);
  ASSERT_EQ(by_site.size(), 3u);
  EXPECT_EQ(by_site[0], (std::vector<Rating>{{1, 0, 2, 2}, {1, 2, 5, 5}}));
  EXPECT_EQ(by_site[1],
            (std::vector<Rating>{{0, 0, 1, 1}, {2, 1, 3, 3}, {0, 1, 4, 4}, {2, 2, 1, 6}}));
  EXPECT_TRUE(by_site[2].empty());
}

}  // namespace
}  // namespace fedrec
