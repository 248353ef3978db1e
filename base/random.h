// Deterministic random streams.
//
// Every random stream in fedrec is derived from (seed, round, site, purpose),
// so the same config and seed give the same model whatever the thread count,
// the arrival order of messages or the transport. Streams never depend on the
// standard library's distributions (which differ between implementations).
//
// Cryptographic randomness (keys, mask seeds) never comes from here: it comes
// from the OS CSPRNG in protocol/.
#pragma once

#include <cmath>
#include <cstdint>
#include <span>
#include <utility>

namespace fedrec {

// What a stream is used for; part of the derivation so that two purposes in the
// same (round, site) never share a stream. Append only: values are persistent.
enum class Purpose : uint64_t {
  kSynthetic = 1,      // synthetic data generation
  kSplit = 2,          // train/test splitting
  kPartition = 3,      // assigning users to sites
  kInitItem = 4,       // initial item parameters (site = item index)
  kInitUser = 5,       // initial user parameters (site = global user index)
  kShuffle = 6,        // per-epoch shuffling (round = global epoch index)
  kSample = 7,         // site sampling by the coordinator
  kStrategy = 8,       // strategy-specific randomness
  kDropout = 9,        // simulated faults
  kQuantize = 10,      // stochastic rounding of updates to fixed point
  kNegative = 11,      // negative sampling of implicit-feedback models (round = global epoch)
  kSimProfile = 12,    // simulated site speed and link profiles
  kAvailability = 13,  // simulated site availability (round = federated round)
  kEvalSample = 14,    // the sites asked to evaluate (round = federated round)
  kLocalEpochs = 15,   // heterogeneous local epochs (round = federated round)
  kEvalNegative = 16,  // click negatives of evaluation (round = the user's stable key)
  kDpNoise = 17,       // differential-privacy noise (site 0: the coordinator's central noise)
  kDpUserSample = 18,  // users taking part in a round under user-level DP (site = user key)
  kDpUserOrder = 19,   // a user's rating order in per-user training (round = global epoch)
  kFaultDropout = 20,  // injected dropouts (sim/faults.h; round = federated round)
  kFaultFrame = 21,    // injected frame loss, duplicates and damage (sim/faults.h)
  kUser = 100,         // first value free for plug-ins
};

// SplitMix64 finalizer: a bijective 64-bit mix.
constexpr uint64_t Mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Draw i of the SplitMix64 stream whose state starts at `state`, computed
// directly: a counter-based generator, so loops over elements draw without a
// dependence between iterations (and vectorize).
constexpr uint64_t SplitMix64At(uint64_t state, uint64_t i) {
  return Mix64(state + i * 0x9e3779b97f4a7c15ULL);
}

// "lowbias32" finalizer (Wellons, hash prospector): a bijective 32-bit mix.
constexpr uint32_t Mix32(uint32_t x) {
  x = (x ^ (x >> 16)) * 0x7feb352dU;
  x = (x ^ (x >> 15)) * 0x846ca68bU;
  return x ^ (x >> 16);
}

// Draw i of a counter-based stream of 32-bit values keyed by `stream`: each
// draw, over keys, is uniform; draws 2^32 apart repeat. Only 32-bit lane
// arithmetic, so a loop draws sixteen to an AVX-512 register where
// SplitMix64At draws eight with three 64-bit multiplies each.
constexpr uint32_t Draw32At(uint64_t stream, uint64_t i) {
  return Mix32(static_cast<uint32_t>(i) * 0x9e3779b9U + static_cast<uint32_t>(stream >> 32)) ^
         static_cast<uint32_t>(stream);
}

// Seed of the stream for (seed, round, site, purpose).
constexpr uint64_t DeriveSeed(uint64_t seed, uint64_t round, uint64_t site, Purpose purpose) {
  uint64_t h = Mix64(seed ^ 0x6665647265632121ULL);  // "fedrec!!"
  h = Mix64(h ^ static_cast<uint64_t>(purpose));
  h = Mix64(h ^ round);
  h = Mix64(h ^ site);
  return h;
}

// xoshiro256++ generator. Not thread-safe: one object per stream.
class Rng {
 public:
  explicit Rng(uint64_t seed) { Reseed(seed); }
  Rng(uint64_t seed, uint64_t round, uint64_t site, Purpose purpose)
      : Rng(DeriveSeed(seed, round, site, purpose)) {}

  void Reseed(uint64_t seed) {
    uint64_t x = seed;
    for (auto& s : s_) {
      x += 0x9e3779b97f4a7c15ULL;
      s = Mix64(x);
    }
    has_spare_ = false;
  }

  uint64_t Next() {
    const uint64_t result = Rotl(s_[0] + s_[3], 23) + s_[0];
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = Rotl(s_[3], 45);
    return result;
  }

  // Uniform in [0, 1) with 53 random bits.
  double Uniform() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

  // Uniform integer in [0, n). REQUIRES: n > 0. Lemire's nearly-divisionless method.
  uint64_t Below(uint64_t n) {
    unsigned __int128 m = static_cast<unsigned __int128>(Next()) * n;
    uint64_t low = static_cast<uint64_t>(m);
    if (low < n) {
      const uint64_t threshold = (0 - n) % n;
      while (low < threshold) {
        m = static_cast<unsigned __int128>(Next()) * n;
        low = static_cast<uint64_t>(m);
      }
    }
    return static_cast<uint64_t>(m >> 64);
  }

  // Standard normal (Marsaglia polar method; deterministic across platforms
  // given IEEE doubles and a correctly rounded std::log/std::sqrt).
  double Normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    double u, v, s;
    do {
      u = 2.0 * Uniform() - 1.0;
      v = 2.0 * Uniform() - 1.0;
      s = u * u + v * v;
    } while (s >= 1.0 || s == 0.0);
    const double f = std::sqrt(-2.0 * std::log(s) / s);
    spare_ = v * f;
    has_spare_ = true;
    return u * f;
  }

  // Gamma(shape, 1) by Marsaglia-Tsang; shape > 0.
  double Gamma(double shape) {
    if (shape < 1.0) {
      const double u = Uniform();
      return Gamma(shape + 1.0) * std::pow(u > 0 ? u : 0x1.0p-53, 1.0 / shape);
    }
    const double d = shape - 1.0 / 3.0;
    const double c = 1.0 / std::sqrt(9.0 * d);
    for (;;) {
      double x, v;
      do {
        x = Normal();
        v = 1.0 + c * x;
      } while (v <= 0.0);
      v = v * v * v;
      const double u = Uniform();
      if (u < 1.0 - 0.0331 * x * x * x * x) return d * v;
      if (std::log(u) < 0.5 * x * x + d * (1.0 - v + std::log(v))) return d * v;
    }
  }

  // Fisher-Yates shuffle.
  template <typename T>
  void Shuffle(std::span<T> items) {
    for (size_t i = items.size(); i > 1; --i) {
      const size_t j = static_cast<size_t>(Below(i));
      using std::swap;
      swap(items[i - 1], items[j]);
    }
  }

 private:
  static uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
  double spare_ = 0.0;
  bool has_spare_ = false;
};

}  // namespace fedrec
