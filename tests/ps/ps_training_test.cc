// Parameter-server training (federation.mode = "ps"): every role a thread over
// the in-process transport (SpawnRanks), checked against single-process
// references written here from the same kernels.
#include <gtest/gtest.h>

#include <cmath>
#include <mutex>

#include "algorithms/mf_minibatch.h"
#include "apps/job.h"
#include "apps/ps_job.h"
#include "base/random.h"
#include "tests/ps/ps_config.h"

namespace fedrec {
namespace {

struct PsRun {
  PsInProcessRun run;
  std::vector<PsEpochMetrics> epochs;
  const std::vector<float>& rows() const { return run.rows; }
};

// One PS job of `config` with every role a thread.
PsRun RunPs(const Config& config) {
  EXPECT_TRUE(ValidateConfig(config).ok()) << ValidateConfig(config).ToString();
  Result<FederatedData> data = LoadFederatedData(config);
  EXPECT_TRUE(data.ok()) << data.status().ToString();
  PsRun out;
  Result<PsInProcessRun> run =
      RunPsInProcess(config, std::move(data->sites), data->dataset.items.size(),
                     [&](const PsEpochMetrics& m) { out.epochs.push_back(m); });
  EXPECT_TRUE(run.ok()) << run.status().ToString();
  if (run.ok()) out.run = std::move(run).value();
  return out;
}

// Synchronous data-parallel minibatch SGD in one process: at each step every
// worker's minibatch gradient is taken at the same item rows, the gradients
// are summed per row in worker order and applied as one optimizer step. With
// one worker it is plain single-process minibatch SGD.
std::vector<float> ReferenceMinibatchSgd(const Config& config) {
  Result<FederatedData> data = LoadFederatedData(config);
  EXPECT_TRUE(data.ok());
  const PsLayout layout = MakePsLayout(config);
  const uint32_t items = data->dataset.items.size();
  const uint32_t k = static_cast<uint32_t>(config.model.factors), cols = k + 1;
  const ShardServerOptions server = MakeShardServerOptions(config, layout, 0);
  std::vector<float> table(static_cast<size_t>(items) * cols);
  for (uint32_t i = 0; i < items; ++i)
    server.init_row(i, std::span<float>(table.data() + static_cast<size_t>(i) * cols, cols));
  std::vector<float> state(server.optimizer.HasState() ? table.size() : 0,
                           server.optimizer.adagrad_initial);
  std::vector<SiteData>& sites = data->sites;
  std::vector<MfModel> users;
  double sum = 0.0;
  uint64_t count = 0;
  for (uint32_t w = 0; w < sites.size(); ++w) {
    const PsWorkerOptions o = MakePsWorkerOptions(config, layout, w);
    users.emplace_back(static_cast<uint32_t>(sites[w].user_keys.size()), 0, k);
    users.back().InitUsers(o.init, sites[w].user_keys);
    double s = 0.0;
    for (const Rating& r : sites[w].train) s += r.value;
    sum += s;
    count += sites[w].train.size();
  }
  const float mu = static_cast<float>(sum / static_cast<double>(count));
  const uint64_t batch = static_cast<uint64_t>(config.ps.batch_size);
  const uint32_t steps = static_cast<uint32_t>((count + batch - 1) / batch);
  const PsWorkerOptions worker = MakePsWorkerOptions(config, layout, 0);
  std::vector<float> gradient_sum(table.size(), 0.0f);
  for (uint32_t epoch = 0; epoch < config.train.epochs; ++epoch) {
    for (uint32_t w = 0; w < sites.size(); ++w) {
      Rng rng(config.seed, epoch, w, Purpose::kShuffle);
      rng.Shuffle(std::span<Rating>(sites[w].train));
    }
    for (uint32_t j = 0; j < steps; ++j) {
      const std::vector<float> snapshot = table;
      std::vector<uint32_t> touched;
      std::vector<uint8_t> is_touched(items, 0);
      for (uint32_t w = 0; w < sites.size(); ++w) {
        const size_t n = sites[w].train.size();
        std::vector<Rating> batch_slots;
        std::vector<uint32_t> keys;
        std::vector<uint32_t> slot_of(items, UINT32_MAX);
        for (size_t t = n * j / steps; t < n * (j + 1) / steps; ++t) {
          Rating r = sites[w].train[t];
          if (slot_of[r.item] == UINT32_MAX) {
            slot_of[r.item] = static_cast<uint32_t>(keys.size());
            keys.push_back(r.item);
          }
          r.item = slot_of[r.item];
          batch_slots.push_back(r);
        }
        std::vector<float> rows(keys.size() * cols), gradients(keys.size() * cols, 0.0f);
        for (size_t s = 0; s < keys.size(); ++s)
          std::copy_n(snapshot.data() + static_cast<size_t>(keys[s]) * cols, cols,
                      rows.data() + s * cols);
        MfMinibatchGradients(batch_slots, k, mu, rows.data(), gradients.data(),
                             users[w].user_factors(), users[w].user_bias(),
                             worker.sgd.LearningRate(epoch), worker.sgd);
        for (size_t s = 0; s < keys.size(); ++s) {
          float* into = gradient_sum.data() + static_cast<size_t>(keys[s]) * cols;
          for (uint32_t c = 0; c < cols; ++c) into[c] += gradients[s * cols + c];
          if (!is_touched[keys[s]]) {
            is_touched[keys[s]] = 1;
            touched.push_back(keys[s]);
          }
        }
      }
      const float lr = server.optimizer.schedule.LearningRate(epoch);
      for (uint32_t row : touched) {
        float* g = gradient_sum.data() + static_cast<size_t>(row) * cols;
        server.optimizer.Apply(
            lr, table.data() + static_cast<size_t>(row) * cols,
            state.empty() ? nullptr : state.data() + static_cast<size_t>(row) * cols, g, cols);
        std::fill(g, g + cols, 0.0f);
      }
    }
  }
  return table;
}

TEST(PsTraining, BspWithOneWorkerEqualsSingleProcessMinibatchSgd) {
  for (const char* optimizer : {"sgd", "adagrad"}) {
    Config config = PsConfig(1, 1);
    config.ps.optimizer = optimizer;
    if (config.ps.optimizer == "adagrad") config.ps.lr = 0.05;
    const PsRun run = RunPs(config);
    const std::vector<float> reference = ReferenceMinibatchSgd(config);
    ASSERT_EQ(run.rows().size(), reference.size());
    EXPECT_TRUE(run.rows() == reference)
        << optimizer << ": the PS model differs from the reference";
  }
}

TEST(PsTraining, BspWithSeveralWorkersEqualsSynchronousDataParallelMinibatchSgd) {
  for (int64_t shards : {1, 2, 3}) {
    const Config config = PsConfig(shards, 3);
    const PsRun run = RunPs(config);
    const std::vector<float> reference = ReferenceMinibatchSgd(config);
    ASSERT_EQ(run.rows().size(), reference.size());
    EXPECT_TRUE(run.rows() == reference) << shards << " shards: the PS model differs";
    for (const ShardStats& s : run.run.shards) EXPECT_EQ(s.max_clock_gap, 0);
  }
}

TEST(PsTraining, BspModelIsTheSameForOneTwoAndFourWorkerThreads) {
  // k = 16 runs the vector kernel, k = 10 the run-time one with its scalar tail.
  for (int64_t factors : {16, 10}) {
    for (int64_t workers : {1, 2}) {
      Config config = PsConfig(2, workers);
      config.model.factors = factors;
      config.train.threads = 1;
      const PsRun one = RunPs(config);
      EXPECT_TRUE(one.rows() == ReferenceMinibatchSgd(config))
          << "k " << factors << ", " << workers << " workers: 1 thread differs from the reference";
      for (int64_t threads : {2, 4}) {
        config.train.threads = threads;
        const PsRun many = RunPs(config);
        EXPECT_TRUE(many.rows() == one.rows())
            << "k " << factors << ", " << workers << " workers: " << threads
            << " threads per worker give another model than 1";
        ASSERT_EQ(many.epochs.size(), one.epochs.size());
        for (size_t e = 0; e < one.epochs.size(); ++e)
          EXPECT_EQ(many.epochs[e].train_mse, one.epochs[e].train_mse) << "epoch " << e + 1;
      }
    }
  }
}

TEST(PsTraining, SspReadsNeverExceedTheStalenessBound) {
  for (int64_t staleness : {0, 1, 3}) {
    Config config = PsConfig(2, 4, "ssp");
    config.ps.staleness = staleness;
    config.ps.batch_size = 200;  // many steps: room to run ahead
    const PsRun run = RunPs(config);
    for (const ShardStats& s : run.run.shards) {
      EXPECT_LE(s.max_clock_gap, staleness);
      EXPECT_GT(s.pulls, 0u);
    }
    for (const PsClientStats& c : run.run.clients) EXPECT_LE(c.max_clock_gap, staleness);
  }
}

// Every epoch's test RMSE, and the first epoch's, of a run.
double LastRmse(const PsRun& run) { return run.epochs.back().test.Rmse(); }

TEST(PsTraining, AsyncConvergesOnSyntheticData) {
  Config config = PsConfig(2, 3, "async");
  config.train.epochs = 12;
  const PsRun run = RunPs(config);
  ASSERT_EQ(run.epochs.size(), 12u);
  const double first = run.epochs.front().test.Rmse(), last = LastRmse(run);
  EXPECT_LT(last, first);
  // The noise of the synthetic ratings is 0.75: the model gets close to it.
  EXPECT_LT(last, 1.0);
  for (const auto& epoch : run.epochs) EXPECT_TRUE(std::isfinite(epoch.train_mse));
}

TEST(PsTraining, SspAndAdagradConvergeOnSyntheticData) {
  Config config = PsConfig(2, 3, "ssp");
  config.train.epochs = 12;
  config.ps.optimizer = "adagrad";
  config.ps.lr = 0.05;
  const PsRun run = RunPs(config);
  ASSERT_EQ(run.epochs.size(), 12u);
  EXPECT_LT(LastRmse(run), run.epochs.front().test.Rmse());
  EXPECT_LT(LastRmse(run), 1.0);
}

TEST(PsTraining, ModelIsTheSameForEveryShardCountUnderBsp) {
  const PsRun one = RunPs(PsConfig(1, 2));
  const PsRun four = RunPs(PsConfig(4, 2));
  EXPECT_TRUE(one.rows() == four.rows());
  EXPECT_EQ(one.run.start.global_mean, four.run.start.global_mean);
}

TEST(PsTraining, DivergenceIsReportedWithTheStepAndWhatToLower) {
  // Item gradients are summed over a step's ratings: one step of all 8,000
  // at this rate overshoots until the errors are no longer finite.
  Config config = PsConfig(1, 1);
  config.ps.batch_size = 8000;
  config.ps.lr = 5.0;
  config.train.epochs = 30;
  ASSERT_TRUE(ValidateConfig(config).ok());
  Result<FederatedData> data = LoadFederatedData(config);
  ASSERT_TRUE(data.ok());
  Result<PsInProcessRun> run =
      RunPsInProcess(config, std::move(data->sites), data->dataset.items.size(), nullptr);
  ASSERT_FALSE(run.ok());
  const std::string& message = run.status().message();
  EXPECT_NE(message.find("ps worker 0"), std::string::npos) << message;
  EXPECT_NE(message.find("training diverged at epoch "), std::string::npos) << message;
  EXPECT_NE(message.find("expected a finite value"), std::string::npos) << message;
  EXPECT_NE(message.find("smaller ps.lr"), std::string::npos) << message;
}

TEST(PsConfig, ModeNeedsShardServersAndKnownPolicies) {
  Config config = PsConfig(0, 2);
  Status s = ValidateConfig(config);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("cluster.shard_servers"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("found 0"), std::string::npos) << s.message();
  config = PsConfig(2, 2, "eventual");
  s = ValidateConfig(config);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("ps.consistency"), std::string::npos) << s.message();
  config = PsConfig(2, 2);
  config.model.name = "bpr";
  s = ValidateConfig(config);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("model.name"), std::string::npos) << s.message();
  config = PsConfig(2, 4);  // federated rounds sum at shard servers, Paillier's too
  config.federation.mode = "federated";
  config.security.aggregation = "paillier";
  EXPECT_TRUE(ValidateConfig(config).ok()) << ValidateConfig(config).message();
  config.cluster.shard_servers = 5000;
  s = ValidateConfig(config);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("cluster.shard_servers"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace fedrec
