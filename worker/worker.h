// Worker: the role of one site. Owns the site's private shard and local model
// state (user factors and biases never leave it), trains on request and answers
// with its update, evaluates on request and answers with metric sums. Talks
// only through a Transport; the round protocol is described in
// protocol/messages.h.
//
// Thread-safety: a Worker is driven by one thread at a time (the simulator
// serialises each site's messages; under MPI one thread runs Serve).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "algorithms/metrics.h"
#include "algorithms/model.h"
#include "base/status.h"
#include "crypto/crypto.h"
#include "crypto/dp.h"
#include "crypto/secagg.h"
#include "data/ratings.h"
#include "protocol/messages.h"
#include "protocol/transport.h"
#include "worker/byzantine.h"
#include "worker/site_control.h"
#include "worker/site_dp.h"
#include "worker/site_scheme.h"
#include "worker/site_state.h"
#include "worker/site_steps.h"

namespace fedrec {

// Builds a site's model from its data (ModelRegistry::Create with the job's
// model options); ModelData::shard is the site index.
using SiteModelFactory = std::function<Result<std::unique_ptr<Model>>(ModelData data)>;

// Trains a site's model another way than Model::Train: a site that is a group
// of ranks training in parameter-server mode inside itself (two tiers,
// apps/site_group.h). It leaves the model as Model::Train would: its global
// and local blocks trained, the global mean unchanged.
class SiteTrainer {
 public:
  virtual ~SiteTrainer() = default;
  virtual Result<LossSums> Train(Model* model, const TrainPlan& plan) = 0;
};

struct WorkerOptions {
  uint32_t site = 0;  // site index, 0-based
  int coordinator_rank = 0;
  // Builds the site's model (apps: MakeWorkerOptions). Required.
  SiteModelFactory make_model;
  // The catalogue's side features (public, shared by every site), handed to
  // the model with the site's own users' features (SiteData); null: none.
  std::shared_ptr<const FeatureTable> item_features;
  float rating_min = 1.0f;
  float rating_max = 5.0f;
  bool evaluate_ranking = true;
  RankingOptions ranking;
  // Per-task metrics (eval.*): click negatives per held-out interaction, AUC
  // bins, and whether warm and cold-start users are reported apart; the
  // coordinator is configured alike (CoordinatorOptions).
  uint32_t click_negatives = 4;
  uint32_t auc_bins = 1024;
  bool eval_warm_cold = false;
  // eval.reconstruct: a site whose local blocks were never trained (neither
  // here nor in a resumed state) evaluates with them fitted to its training
  // data first (Model::ReconstructLocal), then puts them back, so the
  // evaluation leaves its training where it was.
  bool reconstruct_local = true;
  uint64_t seed = 1;  // run seed: stochastic rounding of encrypted updates
  // Signs the site's secure-aggregation round keys; when empty the site makes
  // an ephemeral identity.
  std::optional<crypto::SigningKey> identity;
  // Without `identity`: gives the site's identity when it first needs one
  // (the simulator's lazily made channel, whose identity the site's must
  // be); without either the site makes an ephemeral identity then.
  std::function<Result<crypto::SigningKey>()> make_identity;
  // Every site's identity key (security.site_public_keys), which the site
  // checks its secure-aggregation neighbours against; null or empty when
  // sites are not authenticated (see secagg::Client). Shared: it is the same
  // at every site.
  std::shared_ptr<const std::map<uint32_t, crypto::Key32>> roster;
  // False: the site frees the values of the global model after answering
  // each request (Model::ReleaseGlobal), so between rounds it holds only its
  // data and local blocks; the coordinator must then send the model with
  // every request (CoordinatorOptions::sites_keep_model, set alike).
  bool keep_global_model = true;
  // Shared by the sites one process hosts (the simulator sets one for all its
  // sites): each pairwise secure-aggregation secret is computed once per pair
  // instead of once per site (secagg::AgreementMemo). Null: computed alone.
  std::shared_ptr<secagg::AgreementMemo> agreement_memo;
  // The job's secure-aggregation parameters (security.*): the site derives
  // each round's threshold, degree and threat counts from them and refuses a
  // plan that differs (secagg::CheckParams); Paillier's decryption threshold
  // comes from the same adversarial rate (paillier_round::DecryptionThreshold).
  secagg::Policy secagg_policy;
  // The job the site takes part in (CoordinatorOptions::job_id). When set, a
  // plan of any other job is refused; when all zero, the site adopts the job
  // of the first plan it receives and refuses any other afterwards.
  std::array<uint8_t, 32> job_id{};
  // TESTS ONLY, never set from a config: lowers the smallest Paillier modulus
  // the site accepts (0 = kPaillierSiteMinModulusBits, 2048) so tests can use
  // fast small keys.
  int insecure_test_min_paillier_bits = 0;
  // Fault injection (the simulator's Byzantine sites, worker/byzantine.h):
  // the site sends this attack instead of its trained values. kNone: honest.
  ByzantineAttack byzantine;
  // Differential privacy (dp.*, crypto/dp.h), set alike at every site and
  // the coordinator: the site refuses a plan whose privacy is weaker.
  DpOptions dp;
  // Trains the site's model instead of Model::Train (null: the model trains
  // itself). Per site: not shared between workers.
  std::shared_ptr<SiteTrainer> trainer;
  // Checkpoints (checkpoint.every > 0; worker/site_state.h): the folder of
  // this site's state files ("{site}" is replaced by the site index; empty =
  // the site keeps none), checkpoint.every, and the configuration's hash
  // bound into every file.
  std::string state_dir;
  uint32_t checkpoint_every = 0;
  std::string config_hash;
  // Resuming from the coordinator's checkpoint of this round: the site
  // starts from its newest state file of a round <= it (0 = a fresh start).
  uint32_t resume_round = 0;
};

// One site's data. Users are numbered by the site (0..user_keys.size()-1);
// items use the federation's shared item index space.
struct SiteData {
  std::vector<Rating> train;
  std::vector<Rating> test;
  std::vector<uint64_t> user_keys;  // StableIdKey of each user's raw ID
  FeatureTable user_features;       // one row per local user; empty: none
  // Per local user: 1 = a cold-start user (data.cold_start: kept at a few
  // training ratings), reported apart from warm users. Empty: none.
  std::vector<uint8_t> cold_users;
};

class Worker : private SiteContext {
 public:
  // `transport` must outlive the worker; its rank is the site's rank.
  Worker(const WorkerOptions& options, uint32_t items, SiteData data, Transport* transport);
  ~Worker() override;

  // Handles one received frame, sending any answer through the transport.
  // Sets *done when the frame was a Shutdown. A frame that does not decode or
  // does not fit the site's state is answered with SiteError (when its round is
  // readable) and logged; the returned status is non-OK only when the transport
  // failed.
  Status Handle(const Envelope& envelope, bool* done);

  // Receives and handles frames until Shutdown. Aborted (with the
  // coordinator's reason) when the Shutdown says the job failed; Unavailable
  // when the transport closed first; Timeout when nothing arrived within
  // `idle_timeout`.
  Status Serve(std::chrono::milliseconds idle_timeout);

  uint32_t site() const { return options_.site; }
  // The model is built from the site's data on the first request that needs
  // it, so a registered site that is never selected costs only its data.
  bool has_model() const { return model_ != nullptr; }
  // REQUIRES: has_model().
  const Model& model() const override { return *model_; }
  // Why the model could not be built (OK until a build was tried).
  const Status& model_status() const { return model_status_; }
  const std::vector<Rating>& test() const { return test_; }
  uint64_t model_version() const { return model_version_; }
  // Whether the local blocks were ever trained here or loaded from a saved
  // state (else they hold their initial values).
  bool local_trained() const { return local_trained_; }

 private:
  // SiteContext: what the aggregation schemes' site parts use
  // (worker/site_scheme.h).
  const WorkerOptions& options() const override { return options_; }
  Transport* transport() const override { return transport_; }
  int coordinator_rank() const override { return options_.coordinator_rank; }
  // Made on first use (WorkerOptions::identity, make_identity).
  const crypto::SigningKey& identity() const override;
  const std::map<uint32_t, crypto::Key32>& roster() const override;
  uint32_t items() const override { return items_; }
  EvalLayout eval_layout() const override;
  Result<LossSums> Train(const RoundPlan& plan) override { return TrainOn(plan); }
  // The shapes (no values) of what the site uploads, which updates are
  // encoded against. With control variates in the round (SCAFFOLD) or
  // normalized steps (FedNova), their blocks follow the model's.
  std::vector<ParamBlock> UploadShapes() const override;
  std::vector<DenseBlockView> UploadViews() const override;
  NoiseShareAdder DpNoiseShares(const RoundPlan& plan, uint32_t share_sites) const override;
  // After an answer: frees the global values unless the site keeps them.
  void AfterAnswer() override;
  Status AdoptJob(const std::array<uint8_t, 32>& job_id) override;
  std::string Where(uint32_t round) const override;
  Status SendError(uint32_t round, const std::string& message) override;

  // Builds the model from the site's data the first time; then model_status_.
  Status EnsureModel();
  Status OnRoundPlan(const FrameView& frame);
  // The plan's shard servers (RoundPlan::shard_ranks) are other ranks of the job.
  Status CheckShardRanks(const RoundPlan& plan) const;
  Status OnEvalRequest(const FrameView& frame);
  // Trains the model for `plan`; a Byzantine site then applies its attack.
  Result<LossSums> TrainModel(const TrainPlan& plan);
  // The metric sums of the model as it is now on this site's test ratings
  // (its local blocks reconstructed first when they were never trained:
  // WorkerOptions::reconstruct_local).
  EvalReport EvaluateModel(uint32_t round);
  EvalReport EvaluateCurrent(uint32_t round) const;
  // Starts the round's control variates (or ends them when the plan has
  // none); error when the model cannot use them or they do not fit it.
  Status BeginControl(RoundPlan* plan);
  // Starts (or ends) the round's normalized update; error when the model
  // does not count its local steps or the plan's unit is not valid.
  Status BeginSteps(const RoundPlan& plan);
  // Local training for the plan, with the control-variate step and update.
  Result<LossSums> TrainOn(const RoundPlan& plan);
  // Takes the values of `model` (when included) or checks the cached version.
  Status AdoptModel(bool included, std::vector<ParamBlock>* model, uint64_t version,
                    uint32_t round);

  // The last frames handled, to drop a duplicate delivery (Handle).
  struct FrameKey {
    MessageType type;
    uint32_t round;
    uint64_t length;
    uint32_t checksum;
    int from;
    bool operator==(const FrameKey&) const = default;
  };
  static constexpr size_t kRecentFrames = 32;
  std::deque<FrameKey> recent_;

  WorkerOptions options_;
  Transport* transport_;
  std::optional<SiteData> data_;  // until the model is built from it
  std::unique_ptr<Model> model_;
  Status model_status_;  // why the model could not be built: every request is answered with it
  std::vector<Rating> test_;
  // Kept for evaluation: the users' stable keys (click negatives' streams)
  // and cold-start flags.
  std::vector<uint64_t> user_keys_;
  std::vector<uint8_t> cold_users_;
  uint64_t model_version_ = UINT64_MAX;  // none yet
  Shutdown shutdown_;                    // the last Shutdown received
  // The local blocks were trained here or loaded from a saved state.
  bool local_trained_ = false;
  mutable std::once_flag identity_once_;
  mutable crypto::SigningKey identity_;
  SiteControl control_;  // SCAFFOLD's c_i, kept across rounds
  SiteSteps steps_;      // FedNova's normalized update, this round
  SiteDp dp_;            // the clipped (per-user) update of a private round
  uint32_t items_ = 0;
  std::array<uint8_t, 32> job_id_{};  // WorkerOptions::job_id, or the first plan's
  // The last plan's shard servers: with Paillier they send the decrypting
  // sites their slices of the updates to sum.
  std::vector<int32_t> shard_ranks_;
  // The site's part of each aggregation scheme, by Aggregation value: each
  // holds its own protocol state (a SecAgg round, the Paillier key share).
  std::array<std::unique_ptr<SiteScheme>, 3> schemes_;
  // Checkpoints: the site's state files, and the state to resume from
  // (loaded into the model when it is built).
  std::unique_ptr<SiteStateStore> state_;
  std::optional<SiteStateStore::Saved> resume_state_;
};

}  // namespace fedrec
