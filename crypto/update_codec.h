// The dense fixed-point form of a site's model update, which secure
// aggregation and Paillier add up without seeing it.
//
// Layout, for every global block in model order and every row r of it:
//   [ w_r, w_r * v_r,0, ..., w_r * v_r,cols-1 ]
// where w_r is the site's weight for the row (its training ratings of it,
// capped at max_weight; 0 for rows it did not train) and v_r,c its trained
// value clipped to [-clip, clip]. Weights are integers; weighted values are
// scaled by 2^frac_bits and rounded stochastically (unbiased, 32 random bits an
// element) with the stream (seed, round, site, kQuantize), so the result is
// reproducible. Elements are
// two's complement in Z_2^ring_bits; the sum over sites decodes exactly as
// long as it cannot wrap, which ChooseRingBits guarantees.
//
// Every row of every global block is present whether the site trained it or
// not: the positions of non-zero rows would otherwise tell the coordinator
// which items a site's users rated.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/param_block.h"
#include "base/status.h"
#include "protocol/messages.h"

namespace fedrec {

struct FixedPointFormat {
  uint32_t ring_bits = 64;  // 32 or 64
  // The defaults keep hundreds of sites in Z_2^32 (at most 2^22 per site)
  // and lose nothing measurable on MovieLens (BENCHMARKS.md).
  uint32_t frac_bits = 8;      // fractional bits of weighted values
  float clip = 8.0f;           // values are clipped to [-clip, clip]
  uint64_t max_weight = 2048;  // per-row weights are capped to this

  friend bool operator==(const FixedPointFormat&, const FixedPointFormat&) = default;
};

// The format a round plan announces, and the plan fields that announce it.
FixedPointFormat FormatOf(const RoundPlan& plan);
void SetFormat(const FixedPointFormat& format, RoundPlan* plan);

// The smallest ring (32 or 64 bits) in which the sum of `sites` encoded
// updates cannot wrap; InvalidArgument naming the keys to lower when even 64
// bits cannot hold it.
Result<uint32_t> ChooseRingBits(uint32_t sites, const FixedPointFormat& format);

// Bits b such that every element of one encoded update, read as a signed
// integer, lies in [-2^(b-1), 2^(b-1)): the slot width Paillier packing needs.
uint32_t SignedValueBits(const FixedPointFormat& format);

// Elements of the dense form of `global` (the global blocks of the model).
uint64_t EncodedLength(const std::vector<ParamBlock>& global);

// Encodes a site's update (blocks in model order, as in ModelUpdate) against
// the shapes of `global` (only names, rows and cols are read: data may be
// empty). Error when the update does not fit the model.
Result<std::vector<uint64_t>> EncodeUpdate(const std::vector<ParamBlock>& global,
                                           const std::vector<BlockUpdate>& update,
                                           const FixedPointFormat& format, uint64_t seed,
                                           uint32_t round, uint32_t site);

// The same as `format.ring_bits / 8`-byte little-endian words: the wire form
// secure aggregation masks in place. REQUIRES: ring_bits is 32 or 64.
Result<std::vector<uint8_t>> EncodeUpdateWords(const std::vector<ParamBlock>& global,
                                               const std::vector<BlockUpdate>& update,
                                               const FixedPointFormat& format, uint64_t seed,
                                               uint32_t round, uint32_t site);

// How a site's elements are rounded, fixed once per (format, seed, round,
// site): the clipping bound, the scale 2^frac_bits, the stochastic-rounding
// stream and whether scaled values can reach 2^31 (a slower exact path).
struct Quantizer {
  Quantizer() = default;
  Quantizer(const FixedPointFormat& format, uint64_t seed, uint32_t round, uint32_t site);
  double clip = 0.0;
  double scale = 1.0;
  uint64_t stream = 0;
  bool wide = false;
};

// Writes any range of a site's encoded update: element for element what
// EncodeUpdateWords writes for the same update given as trained rows, so the
// input can be encoded one cache-sized piece at a time just before it is
// masked. Holds views of the blocks' data, which must outlive it.
class RangeEncoder {
 public:
  // Error when `blocks` does not match the shapes of `global` or the format
  // has no ring of 32 or 64 bits.
  static Result<RangeEncoder> Create(const std::vector<ParamBlock>& global,
                                     std::vector<DenseBlockView> blocks,
                                     const FixedPointFormat& format, uint64_t seed, uint32_t round,
                                     uint32_t site);

  uint64_t length() const { return length_; }
  // Writes elements [begin, end) as format.ring_bits / 8-byte little-endian
  // words at `out`. Thread-safe. REQUIRES: begin <= end <= length().
  void Encode(uint64_t begin, uint64_t end, uint8_t* out) const;

 private:
  struct Block {
    uint64_t offset = 0;  // first element
    uint32_t rows = 0;
    uint32_t cols = 0;
    DenseBlockView view;
  };
  template <typename Word>
  void EncodeWords(uint64_t begin, uint64_t end, uint8_t* out) const;
  // Asks the CPU to start loading the values and weights of elements [begin, end).
  void Prefetch(uint64_t begin, uint64_t end) const;

  std::vector<Block> blocks_;
  FixedPointFormat format_;
  Quantizer quantizer_;
  uint64_t length_ = 0;
};

// Training-loss sums travel inside the encrypted vector, never in the clear:
// a site appends one 1 x 1 row after its model blocks whose weight is its
// training count capped at max_weight and whose value is its mean training
// loss, so the coordinator decodes only the weighted mean over the sites.
ParamBlock TrainLossShape();
// The shapes of an encrypted upload: the model's upload blocks, then the loss row.
std::vector<ParamBlock> WithTrainLoss(std::vector<ParamBlock> upload);
struct TrainLossRow {
  TrainLossRow(double loss_sum, uint64_t count, const FixedPointFormat& format);
  uint32_t weight = 0;
  float value = 0.0f;
  DenseBlockView View() const { return {std::span(&weight, 1), std::span(&value, 1)}; }
};

// What a job's evaluation sums hold, derived alike at the coordinator and at
// every site from the configuration and the model: the federation's items
// (per-item recommendation counts), one flag per task of Model::Tasks()
// (true: a binary task, kLike or kClick, with an AUC histogram of auc_bins
// bins; false: a rating task), and whether warm and cold-start users are
// reported apart (eval.warm_cold).
struct EvalLayout {
  uint64_t items = 0;
  std::vector<bool> binary_tasks;
  uint32_t auc_bins = 1024;
  bool warm_cold = false;

  friend bool operator==(const EvalLayout&, const EvalLayout&) = default;
};

// Whether `report` has the layout's shape: its tasks (binary ones with
// auc_bins bins, rating ones without a histogram), two groups (warm, cold)
// exactly when warm_cold, each with the same tasks, and at most `items`
// recommendation counts. InvalidArgument naming what differs.
Status CheckEvalReport(const EvalReport& report, const EvalLayout& layout);

// A site's evaluation sums as ring-64 elements, which secure aggregation adds
// up so the coordinator sees only the totals. For all users: squared and
// absolute error, precision, recall, NDCG, hit rate, F1 and MAP sums in fixed
// point with kEvalFracBits fractional bits (rounded to nearest), the rating
// count and ranked users as integers, the per-item recommendation counts, then
// per task: a rating task's squared and absolute error (fixed point) and
// count; a binary task's log-loss sum (fixed point), count, and its positives'
// then negatives' AUC histogram (integers). With warm_cold the same (without
// the per-item counts) for warm users, then for cold users.
inline constexpr uint32_t kEvalFracBits = 32;  // totals must stay below 2^31
std::vector<uint64_t> EncodeEvalSums(const EvalReport& report, const EvalLayout& layout);
uint64_t EvalSumsLength(const EvalLayout& layout);
// The totals from the sum of EncodeEvalSums over the sites. InvalidArgument
// when `sum` does not have EvalSumsLength(layout) elements.
Result<EvalReport> DecodeEvalSums(std::span<const uint64_t> sum, const EvalLayout& layout);

// The evaluation sums a training round's masked input carries after the
// update and training loss (RoundPlan::evaluate): in a 64-bit ring each
// EncodeEvalSums value is one word; in a 32-bit ring it is four 16-bit limbs,
// least significant first, whose sums over up to kMaxEvalLimbSites sites stay
// below 2^32, so the 64-bit totals are exact.
inline constexpr uint32_t kMaxEvalLimbSites = 65536;
uint64_t EvalWordsLength(const EvalLayout& layout, uint32_t ring_bits);
// Writes words [begin, end) of that layout of `sums` at `out`, as
// ring_bits / 8-byte little-endian words. REQUIRES: end <= EvalWordsLength.
void WriteEvalWords(std::span<const uint64_t> sums, uint32_t ring_bits, uint64_t begin,
                    uint64_t end, uint8_t* out);
// The totals of EncodeEvalSums from the sum of those words over the sites
// (elements reduced mod 2^ring_bits). InvalidArgument on a length mismatch.
Result<EvalReport> DecodeEvalWords(std::span<const uint64_t> sum, const EvalLayout& layout,
                                   uint32_t ring_bits);

// The per-row sums a Strategy consumes, decoded from the sum of encoded
// updates: for each global block, row_weight[row] and weighted_sum[row * cols + c].
struct DecodedSums {
  std::vector<std::vector<double>> weighted_sum;
  std::vector<std::vector<double>> row_weight;
};
Result<DecodedSums> DecodeSum(const std::vector<ParamBlock>& global, std::span<const uint64_t> sum,
                              const FixedPointFormat& format);
// Removes the loss row DecodeSum decoded last (shapes from WithTrainLoss) and
// returns the sites' weighted mean training loss (0 when no site trained).
double TakeTrainLoss(DecodedSums* sums);

}  // namespace fedrec
