#include "algorithms/mf_minibatch.h"

#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

namespace fedrec {

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"  // internal inlined helpers only
#endif

namespace {

typedef float Lanes __attribute__((vector_size(32)));  // 8 floats
constexpr uint32_t kWidth = 8;

inline Lanes LoadLanes(const float* p) {
  Lanes v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void StoreLanes(float* p, Lanes v) { std::memcpy(p, &v, sizeof(v)); }

// One rating of a minibatch (see the header): returns e and steps the user
// row. kAccumulate: adds the rating's gradient term to `g` (the gradient row
// of its slot); else stores the term in `g`. Both paths compute the term with
// the same expression, so a term stored and added later (MfMinibatchTeam) has
// the bits of one added at once. K = the number of factors, or 0 for a
// run-time k.
template <uint32_t K, bool kAccumulate>
__attribute__((always_inline)) inline float RatingStep(const Rating& r, uint32_t k, float mu,
                                                       const float* rows, float* g,
                                                       float* user_factors, float* user_bias,
                                                       float lr, float reg, float bias_reg) {
  if constexpr (K != 0) k = K;
  const uint32_t cols = k + 1;
  const uint32_t whole = k / kWidth * kWidth;
  float* p = user_factors + static_cast<size_t>(r.user) * k;
  const float* q = rows + static_cast<size_t>(r.item) * cols;
  Lanes acc = {};
  for (uint32_t j = 0; j < whole; j += kWidth) acc += LoadLanes(p + j) * LoadLanes(q + j);
  float dot = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
  for (uint32_t j = whole; j < k; ++j) dot += p[j] * q[j];
  float& bu = user_bias[r.user];
  const float bi = q[k];
  const float e = r.value - (mu + bu + bi + dot);
  for (uint32_t j = 0; j < whole; j += kWidth) {
    const Lanes pj = LoadLanes(p + j), qj = LoadLanes(q + j);
    const Lanes term = reg * qj - e * pj;
    if constexpr (kAccumulate) {
      StoreLanes(g + j, LoadLanes(g + j) + term);
    } else {
      StoreLanes(g + j, term);
    }
    StoreLanes(p + j, pj + lr * (e * qj - reg * pj));
  }
  for (uint32_t j = whole; j < k; ++j) {
    const float pj = p[j], qj = q[j];
    const float term = reg * qj - e * pj;
    if constexpr (kAccumulate) {
      g[j] += term;
    } else {
      g[j] = term;
    }
    p[j] = pj + lr * (e * qj - reg * pj);
  }
  const float bias_term = bias_reg * bi - e;
  if constexpr (kAccumulate) {
    g[k] += bias_term;
  } else {
    g[k] = bias_term;
  }
  bu += lr * (e - bias_reg * bu);
  return e;
}

template <uint32_t K>
double Gradients(std::span<const Rating> batch, uint32_t k, float mu, const float* rows,
                 float* gradients, float* user_factors, float* user_bias, float lr,
                 const SgdOptions& o) {
  if constexpr (K != 0) k = K;
  const uint32_t cols = k + 1;
  double sse = 0.0;
  for (const Rating& r : batch) {
    float* g = gradients + static_cast<size_t>(r.item) * cols;
    const float e =
        RatingStep<K, true>(r, k, mu, rows, g, user_factors, user_bias, lr, o.reg, o.bias_reg);
    sse += static_cast<double>(e) * e;
  }
  return sse;
}

// MfMinibatchTeam's first phase, one chunk: the ratings `order` (indices
// into batch, ascending: its users' ratings in batch order); rating t's term
// into terms[t (k + 1)], its error into errors[t].
template <uint32_t K>
void UserPhase(std::span<const Rating> batch, std::span<const uint32_t> order, uint32_t k, float mu,
               const float* rows, float* terms, float* errors, float* user_factors,
               float* user_bias, float lr, const SgdOptions& o) {
  if constexpr (K != 0) k = K;
  const uint32_t cols = k + 1;
  for (uint32_t t : order) {
    errors[t] = RatingStep<K, false>(batch[t], k, mu, rows, terms + size_t{t} * cols, user_factors,
                                     user_bias, lr, o.reg, o.bias_reg);
  }
}

// The second phase, one chunk: adds the terms of the ratings `order` (its
// slots' ratings, in batch order: the order MfMinibatchGradients adds them
// in) into their slots' gradient rows.
template <uint32_t K>
void SlotPhase(std::span<const Rating> batch, std::span<const uint32_t> order, uint32_t k,
               const float* terms, float* gradients) {
  if constexpr (K != 0) k = K;
  const uint32_t cols = k + 1;
  const uint32_t whole = k / kWidth * kWidth;
  for (uint32_t t : order) {
    const float* term = terms + size_t{t} * cols;
    float* g = gradients + static_cast<size_t>(batch[t].item) * cols;
    for (uint32_t j = 0; j < whole; j += kWidth)
      StoreLanes(g + j, LoadLanes(g + j) + LoadLanes(term + j));
    for (uint32_t j = whole; j < cols; ++j) g[j] += term[j];
  }
}

}  // namespace

double MfMinibatchGradients(std::span<const Rating> batch, uint32_t k, float global_mean,
                            const float* rows, float* gradients, float* user_factors,
                            float* user_bias, float lr, const SgdOptions& options) {
  switch (k) {
    case 16:
      return Gradients<16>(batch, k, global_mean, rows, gradients, user_factors, user_bias, lr,
                           options);
    case 32:
      return Gradients<32>(batch, k, global_mean, rows, gradients, user_factors, user_bias, lr,
                           options);
    case 64:
      return Gradients<64>(batch, k, global_mean, rows, gradients, user_factors, user_bias, lr,
                           options);
    default:
      return Gradients<0>(batch, k, global_mean, rows, gradients, user_factors, user_bias, lr,
                          options);
  }
}

namespace {

// Chunks of each phase, whatever the thread count (the model does not depend
// on it): users in kChunks ranges of indices; slots in groups of kSlotGroup
// (neighbouring gradient rows, so threads share few cache lines) dealt
// round-robin to kChunks chunks.
constexpr uint32_t kChunks = 16;
constexpr uint32_t kSlotGroup = 16;

// Sorts 0..batch-1 into `chunks` buckets (stable) by chunk_of(t) into
// `order`, bucket c being order[start[c], start[c + 1]).
template <typename ChunkOf>
void Bucket(size_t n, ChunkOf chunk_of, std::vector<uint32_t>* order,
            std::vector<uint32_t>* start) {
  start->assign(kChunks + 1, 0);
  for (size_t t = 0; t < n; ++t) ++(*start)[chunk_of(t) + 1];
  for (uint32_t c = 0; c < kChunks; ++c) (*start)[c + 1] += (*start)[c];
  order->resize(n);
  std::vector<uint32_t>& next = *start;  // advanced while filling, then restored
  for (size_t t = 0; t < n; ++t) (*order)[next[chunk_of(t)]++] = static_cast<uint32_t>(t);
  for (uint32_t c = kChunks; c > 0; --c) next[c] = next[c - 1];
  next[0] = 0;
}

}  // namespace

MfMinibatchTeam::MfMinibatchTeam(unsigned threads) {
  if (threads > 1) team_ = std::make_unique<ChunkTeam>(threads);
}

MfMinibatchTeam::~MfMinibatchTeam() = default;

template <uint32_t K>
double MfMinibatchTeam::Run(std::span<const Rating> batch, uint32_t users, uint32_t k, float mu,
                            const float* rows, float* gradients, float* user_factors,
                            float* user_bias, float lr, const SgdOptions& options) {
  const size_t n = batch.size();
  terms_.resize(n * (k + 1));
  errors_.resize(n);
  Bucket(
      n, [&](size_t t) { return static_cast<uint32_t>(uint64_t{batch[t].user} * kChunks / users); },
      &by_user_, &user_start_);
  Bucket(
      n, [&](size_t t) { return batch[t].item / kSlotGroup % kChunks; }, &by_slot_, &slot_start_);
  float* terms = terms_.data();
  float* errors = errors_.data();
  team_->Run(2, kChunks, [&](unsigned phase, unsigned chunk) {
    if (phase == 0) {
      const std::span<const uint32_t> order(by_user_.data() + user_start_[chunk],
                                            user_start_[chunk + 1] - user_start_[chunk]);
      UserPhase<K>(batch, order, k, mu, rows, terms, errors, user_factors, user_bias, lr, options);
    } else {
      const std::span<const uint32_t> order(by_slot_.data() + slot_start_[chunk],
                                            slot_start_[chunk + 1] - slot_start_[chunk]);
      SlotPhase<K>(batch, order, k, terms, gradients);
    }
  });
  double sse = 0.0;
  for (size_t t = 0; t < n; ++t) sse += static_cast<double>(errors[t]) * errors[t];
  return sse;
}

double MfMinibatchTeam::Gradients(std::span<const Rating> batch, uint32_t users, uint32_t k,
                                  float global_mean, const float* rows, float* gradients,
                                  float* user_factors, float* user_bias, float lr,
                                  const SgdOptions& options) {
  if (!team_ || batch.empty()) {
    return MfMinibatchGradients(batch, k, global_mean, rows, gradients, user_factors, user_bias, lr,
                                options);
  }
  switch (k) {
    case 16:
      return Run<16>(batch, users, k, global_mean, rows, gradients, user_factors, user_bias, lr,
                     options);
    case 32:
      return Run<32>(batch, users, k, global_mean, rows, gradients, user_factors, user_bias, lr,
                     options);
    case 64:
      return Run<64>(batch, users, k, global_mean, rows, gradients, user_factors, user_bias, lr,
                     options);
    default:
      return Run<0>(batch, users, k, global_mean, rows, gradients, user_factors, user_bias, lr,
                    options);
  }
}

void RowOptimizer::Apply(float lr, float* row, float* state, const float* gradient,
                         uint32_t cols) const {
  if (kind == Kind::kSgd) {
    for (uint32_t j = 0; j < cols; ++j) row[j] -= lr * gradient[j];
    return;
  }
  for (uint32_t j = 0; j < cols; ++j) {
    const float g = gradient[j];
    state[j] += g * g;
    row[j] -= lr * g / std::sqrt(state[j]);
  }
}

}  // namespace fedrec
