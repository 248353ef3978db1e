// Parameter-server mode under a per-process memory cap (cluster.memory_limit):
// each shard server and worker checks its model slice against the cap before
// allocating it, and every rank reports its peak RSS to the driver.
#include <gtest/gtest.h>

#include <algorithm>

#include "apps/job.h"
#include "apps/ps_job.h"
#include "base/memory.h"
#include "crypto/sha256.h"
#include "tests/ps/ps_config.h"

namespace fedrec {
namespace {

// Wide rows: the shards' slices dominate.
Config MemoryConfig(int64_t shards, int64_t workers) {
  Config config = PsConfig(shards, workers);
  config.seed = 5;
  config.data.synthetic.items = 600;
  config.data.synthetic.ratings = 6000;
  config.data.test_fraction = 0.05;
  config.model.factors = 128;
  config.train.epochs = 2;
  config.ps.batch_size = 300;
  return config;
}

Result<PsInProcessRun> RunPs(const Config& config) {
  FEDREC_RETURN_IF_ERROR(ValidateConfig(config));
  Result<FederatedData> data = LoadFederatedData(config);
  if (!data.ok()) return data.status();
  return RunPsInProcess(config, std::move(data->sites), data->dataset.items.size());
}

uint64_t LargestSlice(const PsInProcessRun& run) {
  uint64_t largest = 0;
  for (const PsRankMemory& r : run.memory) largest = std::max(largest, r.memory.slice_bytes);
  return largest;
}

TEST(PsMemory, EveryShardAndWorkerReportsPeakRssAndSliceToTheDriver) {
  Result<PsInProcessRun> run = RunPs(MemoryConfig(2, 3));
  ASSERT_TRUE(run.ok()) << run.status().ToString();
  ASSERT_EQ(run->memory.size(), 5u);  // ranks 1-2 shard servers, 3-5 workers
  for (size_t i = 0; i < run->memory.size(); ++i) {
    const PsRankMemory& r = run->memory[i];
    EXPECT_EQ(r.rank, static_cast<int>(i) + 1);
    EXPECT_EQ(r.memory.role, i < 2 ? PsRole::kShardServer : PsRole::kWorker);
    EXPECT_EQ(r.memory.index, i < 2 ? i : i - 2);
    EXPECT_GT(r.memory.peak_rss_bytes, 0u);
    EXPECT_GT(r.memory.slice_bytes, 0u);
  }
  // A shard's slice is its rows: 300 of 600 items x 129 floats, values and
  // bsp's gradient sums.
  EXPECT_EQ(run->memory[0].memory.slice_bytes, 300u * 129 * 4 * 2);
}

TEST(PsMemory, CapRefusesAShardSliceThatDoesNotFitAndAcceptsItWithMoreShards) {
  // The cap: the largest slice of the two-shard layout.
  Result<PsInProcessRun> uncapped = RunPs(MemoryConfig(2, 3));
  ASSERT_TRUE(uncapped.ok()) << uncapped.status().ToString();
  const uint64_t cap = LargestSlice(*uncapped);
  ASSERT_EQ(cap, uncapped->memory[0].memory.slice_bytes) << "the shards' slices must dominate";

  Config one = MemoryConfig(1, 3);
  one.cluster.memory_limit = std::to_string(cap);
  Result<PsInProcessRun> refused = RunPs(one);
  ASSERT_FALSE(refused.ok());
  const std::string& message = refused.status().message();
  EXPECT_NE(message.find("shard server 0 (rank 1): holding 600 of the 600 item rows (129 floats "
                         "each, bsp gradient sums) needs 0.6 MB"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("more than cluster.memory_limit = 0.3 MB"), std::string::npos) << message;
  EXPECT_NE(message.find("use more shard servers (cluster.shard_servers = 2"), std::string::npos)
      << message;

  Config two = MemoryConfig(2, 3);
  two.cluster.memory_limit = std::to_string(cap);
  Result<PsInProcessRun> capped = RunPs(two);
  ASSERT_TRUE(capped.ok()) << capped.status().ToString();
  // The cap changes what may run, not what is learnt.
  EXPECT_EQ(capped->rows, uncapped->rows);
}

TEST(PsMemory, CapRefusesAWorkerSliceThatDoesNotFitNamingTheWorker) {
  Result<PsInProcessRun> uncapped = RunPs(MemoryConfig(4, 1));
  ASSERT_TRUE(uncapped.ok()) << uncapped.status().ToString();
  const uint64_t worker = uncapped->memory.back().memory.slice_bytes;
  ASSERT_GT(worker, uncapped->memory[0].memory.slice_bytes) << "the worker's slice must dominate";

  Config config = MemoryConfig(4, 1);
  config.cluster.memory_limit = std::to_string(worker - 1);
  Result<PsInProcessRun> refused = RunPs(config);
  ASSERT_FALSE(refused.ok());
  const std::string& message = refused.status().message();
  EXPECT_NE(message.find("ps worker 0 (rank 5): its model slice (200 user rows"), std::string::npos)
      << message;
  EXPECT_NE(message.find("more than cluster.memory_limit"), std::string::npos) << message;
}

TEST(PsMemory, MemoryLimitAcceptsBytesAndBinaryAndDecimalUnits) {
  EXPECT_EQ(*ParseByteSize("536870912"), 536870912u);
  EXPECT_EQ(*ParseByteSize("512MiB"), 512u << 20);
  EXPECT_EQ(*ParseByteSize("1.5 GiB"), 3u << 29);
  EXPECT_EQ(*ParseByteSize("800mb"), 800000000u);
  EXPECT_EQ(*ParseByteSize("2KB"), 2000u);
  for (const char* bad : {"", "MiB", "12 parsecs", "1.5", "-3MiB", "1e3"}) {
    Result<uint64_t> r = ParseByteSize(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_NE(r.status().message().find("expected a byte count"), std::string::npos);
    EXPECT_NE(r.status().message().find(std::string("found \"") + bad + "\""), std::string::npos);
  }
  Config config = MemoryConfig(2, 3);
  config.cluster.memory_limit = "lots";
  Status s = ValidateConfig(config);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("config cluster.memory_limit: expected a byte count"),
            std::string::npos)
      << s.message();
  config.cluster.memory_limit = "0MiB";
  EXPECT_FALSE(ValidateConfig(config).ok());
}

}  // namespace
}  // namespace fedrec
