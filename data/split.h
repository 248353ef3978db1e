// Train/test splits of a rating list. All are deterministic given the seed and
// keep the input's relative order inside train and inside test.
#pragma once

#include <cstdint>
#include <string_view>
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
Result<SplitResult> HoldoutPerUser(const std::vector<Rating>& all, uint32_t k, HoldoutOrder order,
                                   uint64_t seed);

// Cold-start split (data.cold_start), applied after the train/test split.
// A user becomes cold when all of these hold:
//   - Rng(seed, 3, StableIdKey(raw ID), kSplit).Uniform() < share: a seeded
//     choice that depends
//     only on the seed and the user's raw ID, so a user is cold or warm alike
//     in the whole dataset and in their site's own files;
//   - the user has at least one test rating;
//   - the user has more than `ratings` training ratings.
// A cold user keeps `ratings` of their training ratings, chosen at random
// from the stream Rng(seed, 2, StableIdKey(raw ID), kSplit); the others are
// dropped. Test ratings are untouched, so warm and cold users are evaluated
// on the same held-out ratings as without the split.
struct ColdStartOptions {
  double share = 0.0;    // in [0, 1]; 0 = off
  uint32_t ratings = 3;  // training ratings a cold user keeps
  uint64_t seed = 1;
};

// True when the seed chooses the user with raw ID `raw_id` to be cold
// (before the test-rating and rating-count conditions).
bool ColdStartChosen(const ColdStartOptions& options, std::string_view raw_id);

// Applies the split to `*train` (ratings of users indexed by `users`, input
// order kept) and returns the flags per user index (size users.size(), 1 =
// cold; empty when share == 0). Error when share is outside [0, 1] or a
// rating's user is outside `users`; then `*train` is unchanged.
Result<std::vector<uint8_t>> ColdStartSplit(const IdMap& users, const std::vector<Rating>& test,
                                            const ColdStartOptions& options,
                                            std::vector<Rating>* train);

}  // namespace fedrec
