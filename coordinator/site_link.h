// SiteLink: the coordinator's side of talking to its sites, shared by the
// round loop and every aggregation scheme (coordinator/aggregation_scheme.h):
// sending to a site, collecting one step's answers against a deadline on the
// clock, what each site is believed to hold (model version, availability) and
// the failures of the round so far.
//
// Availability: a site silent at a deadline (or whose authenticated channel
// refused it, reported at once by Transport::TakeChannelFailures) is believed
// unavailable: it is not sampled nor asked to evaluate, so a dead site costs
// one timeout, not one per round. Each unavailable site gets a cheap probe
// (SiteHello) at the start of a round, after 1, 2, 4 ... rounds, never waited
// for. Any frame from a site (a late answer, a probe's answer) makes it
// available again from the start of the next round or evaluation.
//
// Thread-safety: used from the coordinator's thread only.
#pragma once

#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "protocol/clock.h"
#include "protocol/frame.h"
#include "protocol/messages.h"
#include "protocol/transport.h"

namespace fedrec {

class SiteLink {
 public:
  // `site_ranks[s]` is the rank of site s; answers are awaited for
  // `round_timeout` on `clock` (neither may be null; both outlive the link).
  SiteLink(Transport* transport, Clock* clock, std::vector<int> site_ranks,
           std::chrono::milliseconds round_timeout);

  uint32_t num_sites() const { return static_cast<uint32_t>(site_ranks_.size()); }
  int rank_of(uint32_t site) const { return site_ranks_[site]; }
  Transport* transport() const { return transport_; }
  Clock* clock() const { return clock_; }
  std::string SiteName(uint32_t site) const;

  // Sends `message` of `round` to `site`.
  template <typename M>
  Status SendTo(const M& message, uint32_t site, uint32_t round) {
    return transport_->Send(
        site_ranks_[site],
        EncodeMessage(message, round, static_cast<uint32_t>(transport_->rank())));
  }

  // Receives the answers of `sites` to one request of `round`: a message of
  // type M or a SiteError from each, until all answered, the deadline (now +
  // round_timeout on the clock) passed, or (virtual clock) nothing more can
  // arrive. Frames of other rounds or types, and frames that do not decode,
  // are logged and dropped; any frame from a site counts as hearing from it.
  // `on_reply(site, message)` and `on_failure(site, reason)` are called once
  // per site at most; a reply that arrived after the deadline, a site whose
  // channel was refused and sites still silent at the end get on_failure
  // (and are recorded in failures()). Silent and refused sites are marked
  // unavailable. A duplicate of an answer already taken is dropped like a
  // late one. Afterwards the clock stands at the latest accepted arrival,
  // or at the deadline when a site missed it: the same whatever order the
  // frames came in. An error only when the transport failed.
  template <typename M, typename OnReply, typename OnFailure>
  Status Collect(uint32_t round, const std::vector<uint32_t>& sites, OnReply on_reply,
                 OnFailure on_failure);

  // Drains late frames (on a virtual clock: until nothing is in flight, so
  // the outcome does not depend on thread timing) and makes every site heard
  // from since the last Settle available again.
  Status Settle(uint32_t round);
  // Sends a probe (SiteHello, not waited for) to each unavailable site whose
  // back-off has run out; the back-off doubles with each unanswered probe.
  Status ProbeUnavailable(uint32_t round);
  std::vector<uint32_t> AvailableSites() const;

  // The model version site s holds (UINT64_MAX: none, or changed by training).
  uint64_t site_version(uint32_t site) const { return site_version_[site]; }
  void set_site_version(uint32_t site, uint64_t version) { site_version_[site] = version; }
  // The site's copy is unknown (it failed, or trained on it): resend next time.
  void ForgetModel(uint32_t site) { site_version_[site] = UINT64_MAX; }

  // Every site that failed a step since the last TakeFailures, with the
  // first reason.
  const std::map<uint32_t, std::string>& failures() const { return failures_; }
  std::map<uint32_t, std::string> TakeFailures() { return std::exchange(failures_, {}); }
  // The step (RoundStepName) each site of failures() failed at: the step of
  // the answer it did not give. Taken with the failures.
  const std::map<uint32_t, std::string>& failure_steps() const { return failure_steps_; }
  std::map<uint32_t, std::string> TakeFailureSteps() { return std::exchange(failure_steps_, {}); }
  // While set, failures are recorded at step "eval" whatever the message
  // (an evaluation on its own runs its own secure sum: keys, shares...).
  void set_evaluating(bool evaluating) { evaluating_ = evaluating; }
  // Called as each awaited site answers or fails a step of Collect: `done`
  // of `total` sites, at `step` (RoundStepName, or "eval"). For progress
  // displays: it must not block, and it changes nothing the round computes.
  using ProgressFn = std::function<void(std::string_view step, uint32_t done, uint32_t total)>;
  void set_on_progress(ProgressFn on_progress) { on_progress_ = std::move(on_progress); }

 private:
  struct Availability {
    bool available = true;
    bool heard = false;       // a frame since the last Settle
    uint32_t next_probe = 0;  // round of the next probe while unavailable
    uint32_t backoff = 1;     // rounds until the probe after that
  };
  static constexpr uint32_t kMaxProbeBackoff = 64;

  void MarkUnavailable(uint32_t site, uint32_t round);
  void NoteHeard(uint32_t site) { availability_[site].heard = true; }
  // The site of `rank`, or nullptr when the rank is not a site's.
  const uint32_t* SiteOfRank(int rank) const;

  Transport* transport_;
  Clock* clock_;
  std::vector<int> site_ranks_;
  std::chrono::milliseconds round_timeout_;
  std::map<int, uint32_t> site_of_rank_;
  std::vector<Availability> availability_;
  std::vector<uint64_t> site_version_;
  std::map<uint32_t, std::string> failures_;
  std::map<uint32_t, std::string> failure_steps_;
  bool evaluating_ = false;
  ProgressFn on_progress_;
};

template <typename M, typename OnReply, typename OnFailure>
Status SiteLink::Collect(uint32_t round, const std::vector<uint32_t>& sites, OnReply on_reply,
                         OnFailure on_site_failure) {
  const char* step = evaluating_ ? "eval" : RoundStepName(StepOf(M::kType));
  const auto total = static_cast<uint32_t>(sites.size());
  uint32_t done = 0;
  const auto progress = [&] {
    if (on_progress_) on_progress_(step, ++done, total);
  };
  const auto on_failure = [&](uint32_t site, const std::string& reason) {
    if (failures_.emplace(site, reason).second) failure_steps_.emplace(site, step);
    on_site_failure(site, reason);
    progress();
  };
  const double start = clock_->Now();
  const double deadline = start + std::chrono::duration<double>(round_timeout_).count();
  double latest = start;
  bool missed = false;
  std::set<uint32_t> waiting(sites.begin(), sites.end());
  const auto take_refusals = [&] {
    for (const ChannelFailure& refused : transport_->TakeChannelFailures()) {
      const uint32_t* site = SiteOfRank(refused.peer);
      if (site == nullptr) continue;
      MarkUnavailable(*site, round);
      if (waiting.erase(*site)) on_failure(*site, refused.reason);
    }
  };
  while (!waiting.empty()) {
    take_refusals();
    if (waiting.empty()) break;
    std::chrono::milliseconds wait(2);
    if (!clock_->is_virtual()) {
      const double left = deadline - clock_->Now();
      if (left <= 0) break;
      wait = std::min(std::chrono::milliseconds(static_cast<int64_t>(left * 1000) + 1),
                      std::chrono::milliseconds(1000));
    }
    Result<Envelope> envelope = transport_->Recv(wait);
    if (!envelope.ok() && envelope.status().code() == Status::Code::kTimeout &&
        clock_->Quiescent()) {
      // Everything the sites sent is queued here by now: one more poll, which
      // may itself send (a channel's handshake), then nothing can come.
      envelope = transport_->Recv(std::chrono::milliseconds(0));
      if (!envelope.ok() && envelope.status().code() == Status::Code::kTimeout) {
        take_refusals();
        if (clock_->Quiescent()) break;
        continue;
      }
    }
    if (!envelope.ok()) {
      if (envelope.status().code() == Status::Code::kTimeout) continue;
      return envelope.status().WithContext("coordinator, round " + std::to_string(round));
    }
    const uint32_t* from = SiteOfRank(envelope->from);
    // A frame that does not decode (damaged on its way) is as if lost: it
    // says nothing about its sender.
    Result<FrameView> frame = DecodeFrame(*envelope);
    if (!frame.ok()) {
      spdlog::warn("coordinator, round {}: dropped a frame from rank {}: {}", round, envelope->from,
                   frame.status().message());
      continue;
    }
    if (from != nullptr) NoteHeard(*from);
    if (from == nullptr) {
      spdlog::warn("coordinator, round {}: dropped {} from rank {}, which is not a site", round,
                   MessageTypeName(frame->header.type), envelope->from);
      continue;
    }
    const uint32_t site = *from;
    if (frame->header.type == MessageType::kSiteHello) continue;  // a probe's answer
    if (frame->header.round != round || !waiting.contains(site)) {
      spdlog::warn(
          "coordinator, round {}: dropped a late or unexpected {} of round {} from site {}", round,
          MessageTypeName(frame->header.type), frame->header.round, site);
      continue;
    }
    if (frame->header.type != MessageType::kSiteError && frame->header.type != M::kType) {
      spdlog::warn("coordinator, round {}: dropped {} from site {}, expected {}", round,
                   MessageTypeName(frame->header.type), site, MessageTypeName(M::kType));
      continue;
    }
    waiting.erase(site);
    const double arrival = clock_->ArrivalTime(*envelope);
    if (arrival > deadline) {
      missed = true;
      on_failure(site, std::string("missed the deadline: its ") +
                           MessageTypeName(frame->header.type) + " arrived at " +
                           std::to_string(arrival - start) + " s, the round timeout is " +
                           std::to_string(deadline - start) + " s");
      continue;
    }
    latest = std::max(latest, arrival);
    if (frame->header.type == MessageType::kSiteError) {
      Result<SiteError> error = DecodeMessage<SiteError>(*frame);
      on_failure(site, error.ok() ? error->message : error.status().message());
      continue;
    }
    Result<M> message = DecodeMessage<M>(*frame);
    if (!message.ok()) {
      on_failure(site, message.status().message());
      continue;
    }
    on_reply(site, std::move(message).value());
    progress();
  }
  for (uint32_t site : waiting) {
    missed = true;
    MarkUnavailable(site, round);
    on_failure(site, std::string("no ") + MessageTypeName(M::kType) + " before the round timeout");
  }
  clock_->AdvanceTo(missed ? deadline : latest);
  return Status::Ok();
}

}  // namespace fedrec
