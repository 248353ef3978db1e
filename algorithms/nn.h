// Neural-network building blocks for fedrec's neural recommenders, with
// hand-written backward passes on Eigen.
//
// Activations are minibatches: one example per row of a row-major float
// matrix (B x width). Parameters live in ParamBlocks (base/param_block.h), so
// they federate as blocks like every other model's parameters:
//   Dense layer:     one block of out rows x (in + 1) cols; row o holds the
//                    weights of output o and, in its last column, its bias.
//   Embedding table: one block of vocabulary rows x dim cols.
// Layers do not own parameters: they name a block index into the owner's
// vector of blocks and read the block's values at each call (SetGlobalBlocks
// may replace the values' storage between calls).
//
// Gradients: dense layers accumulate into a block-shaped matrix; embeddings
// into an EmbeddingGrad that keeps only touched rows (and counts, per row, the
// examples that touched it, which is what an upload weighs a row by).
// Optimizers (SGD, Adagrad, Adam) keep their state at the site; it is never
// uploaded.
//
// Workspaces are matrices the caller keeps between batches: no allocation per
// example, and none per batch while the batch size stays the same.
#pragma once

#include <Eigen/Core>
#include <cstdint>
#include <iosfwd>
#include <span>
#include <string>
#include <vector>

#include "base/param_block.h"
#include "base/random.h"
#include "base/status.h"

namespace fedrec {

using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MatrixMap = Eigen::Map<Matrix>;
using ConstMatrixMap = Eigen::Map<const Matrix>;

// Streams of the networks' initial parameters (base/random.h; plug-in range).
inline constexpr Purpose kInitNetPurpose =
    static_cast<Purpose>(static_cast<uint64_t>(Purpose::kUser) + 21);

// Fills a dense layer's block: weights ~ N(0, 2 / in) (He), biases 0, from
// the stream (seed, 0, stream, kInitNetPurpose).
void InitDenseBlock(uint64_t seed, uint64_t stream, ParamBlock* block);
// Fills `cols` floats at `row` with N(0, stddev^2) draws from the stream
// (seed, 0, key, purpose).
void InitEmbeddingRow(uint64_t seed, uint64_t key, Purpose purpose, float stddev, float* row,
                      uint32_t cols);

// y = x W^T + b over a block of out x (in + 1).
struct Dense {
  uint32_t block = 0;
  uint32_t in = 0;
  uint32_t out = 0;

  // REQUIRES: x.cols() == in. Resizes y to x.rows() x out.
  void Forward(const std::vector<ParamBlock>& blocks, const Matrix& x, Matrix* y) const;
  // grad (out x (in + 1)) += dL/d(block) for this batch; dx = dL/dx
  // (dx += when accumulate) unless dx is nullptr.
  void Backward(const std::vector<ParamBlock>& blocks, const Matrix& x, const Matrix& dy,
                Matrix* grad, Matrix* dx, bool accumulate = false) const;
};

// ReLU in place; backward zeroes dy where the forward output was 0.
void ReluForward(Matrix* x);
void ReluBackward(const Matrix& y, Matrix* dy);

// y = 1 / (1 + exp(-x)) (stable for large |x|); dx = dy * y * (1 - y).
void SigmoidForward(const Matrix& x, Matrix* y);
void SigmoidBackward(const Matrix& y, const Matrix& dy, Matrix* dx);

// Softmax gate: p = softmax(logits) per row (max-subtracted), and the mix of
// E expert outputs (each B x H) out = sum_e p[:, e] * expert_e.
void SoftmaxRows(const Matrix& logits, Matrix* p);
void GateMix(const Matrix& p, std::span<const Matrix* const> experts, Matrix* out);
// From dout: dexperts[e] += p[:, e] * dout, dlogits = p .* (g - rowsum(p .* g))
// with g[:, e] = rowsum(dout .* expert_e).
void GateMixBackward(const Matrix& p, std::span<const Matrix* const> experts, const Matrix& dout,
                     std::span<Matrix* const> dexperts, Matrix* dlogits);

// out = [parts[0] parts[1] ...] along columns; backward splits dout.
void Concat(std::span<const Matrix* const> parts, Matrix* out);
void ConcatBackward(const Matrix& dout, std::span<Matrix* const> dparts);

// Losses per example. MSE: 0.5 (y - t)^2, d/dy = y - t. Binary cross-entropy
// on a logit z with label t in {0, 1}: max(z, 0) - z t + log(1 + exp(-|z|)),
// d/dz = sigmoid(z) - t; stable for any z.
inline float MseLoss(float y, float t) { return 0.5f * (y - t) * (y - t); }
inline float MseGrad(float y, float t) { return y - t; }
float BceWithLogitsLoss(float z, float t);
float BceWithLogitsGrad(float z, float t);
float Sigmoid(float z);

// Sparse gradient of an embedding block: touched rows only, with the count of
// examples that touched each row since ClearCounts.
class EmbeddingGrad {
 public:
  void Reset(uint32_t rows, uint32_t cols);
  uint32_t cols() const { return cols_; }
  // Row r's gradient (cols floats); marks r touched and zeroes it on first touch.
  float* Touch(uint32_t row);
  // Counts one example's use of `row` (upload weights).
  void Count(uint32_t row) {
    if (counts_[row] != UINT32_MAX) ++counts_[row];
  }
  std::span<const uint32_t> touched() const { return touched_; }
  const float* Row(uint32_t row) const { return grad_.data() + static_cast<size_t>(row) * cols_; }
  // Forgets the touched rows (after an optimizer step).
  void Clear();
  void ClearCounts() { std::fill(counts_.begin(), counts_.end(), 0u); }
  const std::vector<uint32_t>& counts() const { return counts_; }

 private:
  uint32_t cols_ = 0;
  std::vector<float> grad_;
  std::vector<uint8_t> mark_;
  std::vector<uint32_t> touched_;
  std::vector<uint32_t> counts_;
};

// Embedding bag over the ids of each example: out.row(b).segment(col, dim) =
// mean of the block's rows ids[offsets[b] .. offsets[b + 1]) (zeros when the
// example has none). offsets has B + 1 entries.
void EmbeddingForward(const ParamBlock& block, std::span<const uint32_t> offsets,
                      std::span<const uint32_t> ids, uint32_t col, Matrix* out);
// Scatters dout.row(b).segment(col, dim) / count into the rows' gradients
// (and counts each example's use of each row when count_rows).
void EmbeddingBackward(const Matrix& dout, std::span<const uint32_t> offsets,
                       std::span<const uint32_t> ids, uint32_t col, EmbeddingGrad* grad,
                       bool count_rows);

// While alive, the calling thread flushes denormal floats to zero (SSE's
// FTZ and DAZ); the previous mode is restored on destruction. Adam's moments
// of parameters whose gradient stays 0 (a dead ReLU) decay geometrically into
// denormals, which x86 computes on a hundred times more slowly.
class FlushDenormals {
 public:
  FlushDenormals();
  ~FlushDenormals();
  FlushDenormals(const FlushDenormals&) = delete;
  FlushDenormals& operator=(const FlushDenormals&) = delete;

 private:
  unsigned saved_ = 0;
};

enum class OptimizerKind : uint8_t { kSgd = 0, kAdagrad = 1, kAdam = 2 };

struct OptimizerOptions {
  OptimizerKind kind = OptimizerKind::kAdam;
  float l2 = 0.0f;  // added to the gradient as l2 * w (rows stepped only)
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
};

// Local optimizer; state per slot (the caller uses the block index), sized on
// first use. Adam on rows is lazy: only the stepped rows' moments decay.
class Optimizer {
 public:
  explicit Optimizer(const OptimizerOptions& options = {}) : options_(options) {}
  const OptimizerOptions& options() const { return options_; }
  // Steps every value of `params` by `grad` (same size).
  void Step(uint32_t slot, std::span<float> params, std::span<const float> grad, float lr);
  // Steps the listed rows of `block` by their rows of `grad`.
  void StepRows(uint32_t slot, ParamBlock* block, const EmbeddingGrad& grad, float lr);

  // The state between steps (each slot's step count and moments), for a
  // site's checkpoint. Load reads what Save wrote, checks it (the same kind,
  // whole moments) and leaves the optimizer unchanged on an error naming
  // `where`.
  void Save(std::ostream& out) const;
  Status Load(std::istream& in, const std::string& where);

 private:
  struct State {
    std::vector<float> m, v;
    uint64_t t = 0;
  };
  State& Slot(uint32_t slot, size_t size);
  void Update(State& s, float bc1, float bc2, float* p, const float* g, size_t offset, size_t n,
              float lr);

  OptimizerOptions options_;
  std::vector<State> states_;
};

}  // namespace fedrec
