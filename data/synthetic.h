// Synthetic ratings: low-rank ground truth + user/item biases + Gaussian noise,
// with power-law (Zipf-like) user activity and item popularity, rounded to the
// rating scale. Defaults mimic MovieLens 100K's shape (943 users, 1,682 items,
// 100,000 ratings, mean about 3.53); it scales to millions of ratings.
#pragma once

#include <cstdint>
#include <vector>

#include "data/ratings.h"

namespace fedrec {

struct SyntheticOptions {
  uint32_t users = 943;
  uint32_t items = 1682;
  uint64_t ratings = 100000;  // distinct (user, item) pairs; capped at users*items/2
  uint32_t rank = 8;          // rank of the ground-truth interaction term
  double factor_std = 0.35;   // std of each ground-truth factor entry
  double user_bias_std = 0.35;
  double item_bias_std = 0.45;
  double noise_std = 0.75;  // Gaussian noise before rounding
  double mean = 3.56;       // ground-truth mean; rounding and clamping lower the
                            // observed mean by ~0.03, to ML-100K's 3.53
  double user_skew = 0.9;   // Zipf exponent of user activity (0 = uniform)
  double item_skew = 1.0;   // Zipf exponent of item popularity (0 = uniform)
  bool round_to_integers = true;
  float rating_min = 1.0f;
  float rating_max = 5.0f;
  uint64_t seed = 1;
};

class SyntheticData {
 public:
  Dataset dataset;  // all ratings in `dataset.train`, `test` empty; raw IDs "0".."n-1"

  // Noiseless expected rating mu + b_u + b_i + p_u . q_i, clamped to the scale.
  float Truth(uint32_t user, uint32_t item) const;

  // RMSE between `ratings` and the ground truth of the same (user, item): the
  // noise floor a model fitted to these data can approach.
  double NoiseFloorRmse(const std::vector<Rating>& ratings) const;

  // Ground truth, exposed for tests: rank-r factors (row-major) and biases.
  uint32_t rank = 0;
  double mean = 0.0;
  float rating_min = 1.0f, rating_max = 5.0f;
  std::vector<float> user_factors, item_factors, user_bias, item_bias;
};

SyntheticData GenerateSynthetic(const SyntheticOptions& options);

// Side features derived from the ground truth (data.synthetic.side_features),
// so a model with side features can learn from them; deterministic. With
// b = min(rank, 3) and G = min(rank, 8):
//   users: cluster (categorical, 2^b values: bit d set when p_u[d] > 0),
//          age_group (categorical, min(rank, 7) values "g0".."g6": the
//          dimension d < min(rank, 7) of the largest p_u[d]; a stand-in for
//          the age_group partitioner), bias (numeric: b_u over the declared
//          range [-3, 3] * user_bias_std, clamped);
//   items: genres (multi-valued categorical, G values "d0".."d7": the
//          dimensions d < G with q_i[d] > factor_std / 2, largest first, so
//          the first is the main genre; none = missing), cluster (as users').
void MakeSyntheticSideFeatures(const SyntheticData& data, const SyntheticOptions& options,
                               FeatureTable* users, FeatureTable* items);

}  // namespace fedrec
