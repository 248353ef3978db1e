// SGD epochs of biased MF on every core of a process, after FPSGD (Chin,
// Zhuang, Juan and Lin, "A Fast Parallel SGD for Matrix Factorization in
// Shared Memory Systems", RecSys 2013), the algorithm behind LibMF's threads.
//
// Layout, once per shard: users are dealt into P groups and items into P
// groups (each a seeded permutation, stream (seed, 0 / 1, shard, kGridLayout),
// cut where the groups hold equal shares of the ratings), and the ratings are
// reordered in place into the P x P blocks of the grid, keeping their order
// within a block. Two blocks that share neither a user group nor an item group
// touch disjoint parameter rows, so they train at the same time with no lock
// on any row.
//
// Epoch e draws a permutation `col` of the item groups from the stream
// (seed, e, shard, kShuffle). Stratum s (s = 0..P-1) is the blocks
// (r, col[(r + s) mod P]) for r = 0..P-1: one block per user group and per
// item group, so a stratum's blocks are mutually independent and the P
// strata cover the grid. Each block is shuffled in place (its own stream,
// derived from the epoch's and the block index) just before it trains.
//
// kGrid: every row of the model sees its updates in stratum order, whatever
// thread ran which block, so the model is the same for 1, 2 or 64 threads.
// The schedule has no barrier: a block runs as soon as the block before it in
// its user group and the one before it in its item group are done. The
// squared errors are summed per block and then in block order.
// kFree: a thread takes any block not yet trained this epoch whose user group
// and item group no other thread is training (FPSGD's free-block
// scheduler); faster when blocks are uneven, not reproducible.
// With one thread both train the strata in order, as kGrid does.
//
// Only the choice of the next block takes a lock (once per block, a few
// hundred ratings); parameter rows are never locked.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
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
  int AcquireOrdered();
  void ReleaseOrdered(uint32_t block);
  int AcquireFree(unsigned thread);
  void ReleaseFree(uint32_t block);

  std::span<Rating> ratings_;
  SgdSchedule schedule_;
  uint64_t seed_;
  uint32_t shard_;
  uint32_t side_;
  uint32_t threads_;
  std::vector<size_t> offsets_;  // block b holds ratings_[offsets_[b], offsets_[b + 1])
  std::vector<double> sse_;      // per block, this epoch
  std::vector<uint32_t> col_;    // this epoch's item-group permutation
  std::vector<uint32_t> pos_;    // its inverse
  std::unique_ptr<ThreadTeam> team_;

  // Scheduler state, guarded by mu_ (multi-threaded epochs only).
  std::mutex mu_;
  std::condition_variable cv_;
  size_t unclaimed_ = 0;            // blocks no thread has taken this epoch
  std::vector<uint32_t> row_next_;  // kGrid: next stratum of each user group
  std::vector<uint32_t> col_next_;  // kGrid: next stratum of each item group
  std::vector<uint32_t> ready_;     // kGrid: blocks whose predecessors are done (FIFO)
  size_t ready_head_ = 0;
  std::vector<uint8_t> row_busy_;  // kFree
  std::vector<uint8_t> col_busy_;  // kFree
  std::vector<uint8_t> taken_;     // kFree: per block, taken this epoch
  std::vector<uint64_t> probe_;    // kFree: per thread, where its next search starts
};

}  // namespace fedrec
