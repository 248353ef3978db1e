// Differential privacy of federated rounds: clipping, noise and the
// parameters a round plan carries.
//
// Each round, every contributing unit (a site, dp.unit = site, or one user of
// a site, dp.unit = user) contributes its model delta clipped to L2 norm C.
// The sum over units is released with Gaussian noise of standard deviation
// z_delta * C (z the noise multiplier): either the coordinator adds it to the
// decoded sum (DpMode::kCentral: it is trusted with the clear sum), or every
// site of the round adds an integer share of it to its encoded update before
// secure aggregation masks it (DpMode::kDistributed: the coordinator never
// sees the un-noised sum). Shares are Skellam variables (the difference of
// two Poisson variables, Agarwal, Kairouz and Liu, NeurIPS 2021; Kairouz,
// Liu and Steinke, ICML 2021), which are closed under summation and live in
// the integer ring, so quantization does not undo them; the sum over n
// sites of Skellam(mu) shares is Skellam(n mu), of variance 2 n mu.
//
// The clip norm is fixed (target_quantile = 0) or adaptive (Andrew, Thakkar,
// McMahan and Ramaswamy, NeurIPS 2021): each unit also reports whether its
// delta was within C, the noised count estimates the share b of unclipped
// units, and C <- C exp(-clip_lr (b - target_quantile)). Units report b - 1/2
// (sensitivity 1/2), noised with count_stddev, so that the update noise
// multiplier becomes z_delta = (z^-2 - (2 count_stddev)^-2)^(-1/2) and the
// round as a whole is a Gaussian mechanism of multiplier z for the
// accountant (crypto/rdp_accountant.h).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/param_block.h"
#include "base/random.h"
#include "base/status.h"

namespace fedrec {

enum class DpMode : uint32_t { kNone = 0, kCentral = 1, kDistributed = 2 };
enum class DpUnit : uint32_t { kSite = 0, kUser = 1 };

const char* DpModeName(DpMode mode);
const char* DpUnitName(DpUnit unit);

// The dp.* configuration.
struct DpOptions {
  DpMode mode = DpMode::kNone;
  DpUnit unit = DpUnit::kSite;
  double clip = 0.1;             // L2 clip norm C (adaptive: its initial value)
  double target_quantile = 0.0;  // 0: fixed clip; in (0, 1): adaptive clipping
  double clip_lr = 0.2;          // adaptive: geometric step eta_C
  // Adaptive: standard deviation of the noise on the count of unclipped
  // units (Andrew et al. suggest expected units per round / 20). Must exceed
  // noise_multiplier / 2.
  double count_stddev = 0.0;
  double noise_multiplier = 1.0;  // z: noise stddev over the clip norm
  double delta = 1e-5;
  double target_epsilon = 0.0;  // > 0: stop before a round would exceed it
  // dp.unit = user: each user's chance of taking part in a round (Poisson
  // sampling at the site, stream (seed, round, user key, kDpUserSample)).
  double user_fraction = 1.0;
  // > 0: the fixed denominator of the round's average (the expected units
  // per round, as in DP-FedAvg): the coordinator divides by it instead of
  // by the units that took part, and sites report no unit count (the count
  // block's weight is 1 per site), so the number of units in a round is
  // neither learned by the coordinator nor released. 0: divide by the units.
  double expected_units = 0.0;
};

// Checks the values of `options` alone (ranges, and the count noise adaptive
// clipping needs); the error names the dp.* key, what was expected and what
// was found. Checks against other settings are the application's.
Status ValidateDpOptions(const DpOptions& options);

// The multiplier of the update noise, z_delta: z itself with a fixed clip;
// with adaptive clipping what is left of z once the count's noise is paid
// for. REQUIRES: ValidateDpOptions(options).ok().
double UpdateNoiseMultiplier(const DpOptions& options);

// Sampling.
// Poisson(mu) (mu >= 0): multiplication for mu < 10, else Hörmann's
// transformed rejection (PTRS, 1993). Exact.
int64_t SamplePoisson(Rng& rng, double mu);
// Skellam(mu, mu) = Poisson(mu) - Poisson(mu): mean 0, variance 2 mu.
int64_t SampleSkellam(Rng& rng, double mu);

// Clipping: the L2 norm of all `values` spans together, and the factor
// min(1, clip / norm) that brings it within `clip`.
double L2Norm(std::span<const std::span<const float>> values);
double ClipFactor(double norm, double clip);

// Adaptive quantile clipping: the clip norm and its geometric update from
// the estimated share of unclipped units.
class AdaptiveClip {
 public:
  AdaptiveClip(double initial, double target_quantile, double lr)
      : clip_(initial), target_(target_quantile), lr_(lr) {}
  double clip() const { return clip_; }
  void set_clip(double clip) { clip_ = clip; }
  bool adaptive() const { return target_ > 0.0; }
  // `unclipped_share`: the noised estimate of the share of units whose norm
  // was at most clip() (not clamped: noise may take it out of [0, 1]).
  void Update(double unclipped_share);

 private:
  double clip_;
  double target_;
  double lr_;
};

// The privacy parameters of one round, as its plan carries them to the sites
// (RoundPlan::dp_*).
struct DpRound {
  DpMode mode = DpMode::kNone;
  DpUnit unit = DpUnit::kSite;
  double clip = 0.0;          // C of this round
  double noise_stddev = 0.0;  // of the noise on the sum of deltas: z_delta * C
  double count_stddev = 0.0;  // of the noise on the sum of (unclipped - 1/2); 0: fixed clip
  double user_fraction = 1.0;
};

// The shape of the block a site appends to its upload under DP: one row
// whose weight is the site's contributing units and whose value is
// (unclipped units - units / 2) / units.
ParamBlock DpCountShape();
inline constexpr const char* kDpCountBlock = "dp.count";

// Distributed DP: the Skellam parameter of one site's share when `sites`
// sites add shares of a total noise of standard deviation `stddev` (real
// units) to values scaled by 2^frac_bits.
double SkellamShareMu(double stddev, uint32_t frac_bits, uint32_t sites);

// Distributed DP: how many shares a round's noise is split into when
// `participants` sites take part and the threat model lets a share
// `dropout_rate` of them drop out (security.dropout_rate, rounded up as the
// secure aggregation rounds it): participants minus those dropouts, at least
// 1. A sum over that many sites carries the whole configured noise, so up to
// that many dropouts lose none of it; a sum over more sites carries more.
uint32_t DpShareSites(uint32_t participants, double dropout_rate);

// The standard deviation of the noise in a distributed-DP sum over `summed`
// sites' shares when each site added 1 / `share_sites` of variance
// stddev^2: stddev * sqrt(summed / share_sites).
double DistributedNoiseStddev(double stddev, uint32_t summed, uint32_t share_sites);

// Adds a site's noise shares to a range of its encoded update (the layout of
// crypto/update_codec.h: per row [w, w v_0, ..., w v_{cols-1}]). The noise of
// element e is drawn from stream SplitMix64At(stream, e), so any range can
// be noised on its own, in any order, with the same result. Weights are not
// noised.
class NoiseShareAdder {
 public:
  struct Block {
    uint32_t rows = 0;
    uint32_t cols = 0;
    double mu = 0.0;  // Skellam parameter of each value element (0: none)
  };
  NoiseShareAdder() = default;
  NoiseShareAdder(std::vector<Block> blocks, uint64_t stream);
  uint64_t length() const { return length_; }
  // Adds to words [begin, end) at `out`, ring_bits / 8-byte little-endian
  // words (32 or 64 bits), modulo 2^ring_bits. Elements past length() are
  // left alone.
  void Add(uint64_t begin, uint64_t end, uint32_t ring_bits, uint8_t* out) const;

 private:
  struct Span {
    uint64_t offset = 0;
    Block block;
  };
  std::vector<Span> spans_;
  uint64_t stream_ = 0;
  uint64_t length_ = 0;
};

}  // namespace fedrec
