// The coordinator's endpoint in the simulator (sim/simulation.cc).
#pragma once

#include <atomic>
#include <cstdint>
#include <utility>
#include <vector>

#include "base/little_endian.h"
#include "protocol/frame.h"
#include "protocol/transport.h"

namespace fedrec {

// The coordinator's endpoint in the simulator: its Shutdown to a site it
// never sent anything else goes nowhere. Such a site has no channel and no
// state (the simulator ends every site itself once the coordinator returns),
// and the Shutdown would first open an authenticated channel to it: at
// 100,000 registered sites and 1,000 sampled a round, 97,000 handshakes that
// tell nobody anything. Under mpirun the same role reaches every rank, which
// waits for it.
class ContactedShutdownTransport : public ForwardingTransport {
 public:
  // Site ranks are [first_site, end_site); frames to other ranks (shard
  // servers, which serve until their Shutdown) always go.
  ContactedShutdownTransport(Transport* inner, int first_site, int end_site)
      : ForwardingTransport(inner),
        first_site_(first_site),
        contacted_(static_cast<size_t>(end_site - first_site)) {}

  Status Send(int peer, std::vector<uint8_t> bytes) override {
    if (!Reaches(peer, bytes)) return Status::Ok();
    return inner()->Send(peer, std::move(bytes));
  }
  Status SendShared(int peer, const SharedFrame& frame) override {
    if (!Reaches(peer, *frame)) return Status::Ok();
    return inner()->SendShared(peer, frame);
  }

 private:
  // Whether a frame for `peer` is sent: anything but a Shutdown marks the
  // peer contacted; a Shutdown goes to contacted peers only.
  bool Reaches(int peer, const std::vector<uint8_t>& bytes) {
    if (peer < first_site_ || static_cast<size_t>(peer - first_site_) >= contacted_.size())
      return true;
    const bool shutdown =
        bytes.size() >= kFrameHeaderSize &&
        GetLe<uint16_t>(bytes.data() + 6) == static_cast<uint16_t>(MessageType::kShutdown);
    std::atomic<bool>& contacted = contacted_[static_cast<size_t>(peer - first_site_)];
    if (!shutdown) {
      contacted.store(true, std::memory_order_relaxed);
      return true;
    }
    return contacted.load(std::memory_order_relaxed);
  }

  int first_site_;
  std::vector<std::atomic<bool>> contacted_;
};

}  // namespace fedrec
