// Side-feature readers and the csv schema language (data/side_features.h).
// The first input byte picks the format (auto, ml100k, ml1m, csv) and the
// entity (users, items). For csv the input's first line is the schema, the
// rest the file. A file is either refused with a message, or read into a
// table of one row per ID whose categorical ids lie in their vocabularies
// and whose offsets are consistent, and which IndexFeatures and
// SelectFeatureRows lay out again without loss.
#include <cmath>
#include <string_view>

#include "data/side_features.h"
#include "fuzz/fuzz_util.h"

using namespace fedrec;

namespace {

void CheckTable(const FeatureTable& t) {
  const uint32_t c = t.categorical();
  if (c == 0) {
    fuzz::Require(t.offsets.empty() || t.offsets.size() == 1, "no offsets without categories");
  } else {
    fuzz::Require(t.offsets.size() == static_cast<size_t>(t.rows) * c + 1,
                  "offsets: rows x categorical fields + 1");
    for (size_t i = 1; i < t.offsets.size(); ++i)
      fuzz::Require(t.offsets[i - 1] <= t.offsets[i], "offsets ascend");
    fuzz::Require(t.offsets.front() == 0 && t.offsets.back() == t.ids.size(),
                  "offsets cover the ids");
  }
  fuzz::Require(t.numeric.size() == static_cast<size_t>(t.rows) * t.numerics(),
                "numeric: rows x numeric fields");
  for (float v : t.numeric) fuzz::Require(std::isfinite(v), "numeric features are finite");
  for (uint32_t r = 0; r < t.rows; ++r) {
    uint32_t k = 0;
    for (const FeatureField& f : t.fields) {
      if (f.numeric) continue;
      for (uint32_t id : t.Ids(r, k)) fuzz::Require(id < f.vocabulary, "ids in the vocabulary");
      ++k;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static fuzz::InputFile file("features");
  if (size == 0) return 0;
  constexpr FeatureFormat kFormats[] = {FeatureFormat::kAuto, FeatureFormat::kMl100k,
                                        FeatureFormat::kMl1m, FeatureFormat::kCsv};
  FeatureReadOptions options;
  options.format = kFormats[data[0] % 4];
  options.entity = (data[0] / 4) % 2 == 0 ? FeatureEntity::kUsers : FeatureEntity::kItems;
  std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  if (options.format == FeatureFormat::kCsv ||
      (options.format == FeatureFormat::kAuto && (data[0] / 8) % 2 == 1)) {
    const size_t eol = text.find('\n');
    options.schema = std::string(text.substr(0, eol));
    text = eol == std::string_view::npos ? std::string_view() : text.substr(eol + 1);
    Result<FeatureSchema> schema = ParseFeatureSchema(options.schema);
    if (schema.ok()) {
      fuzz::Require(schema->id_column < schema->columns.size(), "the id column is a column");
    } else {
      fuzz::Require(!schema.status().message().empty(), "a schema error names why");
    }
  }
  file.Write(reinterpret_cast<const uint8_t*>(text.data()), text.size());

  Result<FeatureFile> read = ReadFeatureFile(file.path(), options);
  if (!read.ok()) {
    fuzz::Require(!read.status().message().empty(), "a read error names why");
    return 0;
  }
  const FeatureTable& t = read->table;
  fuzz::Require(t.rows == read->ids.size(), "one row per ID");
  CheckTable(t);

  FeatureIndexStats stats;
  const FeatureTable indexed = IndexFeatures(*read, read->ids, &stats);
  fuzz::Require(stats.unknown_rows == 0 && stats.missing_rows == 0, "its own IDs are all found");
  CheckTable(indexed);
  fuzz::Require(indexed.offsets == t.offsets && indexed.ids == t.ids, "indexing keeps the ids");

  std::vector<uint32_t> reversed(t.rows);
  for (uint32_t r = 0; r < t.rows; ++r) reversed[r] = t.rows - 1 - r;
  const FeatureTable selected = SelectFeatureRows(t, reversed);
  CheckTable(selected);
  fuzz::Require(selected.rows == t.rows, "selection keeps the row count");
  return 0;
}
