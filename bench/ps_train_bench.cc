// Parameter-server training (federation.mode = "ps") against single-process
// SGD on the same data, in the same run. items_per_second = ratings trained
// per second (ratings x epochs / wall time of the whole job: start-up,
// training, per-epoch evaluation disabled, final read of the model).
//
//   BM_SingleProcessSgd/<T>           MfTrainer (algorithms/sgd.h), the
//                                     `fedrec train` kernel, all ratings, on
//                                     T threads (train.threads; 0 = every
//                                     core, the default)
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

#include "algorithms/metrics.h"
#include "algorithms/mf_trainer.h"
#include "apps/job.h"
#include "apps/ps_job.h"

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
