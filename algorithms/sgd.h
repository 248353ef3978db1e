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

#include "algorithms/mf_model.h"
#include "data/ratings.h"

namespace fedrec {

struct SgdOptions {
  float lr = 0.01f;        // learning rate of epoch 0
  float lr_decay = 1.0f;   // learning rate of epoch e is lr * lr_decay^e
  float reg = 0.05f;       // L2 on factors
  float bias_reg = 0.01f;  // L2 on biases

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
