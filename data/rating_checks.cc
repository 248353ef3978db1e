// Repeated pairs and train/test overlap are found by grouping the ratings by
// user (a counting sort, keeping list order) and sorting each user's
// (item, position) keys: O(n) plus small per-user sorts, with 8 bytes per
// rating of extra memory while checking.
#include "data/rating_checks.h"

#include <algorithm>
#include <cassert>
#include <numeric>

#include "data/text.h"

namespace fedrec {
namespace {

using text::Quote;

// The ratings grouped by user, each user's as (item << 32 | position) keys
// in ascending order: by item, then list order. Keys hold no pointers back
// into the ratings, so the per-user sorts stay in cache.
struct PairIndex {
  std::vector<size_t> start;   // start[u]..start[u + 1]: user u's keys
  std::vector<uint64_t> keys;  // item << 32 | position
  uint32_t users() const { return static_cast<uint32_t>(start.size() - 1); }
  static uint32_t Item(uint64_t key) { return static_cast<uint32_t>(key >> 32); }
  static size_t Position(uint64_t key) { return static_cast<size_t>(key & 0xffffffffu); }
};

constexpr size_t kMaxRatings = 0xffffffffu;  // positions fit the keys' 32 bits

Status TooMany(std::string_view what, size_t n) {
  return Status::InvalidArgument(std::string(what) + ": " + std::to_string(n) +
                                 " ratings; expected at most 2^32-1 to check for repeated "
                                 "(user, item) pairs");
}

// REQUIRES: ratings.size() <= kMaxRatings
PairIndex IndexPairs(const std::vector<Rating>& ratings) {
  uint32_t users = 0;
  for (const Rating& r : ratings) users = std::max(users, r.user + 1);
  PairIndex index;
  index.start.assign(size_t{users} + 1, 0);
  for (const Rating& r : ratings) ++index.start[r.user + 1];
  std::partial_sum(index.start.begin(), index.start.end(), index.start.begin());
  index.keys.resize(ratings.size());
  {
    std::vector<size_t> next(index.start.begin(), index.start.end() - 1);
    for (size_t i = 0; i < ratings.size(); ++i)
      index.keys[next[ratings[i].user]++] = uint64_t{ratings[i].item} << 32 | i;
  }
  for (uint32_t u = 0; u < users; ++u) {
    std::sort(index.keys.begin() + static_cast<ptrdiff_t>(index.start[u]),
              index.keys.begin() + static_cast<ptrdiff_t>(index.start[u + 1]));
  }
  return index;
}

std::string PairName(const IdMap& users, const IdMap& items, const Rating& r) {
  return "user " + Quote(users.Raw(r.user)) + ", item " + Quote(items.Raw(r.item));
}

std::string At(const RatingOrigins* origins, size_t i) {
  if (origins == nullptr) return "";
  const std::string where = origins->Where(i);
  return where.empty() ? "" : " (" + where + ")";
}

}  // namespace

void RatingOrigins::AddFile(std::string path, size_t end) {
  files.push_back(std::move(path));
  ends.push_back(end);
}

size_t RatingOrigins::FileOf(size_t i) const {
  return static_cast<size_t>(std::upper_bound(ends.begin(), ends.end(), i) - ends.begin());
}

std::string RatingOrigins::Where(size_t i) const {
  if (i >= lines.size() || ends.empty() || i >= ends.back()) return "";
  return text::Where(files[FileOf(i)], lines[i]);
}

void RatingOrigins::Compact(const std::vector<uint8_t>& keep) {
  size_t out = 0;
  size_t file = 0;
  for (size_t i = 0; i < keep.size(); ++i) {
    while (file < ends.size() && ends[file] <= i) ends[file++] = out;
    if (!keep[i]) continue;
    if (i < lines.size()) lines[out] = lines[i];
    ++out;
  }
  while (file < ends.size()) ends[file++] = out;
  if (lines.size() > out) lines.resize(out);
}

Result<DuplicatePolicy> ParseDuplicatePolicy(std::string_view name) {
  for (DuplicatePolicy p :
       {DuplicatePolicy::kError, DuplicatePolicy::kLast, DuplicatePolicy::kMean})
    if (name == DuplicatePolicyName(p)) return p;
  return Status::InvalidArgument("unknown duplicate policy " + Quote(name) +
                                 "; expected one of error, last, mean");
}

const char* DuplicatePolicyName(DuplicatePolicy policy) {
  switch (policy) {
    case DuplicatePolicy::kError:
      return "error";
    case DuplicatePolicy::kLast:
      return "last";
    case DuplicatePolicy::kMean:
      return "mean";
  }
  return "unknown";
}

Result<size_t> ResolveDuplicates(DuplicatePolicy policy, const IdMap& users, const IdMap& items,
                                 std::string_view what, std::vector<Rating>* ratings,
                                 RatingOrigins* origins) {
  assert(ratings != nullptr);
  std::vector<Rating>& r = *ratings;
  if (r.size() > kMaxRatings) return TooMany(what, r.size());
  const PairIndex index = IndexPairs(r);
  std::vector<uint8_t> keep;
  size_t dropped = 0;
  // kError: the group whose second occurrence comes first in the list.
  size_t first_at = 0, second_at = r.size();
  for (uint32_t u = 0; u < index.users(); ++u) {
    const size_t user_end = index.start[u + 1];
    for (size_t g = index.start[u]; g < user_end;) {
      const uint32_t item = PairIndex::Item(index.keys[g]);
      size_t end = g + 1;
      while (end < user_end && PairIndex::Item(index.keys[end]) == item) ++end;
      if (end - g > 1) {
        dropped += end - g - 1;
        if (PairIndex::Position(index.keys[g + 1]) < second_at) {
          first_at = PairIndex::Position(index.keys[g]);
          second_at = PairIndex::Position(index.keys[g + 1]);
        }
        if (policy != DuplicatePolicy::kError) {
          if (keep.empty()) keep.assign(r.size(), 1);
          // Positions ascend within a group: the last is the row read last.
          const size_t last = PairIndex::Position(index.keys[end - 1]);
          if (policy == DuplicatePolicy::kMean) {
            double sum = 0.0;
            int64_t time = r[last].time;
            for (size_t k = g; k < end; ++k) {
              const Rating& x = r[PairIndex::Position(index.keys[k])];
              sum += x.value;
              time = std::max(time, x.time);
            }
            r[last].value = static_cast<float>(sum / static_cast<double>(end - g));
            r[last].time = time;
          }
          for (size_t k = g; k + 1 < end; ++k) keep[PairIndex::Position(index.keys[k])] = 0;
        }
      }
      g = end;
    }
  }
  if (dropped == 0) return size_t{0};
  if (policy == DuplicatePolicy::kError) {
    return Status::InvalidArgument(
        std::string(what) + ": " + PairName(users, items, r[first_at]) + " is repeated: first at " +
        (origins != nullptr && !origins->Where(first_at).empty()
             ? origins->Where(first_at) + ", again at " + origins->Where(second_at)
             : "rating " + std::to_string(first_at + 1) + ", again at rating " +
                   std::to_string(second_at + 1)) +
        " (" + std::to_string(dropped) + " repeated row" + (dropped == 1 ? "" : "s") +
        " in all); expected each (user, item) pair at most once");
  }
  size_t out = 0;
  for (size_t i = 0; i < r.size(); ++i) {
    if (keep[i]) r[out++] = r[i];
  }
  r.resize(out);
  if (origins != nullptr) origins->Compact(keep);
  return dropped;
}

Result<Overlap> FindOverlap(const std::vector<Rating>& train, const std::vector<Rating>& test) {
  Overlap overlap;
  if (train.empty() || test.empty()) return overlap;
  if (train.size() > kMaxRatings) return TooMany("training data", train.size());
  if (test.size() > kMaxRatings) return TooMany("test data", test.size());
  const PairIndex a = IndexPairs(train);
  const PairIndex b = IndexPairs(test);
  overlap.test_index = test.size();
  const uint32_t users = std::min(a.users(), b.users());
  for (uint32_t u = 0; u < users; ++u) {
    size_t i = a.start[u], j = b.start[u];
    const size_t i_end = a.start[u + 1], j_end = b.start[u + 1];
    while (i < i_end && j < j_end) {
      const uint32_t x = PairIndex::Item(a.keys[i]), y = PairIndex::Item(b.keys[j]);
      if (x < y) {
        ++i;
      } else if (y < x) {
        ++j;
      } else {
        ++overlap.pairs;
        if (PairIndex::Position(b.keys[j]) < overlap.test_index) {
          overlap.test_index = PairIndex::Position(b.keys[j]);
          overlap.train_index = PairIndex::Position(a.keys[i]);
        }
        // Skip the pair's repeats on both sides, so each pair counts once.
        while (i < i_end && PairIndex::Item(a.keys[i]) == x) ++i;
        while (j < j_end && PairIndex::Item(b.keys[j]) == x) ++j;
      }
    }
  }
  if (overlap.pairs == 0) overlap.test_index = 0;
  return overlap;
}

std::string DescribeOverlap(const Overlap& overlap, const IdMap& users, const IdMap& items,
                            const std::vector<Rating>& test, const RatingOrigins* train_origins,
                            const RatingOrigins* test_origins) {
  if (overlap.pairs == 0) return "no (user, item) pair is in both the training and the test data";
  const Rating& r = test[overlap.test_index];
  return std::to_string(overlap.pairs) + " (user, item) pair" +
         (overlap.pairs == 1 ? " is" : "s are") +
         " in both the training and the test data, first " + PairName(users, items, r) +
         ": training" + At(train_origins, overlap.train_index) + " and test" +
         At(test_origins, overlap.test_index);
}

}  // namespace fedrec
