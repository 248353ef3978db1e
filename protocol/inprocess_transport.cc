#include "protocol/inprocess_transport.h"

#include <atomic>
#include <cassert>
#include <string>
#include <utility>

namespace fedrec {

// One rank's endpoint: its incoming queue (guarded by mu_) and its counters.
// Send locks only the receiver's queue, so messages from one sender to one
// receiver keep their order, and senders to different ranks never contend.
class InProcessNetwork::Endpoint : public Transport {
 public:
  Endpoint(InProcessNetwork* network, int rank) : network_(network), rank_(rank) {}

  int rank() const override { return rank_; }
  int size() const override { return network_->size(); }

  Status Send(int peer, std::vector<uint8_t> bytes) override {
    if (peer < 0 || peer >= size()) {
      return Status::InvalidArgument("rank " + std::to_string(rank_) + " cannot send to rank " +
                                     std::to_string(peer) + ": the network has ranks 0.." +
                                     std::to_string(size() - 1));
    }
    const uint64_t n = bytes.size();
    Endpoint& to = *network_->endpoints_[peer];
    const std::function<void()>* hook = nullptr;
    {
      std::lock_guard<std::mutex> lock(to.mu_);
      if (to.closed_) {
        return Status::Unavailable("rank " + std::to_string(rank_) + " cannot send to rank " +
                                   std::to_string(peer) + ": the network is closed");
      }
      to.queue_.push_back(Envelope{rank_, std::move(bytes)});
      if (to.hook_) hook = &to.hook_;
    }
    to.cv_.notify_one();
    bytes_sent_.fetch_add(n, std::memory_order_relaxed);
    messages_sent_.fetch_add(1, std::memory_order_relaxed);
    // Outside the lock: the hook may Send or schedule work that calls Recv.
    if (hook != nullptr) (*hook)();
    return Status::Ok();
  }

  Result<Envelope> Recv(std::chrono::milliseconds timeout) override {
    std::unique_lock<std::mutex> lock(mu_);
    const auto ready = [this] { return !queue_.empty() || closed_; };
    if (timeout.count() > 0) {
      cv_.wait_for(lock, timeout, ready);
    }
    if (!queue_.empty()) {
      Envelope envelope = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      bytes_received_.fetch_add(envelope.bytes.size(), std::memory_order_relaxed);
      messages_received_.fetch_add(1, std::memory_order_relaxed);
      return envelope;
    }
    if (closed_) {
      return Status::Unavailable("rank " + std::to_string(rank_) +
                                 " is closed and has no queued messages");
    }
    return Status::Timeout("no message for rank " + std::to_string(rank_) + " within " +
                           std::to_string(timeout.count()) + " ms");
  }

  TrafficStats stats() const override {
    TrafficStats s;
    s.bytes_sent = bytes_sent_.load(std::memory_order_relaxed);
    s.bytes_received = bytes_received_.load(std::memory_order_relaxed);
    s.messages_sent = messages_sent_.load(std::memory_order_relaxed);
    s.messages_received = messages_received_.load(std::memory_order_relaxed);
    return s;
  }

  void SetHook(std::function<void()> hook) {
    std::lock_guard<std::mutex> lock(mu_);
    hook_ = std::move(hook);
  }

  void Close() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
    }
    cv_.notify_all();
  }

 private:
  InProcessNetwork* const network_;
  const int rank_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Envelope> queue_;  // guarded by mu_
  bool closed_ = false;         // guarded by mu_
  std::function<void()> hook_;  // set before traffic (see SetArrivalHook)

  std::atomic<uint64_t> bytes_sent_{0};
  std::atomic<uint64_t> bytes_received_{0};
  std::atomic<uint64_t> messages_sent_{0};
  std::atomic<uint64_t> messages_received_{0};
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

void InProcessNetwork::Close() {
  for (auto& e : endpoints_) e->Close();
}

}  // namespace fedrec
