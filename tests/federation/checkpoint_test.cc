// Checkpoint and resume (checkpoint.*): a federation stopped after any round
// and resumed from its checkpoint ends with the model of the run that never
// stopped; damaged or foreign checkpoints are refused naming what is wrong;
// checkpoint files are replaced atomically.
#include "coordinator/checkpoint.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "algorithms/metrics.h"
#include "algorithms/model.h"
#include "algorithms/strategy.h"
#include "apps/config.h"
#include "apps/job.h"
#include "apps/run_checkpoint.h"
#include "apps/site_group.h"
#include "crypto/checkpoint_file.h"
#include "crypto/sha256.h"
#include "protocol/inprocess_transport.h"
#include "sim/simulation.h"
#include "tests/federation/dp_config.h"
#include "worker/site_control.h"
#include "worker/site_state.h"

namespace fedrec {
namespace {

namespace fs = std::filesystem;

std::string TempDir(const std::string& name) {
  const char* dir = std::getenv("FEDREC_TEST_TMPDIR");
  const fs::path path = fs::path(dir ? dir : ::testing::TempDir()) / "checkpoint" / name;
  fs::remove_all(path);
  fs::create_directories(path);
  return path.string();
}

Config SmallConfig(const std::string& model, const std::string& strategy,
                   const std::string& aggregation) {
  Config c;
  c.seed = 7;
  c.data.synthetic.users = 120;
  c.data.synthetic.items = 150;
  c.data.synthetic.ratings = 4000;
  c.model.name = model;
  c.model.factors = 4;
  c.federation.sites = 4;
  c.federation.rounds = 5;
  c.federation.local_epochs = 1;
  c.federation.strategy = strategy;
  c.security.aggregation = aggregation;
  c.eval.ranking = false;
  c.train.threads = 1;
  c.checkpoint.every = 1;
  return c;
}

struct JobEnd {
  std::string sha;
  uint32_t completed = 0;
  bool stopped = false;
  // The test error sums of the last round evaluated: what the sites predict
  // with their local blocks (user rows, local or adapted towers) too.
  ErrorSums test;
  RankingSums ranking;
};

// One `fedrec sim` job over `dir` as the command assembles it: stopped after
// round `stop_after` (0 = never; the checkpoint is written as on SIGINT),
// resumed from `dir` when `resume`. `crash_after`: the run ends after that
// round without the checkpoint a stop writes (as if killed).
Result<JobEnd> RunJob(const Config& config, const std::string& dir, uint32_t stop_after,
                      bool resume, uint32_t crash_after = 0) {
  FEDREC_ASSIGN_OR_RETURN(FederatedData data, LoadFederatedData(config));
  const uint32_t items = data.dataset.items.size();
  const uint32_t sites = static_cast<uint32_t>(data.sites.size());
  FEDREC_ASSIGN_OR_RETURN(std::unique_ptr<Strategy> strategy,
                          StrategyRegistry::WithBuiltins().Create(config.federation.strategy,
                                                                  MakeStrategyOptions(config)));
  FEDREC_ASSIGN_OR_RETURN(std::unique_ptr<Model> server, MakeServerModel(config, items));
  FEDREC_RETURN_IF_ERROR(CheckCheckpointable(config, *server));
  const CheckpointIdentity identity{ConfigHash(config), config.model.name, sites};
  SimulationOptions sim;
  sim.threads = 2;
  sim.shard_servers = static_cast<uint32_t>(config.cluster.shard_servers);
  uint32_t resume_round = 0;
  if (resume) {
    FEDREC_ASSIGN_OR_RETURN(CoordinatorCheckpoint checkpoint,
                            ReadCoordinatorCheckpoint(CoordinatorCheckpointPath(dir), identity));
    resume_round = checkpoint.state.round;
    sim.resume = checkpoint.state;
  }
  WorkerOptions worker = MakeWorkerOptions(config);
  SetSiteCheckpointOptions(config, dir, resume_round, &worker);
  // Two tiers: each site trains over its own group of ranks.
  SiteGroups groups(config, data.sites);
  if (groups.active())
    sim.customize_site = [&groups](WorkerOptions* o, uint32_t site) {
      o->trainer = groups.trainer(site);
    };
  CoordinatorOptions coordinator = MakeCoordinatorOptions(config);
  FEDREC_ASSIGN_OR_RETURN(crypto::Key32 job, NewJobId(config, crypto::Key32{}));
  coordinator.job_id = job;
  worker.job_id = job;
  coordinator.checkpoint_every = static_cast<uint32_t>(config.checkpoint.every);
  uint32_t seen = 0;
  ErrorSums test;
  RankingSums ranking;
  coordinator.on_checkpoint = [&](const Coordinator& c, uint32_t round) {
    const bool crashed = crash_after > 0 && round >= crash_after;
    if (crashed && round % coordinator.checkpoint_every != 0) return Status::Ok();
    if (crashed && round > crash_after) return Status::Ok();
    return WriteRunCheckpoint(dir, identity, c, round, dir + "/no-metrics.jsonl");
  };
  const uint32_t stop = stop_after ? stop_after : crash_after;
  coordinator.stop_requested = [&] { return stop > 0 && seen >= stop; };
  Result<SimulationResult> result =
      RunSimulation(sim, coordinator, std::move(server), std::move(strategy), worker, items,
                    std::move(data.sites), [&](const RoundMetrics& m) {
                      seen = m.round;
                      if (m.evaluated) {
                        test = m.test;
                        ranking = m.ranking;
                      }
                    });
  FEDREC_RETURN_IF_ERROR(groups.End());
  if (!result.ok()) return result.status();
  return JobEnd{ModelSha256(result->global), result->completed_round, result->stopped, test,
                ranking};
}

struct Case {
  const char* model;
  const char* strategy;
  const char* aggregation;
  // Differential privacy (dp.mode, user-level with adaptive clipping): the
  // clip norm and the accountant ride in the checkpoint.
  const char* dp = "none";
  // Two tiers: workers per site (each site with one shard server); 0 = none.
  int64_t site_workers = 0;
  // Shard servers summing slices of the rounds (they keep nothing between rounds).
  int64_t shard_servers = 0;
  // Multi-task models: 1 = towers kept at the sites (in their state files),
  // 2 = towers adapted per site from the federated ones.
  int local_towers = 0;
};

class ResumeTest : public ::testing::TestWithParam<Case> {};

TEST_P(ResumeTest, StoppedAfterAnyRoundAndResumedEndsWithTheUninterruptedModel) {
  const Case& c = GetParam();
  Config config = SmallConfig(c.model, c.strategy, c.aggregation);
  if (std::string(c.dp) != "none") SetUserDp(c.dp, &config);
  config.cluster.site_workers = c.site_workers;
  config.cluster.shard_servers = c.shard_servers;
  config.cluster.site_shard_servers = c.site_workers > 0 ? 1 : 0;
  // The implicit models' evaluation is their ranking.
  const std::string model = c.model;
  if (model == "bpr" || model == "ials") config.eval.ranking = true;
  if (c.local_towers > 0)
    config.model.params[std::string(c.model) + ".local_towers"] = c.local_towers;
  // The small sites hold out fewer examples than the default least.
  if (c.local_towers == 2) config.model.params[std::string(c.model) + ".adapt_min_holdout"] = 10;
  const std::string name = std::string(c.model) + "-" + c.strategy + "-" + c.aggregation + "-dp-" +
                           c.dp + "-tiers-" + std::to_string(c.site_workers) + "-shards-" +
                           std::to_string(c.shard_servers) + "-towers-" +
                           std::to_string(c.local_towers);
  Config off = config;
  off.checkpoint.every = 0;
  Result<JobEnd> plain = RunJob(off, TempDir(name + "-plain"), 0, false);
  ASSERT_TRUE(plain.ok()) << plain.status().message();
  ASSERT_GT(plain->test.count + plain->ranking.users, 0u);
  Result<JobEnd> whole = RunJob(config, TempDir(name + "-whole"), 0, false);
  ASSERT_TRUE(whole.ok()) << whole.status().message();
  EXPECT_EQ(whole->sha, plain->sha) << "checkpointing changed the model";
  for (uint32_t stop = 1; stop < config.federation.rounds; ++stop) {
    const std::string dir = TempDir(name + "-stop" + std::to_string(stop));
    Result<JobEnd> first = RunJob(config, dir, stop, false);
    ASSERT_TRUE(first.ok()) << first.status().message();
    EXPECT_TRUE(first->stopped);
    EXPECT_EQ(first->completed, stop);
    Result<JobEnd> resumed = RunJob(config, dir, 0, true);
    ASSERT_TRUE(resumed.ok()) << resumed.status().message();
    EXPECT_EQ(resumed->completed, config.federation.rounds);
    EXPECT_EQ(resumed->sha, plain->sha) << "resumed after round " << stop;
    // The sites' own blocks came back too: the last evaluation is the same.
    EXPECT_EQ(resumed->test.count, plain->test.count) << "resumed after round " << stop;
    EXPECT_EQ(resumed->test.squared, plain->test.squared) << "resumed after round " << stop;
    EXPECT_EQ(resumed->ranking.users, plain->ranking.users) << "resumed after round " << stop;
    EXPECT_EQ(resumed->ranking.ndcg, plain->ranking.ndcg) << "resumed after round " << stop;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Checkpoint, ResumeTest,
    ::testing::Values(Case{"mf", "fedavg", "none"}, Case{"mf", "fedadam", "none"},
                      Case{"mf", "fedavgm", "secagg"}, Case{"bpr", "fedavg", "none"},
                      Case{"ials", "fedavg", "none"}, Case{"mmoe", "fedavg", "none"},
                      Case{"ple", "fedadam", "secagg"},
                      Case{"mf", "fedavg", "secagg", "distributed"}, Case{"mf", "scaffold", "none"},
                      Case{"mf", "scaffold", "secagg"}, Case{"mf", "fedavg", "secagg", "none", 2},
                      Case{"mf", "fedadam", "secagg", "none", 0, 2},
                      Case{"mmoe", "fedavg", "secagg", "none", 0, 0, 1},
                      Case{"shared_bottom", "fedavg", "none", "none", 0, 0, 2}),
    [](const ::testing::TestParamInfo<Case>& info) {
      return std::string(info.param.model) + "_" + info.param.strategy + "_" +
             info.param.aggregation + "_dp_" + info.param.dp +
             (info.param.site_workers > 0 ? "_two_tiers" : "") +
             (info.param.shard_servers > 0 ? "_sharded" : "") +
             (info.param.local_towers == 1   ? "_local_towers"
              : info.param.local_towers == 2 ? "_adapted_towers"
                                             : "");
    });

TEST(Checkpoint, ResumeAfterACrashDiscardsSiteStateNewerThanTheCheckpoint) {
  Config config = SmallConfig("mf", "fedavg", "none");
  config.checkpoint.every = 2;
  Config off = config;
  off.checkpoint.every = 0;
  Result<JobEnd> plain = RunJob(off, TempDir("crash-plain"), 0, false);
  ASSERT_TRUE(plain.ok()) << plain.status().message();
  // Killed after round 3: the coordinator's newest checkpoint is round 2's,
  // the sites already saved their state of round 3.
  const std::string dir = TempDir("crash");
  ASSERT_TRUE(RunJob(config, dir, 0, false, /*crash_after=*/3).ok());
  SiteStateStore site0(dir + "/site-0", 0, 2, ConfigHash(config));
  EXPECT_EQ(site0.Rounds().back(), 3u);
  Result<JobEnd> resumed = RunJob(config, dir, 0, true);
  ASSERT_TRUE(resumed.ok()) << resumed.status().message();
  EXPECT_EQ(resumed->sha, plain->sha);
  // A site keeps only what a coordinator checkpoint can still pair with:
  // after round 5 (checkpoint.every = 2), its states of rounds 4 and 5.
  EXPECT_EQ(site0.Rounds(), (std::vector<uint32_t>{4, 5}));
}

// A finished run's checkpoint directory (the last round's checkpoint).
std::string FinishedCheckpoint(const std::string& name, const Config& config) {
  const std::string dir = TempDir(name);
  Result<JobEnd> end = RunJob(config, dir, 2, false);
  EXPECT_TRUE(end.ok()) << end.status().message();
  return dir;
}

TEST(Checkpoint, CorruptCoordinatorCheckpointIsRefusedNamingTheFile) {
  const Config config = SmallConfig("mf", "fedavg", "none");
  const std::string dir = FinishedCheckpoint("corrupt", config);
  const std::string path = CoordinatorCheckpointPath(dir);
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(200);
    f.put('\x7f');
  }
  Result<JobEnd> resumed = RunJob(config, dir, 0, true);
  ASSERT_FALSE(resumed.ok());
  EXPECT_NE(resumed.status().message().find(path), std::string::npos);
  EXPECT_NE(resumed.status().message().find("is corrupt or truncated (SHA-256"), std::string::npos)
      << resumed.status().message();
}

TEST(Checkpoint, TruncatedCoordinatorCheckpointIsRefused) {
  const Config config = SmallConfig("mf", "fedavg", "none");
  const std::string dir = FinishedCheckpoint("truncated", config);
  const std::string path = CoordinatorCheckpointPath(dir);
  fs::resize_file(path, fs::file_size(path) / 2);
  Result<JobEnd> resumed = RunJob(config, dir, 0, true);
  ASSERT_FALSE(resumed.ok());
  EXPECT_EQ(resumed.status().code(), Status::Code::kCorruption);
  EXPECT_NE(resumed.status().message().find("corrupt or truncated"), std::string::npos)
      << resumed.status().message();
}

TEST(Checkpoint, CheckpointOfAnotherConfigurationIsRefusedNamingTheHash) {
  const Config config = SmallConfig("mf", "fedavg", "none");
  const std::string dir = FinishedCheckpoint("other-config", config);
  Config other = config;
  other.train.lr = 0.05;
  Result<JobEnd> resumed = RunJob(other, dir, 0, true);
  ASSERT_FALSE(resumed.ok());
  EXPECT_NE(resumed.status().message().find("was written by another run and was not loaded: "
                                            "configuration hash"),
            std::string::npos)
      << resumed.status().message();
  // Keys that do not change the model do not count.
  Config same = config;
  same.output.dir = "elsewhere";
  same.checkpoint.every = 3;
  EXPECT_EQ(ConfigHash(same), ConfigHash(config));
}

TEST(Checkpoint, CheckpointOfAnotherModelOrSiteCountIsRefusedNamingBoth) {
  const Config config = SmallConfig("mf", "fedavg", "none");
  const std::string dir = FinishedCheckpoint("other-model", config);
  const CheckpointIdentity other{ConfigHash(config), "bpr", 5};
  Result<CoordinatorCheckpoint> read =
      ReadCoordinatorCheckpoint(CoordinatorCheckpointPath(dir), other);
  ASSERT_FALSE(read.ok());
  EXPECT_NE(read.status().message().find("model.name: expected bpr, found mf"), std::string::npos)
      << read.status().message();
  EXPECT_NE(read.status().message().find("federation.sites: expected 5, found 4"),
            std::string::npos)
      << read.status().message();
}

TEST(Checkpoint, CorruptSiteStateIsRefusedNamingTheSiteFile) {
  const Config config = SmallConfig("mf", "fedavg", "none");
  const std::string dir = FinishedCheckpoint("corrupt-site", config);
  SiteStateStore store(dir + "/site-1", 1, 1, ConfigHash(config));
  ASSERT_FALSE(store.Rounds().empty());
  const std::string path = store.PathOf(store.Rounds().back());
  fs::resize_file(path, fs::file_size(path) - 10);
  Result<JobEnd> resumed = RunJob(config, dir, 0, true);
  ASSERT_FALSE(resumed.ok());
  EXPECT_NE(
      resumed.status().message().find("site 1: checkpoint " + path + " is corrupt or truncated"),
      std::string::npos)
      << resumed.status().message();
}

TEST(Checkpoint, SiteStateOfAnotherSiteIsRefusedNamingWhatDiffers) {
  const Config config = SmallConfig("mf", "fedavg", "none");
  const std::string dir = FinishedCheckpoint("other-site", config);
  SiteStateStore wrong(dir + "/site-1", /*site=*/2, 1, ConfigHash(config));
  Result<std::optional<SiteStateStore::Saved>> saved = wrong.TakeForResume(2);
  ASSERT_TRUE(saved.ok()) << saved.status().message();
  ASSERT_TRUE(saved->has_value());
  const Status check = wrong.Check(**saved, "mf");
  ASSERT_FALSE(check.ok());
  EXPECT_NE(check.message().find("expected 'site 2', found 'site 1'"), std::string::npos)
      << check.message();
}

TEST(CheckpointFile, SectionsRoundTripWithAnyBytes) {
  const std::string path = TempDir("file") + "/a.ckpt";
  const std::string binary("a\0b\nsection x 3\n\xff", 18);
  ASSERT_TRUE(WriteCheckpointFile(path, {{"one", binary}, {"two", ""}}).ok());
  Result<CheckpointSections> read = ReadCheckpointFile(path);
  ASSERT_TRUE(read.ok()) << read.status().message();
  ASSERT_EQ(read->size(), 2u);
  EXPECT_EQ((*read)[0].first, "one");
  EXPECT_EQ((*read)[0].second, binary);
  EXPECT_EQ((*read)[1].second, "");
}

TEST(CheckpointFile, FailedWriteLeavesThePreviousFileIntact) {
  const std::string dir = TempDir("atomic");
  const std::string path = dir + "/c.ckpt";
  ASSERT_TRUE(WriteCheckpointFile(path, {{"round", "3"}}).ok());
  // The temporary file cannot be created: a folder is in its place.
  fs::create_directories(path + ".tmp");
  const Status failed = WriteCheckpointFile(path, {{"round", "4"}});
  ASSERT_FALSE(failed.ok());
  EXPECT_NE(failed.message().find(path), std::string::npos) << failed.message();
  Result<CheckpointSections> read = ReadCheckpointFile(path);
  ASSERT_TRUE(read.ok()) << read.status().message();
  EXPECT_EQ((*read)[0].second, "3");
}

TEST(CheckpointFile, AppendedBytesAreRefused) {
  const std::string path = TempDir("appended") + "/c.ckpt";
  ASSERT_TRUE(WriteCheckpointFile(path, {{"round", "3"}}).ok());
  std::ofstream(path, std::ios::app) << "x";
  Result<CheckpointSections> read = ReadCheckpointFile(path);
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.status().code(), Status::Code::kCorruption);
}

// A model (a plug-in's, say) that keeps state between rounds it does not
// say it can save: Model::SupportsCheckpoint's default.
class UnsavedStateModel : public Model {
 public:
  UnsavedStateModel() : Model(1, 1) {}
  std::string_view name() const override { return "unsaved"; }
  std::vector<ParamBlock>& blocks() override { return blocks_; }
  LossSums Train(const TrainPlan&) override { return {}; }
  std::vector<DenseBlockView> Upload() const override { return {}; }
  void Score(uint32_t, std::span<float>) const override {}
  const std::vector<Rating>& train() const override { return train_; }

 private:
  std::vector<ParamBlock> blocks_;
  std::vector<Rating> train_;
};

TEST(Checkpoint, ModelsThatCannotSaveTheirSiteStateRefuseCheckpointing) {
  Config config = SmallConfig("mf", "fedavg", "none");
  const UnsavedStateModel model;
  const Status refused = CheckCheckpointable(config, model);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(
      refused.message().find("checkpoint.every = 1: model unsaved cannot save its sites' state"),
      std::string::npos)
      << refused.message();
  config.checkpoint.every = 0;
  EXPECT_TRUE(CheckCheckpointable(config, model).ok());
}

TEST(Checkpoint, MultiTaskSiteStateThatIsCutShortIsRefusedAndChangesNothing) {
  Config config = SmallConfig("mmoe", "fedavg", "none");
  Result<std::unique_ptr<Model>> model = MakeServerModel(config, 50);
  ASSERT_TRUE(model.ok()) << model.status().message();
  ASSERT_TRUE((*model)->SupportsCheckpoint());
  std::ostringstream saved;
  ASSERT_TRUE((*model)->SaveState(saved).ok());
  const std::string whole = saved.str();
  std::istringstream back(whole);
  ASSERT_TRUE((*model)->LoadState(back, "site-0/state").ok());
  for (size_t cut : {whole.size() / 3, whole.size() - 1}) {
    std::istringstream in(whole.substr(0, cut));
    const Status refused = (*model)->LoadState(in, "site-0/state");
    EXPECT_FALSE(refused.ok()) << "cut at " << cut;
    EXPECT_NE(refused.message().find("site-0/state"), std::string::npos) << refused.message();
  }
  std::ostringstream after;
  ASSERT_TRUE((*model)->SaveState(after).ok());
  EXPECT_EQ(after.str(), whole);
}

TEST(Checkpoint, ScaffoldSiteControlRoundTripsAndACutShortOneIsRefusedChangingNothing) {
  // c_i of one block of 3 rows x 2 columns, kept over the 1 row the site trains.
  std::string bytes = "control 1\nitem_factors 3 2 2\n";
  const float c[2] = {0.25f, -1.5f};
  bytes.append(reinterpret_cast<const char*>(c), sizeof(c));
  bytes += '\n';
  SiteControl control;
  EXPECT_EQ(control.Save(), "");  // a site that never trained with c holds none
  ASSERT_TRUE(control.Load(bytes, "site-0/round-000002.ckpt").ok());
  EXPECT_EQ(control.Save(), bytes);
  for (size_t cut : {size_t{5}, size_t{20}, bytes.size() - 3, bytes.size() - 1}) {
    const Status refused = control.Load(bytes.substr(0, cut), "site-0/round-000002.ckpt");
    EXPECT_FALSE(refused.ok()) << "cut at " << cut;
    EXPECT_EQ(refused.code(), Status::Code::kCorruption);
    EXPECT_NE(refused.message().find("site-0/round-000002.ckpt"), std::string::npos)
        << refused.message();
    EXPECT_EQ(control.Save(), bytes) << "a refused load changed c_i";
  }
  EXPECT_FALSE(control.Load(bytes + "x", "site-0/round-000002.ckpt").ok());
}

// Another component's state rides in the checkpoint as a named section (the
// extension point of Coordinator::ExtraSections).
class AccountingCoordinator : public Coordinator {
 public:
  using Coordinator::Coordinator;
  std::vector<std::pair<std::string, std::string>> ExtraSections() const override {
    return {{"plugin_state", spent}};
  }
  Status RestoreExtraSections(
      const std::vector<std::pair<std::string, std::string>>& sections) override {
    if (sections.size() != 1 || sections[0].first != "plugin_state")
      return Status::InvalidArgument("expected a plugin_state section");
    spent = sections[0].second;
    return Status::Ok();
  }
  std::string spent;
};

TEST(Checkpoint, ExtraSectionsRoundTripAndAPlainCoordinatorRefusesThem) {
  InProcessNetwork network(2);
  ParamBlock block;
  block.name = "w";
  block.rows = 2;
  block.cols = 1;
  block.data = {0.5f, -1.0f};
  CoordinatorOptions options;
  options.rounds = 3;
  options.site_ranks = {1};
  const auto strategy = [] {
    return std::move(StrategyRegistry::WithBuiltins().Create("fedavg", StrategyOptions())).value();
  };
  AccountingCoordinator writer(options, std::vector<ParamBlock>{block}, strategy(),
                               &network.endpoint(0));
  writer.spent = "epsilon=1.25";
  const std::string path = TempDir("extra") + "/coordinator.ckpt";
  const CheckpointIdentity identity{"hash", "w", 1};
  ASSERT_TRUE(WriteCoordinatorCheckpoint(path, identity, {writer.CheckpointState(2), ""}).ok());
  Result<CoordinatorCheckpoint> read = ReadCoordinatorCheckpoint(path, identity);
  ASSERT_TRUE(read.ok()) << read.status().message();

  AccountingCoordinator reader(options, std::vector<ParamBlock>{block}, strategy(),
                               &network.endpoint(0));
  ASSERT_TRUE(reader.Restore(read->state).ok());
  EXPECT_EQ(reader.spent, "epsilon=1.25");
  EXPECT_EQ(reader.completed_round(), 2u);

  Coordinator plain(options, std::vector<ParamBlock>{block}, strategy(), &network.endpoint(0));
  const Status refused = plain.Restore(read->state);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.message().find("'plugin_state'"), std::string::npos) << refused.message();
  EXPECT_EQ(plain.completed_round(), 0u);
}

}  // namespace
}  // namespace fedrec
