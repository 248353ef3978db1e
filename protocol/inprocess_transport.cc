#include "protocol/inprocess_transport.h"

#include <atomic>
#include <cassert>
#include <string>
#include <utility>

#include "protocol/frame.h"
#include "protocol/inbox.h"

namespace fedrec {

// One rank's endpoint: its inbox and its send counters. Send locks only the
// receiver's inbox, so messages from one sender to one receiver keep their
// order, and senders to different ranks never contend.
class InProcessNetwork::Endpoint : public Transport {
 public:
  Endpoint(InProcessNetwork* network, int rank) : network_(network), rank_(rank), inbox_(rank) {}

  int rank() const override { return rank_; }
  int size() const override { return network_->size(); }

  Status Send(int peer, std::vector<uint8_t> bytes) override {
    FEDREC_RETURN_IF_ERROR(CheckPeer(peer));
    // A frame its encoder left unstamped is moved to the receiver as it is,
    // marked intact: nothing between here and its Pop can change its bytes.
    Envelope envelope{rank_, std::move(bytes), 0.0};
    envelope.intact = FrameChecksumUnset(envelope.bytes);
    const uint64_t n = envelope.bytes.size();
    Endpoint& to = *network_->endpoints_[peer];
    envelope.arrival = Arrival(peer, n);
    return Delivered(to, peer, n, to.inbox_.Push(std::move(envelope)));
  }

  // The frame is queued by reference: every inbox holding a broadcast holds
  // the same bytes, copied out only when the receiver takes them.
  Status SendShared(int peer, const SharedFrame& frame) override {
    FEDREC_RETURN_IF_ERROR(CheckPeer(peer));
    const uint64_t n = frame->size();
    Endpoint& to = *network_->endpoints_[peer];
    return Delivered(to, peer, n, to.inbox_.PushShared(rank_, frame, Arrival(peer, n)));
  }

  Result<Envelope> Recv(std::chrono::milliseconds timeout) override { return inbox_.Pop(timeout); }

  TrafficStats stats() const override {
    TrafficStats s;
    s.bytes_sent = bytes_sent_.load(std::memory_order_relaxed);
    s.bytes_received = inbox_.bytes_received();
    s.messages_sent = messages_sent_.load(std::memory_order_relaxed);
    s.messages_received = inbox_.messages_received();
    return s;
  }

  // Set before any traffic (see SetArrivalHook), so reads need no lock.
  void SetHook(std::function<void()> hook) { hook_ = std::move(hook); }

  void Close() { inbox_.Close(); }

  double time() const { return time_.load(std::memory_order_relaxed); }
  void set_time(double t) { time_.store(t, std::memory_order_relaxed); }

 private:
  Status CheckPeer(int peer) const {
    if (peer >= 0 && peer < size()) return Status::Ok();
    return Status::InvalidArgument("rank " + std::to_string(rank_) + " cannot send to rank " +
                                   std::to_string(peer) + ": the network has ranks 0.." +
                                   std::to_string(size() - 1));
  }

  double Arrival(int peer, uint64_t bytes) const {
    return network_->delay_ ? time() + network_->delay_(rank_, peer, bytes) : 0.0;
  }

  // After a push into `to`'s inbox (`queued`: it was open).
  Status Delivered(Endpoint& to, int peer, uint64_t n, bool queued) {
    if (!queued) {
      return Status::Unavailable("rank " + std::to_string(rank_) + " cannot send to rank " +
                                 std::to_string(peer) + ": the network is closed");
    }
    bytes_sent_.fetch_add(n, std::memory_order_relaxed);
    messages_sent_.fetch_add(1, std::memory_order_relaxed);
    // After queuing, outside any lock: the hook may Send or schedule work that
    // calls Recv.
    if (to.hook_) to.hook_();
    return Status::Ok();
  }

  InProcessNetwork* const network_;
  const int rank_;

  Inbox inbox_;
  std::function<void()> hook_;  // set before traffic (see SetArrivalHook)

  std::atomic<uint64_t> bytes_sent_{0};
  std::atomic<uint64_t> messages_sent_{0};
  std::atomic<double> time_{0.0};  // virtual time (SetLinkDelay)
};

InProcessNetwork::InProcessNetwork(int size) {
  assert(size > 0 && "an InProcessNetwork needs at least one rank");
  endpoints_.reserve(static_cast<size_t>(size));
  for (int r = 0; r < size; ++r) endpoints_.push_back(std::make_unique<Endpoint>(this, r));
}

InProcessNetwork::~InProcessNetwork() = default;

int InProcessNetwork::size() const { return static_cast<int>(endpoints_.size()); }

Transport& InProcessNetwork::endpoint(int rank) {
  assert(rank >= 0 && rank < size() && "endpoint rank out of range");
  return *endpoints_[static_cast<size_t>(rank)];
}

void InProcessNetwork::SetArrivalHook(int rank, std::function<void()> hook) {
  assert(rank >= 0 && rank < size() && "hook rank out of range");
  endpoints_[static_cast<size_t>(rank)]->SetHook(std::move(hook));
}

void InProcessNetwork::ServeOnSenders(int rank, std::function<void()> drain) {
  // `calls`: arrivals not yet covered by a finished drain. The sender that
  // raises it from 0 drains; it stops only when no arrival came in since its
  // last drain began (the exchange), so no frame is left without a drain.
  // Its acquire/release orders one drainer's effects before the next's.
  struct State {
    std::atomic<uint64_t> calls{0};
    std::function<void()> drain;
  };
  auto state = std::make_shared<State>();
  state->drain = std::move(drain);
  SetArrivalHook(rank, [state] {
    if (state->calls.fetch_add(1, std::memory_order_acq_rel) != 0) return;
    uint64_t seen = 1;
    for (;;) {
      state->drain();
      if (state->calls.compare_exchange_strong(seen, 0, std::memory_order_acq_rel)) return;
    }
  });
}

void InProcessNetwork::SetLinkDelay(std::function<double(int, int, uint64_t)> delay) {
  delay_ = std::move(delay);
}

double InProcessNetwork::virtual_time(int rank) const {
  assert(rank >= 0 && rank < size() && "rank out of range");
  return endpoints_[static_cast<size_t>(rank)]->time();
}

void InProcessNetwork::set_virtual_time(int rank, double t) {
  assert(rank >= 0 && rank < size() && "rank out of range");
  endpoints_[static_cast<size_t>(rank)]->set_time(t);
}

void InProcessNetwork::Close() {
  for (auto& e : endpoints_) e->Close();
}

}  // namespace fedrec
