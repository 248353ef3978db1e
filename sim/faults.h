// Fault injection (config sim.faults.*): a Transport decorator between a role
// and its transport (above the authenticated channel, so it sees the message
// types of the round protocol) that makes a site drop out at a step of a
// round, crash for good, receive its frames late, and lose, duplicate or
// damage frames; on the coordinator it injects a crash. The roles do not
// know: they see what a real network and real machines would do to them, and
// must cope through deadlines, failure lists, secure-aggregation recovery,
// frame checksums and duplicate filters.
//
// Every decision is drawn from streams derived from (seed, round, site,
// purpose), never from the thread schedule, so a faulty run is reproducible:
//   - dropout: site s drops out in round r when draw 0 of stream (seed, r, s,
//     kFaultDropout) is below `dropout`; the step it drops at is draw 1's
//     uniform pick among `dropout_steps`. From that step to the end of round
//     r it sends nothing (frames of later steps, and its errors, are lost);
//   - frames: the i-th frame of round r a site sends (or receives) is lost,
//     duplicated or damaged (one bit flipped after its checksum is stamped)
//     by draws of stream (seed, r, s, kFaultFrame) (receiving: site + 2^32);
//   - crashes and scripted silences are given, not drawn.
// A site's frames are sent and received in an order fixed by the protocol,
// so the i-th frame of a round is the same frame in every run.
//
// Thread-safety: Send and Recv may be called from different threads.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <vector>

#include "protocol/frame.h"
#include "protocol/transport.h"

namespace fedrec {

// One site silent from `step` of `round` on: to the end of that round, or,
// with `crash`, for the rest of the job (it never answers again, not even a
// probe).
struct SiteSilence {
  uint32_t site = 0;
  uint32_t round = 1;
  RoundStep step = RoundStep::kPlan;
  bool crash = false;
};

struct FaultOptions {
  uint64_t seed = 1;
  // Chance that a site drops out in a round, at one of `dropout_steps`
  // (empty: plan, keys, shares, upload, signature and unmask). A step the
  // round does not have (keys in a plain round) silences the next one it has.
  double dropout = 0.0;
  std::vector<RoundStep> dropout_steps;
  // Scripted silences and crashes (tests; sim.faults.crash_*).
  std::vector<SiteSilence> silences;
  // The coordinator crashes when it first sends a frame of this step of this
  // round (0: never): its transport fails, so the run ends with an error
  // naming the crash, as a real coordinator's death ends the job.
  uint32_t coordinator_crash_round = 0;
  RoundStep coordinator_crash_step = RoundStep::kPlan;
  // Extra one-way delay, in virtual seconds, of every frame a site receives
  // (the simulator's clock; what it sends in answer leaves that much later).
  double delay_s = 0.0;
  // Per frame between a site and the coordinator, each direction: chance it
  // is lost, delivered twice, or delivered with one bit flipped.
  double frame_loss = 0.0;
  double duplicate = 0.0;
  double corrupt = 0.0;

  // Whether any fault is configured for sites.
  bool any_site_fault() const {
    return dropout > 0 || !silences.empty() || delay_s > 0 || frame_loss > 0 || duplicate > 0 ||
           corrupt > 0;
  }
};

// What a FaultTransport did, for tests and reports.
struct FaultCounts {
  uint64_t dropped = 0;     // frames not sent: dropout, silence, crash
  uint64_t lost = 0;        // frames lost on the way (frame_loss)
  uint64_t duplicated = 0;  // frames delivered twice
  uint64_t corrupted = 0;   // frames delivered damaged
};

// Whether site `site` drops out in `round` and at which step (kNone: it does
// not), per FaultOptions::dropout.
RoundStep DropoutStep(const FaultOptions& options, uint32_t round, uint32_t site);

class FaultTransport : public ForwardingTransport {
 public:
  // `site`: the site whose transport this is; nullopt: the coordinator (only
  // its crash applies). `inner` must outlive this.
  FaultTransport(Transport* inner, const FaultOptions* options, std::optional<uint32_t> site);

  Status Send(int peer, std::vector<uint8_t> bytes) override;
  Result<Envelope> Recv(std::chrono::milliseconds timeout) override;

  FaultCounts counts() const;
  bool crashed() const { return crashed_.load(); }

 private:
  // Whether this site sends nothing for a frame of `round` at `step` (a
  // dropout, a silence or a crash); marks the round silent from then on.
  bool SilentLocked(uint32_t round, RoundStep step);
  // The next draw of the frame stream of `round`, direction `in`.
  double FrameDrawLocked(uint32_t round, bool in);

  const FaultOptions* options_;
  const std::optional<uint32_t> site_;
  mutable std::mutex mu_;
  std::map<uint32_t, bool> silent_rounds_;  // rounds in which a frame was held back
  std::map<std::pair<uint32_t, bool>, uint64_t> frame_index_;
  std::deque<Envelope> replay_;  // received frames to deliver a second time
  FaultCounts counts_;
  std::atomic<bool> crashed_{false};
};

}  // namespace fedrec
