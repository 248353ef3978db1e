// AggregationShard: a shard server of federated rounds (cluster.shard_servers
// = S > 0 with federation.mode = "federated"). Shard s sums slice s of every
// site's update, so neither the updates nor their bytes reach the
// coordinator, which keeps the control plane: the plan, who answered, the
// secure-aggregation key exchange, and the strategy over the sums.
//
// A round, per shard (messages in protocol/messages.h):
//   1. The coordinator sends ShardRound: the round's sites and their ranks,
//      and the slice's shape.
//   2. Each site sends its slice straight to the shard: in the clear a
//      ModelUpdate of the rows ShardSlice(rows, s, S) of every block (row
//      numbers relative to the slice's first row); with secure aggregation
//      the SecAggMasked words ShardSlice(length, s, S, kShardWordAlign) of
//      its masked input; with Paillier the PaillierUpdate ciphertexts
//      ShardSlice(ciphertexts, s, S) of its signed encrypted update. Then it
//      tells the coordinator it is done (a ModelUpdate without blocks, a
//      SecAggMasked without data, a PaillierUpdate holding its slices'
//      digests).
//   3. The coordinator sends ShardClose: the sites to sum (those it heard
//      from) and, with secure aggregation, the masks to remove
//      (secagg::Server::FinishMasks).
//   4. The shard waits for the slices of those sites still in flight, then
//      answers ShardSums: the slice's per-row weighted sums and weights,
//      folded in site order exactly as the coordinator would (the same
//      UpdateAggregator over the slice), or the unmasked ring words. A slice
//      it refused, or one from a site not to be summed, makes it answer with
//      an error instead: the round then keeps its model (a running sum
//      cannot take one site back out).
//      With Paillier the close also names the decrypting sites: the shard
//      sends each of them its slices of the sites to sum (a PaillierSum), and
//      answers ShardSums without data. The sites check every signature and
//      multiply the ciphertexts themselves, as without shard servers, so a
//      shard server (like the coordinator) can never have one site's update
//      decrypted; it sees only ciphertexts.
// The sums are therefore the ones the coordinator forms alone, and the model
// is the same for every S (tests/federation/sharded_aggregation_test.cc).
//
// Thread-safety: driven by one thread (Serve).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/param_block.h"
#include "base/status.h"
#include "protocol/messages.h"
#include "protocol/transport.h"

namespace fedrec {

class UpdateAggregator;

class AggregationShard {
 public:
  // `transport` must outlive the shard; frames are taken only from the
  // coordinator and from the sites the current round names.
  AggregationShard(int coordinator_rank, Transport* transport, unsigned threads = 1);
  ~AggregationShard();

  // Handles frames until the coordinator's Shutdown. Unavailable when the
  // transport closed first; Timeout when nothing arrived for `idle_timeout`.
  Status Serve(std::chrono::milliseconds idle_timeout);
  // Handles one frame; sets *done on Shutdown. Non-OK only when the
  // transport failed.
  Status Handle(const Envelope& envelope, bool* done);

  // Bytes of slices received so far (for reports and tests).
  uint64_t slice_bytes() const { return slice_bytes_; }

 private:
  struct Round;
  Status OnRound(const FrameView& frame);
  Status OnSlice(const Envelope& envelope, const FrameView& frame);
  Status OnClose(const FrameView& frame);
  // Answers the close request once every site to sum has been heard from.
  Status MaybeAnswer();
  // Paillier: sends the slices of the close request's sites to its decrypting
  // sites, then answers.
  Status ForwardSlices();
  Status Answer(ShardSums sums);

  int coordinator_rank_;
  Transport* transport_;
  unsigned threads_;
  std::unique_ptr<Round> round_;
  // Slices of a round not announced yet (its ShardRound may arrive after a
  // fast site's slice): replayed when it is.
  std::map<uint32_t, std::vector<Envelope>> early_;
  uint64_t slice_bytes_ = 0;
};

}  // namespace fedrec
