// Evaluation metrics as additive sums, so sites can report them and the
// coordinator can combine them (also under secure aggregation).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "algorithms/mf_model.h"
#include "algorithms/model.h"
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
// The same for any model that predicts ratings (Model::PredictsRatings).
ErrorSums EvaluateErrors(const Model& model, std::span<const Rating> test, float rating_min,
                         float rating_max);

struct RankingOptions {
  uint32_t k = 10;
  float relevant_threshold = 4.0f;  // a held-out rating >= this is relevant
};

// Per-user top-K metrics summed over users: for each user with at least one
// relevant held-out item, rank every item the user has not interacted with in
// train by score (ties by item index) and take the top K.
//   precision = hits / K, recall = hits / relevant, F1 = 2PR / (P + R),
//   HR = [hits > 0], NDCG = DCG / ideal DCG with binary relevance,
//   AP = (sum over hit ranks r of hits@r / r) / min(relevant, K)  (MAP@K).
// `recommended[i]` counts the users whose top K holds item i (catalogue
// coverage = items with a non-zero count / items): an additive sum like the
// others, so sites' counts merge by adding.
struct RankingSums {
  double precision = 0.0, recall = 0.0, ndcg = 0.0, hit_rate = 0.0, f1 = 0.0, map = 0.0;
  uint64_t users = 0;
  std::vector<uint32_t> recommended;  // per item; empty when nothing was ranked

  void Merge(const RankingSums& o);
  // Items recommended to at least one user.
  uint32_t CoveredItems() const;
};

// Scores of every item for one user, written to `out` (size: items).
using UserScorer = std::function<void(uint32_t user, std::span<float> out)>;

RankingSums EvaluateRanking(uint32_t users, uint32_t items, const UserScorer& score,
                            std::span<const Rating> train, std::span<const Rating> test,
                            const RankingOptions& options);
// Ranks by b_i + p_u . q_i.
RankingSums EvaluateRanking(const MfModel& model, std::span<const Rating> train,
                            std::span<const Rating> test, const RankingOptions& options);
// Ranks by Model::Score, filtering the model's own training interactions.
RankingSums EvaluateRanking(const Model& model, std::span<const Rating> test,
                            const RankingOptions& options);

}  // namespace fedrec
