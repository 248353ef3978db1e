#include "data/split.h"

#include <algorithm>
#include <numeric>
#include <string>

#include "base/random.h"

namespace fedrec {
namespace {

// Ratings flagged in `in_test` go to test, the others to train, in input order.
SplitResult Distribute(const std::vector<Rating>& all, const std::vector<bool>& in_test,
                       size_t test_count) {
  SplitResult result;
  result.test.reserve(test_count);
  result.train.reserve(all.size() - test_count);
  for (size_t i = 0; i < all.size(); ++i) {
    (in_test[i] ? result.test : result.train).push_back(all[i]);
  }
  return result;
}

}  // namespace

Result<SplitResult> RandomSplit(const std::vector<Rating>& all, double test_fraction,
                                uint64_t seed) {
  if (!(test_fraction >= 0.0 && test_fraction < 1.0)) {
    return Status::InvalidArgument("test_fraction must be in [0, 1), found " +
                                   std::to_string(test_fraction));
  }
  Rng rng(seed, 0, 0, Purpose::kSplit);
  std::vector<bool> in_test(all.size());
  size_t test_count = 0;
  for (size_t i = 0; i < all.size(); ++i) {
    in_test[i] = rng.Uniform() < test_fraction;
    test_count += in_test[i];
  }
  return Distribute(all, in_test, test_count);
}

// kRandom uses the stream Rng(seed, 1, 0, kSplit), walking users in index order.
Result<SplitResult> HoldoutPerUser(const std::vector<Rating>& all, uint32_t k, HoldoutOrder order,
                                   uint64_t seed) {
  if (k == 0) return Status::InvalidArgument("holdout k must be >= 1, found 0");
  // Group rating indices by user (counting sort keeps input order per user).
  size_t users = 0;
  for (const Rating& r : all) users = std::max(users, static_cast<size_t>(r.user) + 1);
  std::vector<size_t> start(users + 1, 0);
  for (const Rating& r : all) ++start[r.user + 1];
  std::partial_sum(start.begin(), start.end(), start.begin());
  std::vector<size_t> by_user(all.size());
  {
    std::vector<size_t> next(start.begin(), start.end() - 1);
    for (size_t i = 0; i < all.size(); ++i) by_user[next[all[i].user]++] = i;
  }

  Rng rng(seed, 1, 0, Purpose::kSplit);
  std::vector<bool> in_test(all.size(), false);
  size_t test_count = 0;
  for (size_t u = 0; u < users; ++u) {
    const auto first = by_user.begin() + static_cast<ptrdiff_t>(start[u]);
    const auto last = by_user.begin() + static_cast<ptrdiff_t>(start[u + 1]);
    const size_t n = static_cast<size_t>(last - first);
    if (n <= k) continue;
    if (order == HoldoutOrder::kLastByTime) {
      // Latest k by (time, input position): the stable order puts them last.
      std::stable_sort(first, last,
                       [&all](size_t a, size_t b) { return all[a].time < all[b].time; });
      for (auto it = last - k; it != last; ++it) in_test[*it] = true;
    } else {
      // Partial Fisher-Yates: the first k positions become a uniform k-subset.
      for (size_t j = 0; j < k; ++j) {
        const size_t pick = j + static_cast<size_t>(rng.Below(n - j));
        std::swap(first[static_cast<ptrdiff_t>(j)], first[static_cast<ptrdiff_t>(pick)]);
        in_test[first[static_cast<ptrdiff_t>(j)]] = true;
      }
    }
    test_count += k;
  }
  return Distribute(all, in_test, test_count);
}

bool ColdStartChosen(const ColdStartOptions& options, std::string_view raw_id) {
  Rng choose(options.seed, 3, StableIdKey(raw_id), Purpose::kSplit);
  return choose.Uniform() < options.share;
}

Result<std::vector<uint8_t>> ColdStartSplit(const IdMap& users, const std::vector<Rating>& test,
                                            const ColdStartOptions& options,
                                            std::vector<Rating>* train) {
  if (!(options.share >= 0.0 && options.share <= 1.0)) {
    return Status::InvalidArgument("cold-start share must be in [0, 1], found " +
                                   std::to_string(options.share));
  }
  if (options.share == 0.0) return std::vector<uint8_t>();
  const uint32_t n = users.size();
  for (const std::vector<Rating>* list : {static_cast<const std::vector<Rating>*>(train), &test}) {
    for (const Rating& r : *list) {
      if (r.user >= n) {
        return Status::InvalidArgument("rating of user index " + std::to_string(r.user) +
                                       " is outside the " + std::to_string(n) + " users");
      }
    }
  }
  std::vector<uint8_t> has_test(n, 0);
  for (const Rating& r : test) has_test[r.user] = 1;
  std::vector<uint32_t> count(n, 0);
  for (const Rating& r : *train) ++count[r.user];
  std::vector<uint8_t> cold(n, 0);
  for (uint32_t u = 0; u < n; ++u) {
    if (!has_test[u] || count[u] <= options.ratings) continue;
    cold[u] = ColdStartChosen(options, users.Raw(u));
  }
  // Each cold user's training ratings, in input order, then a partial
  // Fisher-Yates over their positions picks the kept ones.
  std::vector<std::vector<size_t>> positions(n);
  for (size_t i = 0; i < train->size(); ++i) {
    const uint32_t u = (*train)[i].user;
    if (cold[u]) positions[u].push_back(i);
  }
  std::vector<uint8_t> keep(train->size(), 1);
  for (uint32_t u = 0; u < n; ++u) {
    if (!cold[u]) continue;
    std::vector<size_t>& p = positions[u];
    Rng rng(options.seed, 2, StableIdKey(users.Raw(u)), Purpose::kSplit);
    for (size_t j = 0; j < options.ratings; ++j) {
      const size_t pick = j + static_cast<size_t>(rng.Below(p.size() - j));
      std::swap(p[j], p[pick]);
    }
    for (size_t j = options.ratings; j < p.size(); ++j) keep[p[j]] = 0;
  }
  size_t out = 0;
  for (size_t i = 0; i < train->size(); ++i) {
    if (keep[i]) (*train)[out++] = (*train)[i];
  }
  train->resize(out);
  return cold;
}

}  // namespace fedrec
