#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "data/partition.h"
#include "data/side_features.h"
#include "data/synthetic.h"

namespace fedrec {
namespace {

// A table with one categorical field `name` (vocabulary `vocabulary`) whose
// row r holds ids[r].
FeatureTable OneField(const std::string& name, uint32_t vocabulary,
                      const std::vector<std::vector<uint32_t>>& ids) {
  FeatureTable t;
  FeatureField f;
  f.name = name;
  f.vocabulary = vocabulary;
  t.fields.push_back(f);
  t.rows = static_cast<uint32_t>(ids.size());
  t.offsets.push_back(0);
  for (const auto& row : ids) {
    t.ids.insert(t.ids.end(), row.begin(), row.end());
    t.offsets.push_back(static_cast<uint32_t>(t.ids.size()));
  }
  return t;
}

// Items 0..5 with main genres 0, 1, 2, 2, 3, none; users rate:
//   u0: items 0, 0', 1   -> genre 0 (2 of 3)
//   u1: items 2, 3, 1    -> genre 2
//   u2: items 2, 4       -> tie 2/3 -> genre 2 (lower id)
//   u3: items 4          -> genre 3
//   u4: item 5 only      -> no genre
//   u5: no train ratings -> no genre
Dataset GenreDataset() {
  Dataset d;
  for (int u = 0; u < 6; ++u) d.users.Intern(std::to_string(u).append("u"));
  for (int i = 0; i < 7; ++i) d.items.Intern(std::to_string(i).append("i"));
  d.item_features = OneField("genres", 4, {{0, 2}, {1}, {2, 0}, {2}, {3, 1}, {}, {0}});
  auto rate = [&d](uint32_t u, uint32_t i) { d.train.push_back(Rating{u, i, 4, 0}); };
  rate(0, 0), rate(0, 6), rate(0, 1);
  rate(1, 2), rate(1, 3), rate(1, 1);
  rate(2, 2), rate(2, 4);
  rate(3, 4);
  rate(4, 5);
  d.test.push_back(Rating{5, 0, 3, 0});
  return d;
}

TEST(GenrePartition, UsersGoToTheSiteOfTheirMostFrequentMainGenre) {
  const Dataset d = GenreDataset();
  PartitionOptions o;
  o.sites = 3;  // scenarios 0 (1 user), 2 (2 users), 3 (1 user): one site each
  Result<std::vector<uint32_t>> sites = PartitionByGenre(d, o);
  ASSERT_TRUE(sites.ok()) << sites.status().message();
  // Sites in increasing genre id: genre 0 -> 0, genre 2 -> 1, genre 3 -> 2;
  // users without a genre -> the last site.
  EXPECT_EQ(*sites, (std::vector<uint32_t>{0, 1, 1, 2, 2, 2}));
}

TEST(GenrePartition, FoldsTheLeastCommonGenresIntoTheLastSite) {
  const Dataset d = GenreDataset();
  PartitionOptions o;
  o.sites = 2;  // genre 2 (most users) keeps a site; 0 and 3 fold
  Result<std::vector<uint32_t>> sites = PartitionByGenre(d, o);
  ASSERT_TRUE(sites.ok()) << sites.status().message();
  EXPECT_EQ(*sites, (std::vector<uint32_t>{1, 0, 0, 1, 1, 1}));
  o.sites = 1;
  sites = PartitionByGenre(d, o);
  ASSERT_TRUE(sites.ok());
  EXPECT_EQ(*sites, std::vector<uint32_t>(6, 0));
}

TEST(GenrePartition, MoreSitesThanGenresOrNoGenresAreErrors) {
  Dataset d = GenreDataset();
  PartitionOptions o;
  o.sites = 4;
  Result<std::vector<uint32_t>> too_many = PartitionByGenre(d, o);
  ASSERT_FALSE(too_many.ok());
  EXPECT_NE(too_many.status().message().find("3 non-empty scenarios"), std::string::npos)
      << too_many.status().message();
  EXPECT_NE(too_many.status().message().find("found 4 sites"), std::string::npos);
  d.item_features = FeatureTable();
  o.sites = 2;
  Result<std::vector<uint32_t>> none = PartitionByGenre(d, o);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.status().message().find("needs the categorical item feature \"genres\""),
            std::string::npos)
      << none.status().message();
  EXPECT_NE(none.status().message().find("no item features"), std::string::npos);
  // Registered under its name.
  EXPECT_TRUE(PartitionerRegistry::WithBuiltins().Find("genre").ok());
}

TEST(AgeGroupPartition, EachAgeGroupIsASite) {
  Dataset d;
  for (int u = 0; u < 6; ++u) d.users.Intern(std::to_string(u));
  d.items.Intern("x");
  for (uint32_t u = 0; u < 6; ++u) d.train.push_back(Rating{u, 0, 3, 0});
  // Groups 1, 4, 1, 6, missing, 4.
  d.user_features = OneField("age_group", 7, {{1}, {4}, {1}, {6}, {}, {4}});
  PartitionOptions o;
  o.sites = 3;
  Result<std::vector<uint32_t>> sites = PartitionByAgeGroup(d, o);
  ASSERT_TRUE(sites.ok()) << sites.status().message();
  EXPECT_EQ(*sites, (std::vector<uint32_t>{0, 1, 0, 2, 2, 1}));
  o.sites = 4;
  EXPECT_FALSE(PartitionByAgeGroup(d, o).ok());
  d.user_features = OneField("gender", 2, {{0}, {1}, {0}, {1}, {0}, {1}});
  o.sites = 2;
  Result<std::vector<uint32_t>> wrong = PartitionByAgeGroup(d, o);
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.status().message().find("\"age_group\""), std::string::npos);
  EXPECT_NE(wrong.status().message().find("no such field"), std::string::npos);
  EXPECT_TRUE(PartitionerRegistry::WithBuiltins().Find("age_group").ok());
}

TEST(SyntheticSideFeatures, DeriveFromTheTrueFactorsDeterministically) {
  SyntheticOptions o;
  o.users = 200;
  o.items = 150;
  o.ratings = 4000;
  o.rank = 8;
  const SyntheticData d = GenerateSynthetic(o);
  FeatureTable users, items, users2, items2;
  MakeSyntheticSideFeatures(d, o, &users, &items);
  MakeSyntheticSideFeatures(GenerateSynthetic(o), o, &users2, &items2);
  EXPECT_EQ(users.ids, users2.ids);
  EXPECT_EQ(users.numeric, users2.numeric);
  EXPECT_EQ(items.ids, items2.ids);
  ASSERT_EQ(users.rows, 200u);
  ASSERT_EQ(items.rows, 150u);
  ASSERT_EQ(CategoricalFieldIndex(users, "cluster"), 0);
  ASSERT_EQ(CategoricalFieldIndex(users, "age_group"), 1);
  ASSERT_EQ(CategoricalFieldIndex(items, "genres"), 0);
  EXPECT_EQ(users.fields[0].vocabulary, 8u);
  EXPECT_EQ(users.numerics(), 1u);
  std::set<uint32_t> clusters;
  for (uint32_t u = 0; u < users.rows; ++u) {
    const float* p = d.user_factors.data() + static_cast<size_t>(u) * 8;
    const uint32_t c = users.Ids(u, 0)[0];
    clusters.insert(c);
    for (uint32_t b = 0; b < 3; ++b) EXPECT_EQ((c >> b) & 1u, p[b] > 0 ? 1u : 0u);
    const uint32_t g = users.Ids(u, 1)[0];
    EXPECT_EQ(g, static_cast<uint32_t>(std::max_element(p, p + 7) - p));
    EXPECT_GE(users.Numeric(u)[0], 0.0f);
    EXPECT_LE(users.Numeric(u)[0], 1.0f);
  }
  EXPECT_GE(clusters.size(), 6u);  // the sign patterns spread over the clusters
  size_t with_genres = 0;
  for (uint32_t i = 0; i < items.rows; ++i) {
    const auto genres = items.Ids(i, 0);
    if (genres.empty()) continue;
    ++with_genres;
    const float* q = d.item_factors.data() + static_cast<size_t>(i) * 8;
    // The main genre is the largest factor among those over the threshold.
    EXPECT_EQ(genres[0], static_cast<uint32_t>(std::max_element(q, q + 8) - q));
    for (uint32_t g : genres) EXPECT_GT(q[g], o.factor_std / 2);
  }
  EXPECT_GT(with_genres, items.rows / 2);
  // Usable by the scenario partitioners.
  Dataset data = d.dataset;
  data.user_features = users;
  data.item_features = items;
  PartitionOptions po;
  po.sites = 4;
  EXPECT_TRUE(PartitionByGenre(data, po).ok());
  EXPECT_TRUE(PartitionByAgeGroup(data, po).ok());
}

}  // namespace
}  // namespace fedrec
