// Lookahead: a sequence of items made on a thread of its own, a few items
// ahead of the thread that uses them, as a training loop wants its next
// minibatch ready when it finishes the current one (worker/ps_worker.h: a
// parameter-server worker's shuffles and slotting run beside its gradient
// steps).
//
// The producer fills item i into a slot the consumer is done with; the
// consumer takes the items in order. With `threaded` false the same producer
// runs on the consumer's thread inside Next, so the sequence is the same
// whatever the threading (the producer alone decides what item i holds).
//
// The producer thread sleeps on a futex when it is `depth` items ahead and
// is woken only once half of the slots are free again, so a consumer much
// slower than the producer pays one wake-up per depth / 2 items, not one per
// item.
//
// Thread-safety: one consumer thread calls Next; the object ends (joining
// its thread) on that thread, at any point of the sequence.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

namespace fedrec {

template <typename T>
class Lookahead {
 public:
  // produce(i, &item): fills item i (its slot is reused: whatever the
  // producer left there from item i - depth), or returns false when the
  // sequence ended before item i; it is not called again after that. At most
  // 2^31 - 1 items. `depth` (at least 2) slots: the producer runs at most
  // depth - 1 items ahead of the one the consumer holds. produce must not
  // throw.
  Lookahead(uint32_t depth, bool threaded, std::function<bool(uint64_t, T*)> produce)
      : slots_(depth < 2 ? 2 : depth), produce_(std::move(produce)) {
    if (threaded) thread_ = std::thread([this] { Produce(); });
  }

  ~Lookahead() {
    if (!thread_.joinable()) return;
    stop_.store(true, std::memory_order_seq_cst);
    consumed_.fetch_add(1, std::memory_order_seq_cst);
    consumed_.notify_one();
    thread_.join();
  }

  Lookahead(const Lookahead&) = delete;
  Lookahead& operator=(const Lookahead&) = delete;

  bool threaded() const { return thread_.joinable(); }

  // The next item (valid until the next call), or nullptr once the sequence
  // has ended.
  T* Next() {
    const uint64_t i = next_++;
    T* slot = &slots_[i % slots_.size()];
    if (!thread_.joinable()) {
      ended_ = ended_ || !produce_(i, slot);
      return ended_ ? nullptr : slot;
    }
    if (i > 0) {  // item i - 1 is done with: its slot may be reused
      const uint32_t consumed = consumed_.fetch_add(1, std::memory_order_seq_cst) + 1;
      if (consumed == wake_at_.load(std::memory_order_seq_cst)) consumed_.notify_one();
    }
    uint32_t made = made_.load(std::memory_order_acquire);
    while ((made & ~kEnded) <= i && !(made & kEnded)) {
      made_.wait(made, std::memory_order_acquire);
      made = made_.load(std::memory_order_acquire);
    }
    return (made & ~kEnded) > i ? slot : nullptr;
  }

 private:
  static constexpr uint32_t kEnded = 1u << 31;  // in made_: the sequence has ended

  void Produce() {
    const uint32_t depth = static_cast<uint32_t>(slots_.size());
    for (uint32_t i = 0;; ++i) {
      // Item i's slot is free once item i - depth is consumed; when it is
      // not, sleep until half of the slots are.
      if (i >= depth && consumed_.load(std::memory_order_seq_cst) <= i - depth) {
        const uint32_t target = i - depth + depth / 2;  // >= i - depth + 1
        wake_at_.store(target, std::memory_order_seq_cst);
        uint32_t consumed = consumed_.load(std::memory_order_seq_cst);
        while (consumed < target && !stop_.load(std::memory_order_seq_cst)) {
          consumed_.wait(consumed, std::memory_order_seq_cst);
          consumed = consumed_.load(std::memory_order_seq_cst);
        }
      }
      if (stop_.load(std::memory_order_seq_cst)) return;
      if (!produce_(i, &slots_[i % depth])) {
        made_.fetch_or(kEnded, std::memory_order_release);
        made_.notify_one();
        return;
      }
      made_.fetch_add(1, std::memory_order_release);
      made_.notify_one();
    }
  }

  std::vector<T> slots_;
  std::function<bool(uint64_t, T*)> produce_;
  uint64_t next_ = 0;                  // the consumer's next item
  bool ended_ = false;                 // unthreaded: produce returned false
  std::atomic<uint32_t> made_{0};      // items made, | kEnded once the sequence ended
  std::atomic<uint32_t> consumed_{0};  // items the consumer is done with
  std::atomic<uint32_t> wake_at_{0};   // consumed count the sleeping producer waits for
  std::atomic<bool> stop_{false};      // the object is ending
  std::thread thread_;
};

}  // namespace fedrec
