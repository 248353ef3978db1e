// Rating file readers.
//
// Files are read in large blocks with POSIX read(2) and parsed in place with
// std::string_view and std::from_chars: no per-line allocation. Raw IDs are
// looked up in a reader-local open-addressing table backed by the caller's
// IdMaps (read-only while parsing); IDs new to the IdMaps are collected in
// first-seen order and interned only once the whole file parsed, so a failed
// read leaves the IdMaps untouched. Ratings are appended to the output vector
// directly and truncated back to its old size on error.
//
// Line rules shared by all formats: a UTF-8 byte-order mark at the start of
// the file is skipped; "\n" or "\r\n" endings; empty lines
// (anywhere, typically trailing) are skipped; line numbers in messages are
// 1-based physical line numbers.
#include "data/readers.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "base/random.h"
#include "data/text.h"

namespace fedrec {
namespace {

using text::FormatFloat;
using text::Quote;
using text::Where;

constexpr size_t kBlockBytes = size_t{8} << 20;      // one read(2)
constexpr size_t kMaxLineBytes = size_t{1} << 20;    // longer lines are an error
constexpr uint64_t kMaxReserve = uint64_t{1} << 26;  // ratings reserved up front

// ---------------------------------------------------------------------------
// LineReader: a file's lines, block by block.

class LineReader {
 public:
  explicit LineReader(std::string path) : path_(std::move(path)) {}
  ~LineReader() {
    if (fd_ >= 0) ::close(fd_);
  }
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;
  LineReader(LineReader&&) = delete;
  LineReader& operator=(LineReader&&) = delete;

  Status Open() {
    do {
      fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    } while (fd_ < 0 && errno == EINTR);
    if (fd_ < 0) {
      const int err = errno;
      const std::string msg = "cannot open " + Quote(path_) + ": " + std::strerror(err);
      if (err == ENOENT || err == ENOTDIR) return Status::NotFound(msg);
      return Status::IoError(msg);
    }
    buf_ = std::make_unique_for_overwrite<char[]>(kBlockBytes + kMaxLineBytes);
    return Status::Ok();
  }

  // Sets `*line` to the next line without its "\n" or "\r\n" and returns true,
  // or returns false at the end of the file or on an error (then `status()`
  // is not OK).
  bool Next(std::string_view* line) {
    for (;;) {
      const size_t avail = end_ - pos_;
      const char* start = buf_.get() + pos_;
      if (const void* nl = std::memchr(start, '\n', avail)) {
        const size_t len = static_cast<const char*>(nl) - start;
        pos_ += len + 1;
        *line = Trim(std::string_view(start, len));
        return true;
      }
      if (eof_) {
        if (avail == 0) return false;
        pos_ = end_;
        *line = Trim(std::string_view(start, avail));
        return true;
      }
      if (!Refill()) return false;
    }
  }

  // Rough number of lines in the file, from its size and the lines in the
  // buffered block; 0 when unknown. For reserving the output.
  uint64_t EstimateLines() const {
    struct stat st {};
    if (::fstat(fd_, &st) != 0 || st.st_size <= 0 || end_ == 0) return 0;
    const auto newlines =
        static_cast<uint64_t>(std::count(buf_.get(), buf_.get() + end_, '\n')) + 1;
    return static_cast<uint64_t>(static_cast<double>(st.st_size) / static_cast<double>(end_) *
                                 static_cast<double>(newlines) * 1.02) +
           16;
  }

  // Number of the line last returned by Next() (1-based).
  uint64_t line_number() const { return line_number_; }
  const Status& status() const { return status_; }

 private:
  // Counts the line and drops its "\r" (and, on line 1, a byte-order mark).
  std::string_view Trim(std::string_view line) {
    if (++line_number_ == 1) line = text::StripUtf8Bom(line);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    return line;
  }

  // Moves the partial line to the front of the buffer and reads more.
  bool Refill() {
    const size_t partial = end_ - pos_;
    if (partial > kMaxLineBytes) {
      status_ = Status::InvalidArgument(Where(path_, line_number_ + 1) + ": line longer than " +
                                        std::to_string(kMaxLineBytes) + " bytes");
      return false;
    }
    if (partial > 0 && pos_ > 0) std::memmove(buf_.get(), buf_.get() + pos_, partial);
    pos_ = 0;
    end_ = partial;
    const size_t room = kBlockBytes + kMaxLineBytes - end_;
    ssize_t got;
    do {
      got = ::read(fd_, buf_.get() + end_, room);
    } while (got < 0 && errno == EINTR);
    if (got < 0) {
      status_ = Status::IoError("cannot read " + Quote(path_) + ": " + std::strerror(errno));
      return false;
    }
    if (got == 0) eof_ = true;
    end_ += static_cast<size_t>(got);
    return true;
  }

  std::string path_;
  int fd_ = -1;
  std::unique_ptr<char[]> buf_;
  size_t pos_ = 0;
  size_t end_ = 0;
  bool eof_ = false;
  uint64_t line_number_ = 0;
  Status status_;
};

// First non-empty line of the file, or nullopt when there is none.
Result<std::optional<std::string_view>> FirstNonEmptyLine(LineReader* reader) {
  std::string_view line;
  while (reader->Next(&line)) {
    if (!line.empty()) return std::optional<std::string_view>(line);
  }
  if (!reader->status().ok()) return reader->status();
  return std::optional<std::string_view>();
}

Status NoRatings(const std::string& path) {
  return Status::InvalidArgument(path + ": contains no ratings");
}

// ---------------------------------------------------------------------------
// IdLookup: raw ID -> index against a read-only IdMap, collecting new IDs.

uint64_t HashBytes(std::string_view s) {
  uint64_t h = 0x243f6a8885a308d3ULL ^ s.size();
  const char* p = s.data();
  size_t n = s.size();
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    h = Mix64(h ^ w);
    p += 8;
    n -= 8;
  }
  uint64_t w = 0;
  if (n > 0) std::memcpy(&w, p, n);
  return Mix64(h ^ w);
}

class IdLookup {
 public:
  explicit IdLookup(const IdMap& base) : base_(base), base_size_(base.size()) {
    slots_.resize(kInitialSlots);
  }

  // Index of `raw`: its index in the base IdMap, or the index it will get when
  // the new IDs are committed.
  uint32_t Get(std::string_view raw) {
    // Fast path for small decimal IDs (MovieLens): a direct table. Only the
    // canonical spelling (no sign, no leading zero) maps to a number, so the
    // number identifies the raw string exactly.
    uint32_t number;
    if (!SmallNumber(raw, &number)) return GetByHash(raw);
    if (number < by_number_.size() && by_number_[number] != 0) return by_number_[number] - 1;
    const uint32_t index = GetByHash(raw);
    if (number >= by_number_.size()) {
      by_number_.resize(std::max<size_t>(number + 1, by_number_.size() * 2), 0);
    }
    by_number_[number] = index + 1;
    return index;
  }

  // True when another new ID would overflow 32-bit indices.
  bool Full() const { return uint64_t{base_size_} + new_ids_.size() >= kEmpty - 1; }

  // Interns the new IDs in first-seen order. REQUIRES: `map` is the base IdMap, unchanged.
  void CommitTo(IdMap* map) const {
    for (const auto& [offset, len] : new_ids_) {
      [[maybe_unused]] const uint32_t index =
          map->Intern(std::string_view(arena_).substr(offset, len));
      assert(index + 1 == map->size() && "IdMap changed during a read");
    }
  }

 private:
  static constexpr uint32_t kEmpty = 0xffffffffu;
  static constexpr size_t kInitialSlots = 1024;
  static constexpr uint32_t kMaxSmallNumber = (1u << 21) - 1;
  struct Slot {
    uint64_t hash = 0;
    uint32_t index = kEmpty;
  };

  static bool SmallNumber(std::string_view raw, uint32_t* number) {
    if (raw.empty() || raw.size() > 7 || (raw[0] == '0' && raw.size() > 1)) return false;
    uint32_t v = 0;
    for (char c : raw) {
      if (c < '0' || c > '9') return false;
      v = v * 10 + static_cast<uint32_t>(c - '0');
    }
    if (v > kMaxSmallNumber) return false;
    *number = v;
    return true;
  }

  uint32_t GetByHash(std::string_view raw) {
    const uint64_t h = HashBytes(raw);
    size_t i = h & (slots_.size() - 1);
    for (;; i = (i + 1) & (slots_.size() - 1)) {
      const Slot& s = slots_[i];
      if (s.index == kEmpty) break;
      if (s.hash == h && Key(s.index) == raw) return s.index;
    }
    uint32_t index;
    if (const int64_t found = base_.Find(raw); found >= 0) {
      index = static_cast<uint32_t>(found);
    } else {
      index = base_size_ + static_cast<uint32_t>(new_ids_.size());
      new_ids_.emplace_back(arena_.size(), raw.size());
      arena_.append(raw);
    }
    slots_[i] = Slot{h, index};
    if (++used_ * 2 > slots_.size()) Grow();
    return index;
  }

  std::string_view Key(uint32_t index) const {
    if (index < base_size_) return base_.Raw(index);
    const auto& [offset, len] = new_ids_[index - base_size_];
    return std::string_view(arena_).substr(offset, len);
  }

  void Grow() {
    std::vector<Slot> old(slots_.size() * 2);
    old.swap(slots_);
    const size_t mask = slots_.size() - 1;
    for (const Slot& s : old) {
      if (s.index == kEmpty) continue;
      size_t i = s.hash & mask;
      while (slots_[i].index != kEmpty) i = (i + 1) & mask;
      slots_[i] = s;
    }
  }

  const IdMap& base_;
  const uint32_t base_size_;
  std::vector<Slot> slots_;
  size_t used_ = 0;
  std::string arena_;                               // bytes of the new IDs
  std::vector<std::pair<size_t, size_t>> new_ids_;  // (offset, length) in arena_
  std::vector<uint32_t> by_number_;                 // small decimal ID -> index + 1, 0 = unseen
};

// ---------------------------------------------------------------------------
// Field parsing.

enum class NumberParse { kOk, kNotANumber, kOutOfRange };

inline bool IsDigit(char c) { return c >= '0' && c <= '9'; }

NumberParse ParseRating(std::string_view s, float* value) {
  const char* p = s.data();
  const size_t n = s.size();
  // Fast paths for "4" and "3.5"; m / 10 with exact m and 10 is correctly
  // rounded, so these agree with from_chars.
  if (n == 1 && IsDigit(p[0])) {
    *value = static_cast<float>(p[0] - '0');
    return NumberParse::kOk;
  }
  if (n == 3 && IsDigit(p[0]) && p[1] == '.' && IsDigit(p[2])) {
    *value = static_cast<float>((p[0] - '0') * 10 + (p[2] - '0')) / 10.0f;
    return NumberParse::kOk;
  }
  const auto [end, ec] = std::from_chars(p, p + n, *value);
  if (n == 0 || end != p + n) return NumberParse::kNotANumber;
  if (ec == std::errc::result_out_of_range) return NumberParse::kOutOfRange;
  if (ec != std::errc()) return NumberParse::kNotANumber;
  return NumberParse::kOk;
}

bool ParseTimestamp(std::string_view s, int64_t* value) {
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *value);
  return !s.empty() && ec == std::errc() && end == s.data() + s.size();
}

// Splits `line` at `sep` (one or two characters) into at most kMaxFields
// fields; returns the total field count (which may exceed kMaxFields). Fields
// are short, so a plain loop beats memchr here.
constexpr size_t kMaxFields = 4;

size_t SplitFields(std::string_view line, std::string_view sep, std::string_view* fields) {
  const char* const begin = line.data();
  const size_t n = line.size();
  const char c0 = sep[0];
  const bool two = sep.size() == 2;
  size_t count = 0;
  size_t field_start = 0;
  for (size_t i = 0; i < n; ++i) {
    if (begin[i] != c0) continue;
    if (two && (i + 1 >= n || begin[i + 1] != sep[1])) continue;
    if (count < kMaxFields) fields[count] = std::string_view(begin + field_start, i - field_start);
    ++count;
    i += sep.size() - 1;
    field_start = i + 1;
  }
  if (count < kMaxFields) fields[count] = std::string_view(begin + field_start, n - field_start);
  return count + 1;
}

// ---------------------------------------------------------------------------
// Format detection.

std::optional<RatingFormat> DetectFromLine(std::string_view line) {
  if (line.find('\t') != std::string_view::npos) return RatingFormat::kMl100k;
  if (line.find("::") != std::string_view::npos) return RatingFormat::kMl1m;
  std::string_view fields[kMaxFields];
  const size_t n = SplitFields(line, ",", fields);
  // Checked before mlcsv: a 2-field "userId,movieId" header can only start an
  // implicit file (mlcsv lines have 4 fields).
  if (n == 2) return RatingFormat::kImplicit;
  if (line.starts_with("userId,movieId")) return RatingFormat::kMlCsv;
  if (n > 2) return RatingFormat::kCsv;
  return std::nullopt;
}

Status UndetectableFormat(const std::string& path, uint64_t line_number, std::string_view line) {
  return Status::InvalidArgument(
      Where(path, line_number) + ": cannot detect the rating format from the first line " +
      Quote(line) +
      "; expected tab-separated (ml100k), \"::\"-separated (ml1m) or comma-separated "
      "(mlcsv, csv, implicit) fields");
}

struct FormatRules {
  std::string_view sep;
  size_t min_fields;
  size_t max_fields;
  bool header_allowed;
  bool rated;            // field 3 is a rating; else every value is rating_max
  size_t time_field;     // index of the optional timestamp field
  const char* expected;  // "expected ..." text for a wrong field count
  bool numeric_ids;      // MovieLens: user and item IDs are positive integers
};

FormatRules RulesFor(RatingFormat format) {
  switch (format) {
    case RatingFormat::kMl100k:
      return {.sep = "\t",
              .min_fields = 4,
              .max_fields = 4,
              .header_allowed = false,
              .rated = true,
              .time_field = 3,
              .expected = "4 tab-separated fields (user, item, rating, timestamp)",
              .numeric_ids = true};
    case RatingFormat::kMl1m:
      return {.sep = "::",
              .min_fields = 4,
              .max_fields = 4,
              .header_allowed = false,
              .rated = true,
              .time_field = 3,
              .expected = "4 \"::\"-separated fields (user::item::rating::timestamp)",
              .numeric_ids = true};
    case RatingFormat::kMlCsv:
      return {.sep = ",",
              .min_fields = 4,
              .max_fields = 4,
              .header_allowed = true,
              .rated = true,
              .time_field = 3,
              .expected = "4 comma-separated fields (userId,movieId,rating,timestamp)",
              .numeric_ids = true};
    case RatingFormat::kImplicit:
      return {.sep = ",",
              .min_fields = 2,
              .max_fields = 3,
              .header_allowed = true,
              .rated = false,
              .time_field = 2,
              .expected = "2 or 3 comma-separated fields (user,item[,timestamp])",
              .numeric_ids = false};
    case RatingFormat::kCsv:
    case RatingFormat::kAuto:
      break;
  }
  return {.sep = ",",
          .min_fields = 3,
          .max_fields = 4,
          .header_allowed = true,
          .rated = true,
          .time_field = 3,
          .expected = "3 or 4 comma-separated fields (user,item,rating[,timestamp])",
          .numeric_ids = false};
}

// True when `s` is a positive integer in canonical decimal: digits only, no
// sign, no leading zero (so "7" and "007" cannot name two different users).
bool IsPositiveInteger(std::string_view s) {
  if (s.empty() || s[0] == '0') return false;
  for (char c : s) {
    if (!IsDigit(c)) return false;
  }
  return true;
}

// True when `s` spells `name` (lowercase, without '_') ignoring case and '_'.
bool SpellsName(std::string_view s, std::string_view name) {
  size_t j = 0;
  for (char c : s) {
    if (c == '_') continue;
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (j == name.size() || c != name[j]) return false;
    ++j;
  }
  return j == name.size();
}

// True when `user` and `item` are column names of an implicit header (see
// readers.h). Fails on the first character for typical IDs.
bool NamesImplicitColumns(std::string_view user, std::string_view item) {
  return (SpellsName(user, "user") || SpellsName(user, "userid")) &&
         (SpellsName(item, "item") || SpellsName(item, "itemid") || SpellsName(item, "movieid"));
}

// Parses the lines of one file into `out` and the two lookups.
class RatingParser {
 public:
  RatingParser(const std::string& path, const ReadOptions& options, RatingFormat format,
               IdLookup* users, IdLookup* items, std::vector<Rating>* out,
               std::vector<uint32_t>* lines)
      : path_(path),
        options_(options),
        rules_(RulesFor(format)),
        users_(users),
        items_(items),
        out_(out),
        lines_(lines) {}

  // Parses one non-empty line; `first` marks the file's first non-empty line
  // (the only one that may be a header).
  Status Parse(uint64_t line_number, std::string_view line, bool first) {
    std::string_view f[kMaxFields];
    const size_t n = SplitFields(line, rules_.sep, f);
    if (n < rules_.min_fields || n > rules_.max_fields) {
      return Status::InvalidArgument(Where(path_, line_number) + ": expected " + rules_.expected +
                                     ", found " + std::to_string(n) + ": " + Quote(line));
    }
    Rating r;
    // A first line is a header when its field 3 is not a number: the rating,
    // or for implicit files the timestamp; see readers.h.
    if (rules_.rated) {
      switch (ParseRating(f[2], &r.value)) {
        case NumberParse::kOk:
          break;
        case NumberParse::kNotANumber:
          if (first && rules_.header_allowed) return Status::Ok();  // a header line
          return Status::InvalidArgument(Where(path_, line_number) +
                                         ": expected a numeric rating in field 3, found " +
                                         Quote(f[2]) + ": " + Quote(line));
        case NumberParse::kOutOfRange:
          return OutOfRange(line_number, f[2], line);
      }
      if (!(r.value >= options_.rating_min && r.value <= options_.rating_max)) {
        return OutOfRange(line_number, f[2], line);
      }
    } else {
      r.value = options_.rating_max;  // an unrated interaction is a top rating
      const bool names_columns = NamesImplicitColumns(f[0], f[1]);
      if (first && rules_.header_allowed &&
          (names_columns ||
           (n > rules_.time_field && !ParseTimestamp(f[rules_.time_field], &r.time)))) {
        return Status::Ok();  // a header line
      }
      if (names_columns) {
        return Status::InvalidArgument(Where(path_, line_number) +
                                       ": expected user,item[,timestamp], found a header line "
                                       "(allowed only as the first line): " +
                                       Quote(line));
      }
    }
    if (f[0].empty() || f[1].empty()) {
      return Status::InvalidArgument(Where(path_, line_number) + ": expected a non-empty " +
                                     (f[0].empty() ? "user" : "item") +
                                     " ID, found an empty field: " + Quote(line));
    }
    if (rules_.numeric_ids) {
      for (int k = 0; k < 2; ++k) {
        if (IsPositiveInteger(f[k])) continue;
        return Status::InvalidArgument(
            Where(path_, line_number) + ": expected a positive integer " +
            (k == 0 ? "user" : "item") + " ID (MovieLens), found " + Quote(f[k]) + " in field " +
            std::to_string(k + 1) + ": " + Quote(line));
      }
    }
    if (n > rules_.time_field && !ParseTimestamp(f[rules_.time_field], &r.time)) {
      return Status::InvalidArgument(Where(path_, line_number) +
                                     ": expected an integer timestamp in field " +
                                     std::to_string(rules_.time_field + 1) + ", found " +
                                     Quote(f[rules_.time_field]) + ": " + Quote(line));
    }
    if (users_->Full() || items_->Full()) {
      return Status::InvalidArgument(Where(path_, line_number) + ": more than 2^32-1 IDs");
    }
    r.user = users_->Get(f[0]);
    r.item = items_->Get(f[1]);
    out_->push_back(r);
    if (lines_ != nullptr) {
      lines_->push_back(static_cast<uint32_t>(
          std::min<uint64_t>(line_number, std::numeric_limits<uint32_t>::max())));
    }
    return Status::Ok();
  }

 private:
  Status OutOfRange(uint64_t line_number, std::string_view field, std::string_view line) const {
    return Status::InvalidArgument(
        Where(path_, line_number) + ": expected a rating in [" + FormatFloat(options_.rating_min) +
        ", " + FormatFloat(options_.rating_max) + "], found " + Quote(field) + ": " + Quote(line));
  }

  const std::string& path_;
  const ReadOptions& options_;
  const FormatRules rules_;
  IdLookup* users_;
  IdLookup* items_;
  std::vector<Rating>* out_;
  std::vector<uint32_t>* lines_;  // null: not recorded
};

Status ParseAll(LineReader* reader, const std::string& path, const ReadOptions& options,
                IdMap* users, IdMap* items, std::vector<Rating>* out,
                std::vector<uint32_t>* lines) {
  FEDREC_ASSIGN_OR_RETURN(const std::optional<std::string_view> first, FirstNonEmptyLine(reader));
  if (!first) return NoRatings(path);
  RatingFormat format = options.format;
  if (format == RatingFormat::kAuto) {
    const std::optional<RatingFormat> detected = DetectFromLine(*first);
    if (!detected) return UndetectableFormat(path, reader->line_number(), *first);
    format = *detected;
  }
  IdLookup user_lookup(*users);
  IdLookup item_lookup(*items);
  RatingParser parser(path, options, format, &user_lookup, &item_lookup, out, lines);
  const size_t old_size = out->size();
  const size_t old_lines = lines != nullptr ? lines->size() : 0;
  // Reserving avoids regrowing a vector of millions; capped so a huge or odd
  // file cannot make the reservation itself fail.
  if (const uint64_t estimate = std::min(reader->EstimateLines(), kMaxReserve); estimate > 0) {
    out->reserve(old_size + static_cast<size_t>(estimate));
    if (lines != nullptr) lines->reserve(old_lines + static_cast<size_t>(estimate));
  }
  Status status = parser.Parse(reader->line_number(), *first, /*first=*/true);
  std::string_view line;
  while (status.ok() && reader->Next(&line)) {
    if (!line.empty()) status = parser.Parse(reader->line_number(), line, /*first=*/false);
  }
  if (status.ok()) status = reader->status();
  if (status.ok() && out->size() == old_size) status = NoRatings(path);
  if (!status.ok()) {
    out->resize(old_size);
    if (lines != nullptr) lines->resize(old_lines);
    return status;
  }
  user_lookup.CommitTo(users);
  item_lookup.CommitTo(items);
  return Status::Ok();
}

}  // namespace

Result<RatingFormat> ParseRatingFormat(std::string_view name) {
  for (RatingFormat f : {RatingFormat::kAuto, RatingFormat::kMl100k, RatingFormat::kMl1m,
                         RatingFormat::kMlCsv, RatingFormat::kCsv, RatingFormat::kImplicit}) {
    if (name == RatingFormatName(f)) return f;
  }
  return Status::InvalidArgument("unknown rating format " + Quote(name) +
                                 "; expected one of auto, ml100k, ml1m, mlcsv, csv, implicit");
}

const char* RatingFormatName(RatingFormat format) {
  switch (format) {
    case RatingFormat::kAuto:
      return "auto";
    case RatingFormat::kMl100k:
      return "ml100k";
    case RatingFormat::kMl1m:
      return "ml1m";
    case RatingFormat::kMlCsv:
      return "mlcsv";
    case RatingFormat::kCsv:
      return "csv";
    case RatingFormat::kImplicit:
      return "implicit";
  }
  return "unknown";
}

Result<RatingFormat> DetectRatingFormat(const std::string& path) {
  LineReader reader(path);
  FEDREC_RETURN_IF_ERROR(reader.Open());
  FEDREC_ASSIGN_OR_RETURN(const std::optional<std::string_view> first, FirstNonEmptyLine(&reader));
  if (!first) return NoRatings(path);
  const std::optional<RatingFormat> detected = DetectFromLine(*first);
  if (!detected) return UndetectableFormat(path, reader.line_number(), *first);
  return *detected;
}

Status ReadRatings(const std::string& path, const ReadOptions& options, IdMap* users, IdMap* items,
                   std::vector<Rating>* out, std::vector<uint32_t>* lines) {
  assert(users != nullptr && items != nullptr && out != nullptr);
  if (!(options.rating_min <= options.rating_max)) {
    return Status::InvalidArgument("rating range [" + FormatFloat(options.rating_min) + ", " +
                                   FormatFloat(options.rating_max) + "] for " + Quote(path) +
                                   " is empty");
  }
  LineReader reader(path);
  FEDREC_RETURN_IF_ERROR(reader.Open());
  return ParseAll(&reader, path, options, users, items, out, lines);
}

}  // namespace fedrec
