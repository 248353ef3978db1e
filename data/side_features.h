// Readers of side-feature files (users' age, gender, occupation; items'
// genres, year) into FeatureTables (data/features.h).
//
// A file is read into a FeatureFile: its rows in file order, keyed by raw ID.
// IndexFeatures then lays the rows out by any ID order: the dataset's IdMap
// (fedrec train, fedrec sim), a site's local users, or the coordinator's item
// catalogue (fedrec run), so every site's item table follows the catalogue's
// indices. Rows whose ID is not among the wanted IDs are skipped (counted);
// wanted IDs without a row get missing features (no categorical id, numeric 0).
//
// Formats:
//   ml100k: u.user (id|age|gender|occupation|zip) and u.item (id|title|release
//     date|video release date|IMDb URL|19 genre flags). Vocabularies from
//     u.occupation / u.genre next to the file, else MovieLens' standard lists.
//   ml1m: users.dat (UserID::Gender::Age::Occupation::Zip-code, age and
//     occupation coded) and movies.dat (MovieID::Title::Genres, genres
//     '|'-separated). Titles may hold any bytes (Latin-1).
//   csv: comma-separated columns declared by a schema (ParseFeatureSchema).
//
// Fields of the MovieLens formats, the same for ml100k and ml1m:
//   users: age (numeric over [0, 100]; ml1m: the age code, i.e. the lower
//          bound of the group, 1 for "under 18"), age_group (categorical:
//          <18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+), gender (F, M),
//          occupation (the format's occupation list).
//   items: genres (multi-valued categorical over the 19 ml100k genres,
//          "unknown" first; in file order, so the first is the main genre),
//          year (numeric over [1900, 2030]; ml100k: of the release date, else
//          of the title's "(yyyy)"; ml1m: of the title; missing = 0).
//
// Every malformed line is an error naming path:line, the field, what was
// expected and what was found; a failed read returns only the error.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "data/features.h"
#include "data/ratings.h"

namespace fedrec {

enum class FeatureFormat { kAuto, kMl100k, kMl1m, kCsv };
// "auto", "ml100k", "ml1m", "csv".
Result<FeatureFormat> ParseFeatureFormat(std::string_view name);
const char* FeatureFormatName(FeatureFormat format);

enum class FeatureEntity { kUsers, kItems };

// One column of a csv feature file.
struct FeatureColumn {
  enum class Kind { kId, kSkip, kNumeric, kCategory, kHash };
  std::string name;
  Kind kind = Kind::kSkip;
  double low = 0.0, high = 1.0;     // kNumeric: declared range, scaled to [0, 1]
  std::vector<std::string> labels;  // kCategory: the declared vocabulary
  uint32_t buckets = 0;             // kHash: vocabulary size
  char multi = 0;                   // != 0: several values separated by this character
};

// The columns of a csv feature file, in file order. The schema language:
// comma-separated column specs, exactly one of them the id column:
//   id | NAME:id                   the row's ID (a header names it NAME, default "id")
//   NAME:skip                      a column that is not read
//   NAME:numeric:LOW:HIGH          a number in [LOW, HIGH], scaled to [0, 1]
//   NAME:category:A|B|C            one of the declared labels (ids 0, 1, 2)
//   NAME:hash:N                    any string, hashed into N buckets
//   NAME:multi:SEP:category:A|B|C  several labels separated by SEP
//   NAME:multi:SEP:hash:N          several strings separated by SEP, hashed
// SEP is one character other than ',' and ':'. An empty field is a missing
// value. Hash buckets depend only on the string (StableIdKey), so every site
// agrees without seeing the others' data.
struct FeatureSchema {
  std::vector<FeatureColumn> columns;
  size_t id_column = 0;
};
// Error names what was expected and found; callers add the config key.
Result<FeatureSchema> ParseFeatureSchema(std::string_view text);

struct FeatureReadOptions {
  FeatureFormat format = FeatureFormat::kAuto;
  FeatureEntity entity = FeatureEntity::kUsers;
  // csv only (required for it): the columns. With kAuto, a non-empty schema
  // means csv.
  std::string schema;
};

// A side-feature file's rows in file order; row r holds the features of raw
// ID ids.Raw(r).
struct FeatureFile {
  IdMap ids;
  FeatureTable table;
};

// The format of the file at `path`: csv when a schema is given, else "::" in
// the first non-empty line means ml1m and '|' ml100k.
Result<FeatureFormat> DetectFeatureFormat(const std::string& path,
                                          const FeatureReadOptions& options);

Result<FeatureFile> ReadFeatureFile(const std::string& path, const FeatureReadOptions& options);

struct FeatureIndexStats {
  uint64_t unknown_rows = 0;  // rows of the file whose ID is not wanted
  uint64_t missing_rows = 0;  // wanted IDs without a row
};

// The file's rows laid out by `ids` (row r = the features of ids.Raw(r) or
// missing ones): one row per ID, the file's fields.
FeatureTable IndexFeatures(const FeatureFile& file, const IdMap& ids,
                           FeatureIndexStats* stats = nullptr);
FeatureTable IndexFeatures(const FeatureFile& file, std::span<const std::string> ids,
                           FeatureIndexStats* stats = nullptr);

// The rows `rows` of `table`, in that order (e.g. a site's users, by their
// global indices). REQUIRES: every row < table.rows. An empty table gives an
// empty table.
FeatureTable SelectFeatureRows(const FeatureTable& table, std::span<const uint32_t> rows);

// Index of the field called `name` among the categorical fields (the c of
// FeatureTable::Ids), or -1 when the table has no categorical field so named.
int64_t CategoricalFieldIndex(const FeatureTable& table, std::string_view name);

// The age group (index into the MovieLens age groups <18, 18-24, 25-34,
// 35-44, 45-49, 50-55, 56+) of an age in years.
uint32_t AgeGroupOf(double age);

}  // namespace fedrec
