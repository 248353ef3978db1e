// Evaluation metrics as additive sums, so sites can report them and the
// coordinator can combine them (also under secure aggregation).
#pragma once

#include <cstdint>
#include <span>

#include "algorithms/mf_model.h"
#include "data/ratings.h"

namespace fedrec {

struct ErrorSums {
  double squared = 0.0;
  double absolute = 0.0;
  uint64_t count = 0;

  void Add(double error) {
    squared += error * error;
    absolute += error < 0 ? -error : error;
    ++count;
  }
  void Merge(const ErrorSums& o) {
    squared += o.squared;
    absolute += o.absolute;
    count += o.count;
  }
  double Rmse() const;  // NaN when count == 0
  double Mae() const;
};

// Errors of predictions clamped to [rating_min, rating_max].
ErrorSums EvaluateErrors(const MfModel& model, std::span<const Rating> test, float rating_min,
                         float rating_max);

struct RankingOptions {
  uint32_t k = 10;
  float relevant_threshold = 4.0f;  // a held-out rating >= this is relevant
};

// Per-user top-K metrics summed over users: for each user with at least one
// relevant held-out item, rank every item the user has not rated in train by
// predicted score (ties by item index) and take the top K.
//   precision = hits / K, recall = hits / relevant, HR = [hits > 0],
//   NDCG = DCG / ideal DCG with binary relevance.
struct RankingSums {
  double precision = 0.0, recall = 0.0, ndcg = 0.0, hit_rate = 0.0;
  uint64_t users = 0;

  void Merge(const RankingSums& o) {
    precision += o.precision;
    recall += o.recall;
    ndcg += o.ndcg;
    hit_rate += o.hit_rate;
    users += o.users;
  }
};

RankingSums EvaluateRanking(const MfModel& model, std::span<const Rating> train,
                            std::span<const Rating> test, const RankingOptions& options);

}  // namespace fedrec
