// The coordinator's handling of sites that fail, lie, send garbage or vanish.
// Ranks run as threads over the in-process transport: rank 0 the coordinator,
// real Workers on some ranks and scripted misbehaving sites on others.
#include <gtest/gtest.h>

#include <atomic>

#include "apps/job.h"
#include "crypto/sha256.h"
#include "spawn.h"

namespace fedrec {
namespace {

using std::chrono::milliseconds;
using testing::SpawnRanks;

struct Fixture {
  Config config;
  FederatedData data;
  std::vector<ParamBlock> initial;

  explicit Fixture(uint32_t sites) {
    config.seed = 3;
    config.data.synthetic.users = 60;
    config.data.synthetic.items = 80;
    config.data.synthetic.ratings = 2000;
    config.model.factors = 8;
    config.federation.sites = sites;
    config.federation.rounds = 2;
    config.eval.ranking = false;
    config.security.aggregation = "none";  // scripted sites answer with plain updates
    Result<FederatedData> loaded = LoadFederatedData(config);
    EXPECT_TRUE(loaded.ok()) << loaded.status().ToString();
    data = std::move(loaded).value();
    MfModel model(0, data.dataset.items.size(), 8);
    model.InitGlobal(TrainerOptions(config).init);
    initial = model.GlobalBlocks();
  }

  CoordinatorOptions Options() const {
    CoordinatorOptions o = MakeCoordinatorOptions(config);
    for (int s = 0; s < config.federation.sites; ++s) o.site_ranks.push_back(s + 1);
    o.round_timeout = milliseconds(5000);
    return o;
  }

  void ServeWorker(int rank, Transport& t) {
    WorkerOptions wo = MakeWorkerOptions(config);
    wo.site = static_cast<uint32_t>(rank - 1);
    Worker worker(wo, data.dataset.items.size(), data.sites[rank - 1], &t);
    EXPECT_TRUE(worker.Serve(milliseconds(20000)).ok());
  }
};

// A scripted site: answers every frame with `reply(frame)` (empty = silence)
// until Shutdown.
void ServeScripted(
    Transport& t, const std::function<std::vector<std::vector<uint8_t>>(const FrameView&)>& reply) {
  for (;;) {
    Result<Envelope> e = t.Recv(milliseconds(20000));
    if (!e.ok()) return;
    Result<FrameView> f = DecodeFrame(*e);
    ASSERT_TRUE(f.ok());
    if (f->header.type == MessageType::kShutdown) return;
    for (auto& bytes : reply(*f)) ASSERT_TRUE(t.Send(0, std::move(bytes)).ok());
  }
}

std::vector<RoundMetrics> RunCoordinator(Transport& t, const Fixture& fx, CoordinatorOptions o,
                                         std::string* final_sha = nullptr,
                                         std::unique_ptr<Strategy> strategy = nullptr,
                                         Status* status = nullptr) {
  if (!strategy) {
    strategy =
        std::move(StrategyRegistry::WithBuiltins().Create("fedavg", StrategyOptions()).value());
  }
  Coordinator c(o, fx.initial, std::move(strategy), &t);
  std::vector<RoundMetrics> rounds;
  Status s = c.Run([&](const RoundMetrics& m) { rounds.push_back(m); });
  if (status) {
    *status = s;
  } else {
    EXPECT_TRUE(s.ok()) << s.ToString();
  }
  if (final_sha) *final_sha = ModelSha256(c.global());
  return rounds;
}

TEST(Coordinator, SiteErrorCountsAsFailureAndTheRoundUsesTheOthers) {
  Fixture fx(3);
  std::vector<RoundMetrics> rounds;
  SpawnRanks(4, [&](int rank, Transport& t) {
    if (rank == 0) {
      rounds = RunCoordinator(t, fx, fx.Options());
    } else if (rank == 3) {
      ServeScripted(t, [&](const FrameView& f) {
        return std::vector<std::vector<uint8_t>>{
            EncodeMessage(SiteError{f.header.round, "disk full"}, f.header.round, 3)};
      });
    } else {
      fx.ServeWorker(rank, t);
    }
  });
  ASSERT_EQ(rounds.size(), 2u);
  for (const RoundMetrics& m : rounds) {
    EXPECT_EQ(m.sites_selected, 3u);
    EXPECT_EQ(m.sites_reported, 2u);
    EXPECT_EQ(m.failures, 1u);
    EXPECT_FALSE(m.aborted);
    EXPECT_GT(m.test.count, 0u);  // the two healthy sites evaluated
  }
}

TEST(Coordinator, UpdateForRowsOutsideTheModelIsRejectedAsAFailure) {
  Fixture fx(2);
  std::vector<RoundMetrics> rounds;
  SpawnRanks(3, [&](int rank, Transport& t) {
    if (rank == 0) {
      rounds = RunCoordinator(t, fx, fx.Options());
    } else if (rank == 2) {
      ServeScripted(t, [&](const FrameView& f) {
        std::vector<std::vector<uint8_t>> out;
        if (f.header.type == MessageType::kRoundPlan) {
          ModelUpdate u;
          u.round = f.header.round;
          u.model_version = f.header.round - 1;
          u.blocks.push_back(BlockUpdate{MfModel::kItemBias, 1, {100000}, {1.0f}, {9.0f}});
          out.push_back(EncodeMessage(u, f.header.round, 2));
        } else {
          EvalReport report;
          report.round = f.header.round;
          out.push_back(EncodeMessage(report, f.header.round, 2));
        }
        return out;
      });
    } else {
      fx.ServeWorker(rank, t);
    }
  });
  ASSERT_EQ(rounds.size(), 2u);
  EXPECT_EQ(rounds[0].sites_reported, 1u);
  EXPECT_EQ(rounds[0].failures, 1u);
}

TEST(Coordinator, SilentSiteTimesOutAndTheRoundCompletes) {
  Fixture fx(2);
  std::vector<RoundMetrics> rounds;
  SpawnRanks(3, [&](int rank, Transport& t) {
    if (rank == 0) {
      CoordinatorOptions o = fx.Options();
      o.rounds = 1;
      o.round_timeout = milliseconds(200);
      rounds = RunCoordinator(t, fx, o);
    } else if (rank == 2) {
      ServeScripted(t, [](const FrameView&) { return std::vector<std::vector<uint8_t>>{}; });
    } else {
      fx.ServeWorker(rank, t);
    }
  });
  ASSERT_EQ(rounds.size(), 1u);
  EXPECT_EQ(rounds[0].sites_reported, 1u);
  EXPECT_EQ(rounds[0].failures, 1u);
}

TEST(Coordinator, TooFewUpdatesAbortsTheRoundAndKeepsTheModel) {
  Fixture fx(2);
  std::vector<RoundMetrics> rounds;
  std::string sha;
  SpawnRanks(3, [&](int rank, Transport& t) {
    if (rank == 0) {
      CoordinatorOptions o = fx.Options();
      o.rounds = 1;
      o.min_sites = 2;
      rounds = RunCoordinator(t, fx, o, &sha);
    } else if (rank == 2) {
      ServeScripted(t, [&](const FrameView& f) {
        return std::vector<std::vector<uint8_t>>{
            EncodeMessage(SiteError{f.header.round, "cannot train"}, f.header.round, 2)};
      });
    } else {
      fx.ServeWorker(rank, t);
    }
  });
  ASSERT_EQ(rounds.size(), 1u);
  EXPECT_TRUE(rounds[0].aborted);
  EXPECT_EQ(sha, ModelSha256(fx.initial));
}

TEST(Coordinator, RefusingFailuresKeepsTheModelWhenASelectedSiteFails) {
  Fixture fx(2);
  std::vector<RoundMetrics> rounds;
  std::string sha;
  SpawnRanks(3, [&](int rank, Transport& t) {
    if (rank == 0) {
      CoordinatorOptions o = fx.Options();
      o.rounds = 1;
      StrategyOptions strict;
      strict.accept_failures = false;
      rounds = RunCoordinator(
          t, fx, o, &sha,
          std::move(StrategyRegistry::WithBuiltins().Create("fedavg", strict)).value());
    } else if (rank == 2) {
      ServeScripted(t, [&](const FrameView& f) {
        return std::vector<std::vector<uint8_t>>{
            EncodeMessage(SiteError{f.header.round, "cannot train"}, f.header.round, 2)};
      });
    } else {
      fx.ServeWorker(rank, t);
    }
  });
  ASSERT_EQ(rounds.size(), 1u);
  EXPECT_TRUE(rounds[0].aborted);
  EXPECT_EQ(rounds[0].sites_reported, 1u);
  EXPECT_NE(rounds[0].abort_reason.find("federation.accept_failures = false"), std::string::npos)
      << rounds[0].abort_reason;
  EXPECT_EQ(sha, ModelSha256(fx.initial));
}

// A strategy that asks site 1 for 3 local epochs at rate 0.05 and the others
// for the defaults, and records the evaluations the coordinator reports.
class Recording : public Strategy {
 public:
  Recording(std::vector<uint32_t> sites, std::vector<uint32_t>* evaluated)
      : Strategy(StrategyOptions()), sites_(std::move(sites)), evaluated_(evaluated) {}
  std::string_view name() const override { return "recording"; }
  RoundConfig ConfigureRound(const RoundContext&) override {
    RoundConfig config;
    config.sites = sites_;
    config.per_site[1].local_epochs = 3;
    config.per_site[1].lr = 0.05f;
    return config;
  }
  Status Aggregate(const AggregateInput& input, std::vector<ParamBlock>* global) override {
    return std::move(StrategyRegistry::WithBuiltins().Create("fedavg", options_).value())
        ->Aggregate(input, global);
  }
  void OnEvaluated(const EvaluationSummary& summary) override {
    EXPECT_GT(summary.rmse, 0.0);
    EXPECT_GT(summary.count, 0u);
    evaluated_->push_back(summary.round);
  }

 private:
  std::vector<uint32_t> sites_;
  std::vector<uint32_t>* evaluated_;
};

TEST(Coordinator, StrategyChoosesSitesAndInstructionsAndHearsEachEvaluation) {
  Fixture fx(2);
  std::vector<RoundMetrics> rounds;
  std::vector<uint32_t> evaluated;
  std::vector<std::pair<uint32_t, float>> plans;  // site 1's (epochs, lr) per plan
  SpawnRanks(3, [&](int rank, Transport& t) {
    if (rank == 0) {
      rounds = RunCoordinator(t, fx, fx.Options(), nullptr,
                              std::make_unique<Recording>(std::vector<uint32_t>{0, 1}, &evaluated));
    } else if (rank == 2) {  // site 1: notes its plans, trains nothing
      ServeScripted(t, [&](const FrameView& f) {
        if (f.header.type == MessageType::kRoundPlan) {
          Result<RoundPlan> plan = DecodeMessage<RoundPlan>(f);
          EXPECT_TRUE(plan.ok());
          if (plan.ok()) plans.emplace_back(plan->local_epochs, plan->lr);
        }
        return std::vector<std::vector<uint8_t>>{
            EncodeMessage(SiteError{f.header.round, "only listening"}, f.header.round, 2)};
      });
    } else {
      fx.ServeWorker(rank, t);
    }
  });
  ASSERT_EQ(rounds.size(), 2u);
  EXPECT_EQ(plans, (std::vector<std::pair<uint32_t, float>>{{3, 0.05f}, {3, 0.05f}}));
  EXPECT_EQ(evaluated, (std::vector<uint32_t>{1, 2}));
  for (const RoundMetrics& m : rounds) {
    EXPECT_EQ(m.sites_selected, 2u);
    EXPECT_EQ(m.sites_reported, 1u);
  }
}

TEST(Coordinator, StrategySelectingASiteThatIsNotAvailableStopsTheJobNamingTheStrategy) {
  Fixture fx(2);
  Status status;
  std::vector<uint32_t> evaluated;
  SpawnRanks(3, [&](int rank, Transport& t) {
    if (rank == 0) {
      RunCoordinator(t, fx, fx.Options(), nullptr,
                     std::make_unique<Recording>(std::vector<uint32_t>{0, 7}, &evaluated), &status);
    } else {  // the job stops before any plan: the sites only hear the shutdown
      ServeScripted(t, [](const FrameView&) { return std::vector<std::vector<uint8_t>>{}; });
    }
  });
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("strategy recording"), std::string::npos) << status.message();
  EXPECT_NE(status.message().find("selected site 7, which is not among the 2 available sites"),
            std::string::npos)
      << status.message();
}

TEST(Coordinator, GarbageAndStaleFramesAreDroppedNotFatal) {
  Fixture fx(2);
  std::vector<RoundMetrics> rounds;
  std::atomic<int> garbage_sent{0};
  SpawnRanks(3, [&](int rank, Transport& t) {
    if (rank == 0) {
      rounds = RunCoordinator(t, fx, fx.Options());
    } else if (rank == 2) {
      WorkerOptions wo = MakeWorkerOptions(fx.config);
      wo.site = 1;
      Worker worker(wo, fx.data.dataset.items.size(), fx.data.sites[1], &t);
      for (;;) {
        Result<Envelope> e = t.Recv(milliseconds(20000));
        ASSERT_TRUE(e.ok());
        // Before every real answer: random bytes, a frame of a stale round and
        // a frame of an unknown type.
        ASSERT_TRUE(t.Send(0, std::vector<uint8_t>{1, 2, 3, 4, 5}).ok());
        ASSERT_TRUE(t.Send(0, EncodeMessage(EvalReport{}, 999, 2)).ok());
        std::vector<uint8_t> unknown = EncodeMessage(Shutdown{"x"}, 1, 2);
        unknown[6] = 77;
        ASSERT_TRUE(t.Send(0, std::move(unknown)).ok());
        garbage_sent += 3;
        bool done = false;
        ASSERT_TRUE(worker.Handle(*e, &done).ok());
        if (done) break;
      }
    } else {
      fx.ServeWorker(rank, t);
    }
  });
  ASSERT_EQ(rounds.size(), 2u);
  EXPECT_GT(garbage_sent.load(), 0);
  for (const RoundMetrics& m : rounds) {
    EXPECT_EQ(m.sites_reported, 2u);
    EXPECT_EQ(m.failures, 0u);
  }
}

// What a real worker (site 0) answers `plan` with: its SiteError.
SiteError SiteErrorFor(const RoundPlan& plan) {
  Fixture fx(1);
  SiteError answer;
  SpawnRanks(2, [&](int rank, Transport& t) {
    if (rank == 1) {
      fx.ServeWorker(rank, t);
      return;
    }
    ASSERT_TRUE(t.Send(1, EncodeMessage(plan, plan.round, 0)).ok());
    Result<Envelope> e = t.Recv(milliseconds(20000));
    ASSERT_TRUE(e.ok());
    Result<FrameView> f = DecodeFrame(*e);
    ASSERT_TRUE(f.ok());
    ASSERT_EQ(f->header.type, MessageType::kSiteError);
    Result<SiteError> err = DecodeMessage<SiteError>(*f);
    ASSERT_TRUE(err.ok());
    answer = *err;
    ASSERT_TRUE(t.Send(1, EncodeMessage(Shutdown{"done"}, 0, 0)).ok());
  });
  return answer;
}

TEST(Worker, PlanNamingAModelVersionItDoesNotHoldIsAnsweredWithSiteError) {
  RoundPlan plan;
  plan.round = 4;
  plan.model_version = 3;
  plan.includes_model = false;
  const SiteError err = SiteErrorFor(plan);
  EXPECT_EQ(err.round, 4u);
  EXPECT_NE(err.message.find("model version 3"), std::string::npos) << err.message;
  EXPECT_NE(err.message.find("site 0"), std::string::npos) << err.message;
}

// Evaluation sums ride only in a secure sum: a plan asking a site to add them
// to an update sent in the clear is refused, saying what it expected.
TEST(Worker, PlanThatEvaluatesWithoutSecureAggregationIsAnsweredWithSiteError) {
  RoundPlan plan;
  plan.round = 2;
  plan.evaluate = true;
  const SiteError err = SiteErrorFor(plan);
  EXPECT_EQ(err.round, 2u);
  EXPECT_NE(err.message.find("must use secure aggregation (secagg), found none"), std::string::npos)
      << err.message;
}

TEST(Worker, PlanWithANegativeProximalCoefficientIsAnsweredWithSiteError) {
  RoundPlan plan;
  plan.round = 3;
  plan.proximal_mu = -0.5f;
  const SiteError err = SiteErrorFor(plan);
  EXPECT_EQ(err.round, 3u);
  EXPECT_NE(err.message.find("expected a proximal coefficient that is a finite number >= 0, "
                             "found -0.5"),
            std::string::npos)
      << err.message;
}

}  // namespace
}  // namespace fedrec
