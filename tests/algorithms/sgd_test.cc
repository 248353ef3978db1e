#include "algorithms/sgd.h"

#include <gtest/gtest.h>

#include <cmath>
#include <span>
#include <vector>

#include "base/random.h"

namespace fedrec {
namespace {

// A model with every parameter drawn at random (biases too), so no update is
// trivially zero.
MfModel RandomModel(uint32_t users, uint32_t items, uint32_t k, uint64_t seed, float mu = 3.5f) {
  MfModel model(users, items, k);
  Rng rng(seed, 0, 0, Purpose::kUser);
  for (ParamBlock& b : model.blocks()) {
    for (float& x : b.data) x = static_cast<float>(0.3 * rng.Normal());
  }
  model.set_global_mean(mu);
  return model;
}

std::vector<Rating> RandomRatings(uint32_t users, uint32_t items, size_t n, uint64_t seed) {
  Rng rng(seed, 0, 1, Purpose::kUser);
  std::vector<Rating> ratings(n);
  for (Rating& r : ratings) {
    r.user = static_cast<uint32_t>(rng.Below(users));
    r.item = static_cast<uint32_t>(rng.Below(items));
    r.value = static_cast<float>(1 + rng.Below(5));
  }
  return ratings;
}

// The loss whose negative gradient (times lr) the SGD step follows, in double:
//   0.5 e^2 + 0.5 reg (|p|^2 + |q|^2) + 0.5 bias_reg (b_u^2 + b_i^2),
//   e = r - mu - b_u - b_i - p . q.
// theta = (b_u, b_i, p[0..k), q[0..k)).
double Loss(const std::vector<double>& theta, uint32_t k, double mu, double r, double reg,
            double bias_reg) {
  const double bu = theta[0], bi = theta[1];
  double dot = 0.0, pp = 0.0, qq = 0.0;
  for (uint32_t j = 0; j < k; ++j) {
    const double p = theta[2 + j], q = theta[2 + k + j];
    dot += p * q;
    pp += p * p;
    qq += q * q;
  }
  const double e = r - mu - bu - bi - dot;
  return 0.5 * e * e + 0.5 * reg * (pp + qq) + 0.5 * bias_reg * (bu * bu + bi * bi);
}

std::vector<double> Theta(const MfModel& m, uint32_t u, uint32_t i) {
  const uint32_t k = m.factors();
  std::vector<double> theta = {m.user_bias()[u], m.item_bias()[i]};
  for (uint32_t j = 0; j < k; ++j) theta.push_back(m.user_factors()[u * k + j]);
  for (uint32_t j = 0; j < k; ++j) theta.push_back(m.item_factors()[i * k + j]);
  return theta;
}

class SgdGradientTest : public ::testing::TestWithParam<uint32_t> {};

TEST_P(SgdGradientTest, StepIsMinusLrTimesFiniteDifferenceGradientOfRegularisedLoss) {
  const uint32_t k = GetParam();
  MfModel model = RandomModel(3, 4, k, 11 + k);
  SgdOptions options;
  options.reg = 0.3f;       // large, so a wrong regulariser shows
  options.bias_reg = 0.2f;  // and differs from reg, so swapping them shows
  const float lr = 0.1f;
  const Rating rating{2, 1, 4.0f, 0};

  const std::vector<double> before = Theta(model, 2, 1);
  SgdEpoch(&model, std::span<const Rating>(&rating, 1), lr, options);
  const std::vector<double> after = Theta(model, 2, 1);

  const double h = 1e-6;
  for (size_t n = 0; n < before.size(); ++n) {
    std::vector<double> plus = before, minus = before;
    plus[n] += h;
    minus[n] -= h;
    const double grad =
        (Loss(plus, k, model.global_mean(), rating.value, options.reg, options.bias_reg) -
         Loss(minus, k, model.global_mean(), rating.value, options.reg, options.bias_reg)) /
        (2 * h);
    // Float parameters of size ~1: a few ulps of absolute error.
    EXPECT_NEAR(after[n] - before[n], -lr * grad, 2e-6) << "parameter " << n;
  }
  // Rows not rated are untouched.
  MfModel untouched = RandomModel(3, 4, k, 11 + k);
  for (uint32_t u : {0u, 1u}) EXPECT_EQ(Theta(model, u, 0), Theta(untouched, u, 0));
}

INSTANTIATE_TEST_SUITE_P(SpecialisedAndGenericK, SgdGradientTest,
                         ::testing::Values(1u, 5u, 8u, 16u, 32u, 33u, 64u, 128u));

TEST(SgdTest, ReturnsSumOfSquaredPreUpdateErrors) {
  // Distinct users and items, so each error is the one Predict gives beforehand.
  MfModel model = RandomModel(3, 3, 16, 3);
  const std::vector<Rating> ratings = {{0, 2, 5.0f, 0}, {1, 0, 1.0f, 0}, {2, 1, 3.0f, 0}};
  double expected = 0.0;
  for (const Rating& r : ratings) {
    const double e = r.value - model.Predict(r.user, r.item);
    expected += e * e;
  }
  const double sse = SgdEpoch(&model, ratings, 0.05f, SgdOptions{});
  EXPECT_NEAR(sse, expected, 1e-5 * expected);
  // After the epoch the errors are smaller.
  double after = 0.0;
  for (const Rating& r : ratings) {
    const double e = r.value - model.Predict(r.user, r.item);
    after += e * e;
  }
  EXPECT_LT(after, expected);
}

TEST(SgdTest, SpecialisedKernelsMatchGenericKernelBitForBit) {
  for (uint32_t k : {8u, 16u, 32u, 64u, 128u}) {
    MfModel a = RandomModel(30, 40, k, k);
    MfModel b = a;
    const std::vector<Rating> ratings = RandomRatings(30, 40, 2000, k);
    SgdOptions options;
    options.reg = 0.02f;
    for (int epoch = 0; epoch < 3; ++epoch) {
      const double sa = SgdEpoch(&a, ratings, 0.02f, options);
      const double sb = internal::SgdEpochGeneric(&b, ratings, 0.02f, options);
      EXPECT_EQ(sa, sb) << "k=" << k << " epoch " << epoch;
    }
    EXPECT_TRUE(a.blocks() == b.blocks()) << "k=" << k;
  }
}

// The update of sgd.h written plainly, in double.
double NaiveEpoch(std::vector<double>& P, std::vector<double>& Q, std::vector<double>& bu,
                  std::vector<double>& bi, double mu, uint32_t k, std::span<const Rating> ratings,
                  double lr, const SgdOptions& o) {
  double sse = 0.0;
  for (const Rating& r : ratings) {
    double* p = &P[r.user * k];
    double* q = &Q[r.item * k];
    double dot = 0.0;
    for (uint32_t j = 0; j < k; ++j) dot += p[j] * q[j];
    const double e = r.value - (mu + bu[r.user] + bi[r.item] + dot);
    sse += e * e;
    bu[r.user] += lr * (e - o.bias_reg * bu[r.user]);
    bi[r.item] += lr * (e - o.bias_reg * bi[r.item]);
    for (uint32_t j = 0; j < k; ++j) {
      const double pj = p[j], qj = q[j];
      p[j] += lr * (e * qj - o.reg * pj);
      q[j] += lr * (e * pj - o.reg * qj);
    }
  }
  return sse;
}

TEST(SgdTest, MatchesNaiveDoubleReferenceForSpecialisedAndOddK) {
  for (uint32_t k : {3u, 7u, 8u, 31u, 32u, 33u, 64u, 100u}) {
    MfModel model = RandomModel(20, 25, k, 100 + k);
    auto as_double = [](const ParamBlock& b) {
      return std::vector<double>(b.data.begin(), b.data.end());
    };
    std::vector<double> bi = as_double(model.blocks()[1]), Q = as_double(model.blocks()[2]),
                        bu = as_double(model.blocks()[3]), P = as_double(model.blocks()[4]);
    const std::vector<Rating> ratings = RandomRatings(20, 25, 400, k);
    SgdOptions options;
    options.reg = 0.05f;
    options.bias_reg = 0.02f;
    for (int epoch = 0; epoch < 2; ++epoch) {
      const double ours = SgdEpoch(&model, ratings, 0.01f, options);
      const double ref = NaiveEpoch(P, Q, bu, bi, model.global_mean(), k, ratings, 0.01f, options);
      EXPECT_NEAR(ours, ref, 1e-5 * ref) << "k=" << k;
    }
    const std::vector<double>* refs[] = {&bi, &Q, &bu, &P};
    const int blocks[] = {1, 2, 3, 4};
    for (int n = 0; n < 4; ++n) {
      const auto& got = model.blocks()[blocks[n]].data;
      double worst = 0.0;
      for (size_t x = 0; x < got.size(); ++x) {
        worst = std::max(worst, std::abs(got[x] - (*refs[n])[x]));
      }
      EXPECT_LT(worst, 1e-5) << "k=" << k << " block " << model.blocks()[blocks[n]].name;
    }
  }
}

TEST(SgdTest, SameInputsGiveIdenticalModels) {
  const std::vector<Rating> ratings = RandomRatings(50, 60, 3000, 9);
  auto run = [&](uint32_t k) {
    MfModel m(50, 60, k);
    MfInitOptions init;
    m.InitGlobal(init);
    m.InitUsers(init);
    m.set_global_mean(TrainingMean(ratings));
    double sse = 0.0;
    for (int e = 0; e < 4; ++e) sse = SgdEpoch(&m, ratings, 0.01f, SgdOptions{});
    return std::make_pair(m.blocks(), sse);
  };
  for (uint32_t k : {13u, 32u}) {
    const auto first = run(k), second = run(k);
    EXPECT_TRUE(first.first == second.first) << "k=" << k;
    EXPECT_EQ(first.second, second.second) << "k=" << k;
  }
}

TEST(SgdTest, ZeroLearningRateChangesNothingButStillMeasuresError) {
  MfModel model = RandomModel(5, 5, 32, 4);
  const MfModel before = model;
  const std::vector<Rating> ratings = RandomRatings(5, 5, 50, 4);
  EXPECT_GT(SgdEpoch(&model, ratings, 0.0f, SgdOptions{}), 0.0);
  EXPECT_TRUE(model.blocks() == before.blocks());
}

TEST(SgdTest, LearnsLowRankDataDownToTheNoiseLevel) {
  // Ground truth: rank-3 factors + biases, Gaussian noise of std 0.1; 40% of
  // the 200 x 150 pairs observed, 10% of them held out.
  constexpr uint32_t kUsers = 200, kItems = 150, kRank = 3;
  constexpr double kNoise = 0.1;
  Rng rng(7, 0, 0, Purpose::kSynthetic);
  std::vector<double> tu(kUsers * kRank), ti(kItems * kRank), bu(kUsers), bi(kItems);
  for (double& x : tu) x = 0.6 * rng.Normal();
  for (double& x : ti) x = 0.6 * rng.Normal();
  for (double& x : bu) x = 0.3 * rng.Normal();
  for (double& x : bi) x = 0.3 * rng.Normal();
  std::vector<Rating> train, test;
  for (uint32_t u = 0; u < kUsers; ++u) {
    for (uint32_t i = 0; i < kItems; ++i) {
      if (rng.Uniform() >= 0.4) continue;
      double v = 3.0 + bu[u] + bi[i] + kNoise * rng.Normal();
      for (uint32_t c = 0; c < kRank; ++c) v += tu[u * kRank + c] * ti[i * kRank + c];
      (rng.Uniform() < 0.1 ? test : train).push_back({u, i, static_cast<float>(v), 0});
    }
  }

  MfModel model(kUsers, kItems, 8);
  MfInitOptions init;
  init.init_std = 0.1f;
  model.InitGlobal(init);
  model.InitUsers(init);
  model.set_global_mean(TrainingMean(train));
  SgdOptions options;
  options.lr = 0.02f;
  options.reg = 0.005f;
  options.bias_reg = 0.0f;

  std::vector<double> train_rmse;
  for (uint64_t epoch = 0; epoch < 200; ++epoch) {
    Rng shuffle(1, epoch, 0, Purpose::kShuffle);
    shuffle.Shuffle(std::span<Rating>(train));
    const double sse = SgdEpoch(&model, train, options.LearningRate(epoch), options);
    train_rmse.push_back(std::sqrt(sse / static_cast<double>(train.size())));
  }
  for (int epoch = 1; epoch < 20; ++epoch) {
    EXPECT_LT(train_rmse[epoch], train_rmse[epoch - 1]) << "epoch " << epoch;
  }
  EXPECT_GT(train_rmse[0], 5 * kNoise);  // the start is far from the noise level
  EXPECT_LT(train_rmse.back(), 1.2 * kNoise);

  double sq = 0.0;
  for (const Rating& r : test) {
    const double e = r.value - model.Predict(r.user, r.item);
    sq += e * e;
  }
  const double test_rmse = std::sqrt(sq / static_cast<double>(test.size()));
  EXPECT_LT(test_rmse, 1.5 * kNoise);
}

TEST(SgdTest, LearningRateDecaysGeometricallyPerEpoch) {
  SgdOptions options;
  options.lr = 0.1f;
  options.lr_decay = 0.5f;
  EXPECT_EQ(options.LearningRate(0), 0.1f);
  EXPECT_EQ(options.LearningRate(1), static_cast<float>(double{0.1f} * 0.5));
  EXPECT_EQ(options.LearningRate(3), static_cast<float>(double{0.1f} * 0.125));
  options.lr_decay = 1.0f;
  EXPECT_EQ(options.LearningRate(1000), 0.1f);
  options.lr_decay = 0.9f;
  EXPECT_NEAR(options.LearningRate(10), 0.1 * std::pow(0.9, 10), 1e-7);
}

TEST(SgdTest, TrainingMeanSumsInDoubleInInputOrder) {
  EXPECT_EQ(TrainingMean({}), 0.0f);
  const std::vector<Rating> simple = {{0, 0, 1.0f, 0}, {0, 1, 2.0f, 0}, {1, 0, 4.5f, 0}};
  EXPECT_FLOAT_EQ(TrainingMean(simple), 2.5f);
  // In float, 1e8 + 1 rounds back to 1e8 and the mean would be 0.
  const std::vector<Rating> wide = {{0, 0, 1e8f, 0}, {0, 1, 1.0f, 0}, {0, 2, -1e8f, 0}};
  EXPECT_FLOAT_EQ(TrainingMean(wide), 1.0f / 3.0f);
}

}  // namespace
}  // namespace fedrec
