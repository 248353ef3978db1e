#include "crypto/dp.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "base/little_endian.h"
#include "base/log_gamma.h"

namespace fedrec {

const char* DpModeName(DpMode mode) {
  switch (mode) {
    case DpMode::kNone:
      return "none";
    case DpMode::kCentral:
      return "central";
    case DpMode::kDistributed:
      return "distributed";
  }
  return "?";
}

const char* DpUnitName(DpUnit unit) { return unit == DpUnit::kUser ? "user" : "site"; }

Status ValidateDpOptions(const DpOptions& o) {
  const auto fail = [](const char* key, const std::string& expected, double found) {
    return Status::InvalidArgument(
        fmt::format("configuration key {}: expected {}, found {}", key, expected, found));
  };
  if (o.mode == DpMode::kNone) return Status::Ok();
  if (!(o.clip > 0.0 && std::isfinite(o.clip))) return fail("dp.clip", "a number > 0", o.clip);
  if (!(o.target_quantile >= 0.0 && o.target_quantile < 1.0))
    return fail("dp.target_quantile", "0 (a fixed clip) or a number in (0, 1)", o.target_quantile);
  if (!(o.clip_lr > 0.0 && o.clip_lr <= 10.0))
    return fail("dp.clip_lr", "a number in (0, 10]", o.clip_lr);
  if (!(o.noise_multiplier > 0.0 && std::isfinite(o.noise_multiplier)))
    return fail("dp.noise_multiplier", "a number > 0", o.noise_multiplier);
  if (!(o.delta > 0.0 && o.delta < 1.0)) return fail("dp.delta", "a number in (0, 1)", o.delta);
  if (!(o.target_epsilon >= 0.0 && std::isfinite(o.target_epsilon)))
    return fail("dp.target_epsilon", "0 (no budget) or a number > 0", o.target_epsilon);
  if (!(o.user_fraction > 0.0 && o.user_fraction <= 1.0))
    return fail("dp.user_fraction", "a number in (0, 1]", o.user_fraction);
  if (o.user_fraction < 1.0 && o.unit != DpUnit::kUser)
    return fail("dp.user_fraction", "1 with dp.unit = \"site\" (users are sampled only as units)",
                o.user_fraction);
  if (!(o.expected_units >= 0.0 && std::isfinite(o.expected_units)))
    return fail("dp.expected_units",
                "0 (divide by the units that took part) or the expected units per round (> 0)",
                o.expected_units);
  if (o.target_quantile > 0.0 && !(o.count_stddev > o.noise_multiplier / 2.0))
    return fail("dp.count_stddev",
                fmt::format("with adaptive clipping (dp.target_quantile > 0) a number > "
                            "dp.noise_multiplier / 2 = {} (about the units per round / 20)",
                            o.noise_multiplier / 2.0),
                o.count_stddev);
  return Status::Ok();
}

double UpdateNoiseMultiplier(const DpOptions& o) {
  if (o.target_quantile <= 0.0) return o.noise_multiplier;
  const double z = o.noise_multiplier;
  const double b = 2.0 * o.count_stddev;
  return 1.0 / std::sqrt(1.0 / (z * z) - 1.0 / (b * b));
}

int64_t SamplePoisson(Rng& rng, double mu) {
  if (!(mu > 0.0)) return 0;
  if (mu < 10.0) {
    const double limit = std::exp(-mu);
    int64_t k = 0;
    double p = rng.Uniform();
    while (p > limit) {
      ++k;
      p *= rng.Uniform();
    }
    return k;
  }
  // PTRS: W. Hörmann, "The transformed rejection method for generating
  // Poisson random variables", Insurance: Mathematics and Economics 12 (1993).
  const double slam = std::sqrt(mu);
  const double loglam = std::log(mu);
  const double b = 0.931 + 2.53 * slam;
  const double a = -0.059 + 0.02483 * b;
  const double inv_alpha = 1.1239 + 1.1328 / (b - 3.4);
  const double vr = 0.9277 - 3.6224 / (b - 2.0);
  for (;;) {
    const double u = rng.Uniform() - 0.5;
    const double v = rng.Uniform();
    const double us = 0.5 - std::fabs(u);
    const double kf = std::floor((2.0 * a / us + b) * u + mu + 0.43);
    if (us >= 0.07 && v <= vr) return static_cast<int64_t>(kf);
    if (kf < 0.0 || (us < 0.013 && v > us)) continue;
    if (std::log(v) + std::log(inv_alpha) - std::log(a / (us * us) + b) <=
        -mu + kf * loglam - LogGamma(kf + 1.0))
      return static_cast<int64_t>(kf);
  }
}

int64_t SampleSkellam(Rng& rng, double mu) {
  const int64_t first = SamplePoisson(rng, mu);
  return first - SamplePoisson(rng, mu);
}

double L2Norm(std::span<const std::span<const float>> values) {
  double sum = 0.0;
  for (std::span<const float> v : values)
    for (float x : v) sum += static_cast<double>(x) * x;
  return std::sqrt(sum);
}

double ClipFactor(double norm, double clip) { return norm > clip ? clip / norm : 1.0; }

void AdaptiveClip::Update(double unclipped_share) {
  if (!adaptive()) return;
  clip_ *= std::exp(-lr_ * (unclipped_share - target_));
}

ParamBlock DpCountShape() {
  ParamBlock shape;
  shape.name = kDpCountBlock;
  shape.scope = Scope::kGlobal;
  shape.rows = 1;
  shape.cols = 1;
  return shape;
}

double SkellamShareMu(double stddev, uint32_t frac_bits, uint32_t sites) {
  if (sites == 0) return 0.0;
  const double scaled = std::ldexp(stddev, static_cast<int>(frac_bits));
  return scaled * scaled / (2.0 * static_cast<double>(sites));
}

uint32_t DpShareSites(uint32_t participants, double dropout_rate) {
  // The small slack keeps e.g. 0.05 * 20 from rounding up to 2.
  const double dropouts = std::ceil(std::max(dropout_rate, 0.0) * participants - 1e-9);
  const double left = static_cast<double>(participants) - dropouts;
  return left >= 1.0 ? static_cast<uint32_t>(left) : 1u;
}

double DistributedNoiseStddev(double stddev, uint32_t summed, uint32_t share_sites) {
  if (share_sites == 0) return 0.0;
  return stddev * std::sqrt(static_cast<double>(summed) / static_cast<double>(share_sites));
}

NoiseShareAdder::NoiseShareAdder(std::vector<Block> blocks, uint64_t stream) : stream_(stream) {
  for (const Block& block : blocks) {
    spans_.push_back(Span{length_, block});
    length_ += uint64_t{block.rows} * (uint64_t{block.cols} + 1);
  }
}

void NoiseShareAdder::Add(uint64_t begin, uint64_t end, uint32_t ring_bits, uint8_t* out) const {
  const uint32_t word = ring_bits / 8;
  for (const Span& span : spans_) {
    if (span.block.mu <= 0.0) continue;
    const uint64_t stride = uint64_t{span.block.cols} + 1;
    const uint64_t span_end = span.offset + uint64_t{span.block.rows} * stride;
    for (uint64_t e = std::max(begin, span.offset); e < std::min(end, span_end); ++e) {
      if ((e - span.offset) % stride == 0) continue;  // a row's weight
      Rng rng(SplitMix64At(stream_, e));
      const auto noise = static_cast<uint64_t>(SampleSkellam(rng, span.block.mu));
      uint8_t* at = out + (e - begin) * word;
      if (word == 4) {
        uint32_t v;
        std::memcpy(&v, at, 4);
        v = ToLittleEndian<uint32_t>(ToLittleEndian<uint32_t>(v) + static_cast<uint32_t>(noise));
        std::memcpy(at, &v, 4);
      } else {
        uint64_t v;
        std::memcpy(&v, at, 8);
        v = ToLittleEndian<uint64_t>(ToLittleEndian<uint64_t>(v) + noise);
        std::memcpy(at, &v, 8);
      }
    }
  }
}

}  // namespace fedrec
