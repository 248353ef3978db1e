// Minibatch SGD for biased MF as the parameter-server mode runs it (pure
// computation; the roles are coordinator/shard_server.h and worker/ps_worker.h).
//
// Item rows live on shard servers as [q_i (k floats), b_i] ("PS rows", k + 1
// floats). A worker pulls the rows of a minibatch's items, then for each
// rating (u, i, r) in order, with the pulled q_i, b_i held fixed for the
// whole minibatch:
//
//   e    = r - (mu + b_u + b_i + p_u . q_i)
//   g_i += [reg q_i - e p_u,  bias_reg b_i - e]      (p_u before its update)
//   p_u += lr (e q_i - reg p_u),   b_u += lr (e - bias_reg b_u)
//
// so user rows (local to the worker) take a plain SGD step per rating and
// item rows one step per minibatch from their summed gradient, applied by the
// shard server's optimizer (RowOptimizer). With one rating per minibatch this
// is the sequential SGD of algorithms/sgd.h.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "algorithms/sgd.h"
#include "base/thread_team.h"
#include "data/ratings.h"

namespace fedrec {

// Accumulates the minibatch's item gradients into `gradients` and steps the
// user rows. `batch[t].item` is the rating's slot: its row in `rows` and
// `gradients` (slots x (k + 1) floats each). `user_factors` (users x k) and
// `user_bias` are indexed by batch[t].user. `lr` steps the user rows;
// options.reg and options.bias_reg regularise both sides. Returns the sum of
// the pre-update squared errors.
double MfMinibatchGradients(std::span<const Rating> batch, uint32_t k, float global_mean,
                            const float* rows, float* gradients, float* user_factors,
                            float* user_bias, float lr, const SgdOptions& options);

// MfMinibatchGradients on several threads, with the same result bit for bit
// (gradients, user rows and the returned sum) for any number of threads, so
// a parameter-server model does not depend on its workers' thread counts.
// Two phases of 16 chunks each, on a ChunkTeam (base/thread_team.h: the
// caller never waits for a helper to wake up):
//   1. chunk c takes the ratings of the c-th of 16 ranges of users, in batch
//      order: it steps their user rows and keeps each rating's gradient term
//      (a user's ratings are all in one chunk, in order, so its row sees the
//      sequential updates);
//   2. chunk c adds the kept terms of its slots (groups of 16 slots dealt
//      round-robin to the chunks) to their gradient rows, in batch order: the
//      order the sequential kernel adds them in, with the same float operations.
// The squared errors are summed in batch order afterwards. Scratch (one term
// row per rating) is kept between calls, so steps do not allocate.
// Thread-safety: one caller at a time.
class MfMinibatchTeam {
 public:
  // `threads` >= 1; with one, Gradients is MfMinibatchGradients.
  explicit MfMinibatchTeam(unsigned threads);
  ~MfMinibatchTeam();
  MfMinibatchTeam(const MfMinibatchTeam&) = delete;
  MfMinibatchTeam& operator=(const MfMinibatchTeam&) = delete;

  unsigned threads() const { return team_ ? team_->size() : 1; }

  // As MfMinibatchGradients; `users` bounds batch[t].user.
  double Gradients(std::span<const Rating> batch, uint32_t users, uint32_t k, float global_mean,
                   const float* rows, float* gradients, float* user_factors, float* user_bias,
                   float lr, const SgdOptions& options);

 private:
  template <uint32_t K>
  double Run(std::span<const Rating> batch, uint32_t users, uint32_t k, float mu, const float* rows,
             float* gradients, float* user_factors, float* user_bias, float lr,
             const SgdOptions& options);

  std::unique_ptr<ChunkTeam> team_;  // null with one thread
  std::vector<float> terms_;         // batch x (k + 1)
  std::vector<float> errors_;        // batch
  // The batch's indices by user chunk and by slot chunk, with each chunk's start.
  std::vector<uint32_t> by_user_, user_start_, by_slot_, slot_start_;
};

// The server-side optimizer of a PS row: SGD (row -= lr g) or Adagrad
// (a += g^2, row -= lr g / sqrt(a), a starting at adagrad_initial).
struct RowOptimizer {
  enum class Kind : uint8_t { kSgd = 0, kAdagrad = 1 };
  Kind kind = Kind::kSgd;
  SgdOptions schedule;  // lr and lr_decay: the rate of epoch e (reg unused)
  float adagrad_initial = 0.1f;

  bool HasState() const { return kind == Kind::kAdagrad; }
  // Applies `gradient` to `row` (cols floats) with learning rate `lr`;
  // `state` is the row's accumulator (cols floats) when HasState().
  void Apply(float lr, float* row, float* state, const float* gradient, uint32_t cols) const;
};

}  // namespace fedrec
