#include "protocol/update_codec.h"

#include <algorithm>
#include <cmath>
#include <span>
#include <string>
#include <vector>

#include "base/little_endian.h"
#include "base/random.h"

namespace fedrec {

namespace {

constexpr double kTwoTo63 = 9223372036854775808.0;

uint64_t RingMask(uint32_t ring_bits) {
  return ring_bits == 64 ? ~uint64_t{0} : (uint64_t{1} << ring_bits) - 1;
}

// Signed value of a ring element.
int64_t Signed(uint64_t element, uint32_t ring_bits) {
  if (ring_bits == 64) return static_cast<int64_t>(element);
  return static_cast<int64_t>(static_cast<int32_t>(static_cast<uint32_t>(element)));
}

// Largest magnitude one site's element can take.
double ElementBound(const FixedPointFormat& format) {
  const double scaled = static_cast<double>(format.max_weight) * format.clip *
                        std::ldexp(1.0, static_cast<int>(format.frac_bits));
  return std::max(static_cast<double>(format.max_weight), scaled) + 1.0;
}

}  // namespace

FixedPointFormat FormatOf(const RoundPlan& plan) {
  FixedPointFormat format;
  format.ring_bits = plan.ring_bits;
  format.frac_bits = plan.frac_bits;
  format.clip = plan.clip;
  format.max_weight = plan.max_weight;
  return format;
}

void SetFormat(const FixedPointFormat& format, RoundPlan* plan) {
  plan->ring_bits = format.ring_bits;
  plan->frac_bits = format.frac_bits;
  plan->clip = format.clip;
  plan->max_weight = format.max_weight;
}

Result<uint32_t> ChooseRingBits(uint32_t sites, const FixedPointFormat& format) {
  if (!(format.clip > 0.0f) || format.max_weight == 0 || format.frac_bits > 40) {
    return Status::InvalidArgument(
        "fixed-point format: expected clip > 0, max_weight >= 1 and frac_bits <= 40, found clip " +
        std::to_string(format.clip) + ", max_weight " + std::to_string(format.max_weight) +
        ", frac_bits " + std::to_string(format.frac_bits));
  }
  const double bound = static_cast<double>(std::max<uint32_t>(sites, 1)) * ElementBound(format);
  if (bound < std::ldexp(1.0, 31)) return 32u;
  if (bound < kTwoTo63) return 64u;
  return Status::InvalidArgument(
      "the sum of " + std::to_string(sites) + " fixed-point updates can reach " +
      std::to_string(bound) +
      ", which does not fit Z_2^64: lower security.quantization_bits, security.clip or "
      "security.max_weight");
}

uint32_t SignedValueBits(const FixedPointFormat& format) {
  return static_cast<uint32_t>(std::ceil(std::log2(ElementBound(format)))) + 1;
}

uint64_t EncodedLength(const std::vector<ParamBlock>& global) {
  uint64_t length = 0;
  for (const ParamBlock& block : global) length += uint64_t{block.rows} * (block.cols + 1);
  return length;
}

namespace {

// Quantizes one row whose first value is element `first` of the dense form,
// writing little-endian Words at `out`:
// q[c] = floor(x_c) + (1 with probability frac(x_c)) with
// x_c = weight * clamp(values[c]) * 2^frac_bits, unbiased to within 2^-32.
// With t = x truncated toward zero and D = (x - t) * 2^32 truncated
// (|D| < 2^32), q = t + floor((D + u) / 2^32) for u uniform in [0, 2^32):
// E[q] = t + D / 2^32. Element i's u is the high half of draw i of the
// SplitMix64 stream `stream`. Integer arithmetic after the scaling and no
// dependence between elements, so the loop vectorizes (std::floor and
// floating-point comparisons keep GCC from it under -ftrapping-math).
template <typename Word>
void QuantizeRow(const float* values, uint32_t cols, double weight, double clip, double scale,
                 uint64_t stream, uint64_t first, uint8_t* out) {
  constexpr double kTwoTo32 = 4294967296.0;
  for (uint32_t c = 0; c < cols; ++c) {
    const double v = double{values[c]};
    const double x = weight * (v < -clip ? -clip : (v > clip ? clip : v)) * scale;
    const int64_t t = static_cast<int64_t>(x);
    const int64_t d = static_cast<int64_t>((x - static_cast<double>(t)) * kTwoTo32);
    const int64_t u = static_cast<int64_t>(SplitMix64At(stream, first + c) >> 32);
    PutLe<Word>(out + sizeof(Word) * c, static_cast<Word>(t + ((d + u) >> 32)));
  }
}

// Writes every trained row of `update` as little-endian Words into `out`
// (the dense form's elements, truncated to the Word); the elements of
// untrained rows are left as they are (zero).
template <typename Word>
Status EncodeRows(const std::vector<ParamBlock>& global, const std::vector<BlockUpdate>& update,
                  const FixedPointFormat& format, uint64_t seed, uint32_t round, uint32_t site,
                  uint8_t* out) {
  if (update.size() != global.size()) {
    return Status::InvalidArgument("update has " + std::to_string(update.size()) +
                                   " blocks, the global model " + std::to_string(global.size()));
  }
  const uint64_t stream = DeriveSeed(seed, round, site, Purpose::kQuantize);
  const double scale = std::ldexp(1.0, static_cast<int>(format.frac_bits));
  const double max_weight = static_cast<double>(format.max_weight);
  uint64_t offset = 0;
  for (size_t b = 0; b < global.size(); ++b) {
    const ParamBlock& shape = global[b];
    const BlockUpdate& block = update[b];
    if (block.name != shape.name || block.cols != shape.cols ||
        block.weights.size() != block.rows.size() ||
        block.values.size() != block.rows.size() * size_t{block.cols}) {
      return Status::InvalidArgument("update block " + std::to_string(b) + " '" + block.name +
                                     "' does not match global block '" + shape.name + "' (" +
                                     std::to_string(shape.rows) + "x" + std::to_string(shape.cols) +
                                     ")");
    }
    const uint32_t stride = shape.cols + 1;
    for (size_t i = 0; i < block.rows.size(); ++i) {
      const uint32_t row = block.rows[i];
      if (row >= shape.rows) {
        return Status::InvalidArgument("update block '" + block.name + "' row " +
                                       std::to_string(row) + " is outside the model's " +
                                       std::to_string(shape.rows) + " rows");
      }
      const double weight = std::min(std::floor(double{block.weights[i]}), max_weight);
      const uint64_t at = offset + uint64_t{row} * stride;
      PutLe<Word>(out + sizeof(Word) * at, static_cast<Word>(static_cast<int64_t>(weight)));
      QuantizeRow<Word>(block.values.data() + i * block.cols, block.cols, weight,
                        double{format.clip}, scale, stream, at + 1, out + sizeof(Word) * (at + 1));
    }
    offset += uint64_t{shape.rows} * stride;
  }
  return Status::Ok();
}

}  // namespace

Result<std::vector<uint64_t>> EncodeUpdate(const std::vector<ParamBlock>& global,
                                           const std::vector<BlockUpdate>& update,
                                           const FixedPointFormat& format, uint64_t seed,
                                           uint32_t round, uint32_t site) {
  std::vector<uint64_t> out(EncodedLength(global), 0);
  FEDREC_RETURN_IF_ERROR(EncodeRows<uint64_t>(global, update, format, seed, round, site,
                                              reinterpret_cast<uint8_t*>(out.data())));
  const uint64_t mask = RingMask(format.ring_bits);
  for (uint64_t& x : out) x = ToLittleEndian(x) & mask;  // to native words, reduced
  return out;
}

Result<std::vector<uint8_t>> EncodeUpdateWords(const std::vector<ParamBlock>& global,
                                               const std::vector<BlockUpdate>& update,
                                               const FixedPointFormat& format, uint64_t seed,
                                               uint32_t round, uint32_t site) {
  const size_t width = format.ring_bits / 8;
  std::vector<uint8_t> out(EncodedLength(global) * width, 0);
  const Status encoded =
      format.ring_bits == 32
          ? EncodeRows<uint32_t>(global, update, format, seed, round, site, out.data())
          : EncodeRows<uint64_t>(global, update, format, seed, round, site, out.data());
  if (!encoded.ok()) return encoded;
  return out;
}

Result<DecodedSums> DecodeSum(const std::vector<ParamBlock>& global, std::span<const uint64_t> sum,
                              const FixedPointFormat& format) {
  if (sum.size() != EncodedLength(global)) {
    return Status::InvalidArgument("aggregated vector has " + std::to_string(sum.size()) +
                                   " elements, the model's dense form " +
                                   std::to_string(EncodedLength(global)));
  }
  DecodedSums out;
  const double inv_scale = std::ldexp(1.0, -static_cast<int>(format.frac_bits));
  uint64_t offset = 0;
  for (const ParamBlock& shape : global) {
    auto& weights = out.row_weight.emplace_back(shape.rows, 0.0);
    auto& weighted = out.weighted_sum.emplace_back(size_t{shape.rows} * shape.cols, 0.0);
    const uint32_t stride = shape.cols + 1;
    for (uint32_t r = 0; r < shape.rows; ++r) {
      const uint64_t* src = sum.data() + offset + uint64_t{r} * stride;
      weights[r] = static_cast<double>(Signed(src[0], format.ring_bits));
      if (weights[r] < 0) {
        return Status::Corruption("aggregated weight of block '" + shape.name + "' row " +
                                  std::to_string(r) + " is negative (" +
                                  std::to_string(weights[r]) +
                                  "): the sum wrapped or an input was malformed");
      }
      for (uint32_t c = 0; c < shape.cols; ++c) {
        weighted[size_t{r} * shape.cols + c] =
            static_cast<double>(Signed(src[1 + c], format.ring_bits)) * inv_scale;
      }
    }
    offset += uint64_t{shape.rows} * stride;
  }
  return out;
}

}  // namespace fedrec
