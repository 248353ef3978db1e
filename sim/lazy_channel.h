// LazyChannel: a simulated site's authenticated channel, made when the site
// first sends or receives. A site's channel needs its Ed25519 identity, and
// making one costs a scalar multiplication; a simulation of 100,000
// registered sites that samples 1,000 a round contacts a few thousand of them,
// so the others never pay it. The channel made is the one the simulator would
// have made at start-up (SimulationOptions::channel_options), and the site's
// secure-aggregation identity is its channel's (identity()).
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "crypto/crypto.h"
#include "crypto/secure_transport.h"
#include "protocol/transport.h"

namespace fedrec {

class LazyChannel : public Transport {
 public:
  // The options of this rank's channel (called once, on first use).
  using Options = std::function<Result<SecureTransportOptions>()>;

  // `base` (the rank's network endpoint) must outlive the channel.
  LazyChannel(Transport* base, Options options) : base_(base), options_(std::move(options)) {}

  int rank() const override { return base_->rank(); }
  int size() const override { return base_->size(); }
  Status Send(int peer, std::vector<uint8_t> bytes) override {
    FEDREC_ASSIGN_OR_RETURN(Transport * channel, Channel());
    return channel->Send(peer, std::move(bytes));
  }
  Status SendShared(int peer, const SharedFrame& frame) override {
    FEDREC_ASSIGN_OR_RETURN(Transport * channel, Channel());
    return channel->SendShared(peer, frame);
  }
  Result<Envelope> Recv(std::chrono::milliseconds timeout) override {
    FEDREC_ASSIGN_OR_RETURN(Transport * channel, Channel());
    return channel->Recv(timeout);
  }
  // Zero until the channel is made (nothing was sent or received).
  TrafficStats stats() const override { return made() ? channel_->stats() : TrafficStats{}; }
  std::optional<std::array<uint8_t, 32>> PeerIdentity(int peer) const override {
    return made() ? channel_->PeerIdentity(peer) : std::nullopt;
  }
  std::vector<ChannelFailure> TakeChannelFailures() override {
    return made() ? channel_->TakeChannelFailures() : std::vector<ChannelFailure>{};
  }

  // The channel's identity, making the channel if it is not made yet.
  Result<crypto::SigningKey> identity() {
    FEDREC_RETURN_IF_ERROR(Channel().status());
    return identity_;
  }
  // Whether the channel has been made (the site was contacted).
  bool made() const { return made_.load(std::memory_order_acquire); }

 private:
  Result<Transport*> Channel() {
    std::call_once(once_, [this] {
      Result<SecureTransportOptions> options = options_();
      if (!options.ok()) {
        failed_ = options.status().WithContext("channel of rank " + std::to_string(rank()));
        return;
      }
      identity_ = options->identity;
      Result<std::unique_ptr<SecureTransport>> channel =
          SecureTransport::Create(base_, std::move(*options));
      if (!channel.ok()) {
        failed_ = channel.status().WithContext("channel of rank " + std::to_string(rank()));
        return;
      }
      channel_ = std::move(*channel);
      made_.store(true, std::memory_order_release);
    });
    if (!made()) return failed_;
    return static_cast<Transport*>(channel_.get());
  }

  Transport* const base_;
  Options options_;
  std::once_flag once_;
  std::atomic<bool> made_{false};
  Status failed_ = Status::Ok();
  crypto::SigningKey identity_;
  std::unique_ptr<SecureTransport> channel_;
};

}  // namespace fedrec
