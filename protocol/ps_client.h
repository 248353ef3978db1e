// PsClient: the worker side of parameter-server pull/push, in the spirit of
// ps-lite's KVWorker: Pull and Push send at once and return a ticket; Wait
// blocks until that ticket's answers are in.
//
// Each call sends exactly one message to every shard server: the keys are
// split by shard (RowSharding, protocol/ps_messages.h) keeping their order
// within a shard, and the shards' replies are merged back into the caller's
// order. A clocked pull goes to every shard even with no keys there, so the
// consistency policy (coordinator/shard_server.h) sees every worker's clock
// at every shard.
//
// The client owns the receiving side of its transport while it waits (one
// receiving thread per rank). Frames that are not answers to its requests
// (the driver's, typically) are kept, in arrival order, for TakeOther().
// A shard's SiteError fails the ticket it answers (or, without a ticket, the
// next Wait) with the shard's message; a Shutdown from `driver_rank` makes
// Wait fail with Aborted, since the answers it waits for will not come.
//
// Thread-safety: one thread uses a client.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/fast_divide.h"
#include "protocol/ps_messages.h"
#include "protocol/transport.h"

namespace fedrec {

struct PsClientStats {
  uint64_t pulls = 0, pushes = 0, rows_pulled = 0, rows_pushed = 0;
  // Largest (pull clock - the answering shard's slowest worker clock) seen in
  // a clocked pull's replies: the staleness the worker actually read at.
  int64_t max_clock_gap = 0;
};

class PsClient {
 public:
  // `shard_ranks[s]` is shard s's rank; `cols` floats per row. `transport`
  // must outlive the client.
  PsClient(Transport* transport, std::vector<int> shard_ranks, uint32_t cols, int driver_rank);

  // Asks for the rows of `keys`; by Wait(ticket) row j of `out`
  // (keys.size() x cols floats, which must stay valid until then) holds key j's row.
  uint64_t Pull(std::span<const uint32_t> keys, float* out, uint32_t clock, uint32_t flags = 0);
  // Sends `gradients` (keys.size() x cols) for `keys`; copied before it returns.
  // The ticket completes when every shard applied its part.
  uint64_t Push(std::span<const uint32_t> keys, const float* gradients, uint32_t clock,
                uint32_t epoch);

  // Waits until `ticket` is answered by every shard, at most `timeout`
  // without any frame. Errors: a send that failed, a shard's refusal, a
  // malformed reply, a timeout (naming the shards still owed), or the
  // driver's shutdown.
  Status Wait(uint64_t ticket, std::chrono::milliseconds timeout);
  // Waits for every outstanding ticket.
  Status WaitAll(std::chrono::milliseconds timeout);
  // Tickets not yet complete or (pulls) not yet waited for.
  size_t outstanding() const { return tickets_.size(); }

  // The oldest frame received that was not for this client, if any.
  std::optional<Envelope> TakeOther();
  // Receives one frame (at most `timeout`), handling it as Wait does: a reply
  // completes its ticket, anything else is kept for TakeOther. Fails as Wait
  // does once a shard refused a request or the driver shut the job down.
  Status Poll(std::chrono::milliseconds timeout);

  const PsClientStats& stats() const { return stats_; }
  const RowSharding& sharding() const { return sharding_; }

 private:
  struct Ticket {
    bool pull = false;
    uint32_t clock = 0;
    bool clocked = false;
    float* out = nullptr;
    // Per shard: the positions in the caller's keys of the keys sent to it;
    // with one shard (`whole`) none: it gets every key, in the caller's order.
    std::vector<std::vector<uint32_t>> positions;
    bool whole = false;
    uint64_t rows = 0;              // the caller's keys
    std::vector<uint8_t> answered;  // per shard
    uint32_t owed = 0;
    Status error;
  };

  Status Handle(Envelope e);
  int ShardOf(int rank) const;
  void Split(std::span<const uint32_t> keys, Ticket* t);
  // The keys of shard `s` after Split.
  std::span<const uint32_t> ShardKeys(size_t s, std::span<const uint32_t> keys,
                                      const Ticket& t) const {
    return t.whole ? keys : std::span<const uint32_t>(shard_keys_[s]);
  }

  Transport* transport_;
  std::vector<int> shard_ranks_;
  RowSharding sharding_;
  FastDivider32 divider_;  // by the shard count: a key's shard
  uint32_t cols_;
  int driver_rank_;
  uint64_t next_ticket_ = 1;
  std::map<uint64_t, Ticket> tickets_;
  std::deque<Envelope> other_;
  Status failure_;  // a refusal or shutdown not tied to a ticket
  PsClientStats stats_;
  std::vector<std::vector<uint32_t>> shard_keys_;  // scratch, per shard
};

}  // namespace fedrec
