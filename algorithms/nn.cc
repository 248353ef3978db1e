// GCC 12 reports Eigen's AVX-512 float kernels as reading an uninitialized
// register (_mm512_undefined_ps, undefined on purpose): a false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include "algorithms/nn.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstring>
#include <istream>
#include <ostream>
#include <string>

#include "base/little_endian.h"
#if defined(__SSE__)
#include <xmmintrin.h>
#endif

namespace fedrec {

void InitDenseBlock(uint64_t seed, uint64_t stream, ParamBlock* block) {
  assert(block->cols >= 1);
  const uint32_t in = block->cols - 1;
  const double stddev = std::sqrt(2.0 / std::max<uint32_t>(in, 1));
  Rng rng(seed, 0, stream, kInitNetPurpose);
  for (uint32_t r = 0; r < block->rows; ++r) {
    float* row = block->Row(r);
    for (uint32_t c = 0; c < in; ++c) row[c] = static_cast<float>(stddev * rng.Normal());
    row[in] = 0.0f;
  }
}

void InitEmbeddingRow(uint64_t seed, uint64_t key, Purpose purpose, float stddev, float* row,
                      uint32_t cols) {
  Rng rng(seed, 0, key, purpose);
  for (uint32_t c = 0; c < cols; ++c) {
    row[c] = static_cast<float>(static_cast<double>(stddev) * rng.Normal());
  }
}

#if defined(__SSE__)
FlushDenormals::FlushDenormals() : saved_(_mm_getcsr()) {
  _mm_setcsr(saved_ | 0x8040u);  // FTZ (bit 15) and DAZ (bit 6)
}
FlushDenormals::~FlushDenormals() { _mm_setcsr(saved_); }
#else
FlushDenormals::FlushDenormals() = default;
FlushDenormals::~FlushDenormals() = default;
#endif

void Dense::Forward(const std::vector<ParamBlock>& blocks, const Matrix& x, Matrix* y) const {
  assert(x.cols() == in);
  const ParamBlock& b = blocks[block];
  const ConstMatrixMap w(b.data.data(), out, in + 1);
  y->resize(x.rows(), out);
  y->noalias() = x * w.leftCols(in).transpose();
  y->rowwise() += w.col(in).transpose();
}

void Dense::Backward(const std::vector<ParamBlock>& blocks, const Matrix& x, const Matrix& dy,
                     Matrix* grad, Matrix* dx, bool accumulate) const {
  const ParamBlock& b = blocks[block];
  const ConstMatrixMap w(b.data.data(), out, in + 1);
  grad->leftCols(in).noalias() += dy.transpose() * x;
  grad->col(in) += dy.colwise().sum().transpose();
  if (dx == nullptr) return;
  if (accumulate) {
    dx->noalias() += dy * w.leftCols(in);
  } else {
    dx->resize(dy.rows(), in);
    dx->noalias() = dy * w.leftCols(in);
  }
}

void ReluForward(Matrix* x) { *x = x->cwiseMax(0.0f); }

void ReluBackward(const Matrix& y, Matrix* dy) {
  *dy = (y.array() > 0.0f).select(dy->array(), 0.0f);
}

float Sigmoid(float z) {
  if (z >= 0.0f) return 1.0f / (1.0f + std::exp(-z));
  const float e = std::exp(z);
  return e / (1.0f + e);
}

void SigmoidForward(const Matrix& x, Matrix* y) {
  y->resize(x.rows(), x.cols());
  for (Eigen::Index i = 0; i < x.size(); ++i) y->data()[i] = Sigmoid(x.data()[i]);
}

void SigmoidBackward(const Matrix& y, const Matrix& dy, Matrix* dx) {
  dx->resize(y.rows(), y.cols());
  dx->array() = dy.array() * y.array() * (1.0f - y.array());
}

void SoftmaxRows(const Matrix& logits, Matrix* p) {
  p->resize(logits.rows(), logits.cols());
  for (Eigen::Index r = 0; r < logits.rows(); ++r) {
    const float m = logits.row(r).maxCoeff();
    p->row(r) = (logits.row(r).array() - m).exp();
    p->row(r) /= p->row(r).sum();
  }
}

void GateMix(const Matrix& p, std::span<const Matrix* const> experts, Matrix* out) {
  assert(!experts.empty() && static_cast<size_t>(p.cols()) == experts.size());
  out->resize(experts[0]->rows(), experts[0]->cols());
  out->array() = experts[0]->array().colwise() * p.col(0).array();
  for (size_t e = 1; e < experts.size(); ++e) {
    out->array() += experts[e]->array().colwise() * p.col(static_cast<Eigen::Index>(e)).array();
  }
}

void GateMixBackward(const Matrix& p, std::span<const Matrix* const> experts, const Matrix& dout,
                     std::span<Matrix* const> dexperts, Matrix* dlogits) {
  const Eigen::Index n = p.rows();
  dlogits->resize(n, p.cols());
  for (size_t e = 0; e < experts.size(); ++e) {
    const Eigen::Index c = static_cast<Eigen::Index>(e);
    dlogits->col(c) = (dout.array() * experts[e]->array()).rowwise().sum();
    dexperts[e]->array() += dout.array().colwise() * p.col(c).array();
  }
  // dlogits = p .* (g - rowsum(p .* g))
  const Eigen::VectorXf dot = (p.array() * dlogits->array()).rowwise().sum();
  dlogits->array() = p.array() * (dlogits->array().colwise() - dot.array());
}

void Concat(std::span<const Matrix* const> parts, Matrix* out) {
  Eigen::Index cols = 0;
  for (const Matrix* m : parts) cols += m->cols();
  out->resize(parts.empty() ? 0 : parts[0]->rows(), cols);
  Eigen::Index at = 0;
  for (const Matrix* m : parts) {
    out->middleCols(at, m->cols()) = *m;
    at += m->cols();
  }
}

void ConcatBackward(const Matrix& dout, std::span<Matrix* const> dparts) {
  Eigen::Index at = 0;
  for (Matrix* m : dparts) {
    const Eigen::Index cols = m->cols();
    *m = dout.middleCols(at, cols);
    at += cols;
  }
}

float BceWithLogitsLoss(float z, float t) {
  return std::max(z, 0.0f) - z * t + std::log1p(std::exp(-std::fabs(z)));
}

float BceWithLogitsGrad(float z, float t) { return Sigmoid(z) - t; }

void EmbeddingGrad::Reset(uint32_t rows, uint32_t cols) {
  cols_ = cols;
  grad_.assign(static_cast<size_t>(rows) * cols, 0.0f);
  mark_.assign(rows, 0);
  touched_.clear();
  counts_.assign(rows, 0);
}

float* EmbeddingGrad::Touch(uint32_t row) {
  float* g = grad_.data() + static_cast<size_t>(row) * cols_;
  if (!mark_[row]) {
    mark_[row] = 1;
    touched_.push_back(row);
    std::fill(g, g + cols_, 0.0f);
  }
  return g;
}

void EmbeddingGrad::Clear() {
  for (uint32_t r : touched_) mark_[r] = 0;
  touched_.clear();
}

void EmbeddingForward(const ParamBlock& block, std::span<const uint32_t> offsets,
                      std::span<const uint32_t> ids, uint32_t col, Matrix* out) {
  const uint32_t dim = block.cols;
  const Eigen::Index batch = static_cast<Eigen::Index>(offsets.size()) - 1;
  for (Eigen::Index b = 0; b < batch; ++b) {
    auto dst = out->row(b).segment(col, dim);
    const uint32_t begin = offsets[b], end = offsets[b + 1];
    if (begin == end) {
      dst.setZero();
      continue;
    }
    dst = Eigen::Map<const Eigen::RowVectorXf>(block.Row(ids[begin]), dim);
    for (uint32_t k = begin + 1; k < end; ++k) {
      dst += Eigen::Map<const Eigen::RowVectorXf>(block.Row(ids[k]), dim);
    }
    if (end - begin > 1) dst /= static_cast<float>(end - begin);
  }
}

void EmbeddingBackward(const Matrix& dout, std::span<const uint32_t> offsets,
                       std::span<const uint32_t> ids, uint32_t col, EmbeddingGrad* grad,
                       bool count_rows) {
  const uint32_t dim = grad->cols();
  const Eigen::Index batch = static_cast<Eigen::Index>(offsets.size()) - 1;
  for (Eigen::Index b = 0; b < batch; ++b) {
    const uint32_t begin = offsets[b], end = offsets[b + 1];
    if (begin == end) continue;
    const float scale = 1.0f / static_cast<float>(end - begin);
    const auto src = dout.row(b).segment(col, dim);
    for (uint32_t k = begin; k < end; ++k) {
      Eigen::Map<Eigen::RowVectorXf>(grad->Touch(ids[k]), dim) += scale * src;
      if (count_rows) grad->Count(ids[k]);
    }
  }
}

Optimizer::State& Optimizer::Slot(uint32_t slot, size_t size) {
  if (states_.size() <= slot) states_.resize(slot + 1);
  State& s = states_[slot];
  if (options_.kind != OptimizerKind::kSgd && s.v.size() != size) {
    s.m.assign(size, 0.0f);
    s.v.assign(size, 0.0f);
    s.t = 0;
  }
  return s;
}

void Optimizer::Update(State& s, float bc1, float bc2, float* p, const float* g, size_t offset,
                       size_t n, float lr) {
  const float l2 = options_.l2;
  switch (options_.kind) {
    case OptimizerKind::kSgd:
      for (size_t i = 0; i < n; ++i) p[i] -= lr * (g[i] + l2 * p[i]);
      break;
    case OptimizerKind::kAdagrad: {
      float* v = s.v.data() + offset;
      for (size_t i = 0; i < n; ++i) {
        const float gi = g[i] + l2 * p[i];
        v[i] += gi * gi;
        p[i] -= lr * gi / (std::sqrt(v[i]) + 1e-7f);
      }
      break;
    }
    case OptimizerKind::kAdam: {
      float* m = s.m.data() + offset;
      float* v = s.v.data() + offset;
      const float b1 = options_.beta1, b2 = options_.beta2, eps = options_.eps;
      const float step = lr / bc1;
      const float inv_bc2 = 1.0f / bc2;
      for (size_t i = 0; i < n; ++i) {
        const float gi = g[i] + l2 * p[i];
        m[i] = b1 * m[i] + (1.0f - b1) * gi;
        v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
        p[i] -= step * m[i] / (std::sqrt(v[i] * inv_bc2) + eps);
      }
      break;
    }
  }
}

void Optimizer::Step(uint32_t slot, std::span<float> params, std::span<const float> grad,
                     float lr) {
  assert(params.size() == grad.size());
  State& s = Slot(slot, params.size());
  ++s.t;
  const float bc1 = 1.0f - std::pow(options_.beta1, static_cast<float>(s.t));
  const float bc2 = 1.0f - std::pow(options_.beta2, static_cast<float>(s.t));
  Update(s, bc1, bc2, params.data(), grad.data(), 0, params.size(), lr);
}

void Optimizer::StepRows(uint32_t slot, ParamBlock* block, const EmbeddingGrad& grad, float lr) {
  State& s = Slot(slot, block->data.size());
  ++s.t;
  const float bc1 = 1.0f - std::pow(options_.beta1, static_cast<float>(s.t));
  const float bc2 = 1.0f - std::pow(options_.beta2, static_cast<float>(s.t));
  const uint32_t cols = block->cols;
  for (uint32_t r : grad.touched()) {
    Update(s, bc1, bc2, block->Row(r), grad.Row(r), static_cast<size_t>(r) * cols, cols, lr);
  }
}

namespace {
constexpr char kOptimizerMagic[] = "fedrec-optimizer v1";
}  // namespace

void Optimizer::Save(std::ostream& out) const {
  out << kOptimizerMagic << ' ' << static_cast<int>(options_.kind) << ' ' << states_.size() << '\n';
  for (const State& s : states_) {
    out << s.t << ' ' << s.m.size() << ' ' << s.v.size() << '\n';
    std::vector<uint8_t> bytes;
    AppendFloatsLe(&bytes, s.m.data(), s.m.size());
    AppendFloatsLe(&bytes, s.v.data(), s.v.size());
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
  }
}

Status Optimizer::Load(std::istream& in, const std::string& where) {
  std::string magic, version;
  int kind = -1;
  size_t slots = 0;
  in >> magic >> version >> kind >> slots;
  in.get();
  const std::string expected = std::string(kOptimizerMagic) + " " +
                               std::to_string(static_cast<int>(options_.kind)) + " <slots>";
  if (!in || magic + " " + version != kOptimizerMagic || kind != static_cast<int>(options_.kind)) {
    return Status::InvalidArgument(where + ": expected an optimizer state \"" + expected +
                                   "\", found \"" + magic + " " + version + " " +
                                   std::to_string(kind) + "\"");
  }
  std::vector<State> states;
  for (size_t k = 0; k < slots; ++k) {
    State s;
    size_t m = 0, v = 0;
    in >> s.t >> m >> v;
    in.get();
    if (!in || m != v || (options_.kind == OptimizerKind::kSgd && m != 0)) {
      return Status::InvalidArgument(where + ": optimizer slot " + std::to_string(k) +
                                     ": expected \"<steps> <n> <n>\" (equal moments)");
    }
    // Read in pieces, so a corrupt count cannot allocate more than the file holds.
    std::vector<uint8_t> bytes;
    constexpr size_t kPiece = size_t{1} << 20;
    for (size_t left = 8 * m; left > 0;) {
      const size_t n = std::min(left, kPiece);
      const size_t at = bytes.size();
      bytes.resize(at + n);
      in.read(reinterpret_cast<char*>(bytes.data() + at), static_cast<std::streamsize>(n));
      if (in.gcount() != static_cast<std::streamsize>(n)) {
        return Status::InvalidArgument(where + ": optimizer slot " + std::to_string(k) +
                                       " is truncated");
      }
      left -= n;
    }
    s.m.resize(m);
    s.v.resize(m);
    GetFloatsLe(bytes.data(), m, s.m.data());
    GetFloatsLe(bytes.data() + 4 * m, m, s.v.data());
    states.push_back(std::move(s));
  }
  states_ = std::move(states);
  return Status::Ok();
}

}  // namespace fedrec
