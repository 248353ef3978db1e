// Finite-difference checks of every layer's backward pass in algorithms/nn.h,
// and the optimizers' steps.
// GCC 12 reports Eigen's AVX-512 kernels as reading an uninitialized
// register (_mm512_undefined_*, undefined on purpose): a false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include "algorithms/nn.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <vector>

#include "base/random.h"
#include "tests/algorithms/random_matrix.h"

namespace fedrec {
namespace {

using testing::RandomMatrix;

// sum(r .* m) in double.
double Dot(const Matrix& r, const Matrix& m) {
  double s = 0.0;
  for (Eigen::Index i = 0; i < m.size(); ++i) s += static_cast<double>(r.data()[i]) * m.data()[i];
  return s;
}

// Central difference of `loss` in *value, against `analytic`.
void ExpectGradient(float* value, float analytic, const std::function<double()>& loss,
                    const char* what, double eps = 1e-2) {
  const float saved = *value;
  *value = static_cast<float>(saved + eps);
  const double up = loss();
  *value = static_cast<float>(saved - eps);
  const double down = loss();
  *value = saved;
  const double numeric = (up - down) / (2 * eps);
  EXPECT_NEAR(analytic, numeric, 2e-3 + 1e-2 * std::fabs(numeric)) << what;
}

TEST(NnDense, BackwardMatchesFiniteDifferencesOfWeightsBiasesAndInputs) {
  Rng rng(7);
  std::vector<ParamBlock> blocks;
  blocks.emplace_back("d", Scope::kGlobal, 3, 5);
  InitDenseBlock(1, 0, &blocks[0]);
  for (float& v : blocks[0].data) v += 0.1f;  // non-zero biases too
  const Dense dense{0, 4, 3};
  Matrix x = RandomMatrix(rng, 6, 4);
  const Matrix r = RandomMatrix(rng, 6, 3);
  auto loss = [&] {
    Matrix y;
    dense.Forward(blocks, x, &y);
    return Dot(r, y);
  };
  Matrix grad = Matrix::Zero(3, 5), dx;
  dense.Backward(blocks, x, r, &grad, &dx);
  for (size_t i = 0; i < blocks[0].data.size(); ++i) {
    ExpectGradient(&blocks[0].data[i], grad.data()[i], loss, "weight");
  }
  for (Eigen::Index i = 0; i < x.size(); ++i) {
    ExpectGradient(&x.data()[i], dx.data()[i], loss, "input");
  }
}

TEST(NnRelu, BackwardPassesGradientWherePositiveOnly) {
  Rng rng(8);
  Matrix x = RandomMatrix(rng, 5, 4);
  for (Eigen::Index i = 0; i < x.size(); ++i) {
    if (std::fabs(x.data()[i]) < 0.1f) x.data()[i] = 0.5f;  // away from the kink
  }
  const Matrix r = RandomMatrix(rng, 5, 4);
  auto loss = [&] {
    Matrix y = x;
    ReluForward(&y);
    return Dot(r, y);
  };
  Matrix y = x;
  ReluForward(&y);
  Matrix dy = r;
  ReluBackward(y, &dy);
  for (Eigen::Index i = 0; i < x.size(); ++i) ExpectGradient(&x.data()[i], dy.data()[i], loss, "x");
}

TEST(NnSigmoid, BackwardMatchesFiniteDifferencesAndForwardIsStable) {
  Rng rng(9);
  Matrix x = RandomMatrix(rng, 4, 3, 2.0);
  const Matrix r = RandomMatrix(rng, 4, 3);
  auto loss = [&] {
    Matrix y;
    SigmoidForward(x, &y);
    return Dot(r, y);
  };
  Matrix y, dx;
  SigmoidForward(x, &y);
  SigmoidBackward(y, r, &dx);
  for (Eigen::Index i = 0; i < x.size(); ++i) ExpectGradient(&x.data()[i], dx.data()[i], loss, "x");
  EXPECT_EQ(Sigmoid(-1000.0f), 0.0f);
  EXPECT_EQ(Sigmoid(1000.0f), 1.0f);
  EXPECT_FLOAT_EQ(Sigmoid(0.0f), 0.5f);
}

TEST(NnSoftmaxGate, BackwardMatchesFiniteDifferencesOfLogitsAndExperts) {
  Rng rng(10);
  Matrix logits = RandomMatrix(rng, 5, 3);
  std::vector<Matrix> experts = {RandomMatrix(rng, 5, 4), RandomMatrix(rng, 5, 4),
                                 RandomMatrix(rng, 5, 4)};
  const Matrix r = RandomMatrix(rng, 5, 4);
  auto loss = [&] {
    Matrix p, out;
    SoftmaxRows(logits, &p);
    const Matrix* e[3] = {&experts[0], &experts[1], &experts[2]};
    GateMix(p, e, &out);
    return Dot(r, out);
  };
  Matrix p, dlogits;
  SoftmaxRows(logits, &p);
  for (Eigen::Index b = 0; b < 5; ++b) EXPECT_NEAR(p.row(b).sum(), 1.0f, 1e-6f);
  std::vector<Matrix> dexperts(3, Matrix::Zero(5, 4));
  const Matrix* e[3] = {&experts[0], &experts[1], &experts[2]};
  Matrix* de[3] = {&dexperts[0], &dexperts[1], &dexperts[2]};
  GateMixBackward(p, e, r, de, &dlogits);
  for (Eigen::Index i = 0; i < logits.size(); ++i) {
    ExpectGradient(&logits.data()[i], dlogits.data()[i], loss, "logit");
  }
  for (int k = 0; k < 3; ++k) {
    for (Eigen::Index i = 0; i < experts[k].size(); ++i) {
      ExpectGradient(&experts[k].data()[i], dexperts[k].data()[i], loss, "expert");
    }
  }
}

TEST(NnSoftmaxGate, LargeLogitsGiveFiniteWeights) {
  Matrix logits(1, 2);
  logits << 1000.0f, -1000.0f;
  Matrix p;
  SoftmaxRows(logits, &p);
  EXPECT_FLOAT_EQ(p(0, 0), 1.0f);
  EXPECT_FLOAT_EQ(p(0, 1), 0.0f);
}

TEST(NnConcat, BackwardSplitsTheGradientBackToItsParts) {
  Rng rng(11);
  Matrix a = RandomMatrix(rng, 3, 2), b = RandomMatrix(rng, 3, 4);
  const Matrix r = RandomMatrix(rng, 3, 6);
  auto loss = [&] {
    Matrix out;
    const Matrix* parts[2] = {&a, &b};
    Concat(parts, &out);
    return Dot(r, out);
  };
  Matrix da(3, 2), db(3, 4);
  Matrix* dparts[2] = {&da, &db};
  ConcatBackward(r, dparts);
  for (Eigen::Index i = 0; i < a.size(); ++i) ExpectGradient(&a.data()[i], da.data()[i], loss, "a");
  for (Eigen::Index i = 0; i < b.size(); ++i) ExpectGradient(&b.data()[i], db.data()[i], loss, "b");
}

TEST(NnEmbedding, BagBackwardTouchesOnlyUsedRowsAndMatchesFiniteDifferences) {
  Rng rng(12);
  ParamBlock table("emb", Scope::kGlobal, 6, 3);
  for (float& v : table.data) v = static_cast<float>(rng.Normal());
  // Four examples: {1}, {2, 4} (averaged), {} (missing), {1, 2}.
  const std::vector<uint32_t> offsets = {0, 1, 3, 3, 5};
  const std::vector<uint32_t> ids = {1, 2, 4, 1, 2};
  const Matrix r = RandomMatrix(rng, 4, 5);
  auto loss = [&] {
    Matrix out = Matrix::Zero(4, 5);
    EmbeddingForward(table, offsets, ids, 1, &out);
    return Dot(r, out);
  };
  Matrix out = Matrix::Zero(4, 5);
  EmbeddingForward(table, offsets, ids, 1, &out);
  EXPECT_TRUE(out.row(2).isZero());
  EXPECT_NEAR(out(1, 1), 0.5f * (table.Row(2)[0] + table.Row(4)[0]), 1e-6f);
  EmbeddingGrad grad;
  grad.Reset(6, 3);
  EmbeddingBackward(r, offsets, ids, 1, &grad, true);
  std::vector<uint32_t> touched(grad.touched().begin(), grad.touched().end());
  std::sort(touched.begin(), touched.end());
  EXPECT_EQ(touched, (std::vector<uint32_t>{1, 2, 4}));
  EXPECT_EQ(grad.counts(), (std::vector<uint32_t>{0, 2, 2, 0, 1, 0}));
  for (uint32_t row : touched) {
    for (uint32_t c = 0; c < 3; ++c) {
      ExpectGradient(&table.Row(row)[c], grad.Row(row)[c], loss, "row");
    }
  }
  grad.Clear();
  EXPECT_TRUE(grad.touched().empty());
}

TEST(NnLosses, MseAndBceGradientsMatchFiniteDifferences) {
  for (float y : {-3.0f, -0.5f, 0.0f, 0.7f, 4.0f}) {
    for (float t : {0.0f, 1.0f}) {
      float z = y;
      ExpectGradient(
          &z, MseGrad(y, t), [&] { return static_cast<double>(MseLoss(z, t)); }, "mse", 1e-3);
      ExpectGradient(
          &z, BceWithLogitsGrad(y, t), [&] { return static_cast<double>(BceWithLogitsLoss(z, t)); },
          "bce", 1e-3);
    }
  }
}

TEST(NnLosses, BceOnLogitsIsStableForLargeLogits) {
  EXPECT_NEAR(BceWithLogitsLoss(100.0f, 1.0f), 0.0f, 1e-30f);
  EXPECT_NEAR(BceWithLogitsLoss(-100.0f, 0.0f), 0.0f, 1e-30f);
  EXPECT_FLOAT_EQ(BceWithLogitsLoss(100.0f, 0.0f), 100.0f);
  EXPECT_FLOAT_EQ(BceWithLogitsLoss(-100.0f, 1.0f), 100.0f);
  EXPECT_NEAR(BceWithLogitsLoss(0.0f, 1.0f), std::log(2.0f), 1e-6f);
  EXPECT_FLOAT_EQ(BceWithLogitsGrad(-100.0f, 1.0f), -1.0f);
}

TEST(NnOptimizer, SgdAdagradAndAdamStepAsDefined) {
  std::vector<float> g = {0.5f, -2.0f};
  {
    Optimizer sgd({OptimizerKind::kSgd, 0.1f});
    std::vector<float> p = {1.0f, 1.0f};
    sgd.Step(0, p, g, 0.5f);
    EXPECT_FLOAT_EQ(p[0], 1.0f - 0.5f * (0.5f + 0.1f));
    EXPECT_FLOAT_EQ(p[1], 1.0f - 0.5f * (-2.0f + 0.1f));
  }
  {
    Optimizer adagrad({OptimizerKind::kAdagrad});
    std::vector<float> p = {1.0f, 1.0f};
    adagrad.Step(0, p, g, 0.1f);
    adagrad.Step(0, p, g, 0.1f);
    // Second step: g / sqrt(2 g^2) = sign(g) / sqrt(2).
    EXPECT_NEAR(p[0], 1.0f - 0.1f - 0.1f / std::sqrt(2.0f), 1e-5f);
    EXPECT_NEAR(p[1], 1.0f + 0.1f + 0.1f / std::sqrt(2.0f), 1e-5f);
  }
  {
    Optimizer adam({OptimizerKind::kAdam});
    std::vector<float> p = {1.0f, 1.0f};
    adam.Step(0, p, g, 0.01f);  // bias-corrected first step: lr * sign(g)
    EXPECT_NEAR(p[0], 0.99f, 1e-5f);
    EXPECT_NEAR(p[1], 1.01f, 1e-5f);
  }
}

TEST(NnOptimizer, RowStepsLeaveUntouchedRowsUnchanged) {
  ParamBlock block("emb", Scope::kGlobal, 4, 2);
  std::fill(block.data.begin(), block.data.end(), 1.0f);
  EmbeddingGrad grad;
  grad.Reset(4, 2);
  grad.Touch(2)[0] = 1.0f;
  Optimizer adam({OptimizerKind::kAdam});
  adam.StepRows(0, &block, grad, 0.1f);
  EXPECT_NEAR(block.Row(2)[0], 0.9f, 1e-5f);
  EXPECT_EQ(block.Row(2)[1], 1.0f);  // zero gradient: Adam does not move it
  for (uint32_t r : {0u, 1u, 3u}) EXPECT_EQ(block.Row(r)[0], 1.0f);
}

}  // namespace
}  // namespace fedrec
