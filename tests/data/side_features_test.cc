#include "data/side_features.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "data/ratings.h"

namespace fedrec {
namespace {

std::string Fixture(const std::string& name) {
  return std::string(FEDREC_FIXTURE_DIR) + "/features/" + name;
}

FeatureReadOptions Options(FeatureFormat format, FeatureEntity entity, std::string schema = "") {
  FeatureReadOptions o;
  o.format = format;
  o.entity = entity;
  o.schema = std::move(schema);
  return o;
}

std::vector<uint32_t> IdsOf(const FeatureFile& f, const std::string& raw, uint32_t field) {
  const int64_t row = f.ids.Find(raw);
  EXPECT_GE(row, 0) << raw;
  if (row < 0) return {};
  const auto ids = f.table.Ids(static_cast<uint32_t>(row), field);
  return {ids.begin(), ids.end()};
}

float NumericOf(const FeatureFile& f, const std::string& raw, uint32_t field) {
  const int64_t row = f.ids.Find(raw);
  EXPECT_GE(row, 0) << raw;
  return row < 0 ? -1.0f : f.table.Numeric(static_cast<uint32_t>(row))[field];
}

// The error of reading `path`, which must fail, and checks that it names
// `where` (path:line) and `what`.
void ExpectError(const std::string& path, const FeatureReadOptions& options, int line,
                 const std::string& what) {
  Result<FeatureFile> file = ReadFeatureFile(path, options);
  ASSERT_FALSE(file.ok()) << path;
  const std::string& m = file.status().message();
  EXPECT_NE(m.find(path + ":" + std::to_string(line) + ":"), std::string::npos) << m;
  EXPECT_NE(m.find(what), std::string::npos) << m;
}

TEST(Ml100kFeatures, UsersReadAgeGroupGenderAndOccupationFromTheSiblingList) {
  Result<FeatureFile> f = ReadFeatureFile(Fixture("ml100k/u.user"),
                                          Options(FeatureFormat::kMl100k, FeatureEntity::kUsers));
  ASSERT_TRUE(f.ok()) << f.status().message();
  ASSERT_EQ(f->table.rows, 3u);
  ASSERT_EQ(f->table.fields.size(), 4u);
  EXPECT_EQ(f->table.fields[0].name, "age");
  EXPECT_TRUE(f->table.fields[0].numeric);
  EXPECT_EQ(f->table.fields[1].name, "age_group");
  EXPECT_EQ(f->table.fields[1].vocabulary, 7u);
  EXPECT_EQ(f->table.fields[2].name, "gender");
  EXPECT_EQ(f->table.fields[3].name, "occupation");
  // u.occupation beside the file: baker, carpenter, sailor.
  EXPECT_EQ(f->table.fields[3].vocabulary, 3u);
  EXPECT_EQ(f->table.fields[3].labels[2], "sailor");
  EXPECT_FLOAT_EQ(NumericOf(*f, "u7", 0), 0.42f);
  EXPECT_EQ(IdsOf(*f, "u7", 0), std::vector<uint32_t>{3});  // 35-44
  EXPECT_EQ(IdsOf(*f, "u7", 1), std::vector<uint32_t>{0});  // F
  EXPECT_EQ(IdsOf(*f, "u7", 2), std::vector<uint32_t>{2});  // sailor
  EXPECT_EQ(IdsOf(*f, "u3", 0), std::vector<uint32_t>{0});  // <18
  EXPECT_EQ(IdsOf(*f, "u3", 1), std::vector<uint32_t>{1});  // M
  EXPECT_EQ(IdsOf(*f, "u9", 0), std::vector<uint32_t>{6});  // 56+
}

TEST(Ml100kFeatures, ItemsReadGenreFlagsAndReleaseYear) {
  Result<FeatureFile> f = ReadFeatureFile(Fixture("ml100k/u.item"),
                                          Options(FeatureFormat::kMl100k, FeatureEntity::kItems));
  ASSERT_TRUE(f.ok()) << f.status().message();
  ASSERT_EQ(f->table.fields.size(), 2u);
  EXPECT_EQ(f->table.fields[0].name, "genres");
  EXPECT_EQ(f->table.fields[0].vocabulary, 4u);  // u.genre beside the file
  EXPECT_EQ(f->table.fields[1].name, "year");
  EXPECT_EQ(IdsOf(*f, "i1", 0), (std::vector<uint32_t>{1, 3}));
  EXPECT_EQ(IdsOf(*f, "i2", 0), std::vector<uint32_t>{2});
  EXPECT_EQ(IdsOf(*f, "i3", 0), std::vector<uint32_t>{0});
  // The release date's year wins over the title's; without a date, the
  // title's; without either, missing (0).
  EXPECT_FLOAT_EQ(NumericOf(*f, "i1", 0), (1980.0f - 1900.0f) / 130.0f);
  EXPECT_FLOAT_EQ(NumericOf(*f, "i2", 0), (1999.0f - 1900.0f) / 130.0f);
  EXPECT_FLOAT_EQ(NumericOf(*f, "i3", 0), 0.0f);
}

TEST(Ml100kFeatures, WithoutSiblingListsUsesTheStandardVocabularies) {
  Result<FeatureFile> users = ReadFeatureFile(Fixture("ml100k_builtin/u.user"),
                                              Options(FeatureFormat::kAuto, FeatureEntity::kUsers));
  ASSERT_TRUE(users.ok()) << users.status().message();
  EXPECT_EQ(users->table.fields[3].vocabulary, 21u);
  EXPECT_EQ(users->table.fields[3].labels[IdsOf(*users, "5", 2).at(0)], "writer");
  EXPECT_EQ(users->table.fields[3].labels[IdsOf(*users, "6", 2).at(0)], "none");
  EXPECT_EQ(IdsOf(*users, "6", 0), std::vector<uint32_t>{1});  // 18-24
  Result<FeatureFile> items = ReadFeatureFile(Fixture("ml100k_builtin/u.item"),
                                              Options(FeatureFormat::kAuto, FeatureEntity::kItems));
  ASSERT_TRUE(items.ok()) << items.status().message();
  EXPECT_EQ(items->table.fields[0].vocabulary, 19u);
  EXPECT_EQ(items->table.fields[0].labels[IdsOf(*items, "10", 0).at(0)], "Drama");
}

TEST(Ml100kFeatures, MalformedLinesNameFileLineFieldAndFound) {
  const auto users = Options(FeatureFormat::kMl100k, FeatureEntity::kUsers);
  const auto items = Options(FeatureFormat::kMl100k, FeatureEntity::kItems);
  ExpectError(Fixture("ml100k_builtin/short_row.user"), users, 2,
              "expected 5 '|'-separated fields (id|age|gender|occupation|zip), found 4");
  ExpectError(Fixture("ml100k_builtin/bad_age.user"), users, 3, "field age, found \"old\"");
  ExpectError(Fixture("ml100k_builtin/bad_occupation.user"), users, 1,
              "occupation, found \"astronaut\"");
  ExpectError(Fixture("ml100k_builtin/bad_gender.user"), users, 1,
              "expected F or M in field gender, found \"X\"");
  ExpectError(Fixture("ml100k_builtin/duplicate.user"), users, 3,
              "found ID \"5\" again (first at line 1)");
  ExpectError(Fixture("ml100k_builtin/bad_flag.item"), items, 1,
              "expected 0 or 1 in genre flag 9 (field 14), found \"2\"");
  ExpectError(Fixture("ml100k_builtin/bad_date.item"), items, 1,
              "field release date, found \"sometime\"");
  // Read as items, a user file has the wrong field count.
  ExpectError(Fixture("ml100k_builtin/u.user"), items, 1, "expected 24 '|'-separated fields");
}

TEST(Ml1mFeatures, UsersDecodeAgeAndOccupationCodes) {
  Result<FeatureFile> f = ReadFeatureFile(Fixture("ml1m/users.dat"),
                                          Options(FeatureFormat::kAuto, FeatureEntity::kUsers));
  ASSERT_TRUE(f.ok()) << f.status().message();
  ASSERT_EQ(f->table.rows, 3u);
  EXPECT_EQ(f->table.fields[3].vocabulary, 21u);
  EXPECT_EQ(IdsOf(*f, "100", 0), std::vector<uint32_t>{2});  // code 25: 25-34
  EXPECT_EQ(IdsOf(*f, "101", 0), std::vector<uint32_t>{0});  // code 1: <18
  EXPECT_EQ(IdsOf(*f, "102", 0), std::vector<uint32_t>{6});  // code 56: 56+
  EXPECT_FLOAT_EQ(NumericOf(*f, "100", 0), 0.25f);
  EXPECT_EQ(IdsOf(*f, "100", 1), std::vector<uint32_t>{0});  // F
  EXPECT_EQ(f->table.fields[3].labels[IdsOf(*f, "100", 2).at(0)], "programmer");
  EXPECT_EQ(f->table.fields[3].labels[IdsOf(*f, "102", 2).at(0)], "writer");
}

TEST(Ml1mFeatures, MoviesKeepGenreOrderAndReadLatin1Titles) {
  Result<FeatureFile> f = ReadFeatureFile(Fixture("ml1m/movies.dat"),
                                          Options(FeatureFormat::kAuto, FeatureEntity::kItems));
  ASSERT_TRUE(f.ok()) << f.status().message();
  ASSERT_EQ(f->table.rows, 3u);
  const auto& labels = f->table.fields[0].labels;
  const std::vector<uint32_t> g200 = IdsOf(*f, "200", 0);
  ASSERT_EQ(g200.size(), 2u);
  EXPECT_EQ(labels[g200[0]], "Comedy");  // file order: the main genre first
  EXPECT_EQ(labels[g200[1]], "Drama");
  EXPECT_FLOAT_EQ(NumericOf(*f, "200", 0), (1994.0f - 1900.0f) / 130.0f);
  // A title holding "::": the genres follow the last one.
  EXPECT_EQ(labels[IdsOf(*f, "201", 0).at(0)], "Sci-Fi");
  EXPECT_FLOAT_EQ(NumericOf(*f, "201", 0), (2001.0f - 1900.0f) / 130.0f);
  EXPECT_TRUE(IdsOf(*f, "202", 0).empty());
  EXPECT_FLOAT_EQ(NumericOf(*f, "202", 0), 0.0f);
}

TEST(Ml1mFeatures, MalformedLinesNameFileLineFieldAndFound) {
  const auto users = Options(FeatureFormat::kMl1m, FeatureEntity::kUsers);
  const auto items = Options(FeatureFormat::kMl1m, FeatureEntity::kItems);
  ExpectError(Fixture("ml1m/bad_age.dat"), users, 1, "in field age, found \"26\"");
  ExpectError(Fixture("ml1m/bad_occupation.dat"), users, 2,
              "expected an occupation code 0..20 in field occupation, found \"21\"");
  ExpectError(Fixture("ml1m/short_row.dat"), users, 1, "expected 5 \"::\"-separated fields");
  ExpectError(Fixture("ml1m/bad_genre.dat"), items, 1, "field genres, found \"Polka\"");
  ExpectError(Fixture("ml1m/no_genres_field.dat"), items, 1,
              "expected 3 \"::\"-separated fields (MovieID::Title::Genres), found 1");
}

constexpr const char* kUserSchema =
    "user_id:id,age:numeric:0:100,gender:category:F|M,job:hash:16,tags:multi:;:category:x|y|z";
constexpr const char* kItemSchema = "id,year:numeric:1900:2030,genres:multi:|:hash:8";

TEST(CsvFeatures, SchemaDeclaresNumericCategoryHashAndMultiValuedFields) {
  Result<FeatureFile> f = ReadFeatureFile(
      Fixture("csv/users.csv"), Options(FeatureFormat::kAuto, FeatureEntity::kUsers, kUserSchema));
  ASSERT_TRUE(f.ok()) << f.status().message();
  ASSERT_EQ(f->table.rows, 3u);  // the header line is skipped
  ASSERT_EQ(f->table.fields.size(), 4u);
  EXPECT_EQ(f->table.categorical(), 3u);
  EXPECT_EQ(f->table.fields[2].vocabulary, 16u);
  EXPECT_TRUE(f->table.fields[2].labels.empty());
  EXPECT_FLOAT_EQ(NumericOf(*f, "ua", 0), 0.2f);
  EXPECT_FLOAT_EQ(NumericOf(*f, "uc", 0), 1.0f);
  EXPECT_EQ(IdsOf(*f, "ua", 0), std::vector<uint32_t>{0});
  EXPECT_EQ(IdsOf(*f, "ub", 0), std::vector<uint32_t>{1});
  // Hashed: the same bucket at every site, from the string alone.
  EXPECT_EQ(IdsOf(*f, "ua", 1),
            std::vector<uint32_t>{static_cast<uint32_t>(StableIdKey("chef") % 16)});
  EXPECT_EQ(IdsOf(*f, "ua", 2), (std::vector<uint32_t>{0, 1}));
  EXPECT_EQ(IdsOf(*f, "uc", 2), (std::vector<uint32_t>{1, 2}));  // y once
  // Empty fields are missing values.
  EXPECT_FLOAT_EQ(NumericOf(*f, "ub", 0), 0.0f);
  EXPECT_TRUE(IdsOf(*f, "ub", 1).empty());
  EXPECT_TRUE(IdsOf(*f, "ub", 2).empty());

  Result<FeatureFile> items = ReadFeatureFile(
      Fixture("csv/items.csv"), Options(FeatureFormat::kCsv, FeatureEntity::kItems, kItemSchema));
  ASSERT_TRUE(items.ok()) << items.status().message();
  EXPECT_EQ(items->table.rows, 2u);  // no header: the first line is a row
  EXPECT_EQ(IdsOf(*items, "ia", 0),
            (std::vector<uint32_t>{static_cast<uint32_t>(StableIdKey("drama") % 8),
                                   static_cast<uint32_t>(StableIdKey("comedy") % 8)}));
}

TEST(CsvFeatures, MalformedLinesNameFileLineFieldAndFound) {
  const auto users = Options(FeatureFormat::kCsv, FeatureEntity::kUsers, kUserSchema);
  ExpectError(Fixture("csv/bad_category.csv"), users, 2,
              "expected one of F|M in field gender (column 3), found \"Q\"");
  ExpectError(Fixture("csv/bad_number.csv"), users, 2,
              "expected a number in [0, 100] in field age (column 2), found \"200\"");
  ExpectError(Fixture("csv/wrong_count.csv"), users, 2,
              "expected 5 comma-separated fields (as the schema declares), found 3");
  ExpectError(Fixture("csv/empty_id.csv"), users, 1, "expected a non-empty ID");
  Result<FeatureFile> no_schema = ReadFeatureFile(
      Fixture("csv/users.csv"), Options(FeatureFormat::kCsv, FeatureEntity::kUsers));
  ASSERT_FALSE(no_schema.ok());
  EXPECT_NE(no_schema.status().message().find("expected a schema"), std::string::npos);
  Result<FeatureFile> missing = ReadFeatureFile(
      Fixture("csv/absent.csv"), Options(FeatureFormat::kCsv, FeatureEntity::kUsers, kUserSchema));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("does not exist"), std::string::npos);
}

TEST(FeatureSchema, RejectsMalformedSpecsSayingWhatWasExpected) {
  struct Case {
    const char* schema;
    const char* expected;
  };
  for (const Case& c : std::vector<Case>{
           {"age:numeric:0:100", "expected an id column"},
           {"id,id", "expected exactly one id column"},
           {"id,age:numeric:5:1", "LOW < HIGH"},
           {"id,age:numeric:0", "NAME:numeric:LOW:HIGH"},
           {"id,g:category:", "NAME:category:A|B"},
           {"id,g:category:A|A", "distinct non-empty labels"},
           {"id,h:hash:0", "bucket count >= 1"},
           {"id,m:multi:;;:hash:3", "SEP one character"},
           {"id,m:multi:;:numeric:0:1", "expected category or hash after multi:SEP"},
           {"id,x:float", "expected a kind"},
           {"id,a:skip,a:hash:4", "distinct column names"},
       }) {
    Result<FeatureSchema> s = ParseFeatureSchema(c.schema);
    ASSERT_FALSE(s.ok()) << c.schema;
    EXPECT_NE(s.status().message().find(c.expected), std::string::npos)
        << c.schema << ": " << s.status().message();
  }
  Result<FeatureSchema> ok = ParseFeatureSchema("a:skip, uid:id ,g:multi:/:category:p|q");
  ASSERT_TRUE(ok.ok()) << ok.status().message();
  EXPECT_EQ(ok->id_column, 1u);
  EXPECT_EQ(ok->columns[2].multi, '/');
  EXPECT_EQ(ok->columns[2].labels, (std::vector<std::string>{"p", "q"}));
}

TEST(FeatureFormatDetection, DetectsFromTheFirstLineOrTheSchema) {
  EXPECT_EQ(*DetectFeatureFormat(Fixture("ml100k/u.user"), {}), FeatureFormat::kMl100k);
  EXPECT_EQ(*DetectFeatureFormat(Fixture("ml1m/users.dat"), {}), FeatureFormat::kMl1m);
  FeatureReadOptions with_schema;
  with_schema.schema = kItemSchema;
  EXPECT_EQ(*DetectFeatureFormat(Fixture("csv/items.csv"), with_schema), FeatureFormat::kCsv);
  Result<FeatureFormat> csv_without_schema = DetectFeatureFormat(Fixture("csv/bad_number.csv"), {});
  ASSERT_FALSE(csv_without_schema.ok());
  EXPECT_NE(csv_without_schema.status().message().find("bad_number.csv:1"), std::string::npos);
  EXPECT_EQ(*ParseFeatureFormat("ml1m"), FeatureFormat::kMl1m);
  EXPECT_FALSE(ParseFeatureFormat("xml").ok());
}

TEST(IndexFeatures, LaysRowsOutByTheWantedIdsSkippingAndCountingTheRest) {
  Result<FeatureFile> f = ReadFeatureFile(Fixture("ml100k/u.user"),
                                          Options(FeatureFormat::kMl100k, FeatureEntity::kUsers));
  ASSERT_TRUE(f.ok());
  IdMap wanted;
  wanted.Intern("u9");
  wanted.Intern("nobody");
  wanted.Intern("u7");
  FeatureIndexStats stats;
  const FeatureTable t = IndexFeatures(*f, wanted, &stats);
  EXPECT_EQ(stats.unknown_rows, 1u);  // u3
  EXPECT_EQ(stats.missing_rows, 1u);  // nobody
  ASSERT_EQ(t.rows, 3u);
  EXPECT_EQ(t.offsets.size(), 3u * 3u + 1u);
  EXPECT_EQ(t.Ids(0, 0)[0], 6u);  // u9: 56+
  EXPECT_TRUE(t.Ids(1, 0).empty());
  EXPECT_TRUE(t.Ids(1, 2).empty());
  EXPECT_FLOAT_EQ(t.Numeric(1)[0], 0.0f);
  EXPECT_EQ(t.Ids(2, 2)[0], 2u);  // u7: sailor
  EXPECT_FLOAT_EQ(t.Numeric(2)[0], 0.42f);

  // The same rows by a list of raw IDs, then a selection of rows.
  const std::vector<std::string> order = {"u7", "u9"};
  const FeatureTable by_list = IndexFeatures(*f, order);
  const std::vector<uint32_t> rows = {2, 0};
  const FeatureTable selected = SelectFeatureRows(t, rows);
  EXPECT_EQ(by_list.ids, selected.ids);
  EXPECT_EQ(by_list.offsets, selected.offsets);
  EXPECT_EQ(by_list.numeric, selected.numeric);
  EXPECT_EQ(CategoricalFieldIndex(t, "occupation"), 2);
  EXPECT_EQ(CategoricalFieldIndex(t, "age"), -1);  // numeric
  EXPECT_TRUE(SelectFeatureRows(FeatureTable(), rows).empty());
}

TEST(AgeGroups, FollowTheMovieLensBoundaries) {
  EXPECT_EQ(AgeGroupOf(17), 0u);
  EXPECT_EQ(AgeGroupOf(18), 1u);
  EXPECT_EQ(AgeGroupOf(24), 1u);
  EXPECT_EQ(AgeGroupOf(25), 2u);
  EXPECT_EQ(AgeGroupOf(44), 3u);
  EXPECT_EQ(AgeGroupOf(45), 4u);
  EXPECT_EQ(AgeGroupOf(50), 5u);
  EXPECT_EQ(AgeGroupOf(56), 6u);
}

// The real MovieLens 100K u.user / u.item, when available (outside the
// repository; MovieLens may not be redistributed): every row reads.
TEST(Ml100kFeatures, RealMovieLens100kUserAndItemFilesLoadWhenPresent) {
  const char* env = std::getenv("FEDREC_ML100K_DIR");
  const std::string dir = env != nullptr ? env : "/work/data/ml-100k";
  if (!std::filesystem::exists(dir + "/u.user") || !std::filesystem::exists(dir + "/u.item")) {
    GTEST_SKIP() << "MovieLens 100K u.user/u.item not found in " << dir;
  }
  Result<FeatureFile> users = ReadFeatureFile(dir + "/u.user", {});
  ASSERT_TRUE(users.ok()) << users.status().message();
  EXPECT_EQ(users->table.rows, 943u);
  EXPECT_EQ(users->table.fields[3].vocabulary, 21u);
  FeatureReadOptions items_options;
  items_options.entity = FeatureEntity::kItems;
  Result<FeatureFile> items = ReadFeatureFile(dir + "/u.item", items_options);
  ASSERT_TRUE(items.ok()) << items.status().message();
  EXPECT_EQ(items->table.rows, 1682u);
  EXPECT_EQ(items->table.fields[0].vocabulary, 19u);
  size_t with_genres = 0;
  for (uint32_t i = 0; i < items->table.rows; ++i) with_genres += !items->table.Ids(i, 0).empty();
  EXPECT_EQ(with_genres, 1682u);
}

}  // namespace
}  // namespace fedrec
