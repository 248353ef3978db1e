// The multi-task network (algorithms/multitask_net.h): finite-difference
// checks of the whole network per architecture with uncertainty weighting,
// and the synthetic two-task regression of the MMoE paper (Ma et al., KDD
// 2018, section 3.2).
// GCC 12 reports Eigen's AVX-512 kernels as reading an uninitialized
// register (_mm512_undefined_*, undefined on purpose): a false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include "algorithms/multitask_net.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <vector>

#include "base/random.h"
#include "tests/algorithms/random_matrix.h"

namespace fedrec {
namespace {

using testing::RandomMatrix;

MultiTaskNetOptions SmallNet(Architecture architecture) {
  MultiTaskNetOptions o;
  o.architecture = architecture;
  o.input = 5;
  o.tasks = 2;
  o.expert_hidden = {6, 4};
  o.tower_hidden = {3};
  o.experts = 3;
  o.shared_experts = 2;
  o.specific_experts = 1;
  o.levels = 2;
  o.seed = 3;
  return o;
}

class NetGradient : public ::testing::TestWithParam<Architecture> {};

TEST_P(NetGradient, WholeNetworkWithUncertaintyMatchesFiniteDifferences) {
  std::vector<ParamBlock> blocks;
  const MultiTaskNet net(SmallNet(GetParam()), &blocks);
  Rng rng(5);
  for (ParamBlock& b : blocks) {
    for (float& v : b.data) v += static_cast<float>(0.05 * rng.Normal());  // non-zero biases
  }
  Matrix x = RandomMatrix(rng, 7, 5);
  Matrix target = RandomMatrix(rng, 7, 2);
  for (Eigen::Index b = 0; b < 7; ++b) target(b, 1) = rng.Uniform() < 0.5 ? 0.0f : 1.0f;
  Matrix mask = Matrix::Ones(7, 2);
  mask(3, 0) = 0.0f;  // an example without a rating label
  const HeadKind heads[2] = {HeadKind::kRegression, HeadKind::kBinary};
  const float weights[2] = {1.0f, 0.7f};
  std::vector<float> log_var = {0.3f, -0.2f};
  const float scale = 1.0f / 7;
  auto loss = [&] {
    NetWorkspace ws;
    net.Forward(blocks, x, &ws);
    Matrix dout;
    std::vector<float> unused(2, 0.0f);
    return MultiTaskLoss(ws.out, target, mask, heads, weights, log_var, scale, &dout, unused);
  };
  NetWorkspace ws;
  net.Forward(blocks, x, &ws);
  Matrix dout, dx;
  std::vector<float> dlog_var(2, 0.0f);
  MultiTaskLoss(ws.out, target, mask, heads, weights, log_var, scale, &dout, dlog_var);
  NetGrads grads = net.MakeGrads();
  net.Backward(blocks, x, dout, &ws, &grads, &dx);

  int checked = 0, mismatched = 0;
  auto check = [&](float* value, float analytic) {
    const double eps = 1e-3;
    const float saved = *value;
    *value = static_cast<float>(saved + eps);
    const double up = loss();
    *value = static_cast<float>(saved - eps);
    const double down = loss();
    *value = saved;
    const double numeric = (up - down) / (2 * eps);
    ++checked;
    // A ReLU whose input crosses 0 within eps makes the difference quotient
    // differ from the one-sided derivative: rare, counted below.
    if (std::fabs(numeric - analytic) > 1e-3 + 2e-2 * std::fabs(numeric)) ++mismatched;
  };
  for (uint32_t j = 0; j < net.dense_layers(); ++j) {
    ParamBlock& b = blocks[net.dense(j).block];
    for (size_t i = 0; i < b.data.size(); ++i) check(&b.data[i], grads.dense[j].data()[i]);
  }
  for (Eigen::Index i = 0; i < x.size(); ++i) check(&x.data()[i], dx.data()[i]);
  for (int t = 0; t < 2; ++t) check(&log_var[t], dlog_var[t]);
  EXPECT_GT(checked, 100);
  EXPECT_LE(mismatched, checked / 100) << mismatched << " of " << checked;
}

INSTANTIATE_TEST_SUITE_P(Architectures, NetGradient,
                         ::testing::Values(Architecture::kSharedBottom, Architecture::kMmoe,
                                           Architecture::kPle));

TEST(MultiTaskNet, PleHasSpecificAndSharedExpertsAndASharedGateBelowTheLastLevel) {
  std::vector<ParamBlock> blocks;
  MultiTaskNetOptions o = SmallNet(Architecture::kPle);
  o.local_towers = true;
  const MultiTaskNet net(o, &blocks);
  std::vector<std::string> names;
  for (const ParamBlock& b : blocks) names.push_back(b.name);
  auto has = [&](const std::string& n) {
    return std::find(names.begin(), names.end(), n) != names.end();
  };
  EXPECT_TRUE(has("l0.e0.0.d0"));
  EXPECT_TRUE(has("l0.e1.0.d1"));
  EXPECT_TRUE(has("l0.es.1.d0"));
  EXPECT_TRUE(has("l0.gs"));   // shared gate between levels
  EXPECT_FALSE(has("l1.gs"));  // none after the last level
  EXPECT_TRUE(has("l1.g0"));
  for (const ParamBlock& b : blocks) {
    const bool head = b.name.starts_with("tower") || b.name == "l0.g0" || b.name == "l1.g1";
    if (head) {
      EXPECT_EQ(b.scope, Scope::kLocal) << b.name;
    }
    if (b.name.find(".e") != std::string::npos) {
      EXPECT_EQ(b.scope, Scope::kGlobal) << b.name;
    }
  }
}

// Ma et al. 2018, section 3.2: two regression tasks whose correlation is
// controlled by the cosine p of their weight vectors.
struct TwoTaskData {
  Matrix x;
  Matrix y;
};

TwoTaskData MakeTwoTask(double p, uint32_t n, uint32_t d, uint64_t seed, uint64_t stream) {
  Rng rng(seed, 0, 0, Purpose::kSynthetic);
  // Orthogonal unit vectors u1, u2.
  Eigen::VectorXd u1(d), u2(d);
  for (uint32_t i = 0; i < d; ++i) u1(i) = rng.Normal(), u2(i) = rng.Normal();
  u1.normalize();
  u2 -= u2.dot(u1) * u1;
  u2.normalize();
  const double c = 1.0;
  const Eigen::VectorXd w1 = c * u1;
  const Eigen::VectorXd w2 = c * (p * u1 + std::sqrt(1 - p * p) * u2);
  constexpr int kSines = 10;
  double alpha[kSines], beta[kSines];
  for (int i = 0; i < kSines; ++i) alpha[i] = rng.Normal(), beta[i] = rng.Normal();
  Rng draw(seed, 0, stream, Purpose::kSynthetic);
  TwoTaskData data{Matrix(n, d), Matrix(n, 2)};
  for (uint32_t r = 0; r < n; ++r) {
    Eigen::VectorXd x(d);
    for (uint32_t i = 0; i < d; ++i) x(i) = draw.Normal();
    data.x.row(r) = x.cast<float>().transpose();
    const Eigen::VectorXd* w[2] = {&w1, &w2};
    for (int t = 0; t < 2; ++t) {
      const double a = w[t]->dot(x);
      double y = a;
      for (int i = 0; i < kSines; ++i) y += std::sin(alpha[i] * a + beta[i]);
      data.y(r, t) = static_cast<float>(y + 0.1 * draw.Normal());
    }
  }
  return data;
}

// Test MSE (mean over both tasks) after training the architecture.
double TrainTwoTask(const MultiTaskNetOptions& options, const TwoTaskData& train,
                    const TwoTaskData& test) {
  std::vector<ParamBlock> blocks;
  const MultiTaskNet net(options, &blocks);
  Optimizer adam({OptimizerKind::kAdam});
  NetWorkspace ws;
  NetGrads grads = net.MakeGrads();
  const HeadKind heads[2] = {HeadKind::kRegression, HeadKind::kRegression};
  const float weights[2] = {1.0f, 1.0f};
  constexpr Eigen::Index kBatch = 64;
  Matrix x, y, dout;
  const Matrix mask = Matrix::Ones(kBatch, 2);
  const Eigen::Index n = train.x.rows();
  for (int epoch = 0; epoch < 30; ++epoch) {
    for (Eigen::Index start = 0; start + kBatch <= n; start += kBatch) {
      x = train.x.middleRows(start, kBatch);
      y = train.y.middleRows(start, kBatch);
      net.Forward(blocks, x, &ws);
      MultiTaskLoss(ws.out, y, mask, heads, weights, {}, 1.0f / kBatch, &dout, {});
      grads.Zero();
      net.Backward(blocks, x, dout, &ws, &grads, nullptr);
      for (uint32_t j = 0; j < net.dense_layers(); ++j) {
        const uint32_t b = net.dense(j).block;
        adam.Step(b, blocks[b].data,
                  std::span<const float>(grads.dense[j].data(), grads.dense[j].size()), 0.003f);
      }
    }
  }
  net.Forward(blocks, test.x, &ws);
  return (ws.out - test.y).squaredNorm() / static_cast<double>(test.y.size());
}

TEST(MultiTaskNet, MmoeBeatsSharedBottomOnLowlyCorrelatedTasksAndMatchesItOnCorrelatedOnes) {
  MultiTaskNetOptions shared;
  shared.architecture = Architecture::kSharedBottom;
  shared.input = 16;
  shared.tasks = 2;
  shared.expert_hidden = {32};
  shared.tower_hidden = {8};
  MultiTaskNetOptions mmoe = shared;
  mmoe.architecture = Architecture::kMmoe;
  mmoe.experts = 4;
  mmoe.expert_hidden = {8};  // 4 experts x 8 units: the same bottom budget
  double ratio[2] = {0.0, 0.0};
  const double correlations[2] = {0.9, 0.1};
  constexpr int kSeeds = 3;
  for (int c = 0; c < 2; ++c) {
    for (uint64_t seed = 1; seed <= kSeeds; ++seed) {
      const TwoTaskData train = MakeTwoTask(correlations[c], 6000, 16, seed, 1);
      const TwoTaskData test = MakeTwoTask(correlations[c], 2000, 16, seed, 2);
      shared.seed = mmoe.seed = seed;
      const double sb = TrainTwoTask(shared, train, test);
      const double mo = TrainTwoTask(mmoe, train, test);
      ratio[c] += mo / sb / kSeeds;
    }
  }
  // Mean ratio of MMoE's test MSE to shared-bottom's.
  EXPECT_LT(ratio[0], 1.05) << "high correlation";
  EXPECT_LT(ratio[1], 0.95) << "low correlation";
  EXPECT_LT(ratio[1], ratio[0]);
}

}  // namespace
}  // namespace fedrec
