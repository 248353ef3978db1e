// Checks of loaded ratings that span lines and files: repeated (user, item)
// pairs (data.duplicates) and pairs in both the training and the test data
// (data.allow_overlap). Messages name the pair by its raw IDs and, when the
// ratings' origins are known, each occurrence as path:line.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "data/ratings.h"

namespace fedrec {

// Where each rating of one list was read: the files in read order, each
// contributing a contiguous run of the list, and each rating's line.
struct RatingOrigins {
  std::vector<std::string> files;
  std::vector<size_t> ends;     // ends[f]: one past the last rating of files[f]
  std::vector<uint32_t> lines;  // 1-based line of each rating

  // Records that ratings [ends.back(), `end`) came from `path` (their lines
  // already appended to `lines`).
  void AddFile(std::string path, size_t end);
  // Index of the file rating `i` came from. REQUIRES: i < ends.back()
  size_t FileOf(size_t i) const;
  // "path:line" of rating `i`, or "" when unknown (no origins recorded).
  std::string Where(size_t i) const;
  // Keeps the ratings with keep[i] != 0, in order (as the rating list is
  // compacted alongside).
  void Compact(const std::vector<uint8_t>& keep);
};

// What to do with a (user, item) pair that occurs more than once in one role
// of the data (training or test), within a file or across its files.
enum class DuplicatePolicy {
  kError,  // refuse the data, naming the first two occurrences
  kLast,   // keep the row read last
  kMean,   // one row: the mean value and the latest timestamp, where the last row was
};

// "error", "last", "mean".
Result<DuplicatePolicy> ParseDuplicatePolicy(std::string_view name);
const char* DuplicatePolicyName(DuplicatePolicy policy);

// Applies `policy` to the repeated pairs of `*ratings` (users and items
// indexed by `users` and `items`). `what` names the data in messages
// ("training data"). `origins` (null: unknown) is parallel to `*ratings` and
// compacted along. Returns the number of rows dropped (merged into another).
// kError with a repeated pair: InvalidArgument naming the pair and the
// occurrences whose second comes first in the list, with the number of
// repeated rows; nothing changed. Deterministic: the kept rows stay in list
// order. Error too beyond 2^32-1 ratings.
Result<size_t> ResolveDuplicates(DuplicatePolicy policy, const IdMap& users, const IdMap& items,
                                 std::string_view what, std::vector<Rating>* ratings,
                                 RatingOrigins* origins);

// Pairs present in both `train` and `test` (each with every pair once).
struct Overlap {
  size_t pairs = 0;
  // The overlapping pair that comes first in `test` (when pairs > 0).
  size_t train_index = 0;
  size_t test_index = 0;
};
// Error only beyond 2^32-1 ratings in either list (as for ResolveDuplicates).
Result<Overlap> FindOverlap(const std::vector<Rating>& train, const std::vector<Rating>& test);

// A sentence naming the first overlapping pair (raw IDs, path:line of both
// when the origins are known; either may be null) and the count.
std::string DescribeOverlap(const Overlap& overlap, const IdMap& users, const IdMap& items,
                            const std::vector<Rating>& test, const RatingOrigins* train_origins,
                            const RatingOrigins* test_origins);

}  // namespace fedrec
