// RecordingTransport: wraps a role's transport and keeps a copy of every
// frame it receives, so tests can assert on what a role (the coordinator) saw.
// A frame the in-process network moved unstamped (Envelope::intact) is kept
// stamped, as it would travel on any other network, so DecodeFrame checks it.
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

#include "protocol/frame.h"
#include "protocol/transport.h"

namespace fedrec::testing {

class RecordingTransport : public ForwardingTransport {
 public:
  explicit RecordingTransport(Transport* inner) : ForwardingTransport(inner) {}
  Result<Envelope> Recv(std::chrono::milliseconds timeout) override {
    Result<Envelope> e = inner()->Recv(timeout);
    if (e.ok()) {
      received.push_back(e->bytes);
      StampFrameIfUnset(received.back());
    }
    return e;
  }
  std::vector<std::vector<uint8_t>> received;
};

}  // namespace fedrec::testing
