// SGD epochs of biased MF on every core of a process, after FPSGD (Chin,
// Zhuang, Juan and Lin, "A Fast Parallel SGD for Matrix Factorization in
// Shared Memory Systems", RecSys 2013), the algorithm behind LibMF's threads.
//
// Layout, once per shard: users are cut into P groups of consecutive indices
// holding equal shares of the ratings, items likewise, and the ratings are
// reordered in place into the P x P blocks of the grid, keeping their order
// within a block. The grid's rows are the groups of the side with more
// parameter rows (items on MovieLens), its columns the other side's. Two
// blocks that share neither a row group nor a column group touch disjoint
// parameter rows (and, the groups being index ranges, disjoint cache lines
// but at the ranges' ends), so they train at the same time with no lock on
// any row.
//
// A permutation `col` of the column groups is drawn once, from the stream
// (seed, 0, shard, kShuffle). Stratum s (s = 0..P-1) is the blocks
// (r, col[(r + s) mod P]) for r = 0..P-1: one block per row group and per
// column group, so a stratum's blocks are mutually independent, and the P
// strata cover the grid. An epoch trains the strata in order; each block is
// shuffled in place, just before it trains, with a stream derived from
// (seed, epoch, shard, kShuffle) and the block's index.
//
// Threads: thread t of T owns row groups [tP/T, (t+1)P/T), so their
// parameter rows stay in one core's cache. A column group passes from row
// group r + 1 to r from one stratum to the next (and from one epoch to the
// next), so it changes core only at the ends of the threads' ranges (T times
// an epoch, not P); the thread receiving it prefetches its rows.
// kGrid: each thread trains its row groups' blocks in stratum order, a block
// waiting only for its column group's previous block (stratum s - 1), which
// is the same thread's but at the end of its range. Every row of the model
// then sees its updates in the same order whatever the number of threads, so
// the model is the same for 1, 2 or 64 threads. The squared errors are summed
// per block, then in block order.
// kFree: each thread trains its row groups' blocks in any order, taking a
// block as soon as no other thread is training its column group (FPSGD's
// free-block scheduling, within the thread's rows): no waiting for a given
// block, but the order of updates depends on timing, so the model is not
// reproducible. With one thread both train the strata in order, as kGrid does.
//
// Threads coordinate through one atomic per row group (kGrid) or column group
// (kFree); parameter rows are never locked.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "algorithms/mf_model.h"
#include "algorithms/sgd.h"
#include "base/thread_team.h"
#include "data/ratings.h"

namespace fedrec {

class ParallelSgd {
 public:
  // Reorders `ratings` in place into grid order. The grid side and the thread
  // count follow from `options` and ratings.size() (see SgdParallelism).
  // REQUIRES: `ratings` outlives this object and keeps its size; every user <
  // users and every item < items; options.schedule is kGrid or kFree.
  ParallelSgd(std::span<Rating> ratings, uint32_t users, uint32_t items,
              const SgdParallelism& options, uint64_t seed, uint32_t shard);
  ~ParallelSgd();
  ParallelSgd(const ParallelSgd&) = delete;
  ParallelSgd& operator=(const ParallelSgd&) = delete;

  // One pass over the ratings at learning rate `lr` (as SgdEpoch). Returns
  // the sum of the squared pre-update errors.
  // REQUIRES: `model` has the users and items given to the constructor.
  double Epoch(MfModel* model, uint64_t epoch, float lr, const SgdOptions& options);

  uint32_t side() const { return side_; }        // grid side P in use
  uint32_t threads() const { return threads_; }  // threads an epoch uses

  // The grid side a shard of `ratings` ratings uses under `options`.
  static uint32_t Side(const SgdParallelism& options, size_t ratings);
  // The threads it uses (`cores`: what threads = 0 stands for).
  static uint32_t Threads(const SgdParallelism& options, size_t ratings, unsigned cores);

 private:
  struct EpochState;

  void Layout(uint32_t users, uint32_t items);
  void TrainBlock(uint32_t block, EpochState& state);
  void TrainStrata(EpochState& state);
  void TrainRowsInOrder(unsigned thread, const EpochState& shared);
  void PrefetchColumnGroup(uint32_t group, EpochState& state);
  void TrainRowsFree(unsigned thread, const EpochState& shared);

  std::span<Rating> ratings_;
  SgdSchedule schedule_;
  uint64_t seed_;
  uint32_t shard_;
  uint32_t side_;
  uint32_t threads_;
  std::vector<size_t> offsets_;         // block b holds ratings_[offsets_[b], offsets_[b + 1])
  std::vector<double> sse_;             // per block, this epoch
  std::vector<uint32_t> col_;           // stratum s trains blocks (r, col_[(r + s) mod P])
  bool item_rows_ = false;              // grid rows are item groups (columns user groups)
  std::vector<uint32_t> column_first_;  // column group g: indices [column_first_[g], [g + 1])
  std::unique_ptr<ThreadTeam> team_;

  // Multi-threaded epochs.
  struct alignas(64) Flag {
    std::atomic<uint32_t> value{0};
  };
  // Thread t trains row groups [first_row_[t], first_row_[t + 1]).
  std::vector<uint32_t> first_row_;
  // kGrid: per row group, the strata it has finished this epoch.
  // kFree: per column group, 1 while a thread trains one of its blocks.
  std::unique_ptr<Flag[]> progress_;
  std::vector<uint8_t> done_;  // kFree: per block, trained this epoch (written by its row's thread)
};

}  // namespace fedrec
