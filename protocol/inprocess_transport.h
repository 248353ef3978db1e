// In-process transport: one queue per rank, for the simulator and tests.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "protocol/transport.h"

namespace fedrec {

// A network of `size` endpoints in one process. The network owns the endpoints;
// it must outlive every use of them. Thread-safe.
class InProcessNetwork {
 public:
  explicit InProcessNetwork(int size);
  ~InProcessNetwork();
  InProcessNetwork(const InProcessNetwork&) = delete;
  InProcessNetwork& operator=(const InProcessNetwork&) = delete;

  int size() const;
  Transport& endpoint(int rank);

  // Called (on the sender's thread, after the message is queued) whenever a
  // message arrives for `rank`. Lets the simulator schedule a site's handler on
  // a thread pool instead of parking one thread per site in Recv.
  // Set before any traffic.
  void SetArrivalHook(int rank, std::function<void()> hook);

  // Closes every endpoint: pending and later Recv calls return Unavailable once
  // their queue is empty; Send returns Unavailable.
  void Close();

 private:
  class Endpoint;
  std::vector<std::unique_ptr<Endpoint>> endpoints_;
};

}  // namespace fedrec
