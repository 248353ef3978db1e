#include "algorithms/parallel_sgd.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <numeric>
#include <thread>

#include "base/random.h"

namespace fedrec {

struct ParallelSgd::EpochState {
  MfModel* model;
  float lr;
  const SgdOptions* options;
  uint64_t stream;  // the epoch's shuffle stream; block b shuffles with a stream derived from it
};

namespace {

// Each of weight.size() indices into one of `side` groups of consecutive
// indices, cut where the groups hold equal shares of `weight` (an index goes
// to the group its first unit of weight falls in). Consecutive, so threads
// training different groups write to different cache lines: biases are one
// float per row, and random groups would have both threads writing the same
// lines at every update.
std::vector<uint32_t> Groups(const std::vector<uint64_t>& weight, uint32_t side) {
  const uint64_t total = std::accumulate(weight.begin(), weight.end(), uint64_t{0});
  std::vector<uint32_t> group(weight.size(), 0);
  uint64_t before = 0;
  for (size_t index = 0; index < weight.size(); ++index) {
    if (total > 0) {
      const auto g = static_cast<unsigned __int128>(before) * side / total;
      group[index] = static_cast<uint32_t>(std::min<unsigned __int128>(g, side - 1));
    }
    before += weight[index];
  }
  return group;
}

}  // namespace

uint32_t ParallelSgd::Side(const SgdParallelism& options, size_t ratings) {
  const size_t per_block = std::max<uint32_t>(options.ratings_per_block, 1);
  const auto fit = static_cast<uint32_t>(std::sqrt(static_cast<double>(ratings / per_block)));
  return std::clamp(fit, 1u, std::max(options.blocks, 1u));
}

uint32_t ParallelSgd::Threads(const SgdParallelism& options, size_t ratings, unsigned cores) {
  const size_t per_thread = std::max<uint32_t>(options.ratings_per_thread, 1);
  const size_t wanted = options.threads ? options.threads : std::max(cores, 1u);
  const size_t useful = std::min<size_t>(ratings / per_thread, Side(options, ratings));
  return static_cast<uint32_t>(std::clamp<size_t>(useful, 1, wanted));
}

ParallelSgd::ParallelSgd(std::span<Rating> ratings, uint32_t users, uint32_t items,
                         const SgdParallelism& options, uint64_t seed, uint32_t shard)
    : ratings_(ratings),
      schedule_(options.schedule),
      seed_(seed),
      shard_(shard),
      side_(Side(options, ratings.size())),
      threads_(Threads(options, ratings.size(), ThreadTeam::Cores())) {
  assert(schedule_ != SgdSchedule::kSequential);
  Layout(users, items);
  const size_t blocks = size_t{side_} * side_;
  sse_.assign(blocks, 0.0);
  // The strata's column permutation, drawn once: an epoch then starts each
  // column group next to the row group that ended the last one with it.
  col_.resize(side_);
  std::iota(col_.begin(), col_.end(), 0u);
  Rng(Mix64(DeriveSeed(seed, 0, shard, Purpose::kShuffle) ^ 0x67726964)).Shuffle(std::span(col_));
  if (threads_ > 1) {
    team_ = std::make_unique<ThreadTeam>(threads_);
    progress_ = std::make_unique<Flag[]>(side_);
    done_.resize(blocks);
    // Equal numbers of row groups (which hold equal shares of the ratings).
    for (uint32_t t = 0; t <= threads_; ++t)
      first_row_.push_back(static_cast<uint32_t>(uint64_t{side_} * t / threads_));
  }
}

ParallelSgd::~ParallelSgd() = default;

void ParallelSgd::Layout(uint32_t users, uint32_t items) {
  std::vector<uint64_t> user_ratings(users, 0), item_ratings(items, 0);
  for (const Rating& r : ratings_) {
    assert(r.user < users && r.item < items);
    ++user_ratings[r.user];
    ++item_ratings[r.item];
  }
  const std::vector<uint32_t> user_group = Groups(user_ratings, side_);
  const std::vector<uint32_t> item_group = Groups(item_ratings, side_);
  // The grid's rows are the side with more parameter rows: a thread keeps its
  // row groups in its cache, and the other side's groups move between threads.
  const bool item_rows = items > users;
  item_rows_ = item_rows;
  const std::vector<uint32_t>& column_group = item_rows ? user_group : item_group;
  column_first_.assign(side_ + 1, static_cast<uint32_t>(column_group.size()));
  for (uint32_t i = static_cast<uint32_t>(column_group.size()); i-- > 0;)
    column_first_[column_group[i]] = i;
  for (uint32_t g = side_; g-- > 0;)
    column_first_[g] = std::min(column_first_[g], column_first_[g + 1]);
  const auto block_of = [&](const Rating& r) {
    return item_rows ? size_t{item_group[r.item]} * side_ + user_group[r.user]
                     : size_t{user_group[r.user]} * side_ + item_group[r.item];
  };
  offsets_.assign(size_t{side_} * side_ + 1, 0);
  for (const Rating& r : ratings_) ++offsets_[block_of(r) + 1];
  std::partial_sum(offsets_.begin(), offsets_.end(), offsets_.begin());
  std::vector<size_t> next(offsets_.begin(), offsets_.end() - 1);
  std::vector<Rating> sorted(ratings_.size());
  for (const Rating& r : ratings_) sorted[next[block_of(r)]++] = r;
  std::copy(sorted.begin(), sorted.end(), ratings_.begin());
}

void ParallelSgd::TrainBlock(uint32_t block, EpochState& state) {
  const std::span<Rating> ratings =
      ratings_.subspan(offsets_[block], offsets_[block + 1] - offsets_[block]);
  if (ratings.empty()) return;
  Rng(SplitMix64At(state.stream, uint64_t{block} + 1)).Shuffle(ratings);
  sse_[block] = SgdEpoch(state.model, ratings, state.lr, *state.options);
}

void ParallelSgd::TrainStrata(EpochState& state) {
  for (uint32_t s = 0; s < side_; ++s) {
    for (uint32_t r = 0; r < side_; ++r) TrainBlock(r * side_ + col_[(r + s) % side_], state);
  }
}

double ParallelSgd::Epoch(MfModel* model, uint64_t epoch, float lr, const SgdOptions& options) {
  assert(model->users() >= 1 || ratings_.empty());
  EpochState state{model, lr, &options, DeriveSeed(seed_, epoch, shard_, Purpose::kShuffle)};
  std::fill(sse_.begin(), sse_.end(), 0.0);

  if (!team_) {
    TrainStrata(state);
  } else if (schedule_ == SgdSchedule::kGrid) {
    for (uint32_t r = 0; r < side_; ++r) progress_[r].value.store(0, std::memory_order_relaxed);
    team_->Run([&](unsigned thread) { TrainRowsInOrder(thread, state); });
  } else {
    std::fill(done_.begin(), done_.end(), uint8_t{0});
    team_->Run([&](unsigned thread) { TrainRowsFree(thread, state); });
  }
  double sse = 0.0;
  for (double s : sse_) sse += s;
  return sse;
}

namespace {

// A thread with nothing ready spins (blocks take microseconds), and past a
// few thousand polls yields, in case the thread it waits for lost its core.
void Backoff(uint32_t idle) {
  if (idle < 4096) {
    SpinPause();
  } else {
    std::this_thread::yield();
  }
}

// Waits until `value` >= `at_least`.
void AwaitAtLeast(const std::atomic<uint32_t>& value, uint32_t at_least) {
  for (uint32_t idle = 1; value.load(std::memory_order_acquire) < at_least; ++idle) Backoff(idle);
}

}  // namespace

void ParallelSgd::PrefetchColumnGroup(uint32_t group, EpochState& state) {
  MfModel& m = *state.model;
  const size_t k = m.factors();
  const size_t first = column_first_[group], end = column_first_[group + 1];
  const float* factors = item_rows_ ? m.user_factors() : m.item_factors();
  const float* bias = item_rows_ ? m.user_bias() : m.item_bias();
  constexpr size_t kLine = 64 / sizeof(float);
  for (size_t f = first * k; f < end * k; f += kLine) __builtin_prefetch(factors + f, 1, 3);
  for (size_t f = first; f < end; f += kLine) __builtin_prefetch(bias + f, 1, 3);
}

void ParallelSgd::TrainRowsInOrder(unsigned thread, const EpochState& shared) {
  EpochState state = shared;  // a copy on this thread's stack: no line shared with the caller's
  const uint32_t first = first_row_[thread], end = first_row_[thread + 1];
  for (uint32_t s = 0; s < side_; ++s) {
    for (uint32_t r = first; r < end; ++r) {
      // The column group's block of stratum s - 1 was row group r + 1's: the
      // thread's own for all rows but its last.
      const uint32_t c = col_[(r + s) % side_];
      if (r + 1 == end) {
        if (s > 0) AwaitAtLeast(progress_[end % side_].value, s);
        PrefetchColumnGroup(c, state);  // from another core's cache
      }
      TrainBlock(r * side_ + c, state);
      progress_[r].value.store(s + 1, std::memory_order_release);
    }
  }
}

void ParallelSgd::TrainRowsFree(unsigned thread, const EpochState& shared) {
  EpochState state = shared;  // a copy on this thread's stack: no line shared with the caller's
  const uint32_t first = first_row_[thread], end = first_row_[thread + 1];
  size_t left = size_t{end - first} * side_;
  for (uint32_t idle = 0; left > 0;) {
    bool trained = false;
    for (uint32_t r = first; r < end; ++r) {
      for (uint32_t i = 0; i < side_; ++i) {
        const uint32_t c = col_[(r + i) % side_];
        const uint32_t block = r * side_ + c;
        std::atomic<uint32_t>& busy = progress_[c].value;
        if (done_[block] || busy.load(std::memory_order_relaxed) != 0 ||
            busy.exchange(1, std::memory_order_acquire) != 0)
          continue;
        TrainBlock(block, state);
        busy.store(0, std::memory_order_release);
        done_[block] = 1;
        --left;
        trained = true;
      }
    }
    if (trained) {
      idle = 0;
    } else {
      Backoff(++idle);
    }
  }
}

}  // namespace fedrec
