// Inbox: the receiving half every Transport shares: a FIFO of delivered
// frames, Recv with a timeout, close semantics and receive counters. A
// transport pushes what arrives; Transport::Recv pops.
//
// Thread-safety: all methods may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>

#include "protocol/transport.h"

namespace fedrec {

class Inbox {
 public:
  explicit Inbox(int rank) : rank_(rank) {}

  // For transports that learn their rank after construction.
  // REQUIRES: no concurrent Pop.
  void set_rank(int rank) { rank_ = rank; }

  // Queues a frame; false (and nothing queued) once the inbox is closed.
  bool Push(Envelope envelope) { return Queue(Queued{std::move(envelope), nullptr}); }

  // Queues a frame shared with other inboxes (Transport::SendShared): it is
  // copied into the Envelope only when popped, so a broadcast waiting in many
  // inboxes is held once.
  bool PushShared(int from, SharedFrame frame, double arrival) {
    return Queue(Queued{Envelope{from, {}, arrival}, std::move(frame)});
  }

  // The oldest frame, waiting at most `timeout` (zero polls). After Close,
  // queued frames are still returned, then Unavailable.
  Result<Envelope> Pop(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    if (timeout.count() > 0) {
      cv_.wait_for(lock, timeout, [this] { return !queue_.empty() || closed_; });
    }
    if (!queue_.empty()) {
      Queued queued = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      Envelope envelope = std::move(queued.envelope);
      if (queued.shared) {
        envelope.bytes.assign(queued.shared->begin(), queued.shared->end());
        envelope.shared = std::move(queued.shared);
      }
      bytes_.fetch_add(envelope.bytes.size(), std::memory_order_relaxed);
      messages_.fetch_add(1, std::memory_order_relaxed);
      return envelope;
    }
    if (closed_) {
      return Status::Unavailable("rank " + std::to_string(rank_) +
                                 " is closed and has no queued messages");
    }
    return Status::Timeout("no message for rank " + std::to_string(rank_) + " within " +
                           std::to_string(timeout.count()) + " ms");
  }

  // Refuses further pushes and wakes every waiting Pop.
  void Close() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
    }
    cv_.notify_all();
  }

  // Frames and bytes handed out by Pop.
  uint64_t bytes_received() const { return bytes_.load(std::memory_order_relaxed); }
  uint64_t messages_received() const { return messages_.load(std::memory_order_relaxed); }

 private:
  struct Queued {
    Envelope envelope;
    SharedFrame shared;  // when set, the frame (envelope.bytes empty until popped)
  };

  bool Queue(Queued queued) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closed_) return false;
      queue_.push_back(std::move(queued));
    }
    cv_.notify_one();
    return true;
  }

  int rank_;  // only in messages
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Queued> queue_;  // guarded by mu_
  bool closed_ = false;       // guarded by mu_
  std::atomic<uint64_t> bytes_{0};
  std::atomic<uint64_t> messages_{0};
};

}  // namespace fedrec
