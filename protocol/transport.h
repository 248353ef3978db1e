// Transport: the only way roles talk to each other. Roles are written against
// this interface and never know whether they run in the simulator (in-process
// queues) or under mpirun (MPI transport), which is what makes both produce
// the same model.
//
// Ranks are 0..size()-1; rank 0 is the coordinator.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/status.h"

namespace fedrec {

struct Envelope {
  int from = -1;
  std::vector<uint8_t> bytes;  // one complete frame
  // Simulated networks only (protocol/inprocess_transport.h with virtual time):
  // the virtual time, in seconds, at which the frame reached its receiver.
  // Zero on real networks. Read through a Clock (protocol/clock.h), never by a
  // role directly.
  double arrival = 0.0;
  // In-process networks only: the shared frame `bytes` was copied from, when
  // it was sent by reference (Transport::SendShared), so a receiver may share
  // work on it with the other receivers of the same immutable bytes
  // (SecureTransport's BroadcastOpenings). Null elsewhere.
  std::shared_ptr<const std::vector<uint8_t>> shared = nullptr;
  // In-process networks only: `bytes` is the very buffer the sender passed to
  // Send, moved into this inbox and never copied or changed on the way, and
  // the sender left its checksum unset (an encoder that fills the payload
  // after the header). Nothing can damage bytes that never left the process
  // and were never touched, so the network does not compute the checksum and
  // DecodeFrame(const Envelope&) does not check it. A frame that carries a
  // checksum (stamped by its encoder, or by a fault injector before damaging
  // it) is never marked intact and is checked as on any network.
  bool intact = false;
};

// A peer whose channel failed for good (e.g. an authenticated channel refused
// its identity), reported once by Transport::TakeChannelFailures.
// One complete frame that several sends share (a broadcast: the same model
// to every site), so a transport that can carry it by reference does not copy
// it once per receiver. Immutable: it carries its checksum already
// (EncodeMessage and EncodeFrame stamp the frames they finish).
using SharedFrame = std::shared_ptr<const std::vector<uint8_t>>;

struct ChannelFailure {
  int peer = -1;
  std::string reason;  // names the peer and says what was expected and found
};

struct TrafficStats {
  uint64_t bytes_sent = 0;
  uint64_t bytes_received = 0;
  uint64_t messages_sent = 0;
  uint64_t messages_received = 0;
};

class Transport {
 public:
  virtual ~Transport() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;

  // Queues `bytes` for `peer`; returns once the transport owns them (delivery is
  // asynchronous; messages between one pair of ranks arrive in send order).
  // Unavailable when the peer is gone or the transport is closed.
  // Thread-safe.
  virtual Status Send(int peer, std::vector<uint8_t> bytes) = 0;

  // Send of a frame shared with other sends: the same delivery and order as
  // Send(peer, *frame). Transports that can carry it without a copy per peer
  // (the in-process network, authenticated channels) override this; the
  // default copies. `frame` must not be null. Thread-safe.
  virtual Status SendShared(int peer, const SharedFrame& frame) { return Send(peer, *frame); }

  // The next message addressed to this rank, waiting at most `timeout`
  // (zero = poll). Timeout status when none arrived; Unavailable after Close().
  // One receiving thread per rank.
  virtual Result<Envelope> Recv(std::chrono::milliseconds timeout) = 0;

  // Counters since construction. Thread-safe.
  virtual TrafficStats stats() const = 0;

  // The Ed25519 identity key `peer` authenticated with, once an authenticated
  // channel to it is up (crypto/secure_transport.h); nullopt on plain
  // transports. Secure aggregation relays it with the peer's round keys.
  virtual std::optional<std::array<uint8_t, 32>> PeerIdentity(int peer) const {
    (void)peer;
    return std::nullopt;
  }

  // Peers whose channel was refused since the last call (each reported once),
  // so a role can fail such a peer at once instead of waiting for its answer.
  // Plain transports have none. Thread-safe.
  virtual std::vector<ChannelFailure> TakeChannelFailures() { return {}; }
};

// A transport that passes everything to `inner` (which must outlive it): the
// base of decorators that change one part (fault injection, recording what a
// role receives). SendShared keeps Transport's default, a copy through Send,
// so a decorator that overrides Send sees every frame; one that passes shared
// frames on as they are overrides SendShared too.
class ForwardingTransport : public Transport {
 public:
  explicit ForwardingTransport(Transport* inner) : inner_(inner) {}

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  Status Send(int peer, std::vector<uint8_t> bytes) override {
    return inner_->Send(peer, std::move(bytes));
  }
  Result<Envelope> Recv(std::chrono::milliseconds timeout) override {
    return inner_->Recv(timeout);
  }
  TrafficStats stats() const override { return inner_->stats(); }
  std::optional<std::array<uint8_t, 32>> PeerIdentity(int peer) const override {
    return inner_->PeerIdentity(peer);
  }
  std::vector<ChannelFailure> TakeChannelFailures() override {
    return inner_->TakeChannelFailures();
  }

 protected:
  Transport* inner() const { return inner_; }

 private:
  Transport* inner_;
};

}  // namespace fedrec
