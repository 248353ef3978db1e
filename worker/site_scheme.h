// The site's part of an aggregation scheme: how a site's trained update (and
// an evaluation's metric sums) leave it. One implementation per scheme, the
// counterpart of the coordinator's (coordinator/aggregation_scheme.h), so the
// Worker handles a plan once, whatever the scheme:
//   none      the update in the clear (ModelUpdate), to the coordinator or,
//             with shard servers (RoundPlan::shard_ranks), sliced by rows
//   secagg    SecAgg / SecAgg+ (crypto/secagg.h): round keys, shares, the
//             masked input (sliced over the shard servers when there are
//             some), survivor signature and unmasking shares
//   paillier  threshold Paillier (crypto/paillier_round.h): the key set-up,
//             signed encrypted updates (sliced over the shard servers when
//             there are some) and partial decryptions
// A scheme reaches the site's model, data and channel only through the
// SiteContext the Worker gives it.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "algorithms/model.h"
#include "base/param_block.h"
#include "base/status.h"
#include "crypto/crypto.h"
#include "crypto/dp.h"
#include "crypto/update_codec.h"
#include "protocol/messages.h"
#include "protocol/transport.h"

namespace fedrec {

struct WorkerOptions;

// What a site's scheme may use of its Worker.
class SiteContext {
 public:
  virtual ~SiteContext() = default;
  virtual const WorkerOptions& options() const = 0;
  virtual Transport* transport() const = 0;
  virtual int coordinator_rank() const = 0;
  virtual const crypto::SigningKey& identity() const = 0;
  // Every site's identity key (security.site_public_keys); empty when none.
  virtual const std::map<uint32_t, crypto::Key32>& roster() const = 0;
  virtual uint32_t items() const = 0;
  // What the site's evaluation sums hold (update_codec.h).
  virtual EvalLayout eval_layout() const = 0;
  // REQUIRES: the model is built (a plan or request was adopted).
  virtual const Model& model() const = 0;
  // Trains for `plan` (control variates, normalized steps and a Byzantine
  // attack included): the update is then in UploadShapes / UploadViews.
  // Fails when the site's own trainer does (WorkerOptions::trainer).
  virtual Result<LossSums> Train(const RoundPlan& plan) = 0;
  // What the site uploads: the model's blocks, then the strategy's.
  virtual std::vector<ParamBlock> UploadShapes() const = 0;
  virtual std::vector<DenseBlockView> UploadViews() const = 0;
  // Distributed DP (worker/site_dp.h): the site's noise share over its
  // encoded upload in the plan's round, the round's noise split into
  // `share_sites` shares (DpShareSites); no noise when the round has none.
  virtual NoiseShareAdder DpNoiseShares(const RoundPlan& plan, uint32_t share_sites) const = 0;
  // Frees the global values unless the site keeps them.
  virtual void AfterAnswer() = 0;
  // OK when `job_id` is the site's job (adopting it when none is set yet).
  virtual Status AdoptJob(const std::array<uint8_t, 32>& job_id) = 0;
  // "site s (rank r), round n".
  virtual std::string Where(uint32_t round) const = 0;
  // Answers SiteError (logged); non-OK only when the transport failed.
  virtual Status SendError(uint32_t round, const std::string& message) = 0;

  // Sends `message` of `round` to the coordinator (or to `rank`).
  template <typename M>
  Status Send(const M& message, uint32_t round, int rank = -1);
};

class SiteScheme {
 public:
  virtual ~SiteScheme() = default;
  virtual Aggregation kind() const = 0;

  // A plan of this scheme, its model adopted and the strategy's parts begun:
  // trains and answers, or starts the scheme's protocol. `ride_eval`: the
  // previous round's evaluation sums to carry along (RoundPlan::evaluate).
  virtual Status OnPlan(RoundPlan plan, std::vector<uint64_t> ride_eval) = 0;
  // An evaluation's sums, to be added by this scheme (EvalRequest::aggregation).
  virtual Status OnEvaluation(const EvalRequest& request, const EvalReport& report) = 0;
  // Whether a protocol message of `type` for `round` is this scheme's.
  virtual bool Claims(MessageType type, uint32_t round) const = 0;
  virtual Status OnMessage(const FrameView& frame) = 0;
  // A message from shard server `shard` of the current plan (Paillier: the
  // slices of the updates this site is to decrypt the sum of). Refused by
  // the schemes that take nothing from shard servers.
  virtual Status OnShardMessage(uint32_t shard, const FrameView& frame);
};

// The site's part of each scheme, on `context` (which must outlive it).
std::unique_ptr<SiteScheme> MakePlainSite(SiteContext* context);
std::unique_ptr<SiteScheme> MakeSecAggSite(SiteContext* context);
std::unique_ptr<SiteScheme> MakePaillierSite(SiteContext* context);

// Shared by the schemes (worker/site_scheme.cc).
// The site's upload in its sparse form: the rows of every upload block the
// site has a weight for, each with its weight.
std::vector<BlockUpdate> CollectUpdate(const std::vector<ParamBlock>& shapes,
                                       const std::vector<DenseBlockView>& views);
// Slice `shard` of `shards` of a sparse update: the rows ShardSlice(rows,
// shard, shards) of each block, numbered from the slice's first row.
std::vector<BlockUpdate> SliceRows(const std::vector<ParamBlock>& shapes,
                                   const std::vector<BlockUpdate>& blocks, uint32_t shard,
                                   uint32_t shards);
// An encrypted update carries no NaN or infinity: the fixed-point encoding
// would turn one into a large finite value that passes every later check and
// can wrap the ring. (Plain updates are checked when they are decoded.)
Status CheckFinite(const std::vector<ParamBlock>& shapes, const std::vector<DenseBlockView>& views);

template <typename M>
Status SiteContext::Send(const M& message, uint32_t round, int rank) {
  Transport* t = transport();
  return t->Send(rank >= 0 ? rank : coordinator_rank(),
                 EncodeMessage(message, round, static_cast<uint32_t>(t->rank())));
}

}  // namespace fedrec
