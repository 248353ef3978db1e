#include "protocol/rank_split_transport.h"

namespace fedrec {

class RankSplitTransport::View : public Transport {
 public:
  View(RankSplitTransport* split, int side) : split_(split), side_(side) {}
  int rank() const override { return split_->base_->rank(); }
  int size() const override { return split_->base_->size(); }
  Status Send(int peer, std::vector<uint8_t> bytes) override {
    return split_->base_->Send(peer, std::move(bytes));
  }
  Result<Envelope> Recv(std::chrono::milliseconds timeout) override {
    return split_->Recv(side_, timeout);
  }
  TrafficStats stats() const override { return split_->base_->stats(); }

 private:
  RankSplitTransport* split_;
  int side_;
};

RankSplitTransport::RankSplitTransport(Transport* base, const std::vector<int>& group)
    : base_(base), group_(group.begin(), group.end()) {
  views_[0] = std::make_unique<View>(this, 0);
  views_[1] = std::make_unique<View>(this, 1);
}

RankSplitTransport::~RankSplitTransport() = default;

Result<Envelope> RankSplitTransport::Recv(int side, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  // The base is polled in slices so that a view waiting while the other
  // receives sees the frames routed to it without waiting for the slice.
  constexpr std::chrono::milliseconds kSlice(50);
  std::unique_lock lock(mu_);
  for (;;) {
    if (!queues_[side].empty()) {
      Envelope e = std::move(queues_[side].front());
      queues_[side].pop_front();
      return e;
    }
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline && timeout.count() > 0)
      return Status::Timeout("no frame within " + std::to_string(timeout.count()) + " ms");
    if (receiving_) {
      if (timeout.count() == 0) return Status::Timeout("no frame queued");
      arrived_.wait_until(lock, std::min(deadline, now + kSlice));
      continue;
    }
    receiving_ = true;
    lock.unlock();
    const auto wait =
        timeout.count() == 0
            ? std::chrono::milliseconds(0)
            : std::min(kSlice,
                       std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now));
    Result<Envelope> e = base_->Recv(wait);
    lock.lock();
    receiving_ = false;
    arrived_.notify_all();
    if (!e.ok()) {
      if (e.status().code() != Status::Code::kTimeout) return e.status();
      if (timeout.count() == 0) return e.status();
      continue;
    }
    const int to = group_.count(e->from) ? 0 : 1;
    if (to == side) return std::move(e).value();
    queues_[to].push_back(std::move(e).value());
    arrived_.notify_all();
  }
}

}  // namespace fedrec
