#include "algorithms/parallel_sgd.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <numeric>

#include "base/random.h"

namespace fedrec {

struct ParallelSgd::EpochState {
  MfModel* model;
  float lr;
  const SgdOptions* options;
  uint64_t stream;  // the epoch's shuffle stream; block b shuffles with a stream derived from it
};

namespace {

// Each of `n` indices into one of `side` groups: a seeded permutation cut
// where the groups hold equal shares of `weight` (an index goes to the group
// its first unit of weight falls in).
std::vector<uint32_t> Groups(const std::vector<uint64_t>& weight, uint32_t side, Rng rng) {
  const size_t n = weight.size();
  std::vector<uint32_t> order(n);
  std::iota(order.begin(), order.end(), 0u);
  rng.Shuffle(std::span<uint32_t>(order));
  const uint64_t total = std::accumulate(weight.begin(), weight.end(), uint64_t{0});
  std::vector<uint32_t> group(n, 0);
  uint64_t before = 0;
  for (uint32_t index : order) {
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
  col_.resize(side_);
  pos_.resize(side_);
  if (threads_ > 1) {
    team_ = std::make_unique<ThreadTeam>(threads_);
    row_next_.resize(side_);
    col_next_.resize(side_);
    ready_.resize(blocks);
    row_busy_.resize(side_);
    col_busy_.resize(side_);
    taken_.resize(blocks);
    probe_.resize(threads_);
    for (uint32_t t = 0; t < threads_; ++t) probe_[t] = Mix64(seed ^ t);
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
  const std::vector<uint32_t> user_group =
      Groups(user_ratings, side_, Rng(seed_, 0, shard_, Purpose::kGridLayout));
  const std::vector<uint32_t> item_group =
      Groups(item_ratings, side_, Rng(seed_, 1, shard_, Purpose::kGridLayout));
  const auto block_of = [&](const Rating& r) {
    return size_t{user_group[r.user]} * side_ + item_group[r.item];
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
  std::iota(col_.begin(), col_.end(), 0u);
  Rng(state.stream).Shuffle(std::span<uint32_t>(col_));
  for (uint32_t g = 0; g < side_; ++g) pos_[col_[g]] = g;
  std::fill(sse_.begin(), sse_.end(), 0.0);

  if (!team_) {
    TrainStrata(state);
  } else {
    unclaimed_ = sse_.size();
    if (schedule_ == SgdSchedule::kGrid) {
      std::fill(row_next_.begin(), row_next_.end(), 0u);
      std::fill(col_next_.begin(), col_next_.end(), 0u);
      ready_head_ = 0;
      ready_.clear();
      for (uint32_t r = 0; r < side_; ++r) ready_.push_back(r * side_ + col_[r]);  // stratum 0
      team_->Run([&](unsigned) {
        for (int block; (block = AcquireOrdered()) >= 0;) {
          TrainBlock(static_cast<uint32_t>(block), state);
          ReleaseOrdered(static_cast<uint32_t>(block));
        }
      });
    } else {
      std::fill(taken_.begin(), taken_.end(), uint8_t{0});
      team_->Run([&](unsigned thread) {
        for (int block; (block = AcquireFree(thread)) >= 0;) {
          TrainBlock(static_cast<uint32_t>(block), state);
          ReleaseFree(static_cast<uint32_t>(block));
        }
      });
    }
  }
  double sse = 0.0;
  for (double s : sse_) sse += s;
  return sse;
}

int ParallelSgd::AcquireOrdered() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return ready_head_ < ready_.size() || unclaimed_ == 0; });
  if (ready_head_ == ready_.size()) return -1;
  const uint32_t block = ready_[ready_head_++];
  if (--unclaimed_ == 0) cv_.notify_all();  // the others may stop waiting
  return static_cast<int>(block);
}

void ParallelSgd::ReleaseOrdered(uint32_t block) {
  const uint32_t r = block / side_, c = block % side_;
  const uint32_t next = (pos_[c] + side_ - r) % side_ + 1;  // the stratum after this block's
  int woken = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    row_next_[r] = next;
    col_next_[c] = next;
    if (next < side_) {
      // This user group's next block, if its item group has caught up.
      const uint32_t c2 = col_[(r + next) % side_];
      if (col_next_[c2] == next) {
        ready_.push_back(r * side_ + c2);
        ++woken;
      }
      // This item group's next block, if its user group has caught up.
      const uint32_t r2 = (pos_[c] + side_ - next) % side_;
      if (row_next_[r2] == next) {
        ready_.push_back(r2 * side_ + c);
        ++woken;
      }
    }
  }
  if (woken == 1) cv_.notify_one();
  if (woken == 2) cv_.notify_all();
}

int ParallelSgd::AcquireFree(unsigned thread) {
  const size_t blocks = sse_.size();
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    if (unclaimed_ == 0) return -1;
    // Search from a random block, so threads spread over the grid.
    probe_[thread] = Mix64(probe_[thread]);
    const size_t start = probe_[thread] % blocks;
    for (size_t i = 0; i < blocks; ++i) {
      const size_t b = (start + i) % blocks;
      if (taken_[b] || row_busy_[b / side_] || col_busy_[b % side_]) continue;
      taken_[b] = 1;
      row_busy_[b / side_] = 1;
      col_busy_[b % side_] = 1;
      if (--unclaimed_ == 0) cv_.notify_all();
      return static_cast<int>(b);
    }
    cv_.wait(lock);
  }
}

void ParallelSgd::ReleaseFree(uint32_t block) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    row_busy_[block / side_] = 0;
    col_busy_[block % side_] = 0;
  }
  cv_.notify_all();
}

}  // namespace fedrec
