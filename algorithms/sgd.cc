#include "algorithms/sgd.h"

#include <cassert>
#include <cstddef>

namespace fedrec {

std::string_view SgdScheduleName(SgdSchedule schedule) {
  switch (schedule) {
    case SgdSchedule::kSequential:
      return "sequential";
    case SgdSchedule::kGrid:
      return "grid";
    case SgdSchedule::kFree:
      return "free";
  }
  return "?";
}

bool ParseSgdSchedule(std::string_view name, SgdSchedule* schedule) {
  for (SgdSchedule s : {SgdSchedule::kSequential, SgdSchedule::kGrid, SgdSchedule::kFree}) {
    if (name == SgdScheduleName(s)) {
      *schedule = s;
      return true;
    }
  }
  return false;
}

float SgdOptions::LearningRate(uint64_t epoch) const {
  // Repeated multiplication in double: exact IEEE operations, so the schedule
  // is the same on every platform (std::pow need not be correctly rounded).
  double rate = lr;
  for (uint64_t e = 0; e < epoch; ++e) rate *= lr_decay;
  return static_cast<float>(rate);
}

float TrainingMean(std::span<const Rating> ratings) {
  if (ratings.empty()) return 0.0f;
  double sum = 0.0;
  for (const Rating& r : ratings) sum += r.value;
  return static_cast<float>(sum / static_cast<double>(ratings.size()));
}

// The vector helpers below are internal and inlined, never part of an ABI, so
// GCC's note that AVX-sized vector arguments change the ABI when AVX is off
// (FEDREC_NATIVE=OFF) does not apply.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace {

// N floats as one GCC/Clang vector: AVX/AVX-512 registers when the target has
// them, split into narrower registers otherwise.
template <uint32_t N>
struct VecOf;
template <>
struct VecOf<4> {
  typedef float type __attribute__((vector_size(16)));
};
template <>
struct VecOf<8> {
  typedef float type __attribute__((vector_size(32)));
};
template <>
struct VecOf<16> {
  typedef float type __attribute__((vector_size(64)));
};
template <uint32_t N>
using Vec = typename VecOf<N>::type;
using V4 = Vec<4>;

template <uint32_t N>
inline Vec<N> Load(const float* p) {
  Vec<N> v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
template <uint32_t N>
inline void Store(float* p, Vec<N> v) {
  __builtin_memcpy(p, &v, sizeof(v));
}

// Summation order of the dot product, the same in every kernel so that they
// agree bit for bit: entry j goes to partial sum j % 32, and the 32 partial sums
// are folded by halving (l += l + 16, l += l + 8, l += l + 4, l += l + 2,
// l += l + 1). The partial sums are 32 / W accumulators of W lanes taking
// W-float chunks in turn; W = 16 (one AVX-512 register) when k is a multiple
// of 16 and the target has AVX-512, else 8.
constexpr uint32_t kLanes = 32;

template <uint32_t K>
constexpr uint32_t Width() {
#ifdef __AVX512F__
  if (K != 0 && K % 16 == 0) return 16;
#endif
  return 8;
}

template <uint32_t W>
inline float Fold(const Vec<W> (&acc)[kLanes / W]) {
  Vec<8> s;
  if constexpr (W == 16) {
    const Vec<16> t = acc[0] + acc[1];
    s = __builtin_shufflevector(t, t, 0, 1, 2, 3, 4, 5, 6, 7) +
        __builtin_shufflevector(t, t, 8, 9, 10, 11, 12, 13, 14, 15);
  } else {
    s = (acc[0] + acc[2]) + (acc[1] + acc[3]);
  }
  const V4 t =
      __builtin_shufflevector(s, s, 0, 1, 2, 3) + __builtin_shufflevector(s, s, 4, 5, 6, 7);
  return (t[0] + t[2]) + (t[1] + t[3]);
}

template <uint32_t K>
inline float Dot(const float* __restrict p, const float* __restrict q, uint32_t k) {
  constexpr uint32_t W = Width<K>();
  constexpr uint32_t A = kLanes / W;
  if constexpr (K != 0) k = K;
  const uint32_t full = k / W * W;  // entries in whole chunks
  Vec<W> acc[A] = {};
  uint32_t j = 0;
  for (; j + kLanes <= full; j += kLanes) {
    for (uint32_t a = 0; a < A; ++a) acc[a] += Load<W>(p + j + a * W) * Load<W>(q + j + a * W);
  }
  for (uint32_t a = 0; a + 1 < A && j < full; ++a, j += W) {
    acc[a] += Load<W>(p + j) * Load<W>(q + j);
  }
  if (K == 0 && full < k) {  // partial chunk, zero-padded, in its lanes
    Vec<W> tp = {}, tq = {};
    for (uint32_t i = full; i < k; ++i) {
      tp[i - full] = p[i];
      tq[i - full] = q[i];
    }
    const uint32_t chunk = (full / W) % A;
    for (uint32_t a = 0; a < A; ++a) {  // not acc[chunk]: keeps acc in registers
      if (a == chunk) acc[a] += tp * tq;
    }
  }
  return Fold<W>(acc);
}

// Updates both rows over entries [0, W) from their pre-update values.
template <uint32_t W>
inline void UpdateChunk(float* __restrict p, float* __restrict q, float lr, float e, float reg) {
  const Vec<W> pj = Load<W>(p);
  const Vec<W> qj = Load<W>(q);
  Store<W>(p, pj + lr * (e * qj - reg * pj));
  Store<W>(q, qj + lr * (e * pj - reg * qj));
}

struct Hyper {
  float mu, lr, reg, bias_reg;
};

// One SGD step on (p, q, bu, bi). K: the number of factors, 0 = run time (k).
// Returns the pre-update error.
template <uint32_t K>
inline float Step(float* __restrict p, float* __restrict q, float& bu, float& bi, float value,
                  uint32_t k, const Hyper& h) {
  if constexpr (K != 0) k = K;
  constexpr uint32_t W = Width<K>();
  static_assert(K % W == 0);
  const uint32_t full = k / W * W;  // entries in whole chunks
  const float prediction = h.mu + bu + bi + Dot<K>(p, q, k);
  const float e = value - prediction;

  bu += h.lr * (e - h.bias_reg * bu);
  bi += h.lr * (e - h.bias_reg * bi);
  for (uint32_t j = 0; j < full; j += W) UpdateChunk<W>(p + j, q + j, h.lr, e, h.reg);
  if (K == 0) {
    for (uint32_t j = full; j < k; ++j) {
      const float pj = p[j];
      const float qj = q[j];
      p[j] = pj + h.lr * (e * qj - h.reg * pj);
      q[j] = qj + h.lr * (e * pj - h.reg * qj);
    }
  }
  return e;
}

// How many ratings ahead to prefetch factor rows (helps when the rows do not
// fit in L2, e.g. ML-1M-sized models; harmless otherwise).
constexpr size_t kPrefetchDistance = 8;

template <uint32_t K>
double Epoch(MfModel* model, std::span<const Rating> ratings, float lr, const SgdOptions& options) {
  const uint32_t k = K != 0 ? K : model->factors();
  assert(K == 0 || K == model->factors());
  float* const user_factors = model->user_factors();
  float* const item_factors = model->item_factors();
  float* const user_bias = model->user_bias();
  float* const item_bias = model->item_bias();
  const Hyper h{model->global_mean(), lr, options.reg, options.bias_reg};
  const size_t n = ratings.size();
  const Rating* const data = ratings.data();

  double sse = 0.0;
  for (size_t t = 0; t < n; ++t) {
    if (t + kPrefetchDistance < n) {
      const Rating& ahead = data[t + kPrefetchDistance];
      __builtin_prefetch(user_factors + static_cast<size_t>(ahead.user) * k, 1, 3);
      __builtin_prefetch(item_factors + static_cast<size_t>(ahead.item) * k, 1, 3);
    }
    const Rating& r = data[t];
    assert(r.user < model->users() && r.item < model->items());
    const float e = Step<K>(user_factors + static_cast<size_t>(r.user) * k,
                            item_factors + static_cast<size_t>(r.item) * k, user_bias[r.user],
                            item_bias[r.item], r.value, k, h);
    sse += static_cast<double>(e) * static_cast<double>(e);
  }
  return sse;
}

}  // namespace

namespace internal {

double SgdEpochGeneric(MfModel* model, std::span<const Rating> ratings, float lr,
                       const SgdOptions& options) {
  return Epoch<0>(model, ratings, lr, options);
}

}  // namespace internal

double SgdEpoch(MfModel* model, std::span<const Rating> ratings, float lr,
                const SgdOptions& options) {
  switch (model->factors()) {
    case 8:
      return Epoch<8>(model, ratings, lr, options);
    case 16:
      return Epoch<16>(model, ratings, lr, options);
    case 32:
      return Epoch<32>(model, ratings, lr, options);
    case 64:
      return Epoch<64>(model, ratings, lr, options);
    case 128:
      return Epoch<128>(model, ratings, lr, options);
    default:
      return Epoch<0>(model, ratings, lr, options);
  }
}

}  // namespace fedrec
