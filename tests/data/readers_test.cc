#include "data/readers.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "base/random.h"
#include "data/ratings.h"
#include "tests/data/temp_files.h"

namespace fedrec {
namespace {

namespace fs = std::filesystem;

std::string Fixture(const std::string& name) {
  return std::string(FEDREC_FIXTURE_DIR) + "/" + name;
}

std::string WriteTemp(const std::string& name, const std::string& contents) {
  return testing::WriteTempFile("data_readers", name, contents);
}

struct Loaded {
  IdMap users, items;
  std::vector<Rating> ratings;
};

Status Read(const std::string& path, Loaded* l, ReadOptions options = {}) {
  return ReadRatings(path, options, &l->users, &l->items, &l->ratings);
}

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

#define EXPECT_ERROR(status, code_, ...)                                  \
  do {                                                                    \
    const ::fedrec::Status s_ = (status);                                 \
    EXPECT_EQ(s_.code(), ::fedrec::Status::Code::code_) << s_.ToString(); \
    for (const std::string& part : {__VA_ARGS__}) {                       \
      EXPECT_TRUE(Contains(s_.message(), part))                           \
          << "message: " << s_.message() << "\nmissing: " << part;        \
    }                                                                     \
  } while (0)

TEST(IdMap, InternAssignsDenseIndicesInFirstSeenOrder) {
  IdMap m;
  EXPECT_EQ(m.Intern("b"), 0u);
  EXPECT_EQ(m.Intern("a"), 1u);
  EXPECT_EQ(m.Intern("b"), 0u);
  EXPECT_EQ(m.size(), 2u);
  EXPECT_EQ(m.Raw(1), "a");
}

TEST(IdMap, FindDoesNotInsertAndKeepsRawIdsExactly) {
  IdMap m;
  m.Intern("007");
  EXPECT_EQ(m.Find("007"), 0);
  EXPECT_EQ(m.Find("7"), -1);
  EXPECT_EQ(m.size(), 1u);
}

TEST(Readers, Ml100kReadsValuesAndInternsIdsInFirstSeenOrder) {
  Loaded l;
  ASSERT_TRUE(Read(Fixture("ml100k_train.data"), &l).ok());
  ASSERT_EQ(l.ratings.size(), 4u);
  EXPECT_EQ(l.ratings[0], (Rating{0, 0, 5.0f, 881250949}));
  EXPECT_EQ(l.ratings[1], (Rating{0, 1, 3.0f, 881250950}));
  EXPECT_EQ(l.ratings[2], (Rating{1, 0, 4.0f, 891717742}));
  EXPECT_EQ(l.ratings[3], (Rating{2, 2, 1.0f, 878887116}));
  ASSERT_EQ(l.users.size(), 3u);
  EXPECT_EQ(l.users.Raw(2), "3");
  ASSERT_EQ(l.items.size(), 3u);
  EXPECT_EQ(l.items.Raw(1), "20");
}

TEST(Readers, TrainAndTestFilesShareIdMaps) {
  Loaded train;
  ASSERT_TRUE(Read(Fixture("ml100k_train.data"), &train).ok());
  std::vector<Rating> test;
  ASSERT_TRUE(ReadRatings(Fixture("ml100k_test.data"), {}, &train.users, &train.items, &test).ok());
  ASSERT_EQ(test.size(), 3u);
  EXPECT_EQ(test[0], (Rating{1, 1, 2.0f, 891717800}));  // known user "2", item "20"
  EXPECT_EQ(test[1], (Rating{3, 0, 5.0f, 880000000}));  // new user "4" gets index 3
  EXPECT_EQ(test[2], (Rating{0, 3, 3.0f, 881251000}));  // new item "40" gets index 3
  EXPECT_EQ(train.users.size(), 4u);
  EXPECT_EQ(train.items.size(), 4u);
  EXPECT_EQ(train.ratings.size(), 4u);
}

TEST(Readers, Ml100kReportsFileAndLineOfShortRow) {
  Loaded l;
  EXPECT_ERROR(Read(Fixture("ml100k_short_row.data"), &l), kInvalidArgument,
               "ml100k_short_row.data:3: expected 4 tab-separated fields (user, item, rating, "
               "timestamp), found 3: \"1\\t2\\t5\"");
}

TEST(Readers, NonNumericRatingIsAnErrorNamingTheField) {
  Loaded l;
  EXPECT_ERROR(Read(Fixture("ml100k_bad_rating.data"), &l), kInvalidArgument,
               "ml100k_bad_rating.data:2:", "numeric rating", "\"five\"");
}

TEST(Readers, OutOfRangeRatingShowsValueAndRange) {
  Loaded l;
  EXPECT_ERROR(Read(Fixture("ml100k_out_of_range.data"), &l), kInvalidArgument,
               "ml100k_out_of_range.data:3:", "[1, 5]", "\"6\"");
}

TEST(Readers, RatingRangeComesFromOptions) {
  Loaded l;
  ReadOptions options;
  options.rating_max = 10.0f;
  ASSERT_TRUE(Read(Fixture("ml100k_out_of_range.data"), &l, options).ok());
  EXPECT_EQ(l.ratings.back().value, 6.0f);
  Loaded m;
  options.rating_min = 4.5f;
  EXPECT_ERROR(Read(Fixture("ml100k_train.data"), &m, options), kInvalidArgument,
               "ml100k_train.data:2:", "[4.5, 10]");
}

TEST(Readers, NonIntegerTimestampIsAnError) {
  Loaded l;
  EXPECT_ERROR(Read(Fixture("ml100k_bad_timestamp.data"), &l), kInvalidArgument,
               "ml100k_bad_timestamp.data:2:", "integer timestamp", "\"8917177.42\"");
}

TEST(Readers, EmptyUserFieldIsAnError) {
  Loaded l;
  EXPECT_ERROR(Read(Fixture("ml100k_empty_user.data"), &l), kInvalidArgument,
               "ml100k_empty_user.data:2:", "user");
}

TEST(Readers, EmptyFileContainsNoRatings) {
  Loaded l;
  EXPECT_ERROR(Read(Fixture("empty.data"), &l), kInvalidArgument, "empty.data",
               "contains no ratings");
  const std::string blank = WriteTemp("blank.data", "\n\r\n\n");
  EXPECT_ERROR(Read(blank, &l), kInvalidArgument, "blank.data", "contains no ratings");
}

TEST(Readers, MissingFileIsNotFoundNamingThePath) {
  Loaded l;
  const std::string path = Fixture("no_such_file.data");
  EXPECT_ERROR(Read(path, &l), kNotFound, path);
  EXPECT_EQ(DetectRatingFormat(path).status().code(), Status::Code::kNotFound);
}

TEST(Readers, DirectoryIsAnIoError) {
  Loaded l;
  EXPECT_ERROR(Read(FEDREC_FIXTURE_DIR, &l), kIoError, FEDREC_FIXTURE_DIR);
}

TEST(Readers, CrlfLineEndingsAndTrailingBlankLinesAreTolerated) {
  const std::string path =
      WriteTemp("crlf.data", "1\t10\t5\t881250949\r\n2\t20\t3\t881250950\r\n\r\n\r\n");
  Loaded l;
  ASSERT_TRUE(Read(path, &l).ok());
  ASSERT_EQ(l.ratings.size(), 2u);
  EXPECT_EQ(l.ratings[1], (Rating{1, 1, 3.0f, 881250950}));
  EXPECT_EQ(l.items.Raw(1), "20");
  const std::string csv = WriteTemp("crlf.csv", "user,item,rating\r\nu1,i1,4\r\nu2,i1,2\r\n");
  Loaded c;
  ASSERT_TRUE(Read(csv, &c).ok());
  ASSERT_EQ(c.ratings.size(), 2u);
  EXPECT_EQ(c.items.Raw(0), "i1");
  EXPECT_EQ(c.ratings[1].value, 2.0f);
}

TEST(Readers, LastLineWithoutNewlineIsRead) {
  const std::string path = WriteTemp("no_newline.data", "1\t10\t5\t1\n2\t20\t3\t2");
  Loaded l;
  ASSERT_TRUE(Read(path, &l).ok());
  ASSERT_EQ(l.ratings.size(), 2u);
  EXPECT_EQ(l.ratings[1].time, 2);
}

TEST(Readers, Ml1mReadsDoubleColonSeparatedRatings) {
  Loaded l;
  ASSERT_TRUE(Read(Fixture("ml1m_ratings.dat"), &l).ok());
  ASSERT_EQ(l.ratings.size(), 3u);
  EXPECT_EQ(l.ratings[1], (Rating{0, 1, 3.0f, 978302109}));
  EXPECT_EQ(l.ratings[2], (Rating{1, 0, 4.0f, 978298413}));
  EXPECT_EQ(l.items.Raw(0), "1193");
}

TEST(Readers, Ml1mWrongFieldCountIsAnError) {
  Loaded l;
  EXPECT_ERROR(Read(Fixture("ml1m_short_row.dat"), &l), kInvalidArgument,
               "ml1m_short_row.dat:2:", "expected 4 \"::\"-separated fields", "found 3",
               "\"1::661::3\"");
}

TEST(Readers, MlCsvSkipsHeaderAndReadsHalfStars) {
  Loaded l;
  ReadOptions options;
  options.rating_min = 0.5f;
  ASSERT_TRUE(Read(Fixture("mlcsv_ratings.csv"), &l, options).ok());
  ASSERT_EQ(l.ratings.size(), 3u);
  EXPECT_EQ(l.ratings[0], (Rating{0, 0, 5.0f, 1147880044}));
  EXPECT_EQ(l.ratings[1], (Rating{0, 1, 3.5f, 1147868817}));
  EXPECT_EQ(l.ratings[2], (Rating{1, 0, 0.5f, 1147868828}));
  EXPECT_EQ(l.users.size(), 2u);
}

TEST(Readers, DecimalRatingsMatchFromChars) {
  const std::string path =
      WriteTemp("decimals.csv", "u,i,3.3\nu,j,4.25\nu,k,1e0\nu,l,2.7\nu,m,0.1\n");
  Loaded l;
  ReadOptions options;
  options.rating_min = 0.0f;
  ASSERT_TRUE(Read(path, &l, options).ok());
  ASSERT_EQ(l.ratings.size(), 5u);
  EXPECT_EQ(l.ratings[0].value, 3.3f);
  EXPECT_EQ(l.ratings[1].value, 4.25f);
  EXPECT_EQ(l.ratings[2].value, 1.0f);
  EXPECT_EQ(l.ratings[3].value, 2.7f);
  EXPECT_EQ(l.ratings[4].value, 0.1f);
}

TEST(Readers, CsvWithHeaderKeepsRawIdsExactly) {
  Loaded l;
  ASSERT_TRUE(Read(Fixture("csv_with_header.csv"), &l).ok());
  ASSERT_EQ(l.ratings.size(), 3u);
  EXPECT_EQ(l.ratings[0], (Rating{0, 0, 4.5f, 100}));
  EXPECT_EQ(l.ratings[1], (Rating{1, 0, 3.0f, 101}));
  EXPECT_EQ(l.ratings[2], (Rating{2, 1, 2.0f, 102}));
  ASSERT_EQ(l.users.size(), 3u);
  EXPECT_EQ(l.users.Raw(0), "alice");
  EXPECT_EQ(l.users.Raw(1), "007");  // not the same user as "7"
  EXPECT_EQ(l.users.Raw(2), "7");
}

TEST(Readers, CsvWithoutHeaderReadsFirstLineAsData) {
  Loaded l;
  ASSERT_TRUE(Read(Fixture("csv_without_header.csv"), &l).ok());
  ASSERT_EQ(l.ratings.size(), 3u);
  EXPECT_EQ(l.ratings[0], (Rating{0, 0, 4.0f, 0}));
  EXPECT_EQ(l.ratings[2], (Rating{0, 1, 5.0f, 0}));
  EXPECT_EQ(l.users.Raw(1), "bob");
}

TEST(Readers, CsvHeaderIsOnlyAllowedOnTheFirstLine) {
  Loaded l;
  EXPECT_ERROR(Read(Fixture("csv_header_midfile.csv"), &l), kInvalidArgument,
               "csv_header_midfile.csv:3:", "numeric rating", "\"rating\"");
}

TEST(Readers, CsvHeaderOnlyFileContainsNoRatings) {
  Loaded l;
  EXPECT_ERROR(Read(Fixture("csv_header_only.csv"), &l), kInvalidArgument, "csv_header_only.csv",
               "contains no ratings");
}

TEST(Readers, CsvWrongFieldCountIsAnError) {
  const std::string path = WriteTemp("five_fields.csv", "a,b,3\na,b,3,4,5\n");
  Loaded l;
  EXPECT_ERROR(Read(path, &l), kInvalidArgument,
               "five_fields.csv:2:", "expected 3 or 4 comma-separated fields", "found 5");
}

TEST(Readers, AutoDetectsAllFourFormats) {
  const auto detect = [](const std::string& name) {
    Result<RatingFormat> f = DetectRatingFormat(Fixture(name));
    EXPECT_TRUE(f.ok()) << name << ": " << f.status().ToString();
    return f.ok() ? *f : RatingFormat::kAuto;
  };
  EXPECT_EQ(detect("ml100k_train.data"), RatingFormat::kMl100k);
  EXPECT_EQ(detect("ml1m_ratings.dat"), RatingFormat::kMl1m);
  EXPECT_EQ(detect("mlcsv_ratings.csv"), RatingFormat::kMlCsv);
  EXPECT_EQ(detect("csv_with_header.csv"), RatingFormat::kCsv);
  EXPECT_EQ(detect("csv_without_header.csv"), RatingFormat::kCsv);
  // Detection skips leading blank lines.
  EXPECT_EQ(DetectRatingFormat(WriteTemp("leading_blank.dat", "\n\n1::2::3::4\n")).value(),
            RatingFormat::kMl1m);
}

TEST(Readers, AutoDetectionRejectsUnknownLayoutShowingTheLine) {
  Loaded l;
  EXPECT_ERROR(Read(Fixture("undetectable.txt"), &l), kInvalidArgument,
               "undetectable.txt:1:", "\"1 10 5 881250949\"");
  EXPECT_ERROR(DetectRatingFormat(Fixture("undetectable.txt")).status(), kInvalidArgument,
               "undetectable.txt:1:");
  EXPECT_ERROR(DetectRatingFormat(Fixture("empty.data")).status(), kInvalidArgument,
               "contains no ratings");
}

TEST(Readers, ExplicitFormatOverridesDetection) {
  Loaded l;
  ReadOptions options;
  options.format = RatingFormat::kMl100k;
  EXPECT_ERROR(Read(Fixture("csv_without_header.csv"), &l, options), kInvalidArgument,
               "csv_without_header.csv:1:", "expected 4 tab-separated fields", "found 1");
  options.format = RatingFormat::kMl100k;
  // ml100k has no header: a header-like first line is a rating error.
  const std::string path = WriteTemp("header.data", "user\titem\trating\ttime\n1\t2\t3\t4\n");
  EXPECT_ERROR(Read(path, &l, options), kInvalidArgument, "header.data:1:", "numeric rating");
}

TEST(Readers, FailedReadLeavesOutputsUntouched) {
  Loaded l;
  ASSERT_TRUE(Read(Fixture("ml100k_train.data"), &l).ok());
  const std::vector<Rating> before = l.ratings;
  // Lines 1-2 introduce new users and items before line 3 fails.
  EXPECT_ERROR(Read(Fixture("ml100k_new_ids_then_bad.data"), &l), kInvalidArgument,
               "ml100k_new_ids_then_bad.data:3:");
  EXPECT_EQ(l.ratings, before);
  EXPECT_EQ(l.users.size(), 3u);
  EXPECT_EQ(l.items.size(), 3u);
  EXPECT_EQ(l.users.Find("7"), -1);
  EXPECT_EQ(l.items.Find("70"), -1);
  // The maps still work: the next good read continues the same index space.
  std::vector<Rating> test;
  ASSERT_TRUE(ReadRatings(Fixture("ml100k_test.data"), {}, &l.users, &l.items, &test).ok());
  EXPECT_EQ(test[1].user, 3u);
}

ReadOptions ImplicitOptions() {
  ReadOptions options;
  options.format = RatingFormat::kImplicit;
  return options;
}

TEST(Readers, ImplicitWithoutHeaderReadsEveryLineAsATopRating) {
  Loaded l;
  ASSERT_TRUE(Read(Fixture("implicit_without_header.csv"), &l, ImplicitOptions()).ok());
  ASSERT_EQ(l.ratings.size(), 3u);
  EXPECT_EQ(l.ratings[0], (Rating{0, 0, 5.0f, 0}));
  EXPECT_EQ(l.ratings[1], (Rating{1, 0, 5.0f, 0}));
  EXPECT_EQ(l.ratings[2], (Rating{0, 1, 5.0f, 0}));
  EXPECT_EQ(l.users.Raw(0), "alice");
  EXPECT_EQ(l.items.Raw(1), "alien");
}

TEST(Readers, ImplicitSkipsAHeaderNamingTheColumns) {
  Loaded l;
  ASSERT_TRUE(Read(Fixture("implicit_with_header.csv"), &l, ImplicitOptions()).ok());
  ASSERT_EQ(l.ratings.size(), 3u);
  EXPECT_EQ(l.ratings[0], (Rating{0, 0, 5.0f, 0}));
  EXPECT_EQ(l.ratings[2], (Rating{2, 1, 5.0f, 0}));
  ASSERT_EQ(l.users.size(), 3u);
  EXPECT_EQ(l.users.Find("user_id"), -1);
  EXPECT_EQ(l.users.Raw(1), "007");  // not the same user as "7"
  EXPECT_EQ(l.users.Raw(2), "7");
  // Other spellings of the column names are headers too.
  for (const char* header : {"user,item", "USER_ID,ITEM_ID", "userId,movieId"}) {
    Loaded h;
    const std::string path = WriteTemp("implicit_header.csv", std::string(header) + "\na,b\n");
    ASSERT_TRUE(Read(path, &h, ImplicitOptions()).ok()) << header;
    EXPECT_EQ(h.ratings.size(), 1u) << header;
    EXPECT_EQ(h.users.Raw(0), "a") << header;
  }
}

TEST(Readers, ImplicitReadsTimestampsAndSkipsTheirHeader) {
  Loaded l;
  ASSERT_TRUE(Read(Fixture("implicit_timestamps.csv"), &l, ImplicitOptions()).ok());
  ASSERT_EQ(l.ratings.size(), 3u);
  EXPECT_EQ(l.ratings[0], (Rating{0, 0, 5.0f, 100}));
  EXPECT_EQ(l.ratings[1], (Rating{1, 0, 5.0f, 101}));
  EXPECT_EQ(l.ratings[2], (Rating{0, 1, 5.0f, 102}));
  // Lines with and without a timestamp may mix; a missing one reads as 0.
  Loaded m;
  const std::string path = WriteTemp("implicit_mixed.csv", "a,b,7\na,c\r\n");
  ASSERT_TRUE(Read(path, &m, ImplicitOptions()).ok());
  ASSERT_EQ(m.ratings.size(), 2u);
  EXPECT_EQ(m.ratings[0].time, 7);
  EXPECT_EQ(m.ratings[1].time, 0);
  EXPECT_EQ(m.items.Raw(1), "c");
}

TEST(Readers, ImplicitValueIsTheRatingMaxOfTheOptions) {
  ReadOptions options = ImplicitOptions();
  options.rating_min = 0.0f;
  options.rating_max = 1.0f;
  Loaded l;
  ASSERT_TRUE(Read(Fixture("implicit_timestamps.csv"), &l, options).ok());
  ASSERT_EQ(l.ratings.size(), 3u);
  for (const Rating& r : l.ratings) EXPECT_EQ(r.value, 1.0f);
}

TEST(Readers, ImplicitHeaderOnlyFileContainsNoRatings) {
  Loaded l;
  const std::string path = WriteTemp("implicit_header_only.csv", "user,item,timestamp\n");
  EXPECT_ERROR(Read(path, &l, ImplicitOptions()), kInvalidArgument, "implicit_header_only.csv",
               "contains no ratings");
}

TEST(Readers, AutoDetectsTwoFieldFilesAsImplicit) {
  EXPECT_EQ(DetectRatingFormat(Fixture("implicit_without_header.csv")).value(),
            RatingFormat::kImplicit);
  EXPECT_EQ(DetectRatingFormat(Fixture("implicit_with_header.csv")).value(),
            RatingFormat::kImplicit);
  EXPECT_EQ(
      DetectRatingFormat(WriteTemp("implicit_ml_header.csv", "userId,movieId\n1,2\n")).value(),
      RatingFormat::kImplicit);
  // Three comma-separated fields stay csv: implicit files with timestamps
  // need the format named.
  EXPECT_EQ(DetectRatingFormat(Fixture("implicit_timestamps.csv")).value(), RatingFormat::kCsv);
  // ReadRatings with kAuto reads a 2-field file as implicit.
  Loaded l;
  ASSERT_TRUE(Read(Fixture("implicit_with_header.csv"), &l).ok());
  ASSERT_EQ(l.ratings.size(), 3u);
  EXPECT_EQ(l.ratings[0], (Rating{0, 0, 5.0f, 0}));
}

TEST(Readers, ImplicitShortRowIsAnErrorNamingFileAndLine) {
  Loaded l;
  EXPECT_ERROR(Read(Fixture("implicit_short_row.csv"), &l, ImplicitOptions()), kInvalidArgument,
               "implicit_short_row.csv:3: expected 2 or 3 comma-separated fields "
               "(user,item[,timestamp]), found 1: \"eve\"");
}

TEST(Readers, ImplicitTooManyFieldsIsAnError) {
  Loaded l;
  EXPECT_ERROR(Read(Fixture("implicit_too_many_fields.csv"), &l, ImplicitOptions()),
               kInvalidArgument,
               "implicit_too_many_fields.csv:2:", "expected 2 or 3 comma-separated fields",
               "found 4", "\"bob,matrix,101,5\"");
}

TEST(Readers, ImplicitNonIntegerTimestampIsAnError) {
  Loaded l;
  EXPECT_ERROR(
      Read(Fixture("implicit_bad_timestamp.csv"), &l, ImplicitOptions()), kInvalidArgument,
      "implicit_bad_timestamp.csv:2:", "expected an integer timestamp in field 3, found \"10.5\"");
}

TEST(Readers, ImplicitEmptyItemIsAnError) {
  Loaded l;
  EXPECT_ERROR(Read(Fixture("implicit_empty_item.csv"), &l, ImplicitOptions()), kInvalidArgument,
               "implicit_empty_item.csv:2:", "expected a non-empty item ID", "\"bob,\"");
  const std::string path = WriteTemp("implicit_empty_user.csv", "a,b\n,b,5\n");
  EXPECT_ERROR(Read(path, &l, ImplicitOptions()), kInvalidArgument,
               "implicit_empty_user.csv:2:", "expected a non-empty user ID");
}

TEST(Readers, ImplicitHeaderIsOnlyAllowedOnTheFirstLine) {
  Loaded l;
  EXPECT_ERROR(Read(Fixture("implicit_header_midfile.csv"), &l, ImplicitOptions()),
               kInvalidArgument, "implicit_header_midfile.csv:3:", "header line",
               "\"UserId,ItemId\"");
  const std::string path = WriteTemp("implicit_time_header.csv", "a,b,1\nx,y,timestamp\n");
  EXPECT_ERROR(Read(path, &l, ImplicitOptions()), kInvalidArgument,
               "implicit_time_header.csv:2:", "integer timestamp", "\"timestamp\"");
}

TEST(Readers, ImplicitFailedReadLeavesOutputsUntouched) {
  Loaded l;
  ASSERT_TRUE(Read(Fixture("implicit_without_header.csv"), &l, ImplicitOptions()).ok());
  const std::vector<Rating> before = l.ratings;
  // Lines 1-2 introduce new users and items before line 3 fails.
  EXPECT_ERROR(Read(Fixture("implicit_short_row.csv"), &l, ImplicitOptions()), kInvalidArgument,
               "implicit_short_row.csv:3:");
  EXPECT_EQ(l.ratings, before);
  EXPECT_EQ(l.users.size(), 2u);
  EXPECT_EQ(l.items.size(), 2u);
  EXPECT_EQ(l.users.Find("carol"), -1);
  EXPECT_EQ(l.items.Find("brazil"), -1);
  // The maps still work: the next good read continues the same index space.
  ASSERT_TRUE(Read(Fixture("implicit_timestamps.csv"), &l, ImplicitOptions()).ok());
  EXPECT_EQ(l.ratings[3], (Rating{2, 2, 5.0f, 100}));
}

TEST(Readers, OverlongLineIsAnError) {
  const std::string path = WriteTemp("long.data", "1\t2\t3\t4\n" + std::string(3 << 20, 'x'));
  Loaded l;
  EXPECT_ERROR(Read(path, &l), kInvalidArgument, "long.data:2:", "longer than");
  EXPECT_TRUE(l.ratings.empty());
}

TEST(Readers, LinesSpanningReadBlocksAreParsed) {
  // ~20 MB: several 8 MB read blocks, lines cut at block boundaries.
  std::string text;
  constexpr int kLines = 1'000'000;
  text.reserve(size_t{kLines} * 22);
  for (int i = 0; i < kLines; ++i) {
    // MovieLens IDs are positive: 1..5000 and 1..1777.
    text += std::to_string(1 + i % 5000) + "\t" + std::to_string(1 + i % 1777) + "\t" +
            std::to_string(1 + i % 5) + "\t" + std::to_string(880000000 + i) + "\n";
  }
  const std::string path = WriteTemp("big.data", text);
  Loaded l;
  ASSERT_TRUE(Read(path, &l).ok());
  ASSERT_EQ(l.ratings.size(), static_cast<size_t>(kLines));
  EXPECT_EQ(l.users.size(), 5000u);
  EXPECT_EQ(l.items.size(), 1777u);
  for (int i : {0, 419'430, 777'777, kLines - 1}) {
    const Rating& r = l.ratings[i];
    EXPECT_EQ(l.users.Raw(r.user), std::to_string(1 + i % 5000));
    EXPECT_EQ(l.items.Raw(r.item), std::to_string(1 + i % 1777));
    EXPECT_EQ(r.value, static_cast<float>(1 + i % 5));
    EXPECT_EQ(r.time, 880000000 + i);
  }
}

TEST(Readers, RandomGarbageNeverCrashesAndFailuresChangeNothing) {
  const std::string alphabet = "0123456789\t\t::,,..\r\n\n-eab\"x ";
  Rng rng(7, 0, 0, Purpose::kUser);
  int ok = 0, failed = 0;
  for (int trial = 0; trial < 300; ++trial) {
    std::string text;
    const size_t n = rng.Below(120);
    for (size_t i = 0; i < n; ++i) text += alphabet[rng.Below(alphabet.size())];
    if (trial % 7 == 0) text += '\0';
    const std::string path = WriteTemp("garbage.txt", text);
    Loaded l;
    l.users.Intern("seed");
    l.ratings.push_back(Rating{0, 0, 1.0f, 0});
    ReadOptions options;
    options.format = static_cast<RatingFormat>(trial % 6);
    const Status s = Read(path, &l, options);
    if (s.ok()) {
      ++ok;
      EXPECT_GT(l.ratings.size(), 1u);
    } else {
      ++failed;
      EXPECT_FALSE(s.message().empty());
      EXPECT_EQ(l.ratings.size(), 1u) << text;
      EXPECT_EQ(l.users.size(), 1u);
      EXPECT_EQ(l.items.size(), 0u);
    }
  }
  EXPECT_GT(failed, 0);
}

TEST(Readers, ParseRatingFormatRoundTripsAndListsValidNames) {
  for (RatingFormat f : {RatingFormat::kAuto, RatingFormat::kMl100k, RatingFormat::kMl1m,
                         RatingFormat::kMlCsv, RatingFormat::kCsv, RatingFormat::kImplicit}) {
    Result<RatingFormat> parsed = ParseRatingFormat(RatingFormatName(f));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, f);
  }
  EXPECT_EQ(ParseRatingFormat("implicit").value(), RatingFormat::kImplicit);
  EXPECT_ERROR(ParseRatingFormat("ml25m").status(), kInvalidArgument, "\"ml25m\"",
               "auto, ml100k, ml1m, mlcsv, csv, implicit");
}

// Sanity check on the real MovieLens 100K u1 split when it is available
// (outside the repository; MovieLens may not be redistributed).
TEST(Readers, RealMovieLens100kU1SplitLoadsWhenPresent) {
  const char* env = std::getenv("FEDREC_ML100K_DIR");
  const std::string dir = env != nullptr ? env : "/work/data/ml-100k";
  if (!fs::exists(dir + "/u1.base") || !fs::exists(dir + "/u1.test")) {
    GTEST_SKIP() << "MovieLens 100K not found in " << dir;
  }
  Dataset d;
  const auto start = std::chrono::steady_clock::now();
  ASSERT_TRUE(ReadRatings(dir + "/u1.base", {}, &d.users, &d.items, &d.train).ok());
  ASSERT_TRUE(ReadRatings(dir + "/u1.test", {}, &d.users, &d.items, &d.test).ok());
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(d.train.size(), 80000u);
  EXPECT_EQ(d.test.size(), 20000u);
  EXPECT_EQ(d.users.size(), 943u);
  EXPECT_EQ(d.items.size(), 1682u);
  double sum = 0;
  for (const Rating& r : d.train) sum += r.value;
  EXPECT_NEAR(sum / d.train.size(), 3.528, 0.001);
  EXPECT_EQ(d.users.Raw(d.train[0].user), "1");
  EXPECT_EQ(d.train[0].time, 874965758);
  RecordProperty("lines_per_second", std::to_string(100000.0 / seconds));
}

}  // namespace
}  // namespace fedrec
