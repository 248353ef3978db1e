// Local SGD epochs of biased MF on several threads (MfTrainer::Train, one
// epoch per iteration, shuffling included; items_per_second = SGD updates per
// second of wall time), k = 32:
//
//   BM_TrainEpoch/<schedule>/threads:<t>   sequential | grid | free
//
// on a MovieLens 100K training file when one is given (--train=<u1.base>),
// else on ML-100K-shaped synthetic ratings (data/synthetic.h, 80,000 of them).
// --rmse_epochs=<n> also prints each schedule's test RMSE after n epochs
// at the defaults of `fedrec train` (--test=<u1.test>, or the synthetic
// held-out 20%), so a speed comes with the accuracy it reaches. --blocks=<P>
// sets the grid side (train.blocks).
//
// Run: parallel_sgd_bench --train=/path/ml-100k/u1.base --test=/path/ml-100k/u1.test
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "algorithms/mf_trainer.h"
#include "algorithms/parallel_sgd.h"
#include "data/readers.h"
#include "data/split.h"
#include "data/synthetic.h"

namespace fedrec {
namespace {

struct Data {
  uint32_t users = 0, items = 0;
  std::vector<Rating> train, test;
  std::vector<uint64_t> user_keys;
};

uint32_t g_blocks = SgdParallelism{}.blocks;  // --blocks

Data& TheData() {
  static Data data;
  return data;
}

bool Load(const std::string& train, const std::string& test) {
  Data& data = TheData();
  if (train.empty()) {
    SyntheticData synthetic = GenerateSynthetic(SyntheticOptions{});
    Result<SplitResult> split = RandomSplit(synthetic.dataset.train, 0.2, 1);
    if (!split.ok()) return false;
    data.users = synthetic.dataset.users.size();
    data.items = synthetic.dataset.items.size();
    data.train = std::move(split->train);
    data.test = std::move(split->test);
    for (uint32_t u = 0; u < data.users; ++u)
      data.user_keys.push_back(StableIdKey(synthetic.dataset.users.Raw(u)));
  } else {
    IdMap users, items;
    for (const auto& [path, out] : {std::pair{&train, &data.train}, {&test, &data.test}}) {
      if (path->empty()) continue;
      if (Status s = ReadRatings(*path, ReadOptions{}, &users, &items, out); !s.ok()) {
        std::fprintf(stderr, "parallel_sgd_bench: %s\n", s.message().c_str());
        return false;
      }
    }
    data.users = users.size();
    data.items = items.size();
    for (uint32_t u = 0; u < data.users; ++u) data.user_keys.push_back(StableIdKey(users.Raw(u)));
  }
  return true;
}

// The defaults of `fedrec train` (apps/config.h), k = 32.
MfTrainerOptions Options(SgdSchedule schedule, uint32_t threads) {
  MfTrainerOptions options;
  options.factors = 32;
  options.init.init_std = 0.05f;
  options.init.seed = 42;
  options.sgd.lr = 0.02f;
  options.sgd.lr_decay = 0.97f;
  options.sgd.reg = 0.09f;
  options.sgd.bias_reg = 0.01f;
  options.sgd.parallel.schedule = schedule;
  options.sgd.parallel.threads = threads;
  options.sgd.parallel.blocks = g_blocks;
  return options;
}

void TrainEpochBench(benchmark::State& state, SgdSchedule schedule) {
  const Data& data = TheData();
  const uint32_t threads = static_cast<uint32_t>(state.range(0));
  MfTrainerOptions options = Options(schedule, threads);
  options.sgd.lr_decay = 1.0f;  // every timed epoch at the same rate
  MfTrainer trainer(options, data.items, data.train, data.user_keys);
  trainer.UseShardMean();
  uint64_t epoch = 0;
  double sse = 0.0;
  for (auto _ : state) sse = trainer.Train(epoch++, 1, options.sgd.lr).squared_error;
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * data.train.size()));
  state.counters["train_rmse"] = std::sqrt(sse / static_cast<double>(data.train.size()));
  const bool grid = schedule != SgdSchedule::kSequential;  // every run has every counter (csv)
  state.counters["threads_used"] =
      grid ? ParallelSgd::Threads(options.sgd.parallel, data.train.size(),
                                  std::thread::hardware_concurrency())
           : 1;
  state.counters["grid_side"] =
      grid ? ParallelSgd::Side(options.sgd.parallel, data.train.size()) : 1;
}

void PrintTestRmse(int epochs) {
  const Data& data = TheData();
  for (const auto& [schedule, threads] : {std::pair{SgdSchedule::kSequential, 1u},
                                          {SgdSchedule::kGrid, 1u},
                                          {SgdSchedule::kGrid, 2u},
                                          {SgdSchedule::kFree, 2u}}) {
    const MfTrainerOptions options = Options(schedule, threads);
    MfTrainer trainer(options, data.items, data.train, data.user_keys);
    trainer.UseShardMean();
    trainer.Train(0, static_cast<uint32_t>(epochs), options.sgd.lr);
    double sq = 0.0;
    for (const Rating& r : data.test) {
      const double e = r.value - trainer.model().Predict(r.user, r.item);
      sq += e * e;
    }
    std::printf("test_rmse schedule=%s threads=%u epochs=%d: %.5f\n",
                std::string(SgdScheduleName(schedule)).c_str(), threads, epochs,
                std::sqrt(sq / static_cast<double>(data.test.size())));
  }
}

void Threads(benchmark::internal::Benchmark* b) {
  b->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMillisecond);
}

BENCHMARK_CAPTURE(TrainEpochBench, sequential, SgdSchedule::kSequential)
    ->Name("BM_TrainEpoch/sequential")
    ->ArgName("threads")
    ->Arg(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(TrainEpochBench, grid, SgdSchedule::kGrid)
    ->Name("BM_TrainEpoch/grid")
    ->Apply(Threads);
BENCHMARK_CAPTURE(TrainEpochBench, free, SgdSchedule::kFree)
    ->Name("BM_TrainEpoch/free")
    ->Apply(Threads);

}  // namespace
}  // namespace fedrec

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  std::string train, test;
  int rmse_epochs = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--train=", 0) == 0) {
      train = arg.substr(8);
    } else if (arg.rfind("--test=", 0) == 0) {
      test = arg.substr(7);
    } else if (arg.rfind("--blocks=", 0) == 0) {
      fedrec::g_blocks = static_cast<uint32_t>(std::atoi(arg.c_str() + 9));
    } else if (arg.rfind("--rmse_epochs=", 0) == 0) {
      rmse_epochs = std::atoi(arg.c_str() + 14);
    } else {
      std::fprintf(
          stderr,
          "parallel_sgd_bench: unknown argument '%s'; expected --train=<file>, "
          "--test=<file>, --blocks=<grid side>, --rmse_epochs=<n> or Google Benchmark flags\n",
          argv[i]);
      return 2;
    }
  }
  if (!fedrec::Load(train, test)) return 1;
  if (rmse_epochs > 0 && !fedrec::TheData().test.empty()) fedrec::PrintTestRmse(rmse_epochs);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
