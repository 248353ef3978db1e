// In-process transport: one queue per rank, for the simulator and tests.
#pragma once

#include <condition_variable>
#include <cstdint>
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

  // Serves `rank` on the threads that send to it instead of on a thread of its
  // own waiting in Recv, so a frame to it costs no thread wake-up. After each
  // frame queued for `rank`, the sender calls `drain` unless another thread
  // is in `drain` for it, in which case that thread calls it again before
  // returning. So calls never overlap, each sees the effects of the previous
  // ones, and every frame is followed by a call that starts after it was
  // queued. `drain` should Recv (zero timeout) until the inbox is empty, and
  // runs inside the sender's Send: it must not wait for frames. Set before
  // any traffic; it takes the place of an arrival hook.
  void ServeOnSenders(int rank, std::function<void()> drain);

  // Virtual time (the simulator). Once set, every frame is stamped with
  // Envelope::arrival = the sender's virtual time at Send + delay(from, to,
  // bytes), in seconds. Without it frames arrive at time 0. Set before any
  // traffic; `delay` is called on the sender's thread.
  void SetLinkDelay(std::function<double(int from, int to, uint64_t bytes)> delay);

  // A rank's virtual time, which its sends are stamped from; 0 at the start.
  // Set only by the thread driving that rank (it is read by that thread's
  // sends). Thread-safe.
  double virtual_time(int rank) const;
  void set_virtual_time(int rank, double t);

  // Closes every endpoint: pending and later Recv calls return Unavailable once
  // their queue is empty; Send returns Unavailable.
  void Close();

 private:
  class Endpoint;
  std::vector<std::unique_ptr<Endpoint>> endpoints_;
  std::function<double(int from, int to, uint64_t bytes)> delay_;  // set before traffic
};

}  // namespace fedrec
