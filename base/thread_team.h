// A fixed team of threads that run one function together, again and again:
// the threads of one trainer's epochs (algorithms/parallel_sgd.h). The team
// is an object (no global pool): whoever needs threads owns a team, and its
// threads end with it.
//
// Between runs the helpers spin briefly (epochs follow each other within
// microseconds), then sleep on a futex, so an idle team costs no CPU.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

namespace fedrec {

// One poll's pause in a spin-wait loop (x86 PAUSE: frees the core's pipeline
// for its sibling and saves power; elsewhere a yield).
inline void SpinPause() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#else
  std::this_thread::yield();
#endif
}

class ThreadTeam {
 public:
  // A team of `size` threads: the caller of Run and size - 1 helpers.
  // REQUIRES: size >= 1.
  explicit ThreadTeam(unsigned size);
  ~ThreadTeam();
  ThreadTeam(const ThreadTeam&) = delete;
  ThreadTeam& operator=(const ThreadTeam&) = delete;

  unsigned size() const { return static_cast<unsigned>(helpers_.size()) + 1; }

  // Calls fn(i) for every i in [0, size()) at once, fn(0) on the calling
  // thread, and returns when every call has returned. fn must not throw.
  // REQUIRES: one caller at a time; not called from inside fn.
  void Run(const std::function<void(unsigned)>& fn);

  // The number of threads `std::thread::hardware_concurrency` reports, at least 1.
  static unsigned Cores();

 private:
  void Loop(unsigned index);

  std::vector<std::thread> helpers_;
  const std::function<void(unsigned)>* fn_ = nullptr;  // the current run's function
  std::atomic<uint64_t> generation_{0};                // bumped to start a run
  std::atomic<unsigned> running_{0};                   // helpers still in the current run
  std::atomic<bool> stop_{false};
};

}  // namespace fedrec
