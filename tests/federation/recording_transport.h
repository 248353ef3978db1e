// RecordingTransport: wraps a role's transport and keeps a copy of every
// frame it receives, so tests can assert on what a role (the coordinator) saw.
#pragma once

#include <chrono>
#include <cstdint>
#include <utility>
#include <vector>

#include "protocol/transport.h"

namespace fedrec::testing {

class RecordingTransport : public Transport {
 public:
  explicit RecordingTransport(Transport* inner) : inner_(inner) {}
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  Status Send(int peer, std::vector<uint8_t> bytes) override {
    return inner_->Send(peer, std::move(bytes));
  }
  Result<Envelope> Recv(std::chrono::milliseconds timeout) override {
    Result<Envelope> e = inner_->Recv(timeout);
    if (e.ok()) received.push_back(e->bytes);
    return e;
  }
  TrafficStats stats() const override { return inner_->stats(); }
  std::vector<std::vector<uint8_t>> received;

 private:
  Transport* inner_;
};

}  // namespace fedrec::testing
