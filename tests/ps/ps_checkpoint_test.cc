// Checkpoints of parameter-server mode (checkpoint.every > 0 epochs): a job
// stopped after any checkpoint and resumed ends with the model of the job
// that was never stopped (bsp); ssp and async save a consistent cut (no
// push of a later epoch in the slice of an earlier one) and resume; damaged,
// missing and foreign files are refused naming what is wrong.
#include "crypto/ps_checkpoint.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <thread>

#include "apps/job.h"
#include "apps/ps_job.h"
#include "coordinator/shard_server.h"
#include "protocol/inprocess_transport.h"
#include "protocol/messages.h"
#include "protocol/ps_messages.h"
#include "tests/ps/ps_config.h"

namespace fedrec {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

std::string TempDir(const std::string& name) {
  const char* dir = std::getenv("FEDREC_TEST_TMPDIR");
  const fs::path path = fs::path(dir ? dir : ::testing::TempDir()) / "ps-checkpoint" / name;
  fs::remove_all(path);
  fs::create_directories(path);
  return path.string();
}

Config CheckpointConfig(const std::string& consistency, const std::string& optimizer, int64_t every,
                        int64_t epochs) {
  Config config = PsConfig(2, 3, consistency);
  config.data.synthetic.items = 300;
  config.data.synthetic.ratings = 6000;
  config.data.test_fraction = 0.1;
  config.model.factors = 8;
  config.train.epochs = epochs;
  config.ps.staleness = 1;
  config.ps.optimizer = optimizer;
  config.checkpoint.every = every;
  return config;
}

struct PsJobEnd {
  PsInProcessRun run;
  ErrorSums last_eval;
};

// Runs the job with its checkpoints in `dir` (or resumed from it); with
// `stop_after` > 0 the driver stops the job right after committing the
// checkpoint of that epoch, as a crash would.
Result<PsJobEnd> RunJob(Config config, const std::string& dir, bool resume,
                        uint32_t stop_after = 0) {
  config.checkpoint.dir = dir;
  if (resume) config.checkpoint.resume = dir;
  FEDREC_RETURN_IF_ERROR(ValidateConfig(config));
  Result<FederatedData> data = LoadFederatedData(config);
  if (!data.ok()) return data.status();
  PsHistory history;
  PsJobEnd end;
  auto on_epoch = [&](const PsEpochMetrics& m) {
    if (m.evaluated) end.last_eval = m.test;
  };
  auto adjust = [&](PsDriverOptions* options) -> Status {
    FEDREC_RETURN_IF_ERROR(SetPsCheckpointing(config, dir, &history, options));
    auto write = options->on_checkpoint;
    options->on_checkpoint = [write, stop_after](uint32_t epoch) -> Status {
      FEDREC_RETURN_IF_ERROR(write(epoch));
      if (epoch == stop_after)
        return Status::Aborted("stopped after epoch " + std::to_string(epoch));
      return Status::Ok();
    };
    return Status::Ok();
  };
  Result<PsInProcessRun> run =
      RunPsInProcess(config, std::move(data->sites), data->dataset.items.size(), on_epoch, adjust);
  if (!run.ok()) return run.status();
  end.run = std::move(run).value();
  return end;
}

// The files of `role` `index` in checkpoint folder `dir` (paths and epochs).
PsSliceStore Files(const std::string& dir, const std::string& role, uint32_t index) {
  PsSliceIdentity id;
  id.role = role;
  id.index = index;
  return PsSliceStore(dir, id);
}

std::vector<uint32_t> EpochsIn(const std::string& dir, const std::string& role, uint32_t index) {
  return Files(dir, role, index).Epochs();
}

struct ResumeCase {
  const char* consistency;
  const char* optimizer;
  int64_t every;
  int64_t epochs;
  std::vector<uint32_t> checkpoints;  // the epochs with a checkpoint
};

class PsResumeTest : public ::testing::TestWithParam<ResumeCase> {};

TEST_P(PsResumeTest, StoppedAfterAnyCheckpointAndResumedEndsWithTheUninterruptedModel) {
  const ResumeCase& c = GetParam();
  const Config config = CheckpointConfig(c.consistency, c.optimizer, c.every, c.epochs);
  const std::string name = std::string(c.consistency) + "-" + c.optimizer;
  Result<PsJobEnd> whole = RunJob(config, TempDir(name + "-whole"), false);
  ASSERT_TRUE(whole.ok()) << whole.status().ToString();
  Config off = config;
  off.checkpoint.every = 0;
  Result<PsJobEnd> plain = RunJob(off, TempDir(name + "-plain"), false);
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  EXPECT_EQ(whole->run.rows, plain->run.rows) << "checkpoints changed the model";

  for (uint32_t stop : c.checkpoints) {
    SCOPED_TRACE("stopped after epoch " + std::to_string(stop));
    const std::string dir = TempDir(name + "-stop" + std::to_string(stop));
    Result<PsJobEnd> stopped = RunJob(config, dir, false, stop);
    ASSERT_FALSE(stopped.ok());
    EXPECT_NE(stopped.status().message().find("stopped after epoch"), std::string::npos)
        << stopped.status().message();
    Result<PsJobEnd> resumed = RunJob(config, dir, true);
    ASSERT_TRUE(resumed.ok()) << resumed.status().ToString();
    EXPECT_EQ(resumed->run.rows, whole->run.rows);
    EXPECT_EQ(resumed->run.start.first_epoch, stop);
    // The final evaluation: of the resumed run, or (stopped after the last
    // epoch) none to make.
    if (stop < c.epochs) {
      EXPECT_EQ(resumed->last_eval.squared, whole->last_eval.squared);
      EXPECT_EQ(resumed->last_eval.count, whole->last_eval.count);
    }
    // Every rank keeps only its file of the last epoch, the committed one.
    const std::vector<uint32_t> last = {static_cast<uint32_t>(c.epochs)};
    for (uint32_t s = 0; s < 2; ++s) EXPECT_EQ(EpochsIn(dir, "shard", s), last) << "shard " << s;
    for (uint32_t w = 0; w < 3; ++w) EXPECT_EQ(EpochsIn(dir, "worker", w), last) << "worker " << w;
  }
}

INSTANTIATE_TEST_SUITE_P(Ps, PsResumeTest,
                         ::testing::Values(ResumeCase{"bsp", "sgd", 1, 3, {1, 2, 3}},
                                           ResumeCase{"bsp", "adagrad", 2, 5, {2, 4, 5}}),
                         [](const ::testing::TestParamInfo<ResumeCase>& info) {
                           return std::string(info.param.consistency) + "_" + info.param.optimizer +
                                  "_every" + std::to_string(info.param.every);
                         });

TEST(PsCheckpoint, SspAndAsyncJobsResumeKeepingTheStalenessBoundAndConverge) {
  for (const char* consistency : {"ssp", "async"}) {
    SCOPED_TRACE(consistency);
    const Config config = CheckpointConfig(consistency, "sgd", 1, 6);
    Result<PsJobEnd> whole = RunJob(config, TempDir(std::string(consistency) + "-whole"), false);
    ASSERT_TRUE(whole.ok()) << whole.status().ToString();
    const std::string dir = TempDir(std::string(consistency) + "-stop");
    ASSERT_FALSE(RunJob(config, dir, false, 3).ok());
    Result<PsJobEnd> resumed = RunJob(config, dir, true);
    ASSERT_TRUE(resumed.ok()) << resumed.status().ToString();
    ASSERT_GT(resumed->last_eval.count, 0u);
    // Arrival order decides ssp's and async's model; both runs land close.
    EXPECT_NEAR(resumed->last_eval.Rmse(), whole->last_eval.Rmse(), 0.05);
    EXPECT_LT(resumed->last_eval.Rmse(), 1.2);
    if (std::string(consistency) == "ssp") {
      for (const ShardStats& shard : resumed->run.shards) EXPECT_LE(shard.max_clock_gap, 1);
    }
  }
}

TEST(PsCheckpoint, StopRequestEndsTheJobAtTheNextCheckpointAndItResumesToTheSameModel) {
  const Config config = CheckpointConfig("bsp", "sgd", 2, 6);
  Result<PsJobEnd> whole = RunJob(config, TempDir("stop-whole"), false);
  ASSERT_TRUE(whole.ok()) << whole.status().ToString();
  // Asked to stop once epoch 1 is reported: the job runs on to the
  // checkpoint of epoch 2, commits it, and ends every rank.
  Config stop_config = config;
  stop_config.checkpoint.dir = TempDir("stop");
  ASSERT_TRUE(ValidateConfig(stop_config).ok());
  Result<FederatedData> data = LoadFederatedData(stop_config);
  ASSERT_TRUE(data.ok()) << data.status().ToString();
  PsHistory history;
  uint32_t reported = 0;
  Result<PsInProcessRun> stopped = RunPsInProcess(
      stop_config, std::move(data->sites), data->dataset.items.size(),
      [&](const PsEpochMetrics& m) { reported = m.epoch; },
      [&](PsDriverOptions* options) -> Status {
        FEDREC_RETURN_IF_ERROR(
            SetPsCheckpointing(stop_config, stop_config.checkpoint.dir, &history, options));
        options->stop_requested = [&reported] { return reported >= 1; };
        return Status::Ok();
      });
  ASSERT_TRUE(stopped.ok()) << stopped.status().ToString();
  EXPECT_TRUE(stopped->stopped);
  EXPECT_EQ(stopped->committed, 2u);
  EXPECT_TRUE(stopped->rows.empty());
  EXPECT_LT(reported, 6u);
  Result<PsJobEnd> resumed = RunJob(config, stop_config.checkpoint.dir, true);
  ASSERT_TRUE(resumed.ok()) << resumed.status().ToString();
  EXPECT_EQ(resumed->run.start.first_epoch, 2u);
  EXPECT_EQ(resumed->run.rows, whole->run.rows);
}

TEST(PsCheckpoint, DamagedMissingOrForeignFilesAreRefusedNamingThemAndTheJobEnds) {
  const Config config = CheckpointConfig("bsp", "adagrad", 1, 3);
  const std::string dir = TempDir("refused");
  ASSERT_FALSE(RunJob(config, dir, false, 2).ok());
  const std::string shard_file = Files(dir, "shard", 1).PathOf(2);
  const std::string worker_file = Files(dir, "worker", 2).PathOf(2);
  ASSERT_TRUE(fs::exists(shard_file));
  ASSERT_TRUE(fs::exists(worker_file));

  // Another configuration: the driver's file names the hash.
  Config other = config;
  other.train.lr *= 2;
  Result<PsJobEnd> foreign = RunJob(other, dir, true);
  ASSERT_FALSE(foreign.ok());
  EXPECT_NE(foreign.status().message().find("ps-driver.ckpt does not match this run: expected "
                                            "'config "),
            std::string::npos)
      << foreign.status().message();

  // A damaged shard file: the shard refuses it to the driver, which ends the job.
  const std::string saved = shard_file + ".saved";
  fs::copy_file(shard_file, saved);
  {
    std::fstream f(shard_file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(200);
    f.put('\x7f');
  }
  Result<PsJobEnd> damaged = RunJob(config, dir, true);
  ASSERT_FALSE(damaged.ok());
  EXPECT_NE(damaged.status().message().find("shard server 1"), std::string::npos)
      << damaged.status().message();
  EXPECT_NE(damaged.status().message().find(shard_file + " is corrupt"), std::string::npos)
      << damaged.status().message();

  // A missing worker file: the worker says which and where.
  fs::rename(saved, shard_file);
  fs::remove(worker_file);
  Result<PsJobEnd> missing = RunJob(config, dir, true);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("ps worker 2"), std::string::npos)
      << missing.status().message();
  EXPECT_NE(missing.status().message().find(worker_file + ": missing"), std::string::npos)
      << missing.status().message();

  // Resuming without checkpoint.every is refused naming the key.
  Config no_every = config;
  no_every.checkpoint.every = 0;
  Result<PsJobEnd> refused = RunJob(no_every, dir, true);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("needs checkpoint.every > 0"), std::string::npos)
      << refused.status().message();
}

// One shard server under ssp (staleness 8) with two workers, 2 steps per
// epoch, SGD with learning rate 1, a checkpoint every epoch. Worker A runs a
// step into epoch 2 before worker B finished epoch 1: A's push waits,
// unacknowledged, and the slice saved for epoch 1 holds epoch 1's pushes only.
TEST(ShardServer, SspCheckpointHoldsNoPushOfALaterEpochUntilTheSlowestWorkerFinished) {
  const std::string dir = TempDir("ssp-cut");
  InProcessNetwork network(4);  // 0 driver, 1 shard, 2 worker A, 3 worker B
  ShardServerOptions o;
  o.shard = 0;
  o.sharding.shards = 1;
  o.worker_ranks = {2, 3};
  o.consistency = Consistency::kSsp;
  o.staleness = 8;
  o.optimizer.schedule.lr = 1.0f;
  o.config_hash = "test";
  o.init_row = [](uint64_t row, std::span<float> out) { out[0] = 10.0f * static_cast<float>(row); };
  ShardServer server(o, &network.endpoint(1));
  Status served;
  std::thread serving([&] { served = server.Serve(); });

  Transport& driver = network.endpoint(0);
  Transport& a = network.endpoint(2);
  Transport& b = network.endpoint(3);
  PsStart start{2, 1, 2, 2, 0.0f, 2, 0, 1, dir};
  ASSERT_TRUE(driver.Send(1, EncodePsStart(start, 0)).ok());
  auto push = [&](Transport& t, uint32_t clock, float g0, float g1) {
    const std::vector<uint32_t> keys = {0, 1};
    size_t keys_at = 0, at = 0;
    std::vector<uint8_t> frame = EncodePsPushShell(clock, clock, clock / 2, 1, 2,
                                                   static_cast<uint32_t>(t.rank()), &keys_at, &at);
    const float g[2] = {g0, g1};
    std::memcpy(frame.data() + keys_at, keys.data(), 8);
    std::memcpy(frame.data() + at, g, 8);
    ASSERT_TRUE(t.Send(1, std::move(frame)).ok());
  };
  // The clocks of the acknowledgements `t` receives: `n` of them, then
  // whatever else comes within 200 ms.
  auto acks = [&](Transport& t, size_t n) {
    std::vector<uint32_t> clocks;
    for (Result<Envelope> e = t.Recv(milliseconds(clocks.size() < n ? 5000 : 200)); e.ok();
         e = t.Recv(milliseconds(clocks.size() < n ? 5000 : 200))) {
      Result<PsPushAck> ack = DecodePsPushAck(*DecodeFrame(*e));
      if (ack.ok()) clocks.push_back(ack->clock);
    }
    return clocks;
  };
  push(a, 0, 1.0f, 2.0f);
  push(a, 1, 1.0f, 2.0f);
  push(a, 2, 100.0f, 100.0f);  // epoch 2: must wait for B
  push(b, 0, 0.5f, 0.5f);
  EXPECT_EQ(acks(a, 2), (std::vector<uint32_t>{0, 1}));
  push(b, 1, 0.5f, 0.5f);  // B finishes epoch 1: the save, then A's push
  EXPECT_EQ(acks(a, 1), (std::vector<uint32_t>{2}));
  EXPECT_EQ(acks(b, 2), (std::vector<uint32_t>{0, 1}));
  Result<Envelope> notice = driver.Recv(milliseconds(2000));
  ASSERT_TRUE(notice.ok());
  Result<PsCheckpoint> saved = DecodePsCheckpoint(*DecodeFrame(*notice));
  ASSERT_TRUE(saved.ok()) << saved.status().ToString();
  EXPECT_EQ(saved->epoch, 1u);

  Result<std::vector<std::vector<float>>> slice =
      PsSliceStore(dir, PsSliceIdentity{"shard", 0, 1, 2, 1, "test"}).Load(1, 1);
  ASSERT_TRUE(slice.ok()) << slice.status().ToString();
  // Row 0: 0 - (1 + 1 + 0.5 + 0.5); row 1: 10 - (2 + 2 + 0.5 + 0.5).
  EXPECT_EQ((*slice)[0], (std::vector<float>{-3.0f, 5.0f}));
  ASSERT_TRUE(driver.Send(1, EncodeMessage(Shutdown{"done"}, 0, 0)).ok());
  serving.join();
  EXPECT_TRUE(served.ok()) << served.ToString();
}

TEST(PsMessages, StartCarriesTheCheckpointFolderAndEpochAndRefusesAnInconsistentOne) {
  PsStart start{100, 9, 20, 5, 3.5f, 4, 2, 1, "runs/x/checkpoint"};
  std::vector<uint8_t> frame = EncodePsStart(start, 0);
  StampFrameIfUnset(frame);
  Result<PsStart> decoded = DecodePsStart(*DecodeFrame(frame));
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(decoded->first_epoch, 2u);
  EXPECT_EQ(decoded->checkpoint_every, 1u);
  EXPECT_EQ(decoded->checkpoint_dir, "runs/x/checkpoint");

  for (PsStart bad : {PsStart{100, 9, 20, 5, 3.5f, 4, 6, 1, "d"},  // past the last epoch
                      PsStart{100, 9, 20, 5, 3.5f, 4, 0, 1, ""},   // checkpoints, no folder
                      PsStart{100, 9, 20, 5, 3.5f, 4, 0, 0, "d"}}) {
    std::vector<uint8_t> f = EncodePsStart(bad, 0);
    StampFrameIfUnset(f);
    Result<PsStart> refused = DecodePsStart(*DecodeFrame(f));
    ASSERT_FALSE(refused.ok());
    EXPECT_NE(
        refused.status().message().find("expected first_epoch <= epochs (5) and a "
                                        "checkpoint folder exactly when checkpoint_every > 0"),
        std::string::npos)
        << refused.status().message();
  }
  std::vector<uint8_t> zero = EncodePsCheckpoint(PsCheckpoint{0}, 1);
  StampFrameIfUnset(zero);
  EXPECT_FALSE(DecodePsCheckpoint(*DecodeFrame(zero)).ok());
}

}  // namespace
}  // namespace fedrec
