// Secure aggregation with a deviating coordinator, through real Worker
// objects: the test plays the coordinator over the in-process transport,
// sends crafted plans and evaluation requests, and checks that every honest
// site refuses naming the check before it sends anything of its input.
// (The protocol-level attacks on the survivor list, the ring and the shares
// are tried in tests/crypto/secagg_test.cc, SecAggAdversary.*.)
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "apps/job.h"
#include "crypto/crypto.h"
#include "crypto/update_codec.h"
#include "protocol/inprocess_transport.h"
#include "tests/federation/federate.h"
#include "worker/worker.h"

namespace fedrec {
namespace {

constexpr uint32_t kSites = 4;

class Federation {
 public:
  Federation() : config_(SmallConfig()), network_(kSites + 1) {
    config_.federation.sites = kSites;
    config_.security.aggregation = "secagg";
    data_ = std::move(LoadFederatedData(config_)).value();
    for (uint32_t s = 0; s < kSites; ++s) identities_.push_back(*crypto::GenerateSigningKey());
    for (uint32_t s = 0; s < kSites; ++s) {
      WorkerOptions o = MakeWorkerOptions(config_);
      o.site = s;
      o.identity = identities_[s];
      auto roster = std::make_shared<std::map<uint32_t, crypto::Key32>>();
      for (uint32_t r = 0; r < kSites; ++r) (*roster)[r] = identities_[r].public_key;
      o.roster = std::move(roster);
      o.job_id.fill(7);
      workers_.push_back(
          std::make_unique<Worker>(o, static_cast<uint32_t>(data_.dataset.items.size()),
                                   data_.sites[s], &network_.endpoint(static_cast<int>(s) + 1)));
    }
  }

  // Sends `message` to `site`, lets it handle it and returns the frame it answered.
  template <typename M>
  FrameView Ask(uint32_t site, const M& message, uint32_t round) {
    Transport& coordinator = network_.endpoint(0);
    EXPECT_TRUE(
        coordinator.Send(static_cast<int>(site) + 1, EncodeMessage(message, round, 0)).ok());
    Result<Envelope> in =
        network_.endpoint(static_cast<int>(site) + 1).Recv(std::chrono::seconds(5));
    EXPECT_TRUE(in.ok());
    bool done = false;
    EXPECT_TRUE(workers_[site]->Handle(*in, &done).ok());
    Result<Envelope> out = coordinator.Recv(std::chrono::seconds(5));
    EXPECT_TRUE(out.ok());
    answers_.push_back(out->bytes);
    return *DecodeFrame(answers_.back());
  }

  // The initial global model (sites build theirs on their first request).
  std::vector<ParamBlock> InitialModel() const {
    return (*MakeServerModel(config_, static_cast<uint32_t>(data_.dataset.items.size())))
        ->GlobalBlocks();
  }

  // The plan an honest coordinator sends in `round`.
  RoundPlan HonestPlan(uint32_t round) const {
    RoundPlan plan;
    plan.round = round;
    plan.aggregation = Aggregation::kSecAgg;
    plan.job_id.fill(7);
    Result<secagg::Params> params =
        secagg::MakeParams(plan.job_id, round, {0, 1, 2, 3}, SecAggPolicy(config_), 64, 1);
    EXPECT_TRUE(params.ok());
    plan.participants = params->sites;
    plan.threshold = params->threshold;
    plan.degree = params->degree;
    plan.colluders = params->colluders;
    plan.dropouts = params->dropouts;
    plan.includes_model = true;
    plan.model = InitialModel();
    return plan;
  }

  Config config_;
  FederatedData data_;
  InProcessNetwork network_;
  std::vector<crypto::SigningKey> identities_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::vector<uint8_t>> answers_;
};

// The site refused with a SiteError whose message holds every part.
void ExpectRefused(const FrameView& frame, std::initializer_list<std::string> parts) {
  ASSERT_EQ(frame.header.type, MessageType::kSiteError);
  const std::string message = DecodeMessage<SiteError>(frame)->message;
  for (const std::string& part : parts)
    EXPECT_NE(message.find(part), std::string::npos)
        << "expected \"" << part << "\" in " << message;
}

TEST(SecAggAdversaryWorkers, HonestPlanIsAnsweredWithRoundKeys) {
  Federation f;
  for (uint32_t s = 0; s < kSites; ++s)
    EXPECT_EQ(f.Ask(s, f.HonestPlan(1), 1).header.type, MessageType::kSecAggKeys);
}

TEST(SecAggAdversaryWorkers, SitesRefuseALoweredThresholdOrFewerColluders) {
  Federation f;
  for (uint32_t s = 0; s < kSites; ++s) {
    RoundPlan lowered = f.HonestPlan(1);
    ASSERT_EQ(lowered.threshold, 4u);  // floor(4 / 2) + 1 colluder + 1
    lowered.threshold = 2;
    ExpectRefused(
        f.Ask(s, lowered, 1),
        {"round 1", "threshold 2 differs from the 4 this site derives", "refusing the round"});
    RoundPlan no_colluders = f.HonestPlan(2);
    no_colluders.colluders = 0;
    ExpectRefused(f.Ask(s, no_colluders, 2), {"colluders 0 differs from the 1"});
    RoundPlan ring = f.HonestPlan(3);
    ring.ring_seed.assign(32, 3);
    ExpectRefused(f.Ask(s, ring, 3), {"a ring seed of 32 bytes"});
  }
  // Nothing of any site's update left it: only refusals came back.
  for (const auto& bytes : f.answers_)
    EXPECT_EQ(DecodeFrame(bytes)->header.type, MessageType::kSiteError);
}

TEST(SecAggAdversaryWorkers, PlansAndEvaluationsOfAnotherJobAreRefused) {
  Federation f;
  RoundPlan other = f.HonestPlan(1);
  other.job_id.fill(8);
  ExpectRefused(f.Ask(0, other, 1),
                {"the request is for job 0808", "this site takes part in job 0707"});
  EvalRequest eval;
  eval.round = 1;
  eval.includes_model = true;
  eval.model = f.InitialModel();
  eval.aggregation = Aggregation::kSecAgg;
  eval.job_id.fill(8);
  ExpectRefused(f.Ask(1, eval, 1), {"the request is for job 0808"});
}

TEST(SecAggAdversaryWorkers, SecureEvaluationWithALoweredThresholdIsRefused) {
  Federation f;
  const RoundPlan honest = f.HonestPlan(1);
  EvalRequest eval;
  eval.round = 1;
  eval.includes_model = true;
  eval.model = honest.model;
  eval.aggregation = Aggregation::kSecAgg;
  eval.participants = honest.participants;
  eval.threshold = 2;
  eval.degree = honest.degree;
  eval.colluders = honest.colluders;
  eval.job_id = honest.job_id;
  const FrameView answer = f.Ask(2, eval, 1);
  EXPECT_EQ(answer.header.round, EvalSecAggRound(1));
  ExpectRefused(answer, {"threshold 2 differs from the 4"});
  // Honest, the site answers with round keys under the evaluation's label,
  // never with an EvalReport.
  eval.threshold = honest.threshold;
  const FrameView keys = f.Ask(2, eval, 1);
  EXPECT_EQ(keys.header.type, MessageType::kSecAggKeys);
  EXPECT_EQ(keys.header.round, EvalSecAggRound(1));
}

}  // namespace
}  // namespace fedrec
