// Readers for rating files: MovieLens 100K (`u.data`, `u1.base`...), MovieLens
// 1M/10M (`ratings.dat`, "::"-separated), MovieLens 20M/25M/latest
// (`ratings.csv` with header), generic CSV (`user,item,rating[,timestamp]`,
// header optional) and implicit feedback (`user,item[,timestamp]`, header
// optional).
//
// Every malformed line (wrong field count, empty user or item, non-numeric
// rating or timestamp, rating outside [rating_min, rating_max]) and an empty
// file is an error that names path:line, what was expected and what was found.
// In the MovieLens formats (ml100k, ml1m, mlcsv) user and item IDs are
// positive integers written without sign or leading zeros; any other ID
// there ("-3", "007", "u1") is such an error too. csv and implicit files keep
// any non-empty string as an ID. A UTF-8 byte-order mark at the start of a
// file is skipped. A failed read leaves the IdMaps and output unchanged.
//
// Repeated (user, item) pairs are read as they are: data.duplicates
// (data/rating_checks.h) decides what they mean.
//
// Headers (csv, mlcsv, implicit): only the file's first non-empty line may be
// a header. It is one when its third field is not a number (the rating for
// csv and mlcsv, the timestamp for implicit). An implicit line, which may
// have no third field, is also a header when its first two fields name the
// columns: "user" or "userid", then "item", "itemid" or "movieid", compared
// ignoring case and '_' (so "user_id,item_id" and "userId,movieId" qualify).
// A header-like line further down is an error.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "data/ratings.h"

namespace fedrec {

enum class RatingFormat {
  kAuto,    // detect from the first non-empty line
  kMl100k,  // user \t item \t rating \t timestamp
  kMl1m,    // user::item::rating::timestamp
  kMlCsv,   // userId,movieId,rating,timestamp with a header line
  kCsv,     // user,item,rating[,timestamp]; header optional
  // user,item[,timestamp]; header optional. The file records interactions
  // (clicks, plays, purchases) without ratings; each is read with value
  // ReadOptions::rating_max: an interaction without a rating counts as the top
  // of the scale, so it is a positive for implicit models and relevant for
  // top-N evaluation under any relevance threshold.
  kImplicit,
};

// "auto", "ml100k", "ml1m", "mlcsv", "csv", "implicit".
Result<RatingFormat> ParseRatingFormat(std::string_view name);
const char* RatingFormatName(RatingFormat format);

struct ReadOptions {
  RatingFormat format = RatingFormat::kAuto;
  float rating_min = 1.0f;  // inclusive bounds; values outside are errors
  float rating_max = 5.0f;  // also the value of every kImplicit interaction
};

// Format of the file at `path`, detected from its first non-empty line: a tab
// means ml100k, "::" ml1m; comma-separated, exactly 2 fields mean implicit,
// else a line starting "userId,movieId" mlcsv, else csv. So an implicit file
// with timestamps (3 fields) is detected as csv: name its format explicitly.
Result<RatingFormat> DetectRatingFormat(const std::string& path);

// Appends the ratings in `path` to `*out`, interning raw IDs in `*users` and
// `*items` (shared across files so train and test files agree on indices).
// With `lines`, appends the 1-based line number of each rating appended to
// `*out` (capped at 2^32-1), for messages naming where a rating came from.
Status ReadRatings(const std::string& path, const ReadOptions& options, IdMap* users, IdMap* items,
                   std::vector<Rating>* out, std::vector<uint32_t>* lines = nullptr);

}  // namespace fedrec
