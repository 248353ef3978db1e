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

namespace {
constexpr uint64_t kIdlePhase = 0xFFFF;
constexpr uint64_t Word(uint32_t run, uint64_t phase, uint64_t chunk) {
  return (uint64_t{run} << 32) | (phase << 16) | chunk;
}
}  // namespace

ChunkTeam::ChunkTeam(unsigned size) : claim_(Word(0, kIdlePhase, 0)) {
  assert(size >= 1);
  helpers_.reserve(size - 1);
  for (unsigned i = 1; i < size; ++i) helpers_.emplace_back([this] { Loop(); });
}

ChunkTeam::~ChunkTeam() {
  stop_.store(true, std::memory_order_relaxed);
  generation_.fetch_add(1, std::memory_order_release);
  generation_.notify_all();
  for (std::thread& helper : helpers_) helper.join();
}

void ChunkTeam::Work() {
  for (;;) {
    uint64_t word = claim_.load(std::memory_order_acquire);
    const uint64_t phase = (word >> 16) & 0xFFFF, chunk = word & 0xFFFF;
    if (phase == kIdlePhase || chunk >= chunks_.load(std::memory_order_relaxed)) return;
    if (!claim_.compare_exchange_weak(word, word + 1, std::memory_order_acq_rel)) continue;
    (*fn_.load(std::memory_order_relaxed))(static_cast<unsigned>(phase),
                                           static_cast<unsigned>(chunk));
    done_.fetch_add(1, std::memory_order_release);
  }
}

void ChunkTeam::Run(unsigned phases, unsigned chunks, const Fn& fn) {
  assert(phases < kIdlePhase && chunks < 0xFFFF);
  ++run_;
  fn_.store(&fn, std::memory_order_relaxed);
  chunks_.store(chunks, std::memory_order_relaxed);
  for (unsigned phase = 0; phase < phases; ++phase) {
    done_.store(0, std::memory_order_relaxed);
    claim_.store(Word(run_, phase, 0), std::memory_order_release);
    if (phase == 0 && !helpers_.empty()) {
      generation_.fetch_add(1, std::memory_order_release);
      generation_.notify_all();
    }
    Work();
    // Only chunks a helper is running are left: it is awake, so spin.
    for (int spin = 0; done_.load(std::memory_order_acquire) != chunks; ++spin) {
      if (spin < kSpins) {
        SpinPause();
      } else {
        std::this_thread::yield();  // the helper lost its core mid-chunk
      }
    }
  }
  claim_.store(Word(run_, kIdlePhase, 0), std::memory_order_release);
}

void ChunkTeam::Loop() {
  uint64_t seen = 0;
  for (;;) {
    seen = AwaitChange(generation_, seen);
    if (stop_.load(std::memory_order_relaxed)) return;
    // Until the run ends: take chunks, and wait briefly for the next phase.
    for (int spin = 0; spin < kSpins; ++spin) {
      const uint64_t word = claim_.load(std::memory_order_acquire);
      if (((word >> 16) & 0xFFFF) == kIdlePhase) break;
      if ((word & 0xFFFF) < chunks_.load(std::memory_order_relaxed)) {
        Work();
        spin = 0;
      } else {
        SpinPause();
      }
    }
  }
}

}  // namespace fedrec
