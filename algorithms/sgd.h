// SGD for biased MF (Funk/Koren style). One update per rating, in the order
// given; the caller shuffles (per-epoch shuffling is a stream of its own).
//
//   e   = r - r_hat(u, i)
//   b_u += lr * (e - bias_reg * b_u)          b_i += lr * (e - bias_reg * b_i)
//   p_u += lr * (e * q_i - reg * p_u)         q_i += lr * (e * p_u - reg * q_i)
//
// mu is not trained: it is the mean of the training ratings (see TrainingMean).
// Hot path: no allocation per rating; the factor loops are specialised for
// k = 8, 16, 32, 64, 128 and vectorised.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "algorithms/mf_model.h"
#include "data/ratings.h"

namespace fedrec {

// How MfTrainer orders an epoch's updates and spreads them over threads
// (algorithms/parallel_sgd.h has the details).
enum class SgdSchedule : uint8_t {
  // One thread over the whole shard, shuffled in place each epoch.
  kSequential,
  // The shard split into a blocks x blocks grid of user groups x item groups,
  // trained a stratum of mutually independent blocks at a time: the same
  // model for any number of threads.
  kGrid,
  // The same grid, each thread taking any block whose user group and item
  // group are free (FPSGD's scheduler): no waiting on other threads' blocks,
  // but the model depends on timing, so it is not reproducible.
  kFree,
};

// "sequential", "grid", "free".
std::string_view SgdScheduleName(SgdSchedule schedule);
// The schedule named `name`; false when there is none.
bool ParseSgdSchedule(std::string_view name, SgdSchedule* schedule);

struct SgdParallelism {
  SgdSchedule schedule = SgdSchedule::kGrid;
  // Most threads an epoch uses; 0 = every core. A shard uses one thread per
  // `ratings_per_thread` ratings (at least one, at most one per grid row),
  // since threads on a small shard cost more than they save.
  uint32_t threads = 0;
  // Grid side P (kGrid, kFree). A shard with fewer than ratings_per_block * P^2
  // ratings uses the largest side that gives its blocks that many on average.
  uint32_t blocks = 16;
  uint32_t ratings_per_thread = 20000;
  uint32_t ratings_per_block = 256;
};

struct SgdOptions {
  float lr = 0.01f;         // learning rate of epoch 0
  float lr_decay = 1.0f;    // learning rate of epoch e is lr * lr_decay^e
  float reg = 0.05f;        // L2 on factors
  float bias_reg = 0.01f;   // L2 on biases
  SgdParallelism parallel;  // used by MfTrainer; SgdEpoch is one thread

  float LearningRate(uint64_t epoch) const;
};

// One pass over `ratings` (user/item indices must be in range of `model`).
// Returns the sum of squared errors seen before each update.
double SgdEpoch(MfModel* model, std::span<const Rating> ratings, float lr,
                const SgdOptions& options);

// Mean of the ratings' values, summed in double in input order.
float TrainingMean(std::span<const Rating> ratings);

namespace internal {
// The runtime-k kernel SgdEpoch uses for k outside {8, 16, 32, 64, 128}. It sums
// in the same order as the specialised kernels, so for those k both give the
// same bits; exposed so tests can check that.
double SgdEpochGeneric(MfModel* model, std::span<const Rating> ratings, float lr,
                       const SgdOptions& options);
}  // namespace internal

}  // namespace fedrec
