// Train/test splits of a rating list. All are deterministic given the seed and
// keep the input's relative order inside train and inside test.
#pragma once

#include <cstdint>
#include <vector>

#include "base/status.h"
#include "data/ratings.h"

namespace fedrec {

struct SplitResult {
  std::vector<Rating> train;
  std::vector<Rating> test;
};

// Each rating goes to test with probability `test_fraction` in [0, 1).
Result<SplitResult> RandomSplit(const std::vector<Rating>& all, double test_fraction,
                                uint64_t seed);

enum class HoldoutOrder { kLastByTime, kRandom };

// For every user with more than `k` ratings, `k` of them go to test: the latest
// by timestamp (ties broken by input order) or k chosen at random.
// Users with <= k ratings keep all of them in train. REQUIRES-as-error: k >= 1.
Result<SplitResult> HoldoutPerUser(const std::vector<Rating>& all, uint32_t k,
                                   HoldoutOrder order, uint64_t seed);

}  // namespace fedrec
