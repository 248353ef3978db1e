#include "algorithms/mf_minibatch.h"

#include <cmath>
#include <cstring>

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

// K = the number of factors, or 0 for a run-time k.
template <uint32_t K>
double Gradients(std::span<const Rating> batch, uint32_t k, float mu, const float* rows,
                 float* gradients, float* user_factors, float* user_bias, float lr,
                 const SgdOptions& o) {
  if constexpr (K != 0) k = K;
  const uint32_t cols = k + 1;
  const uint32_t whole = k / kWidth * kWidth;
  const float reg = o.reg, bias_reg = o.bias_reg;
  double sse = 0.0;
  for (const Rating& r : batch) {
    float* p = user_factors + static_cast<size_t>(r.user) * k;
    const float* q = rows + static_cast<size_t>(r.item) * cols;
    float* g = gradients + static_cast<size_t>(r.item) * cols;
    Lanes acc = {};
    for (uint32_t j = 0; j < whole; j += kWidth) acc += LoadLanes(p + j) * LoadLanes(q + j);
    float dot = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
    for (uint32_t j = whole; j < k; ++j) dot += p[j] * q[j];
    float& bu = user_bias[r.user];
    const float bi = q[k];
    const float e = r.value - (mu + bu + bi + dot);
    for (uint32_t j = 0; j < whole; j += kWidth) {
      const Lanes pj = LoadLanes(p + j), qj = LoadLanes(q + j);
      StoreLanes(g + j, LoadLanes(g + j) + (reg * qj - e * pj));
      StoreLanes(p + j, pj + lr * (e * qj - reg * pj));
    }
    for (uint32_t j = whole; j < k; ++j) {
      const float pj = p[j], qj = q[j];
      g[j] += reg * qj - e * pj;
      p[j] = pj + lr * (e * qj - reg * pj);
    }
    g[k] += bias_reg * bi - e;
    bu += lr * (e - bias_reg * bu);
    sse += static_cast<double>(e) * e;
  }
  return sse;
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
