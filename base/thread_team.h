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

// A team whose caller never waits for a helper to wake up: a run is cut
// into phases of chunks, and any thread of the team claims the next chunk of
// the current phase; the caller does every chunk no helper took. So a run on
// a busy machine, where a helper may wait long for a core, costs about what
// the caller alone would take, and a helper that wakes late joins whatever
// run is then going on. Phase p + 1 starts once every chunk of phase p
// returned. Helpers spin briefly between runs, then sleep.
//
// Which thread runs a chunk is up to timing: fn must give the same result
// whichever does (chunks of a phase touching disjoint data).
class ChunkTeam {
 public:
  // `size` threads: the caller of Run and size - 1 helpers. REQUIRES: size >= 1.
  explicit ChunkTeam(unsigned size);
  ~ChunkTeam();
  ChunkTeam(const ChunkTeam&) = delete;
  ChunkTeam& operator=(const ChunkTeam&) = delete;

  unsigned size() const { return static_cast<unsigned>(helpers_.size()) + 1; }

  // Calls fn(phase, chunk) once for every phase < phases and chunk < chunks,
  // phase by phase, and returns when all returned. fn must not throw.
  // REQUIRES: one caller at a time; phases and chunks below 65,535.
  void Run(unsigned phases, unsigned chunks,
           const std::function<void(unsigned phase, unsigned chunk)>& fn);

 private:
  using Fn = std::function<void(unsigned, unsigned)>;
  // Claims and runs chunks of the phase in `claim_` while there are any.
  void Work();
  void Loop();

  std::vector<std::thread> helpers_;
  // (run << 32) | (phase << 16) | next chunk; phase kIdle between runs. A
  // chunk is claimed by a compare-exchange of the whole word, so a helper
  // never takes a chunk of a phase or run other than the one it read.
  std::atomic<uint64_t> claim_;
  std::atomic<unsigned> chunks_{0};
  std::atomic<const Fn*> fn_{nullptr};
  std::atomic<unsigned> done_{0};        // chunks of the current phase returned
  std::atomic<uint64_t> generation_{0};  // bumped at each run's start (wakes helpers)
  std::atomic<bool> stop_{false};
  uint32_t run_ = 0;
};

}  // namespace fedrec
