// Readers for rating files: MovieLens 100K (`u.data`, `u1.base`...), MovieLens
// 1M/10M (`ratings.dat`, "::"-separated), MovieLens 20M/25M/latest
// (`ratings.csv` with header) and generic CSV (`user,item,rating[,timestamp]`,
// header optional).
//
// Every malformed line (wrong field count, non-numeric rating or timestamp,
// rating outside [rating_min, rating_max]) and an empty file is an error that
// names path:line, what was expected and what was found. A failed read leaves
// the IdMaps and output unchanged.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "data/ratings.h"

namespace fedrec {

enum class RatingFormat {
  kAuto,     // detect from the first non-empty line
  kMl100k,   // user \t item \t rating \t timestamp
  kMl1m,     // user::item::rating::timestamp
  kMlCsv,    // userId,movieId,rating,timestamp with a header line
  kCsv,      // user,item,rating[,timestamp]; header optional
};

// "auto", "ml100k", "ml1m", "mlcsv", "csv".
Result<RatingFormat> ParseRatingFormat(std::string_view name);
const char* RatingFormatName(RatingFormat format);

struct ReadOptions {
  RatingFormat format = RatingFormat::kAuto;
  float rating_min = 1.0f;  // inclusive bounds; values outside are errors
  float rating_max = 5.0f;
};

// Format of the file at `path`, detected from its first non-empty line.
Result<RatingFormat> DetectRatingFormat(const std::string& path);

// Appends the ratings in `path` to `*out`, interning raw IDs in `*users` and
// `*items` (shared across files so train and test files agree on indices).
Status ReadRatings(const std::string& path, const ReadOptions& options, IdMap* users,
                   IdMap* items, std::vector<Rating>* out);

}  // namespace fedrec
