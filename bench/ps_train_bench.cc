// Parameter-server training (federation.mode = "ps") against single-process
// SGD on the same data, in the same run. items_per_second = ratings trained
// per second (ratings x epochs / wall time of the whole job: start-up,
// training, per-epoch evaluation disabled, final read of the model).
//
//   BM_SingleProcessSgd/<T>           MfTrainer (algorithms/sgd.h), the
//                                     `fedrec train` kernel, all ratings, on
//                                     T threads (train.threads; 0 = every
//                                     core, the default)
//   BM_SingleProcessMinibatchSgd/<B>/<M>  the algorithm of PS mode without
//                                     its roles: minibatch SGD of batch B in
//                                     one process on one thread, the item
//                                     table a plain array (the same
//                                     minibatches, kernel and optimizer as a
//                                     bsp PS job of one worker, so the same
//                                     model); M = 1: the minibatches drawn
//                                     before the timing
//   BM_Ps/<consistency>/<S>/<W>/<B>/<T>  a PS job in one process: W workers
//                                     as threads over the in-process
//                                     transport, S shard servers served on
//                                     the workers' threads, minibatch B, T
//                                     threads per worker (train.threads)
//                                     (consistency 0 bsp, 1 ssp (s = 2), 2 async)
//
// Both train train.epochs = 20 epochs at the default hyperparameters and
// report test_rmse. Data: MovieLens 100K u1 when FEDREC_ML100K names the
// folder holding u1.base and u1.test, else ML-100K-shaped synthetic ratings.
//
//   FEDREC_ML100K=/tmp/ml100k build/bench/ps_train_bench --benchmark_repetitions=3
//       --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <numeric>

#include "algorithms/metrics.h"
#include "algorithms/mf_minibatch.h"
#include "algorithms/mf_model.h"
#include "algorithms/mf_trainer.h"
#include "apps/job.h"
#include "apps/ps_job.h"
#include "base/random.h"
#include "coordinator/shard_server.h"

namespace fedrec {
namespace {

constexpr int64_t kEpochs = 20;

Config BenchConfig() {
  Config config;
  if (const char* ml = std::getenv("FEDREC_ML100K")) {
    config.data.train = std::string(ml) + "/u1.base";
    config.data.test = std::string(ml) + "/u1.test";
  }
  config.train.epochs = kEpochs;
  config.eval.ranking = false;
  config.eval.every = 1000;  // evaluate after the last epoch only
  return config;
}

void BM_SingleProcessSgd(benchmark::State& state) {
  Config config = BenchConfig();
  config.train.threads = state.range(0);
  Result<Dataset> dataset = LoadDataset(config);
  if (!dataset.ok()) {
    state.SkipWithError(dataset.status().message().c_str());
    return;
  }
  const MfTrainerOptions options = TrainerOptions(config);
  std::vector<uint64_t> user_keys(dataset->users.size());
  for (uint32_t u = 0; u < user_keys.size(); ++u) user_keys[u] = u;
  double rmse = 0.0;
  for (auto _ : state) {
    MfTrainer trainer(options, dataset->items.size(), dataset->train, user_keys);
    trainer.UseShardMean();
    trainer.Train(0, kEpochs, options.sgd.lr);
    rmse = EvaluateErrors(trainer.model(), dataset->test, 1.0f, 5.0f).Rmse();
  }
  state.SetItemsProcessed(state.iterations() * kEpochs * dataset->train.size());
  state.counters["test_rmse"] = rmse;
}
BENCHMARK(BM_SingleProcessSgd)
    ->ArgNames({"threads"})
    ->Arg(0)
    ->Arg(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// PS mode's minibatch SGD (algorithms/mf_minibatch.h) for one worker in one
// process: each epoch shuffles an index of the ratings with the worker's
// stream; each step takes the gradient at the table's rows and steps the user
// rows, then applies the optimizer to the rows it touched. What a bsp PS job
// adds to this is its roles: slotting a step's items, pulls and pushes
// through frames and the transport, the shard's bookkeeping. With premade =
// 1 every step's minibatch is drawn before the timing starts, so the rate is
// the gradient and the optimizer alone (what a PS worker's stepping thread
// does when another thread makes its minibatches).
void BM_SingleProcessMinibatchSgd(benchmark::State& state) {
  Config config = BenchConfig();
  config.federation.mode = "ps";
  config.cluster.shard_servers = 1;
  config.federation.sites = 1;
  config.ps.batch_size = state.range(0);
  Result<FederatedData> data = LoadFederatedData(config);
  if (!data.ok()) {
    state.SkipWithError(data.status().message().c_str());
    return;
  }
  const PsLayout layout = MakePsLayout(config);
  const ShardServerOptions server = MakeShardServerOptions(config, layout, 0);
  const PsWorkerOptions worker = MakePsWorkerOptions(config, layout, 0);
  if (server.optimizer.HasState()) {
    state.SkipWithError("the baseline steps rows with sgd only");
    return;
  }
  const SiteData& site = data->sites[0];
  const uint32_t items = data->dataset.items.size();
  const uint32_t k = worker.factors, cols = k + 1;
  const size_t n = site.train.size();
  const uint64_t batch_size = static_cast<uint64_t>(config.ps.batch_size);
  const uint32_t steps = static_cast<uint32_t>((n + batch_size - 1) / batch_size);
  double sum = 0.0;
  for (const Rating& r : site.train) sum += r.value;
  const float mu = static_cast<float>(sum / static_cast<double>(n));
  const bool premade = state.range(1) != 0;
  // Every step's ratings, in order: made here when premade, else per step.
  std::vector<Rating> made;
  if (premade) {
    std::vector<uint32_t> order(n);
    std::iota(order.begin(), order.end(), 0u);
    for (uint32_t epoch = 0; epoch < kEpochs; ++epoch) {
      Rng rng(worker.init.seed, epoch, 0, Purpose::kShuffle);
      rng.Shuffle(std::span<uint32_t>(order));
      for (uint32_t t : order) made.push_back(site.train[t]);
    }
  }
  double rmse = 0.0;
  for (auto _ : state) {
    std::vector<float> table(static_cast<size_t>(items) * cols);
    for (uint32_t i = 0; i < items; ++i)
      server.init_row(i, std::span<float>(table.data() + static_cast<size_t>(i) * cols, cols));
    MfModel users(static_cast<uint32_t>(site.user_keys.size()), 0, k);
    users.InitUsers(worker.init, site.user_keys);
    // The steps read the table in place (it changes only between steps) and
    // sum gradients into rows of a table-sized array: no slots, no copies.
    std::vector<float> gradients(table.size(), 0.0f);
    std::vector<uint32_t> order(n), touched;
    std::vector<uint8_t> is_touched(items, 0);
    std::iota(order.begin(), order.end(), 0u);
    std::vector<Rating> batch;
    for (uint32_t epoch = 0; epoch < kEpochs; ++epoch) {
      if (!premade) {
        Rng rng(worker.init.seed, epoch, 0, Purpose::kShuffle);
        rng.Shuffle(std::span<uint32_t>(order));
      }
      const float lr = worker.sgd.LearningRate(epoch);
      const float server_lr = server.optimizer.schedule.LearningRate(epoch);
      for (uint32_t j = 0; j < steps; ++j) {
        const size_t begin = n * j / steps, end = n * (j + 1) / steps;
        touched.clear();
        if (premade) {
          const Rating* first = made.data() + size_t{epoch} * n;
          batch.assign(first + begin, first + end);
        } else {
          batch.clear();
          for (size_t t = begin; t < end; ++t) batch.push_back(site.train[order[t]]);
        }
        for (const Rating& r : batch) {
          if (!is_touched[r.item]) touched.push_back(r.item);
          is_touched[r.item] = 1;
        }
        MfMinibatchGradients(batch, k, mu, table.data(), gradients.data(), users.user_factors(),
                             users.user_bias(), lr, worker.sgd);
        for (uint32_t i : touched) {
          float* g = gradients.data() + static_cast<size_t>(i) * cols;
          server.optimizer.Apply(server_lr, table.data() + static_cast<size_t>(i) * cols, nullptr,
                                 g, cols);
          std::fill(g, g + cols, 0.0f);
          is_touched[i] = 0;
        }
      }
    }
    // The test items' rows, as the PS worker evaluates.
    MfModel model(static_cast<uint32_t>(site.user_keys.size()), items, k);
    std::copy_n(users.user_factors(), site.user_keys.size() * k, model.user_factors());
    std::copy_n(users.user_bias(), site.user_keys.size(), model.user_bias());
    for (uint32_t i = 0; i < items; ++i) {
      std::copy_n(table.data() + static_cast<size_t>(i) * cols, k,
                  model.item_factors() + static_cast<size_t>(i) * k);
      model.item_bias()[i] = table[static_cast<size_t>(i) * cols + k];
    }
    model.set_global_mean(mu);
    rmse = EvaluateErrors(model, site.test, 1.0f, 5.0f).Rmse();
  }
  state.SetItemsProcessed(state.iterations() * kEpochs * n);
  state.counters["test_rmse"] = rmse;
}
BENCHMARK(BM_SingleProcessMinibatchSgd)
    ->ArgNames({"batch", "premade"})
    ->Args({1000, 0})
    ->Args({5000, 0})
    ->Args({5000, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_Ps(benchmark::State& state) {
  Config config = BenchConfig();
  config.federation.mode = "ps";
  config.ps.consistency = state.range(0) == 0 ? "bsp" : state.range(0) == 1 ? "ssp" : "async";
  config.ps.staleness = 2;
  config.cluster.shard_servers = state.range(1);
  config.federation.sites = state.range(2);
  config.ps.batch_size = state.range(3);
  config.train.threads = state.range(4);
  Result<FederatedData> data = LoadFederatedData(config);
  if (!data.ok()) {
    state.SkipWithError(data.status().message().c_str());
    return;
  }
  double rmse = 0.0;
  for (auto _ : state) {
    state.PauseTiming();
    std::vector<SiteData> sites = data->sites;
    state.ResumeTiming();
    ErrorSums last;
    Result<PsInProcessRun> run = RunPsInProcess(
        config, std::move(sites), data->dataset.items.size(), [&](const PsEpochMetrics& m) {
          if (m.evaluated) last = m.test;
        });
    if (!run.ok()) {
      state.SkipWithError(run.status().message().c_str());
      return;
    }
    rmse = last.Rmse();
  }
  state.SetItemsProcessed(state.iterations() * kEpochs * data->dataset.train.size());
  state.counters["test_rmse"] = rmse;
}
BENCHMARK(BM_Ps)
    ->ArgNames({"consistency", "shards", "workers", "batch", "threads"})
    ->Args({0, 1, 1, 1000, 1})
    ->Args({0, 1, 1, 1000, 2})
    ->Args({0, 1, 1, 5000, 1})
    ->Args({0, 1, 1, 5000, 2})
    ->Args({0, 2, 3, 1000, 1})
    ->Args({1, 2, 3, 1000, 1})
    ->Args({2, 2, 3, 1000, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace fedrec

BENCHMARK_MAIN();
