// Side-feature readers. Feature files are small (one line per user or item),
// so they are read line by line with std::getline; only bytes are compared,
// so titles in any encoding pass through untouched.
#include "data/side_features.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <unordered_map>
#include <utility>

#include "data/text.h"

namespace fedrec {
namespace {

using text::FormatFloat;
using text::Quote;
using text::Where;

std::vector<std::string_view> Split(std::string_view s, std::string_view sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (;;) {
    const size_t at = s.find(sep, start);
    if (at == std::string_view::npos) {
      out.push_back(s.substr(start));
      return out;
    }
    out.push_back(s.substr(start, at - start));
    start = at + sep.size();
  }
}

std::string_view TrimSpaces(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

bool ParseDouble(std::string_view s, double* v) {
  if (s.empty()) return false;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *v);
  return ec == std::errc() && end == s.data() + s.size() && std::isfinite(*v);
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

// The lines of a file, without "\r\n"/"\n" (nor a byte-order mark on
// line 1), numbered from 1.
class Lines {
 public:
  explicit Lines(std::string path) : path_(std::move(path)) {}
  Status Open() {
    in_.open(path_, std::ios::binary);
    if (!in_) {
      if (!std::filesystem::exists(path_))
        return Status::NotFound("feature file " + Quote(path_) + " does not exist");
      return Status::IoError("cannot read feature file " + Quote(path_));
    }
    return Status::Ok();
  }
  bool Next(std::string_view* line) {
    if (!std::getline(in_, buf_)) return false;
    if (++number_ == 1 && buf_.starts_with(text::kUtf8Bom)) buf_.erase(0, text::kUtf8Bom.size());
    if (!buf_.empty() && buf_.back() == '\r') buf_.pop_back();
    *line = buf_;
    return true;
  }
  Status Finish() const {
    if (in_.bad()) return Status::IoError("cannot read feature file " + Quote(path_));
    return Status::Ok();
  }
  uint64_t number() const { return number_; }

 private:
  std::string path_;
  std::ifstream in_;
  std::string buf_;
  uint64_t number_ = 0;
};

// ---------------------------------------------------------------------------
// Vocabularies.

const std::vector<std::string>& AgeGroups() {
  static const std::vector<std::string> groups = {"<18",   "18-24", "25-34", "35-44",
                                                  "45-49", "50-55", "56+"};
  return groups;
}

const std::vector<std::string>& Ml100kOccupations() {
  static const std::vector<std::string> list = {
      "administrator", "artist",     "doctor",     "educator", "engineer",  "entertainment",
      "executive",     "healthcare", "homemaker",  "lawyer",   "librarian", "marketing",
      "none",          "other",      "programmer", "retired",  "salesman",  "scientist",
      "student",       "technician", "writer"};
  return list;
}

const std::vector<std::string>& Ml1mOccupations() {
  static const std::vector<std::string> list = {"other or not specified",
                                                "academic/educator",
                                                "artist",
                                                "clerical/admin",
                                                "college/grad student",
                                                "customer service",
                                                "doctor/health care",
                                                "executive/managerial",
                                                "farmer",
                                                "homemaker",
                                                "K-12 student",
                                                "lawyer",
                                                "programmer",
                                                "retired",
                                                "sales/marketing",
                                                "scientist",
                                                "self-employed",
                                                "technician/engineer",
                                                "tradesman/craftsman",
                                                "unemployed",
                                                "writer"};
  return list;
}

const std::vector<std::string>& MovieLensGenres() {
  static const std::vector<std::string> list = {
      "unknown",     "Action", "Adventure", "Animation", "Children's", "Comedy",  "Crime",
      "Documentary", "Drama",  "Fantasy",   "Film-Noir", "Horror",     "Musical", "Mystery",
      "Romance",     "Sci-Fi", "Thriller",  "War",       "Western"};
  return list;
}

constexpr double kAgeLow = 0.0, kAgeHigh = 100.0;
constexpr double kYearLow = 1900.0, kYearHigh = 2030.0;

// u.occupation: one name per line (blank lines skipped).
Result<std::vector<std::string>> ReadNameList(const std::string& path) {
  Lines lines(path);
  FEDREC_RETURN_IF_ERROR(lines.Open());
  std::vector<std::string> names;
  std::unordered_map<std::string, uint64_t> seen;
  std::string_view line;
  while (lines.Next(&line)) {
    const std::string_view name = TrimSpaces(line);
    if (name.empty()) continue;
    auto [it, fresh] = seen.emplace(std::string(name), lines.number());
    if (!fresh) {
      return Status::InvalidArgument(Where(path, lines.number()) + ": expected distinct names, " +
                                     "found " + Quote(name) + " again (first at line " +
                                     std::to_string(it->second) + ")");
    }
    names.emplace_back(name);
  }
  FEDREC_RETURN_IF_ERROR(lines.Finish());
  if (names.empty()) return Status::InvalidArgument(path + ": expected names, found none");
  return names;
}

// u.genre: "name|id" lines with ids 0, 1, 2... in order.
Result<std::vector<std::string>> ReadGenreList(const std::string& path) {
  Lines lines(path);
  FEDREC_RETURN_IF_ERROR(lines.Open());
  std::vector<std::string> names;
  std::string_view line;
  while (lines.Next(&line)) {
    if (TrimSpaces(line).empty()) continue;
    const std::vector<std::string_view> f = Split(line, "|");
    double id = -1;
    if (f.size() != 2 || f[0].empty() || !ParseDouble(f[1], &id) ||
        id != static_cast<double>(names.size())) {
      return Status::InvalidArgument(
          Where(path, lines.number()) + ": expected \"name|" + std::to_string(names.size()) +
          "\" (genre name and its id, ids in order from 0), found " + Quote(line));
    }
    names.emplace_back(f[0]);
  }
  FEDREC_RETURN_IF_ERROR(lines.Finish());
  if (names.empty()) return Status::InvalidArgument(path + ": expected genres, found none");
  return names;
}

// The list in `name` next to `path` when that file exists, else `fallback`.
Result<std::vector<std::string>> SiblingList(const std::string& path, const char* name,
                                             bool genre_format,
                                             const std::vector<std::string>& fallback) {
  const std::filesystem::path sibling = std::filesystem::path(path).parent_path() / name;
  std::error_code ec;
  if (!std::filesystem::exists(sibling, ec)) return fallback;
  return genre_format ? ReadGenreList(sibling.string()) : ReadNameList(sibling.string());
}

std::unordered_map<std::string, uint32_t> IndexOf(const std::vector<std::string>& labels) {
  std::unordered_map<std::string, uint32_t> index;
  for (uint32_t i = 0; i < labels.size(); ++i) index.emplace(labels[i], i);
  return index;
}

FeatureField Categorical(std::string name, std::vector<std::string> labels) {
  FeatureField f;
  f.name = std::move(name);
  f.vocabulary = static_cast<uint32_t>(labels.size());
  f.labels = std::move(labels);
  return f;
}

FeatureField Numeric(std::string name) {
  FeatureField f;
  f.name = std::move(name);
  f.numeric = true;
  return f;
}

// One row under construction: ids per categorical field, values per numeric.
struct Row {
  std::vector<std::vector<uint32_t>> ids;
  std::vector<float> values;
};

// Rows appended in file order, keyed by raw ID (duplicates are errors).
class FileBuilder {
 public:
  FileBuilder(const std::string& path, std::vector<FeatureField> fields) : path_(path) {
    file_.table.fields = std::move(fields);
    categorical_ = file_.table.categorical();
    numerics_ = file_.table.numerics();
    if (categorical_ > 0) file_.table.offsets.push_back(0);
  }
  Row NewRow() const {
    Row row;
    row.ids.resize(categorical_);
    row.values.assign(numerics_, 0.0f);
    return row;
  }
  Status Add(std::string_view id, uint64_t line, const Row& row) {
    if (id.empty()) {
      return Status::InvalidArgument(Where(path_, line) +
                                     ": expected a non-empty ID in the id field, found \"\"");
    }
    if (const int64_t at = file_.ids.Find(id); at >= 0) {
      return Status::InvalidArgument(Where(path_, line) + ": expected each ID once, found ID " +
                                     Quote(id) + " again (first at line " +
                                     std::to_string(lines_[static_cast<size_t>(at)]) + ")");
    }
    file_.ids.Intern(id);
    lines_.push_back(line);
    FeatureTable& t = file_.table;
    for (const std::vector<uint32_t>& ids : row.ids) {
      t.ids.insert(t.ids.end(), ids.begin(), ids.end());
      t.offsets.push_back(static_cast<uint32_t>(t.ids.size()));
    }
    t.numeric.insert(t.numeric.end(), row.values.begin(), row.values.end());
    ++t.rows;
    return Status::Ok();
  }
  Result<FeatureFile> Finish() {
    if (file_.table.rows == 0)
      return Status::InvalidArgument(path_ + ": expected feature rows, found none");
    return std::move(file_);
  }

 private:
  const std::string& path_;
  FeatureFile file_;
  std::vector<uint64_t> lines_;
  uint32_t categorical_ = 0, numerics_ = 0;
};

// `value` scaled from [low, high] to [0, 1], or an error naming the field.
Result<float> Scaled(std::string_view text, double low, double high, const std::string& where,
                     std::string_view field, std::string_view line) {
  double v;
  if (!ParseDouble(text, &v) || v < low || v > high) {
    return Status::InvalidArgument(where + ": expected a number in [" + FormatFloat(low) + ", " +
                                   FormatFloat(high) + "] in field " + std::string(field) +
                                   ", found " + Quote(text) + ": " + Quote(line));
  }
  return high > low ? static_cast<float>((v - low) / (high - low)) : 0.0f;
}

Status FieldCount(const std::string& where, size_t want, size_t found, const std::string& expected,
                  std::string_view line) {
  return Status::InvalidArgument(where + ": expected " + std::to_string(want) + " " + expected +
                                 ", found " + std::to_string(found) + ": " + Quote(line));
}

// Fields of the MovieLens formats (see side_features.h).
std::vector<FeatureField> MovieLensUserFields(std::vector<std::string> occupations) {
  return {Numeric("age"), Categorical("age_group", AgeGroups()), Categorical("gender", {"F", "M"}),
          Categorical("occupation", std::move(occupations))};
}

std::vector<FeatureField> MovieLensItemFields(std::vector<std::string> genres) {
  return {Categorical("genres", std::move(genres)), Numeric("year")};
}

Status UnknownLabel(const std::string& where, std::string_view field, std::string_view value,
                    std::string_view line) {
  return Status::InvalidArgument(where + ": expected a known " + std::string(field) + " in field " +
                                 std::string(field) + ", found " + Quote(value) + ": " +
                                 Quote(line));
}

// Year of a title ending in "(yyyy)" (possibly followed by spaces), or nullopt.
std::optional<double> TitleYear(std::string_view title) {
  title = TrimSpaces(title);
  const size_t open = title.rfind('(');
  if (open == std::string_view::npos || title.size() - open != 6 || title.back() != ')')
    return std::nullopt;
  double year;
  if (!ParseDouble(title.substr(open + 1, 4), &year)) return std::nullopt;
  return year;
}

Result<float> YearValue(std::optional<double> year, const std::string& where,
                        std::string_view line) {
  if (!year) return 0.0f;
  return Scaled(FormatFloat(*year), kYearLow, kYearHigh, where, "year", line);
}

Status ReadMl100kUsers(const std::string& path, Lines* lines, FeatureFile* out) {
  FEDREC_ASSIGN_OR_RETURN(std::vector<std::string> occupations,
                          SiblingList(path, "u.occupation", false, Ml100kOccupations()));
  const auto occupation_index = IndexOf(occupations);
  FileBuilder builder(path, MovieLensUserFields(std::move(occupations)));
  std::string_view line;
  while (lines->Next(&line)) {
    if (line.empty()) continue;
    const std::string where = Where(path, lines->number());
    const std::vector<std::string_view> f = Split(line, "|");
    if (f.size() != 5)
      return FieldCount(where, 5, f.size(), "'|'-separated fields (id|age|gender|occupation|zip)",
                        line);
    Row row = builder.NewRow();
    double age;
    if (!ParseDouble(f[1], &age) || age < kAgeLow || age > kAgeHigh) {
      return Status::InvalidArgument(where + ": expected an age in [0, 100] in field age, found " +
                                     Quote(f[1]) + ": " + Quote(line));
    }
    row.values[0] = static_cast<float>((age - kAgeLow) / (kAgeHigh - kAgeLow));
    row.ids[0].push_back(AgeGroupOf(age));
    if (f[2] != "F" && f[2] != "M") {
      return Status::InvalidArgument(where + ": expected F or M in field gender, found " +
                                     Quote(f[2]) + ": " + Quote(line));
    }
    row.ids[1].push_back(f[2] == "F" ? 0 : 1);
    const auto occupation = occupation_index.find(std::string(f[3]));
    if (occupation == occupation_index.end()) return UnknownLabel(where, "occupation", f[3], line);
    row.ids[2].push_back(occupation->second);
    FEDREC_RETURN_IF_ERROR(builder.Add(f[0], lines->number(), row));
  }
  FEDREC_RETURN_IF_ERROR(lines->Finish());
  FEDREC_ASSIGN_OR_RETURN(*out, builder.Finish());
  return Status::Ok();
}

Status ReadMl100kItems(const std::string& path, Lines* lines, FeatureFile* out) {
  FEDREC_ASSIGN_OR_RETURN(std::vector<std::string> genres,
                          SiblingList(path, "u.genre", true, MovieLensGenres()));
  const size_t n_genres = genres.size();
  FileBuilder builder(path, MovieLensItemFields(std::move(genres)));
  std::string_view line;
  while (lines->Next(&line)) {
    if (line.empty()) continue;
    const std::string where = Where(path, lines->number());
    const std::vector<std::string_view> f = Split(line, "|");
    if (f.size() != 5 + n_genres) {
      return FieldCount(where, 5 + n_genres, f.size(),
                        "'|'-separated fields (id|title|release date|video release date|URL|" +
                            std::to_string(n_genres) + " genre flags)",
                        line);
    }
    Row row = builder.NewRow();
    for (size_t g = 0; g < n_genres; ++g) {
      const std::string_view flag = f[5 + g];
      if (flag != "0" && flag != "1") {
        return Status::InvalidArgument(where + ": expected 0 or 1 in genre flag " +
                                       std::to_string(g + 1) + " (field " + std::to_string(6 + g) +
                                       "), found " + Quote(flag) + ": " + Quote(line));
      }
      if (flag == "1") row.ids[0].push_back(static_cast<uint32_t>(g));
    }
    // Release date "dd-Mon-yyyy"; empty: the year of the title, if any.
    std::optional<double> year;
    const std::string_view date = TrimSpaces(f[2]);
    if (!date.empty()) {
      double y;
      if (date.size() < 4 || !ParseDouble(date.substr(date.size() - 4), &y)) {
        return Status::InvalidArgument(where +
                                       ": expected a release date \"dd-Mon-yyyy\" in field "
                                       "release date, found " +
                                       Quote(date) + ": " + Quote(line));
      }
      year = y;
    } else {
      year = TitleYear(f[1]);
    }
    FEDREC_ASSIGN_OR_RETURN(row.values[0], YearValue(year, where, line));
    FEDREC_RETURN_IF_ERROR(builder.Add(f[0], lines->number(), row));
  }
  FEDREC_RETURN_IF_ERROR(lines->Finish());
  FEDREC_ASSIGN_OR_RETURN(*out, builder.Finish());
  return Status::Ok();
}

// ml1m age codes: 1 (under 18), 18, 25, 35, 45, 50, 56.
int Ml1mAgeGroup(std::string_view code) {
  static const char* const kCodes[] = {"1", "18", "25", "35", "45", "50", "56"};
  for (int g = 0; g < 7; ++g) {
    if (code == kCodes[g]) return g;
  }
  return -1;
}

Status ReadMl1mUsers(const std::string& path, Lines* lines, FeatureFile* out) {
  const std::vector<std::string>& occupations = Ml1mOccupations();
  FileBuilder builder(path, MovieLensUserFields(occupations));
  std::string_view line;
  while (lines->Next(&line)) {
    if (line.empty()) continue;
    const std::string where = Where(path, lines->number());
    const std::vector<std::string_view> f = Split(line, "::");
    if (f.size() != 5) {
      return FieldCount(where, 5, f.size(),
                        "\"::\"-separated fields (UserID::Gender::Age::Occupation::Zip-code)",
                        line);
    }
    Row row = builder.NewRow();
    if (f[1] != "F" && f[1] != "M") {
      return Status::InvalidArgument(where + ": expected F or M in field gender, found " +
                                     Quote(f[1]) + ": " + Quote(line));
    }
    const int group = Ml1mAgeGroup(f[2]);
    if (group < 0) {
      return Status::InvalidArgument(
          where + ": expected an age code (1, 18, 25, 35, 45, 50 or 56) in field age, found " +
          Quote(f[2]) + ": " + Quote(line));
    }
    double code = 0;
    ParseDouble(f[2], &code);
    row.values[0] = static_cast<float>((code - kAgeLow) / (kAgeHigh - kAgeLow));
    row.ids[0].push_back(static_cast<uint32_t>(group));
    row.ids[1].push_back(f[1] == "F" ? 0 : 1);
    double occupation = -1;
    if (!ParseDouble(f[3], &occupation) || occupation < 0 ||
        occupation >= static_cast<double>(occupations.size()) ||
        occupation != std::floor(occupation)) {
      return Status::InvalidArgument(
          where + ": expected an occupation code 0.." + std::to_string(occupations.size() - 1) +
          " in field occupation, found " + Quote(f[3]) + ": " + Quote(line));
    }
    row.ids[2].push_back(static_cast<uint32_t>(occupation));
    FEDREC_RETURN_IF_ERROR(builder.Add(f[0], lines->number(), row));
  }
  FEDREC_RETURN_IF_ERROR(lines->Finish());
  FEDREC_ASSIGN_OR_RETURN(*out, builder.Finish());
  return Status::Ok();
}

Status ReadMl1mItems(const std::string& path, Lines* lines, FeatureFile* out) {
  const std::vector<std::string>& genres = MovieLensGenres();
  const auto genre_index = IndexOf(genres);
  FileBuilder builder(path, MovieLensItemFields(genres));
  std::string_view line;
  while (lines->Next(&line)) {
    if (line.empty()) continue;
    const std::string where = Where(path, lines->number());
    // The title may itself hold "::": the id is before the first, the genres
    // after the last.
    const size_t first = line.find("::");
    const size_t last = line.rfind("::");
    if (first == std::string_view::npos || first == last) {
      return FieldCount(where, 3, first == std::string_view::npos ? 1 : 2,
                        "\"::\"-separated fields (MovieID::Title::Genres)", line);
    }
    const std::string_view id = line.substr(0, first);
    const std::string_view title = line.substr(first + 2, last - first - 2);
    const std::string_view genre_list = line.substr(last + 2);
    Row row = builder.NewRow();
    if (!genre_list.empty()) {
      for (std::string_view g : Split(genre_list, "|")) {
        const auto it = genre_index.find(std::string(g));
        if (it == genre_index.end()) return UnknownLabel(where, "genres", g, line);
        if (std::find(row.ids[0].begin(), row.ids[0].end(), it->second) == row.ids[0].end())
          row.ids[0].push_back(it->second);
      }
    }
    FEDREC_ASSIGN_OR_RETURN(row.values[0], YearValue(TitleYear(title), where, line));
    FEDREC_RETURN_IF_ERROR(builder.Add(id, lines->number(), row));
  }
  FEDREC_RETURN_IF_ERROR(lines->Finish());
  FEDREC_ASSIGN_OR_RETURN(*out, builder.Finish());
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// csv with a schema.

std::vector<FeatureField> SchemaFields(const FeatureSchema& schema) {
  std::vector<FeatureField> fields;
  for (const FeatureColumn& c : schema.columns) {
    switch (c.kind) {
      case FeatureColumn::Kind::kId:
      case FeatureColumn::Kind::kSkip:
        break;
      case FeatureColumn::Kind::kNumeric:
        fields.push_back(Numeric(c.name));
        break;
      case FeatureColumn::Kind::kCategory:
        fields.push_back(Categorical(c.name, c.labels));
        break;
      case FeatureColumn::Kind::kHash: {
        FeatureField f;
        f.name = c.name;
        f.vocabulary = c.buckets;
        fields.push_back(std::move(f));
        break;
      }
    }
  }
  return fields;
}

Status ReadCsv(const std::string& path, const FeatureSchema& schema, Lines* lines,
               FeatureFile* out) {
  FileBuilder builder(path, SchemaFields(schema));
  std::vector<std::unordered_map<std::string, uint32_t>> label_index(schema.columns.size());
  for (size_t c = 0; c < schema.columns.size(); ++c) {
    if (schema.columns[c].kind == FeatureColumn::Kind::kCategory)
      label_index[c] = IndexOf(schema.columns[c].labels);
  }
  std::string_view line;
  bool first = true;
  while (lines->Next(&line)) {
    if (line.empty()) continue;
    const std::string where = Where(path, lines->number());
    const std::vector<std::string_view> f = Split(line, ",");
    if (f.size() != schema.columns.size()) {
      return FieldCount(where, schema.columns.size(), f.size(),
                        "comma-separated fields (as the schema declares)", line);
    }
    const FeatureColumn& id_column = schema.columns[schema.id_column];
    const bool header = first && EqualsIgnoreCase(TrimSpaces(f[schema.id_column]), id_column.name);
    first = false;
    if (header) continue;
    Row row = builder.NewRow();
    size_t cat = 0, num = 0;
    for (size_t c = 0; c < schema.columns.size(); ++c) {
      const FeatureColumn& column = schema.columns[c];
      const std::string_view value = TrimSpaces(f[c]);
      switch (column.kind) {
        case FeatureColumn::Kind::kId:
        case FeatureColumn::Kind::kSkip:
          break;
        case FeatureColumn::Kind::kNumeric:
          if (!value.empty()) {
            FEDREC_ASSIGN_OR_RETURN(
                row.values[num],
                Scaled(value, column.low, column.high, where,
                       column.name + " (column " + std::to_string(c + 1) + ")", line));
          }
          ++num;
          break;
        case FeatureColumn::Kind::kCategory:
        case FeatureColumn::Kind::kHash: {
          std::vector<std::string_view> parts;
          if (!value.empty()) {
            parts = column.multi ? Split(value, std::string_view(&column.multi, 1))
                                 : std::vector<std::string_view>{value};
          }
          for (std::string_view part : parts) {
            part = TrimSpaces(part);
            if (part.empty()) continue;
            uint32_t id;
            if (column.kind == FeatureColumn::Kind::kHash) {
              id = static_cast<uint32_t>(StableIdKey(part) % column.buckets);
            } else {
              const auto it = label_index[c].find(std::string(part));
              if (it == label_index[c].end()) {
                std::string labels;
                for (const std::string& l : column.labels)
                  labels += (labels.empty() ? "" : "|") + l;
                return Status::InvalidArgument(where + ": expected one of " + labels +
                                               " in field " + column.name + " (column " +
                                               std::to_string(c + 1) + "), found " + Quote(part) +
                                               ": " + Quote(line));
              }
              id = it->second;
            }
            std::vector<uint32_t>& ids = row.ids[cat];
            if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
          }
          ++cat;
          break;
        }
      }
    }
    FEDREC_RETURN_IF_ERROR(builder.Add(TrimSpaces(f[schema.id_column]), lines->number(), row));
  }
  FEDREC_RETURN_IF_ERROR(lines->Finish());
  FEDREC_ASSIGN_OR_RETURN(*out, builder.Finish());
  return Status::Ok();
}

Result<uint32_t> ParseCount(std::string_view text, const std::string& what) {
  uint32_t n = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || n == 0) {
    return Status::InvalidArgument("expected a bucket count >= 1 in " + what + ", found " +
                                   Quote(text));
  }
  return n;
}

Result<FeatureColumn> ParseColumn(std::string_view spec) {
  const std::string what = "column spec " + Quote(spec);
  std::vector<std::string_view> p = Split(spec, ":");
  for (std::string_view& s : p) s = TrimSpaces(s);
  FeatureColumn c;
  if (p.size() == 1 && p[0] == "id") {
    c.name = "id";
    c.kind = FeatureColumn::Kind::kId;
    return c;
  }
  if (p.size() < 2 || p[0].empty()) {
    return Status::InvalidArgument(
        "expected NAME:KIND (id, skip, numeric, category, hash or multi) in " + what);
  }
  c.name = std::string(p[0]);
  std::string_view kind = p[1];
  size_t at = 2;
  if (kind == "multi") {
    if (p.size() < 4 || p[2].size() != 1 || p[2][0] == ',') {
      return Status::InvalidArgument(
          "expected NAME:multi:SEP:category:LABELS or NAME:multi:SEP:hash:N with SEP one "
          "character other than ',' and ':' in " +
          what);
    }
    c.multi = p[2][0];
    kind = p[3];
    at = 4;
    if (kind != "category" && kind != "hash") {
      return Status::InvalidArgument("expected category or hash after multi:SEP in " + what +
                                     ", found " + Quote(kind));
    }
  }
  const size_t args = p.size() - at;
  if (kind == "id" || kind == "skip") {
    if (args != 0)
      return Status::InvalidArgument("expected NAME:" + std::string(kind) + " in " + what);
    c.kind = kind == "id" ? FeatureColumn::Kind::kId : FeatureColumn::Kind::kSkip;
  } else if (kind == "numeric") {
    c.kind = FeatureColumn::Kind::kNumeric;
    if (args != 2 || !ParseDouble(p[at], &c.low) || !ParseDouble(p[at + 1], &c.high) ||
        !(c.low < c.high)) {
      return Status::InvalidArgument("expected NAME:numeric:LOW:HIGH with LOW < HIGH in " + what);
    }
  } else if (kind == "category") {
    c.kind = FeatureColumn::Kind::kCategory;
    if (args != 1 || p[at].empty()) {
      return Status::InvalidArgument("expected NAME:category:A|B|... (the labels) in " + what);
    }
    for (std::string_view label : Split(p[at], "|")) {
      label = TrimSpaces(label);
      if (label.empty() || std::find(c.labels.begin(), c.labels.end(), label) != c.labels.end()) {
        return Status::InvalidArgument("expected distinct non-empty labels in " + what +
                                       ", found " + Quote(label));
      }
      if (c.multi != 0 && label.find(c.multi) != std::string_view::npos) {
        return Status::InvalidArgument("expected labels without the separator in " + what +
                                       ", found " + Quote(label));
      }
      c.labels.emplace_back(label);
    }
  } else if (kind == "hash") {
    c.kind = FeatureColumn::Kind::kHash;
    if (args != 1) return Status::InvalidArgument("expected NAME:hash:N in " + what);
    FEDREC_ASSIGN_OR_RETURN(c.buckets, ParseCount(p[at], what));
  } else {
    return Status::InvalidArgument(
        "expected a kind id, skip, numeric, category, hash or multi in " + what + ", found " +
        Quote(kind));
  }
  return c;
}

}  // namespace

uint32_t AgeGroupOf(double age) {
  if (age < 18) return 0;
  if (age < 25) return 1;
  if (age < 35) return 2;
  if (age < 45) return 3;
  if (age < 50) return 4;
  if (age < 56) return 5;
  return 6;
}

Result<FeatureFormat> ParseFeatureFormat(std::string_view name) {
  for (FeatureFormat f :
       {FeatureFormat::kAuto, FeatureFormat::kMl100k, FeatureFormat::kMl1m, FeatureFormat::kCsv}) {
    if (name == FeatureFormatName(f)) return f;
  }
  return Status::InvalidArgument("expected a feature format auto, ml100k, ml1m or csv, found " +
                                 Quote(name));
}

const char* FeatureFormatName(FeatureFormat format) {
  switch (format) {
    case FeatureFormat::kAuto:
      return "auto";
    case FeatureFormat::kMl100k:
      return "ml100k";
    case FeatureFormat::kMl1m:
      return "ml1m";
    case FeatureFormat::kCsv:
      return "csv";
  }
  return "unknown";
}

Result<FeatureSchema> ParseFeatureSchema(std::string_view text) {
  FeatureSchema schema;
  bool have_id = false;
  std::vector<std::string_view> names;
  for (std::string_view spec : Split(text, ",")) {
    spec = TrimSpaces(spec);
    FEDREC_ASSIGN_OR_RETURN(FeatureColumn column, ParseColumn(spec));
    if (column.kind == FeatureColumn::Kind::kId) {
      if (have_id) {
        return Status::InvalidArgument(
            "expected exactly one id column in the schema, found a "
            "second one: " +
            Quote(spec));
      }
      have_id = true;
      schema.id_column = schema.columns.size();
    }
    schema.columns.push_back(std::move(column));
  }
  if (!have_id) {
    return Status::InvalidArgument("expected an id column (\"id\" or \"NAME:id\") in the schema " +
                                   Quote(text) + ", found none");
  }
  for (size_t i = 0; i < schema.columns.size(); ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (schema.columns[i].name == schema.columns[j].name) {
        return Status::InvalidArgument("expected distinct column names in the schema, found " +
                                       Quote(schema.columns[i].name) + " twice");
      }
    }
  }
  return schema;
}

Result<FeatureFormat> DetectFeatureFormat(const std::string& path,
                                          const FeatureReadOptions& options) {
  if (options.format != FeatureFormat::kAuto) return options.format;
  if (!options.schema.empty()) return FeatureFormat::kCsv;
  Lines lines(path);
  FEDREC_RETURN_IF_ERROR(lines.Open());
  std::string_view line;
  while (lines.Next(&line)) {
    if (line.empty()) continue;
    if (line.find("::") != std::string_view::npos) return FeatureFormat::kMl1m;
    if (line.find('|') != std::string_view::npos) return FeatureFormat::kMl100k;
    return Status::InvalidArgument(
        Where(path, lines.number()) + ": cannot detect the feature format from the first line " +
        Quote(line) +
        "; expected '|'-separated (ml100k) or \"::\"-separated (ml1m) fields, or declare a csv "
        "schema");
  }
  FEDREC_RETURN_IF_ERROR(lines.Finish());
  return Status::InvalidArgument(path + ": expected feature rows, found none");
}

Result<FeatureFile> ReadFeatureFile(const std::string& path, const FeatureReadOptions& options) {
  FEDREC_ASSIGN_OR_RETURN(const FeatureFormat format, DetectFeatureFormat(path, options));
  FeatureSchema schema;
  if (format == FeatureFormat::kCsv) {
    if (options.schema.empty()) {
      return Status::InvalidArgument("csv feature file " + Quote(path) +
                                     ": expected a schema declaring its columns, found none");
    }
    FEDREC_ASSIGN_OR_RETURN(schema, ParseFeatureSchema(options.schema));
  }
  Lines lines(path);
  FEDREC_RETURN_IF_ERROR(lines.Open());
  FeatureFile file;
  const bool users = options.entity == FeatureEntity::kUsers;
  switch (format) {
    case FeatureFormat::kMl100k:
      FEDREC_RETURN_IF_ERROR(users ? ReadMl100kUsers(path, &lines, &file)
                                   : ReadMl100kItems(path, &lines, &file));
      break;
    case FeatureFormat::kMl1m:
      FEDREC_RETURN_IF_ERROR(users ? ReadMl1mUsers(path, &lines, &file)
                                   : ReadMl1mItems(path, &lines, &file));
      break;
    case FeatureFormat::kCsv:
    case FeatureFormat::kAuto:
      FEDREC_RETURN_IF_ERROR(ReadCsv(path, schema, &lines, &file));
      break;
  }
  return file;
}

namespace {

template <typename RawOf>
FeatureTable IndexBy(const FeatureFile& file, uint32_t n, RawOf raw_of, FeatureIndexStats* stats) {
  std::vector<int64_t> source(n, -1);
  uint64_t found = 0;
  for (uint32_t r = 0; r < n; ++r) {
    source[r] = file.ids.Find(raw_of(r));
    found += source[r] >= 0;
  }
  const FeatureTable& from = file.table;
  FeatureTable t;
  t.fields = from.fields;
  t.rows = n;
  const uint32_t cats = from.categorical(), nums = from.numerics();
  if (cats > 0) t.offsets.push_back(0);
  t.numeric.reserve(static_cast<size_t>(n) * nums);
  for (uint32_t r = 0; r < n; ++r) {
    for (uint32_t c = 0; c < cats; ++c) {
      if (source[r] >= 0) {
        const std::span<const uint32_t> ids = from.Ids(static_cast<uint32_t>(source[r]), c);
        t.ids.insert(t.ids.end(), ids.begin(), ids.end());
      }
      t.offsets.push_back(static_cast<uint32_t>(t.ids.size()));
    }
    if (source[r] >= 0) {
      const std::span<const float> values = from.Numeric(static_cast<uint32_t>(source[r]));
      t.numeric.insert(t.numeric.end(), values.begin(), values.end());
    } else {
      t.numeric.insert(t.numeric.end(), nums, 0.0f);
    }
  }
  if (stats != nullptr) {
    stats->missing_rows = n - found;
    // IDs are distinct on both sides, so each found ID matches one file row.
    stats->unknown_rows = from.rows - found;
  }
  return t;
}

}  // namespace

FeatureTable IndexFeatures(const FeatureFile& file, const IdMap& ids, FeatureIndexStats* stats) {
  return IndexBy(
      file, ids.size(), [&ids](uint32_t r) -> std::string_view { return ids.Raw(r); }, stats);
}

FeatureTable IndexFeatures(const FeatureFile& file, std::span<const std::string> ids,
                           FeatureIndexStats* stats) {
  return IndexBy(
      file, static_cast<uint32_t>(ids.size()),
      [&ids](uint32_t r) -> std::string_view { return ids[r]; }, stats);
}

FeatureTable SelectFeatureRows(const FeatureTable& table, std::span<const uint32_t> rows) {
  FeatureTable t;
  if (table.empty()) return t;
  t.fields = table.fields;
  t.rows = static_cast<uint32_t>(rows.size());
  const uint32_t cats = table.categorical();
  if (cats > 0) t.offsets.push_back(0);
  for (uint32_t r : rows) {
    for (uint32_t c = 0; c < cats; ++c) {
      const std::span<const uint32_t> ids = table.Ids(r, c);
      t.ids.insert(t.ids.end(), ids.begin(), ids.end());
      t.offsets.push_back(static_cast<uint32_t>(t.ids.size()));
    }
    const std::span<const float> values = table.Numeric(r);
    t.numeric.insert(t.numeric.end(), values.begin(), values.end());
  }
  return t;
}

int64_t CategoricalFieldIndex(const FeatureTable& table, std::string_view name) {
  int64_t c = 0;
  for (const FeatureField& f : table.fields) {
    if (f.numeric) continue;
    if (f.name == name) return c;
    ++c;
  }
  return -1;
}

}  // namespace fedrec
