#include "base/thread_team.h"

#include <cassert>

namespace fedrec {

namespace {

// Polls of an atomic before sleeping on it: about 50-100 us on current x86,
// longer than the gap between two epochs of one Train call, far shorter than
// anything a person would notice as a busy idle thread.
constexpr int kSpins = 4096;

// Waits until `value` differs from `old`; returns the new value.
template <typename T>
T AwaitChange(const std::atomic<T>& value, T old) {
  T now;
  for (int spin = 0; (now = value.load(std::memory_order_acquire)) == old; ++spin) {
    if (spin < kSpins) {
      SpinPause();
    } else {
      value.wait(old, std::memory_order_acquire);
    }
  }
  return now;
}

}  // namespace

ThreadTeam::ThreadTeam(unsigned size) {
  assert(size >= 1);
  helpers_.reserve(size - 1);
  for (unsigned i = 1; i < size; ++i) helpers_.emplace_back([this, i] { Loop(i); });
}

ThreadTeam::~ThreadTeam() {
  stop_.store(true, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_release);
  generation_.notify_all();
  for (std::thread& helper : helpers_) helper.join();
}

unsigned ThreadTeam::Cores() { return std::max(1u, std::thread::hardware_concurrency()); }

void ThreadTeam::Run(const std::function<void(unsigned)>& fn) {
  if (helpers_.empty()) {
    fn(0);
    return;
  }
  fn_ = &fn;
  running_.store(static_cast<unsigned>(helpers_.size()), std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_release);
  generation_.notify_all();
  fn(0);
  for (unsigned left = running_.load(std::memory_order_acquire); left != 0;)
    left = AwaitChange(running_, left);
}

void ThreadTeam::Loop(unsigned index) {
  uint64_t seen = 0;
  for (;;) {
    seen = AwaitChange(generation_, seen);
    if (stop_.load(std::memory_order_relaxed)) return;
    (*fn_)(index);
    if (running_.fetch_sub(1, std::memory_order_acq_rel) == 1) running_.notify_one();
  }
}

}  // namespace fedrec
