// Repeated pairs and train/test overlap are found by grouping positions by
// user (a counting sort, keeping list order) and sorting each user's run by
// item: O(n) plus small per-user sorts, and one index of positions as extra
// memory.
#include "data/rating_checks.h"

#include <algorithm>
#include <cassert>
#include <numeric>

#include "data/text.h"

namespace fedrec {
namespace {

using text::Quote;

// Positions of `ratings` ordered by (user, item, position).
std::vector<size_t> PairOrder(const std::vector<Rating>& ratings) {
  uint32_t users = 0;
  for (const Rating& r : ratings) users = std::max(users, r.user + 1);
  std::vector<size_t> start(size_t{users} + 1, 0);
  for (const Rating& r : ratings) ++start[r.user + 1];
  std::partial_sum(start.begin(), start.end(), start.begin());
  std::vector<size_t> order(ratings.size());
  {
    std::vector<size_t> next(start.begin(), start.end() - 1);
    for (size_t i = 0; i < ratings.size(); ++i) order[next[ratings[i].user]++] = i;
  }
  for (uint32_t u = 0; u < users; ++u) {
    std::sort(order.begin() + static_cast<ptrdiff_t>(start[u]),
              order.begin() + static_cast<ptrdiff_t>(start[u + 1]), [&](size_t a, size_t b) {
                return ratings[a].item != ratings[b].item ? ratings[a].item < ratings[b].item
                                                          : a < b;
              });
  }
  return order;
}

bool SamePair(const Rating& a, const Rating& b) { return a.user == b.user && a.item == b.item; }

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
  const std::vector<size_t> order = PairOrder(r);
  std::vector<uint8_t> keep(r.size(), 1);
  size_t dropped = 0;
  // kError: the group whose second occurrence comes first in the list.
  size_t first_at = 0, second_at = r.size();
  for (size_t g = 0; g < order.size();) {
    size_t end = g + 1;
    while (end < order.size() && SamePair(r[order[g]], r[order[end]])) ++end;
    if (end - g > 1) {
      dropped += end - g - 1;
      if (order[g + 1] < second_at) {
        first_at = order[g];
        second_at = order[g + 1];
      }
      if (policy != DuplicatePolicy::kError) {
        const size_t last = order[end - 1];  // positions ascend within a group
        if (policy == DuplicatePolicy::kMean) {
          double sum = 0.0;
          int64_t time = r[order[g]].time;
          for (size_t k = g; k < end; ++k) {
            sum += r[order[k]].value;
            time = std::max(time, r[order[k]].time);
          }
          r[last].value = static_cast<float>(sum / static_cast<double>(end - g));
          r[last].time = time;
        }
        for (size_t k = g; k + 1 < end; ++k) keep[order[k]] = 0;
      }
    }
    g = end;
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

Overlap FindOverlap(const std::vector<Rating>& train, const std::vector<Rating>& test) {
  Overlap overlap;
  if (train.empty() || test.empty()) return overlap;
  const std::vector<size_t> a = PairOrder(train);
  const std::vector<size_t> b = PairOrder(test);
  size_t i = 0, j = 0;
  overlap.test_index = test.size();
  while (i < a.size() && j < b.size()) {
    const Rating& x = train[a[i]];
    const Rating& y = test[b[j]];
    if (x.user != y.user ? x.user < y.user : x.item < y.item) {
      ++i;
    } else if (x.user != y.user ? y.user < x.user : y.item < x.item) {
      ++j;
    } else {
      ++overlap.pairs;
      if (b[j] < overlap.test_index) {
        overlap.test_index = b[j];
        overlap.train_index = a[i];
      }
      // Skip the pair's repeats on both sides, so each pair counts once.
      const Rating pair = x;
      while (i < a.size() && SamePair(train[a[i]], pair)) ++i;
      while (j < b.size() && SamePair(test[b[j]], pair)) ++j;
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
