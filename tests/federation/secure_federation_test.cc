// Federated MF with encrypted aggregation, end to end in the simulator: the
// accuracy matches aggregation in the clear, the model is reproducible, sites
// may drop at any step, and the coordinator never receives a plain update.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <functional>
#include <map>
#include <span>

#include "crypto/crypto.h"
#include "crypto/sha256.h"
#include "tests/federation/federate.h"
#include "tests/federation/recording_transport.h"
#include "tests/federation/spawn.h"

namespace fedrec {
namespace {

Config SecureConfig(const std::string& aggregation) {
  Config config = SmallConfig();
  config.federation.sites = 6;
  config.federation.rounds = 5;
  config.security.aggregation = aggregation;
  config.security.paillier_bits = 1024;  // small keys keep the test fast
  config.federation.round_timeout = 20.0;
  return config;
}

double FinalRmse(const FederatedRun& run) {
  for (auto it = run.rounds.rbegin(); it != run.rounds.rend(); ++it)
    if (it->evaluated) return it->test.Rmse();
  return NAN;
}

void ExpectCloseToPlain(const std::string& aggregation, const std::string& strategy = "fedavg",
                        int64_t local_epochs_max = 0) {
  Config plain_config = SecureConfig("none"), secure_config = SecureConfig(aggregation);
  plain_config.federation.strategy = secure_config.federation.strategy = strategy;
  plain_config.federation.local_epochs_max = secure_config.federation.local_epochs_max =
      local_epochs_max;
  const FederatedRun plain = Federate(plain_config);
  const FederatedRun secure = aggregation == "paillier"
                                  ? Federate(secure_config, 2, PaillierTestSites(6))
                                  : Federate(secure_config);
  ASSERT_EQ(secure.rounds.size(), plain.rounds.size());
  for (const RoundMetrics& m : secure.rounds) {
    EXPECT_FALSE(m.aborted) << "round " << m.round << ": " << m.abort_reason;
    EXPECT_EQ(m.sites_reported, 6u);
    EXPECT_GT(m.secure_bytes, 0u);
    EXPECT_EQ(m.aggregation, aggregation);
  }
  const double plain_rmse = FinalRmse(plain), secure_rmse = FinalRmse(secure);
  EXPECT_NEAR(secure_rmse, plain_rmse, 0.005 * plain_rmse);
}

TEST(SecureFederation, SecAggReachesThePlainRmseWithinQuantizationError) {
  ExpectCloseToPlain("secagg");
}

// SCAFFOLD's control variates are sums too: the sites' changes of c_i travel
// masked with their update, and the run matches the plain one.
TEST(SecureFederation, ScaffoldUnderSecAggReachesThePlainRmseWithinQuantizationError) {
  ExpectCloseToPlain("secagg", "scaffold");
}

// FedNova's normalized updates and local steps are sums as well, with sites
// that train different numbers of epochs.
TEST(SecureFederation, FedNovaWithHeterogeneousEpochsUnderSecAggReachesThePlainRmse) {
  ExpectCloseToPlain("secagg", "fednova", 4);
}

TEST(SecureFederation, SecAggPlusReachesThePlainRmseWithinQuantizationError) {
  Config config = SecureConfig("secagg+");
  ExpectCloseToPlain("secagg+");
}

TEST(SecureFederation, PaillierReachesThePlainRmseWithinQuantizationError) {
  ExpectCloseToPlain("paillier");
}

TEST(SecureFederation, PaillierTrainingLossTotalsTravelInsideTheCiphertexts) {
  Config none = SecureConfig("none"), config = SecureConfig("paillier");
  none.federation.rounds = config.federation.rounds = 2;
  const FederatedRun plain = Federate(none);
  const FederatedRun paillier = Federate(config, 2, PaillierTestSites(6));
  ASSERT_EQ(plain.rounds.size(), paillier.rounds.size());
  for (size_t r = 0; r < plain.rounds.size(); ++r) {
    EXPECT_GT(paillier.rounds[r].train_mse, 0.0) << "round " << r + 1;
    EXPECT_NEAR(paillier.rounds[r].train_mse, plain.rounds[r].train_mse,
                0.02 * plain.rounds[r].train_mse)
        << "round " << r + 1;
  }
}

TEST(SecureFederation, PaillierSitesWithoutARosterRefuseTheKeySetUp) {
  Config config = SecureConfig("paillier");
  config.federation.rounds = 1;
  config.federation.round_timeout = 2.0;
  const FederatedRun run = Federate(config);
  ASSERT_EQ(run.rounds.size(), 1u);
  EXPECT_TRUE(run.rounds[0].aborted);
  EXPECT_NE(run.rounds[0].abort_reason.find("Paillier key set-up"), std::string::npos)
      << run.rounds[0].abort_reason;
}

TEST(SecureFederation, SameModelWhateverTheThreadCount) {
  const Config config = SecureConfig("secagg");
  const FederatedRun one = Federate(config, 1);
  const FederatedRun three = Federate(config, 3);
  EXPECT_EQ(ModelSha256(one.global), ModelSha256(three.global));
}

TEST(SecureFederation, SiteDroppingAfterSharingStillGivesTheSum) {
  Config config = SecureConfig("secagg");
  config.federation.round_timeout = 3.0;  // how long the coordinator waits for the dropped site
  const FederatedRun run = Federate(config, 2, nullptr, SilenceSite(2, 2, RoundStep::kUpload));
  ASSERT_EQ(run.rounds.size(), 5u);
  EXPECT_FALSE(run.rounds[1].aborted) << run.rounds[1].abort_reason;
  EXPECT_EQ(run.rounds[1].sites_reported, 5u);
  EXPECT_EQ(run.rounds[1].failures, 1u);
  // Silent at a deadline, the site is not sampled in round 3; it answers that
  // round's probe and is back from round 4.
  EXPECT_EQ(run.rounds[2].sites_unavailable, 1u);
  EXPECT_EQ(run.rounds[2].sites_reported, 5u);
  EXPECT_EQ(run.rounds[3].sites_unavailable, 0u);
  EXPECT_EQ(run.rounds[3].sites_reported, 6u);
  // Unmasking with a reconstructed mask key is exact: the result stays as
  // accurate as a run without the dropout.
  const FederatedRun full = Federate(config);
  EXPECT_NEAR(FinalRmse(run), FinalRmse(full), 0.01 * FinalRmse(full));
}

TEST(SecureFederation, SitesCheckNeighboursAgainstTheirRosterOfIdentityKeys) {
  Config config = SecureConfig("secagg+");
  config.federation.rounds = 2;
  config.federation.round_timeout = 5.0;
  std::vector<crypto::SigningKey> identities;
  std::map<uint32_t, crypto::Key32> roster;
  for (uint32_t s = 0; s < 6; ++s) {
    identities.push_back(*crypto::GenerateSigningKey());
    roster[s] = identities.back().public_key;
  }
  // With every roster right, the round keys check out and the model is the
  // one a run without rosters gives (the masks cancel either way).
  const FederatedRun checked = Federate(config, 2, [&](WorkerOptions* o, uint32_t site) {
    o->identity = identities[site];
    o->roster = std::make_shared<const std::map<uint32_t, crypto::Key32>>(roster);
  });
  for (const RoundMetrics& m : checked.rounds) {
    EXPECT_EQ(m.failures, 0u) << "round " << m.round;
    EXPECT_EQ(m.sites_reported, 6u) << "round " << m.round;
  }
  EXPECT_EQ(ModelSha256(checked.global), ModelSha256(Federate(config).global));
  // Site 3 knows other keys for every other site, as if the coordinator had
  // substituted their round keys: it refuses its key list, whichever sites the
  // round's random ring makes its neighbours, and the others' sum goes on.
  std::map<uint32_t, crypto::Key32> wrong = roster;
  for (auto& [site, key] : wrong) {
    if (site != 3) key = crypto::GenerateSigningKey()->public_key;
  }
  const FederatedRun refused = Federate(config, 2, [&](WorkerOptions* o, uint32_t site) {
    o->identity = identities[site];
    o->roster =
        std::make_shared<const std::map<uint32_t, crypto::Key32>>(site == 3 ? wrong : roster);
  });
  for (const RoundMetrics& m : refused.rounds) {
    EXPECT_FALSE(m.aborted) << m.abort_reason;
    EXPECT_EQ(m.failures, 1u) << "round " << m.round;
    EXPECT_EQ(m.sites_reported, 5u) << "round " << m.round;
  }
}

TEST(SecureFederation, RoundBelowThresholdAbortsAndKeepsTheModel) {
  Config config = SecureConfig("secagg");
  config.federation.rounds = 2;
  config.security.threshold = 1.0;  // every site must remain
  config.federation.round_timeout = 2.0;
  const FederatedRun run = Federate(config, 2, nullptr, SilenceSite(4, 1, RoundStep::kShares));
  ASSERT_EQ(run.rounds.size(), 2u);
  EXPECT_TRUE(run.rounds[0].aborted);
  EXPECT_NE(run.rounds[0].abort_reason.find("threshold"), std::string::npos)
      << run.rounds[0].abort_reason;
  EXPECT_FALSE(run.rounds[1].aborted) << run.rounds[1].abort_reason;
}

// A round's evaluation riding on the next round's secure sum (the sites
// evaluate the plan's model before training) gives the very totals of a
// secure sum of its own, with one model download and one secure sum fewer
// per evaluated round; the last round is evaluated on its own.
TEST(SecureFederation, EvaluationRidingOnTheNextRoundReportsTheMetricsOfItsOwnSum) {
  Config config = SecureConfig("secagg");
  config.federation.rounds = 4;
  config.eval.ranking = true;  // the per-item counts travel too
  config.eval.with_next_round = false;
  const FederatedRun own = Federate(config);
  config.eval.with_next_round = true;
  const FederatedRun rides = Federate(config);
  ASSERT_EQ(own.rounds.size(), 4u);
  ASSERT_EQ(rides.rounds.size(), 4u);
  uint64_t own_bytes = 0, rides_bytes = 0;
  for (size_t r = 0; r < 4; ++r) {
    const RoundMetrics& a = own.rounds[r];
    const RoundMetrics& b = rides.rounds[r];
    EXPECT_EQ(b.round, r + 1);
    ASSERT_TRUE(a.evaluated && b.evaluated) << "round " << r + 1;
    EXPECT_EQ(a.evaluated_in_round, 0u);
    EXPECT_EQ(b.evaluated_in_round, r + 1 < 4 ? r + 2 : 0u) << "round " << r + 1;
    EXPECT_EQ(b.test.count, a.test.count);
    EXPECT_EQ(b.test.Rmse(), a.test.Rmse()) << "round " << r + 1;
    EXPECT_EQ(b.test.Mae(), a.test.Mae());
    EXPECT_EQ(b.ranking.users, a.ranking.users);
    EXPECT_GT(b.ranking.users, 0u);
    EXPECT_EQ(b.ranking.ndcg, a.ranking.ndcg);
    EXPECT_EQ(b.ranking.recommended, a.ranking.recommended);
    EXPECT_EQ(b.train_mse, a.train_mse);
    own_bytes += a.bytes_sent;
    rides_bytes += b.bytes_sent;
  }
  EXPECT_EQ(ModelSha256(rides.global), ModelSha256(own.global));
  // Three model downloads to six sites fewer.
  EXPECT_LT(rides_bytes, own_bytes);
}

// The ride needs the next round's secure sum: when that round aborts, the
// model is still the previous round's and is evaluated on its own.
TEST(SecureFederation, RoundThatAbortsLeavesThePreviousRoundEvaluatedOnItsOwn) {
  Config config = SecureConfig("secagg");
  config.federation.rounds = 3;
  config.security.threshold = 1.0;  // every site must remain
  config.federation.round_timeout = 2.0;
  const FederatedRun run = Federate(config, 2, nullptr, SilenceSite(4, 2, RoundStep::kShares));
  ASSERT_EQ(run.rounds.size(), 3u);
  EXPECT_TRUE(run.rounds[1].aborted);
  for (const RoundMetrics& m : run.rounds) {
    EXPECT_TRUE(m.evaluated) << "round " << m.round;
    EXPECT_TRUE(std::isfinite(m.test.Rmse())) << "round " << m.round;
  }
  EXPECT_EQ(run.rounds[0].evaluated_in_round, 0u);  // round 2 carried nothing
  EXPECT_EQ(run.rounds[1].evaluated_in_round, 3u);
  EXPECT_EQ(run.rounds[2].evaluated_in_round, 0u);
  // The aborted round left the model unchanged: the same evaluation as round 1's.
  EXPECT_EQ(run.rounds[1].test.count, run.rounds[0].test.count);
}

// Pearson chi-square statistic of the byte histogram against uniform.
double ChiSquare(std::span<const uint8_t> bytes) {
  std::array<double, 256> counts{};
  for (uint8_t b : bytes) counts[b] += 1;
  const double expected = static_cast<double>(bytes.size()) / 256.0;
  double chi = 0;
  for (double c : counts) chi += (c - expected) * (c - expected) / expected;
  return chi;
}

TEST(SecureFederation, CoordinatorReceivesNoPlainUpdateAndOnlyUniformMaskedBytes) {
  Config config = SecureConfig("secagg");
  config.federation.sites = 4;
  config.federation.rounds = 2;
  Result<FederatedData> data = LoadFederatedData(config);
  ASSERT_TRUE(data.ok());
  MfModel initial(0, data->dataset.items.size(), static_cast<uint32_t>(config.model.factors));
  initial.InitGlobal(TrainerOptions(config).init);
  std::vector<std::vector<uint8_t>> received;
  testing::SpawnRanks(5, [&](int rank, Transport& t) {
    if (rank == 0) {
      testing::RecordingTransport recording(&t);
      CoordinatorOptions options = MakeCoordinatorOptions(config);
      options.site_ranks = {1, 2, 3, 4};
      options.items = data->dataset.items.size();
      Coordinator coordinator(options, initial.GlobalBlocks(),
                              std::move(StrategyRegistry::WithBuiltins()
                                            .Create("fedavg", MakeStrategyOptions(config))
                                            .value()),
                              &recording);
      EXPECT_TRUE(coordinator.Run(nullptr).ok());
      received = std::move(recording.received);
      return;
    }
    WorkerOptions options = MakeWorkerOptions(config);
    options.site = static_cast<uint32_t>(rank - 1);
    Worker worker(options, data->dataset.items.size(), data->sites[rank - 1], &t);
    EXPECT_TRUE(worker.Serve(std::chrono::seconds(30)).ok());
  });
  size_t masked = 0, masked_eval = 0;
  for (const auto& bytes : received) {
    Result<FrameView> frame = DecodeFrame(bytes);
    ASSERT_TRUE(frame.ok());
    // Neither an update nor a site's evaluation sums arrive in the clear.
    EXPECT_NE(frame->header.type, MessageType::kModelUpdate);
    EXPECT_NE(frame->header.type, MessageType::kEvalReport);
    if (frame->header.type != MessageType::kSecAggMasked) continue;
    Result<SecAggMasked> m = DecodeMessage<SecAggMasked>(*frame);
    ASSERT_TRUE(m.ok());
    if (m->round == EvalSecAggRound(m->round & 0x7fffffffu)) {
      ++masked_eval;
      continue;
    }
    ++masked;
    // 255 degrees of freedom: mean 255, sd 22.6; 400 is beyond p = 1e-8. The
    // plain update is mostly zero rows and would score in the millions.
    EXPECT_LT(ChiSquare(m->data), 400.0) << "site " << m->site << ", round " << m->round;
  }
  EXPECT_EQ(masked, 8u);       // 4 sites x 2 rounds, round 2's carrying round 1's evaluation
  EXPECT_EQ(masked_eval, 4u);  // and the last round's evaluation
}

}  // namespace
}  // namespace fedrec
