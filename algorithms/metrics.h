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

// Additive sums of a binary task (TaskKind kLike, kClick): the log loss of
// its predicted probabilities and an AUC histogram, positives and negatives
// counted per bin of predicted probability (bins equal parts of [0, 1]). The
// AUC from the histograms counts a positive above a negative in a higher bin
// as 1 and in the same bin as 1/2, so it is within the bin width of the
// exact pairwise AUC and, being computed from integer counts, exactly the
// same whether the counts were summed over sites or over all users at once.
struct BinarySums {
  static constexpr double kMinProbability = 1e-7;  // log loss clamps p to [this, 1 - this]

  double log_loss = 0.0;  // sum of -log p (label 1) and -log(1 - p) (label 0)
  uint64_t count = 0;
  std::vector<uint64_t> positives, negatives;  // per bin

  BinarySums() = default;
  explicit BinarySums(uint32_t bins) : positives(bins, 0), negatives(bins, 0) {}
  // The bin of `probability` among `bins` (NaN and values <= 0 in bin 0,
  // values >= 1 in the last).
  static uint32_t Bin(double probability, uint32_t bins);
  // REQUIRES: the histograms are sized (BinarySums(bins)).
  void Add(double probability, bool label);
  // Histograms of different sizes: the other's are added bin by bin after
  // resizing (an empty side takes the other's size).
  void Merge(const BinarySums& o);
  double LogLoss() const;  // mean; NaN when count == 0
  // NaN unless there is at least one positive and one negative.
  double Auc() const;
};

// One task's sums: errors for kRating (predictions clamped to the rating
// scale), BinarySums for kLike and kClick.
struct TaskSums {
  TaskSpec spec;
  ErrorSums errors;
  BinarySums binary;

  void Merge(const TaskSums& o);
};

// Everything evaluation reports for one group of users (all, warm or cold).
struct GroupSums {
  ErrorSums errors;
  RankingSums ranking;
  std::vector<TaskSums> tasks;  // Model::Tasks() order; empty for models without tasks

  // REQUIRES: tasks of the same specs, or one side without tasks.
  void Merge(const GroupSums& o);
};

// Per task: true for a binary task (kLike, kClick), false for kRating.
std::vector<bool> BinaryTasks(const std::vector<TaskSpec>& tasks);

struct EvalOptions {
  float rating_min = 1.0f;
  float rating_max = 5.0f;
  bool ranking = true;  // top-N metrics (RankingOptions)
  RankingOptions ranking_options;
  // kClick: sampled items per held-out interaction the user never interacted
  // with (train or test), labelled 0.
  uint32_t click_negatives = 4;
  uint32_t auc_bins = 1024;
  // Report warm and cold-start users apart (by the cold flags).
  bool warm_cold = false;
  uint64_t seed = 1;  // run seed: the click negatives' streams
};

// The sums of a whole evaluation: all users, and when options.warm_cold the
// warm (flag 0 or no flag) and cold (flag 1) users apart.
struct EvalSums {
  GroupSums all;
  bool warm_cold = false;
  GroupSums warm, cold;
};

// Per-task sums of `model` (Model::Tasks(), empty when it has none) on the
// held-out `test`.
// kRating: every test rating; kLike: label = value >= threshold; kClick:
// every test interaction is a positive, and options.click_negatives items
// the user has neither in model.train() nor in `test` per positive are
// negatives, drawn from the stream (seed, user_keys[user], 0,
// kEvalNegative): the same user draws the same items whichever holder
// evaluates it. REQUIRES: user_keys covers every user of `test` when a task
// is kClick.
std::vector<TaskSums> EvaluateTasks(const Model& model, std::span<const Rating> test,
                                    std::span<const uint64_t> user_keys,
                                    const EvalOptions& options);

// The click negatives of one user: `count` items drawn without regard to
// order from the user's stream, none of them in `seen` (ascending, unique).
// Fewer (none) when the user has interacted with every item.
std::vector<uint32_t> ClickNegatives(uint64_t seed, uint64_t user_key, uint32_t items,
                                     std::span<const uint32_t> seen, uint64_t count);

// The whole evaluation of `model` on `test`: errors (models that predict
// ratings), top-N metrics (options.ranking), per-task sums, for all users
// and, with options.warm_cold, for warm and cold users by `cold_users` (per
// local user, 1 = cold; shorter or empty: the rest are warm).
EvalSums EvaluateAll(const Model& model, std::span<const Rating> test,
                     std::span<const uint64_t> user_keys, std::span<const uint8_t> cold_users,
                     const EvalOptions& options);

}  // namespace fedrec
