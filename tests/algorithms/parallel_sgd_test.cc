// Local SGD on several threads: the grid schedule's model does not depend on
// the thread count, the grid and free schedules converge like one thread over
// the shuffled shard, every rating trains once per epoch.
#include "algorithms/parallel_sgd.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <set>
#include <thread>
#include <tuple>
#include <vector>

#include "algorithms/mf_trainer.h"
#include "base/thread_team.h"
#include "data/split.h"
#include "data/synthetic.h"

namespace fedrec {
namespace {

struct Data {
  uint32_t users = 0, items = 0;
  std::vector<Rating> train, test;
  std::vector<uint64_t> user_keys;
};

// ML-100K-shaped synthetic ratings (low rank, popularity skew), 80/20 split.
Data Synthetic(uint64_t ratings) {
  SyntheticOptions options;
  options.ratings = ratings;
  options.seed = 3;
  SyntheticData synthetic = GenerateSynthetic(options);
  Data data;
  data.users = synthetic.dataset.users.size();
  data.items = synthetic.dataset.items.size();
  Result<SplitResult> split = RandomSplit(synthetic.dataset.train, 0.2, 5);
  EXPECT_TRUE(split.ok());
  data.train = std::move(split->train);
  data.test = std::move(split->test);
  for (uint32_t u = 0; u < data.users; ++u) data.user_keys.push_back(1000 + u);
  return data;
}

MfTrainerOptions Options(SgdSchedule schedule, uint32_t threads) {
  MfTrainerOptions options;
  options.factors = 32;
  options.init.seed = 11;
  options.shard = 4;
  options.sgd.lr = 0.02f;
  options.sgd.lr_decay = 0.97f;
  options.sgd.reg = 0.09f;
  options.sgd.parallel.schedule = schedule;
  options.sgd.parallel.threads = threads;
  options.sgd.parallel.ratings_per_thread = 1000;  // so a test-sized shard uses every thread
  return options;
}

double TestRmse(const MfModel& model, const std::vector<Rating>& test) {
  double sq = 0.0;
  for (const Rating& r : test) {
    const double e = r.value - model.Predict(r.user, r.item);
    sq += e * e;
  }
  return std::sqrt(sq / static_cast<double>(test.size()));
}

TEST(ThreadTeam, RunsEveryIndexOnceOnItsOwnThreadEveryRun) {
  ThreadTeam team(4);
  ASSERT_EQ(team.size(), 4u);
  for (int run = 0; run < 200; ++run) {
    std::vector<std::atomic<int>> calls(team.size());
    std::vector<std::thread::id> ids(team.size());
    team.Run([&](unsigned i) {
      calls[i].fetch_add(1);
      ids[i] = std::this_thread::get_id();
    });
    for (unsigned i = 0; i < team.size(); ++i) EXPECT_EQ(calls[i].load(), 1) << "run " << run;
    EXPECT_EQ(ids[0], std::this_thread::get_id());
    EXPECT_EQ(std::set<std::thread::id>(ids.begin(), ids.end()).size(), team.size());
  }
  ThreadTeam alone(1);
  int ran = 0;
  alone.Run([&](unsigned i) { ran += 1 + static_cast<int>(i); });
  EXPECT_EQ(ran, 1);
}

TEST(ParallelSgd, GridSideAndThreadsFollowTheShardSize) {
  SgdParallelism options;  // blocks 16, 256 ratings per block, 20,000 per thread
  EXPECT_EQ(ParallelSgd::Side(options, 0), 1u);
  EXPECT_EQ(ParallelSgd::Side(options, 1000), 1u);  // 3.9 blocks' worth: one block
  EXPECT_EQ(ParallelSgd::Side(options, 9 * 256), 3u);
  EXPECT_EQ(ParallelSgd::Side(options, 80000), 16u);  // ML-100K u1
  options.blocks = 4;
  EXPECT_EQ(ParallelSgd::Side(options, 80000), 4u);

  options.blocks = 16;
  EXPECT_EQ(ParallelSgd::Threads(options, 80000, 2), 2u);       // every core
  EXPECT_EQ(ParallelSgd::Threads(options, 80000, 64), 4u);      // one per 20,000 ratings
  EXPECT_EQ(ParallelSgd::Threads(options, 8000, 64), 1u);       // a small site
  EXPECT_EQ(ParallelSgd::Threads(options, 10000000, 64), 16u);  // at most one per grid row
  options.threads = 3;
  EXPECT_EQ(ParallelSgd::Threads(options, 10000000, 64), 3u);
}

TEST(ParallelSgd, LayoutKeepsEveryRatingAndEpochsTrainEachOnce) {
  const Data data = Synthetic(20000);
  for (const SgdSchedule schedule : {SgdSchedule::kGrid, SgdSchedule::kFree}) {
    SgdParallelism options;
    options.schedule = schedule;
    options.threads = 2;
    options.ratings_per_thread = 1000;
    std::vector<Rating> ratings = data.train;
    ParallelSgd sgd(ratings, data.users, data.items, options, 1, 0);
    EXPECT_EQ(sgd.side(), 7u);  // 16,000 ratings / 256 = 62.5 blocks: 7 x 7
    EXPECT_EQ(sgd.threads(), 2u);
    const auto key = [](const Rating& r) { return std::tuple(r.user, r.item, r.value); };
    const auto less = [&](const Rating& a, const Rating& b) { return key(a) < key(b); };
    std::vector<Rating> a = ratings, b = data.train;
    std::sort(a.begin(), a.end(), less);
    std::sort(b.begin(), b.end(), less);
    EXPECT_TRUE(a == b) << "the layout lost or changed ratings";

    // At learning rate 0 an epoch only measures: its squared errors are the
    // model's on every rating, once each.
    MfModel model(data.users, data.items, 32);
    model.InitGlobal(MfInitOptions{});
    model.InitUsers(MfInitOptions{});
    model.set_global_mean(3.5f);
    double expected = 0.0;
    for (const Rating& r : data.train) {
      const double e = r.value - model.Predict(r.user, r.item);
      expected += e * e;
    }
    for (uint64_t epoch = 0; epoch < 3; ++epoch) {
      const double sse = sgd.Epoch(&model, epoch, 0.0f, SgdOptions{});
      EXPECT_NEAR(sse, expected, 1e-9 * expected) << SgdScheduleName(schedule) << " " << epoch;
    }
  }
}

// The acceptance test of deterministic multi-threaded training: bit for bit
// the same blocks and losses, with FedProx's pull and SCAFFOLD's drift on.
TEST(ParallelSgd, GridGivesTheSameModelForOneTwoAndEightThreads) {
  const Data data = Synthetic(40000);
  std::vector<ParamBlock> drift = {ParamBlock(MfModel::kItemBias, Scope::kGlobal, data.items, 1)};
  for (uint32_t i = 0; i < data.items; ++i) drift[0].data[i] = 1e-3f * static_cast<float>(i % 7);
  std::vector<std::vector<ParamBlock>> models;
  std::vector<double> losses;
  for (const uint32_t threads : {1u, 2u, 8u}) {
    const MfTrainerOptions options = Options(SgdSchedule::kGrid, threads);
    ASSERT_EQ(ParallelSgd::Threads(options.sgd.parallel, data.train.size(), 8), threads);
    MfTrainer trainer(options, data.items, data.train, data.user_keys);
    trainer.UseShardMean();
    double loss = trainer.Train(0, 3, 0.02f).squared_error;
    loss += trainer.Train(3, 2, 0.02f, 0.1f, &drift).squared_error;
    models.push_back(trainer.model().blocks());
    losses.push_back(loss);
  }
  for (size_t t = 1; t < models.size(); ++t) {
    ASSERT_EQ(models[t].size(), models[0].size());
    for (size_t b = 0; b < models[0].size(); ++b)
      EXPECT_TRUE(models[t][b].data == models[0][b].data) << "block " << models[0][b].name;
    EXPECT_EQ(losses[t], losses[0]);
  }
}

TEST(ParallelSgd, SameSeedSameModelAndAnotherSeedAnotherModel) {
  const Data data = Synthetic(20000);
  const auto train = [&](uint64_t seed) {
    MfTrainerOptions options = Options(SgdSchedule::kGrid, 2);
    options.init.seed = seed;
    MfTrainer trainer(options, data.items, data.train, data.user_keys);
    trainer.Train(0, 2, 0.02f);
    return trainer.model().blocks();
  };
  EXPECT_EQ(train(5), train(5));
  EXPECT_NE(train(5), train(6));
}

// Grid and free training reach the test RMSE of one thread over the whole
// shuffled shard, on ML-100K-shaped data.
TEST(ParallelSgd, GridAndFreeConvergeToTheRmseOfSequentialSgd) {
  const Data data = Synthetic(100000);
  std::vector<double> rmse;
  for (const SgdSchedule schedule :
       {SgdSchedule::kSequential, SgdSchedule::kGrid, SgdSchedule::kFree}) {
    MfTrainer trainer(Options(schedule, 2), data.items, data.train, data.user_keys);
    trainer.UseShardMean();
    const EpochStats stats = trainer.Train(0, 25, 0.02f);
    EXPECT_EQ(stats.updates, 25 * data.train.size());
    rmse.push_back(TestRmse(trainer.model(), data.test));
  }
  EXPECT_LT(rmse[0], 1.0) << "sequential SGD should learn these data";
  EXPECT_NEAR(rmse[1], rmse[0], 0.005 * rmse[0]) << "grid vs sequential";
  EXPECT_NEAR(rmse[2], rmse[0], 0.005 * rmse[0]) << "free vs sequential";
}

TEST(ParallelSgd, ScheduleNamesParseBackAndOthersAreRefused) {
  for (const SgdSchedule s : {SgdSchedule::kSequential, SgdSchedule::kGrid, SgdSchedule::kFree}) {
    SgdSchedule parsed = SgdSchedule::kSequential;
    ASSERT_TRUE(ParseSgdSchedule(SgdScheduleName(s), &parsed));
    EXPECT_EQ(parsed, s);
  }
  SgdSchedule parsed = SgdSchedule::kFree;
  EXPECT_FALSE(ParseSgdSchedule("hogwild", &parsed));
  EXPECT_EQ(parsed, SgdSchedule::kFree);
}

}  // namespace
}  // namespace fedrec
