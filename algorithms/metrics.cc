#include "algorithms/metrics.h"

#include <Eigen/Core>
#include <algorithm>
#include <cassert>
#include <cmath>
#include <iterator>
#include <limits>
#include <utility>
#include <vector>

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
