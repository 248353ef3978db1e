// Checks made when data is loaded: byte-order marks, MovieLens IDs,
// repeated (user, item) rows (data.duplicates), train/test overlap
// (data.allow_overlap, data.test = data.train) and the dataset summary.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "apps/config.h"
#include "apps/job.h"
#include "data/rating_checks.h"
#include "data/readers.h"
#include "data/side_features.h"
#include "data/synthetic.h"
#include "tests/data/temp_files.h"

namespace fedrec {
namespace {

namespace fs = std::filesystem;

const std::string kBom = "\xEF\xBB\xBF";

std::string WriteTemp(const std::string& name, const std::string& contents) {
  return testing::WriteTempFile("data_checks", name, contents);
}

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

#define EXPECT_MESSAGE(status, ...)                                         \
  do {                                                                      \
    const ::fedrec::Status s_ = (status);                                   \
    EXPECT_FALSE(s_.ok());                                                  \
    for (const std::string& part : std::vector<std::string>{__VA_ARGS__}) { \
      EXPECT_TRUE(Contains(s_.message(), part))                             \
          << "message: " << s_.message() << "\nmissing: " << part;          \
    }                                                                       \
  } while (0)

struct Loaded {
  IdMap users, items;
  std::vector<Rating> ratings;
  std::vector<uint32_t> lines;
};

Status Read(const std::string& path, RatingFormat format, Loaded* l) {
  ReadOptions options;
  options.format = format;
  return ReadRatings(path, options, &l->users, &l->items, &l->ratings, &l->lines);
}

// ---------------------------------------------------------------------------
// Byte-order marks.

struct BomCase {
  const char* name;
  RatingFormat format;
  std::string contents;
};

TEST(DataChecks, ByteOrderMarkIsStrippedInEveryRatingFormat) {
  const std::vector<BomCase> cases = {
      {"ml100k", RatingFormat::kMl100k, "1\t10\t4\t100\n2\t10\t3\t101\n1\t11\t5\t102\n"},
      {"ml1m", RatingFormat::kMl1m, "1::10::4::100\n2::10::3::101\n1::11::5::102\n"},
      {"mlcsv", RatingFormat::kMlCsv,
       "userId,movieId,rating,timestamp\n1,10,4.0,100\n2,10,3.5,101\n1,11,5.0,102\n"},
      {"csv", RatingFormat::kCsv, "u1,i1,4\nu2,i1,3\nu1,i2,5\n"},
      {"implicit", RatingFormat::kImplicit, "u1,i1\nu2,i1\nu1,i2\n"},
  };
  for (const BomCase& c : cases) {
    for (RatingFormat format : {c.format, RatingFormat::kAuto}) {
      SCOPED_TRACE(std::string(c.name) + " read as " + RatingFormatName(format));
      Loaded plain, marked;
      ASSERT_TRUE(Read(WriteTemp(std::string(c.name) + ".txt", c.contents), format, &plain).ok());
      const Status s =
          Read(WriteTemp(std::string(c.name) + "_bom.txt", kBom + c.contents), format, &marked);
      ASSERT_TRUE(s.ok()) << s.ToString();
      EXPECT_EQ(marked.users.size(), plain.users.size());
      EXPECT_EQ(marked.items.size(), plain.items.size());
      EXPECT_EQ(marked.ratings, plain.ratings);
      EXPECT_EQ(marked.users.Raw(0), plain.users.Raw(0));
      EXPECT_EQ(marked.lines, plain.lines);
    }
  }
}

TEST(DataChecks, ByteOrderMarkIsStrippedInFeatureFiles) {
  FeatureReadOptions options;
  options.entity = FeatureEntity::kUsers;
  options.schema = "id,age:numeric:0:100";
  const std::string contents = "id,age\nu1,20\nu2,30\n";
  Result<FeatureFile> plain = ReadFeatureFile(WriteTemp("users.csv", contents), options);
  Result<FeatureFile> marked =
      ReadFeatureFile(WriteTemp("users_bom.csv", kBom + contents), options);
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  ASSERT_TRUE(marked.ok()) << marked.status().ToString();
  ASSERT_EQ(marked->ids.size(), plain->ids.size());
  EXPECT_EQ(marked->ids.Raw(0), "u1");
}

TEST(DataChecks, ByteOrderMarkIsStrippedInTheItemUniverse) {
  Result<std::vector<std::string>> ids =
      ReadItemUniverse(WriteTemp("universe.txt", kBom + "i1\ni2\n"));
  ASSERT_TRUE(ids.ok()) << ids.status().ToString();
  EXPECT_EQ(*ids, (std::vector<std::string>{"i1", "i2"}));
}

// ---------------------------------------------------------------------------
// MovieLens IDs.

TEST(DataChecks, MovieLensFormatsRejectIdsThatAreNotPositiveIntegers) {
  struct Case {
    RatingFormat format;
    std::string contents;
    std::string field;  // "user" or "item"
    std::string found;
  };
  const std::vector<Case> cases = {
      {RatingFormat::kMl100k, "1\t10\t4\t100\n-3\t10\t3\t101\n", "user", "\"-3\""},
      {RatingFormat::kMl100k, "1\t10\t4\t100\n2\tabc\t3\t101\n", "item", "\"abc\""},
      {RatingFormat::kMl1m, "1::10::4::100\n007::10::3::101\n", "user", "\"007\""},
      {RatingFormat::kMl1m, "1::10::4::100\n0::10::3::101\n", "user", "\"0\""},
      {RatingFormat::kMlCsv, "userId,movieId,rating,timestamp\n1,10,4.0,1\nu2,10,3.0,2\n", "user",
       "\"u2\""},
      {RatingFormat::kMlCsv, "userId,movieId,rating,timestamp\n1,10,4.0,1\n2,+10,3.0,2\n", "item",
       "\"+10\""},
  };
  int k = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.contents);
    const std::string path = WriteTemp("ids" + std::to_string(k++) + ".txt", c.contents);
    const uint64_t line = c.format == RatingFormat::kMlCsv ? 3 : 2;
    Loaded l;
    EXPECT_MESSAGE(Read(path, c.format, &l), path + ":" + std::to_string(line),
                   "expected a positive integer " + c.field + " ID", "found " + c.found);
    EXPECT_EQ(l.users.size(), 0u);
    EXPECT_TRUE(l.ratings.empty());
  }
}

TEST(DataChecks, CsvFormatsKeepStringIds) {
  Loaded l;
  const Status s = Read(WriteTemp("strings.csv", "-3,007,4\nabc,x y,5\n"), RatingFormat::kCsv, &l);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(l.users.Raw(0), "-3");
  EXPECT_EQ(l.items.Raw(0), "007");
  EXPECT_EQ(l.lines, (std::vector<uint32_t>{1, 2}));
}

// ---------------------------------------------------------------------------
// Duplicates.

// Reads `files` (csv) as one role of the data, with origins.
struct Role {
  IdMap users, items;
  std::vector<Rating> ratings;
  RatingOrigins origins;
};

void ReadRole(const std::vector<std::string>& paths, Role* role) {
  ReadOptions options;
  options.format = RatingFormat::kCsv;
  for (const std::string& path : paths) {
    const Status s = ReadRatings(path, options, &role->users, &role->items, &role->ratings,
                                 &role->origins.lines);
    ASSERT_TRUE(s.ok()) << s.ToString();
    role->origins.AddFile(path, role->ratings.size());
  }
}

TEST(DataChecks, DuplicatesErrorNamesBothLines) {
  const std::string path = WriteTemp("dup.csv", "a,x,1,10\nb,x,2,11\na,y,3,12\n\na,x,5,13\n");
  Role role;
  ReadRole({path}, &role);
  Result<size_t> r = ResolveDuplicates(DuplicatePolicy::kError, role.users, role.items,
                                       "training data", &role.ratings, &role.origins);
  EXPECT_MESSAGE(r.status(), "training data", "user \"a\", item \"x\"", path + ":1", path + ":5",
                 "1 repeated row");
  EXPECT_EQ(role.ratings.size(), 4u);  // unchanged
}

TEST(DataChecks, DuplicatesAcrossFilesNameBothFiles) {
  const std::string site0 = WriteTemp("site0.csv", "a,x,1\nb,y,2\n");
  const std::string site1 = WriteTemp("site1.csv", "c,z,3\nb,y,4\n");
  Role role;
  ReadRole({site0, site1}, &role);
  Result<size_t> r = ResolveDuplicates(DuplicatePolicy::kError, role.users, role.items,
                                       "training data", &role.ratings, &role.origins);
  EXPECT_MESSAGE(r.status(), "user \"b\", item \"y\"", site0 + ":2", site1 + ":2");
}

TEST(DataChecks, DuplicatesLastKeepsTheRowReadLast) {
  const std::string a = WriteTemp("last_a.csv", "a,x,1,10\nb,x,2,11\na,x,4,5\n");
  const std::string b = WriteTemp("last_b.csv", "c,y,3,1\na,x,5,2\n");
  Role role;
  ReadRole({a, b}, &role);
  Result<size_t> r = ResolveDuplicates(DuplicatePolicy::kLast, role.users, role.items, "data",
                                       &role.ratings, &role.origins);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, 2u);
  const uint32_t ua = 0, ub = 1, uc = 2, ix = 0, iy = 1;
  EXPECT_EQ(role.ratings,
            (std::vector<Rating>{{ub, ix, 2.0f, 11}, {uc, iy, 3.0f, 1}, {ua, ix, 5.0f, 2}}));
  // The origins follow: b's line 1 is now the second file's first rating.
  EXPECT_EQ(role.origins.Where(0), a + ":2");
  EXPECT_EQ(role.origins.Where(1), b + ":1");
  EXPECT_EQ(role.origins.Where(2), b + ":2");
}

TEST(DataChecks, DuplicatesMeanAveragesValuesAndKeepsTheLatestTimestamp) {
  const std::string path =
      WriteTemp("mean.csv", "a,x,1,30\nb,x,2,11\na,x,4,50\na,x,4,40\nb,y,5,7\n");
  Role role;
  ReadRole({path}, &role);
  Result<size_t> r = ResolveDuplicates(DuplicatePolicy::kMean, role.users, role.items, "data",
                                       &role.ratings, &role.origins);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, 2u);
  ASSERT_EQ(role.ratings.size(), 3u);
  EXPECT_EQ(role.ratings[0], (Rating{1, 0, 2.0f, 11}));
  EXPECT_EQ(role.ratings[1], (Rating{0, 0, 3.0f, 50}));  // (1 + 4 + 4) / 3, at the last row
  EXPECT_EQ(role.ratings[2], (Rating{1, 1, 5.0f, 7}));
  EXPECT_EQ(role.origins.Where(1), path + ":4");
}

TEST(DataChecks, SyntheticDataHasNoDuplicates) {
  SyntheticOptions options;
  options.users = 60;
  options.items = 40;
  options.ratings = 1000;  // dense: many repeated draws to reject
  SyntheticData data = GenerateSynthetic(options);
  std::vector<Rating> ratings = data.dataset.train;
  Result<size_t> r = ResolveDuplicates(DuplicatePolicy::kError, data.dataset.users,
                                       data.dataset.items, "synthetic data", &ratings, nullptr);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
}

// ---------------------------------------------------------------------------
// Overlap, through LoadDataset.

Config FileConfig(const std::string& train, const std::string& test) {
  Config c;
  c.data.format = "csv";
  c.data.train = train;
  c.data.test = test;
  return c;
}

TEST(DataChecks, TrainTestOverlapIsRefusedNamingThePairAndCount) {
  const std::string train = WriteTemp("ov_train.csv", "a,x,1\nb,y,2\nc,z,3\nd,w,4\n");
  const std::string test = WriteTemp("ov_test.csv", "e,x,1\nc,z,3\nd,w,5\n");
  Result<Dataset> d = LoadDataset(FileConfig(train, test));
  EXPECT_MESSAGE(d.status(), "2 (user, item) pairs", "user \"c\", item \"z\"", train + ":3",
                 test + ":2", "data.allow_overlap");
}

TEST(DataChecks, TrainTestOverlapIsKeptWithAllowOverlap) {
  const std::string train = WriteTemp("ok_train.csv", "a,x,1\nb,y,2\nc,z,3\n");
  const std::string test = WriteTemp("ok_test.csv", "c,z,3\n");
  Config c = FileConfig(train, test);
  c.data.allow_overlap = true;
  Result<Dataset> d = LoadDataset(c);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->train.size(), 3u);
  EXPECT_EQ(d->test.size(), 1u);
}

TEST(DataChecks, TestFileEqualToTrainFileIsRefused) {
  const std::string train = WriteTemp("same.csv", "a,x,1\nb,y,2\n");
  EXPECT_MESSAGE(LoadDataset(FileConfig(train, train)).status(), "data.test",
                 "other than data.train");
  // Another spelling of the same file.
  const std::string other = (fs::path(train).parent_path() / "." / "same.csv").string();
  EXPECT_MESSAGE(LoadDataset(FileConfig(train, other)).status(), "data.test");
}

TEST(DataChecks, LoadDatasetAppliesTheDuplicatePolicyBeforeSplitting) {
  const std::string train =
      WriteTemp("split_dup.csv", "a,x,1\nb,y,2\na,x,3\nc,z,4\nd,w,5\ne,v,1\n");
  Config c = FileConfig(train, "");
  Result<Dataset> refused = LoadDataset(c);
  EXPECT_MESSAGE(refused.status(), "user \"a\", item \"x\"", train + ":1", train + ":3",
                 "data.duplicates");
  c.data.duplicates = "mean";
  Result<Dataset> d = LoadDataset(c);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->train.size() + d->test.size(), 5u);
  Result<Overlap> overlap = FindOverlap(d->train, d->test);
  ASSERT_TRUE(overlap.ok()) << overlap.status().ToString();
  EXPECT_EQ(overlap->pairs, 0u);
}

TEST(DataChecks, DuplicatesInTheTestFileFollowThePolicy) {
  const std::string train = WriteTemp("t_train.csv", "a,x,1\n");
  const std::string test = WriteTemp("t_test.csv", "b,y,2\nb,y,4\n");
  Config c = FileConfig(train, test);
  EXPECT_MESSAGE(LoadDataset(c).status(), "test data", test + ":1", test + ":2");
  c.data.duplicates = "last";
  Result<Dataset> d = LoadDataset(c);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  ASSERT_EQ(d->test.size(), 1u);
  EXPECT_EQ(d->test[0].value, 4.0f);
}

TEST(DataChecks, SiteFilesAreCheckedSiteBySite) {
  const std::string dir = fs::path(WriteTemp("sites_dummy", "")).parent_path().string();
  // The same raw user at two sites is two people: (a, x) at both is fine.
  WriteTemp("s_train0.csv", "a,x,1\nb,y,2\n");
  WriteTemp("s_train1.csv", "c,z,3\na,x,4\nc,z,5\n");
  Config c;
  c.data.format = "csv";
  c.federation.partition = "files";
  c.federation.sites = 2;
  c.data.site_train = dir + "/s_train{site}.csv";
  EXPECT_MESSAGE(LoadFederatedData(c).status(), "site 1", "user \"c\", item \"z\"",
                 "s_train1.csv:1", "s_train1.csv:3");
  EXPECT_MESSAGE(LoadLocalSite(c, 1).status(), "site 1", "s_train1.csv:1", "s_train1.csv:3");
  c.data.duplicates = "last";
  c.data.test_fraction = 0.0;
  Result<FederatedData> d = LoadFederatedData(c);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->sites[0].train.size(), 2u);
  EXPECT_EQ(d->sites[1].train.size(), 2u);
  // With test files: a pair in a site's train and test files overlaps; a
  // pair of site 0's training file in site 1's test file does not.
  WriteTemp("s_test0.csv", "b,z,2\n");
  WriteTemp("s_test1.csv", "b,y,2\nc,z,1\n");
  c.data.site_test = dir + "/s_test{site}.csv";
  EXPECT_MESSAGE(LoadFederatedData(c).status(), "site 1", "1 (user, item) pair",
                 "user \"c\", item \"z\"", "s_train1.csv:3", "s_test1.csv:2");
  c.data.allow_overlap = true;
  Result<LocalSite> site = LoadLocalSite(c, 1);
  ASSERT_TRUE(site.ok()) << site.status().ToString();
  EXPECT_EQ(site->data.train.size(), 2u);
  EXPECT_EQ(site->data.test.size(), 2u);
}

TEST(DataChecks, ConfigRejectsAnUnknownDuplicatePolicy) {
  Config c;
  c.data.duplicates = "first";
  EXPECT_MESSAGE(ValidateConfig(c), "data.duplicates", "error | last | mean", "\"first\"");
}

// ---------------------------------------------------------------------------
// Dataset summary.

TEST(DataChecks, DatasetStatsCountRatingsAndSiteSizes) {
  Dataset d;
  for (const char* u : {"a", "b", "c", "d"}) d.users.Intern(u);
  for (const char* i : {"x", "y", "z", "w", "v"}) d.items.Intern(i);
  d.train = {{0, 0, 1, 0}, {1, 1, 1, 0}, {2, 2, 1, 0}, {3, 3, 1, 0}, {0, 4, 1, 0}};
  d.test = {{1, 0, 1, 0}, {2, 0, 1, 0}, {3, 0, 1, 0}};
  std::vector<SiteData> sites(4);
  sites[0].train.resize(7);
  sites[1].train.resize(2);
  sites[1].test.resize(1);
  sites[2].train.resize(10);
  sites[3].test.resize(4);
  const DatasetStats stats = ComputeDatasetStats(d, sites);
  EXPECT_EQ(stats.users, 4u);
  EXPECT_EQ(stats.items, 5u);
  EXPECT_EQ(stats.train, 5u);
  EXPECT_EQ(stats.test, 3u);
  EXPECT_DOUBLE_EQ(stats.density, 8.0 / 20.0);
  EXPECT_EQ(stats.sites, 4u);
  EXPECT_EQ(stats.site_ratings_min, 3u);
  EXPECT_DOUBLE_EQ(stats.site_ratings_median, 5.5);  // sizes 3, 4, 7, 10
  EXPECT_EQ(stats.site_ratings_max, 10u);
  const nlohmann::json j = DatasetStatsJson(stats);
  EXPECT_EQ(j["users"], 4);
  EXPECT_EQ(j["train"], 5);
  EXPECT_EQ(j["site_ratings"]["median"], 5.5);
  EXPECT_EQ(j["site_ratings"]["max"], 10);
  sites.pop_back();  // odd count: the middle size
  EXPECT_DOUBLE_EQ(ComputeDatasetStats(d, sites).site_ratings_median, 7.0);
  EXPECT_FALSE(DatasetStatsJson(ComputeDatasetStats(d)).contains("site_ratings"));
  EXPECT_TRUE(Contains(DatasetStatsLine(stats), "4 users, 5 items, 5 train and 3 test ratings"));
}

TEST(DatasetStats, UsersPerSiteListsFewSitesAndSummarizesMany) {
  std::vector<std::vector<uint32_t>> users = {{0, 1, 2}, {3}, {4, 5}};
  EXPECT_EQ(UsersPerSiteLine(users), "3, 1, 2");
  users.assign(100000, {7});
  users[5] = {1, 2, 3, 4};
  users[9] = {};
  EXPECT_EQ(UsersPerSiteLine(users), "min 0 median 1 max 4 over 100000 sites");
}

}  // namespace
}  // namespace fedrec
