#include "crypto/update_codec.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>
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

Quantizer::Quantizer(const FixedPointFormat& format, uint64_t seed, uint32_t round, uint32_t site)
    : clip(double{format.clip}),
      scale(std::ldexp(1.0, static_cast<int>(format.frac_bits))),
      stream(DeriveSeed(seed, round, site, Purpose::kQuantize)),
      wide(ElementBound(format) >= 2147483648.0) {}

namespace {

// Quantizes one row whose first value is element `first` of the dense form,
// writing little-endian Words at `out`:
// q[c] = floor(x_c) + (1 with probability frac(x_c)) with
// x_c = weight * clamp(values[c]) * 2^frac_bits, unbiased to within 2^-32.
// With X = x * 2^32 truncated toward zero, q = floor((X + u) / 2^32) for u
// uniform in [0, 2^32): E[q] = X / 2^32. Element i's u is
// Draw32At(stream, i). `wide` formats, where |x| can reach 2^31 and X would
// not fit 64 bits, split X as t * 2^32 + D (t = x truncated, D = (x - t) *
// 2^32 truncated), which gives the same q. Integer arithmetic after the
// scaling and no dependence between elements, so the loop vectorizes
// (std::floor and floating-point comparisons keep GCC from it under
// -ftrapping-math).
template <typename Word, bool wide>
void QuantizeRow(const float* values, uint32_t cols, double weight, const Quantizer& quantizer,
                 uint64_t first, uint8_t* out) {
  constexpr double kTwoTo32 = 4294967296.0;
  const double clip = quantizer.clip;
  const uint64_t stream = quantizer.stream;
  // Exact: the weight is an integer and the rest powers of 2.
  const double factor = wide ? weight * quantizer.scale : weight * quantizer.scale * kTwoTo32;
  for (uint32_t c = 0; c < cols; ++c) {
    const double v = double{values[c]};
    const double x = factor * (v < -clip ? -clip : (v > clip ? clip : v));
    const int64_t u = Draw32At(stream, first + c);
    int64_t q;
    if constexpr (wide) {
      const int64_t t = static_cast<int64_t>(x);
      const int64_t d = static_cast<int64_t>((x - static_cast<double>(t)) * kTwoTo32);
      q = t + ((d + u) >> 32);
    } else {
      q = (static_cast<int64_t>(x) + u) >> 32;
    }
    PutLe<Word>(out + sizeof(Word) * c, static_cast<Word>(q));
  }
}

// Writes elements [from, to) of one row of the dense form (element 0 is the
// weight, element 1 + c the weighted value c), the row's element 0 being
// element `at` of the dense form; `out` receives element `from`.
template <typename Word>
void EncodeRowPart(const float* values, double weight, uint32_t from, uint32_t to,
                   const Quantizer& quantizer, uint64_t at, uint8_t* out) {
  if (from == 0 && to > 0) {
    PutLe<Word>(out, static_cast<Word>(static_cast<int64_t>(weight)));
    out += sizeof(Word);
    from = 1;
  }
  if (from >= to) return;
  if (quantizer.wide) {
    QuantizeRow<Word, true>(values + (from - 1), to - from, weight, quantizer, at + from, out);
  } else {
    QuantizeRow<Word, false>(values + (from - 1), to - from, weight, quantizer, at + from, out);
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
  const Quantizer quantizer(format, seed, round, site);
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
      EncodeRowPart<Word>(block.values.data() + i * block.cols, weight, 0, stride, quantizer, at,
                          out + sizeof(Word) * at);
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

Result<RangeEncoder> RangeEncoder::Create(const std::vector<ParamBlock>& global,
                                          std::vector<DenseBlockView> blocks,
                                          const FixedPointFormat& format, uint64_t seed,
                                          uint32_t round, uint32_t site) {
  if (format.ring_bits != 32 && format.ring_bits != 64) {
    return Status::InvalidArgument("fixed-point format: expected a ring of 32 or 64 bits, found " +
                                   std::to_string(format.ring_bits));
  }
  if (blocks.size() != global.size()) {
    return Status::InvalidArgument("update has " + std::to_string(blocks.size()) +
                                   " blocks, the global model " + std::to_string(global.size()));
  }
  RangeEncoder encoder;
  encoder.format_ = format;
  encoder.quantizer_ = Quantizer(format, seed, round, site);
  for (size_t b = 0; b < global.size(); ++b) {
    const ParamBlock& shape = global[b];
    const DenseBlockView& view = blocks[b];
    if (view.weights.size() != shape.rows ||
        view.values.size() != size_t{shape.rows} * shape.cols) {
      return Status::InvalidArgument(
          "update block " + std::to_string(b) + " has " + std::to_string(view.weights.size()) +
          " row weights and " + std::to_string(view.values.size()) + " values; global block '" +
          shape.name + "' is " + std::to_string(shape.rows) + "x" + std::to_string(shape.cols));
    }
    encoder.blocks_.push_back(Block{encoder.length_, shape.rows, shape.cols, view});
    encoder.length_ += uint64_t{shape.rows} * (shape.cols + 1);
  }
  return encoder;
}

template <typename Word>
void RangeEncoder::EncodeWords(uint64_t begin, uint64_t end, uint8_t* out) const {
  const double max_weight = static_cast<double>(format_.max_weight);
  if (begin >= end) return;
  // The block, row and element within the row of `begin`; one division a call.
  size_t b = 0;
  while (begin >= blocks_[b].offset + uint64_t{blocks_[b].rows} * (blocks_[b].cols + 1)) ++b;
  uint64_t local = begin - blocks_[b].offset;
  auto row = static_cast<uint32_t>(local / (blocks_[b].cols + 1));
  auto from = static_cast<uint32_t>(local % (blocks_[b].cols + 1));
  for (uint64_t left = end - begin; left > 0;) {
    const Block& block = blocks_[b];
    const uint32_t stride = block.cols + 1;
    uint64_t at = block.offset + uint64_t{row} * stride;  // element 0 of the row
    for (; row < block.rows && left > 0; ++row, from = 0, at += stride) {
      const auto to = static_cast<uint32_t>(std::min<uint64_t>(stride, from + left));
      const double weight = std::min(static_cast<double>(block.view.weights[row]), max_weight);
      if (weight == 0.0) {  // an untrained row: every element is zero
        std::memset(out, 0, sizeof(Word) * (to - from));
      } else {
        EncodeRowPart<Word>(block.view.values.data() + size_t{row} * block.cols, weight, from, to,
                            quantizer_, at, out);
      }
      out += sizeof(Word) * (to - from);
      left -= to - from;
    }
    ++b;
    row = 0;
  }
}

void RangeEncoder::Encode(uint64_t begin, uint64_t end, uint8_t* out) const {
  if (format_.ring_bits == 32) {
    EncodeWords<uint32_t>(begin, end, out);
  } else {
    EncodeWords<uint64_t>(begin, end, out);
  }
  // A caller going piece by piece (MaskInPlace) asks for the next range of the
  // same length after it has masked this one: start loading its inputs, which
  // a site's trained model holds in memory, not cache, while it does.
  Prefetch(end, std::min(length_, end + (end - begin)));
}

void RangeEncoder::Prefetch(uint64_t begin, uint64_t end) const {
  // Every cache line of bytes [from, to) of `data`.
  const auto lines = [](const void* data, uint64_t from, uint64_t to) {
    constexpr uintptr_t kLine = 64;
    const uintptr_t base = reinterpret_cast<uintptr_t>(data);
    for (uintptr_t at = (base + from) & ~(kLine - 1); at < base + to; at += kLine)
      __builtin_prefetch(reinterpret_cast<const void*>(at));
  };
  for (const Block& block : blocks_) {
    const uint64_t stride = uint64_t{block.cols} + 1;
    const uint64_t block_end = block.offset + uint64_t{block.rows} * stride;
    if (end <= block.offset || begin >= block_end) continue;
    const uint64_t first = (std::max(begin, block.offset) - block.offset) / stride;
    const uint64_t last = (std::min(end, block_end) - 1 - block.offset) / stride + 1;  // exclusive
    lines(block.view.values.data(), first * block.cols * sizeof(float),
          last * block.cols * sizeof(float));
    lines(block.view.weights.data(), first * sizeof(uint32_t), last * sizeof(uint32_t));
  }
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

ParamBlock TrainLossShape() {
  ParamBlock shape;
  shape.name = "fedrec.train_loss";
  shape.scope = Scope::kGlobal;
  shape.rows = 1;
  shape.cols = 1;
  return shape;
}

std::vector<ParamBlock> WithTrainLoss(std::vector<ParamBlock> upload) {
  upload.push_back(TrainLossShape());
  return upload;
}

TrainLossRow::TrainLossRow(double loss_sum, uint64_t count, const FixedPointFormat& format) {
  if (count == 0 || !std::isfinite(loss_sum)) return;
  weight = static_cast<uint32_t>(std::min<uint64_t>(count, format.max_weight));
  value = static_cast<float>(loss_sum / static_cast<double>(count));
}

double TakeTrainLoss(DecodedSums* sums) {
  if (sums->row_weight.empty()) return 0.0;
  const double weight = sums->row_weight.back()[0];
  const double weighted = sums->weighted_sum.back()[0];
  sums->row_weight.pop_back();
  sums->weighted_sum.pop_back();
  return weight > 0 ? weighted / weight : 0.0;
}

namespace {

// Visits every element of the layout of EncodeEvalSums in order: `real(double&)`
// for fixed-point sums, `integer(auto&)` for counts. Sizes the report's vectors
// to the layout first (missing parts read as zero).
template <typename Real, typename Integer>
void VisitEvalSums(EvalReport& r, const EvalLayout& layout, Real real, Integer integer) {
  const auto group = [&](auto& g) {
    for (double* v : {&g.squared_error, &g.absolute_error, &g.precision, &g.recall, &g.ndcg,
                      &g.hit_rate, &g.f1, &g.map})
      real(*v);
    integer(g.count);
    integer(g.ranked_users);
  };
  const auto tasks = [&](std::vector<TaskEvalSums>& list) {
    list.resize(layout.binary_tasks.size());
    for (size_t t = 0; t < list.size(); ++t) {
      TaskEvalSums& k = list[t];
      if (layout.binary_tasks[t]) {
        real(k.log_loss);
        integer(k.count);
        k.positives.resize(layout.auc_bins, 0);
        k.negatives.resize(layout.auc_bins, 0);
        for (uint64_t& n : k.positives) integer(n);
        for (uint64_t& n : k.negatives) integer(n);
      } else {
        real(k.squared_error);
        real(k.absolute_error);
        integer(k.count);
        k.positives.clear();
        k.negatives.clear();
      }
    }
  };
  group(r);
  r.recommended.resize(layout.items, 0);
  for (uint32_t& n : r.recommended) integer(n);
  tasks(r.tasks);
  if (!layout.warm_cold) {
    r.groups.clear();
    return;
  }
  r.groups.resize(2);
  for (GroupEvalSums& g : r.groups) {
    group(g);
    tasks(g.tasks);
  }
}

uint64_t TasksLength(const EvalLayout& layout) {
  uint64_t n = 0;
  for (const bool binary : layout.binary_tasks) n += binary ? 2 + 2 * uint64_t{layout.auc_bins} : 3;
  return n;
}

constexpr uint64_t kEvalGroupLength = 10;  // 8 fixed-point sums, 2 counts

Status CheckTasks(const std::vector<TaskEvalSums>& tasks, const EvalLayout& layout,
                  const std::string& where) {
  if (tasks.size() != layout.binary_tasks.size()) {
    return Status::InvalidArgument(where + std::to_string(tasks.size()) + " tasks, expected " +
                                   std::to_string(layout.binary_tasks.size()) +
                                   " (the model's tasks)");
  }
  for (size_t t = 0; t < tasks.size(); ++t) {
    const size_t bins = layout.binary_tasks[t] ? layout.auc_bins : 0;
    if (tasks[t].positives.size() != bins || tasks[t].negatives.size() != bins) {
      return Status::InvalidArgument(
          where + "task " + std::to_string(t) + " has AUC histograms of " +
          std::to_string(tasks[t].positives.size()) + " and " +
          std::to_string(tasks[t].negatives.size()) + " bins, expected " + std::to_string(bins) +
          (bins ? " (eval.auc_bins)" : " (a rating task has none)"));
    }
  }
  return Status::Ok();
}

}  // namespace

Status CheckEvalReport(const EvalReport& report, const EvalLayout& layout) {
  if (report.recommended.size() > layout.items) {
    return Status::InvalidArgument("evaluation report: recommendation counts of " +
                                   std::to_string(report.recommended.size()) +
                                   " items, expected at most " + std::to_string(layout.items));
  }
  FEDREC_RETURN_IF_ERROR(CheckTasks(report.tasks, layout, "evaluation report: "));
  const size_t groups = layout.warm_cold ? 2 : 0;
  if (report.groups.size() != groups) {
    return Status::InvalidArgument("evaluation report: " + std::to_string(report.groups.size()) +
                                   " user groups, expected " + std::to_string(groups) +
                                   (layout.warm_cold ? " (warm, cold: eval.warm_cold is on)" : ""));
  }
  for (size_t g = 0; g < groups; ++g) {
    FEDREC_RETURN_IF_ERROR(
        CheckTasks(report.groups[g].tasks, layout,
                   std::string("evaluation report, ") + (g == 0 ? "warm" : "cold") + " users: "));
  }
  return Status::Ok();
}

uint64_t EvalSumsLength(const EvalLayout& layout) {
  const uint64_t group = kEvalGroupLength + TasksLength(layout);
  return group + layout.items + (layout.warm_cold ? 2 * group : 0);
}

std::vector<uint64_t> EncodeEvalSums(const EvalReport& report, const EvalLayout& layout) {
  EvalReport r = report;
  std::vector<uint64_t> out;
  out.reserve(EvalSumsLength(layout));
  const double scale = std::ldexp(1.0, static_cast<int>(kEvalFracBits));
  VisitEvalSums(
      r, layout,
      [&](double& v) {
        out.push_back(static_cast<uint64_t>(std::llround(std::isfinite(v) ? v * scale : 0.0)));
      },
      [&](auto& n) { out.push_back(static_cast<uint64_t>(n)); });
  return out;
}

Result<EvalReport> DecodeEvalSums(std::span<const uint64_t> sum, const EvalLayout& layout) {
  if (sum.size() != EvalSumsLength(layout)) {
    return Status::InvalidArgument("evaluation sums of " + std::to_string(sum.size()) +
                                   " elements, expected " + std::to_string(EvalSumsLength(layout)));
  }
  EvalReport r;
  const double inv_scale = std::ldexp(1.0, -static_cast<int>(kEvalFracBits));
  size_t next = 0;
  VisitEvalSums(
      r, layout,
      [&](double& v) { v = static_cast<double>(static_cast<int64_t>(sum[next++])) * inv_scale; },
      [&](auto& n) { n = static_cast<std::remove_reference_t<decltype(n)>>(sum[next++]); });
  return r;
}

namespace {

constexpr uint32_t kEvalLimbBits = 16;

uint32_t EvalLimbs(uint32_t ring_bits) { return ring_bits == 64 ? 1 : 64 / kEvalLimbBits; }

}  // namespace

uint64_t EvalWordsLength(const EvalLayout& layout, uint32_t ring_bits) {
  return EvalSumsLength(layout) * EvalLimbs(ring_bits);
}

void WriteEvalWords(std::span<const uint64_t> sums, uint32_t ring_bits, uint64_t begin,
                    uint64_t end, uint8_t* out) {
  const uint32_t limbs = EvalLimbs(ring_bits);
  for (uint64_t w = begin; w < end; ++w) {
    const uint64_t value = sums[w / limbs];
    if (ring_bits == 64) {
      const uint64_t le = ToLittleEndian(value);
      std::memcpy(out, &le, sizeof(le));
      out += sizeof(le);
    } else {
      const uint32_t limb = static_cast<uint32_t>((value >> (kEvalLimbBits * (w % limbs))) &
                                                  ((1u << kEvalLimbBits) - 1));
      const uint32_t le = ToLittleEndian(limb);
      std::memcpy(out, &le, sizeof(le));
      out += sizeof(le);
    }
  }
}

Result<EvalReport> DecodeEvalWords(std::span<const uint64_t> sum, const EvalLayout& layout,
                                   uint32_t ring_bits) {
  if (sum.size() != EvalWordsLength(layout, ring_bits)) {
    return Status::InvalidArgument(
        "evaluation words of " + std::to_string(sum.size()) + " elements, expected " +
        std::to_string(EvalWordsLength(layout, ring_bits)) + " (" + std::to_string(layout.items) +
        " items, " + std::to_string(layout.binary_tasks.size()) + " tasks, ring of " +
        std::to_string(ring_bits) + " bits)");
  }
  const uint32_t limbs = EvalLimbs(ring_bits);
  std::vector<uint64_t> totals(EvalSumsLength(layout), 0);
  for (size_t w = 0; w < sum.size(); ++w)
    totals[w / limbs] += sum[w] << (kEvalLimbBits * (w % limbs) % 64);  // mod 2^64
  return DecodeEvalSums(totals, layout);
}

}  // namespace fedrec
