// Training throughput of every built-in model behind the Model seam, on one
// thread, on ML-100K-shaped synthetic interactions (943 users x 1,682 items x
// 100,000 ratings, Zipf-skewed; data/synthetic.h):
//
//   BM_ModelTrain/<model>   one Train call (one epoch / one local step), and for
//                           closed-form models their Apply over their own sums:
//                           items_per_second = interactions per second (for
//                           EASE dominated by the items^3 solve)
//   BM_ModelScore/<model>   scoring every item for every user (users/s)
//
// The ratio that matters is against biased MF in the same run (its SGD is the
// throughput baseline of BENCHMARKS.md). The multi-task nets (shared_bottom,
// mmoe, ple: rating and like tasks, default keys) count rated examples.
// Run: model_bench --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <string>
#include <vector>

#include "algorithms/model.h"
#include "data/synthetic.h"

namespace fedrec {
namespace {

const Dataset& Data() {
  static const Dataset data = [] {
    SyntheticOptions options;
    options.seed = 42;
    return GenerateSynthetic(options).dataset;
  }();
  return data;
}

std::unique_ptr<Model> Make(const std::string& name) {
  const Dataset& d = Data();
  ModelData data;
  data.items = d.items.size();
  data.train = d.train;
  for (uint32_t u = 0; u < d.users.size(); ++u) data.user_keys.push_back(u);
  ModelOptions options;
  options.factors = 32;
  options.sgd.parallel.threads = 1;  // one thread: every model's own throughput
  Result<std::unique_ptr<Model>> model =
      ModelRegistry::WithBuiltins().Create(name, options, std::move(data));
  if (!model.ok()) return nullptr;
  (*model)->OnInitialModel();
  return std::move(model).value();
}

// One step as the centralized run takes it: Train, then for closed-form
// models Apply over the model's own upload.
void Step(Model* model, uint64_t epoch) {
  model->Train({static_cast<uint32_t>(epoch + 1), epoch, 1, 0.02f});
  if (model->SolvesFromSums()) (void)SolveFromOwnSums(model, static_cast<uint32_t>(epoch + 1));
}

void TrainBench(benchmark::State& state, const std::string& name) {
  std::unique_ptr<Model> model = Make(name);
  if (!model) return state.SkipWithError(("cannot build model " + name).c_str());
  const bool fresh = model->StepsToConverge() == 1;
  uint64_t epoch = 0;
  for (auto _ : state) {
    if (fresh) {
      state.PauseTiming();
      model = Make(name);
      state.ResumeTiming();
    }
    Step(model.get(), epoch++);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * model->train().size()));
}

void ScoreBench(benchmark::State& state, const std::string& name) {
  std::unique_ptr<Model> model = Make(name);
  if (!model) return state.SkipWithError(("cannot build model " + name).c_str());
  Step(model.get(), 0);
  std::vector<float> scores(model->items());
  for (auto _ : state) {
    for (uint32_t u = 0; u < model->users(); ++u) model->Score(u, scores);
    benchmark::DoNotOptimize(scores.data());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * model->users()));
}

const char* const kModels[] = {"mf",         "bpr",           "ials", "ease", "itemknn",
                               "popularity", "shared_bottom", "mmoe", "ple"};

const int kRegistered = [] {
  for (const char* name : kModels) {
    benchmark::RegisterBenchmark((std::string("BM_ModelTrain/") + name).c_str(), TrainBench,
                                 std::string(name))
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark((std::string("BM_ModelScore/") + name).c_str(), ScoreBench,
                                 std::string(name))
        ->Unit(benchmark::kMillisecond);
  }
  return 0;
}();

}  // namespace
}  // namespace fedrec

BENCHMARK_MAIN();
