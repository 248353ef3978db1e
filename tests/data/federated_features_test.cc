// Side features and cold flags as the apps hand them to sites (LoadFederatedData,
// LoadLocalSite, AdoptItemCatalogue) and config validation of their keys.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "apps/config.h"
#include "apps/job.h"
#include "tests/data/temp_files.h"

namespace fedrec {
namespace {

namespace fs = std::filesystem;

std::string WriteFile(const std::string& name, const std::string& contents) {
  return testing::WriteTempFile("federated_features", name, contents);
}

Config SmallSynthetic() {
  Config c;
  c.data.synthetic.users = 200;
  c.data.synthetic.items = 150;
  c.data.synthetic.ratings = 5000;
  c.data.synthetic.side_features = true;
  c.federation.sites = 4;
  return c;
}

// Row r of `a` equals row s of `b`: the same ids per field and numerics.
void ExpectSameRow(const FeatureTable& a, uint32_t r, const FeatureTable& b, uint32_t s,
                   const std::string& what) {
  ASSERT_EQ(a.categorical(), b.categorical()) << what;
  for (uint32_t c = 0; c < a.categorical(); ++c) {
    const auto x = a.Ids(r, c), y = b.Ids(s, c);
    EXPECT_EQ(std::vector<uint32_t>(x.begin(), x.end()), std::vector<uint32_t>(y.begin(), y.end()))
        << what << " field " << c;
  }
  const auto x = a.Numeric(r), y = b.Numeric(s);
  EXPECT_EQ(std::vector<float>(x.begin(), x.end()), std::vector<float>(y.begin(), y.end())) << what;
}

TEST(FederatedFeatures, EachSitesFeatureRowsAndColdFlagsFollowItsLocalUsers) {
  Config c = SmallSynthetic();
  c.data.cold_start.share = 0.3;
  c.data.cold_start.ratings = 2;
  Result<FederatedData> data = LoadFederatedData(c);
  ASSERT_TRUE(data.ok()) << data.status().message();
  const Dataset& d = data->dataset;
  ASSERT_EQ(d.user_features.rows, d.users.size());
  ASSERT_EQ(d.cold_users.size(), d.users.size());
  ASSERT_NE(data->item_features, nullptr);
  EXPECT_EQ(data->item_features->rows, d.items.size());
  size_t cold = 0;
  for (size_t s = 0; s < data->sites.size(); ++s) {
    const SiteData& site = data->sites[s];
    const auto& ids = data->site_user_ids[s];
    ASSERT_EQ(site.user_features.rows, ids.size());
    ASSERT_EQ(site.cold_users.size(), ids.size());
    std::vector<uint32_t> train_count(ids.size(), 0);
    for (const Rating& r : site.train) ++train_count[r.user];
    for (uint32_t u = 0; u < ids.size(); ++u) {
      const int64_t g = d.users.Find(ids[u]);
      ASSERT_GE(g, 0);
      ExpectSameRow(site.user_features, u, d.user_features, static_cast<uint32_t>(g),
                    "site " + std::to_string(s) + " user " + ids[u]);
      EXPECT_EQ(site.cold_users[u], d.cold_users[static_cast<size_t>(g)]);
      if (site.cold_users[u]) {
        ++cold;
        EXPECT_EQ(train_count[u], 2u) << ids[u];
      }
    }
  }
  EXPECT_GT(cold, 0u);
}

TEST(FederatedFeatures, ScenarioPartitionsRunOnSyntheticSideFeatures) {
  Config c = SmallSynthetic();
  for (const char* partition : {"genre", "age_group"}) {
    c.federation.partition = partition;
    ASSERT_TRUE(ValidateConfig(c).ok()) << ValidateConfig(c).message();
    Result<FederatedData> data = LoadFederatedData(c);
    ASSERT_TRUE(data.ok()) << partition << ": " << data.status().message();
    EXPECT_EQ(data->sites.size(), 4u);
    for (const SiteData& site : data->sites) EXPECT_FALSE(site.train.empty()) << partition;
  }
  c.federation.sites = 40;
  Result<FederatedData> too_many = LoadFederatedData(c);
  ASSERT_FALSE(too_many.ok());
  EXPECT_NE(too_many.status().message().find("found 40 sites"), std::string::npos)
      << too_many.status().message();
}

TEST(FederatedFeatures, PerSiteFilesGetTheirUsersRowsAndTheCatalogueOrderedItemTable) {
  const std::string site0 = WriteFile("site0.csv", "ua,i1,4\nua,i2,3\nub,i2,5\n");
  WriteFile("site1.csv", "uc,i3,2\nuc,i1,4\nud,i4,1\n");
  Config c;
  c.federation.partition = "files";
  c.federation.sites = 2;
  c.security.aggregation = "none";  // two sites: a sum would reveal each
  c.data.format = "csv";
  c.data.test_fraction = 0.0;
  c.data.site_train = site0.substr(0, site0.rfind('/')) + "/site{site}.csv";
  c.data.user_features = WriteFile("users.csv",
                                   "id,group\nud,y\nua,x\nuc,x\nzz,y\n");  // zz: no ratings
  c.data.user_schema = "id,group:category:x|y";
  c.data.item_features = WriteFile("items.csv", "i4,2000,b\ni1,1990,a|b\ni2,,\n");  // no i3
  c.data.item_schema = "id,year:numeric:1900:2030,genres:multi:|:category:a|b";
  ASSERT_TRUE(ValidateConfig(c).ok()) << ValidateConfig(c).message();
  Result<FederatedData> data = LoadFederatedData(c);
  ASSERT_TRUE(data.ok()) << data.status().message();
  // Site 0's users ua, ub: ua in group x, ub without a row (missing).
  const SiteData& s0 = data->sites[0];
  ASSERT_EQ(data->site_user_ids[0], (std::vector<std::string>{"ua", "ub"}));
  ASSERT_EQ(s0.user_features.rows, 2u);
  EXPECT_EQ(s0.user_features.Ids(0, 0)[0], 0u);
  EXPECT_TRUE(s0.user_features.Ids(1, 0).empty());
  const SiteData& s1 = data->sites[1];
  ASSERT_EQ(data->site_user_ids[1], (std::vector<std::string>{"uc", "ud"}));
  EXPECT_EQ(s1.user_features.Ids(0, 0)[0], 0u);
  EXPECT_EQ(s1.user_features.Ids(1, 0)[0], 1u);

  // fedrec run: each site lays the shared item rows out by the catalogue,
  // including the items it does not hold, so every site's table is equal.
  const std::vector<std::string> catalogue = {"i4", "i3", "i2", "i1"};
  std::vector<std::shared_ptr<const FeatureTable>> tables;
  for (uint32_t s = 0; s < 2; ++s) {
    Result<LocalSite> local = LoadLocalSite(c, s);
    ASSERT_TRUE(local.ok()) << local.status().message();
    ASSERT_NE(local->item_features, nullptr);
    EXPECT_EQ(local->item_features->rows, local->item_ids.size());
    EXPECT_EQ(local->data.user_features.rows, local->user_ids.size());
    ASSERT_TRUE(AdoptItemCatalogue(catalogue, &*local).ok());
    tables.push_back(local->item_features);
  }
  const FeatureTable& t0 = *tables[0];
  ASSERT_EQ(t0.rows, 4u);
  EXPECT_EQ(t0.ids, tables[1]->ids);
  EXPECT_EQ(t0.offsets, tables[1]->offsets);
  EXPECT_EQ(t0.numeric, tables[1]->numeric);
  EXPECT_EQ(std::vector<uint32_t>(t0.Ids(0, 0).begin(), t0.Ids(0, 0).end()),
            std::vector<uint32_t>{1});                              // i4: b
  EXPECT_TRUE(t0.Ids(1, 0).empty());                                // i3: no row
  EXPECT_FLOAT_EQ(t0.Numeric(3)[0], (1990.0f - 1900.0f) / 130.0f);  // i1
}

TEST(FederatedFeatures, PerSiteUserFeatureFilesFollowTheSitePattern) {
  const std::string site0 = WriteFile("p_site0.csv", "ua,i1,4\nub,i2,5\n");
  WriteFile("p_site1.csv", "uc,i3,2\n");
  const std::string f0 = WriteFile("p_users0.csv", "ua,9\nub,1\n");
  WriteFile("p_users1.csv", "uc,5\n");
  const std::string dir = site0.substr(0, site0.rfind('/'));
  Config c;
  c.federation.partition = "files";
  c.federation.sites = 2;
  c.security.aggregation = "none";  // two sites: a sum would reveal each
  c.data.format = "csv";
  c.data.test_fraction = 0.0;
  c.data.site_train = dir + "/p_site{site}.csv";
  c.data.site_user_features = dir + "/p_users{site}.csv";
  c.data.user_schema = "id,score:numeric:0:10";
  c.data.features_format = "csv";
  ASSERT_TRUE(ValidateConfig(c).ok()) << ValidateConfig(c).message();
  Result<FederatedData> data = LoadFederatedData(c);
  ASSERT_TRUE(data.ok()) << data.status().message();
  EXPECT_FLOAT_EQ(data->sites[0].user_features.Numeric(0)[0], 0.9f);
  EXPECT_FLOAT_EQ(data->sites[0].user_features.Numeric(1)[0], 0.1f);
  EXPECT_FLOAT_EQ(data->sites[1].user_features.Numeric(0)[0], 0.5f);
  Result<LocalSite> local = LoadLocalSite(c, 1);
  ASSERT_TRUE(local.ok()) << local.status().message();
  EXPECT_FLOAT_EQ(local->data.user_features.Numeric(0)[0], 0.5f);
  // A malformed line names the file, the line and the config key.
  WriteFile("p_users1.csv", "uc,50\n");
  Result<FederatedData> bad = LoadFederatedData(c);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("p_users1.csv:1"), std::string::npos)
      << bad.status().message();
  EXPECT_NE(bad.status().message().find("data.site_user_features"), std::string::npos);
  (void)f0;
}

TEST(FederatedFeatures, ConfigValidationNamesTheFeatureKeys) {
  auto message = [](const Config& c) { return ValidateConfig(c).message(); };
  Config c;
  c.data.user_schema = "age:numeric:0:100";
  EXPECT_NE(message(c).find("config data.user_schema: expected an id column"), std::string::npos)
      << message(c);
  c = Config();
  c.data.features_format = "xml";
  EXPECT_NE(message(c).find("data.features_format"), std::string::npos);
  c = Config();
  c.data.features_format = "csv";
  c.data.item_features = "items.csv";
  EXPECT_NE(message(c).find("config data.item_schema"), std::string::npos) << message(c);
  c = Config();
  c.data.cold_start.share = 1.2;
  EXPECT_NE(message(c).find("config data.cold_start.share: expected a number in [0, 1]"),
            std::string::npos)
      << message(c);
  c = Config();
  c.data.cold_start.ratings = -1;
  EXPECT_NE(message(c).find("data.cold_start.ratings"), std::string::npos);
  c = Config();
  c.data.train = "ratings.csv";
  c.federation.partition = "genre";
  EXPECT_NE(message(c).find("config data.item_features"), std::string::npos) << message(c);
  c.federation.partition = "age_group";
  EXPECT_NE(message(c).find("config data.user_features"), std::string::npos) << message(c);
  c = Config();
  c.data.site_user_features = "u{site}.csv";
  EXPECT_NE(message(c).find("data.site_user_features"), std::string::npos);
  // The keys round-trip through the TOML the run directory keeps.
  c = Config();
  c.data.cold_start.share = 0.2;
  c.data.user_schema = "id,g:category:F|M";
  const std::string path = WriteFile("resolved.toml", ConfigToToml(c));
  Result<Config> back = LoadConfigFile(path);
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->data.cold_start.share, 0.2);
  EXPECT_EQ(back->data.user_schema, "id,g:category:F|M");
}

}  // namespace
}  // namespace fedrec
