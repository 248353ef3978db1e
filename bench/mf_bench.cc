// SGD throughput of biased MF on one thread (items_per_second = SGD updates/s),
// on MovieLens-shaped synthetic ratings generated here (so the benchmark needs
// only the Rating struct, not data/):
//   ML100K: 943 users x 1,682 items x 100,000 ratings (the model fits in L2)
//   ML1M:   6,040 users x 3,706 items x 1,000,000 ratings
// with Zipf-like user activity and item popularity.
//
//   BM_SgdEpoch/<k>              one epoch over pre-shuffled ratings (shuffle untimed)
//   BM_SgdEpochShuffled/<k>      in-place Fisher-Yates shuffle + one epoch, both timed
//   BM_SgdEpochGeneric/<k>       the runtime-k kernel, to show what specialisation buys
//   BM_Shuffle                   the per-epoch shuffle alone
//   BM_EvaluateRanking/<k>       top-10 ranking metrics over all users
//
// Run: mf_bench --benchmark_min_time=1
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <unordered_set>
#include <vector>

#include "algorithms/metrics.h"
#include "algorithms/mf_model.h"
#include "algorithms/sgd.h"
#include "base/random.h"
#include "data/ratings.h"

namespace fedrec {
namespace {

struct Shape {
  uint32_t users, items;
  uint64_t ratings;
};
constexpr Shape kMl100k{943, 1682, 100000};
constexpr Shape kMl1m{6040, 3706, 1000000};

// Cumulative Zipf weights 1 / (rank + 1)^s over a random permutation of indices.
std::vector<double> ZipfCdf(uint32_t n, double s, Rng& rng) {
  std::vector<uint32_t> rank(n);
  for (uint32_t i = 0; i < n; ++i) rank[i] = i;
  rng.Shuffle(std::span<uint32_t>(rank));
  std::vector<double> cdf(n);
  double total = 0.0;
  for (uint32_t i = 0; i < n; ++i) {
    total += 1.0 / std::pow(rank[i] + 1.0, s);
    cdf[i] = total;
  }
  for (double& c : cdf) c /= total;
  return cdf;
}

uint32_t Draw(const std::vector<double>& cdf, Rng& rng) {
  const auto it = std::upper_bound(cdf.begin(), cdf.end(), rng.Uniform());
  return static_cast<uint32_t>(std::min<size_t>(it - cdf.begin(), cdf.size() - 1));
}

// Distinct (user, item) pairs with skewed popularity, in random order; values
// from a rank-8 model plus noise, rounded to 1..5.
std::vector<Rating> MakeRatings(const Shape& shape, uint64_t seed) {
  Rng rng(seed, 0, 0, Purpose::kSynthetic);
  const std::vector<double> user_cdf = ZipfCdf(shape.users, 0.9, rng);
  const std::vector<double> item_cdf = ZipfCdf(shape.items, 1.0, rng);
  constexpr uint32_t kRank = 8;
  std::vector<float> pu(static_cast<size_t>(shape.users) * kRank);
  std::vector<float> qi(static_cast<size_t>(shape.items) * kRank);
  for (float& x : pu) x = static_cast<float>(0.35 * rng.Normal());
  for (float& x : qi) x = static_cast<float>(0.35 * rng.Normal());

  std::vector<Rating> ratings;
  ratings.reserve(shape.ratings);
  std::unordered_set<uint64_t> seen;
  seen.reserve(shape.ratings * 2);
  while (ratings.size() < shape.ratings) {
    const uint32_t u = Draw(user_cdf, rng);
    const uint32_t i = Draw(item_cdf, rng);
    if (!seen.insert(static_cast<uint64_t>(u) << 32 | i).second) continue;
    double v = 3.53 + 0.75 * rng.Normal();
    for (uint32_t c = 0; c < kRank; ++c) v += pu[u * kRank + c] * qi[i * kRank + c];
    v = std::clamp(std::round(v), 1.0, 5.0);
    ratings.push_back({u, i, static_cast<float>(v), 0});
  }
  return ratings;
}

const std::vector<Rating>& Ratings(const Shape& shape) {
  static const std::vector<Rating> ml100k = MakeRatings(kMl100k, 42);
  static const std::vector<Rating> ml1m = MakeRatings(kMl1m, 42);
  return shape.users == kMl100k.users ? ml100k : ml1m;
}

MfModel MakeModel(const Shape& shape, uint32_t k, std::span<const Rating> ratings) {
  MfModel model(shape.users, shape.items, k);
  MfInitOptions init;
  model.InitGlobal(init);
  model.InitUsers(init);
  model.set_global_mean(TrainingMean(ratings));
  return model;
}

void SgdEpochBench(benchmark::State& state, const Shape& shape, bool generic) {
  const uint32_t k = static_cast<uint32_t>(state.range(0));
  const std::vector<Rating>& ratings = Ratings(shape);
  MfModel model = MakeModel(shape, k, ratings);
  const SgdOptions options;
  double sse = 0.0;
  for (auto _ : state) {
    sse = generic ? internal::SgdEpochGeneric(&model, ratings, options.lr, options)
                  : SgdEpoch(&model, ratings, options.lr, options);
    benchmark::DoNotOptimize(sse);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * ratings.size()));
  state.counters["train_rmse"] = std::sqrt(sse / static_cast<double>(ratings.size()));
}

void SgdEpochShuffledBench(benchmark::State& state, const Shape& shape) {
  const uint32_t k = static_cast<uint32_t>(state.range(0));
  std::vector<Rating> ratings = Ratings(shape);
  MfModel model = MakeModel(shape, k, ratings);
  const SgdOptions options;
  uint64_t epoch = 0;
  for (auto _ : state) {
    Rng rng(1, epoch++, 0, Purpose::kShuffle);
    rng.Shuffle(std::span<Rating>(ratings));
    benchmark::DoNotOptimize(SgdEpoch(&model, ratings, options.lr, options));
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * ratings.size()));
}

void ShuffleBench(benchmark::State& state, const Shape& shape) {
  std::vector<Rating> ratings = Ratings(shape);
  uint64_t epoch = 0;
  for (auto _ : state) {
    Rng rng(1, epoch++, 0, Purpose::kShuffle);
    rng.Shuffle(std::span<Rating>(ratings));
    benchmark::DoNotOptimize(ratings.data());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * ratings.size()));
}

void RankingBench(benchmark::State& state, const Shape& shape) {
  const uint32_t k = static_cast<uint32_t>(state.range(0));
  const std::vector<Rating>& all = Ratings(shape);
  // Every fifth rating held out.
  std::vector<Rating> train, test;
  for (size_t t = 0; t < all.size(); ++t) (t % 5 == 0 ? test : train).push_back(all[t]);
  MfModel model = MakeModel(shape, k, train);
  const SgdOptions options;
  for (int e = 0; e < 5; ++e) SgdEpoch(&model, train, options.lr, options);
  RankingSums sums;
  for (auto _ : state) {
    sums = EvaluateRanking(model, train, test, RankingOptions{});
    benchmark::DoNotOptimize(sums);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * sums.users));
  state.counters["users"] = static_cast<double>(sums.users);
}

void Ks(benchmark::internal::Benchmark* b) {
  b->ArgName("k")->Arg(16)->Arg(32)->Arg(64)->Unit(benchmark::kMillisecond);
}

BENCHMARK_CAPTURE(SgdEpochBench, ML100K, kMl100k, false)->Name("BM_SgdEpoch/ML100K")->Apply(Ks);
BENCHMARK_CAPTURE(SgdEpochBench, ML1M, kMl1m, false)->Name("BM_SgdEpoch/ML1M")->Apply(Ks);
BENCHMARK_CAPTURE(SgdEpochShuffledBench, ML100K, kMl100k)
    ->Name("BM_SgdEpochShuffled/ML100K")
    ->Apply(Ks);
BENCHMARK_CAPTURE(SgdEpochShuffledBench, ML1M, kMl1m)->Name("BM_SgdEpochShuffled/ML1M")->Apply(Ks);
BENCHMARK_CAPTURE(SgdEpochBench, ML100K_generic, kMl100k, true)
    ->Name("BM_SgdEpochGeneric/ML100K")
    ->Apply(Ks);
BENCHMARK_CAPTURE(ShuffleBench, ML100K, kMl100k)
    ->Name("BM_Shuffle/ML100K")
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(ShuffleBench, ML1M, kMl1m)
    ->Name("BM_Shuffle/ML1M")
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(RankingBench, ML100K, kMl100k)
    ->Name("BM_EvaluateRanking/ML100K")
    ->ArgName("k")
    ->Arg(32)
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace fedrec

BENCHMARK_MAIN();
