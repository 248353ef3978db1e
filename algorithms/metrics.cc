#include "algorithms/metrics.h"

#include <Eigen/Core>
#include <algorithm>
#include <cassert>
#include <cmath>
#include <iterator>
#include <limits>
#include <utility>
#include <vector>

#include "base/random.h"

namespace fedrec {

double ErrorSums::Rmse() const {
  if (count == 0) return std::numeric_limits<double>::quiet_NaN();
  return std::sqrt(squared / static_cast<double>(count));
}

double ErrorSums::Mae() const {
  if (count == 0) return std::numeric_limits<double>::quiet_NaN();
  return absolute / static_cast<double>(count);
}

ErrorSums EvaluateErrors(const MfModel& model, std::span<const Rating> test, float rating_min,
                         float rating_max) {
  ErrorSums sums;
  for (const Rating& r : test) {
    const float prediction = std::clamp(model.Predict(r.user, r.item), rating_min, rating_max);
    sums.Add(static_cast<double>(r.value) - static_cast<double>(prediction));
  }
  return sums;
}

ErrorSums EvaluateErrors(const Model& model, std::span<const Rating> test, float rating_min,
                         float rating_max) {
  ErrorSums sums;
  if (!model.PredictsRatings()) return sums;
  for (const Rating& r : test) {
    const float prediction = std::clamp(model.Predict(r.user, r.item), rating_min, rating_max);
    sums.Add(static_cast<double>(r.value) - static_cast<double>(prediction));
  }
  return sums;
}

uint32_t RankingSums::CoveredItems() const {
  return static_cast<uint32_t>(
      std::count_if(recommended.begin(), recommended.end(), [](uint32_t n) { return n > 0; }));
}

void RankingSums::Merge(const RankingSums& o) {
  precision += o.precision;
  recall += o.recall;
  ndcg += o.ndcg;
  hit_rate += o.hit_rate;
  f1 += o.f1;
  map += o.map;
  users += o.users;
  if (recommended.size() < o.recommended.size()) recommended.resize(o.recommended.size(), 0);
  for (size_t i = 0; i < o.recommended.size(); ++i) recommended[i] += o.recommended[i];
}

namespace {

// Items per user in compressed-row form: the items of user u are
// items[offsets[u] .. offsets[u + 1]), in input order.
struct UserItems {
  std::vector<uint32_t> offsets;
  std::vector<uint32_t> items;

  std::span<const uint32_t> Of(uint32_t user) const {
    return {items.data() + offsets[user], items.data() + offsets[user + 1]};
  }
};

template <typename Keep>
UserItems GroupByUser(std::span<const Rating> ratings, uint32_t users, Keep keep) {
  UserItems g;
  g.offsets.assign(static_cast<size_t>(users) + 1, 0);
  for (const Rating& r : ratings) {
    assert(r.user < users);
    if (keep(r)) ++g.offsets[r.user + 1];
  }
  for (uint32_t u = 0; u < users; ++u) g.offsets[u + 1] += g.offsets[u];
  g.items.resize(g.offsets[users]);
  std::vector<uint32_t> next(g.offsets.begin(), g.offsets.end() - 1);
  for (const Rating& r : ratings) {
    if (keep(r)) g.items[next[r.user]++] = r.item;
  }
  return g;
}

struct Scored {
  float score;
  uint32_t item;
};

// Higher score first; equal scores by lower item index.
inline bool Better(const Scored& a, const Scored& b) {
  return a.score > b.score || (a.score == b.score && a.item < b.item);
}

}  // namespace

RankingSums EvaluateRanking(uint32_t users, uint32_t items, const UserScorer& score,
                            std::span<const Rating> train, std::span<const Rating> test,
                            const RankingOptions& options) {
  RankingSums sums;
  const uint32_t top_k = options.k;
  if (top_k == 0 || users == 0 || items == 0) return sums;

  const UserItems seen = GroupByUser(train, users, [](const Rating&) { return true; });
  const float threshold = options.relevant_threshold;
  const UserItems held_out =
      GroupByUser(test, users, [threshold](const Rating& r) { return r.value >= threshold; });
  std::vector<uint32_t> eligible;
  for (uint32_t u = 0; u < users; ++u) {
    if (!held_out.Of(u).empty()) eligible.push_back(u);
  }

  std::vector<float> scores(items);
  std::vector<uint8_t> excluded(items, 0), relevant(items, 0);
  sums.recommended.assign(items, 0);
  // At most min(K, items) items are ranked or relevant.
  const uint32_t ranked = std::min(top_k, items);
  std::vector<Scored> heap;
  heap.reserve(ranked);
  std::vector<double> ideal_dcg(static_cast<size_t>(ranked) + 1, 0.0);  // ideal_dcg[n]: n hits
  for (uint32_t n = 0; n < ranked; ++n) {
    ideal_dcg[n + 1] = ideal_dcg[n] + 1.0 / std::log2(static_cast<double>(n) + 2.0);
  }

  for (const uint32_t u : eligible) {
    score(u, scores);
    const float* s = scores.data();
    for (uint32_t i : seen.Of(u)) excluded[i] = 1;
    uint32_t relevant_count = 0;
    for (uint32_t i : held_out.Of(u)) {
      relevant_count += relevant[i] == 0;
      relevant[i] = 1;
    }

    // Top-K by a bounded heap whose front is the worst kept candidate.
    heap.clear();
    for (uint32_t i = 0; i < items; ++i) {
      if (excluded[i]) continue;
      const Scored c{std::isnan(s[i]) ? -std::numeric_limits<float>::infinity() : s[i], i};
      if (heap.size() < top_k) {
        heap.push_back(c);
        std::push_heap(heap.begin(), heap.end(), Better);
      } else if (Better(c, heap.front())) {
        std::pop_heap(heap.begin(), heap.end(), Better);
        heap.back() = c;
        std::push_heap(heap.begin(), heap.end(), Better);
      }
    }
    std::sort_heap(heap.begin(), heap.end(), Better);  // best first

    uint32_t hits = 0;
    double dcg = 0.0, precision_sum = 0.0;
    for (size_t rank = 0; rank < heap.size(); ++rank) {
      ++sums.recommended[heap[rank].item];
      if (relevant[heap[rank].item]) {
        ++hits;
        dcg += 1.0 / std::log2(static_cast<double>(rank) + 2.0);
        precision_sum += static_cast<double>(hits) / static_cast<double>(rank + 1);
      }
    }
    const double precision = static_cast<double>(hits) / top_k;
    const double recall = static_cast<double>(hits) / relevant_count;
    sums.precision += precision;
    sums.recall += recall;
    sums.f1 += hits > 0 ? 2.0 * precision * recall / (precision + recall) : 0.0;
    sums.map += precision_sum / std::min(relevant_count, ranked);
    sums.hit_rate += hits > 0 ? 1.0 : 0.0;
    sums.ndcg += dcg / ideal_dcg[std::min(relevant_count, ranked)];
    ++sums.users;

    for (uint32_t i : seen.Of(u)) excluded[i] = 0;
    for (uint32_t i : held_out.Of(u)) relevant[i] = 0;
  }
  return sums;
}

RankingSums EvaluateRanking(const MfModel& model, std::span<const Rating> train,
                            std::span<const Rating> test, const RankingOptions& options) {
  // mu + b_u is the same for every item of a user, so it does not change the order.
  using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const uint32_t items = model.items(), factors = model.factors();
  const Eigen::Map<const RowMajor> item_factors(model.item_factors(), items, factors);
  const Eigen::Map<const Eigen::VectorXf> item_bias(model.item_bias(), items);
  return EvaluateRanking(
      model.users(), items,
      [&](uint32_t u, std::span<float> out) {
        const Eigen::Map<const Eigen::VectorXf> user_factors(
            model.user_factors() + static_cast<size_t>(u) * factors, factors);
        Eigen::Map<Eigen::VectorXf> scores(out.data(), items);
        scores.noalias() = item_factors * user_factors;
        scores += item_bias;
      },
      train, test, options);
}

RankingSums EvaluateRanking(const Model& model, std::span<const Rating> test,
                            const RankingOptions& options) {
  return EvaluateRanking(
      model.users(), model.items(),
      [&model](uint32_t u, std::span<float> out) { model.Score(u, out); }, model.train(), test,
      options);
}

}  // namespace fedrec

namespace fedrec {

std::vector<bool> BinaryTasks(const std::vector<TaskSpec>& tasks) {
  std::vector<bool> binary;
  binary.reserve(tasks.size());
  for (const TaskSpec& t : tasks) binary.push_back(t.kind != TaskKind::kRating);
  return binary;
}

uint32_t BinarySums::Bin(double probability, uint32_t bins) {
  if (!(probability > 0.0)) return 0;  // also NaN
  if (probability >= 1.0) return bins - 1;
  return std::min(bins - 1, static_cast<uint32_t>(probability * static_cast<double>(bins)));
}

void BinarySums::Add(double probability, bool label) {
  assert(!positives.empty() && positives.size() == negatives.size());
  const double p = std::isnan(probability)
                       ? 0.5
                       : std::clamp(probability, kMinProbability, 1.0 - kMinProbability);
  log_loss -= label ? std::log(p) : std::log1p(-p);
  ++count;
  const uint32_t bin = Bin(probability, static_cast<uint32_t>(positives.size()));
  ++(label ? positives : negatives)[bin];
}

void BinarySums::Merge(const BinarySums& o) {
  log_loss += o.log_loss;
  count += o.count;
  for (auto [mine, theirs] : {std::pair{&positives, &o.positives}, {&negatives, &o.negatives}}) {
    if (mine->size() < theirs->size()) mine->resize(theirs->size(), 0);
    for (size_t b = 0; b < theirs->size(); ++b) (*mine)[b] += (*theirs)[b];
  }
}

double BinarySums::LogLoss() const {
  if (count == 0) return std::numeric_limits<double>::quiet_NaN();
  return log_loss / static_cast<double>(count);
}

double BinarySums::Auc() const {
  // Twice the number of (positive, negative) pairs ordered right, with ties
  // in a bin counted 1/2: an exact integer, so the AUC does not depend on
  // how the counts were summed.
  unsigned __int128 twice_ordered = 0;
  uint64_t negatives_below = 0, total_positives = 0;
  const size_t bins = std::min(positives.size(), negatives.size());
  for (size_t b = 0; b < bins; ++b) {
    twice_ordered += static_cast<unsigned __int128>(positives[b]) *
                     (2 * static_cast<unsigned __int128>(negatives_below) + negatives[b]);
    negatives_below += negatives[b];
    total_positives += positives[b];
  }
  if (total_positives == 0 || negatives_below == 0) return std::numeric_limits<double>::quiet_NaN();
  return static_cast<double>(twice_ordered) /
         (2.0 * static_cast<double>(total_positives) * static_cast<double>(negatives_below));
}

void TaskSums::Merge(const TaskSums& o) {
  errors.Merge(o.errors);
  binary.Merge(o.binary);
}

void GroupSums::Merge(const GroupSums& o) {
  errors.Merge(o.errors);
  ranking.Merge(o.ranking);
  if (tasks.empty()) {
    tasks = o.tasks;
    return;
  }
  assert(o.tasks.empty() || o.tasks.size() == tasks.size());
  for (size_t t = 0; t < tasks.size() && t < o.tasks.size(); ++t) tasks[t].Merge(o.tasks[t]);
}

std::vector<uint32_t> ClickNegatives(uint64_t seed, uint64_t user_key, uint32_t items,
                                     std::span<const uint32_t> seen, uint64_t count) {
  std::vector<uint32_t> out;
  if (seen.size() >= items || count == 0) return out;
  out.reserve(count);
  Rng rng(seed, user_key, 0, Purpose::kEvalNegative);
  const uint64_t unseen = items - seen.size();
  if (2 * seen.size() >= items) {
    // Most items seen: draw among the unseen ones directly.
    std::vector<uint32_t> candidates;
    candidates.reserve(unseen);
    size_t next = 0;
    for (uint32_t i = 0; i < items; ++i) {
      while (next < seen.size() && seen[next] < i) ++next;
      if (next < seen.size() && seen[next] == i) continue;
      candidates.push_back(i);
    }
    for (uint64_t n = 0; n < count; ++n) out.push_back(candidates[rng.Below(unseen)]);
    return out;
  }
  // Fewer than half seen: each draw is accepted with probability > 1/2.
  while (out.size() < count) {
    const uint32_t item = static_cast<uint32_t>(rng.Below(items));
    if (!std::binary_search(seen.begin(), seen.end(), item)) out.push_back(item);
  }
  return out;
}

std::vector<TaskSums> EvaluateTasks(const Model& model, std::span<const Rating> test,
                                    std::span<const uint64_t> user_keys,
                                    const EvalOptions& options) {
  const std::vector<TaskSpec> specs = model.Tasks();
  std::vector<TaskSums> sums(specs.size());
  bool clicks = false;
  for (size_t t = 0; t < specs.size(); ++t) {
    sums[t].spec = specs[t];
    if (specs[t].kind != TaskKind::kRating) sums[t].binary = BinarySums(options.auc_bins);
    clicks = clicks || specs[t].kind == TaskKind::kClick;
  }
  if (specs.empty()) return sums;

  std::vector<float> out(specs.size());
  const auto add = [&](const Rating& r) {
    model.PredictTasks(r.user, r.item, out);
    for (size_t t = 0; t < specs.size(); ++t) {
      switch (specs[t].kind) {
        case TaskKind::kRating: {
          const float p = std::clamp(out[t], options.rating_min, options.rating_max);
          sums[t].errors.Add(static_cast<double>(r.value) - static_cast<double>(p));
          break;
        }
        case TaskKind::kLike:
          sums[t].binary.Add(out[t], r.value >= specs[t].threshold);
          break;
        case TaskKind::kClick:
          sums[t].binary.Add(out[t], true);
          break;
      }
    }
  };
  for (const Rating& r : test) add(r);
  if (!clicks || options.click_negatives == 0) return sums;

  // Negatives, user by user in ascending order: items neither in the user's
  // training nor in its held-out interactions.
  const uint32_t users = model.users(), items = model.items();
  const auto all = [](const Rating&) { return true; };
  const UserItems trained = GroupByUser(model.train(), users, all);
  const UserItems held_out = GroupByUser(test, users, all);
  std::vector<uint32_t> seen;
  for (uint32_t u = 0; u < users; ++u) {
    const std::span<const uint32_t> positives = held_out.Of(u);
    if (positives.empty()) continue;
    assert(u < user_keys.size());
    seen.assign(trained.Of(u).begin(), trained.Of(u).end());
    seen.insert(seen.end(), positives.begin(), positives.end());
    std::sort(seen.begin(), seen.end());
    seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
    const std::vector<uint32_t> negatives =
        ClickNegatives(options.seed, u < user_keys.size() ? user_keys[u] : u, items, seen,
                       static_cast<uint64_t>(positives.size()) * options.click_negatives);
    for (const uint32_t item : negatives) {
      model.PredictTasks(u, item, out);
      for (size_t t = 0; t < specs.size(); ++t) {
        if (specs[t].kind == TaskKind::kClick) sums[t].binary.Add(out[t], false);
      }
    }
  }
  return sums;
}

namespace {

GroupSums EvaluateGroup(const Model& model, std::span<const Rating> test,
                        std::span<const uint64_t> user_keys, const EvalOptions& options) {
  GroupSums group;
  group.errors = EvaluateErrors(model, test, options.rating_min, options.rating_max);
  if (options.ranking) group.ranking = EvaluateRanking(model, test, options.ranking_options);
  group.tasks = EvaluateTasks(model, test, user_keys, options);
  return group;
}

}  // namespace

EvalSums EvaluateAll(const Model& model, std::span<const Rating> test,
                     std::span<const uint64_t> user_keys, std::span<const uint8_t> cold_users,
                     const EvalOptions& options) {
  EvalSums sums;
  sums.warm_cold = options.warm_cold;
  if (!options.warm_cold) {
    sums.all = EvaluateGroup(model, test, user_keys, options);
    return sums;
  }
  // Every user is in exactly one group and each metric is a sum over users
  // or ratings, so all = warm + cold.
  std::vector<Rating> warm, cold;
  for (const Rating& r : test) {
    const bool is_cold = r.user < cold_users.size() && cold_users[r.user] != 0;
    (is_cold ? cold : warm).push_back(r);
  }
  sums.warm = EvaluateGroup(model, warm, user_keys, options);
  sums.cold = EvaluateGroup(model, cold, user_keys, options);
  sums.all = sums.warm;
  sums.all.Merge(sums.cold);
  return sums;
}

}  // namespace fedrec
