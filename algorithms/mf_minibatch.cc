#include "algorithms/mf_minibatch.h"

#include <cmath>
#include <cstring>
#include <memory>

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

// MfMinibatchTeam's first phase on one thread: the ratings of users
// [user_begin, user_end), in batch order; rating t's term into
// terms[t (k + 1)], its error into errors[t].
template <uint32_t K>
void UserPhase(std::span<const Rating> batch, uint32_t k, float mu, const float* rows, float* terms,
               float* errors, float* user_factors, float* user_bias, float lr, const SgdOptions& o,
               uint32_t user_begin, uint32_t user_end) {
  if constexpr (K != 0) k = K;
  const uint32_t cols = k + 1;
  for (size_t t = 0; t < batch.size(); ++t) {
    const Rating& r = batch[t];
    if (r.user < user_begin || r.user >= user_end) continue;
    errors[t] = RatingStep<K, false>(r, k, mu, rows, terms + t * cols, user_factors, user_bias, lr,
                                     o.reg, o.bias_reg);
  }
}

// The second phase on one thread: adds the terms of the slots whose group of
// kSlotGroup slots is `group` mod `groups` into their gradient rows, in batch
// order (the order MfMinibatchGradients adds them in).
constexpr uint32_t kSlotGroup = 16;
template <uint32_t K>
void SlotPhase(std::span<const Rating> batch, uint32_t k, const float* terms, float* gradients,
               uint32_t group, uint32_t groups) {
  if constexpr (K != 0) k = K;
  const uint32_t cols = k + 1;
  const uint32_t whole = k / kWidth * kWidth;
  for (size_t t = 0; t < batch.size(); ++t) {
    const uint32_t slot = batch[t].item;
    if (slot / kSlotGroup % groups != group) continue;
    const float* term = terms + t * cols;
    float* g = gradients + static_cast<size_t>(slot) * cols;
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

template <uint32_t K>
double TeamGradients(ThreadTeam& team, std::span<const Rating> batch, uint32_t users, uint32_t k,
                     float mu, const float* rows, float* gradients, float* user_factors,
                     float* user_bias, float lr, const SgdOptions& options, float* terms,
                     float* errors) {
  const unsigned threads = team.size();
  team.Run([&](unsigned t) {
    UserPhase<K>(batch, k, mu, rows, terms, errors, user_factors, user_bias, lr, options,
                 static_cast<uint32_t>(uint64_t{users} * t / threads),
                 static_cast<uint32_t>(uint64_t{users} * (t + 1) / threads));
  });
  team.Run([&](unsigned t) { SlotPhase<K>(batch, k, terms, gradients, t, threads); });
  double sse = 0.0;
  for (size_t t = 0; t < batch.size(); ++t) sse += static_cast<double>(errors[t]) * errors[t];
  return sse;
}

}  // namespace

MfMinibatchTeam::MfMinibatchTeam(unsigned threads) {
  if (threads > 1) team_ = std::make_unique<ThreadTeam>(threads);
}

MfMinibatchTeam::~MfMinibatchTeam() = default;

double MfMinibatchTeam::Gradients(std::span<const Rating> batch, uint32_t users, uint32_t k,
                                  float global_mean, const float* rows, float* gradients,
                                  float* user_factors, float* user_bias, float lr,
                                  const SgdOptions& options) {
  if (!team_) {
    return MfMinibatchGradients(batch, k, global_mean, rows, gradients, user_factors, user_bias, lr,
                                options);
  }
  terms_.resize(batch.size() * (k + 1));
  errors_.resize(batch.size());
  switch (k) {
    case 16:
      return TeamGradients<16>(*team_, batch, users, k, global_mean, rows, gradients, user_factors,
                               user_bias, lr, options, terms_.data(), errors_.data());
    case 32:
      return TeamGradients<32>(*team_, batch, users, k, global_mean, rows, gradients, user_factors,
                               user_bias, lr, options, terms_.data(), errors_.data());
    case 64:
      return TeamGradients<64>(*team_, batch, users, k, global_mean, rows, gradients, user_factors,
                               user_bias, lr, options, terms_.data(), errors_.data());
    default:
      return TeamGradients<0>(*team_, batch, users, k, global_mean, rows, gradients, user_factors,
                              user_bias, lr, options, terms_.data(), errors_.data());
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
