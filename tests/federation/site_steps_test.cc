// FedNova at a site: the normalized update and the steps it uploads, against
// the formulas of Wang et al. (worker/site_steps.h).
#include "worker/site_steps.h"

#include <gtest/gtest.h>

#include <cmath>

#include "tests/federation/small_mf.h"

namespace fedrec {
namespace {

TEST(SiteSteps, UploadsEachTrainedRowsStepDividedByItsLocalStepsAndTheSteps) {
  std::unique_ptr<Model> model = SmallMf(12, 0.5f);
  ASSERT_TRUE(model->CountsLocalSteps());
  const std::vector<ParamBlock> x = model->GlobalBlocks();
  const std::vector<DenseBlockView> before = model->Upload();
  std::vector<std::vector<uint32_t>> visits;
  for (const DenseBlockView& v : before) visits.emplace_back(v.weights.begin(), v.weights.end());
  SiteSteps steps;
  // Unit 4: the plan's most epochs; weights capped at 12 as the format caps them.
  ASSERT_TRUE(steps.Begin(*model, 4.0f, 12).ok());
  const TrainPlan plan{1, 0, 2, 0.05f};
  const LossSums loss = model->Train(plan);
  EXPECT_NEAR(loss.lr_first, 0.05, 1e-9);
  EXPECT_NEAR(loss.lr_sum, 0.075, 1e-7);                    // 0.05 + 0.025
  const std::vector<ParamBlock> y = model->GlobalBlocks();  // trained, not yet normalized
  steps.Finish(model.get(), loss);
  const double epsilon = 0.075 / (0.05 * 4.0);  // 1.5 epochs at 0.05, in units of 4

  const std::vector<ParamBlock> shapes = steps.Shapes();
  const std::vector<DenseBlockView> views = steps.Views();
  ASSERT_EQ(shapes.size(), 2u);  // item_bias, item_factors (not the global mean)
  EXPECT_EQ(shapes[0].name, "item_bias.steps");
  EXPECT_EQ(shapes[1].cols, 2u);
  const std::vector<DenseBlockView> normalized = model->Upload();
  for (size_t k = 0; k < 2; ++k) {
    const size_t b = k + 1;  // upload block: global mean first
    for (uint32_t r = 0; r < 5; ++r) {
      const uint32_t w = visits[b][r];
      EXPECT_EQ(views[k].weights[r], w) << r;
      const double capped = std::min<uint32_t>(w, 12);
      EXPECT_NEAR(views[k].values[2 * r], w > 0 ? epsilon : 0.0, 1e-6) << r;
      EXPECT_NEAR(views[k].values[2 * r + 1], w > 0 ? 1.0 / capped : 0.0, 1e-6) << r;
      for (uint32_t c = 0; c < x[b].cols; ++c) {
        const size_t i = static_cast<size_t>(r) * x[b].cols + c;
        const double expected =
            w > 0 ? x[b].data[i] + (y[b].data[i] - x[b].data[i]) / (epsilon * capped)
                  : x[b].data[i];
        EXPECT_NEAR(normalized[b].values[i], expected, 1e-5) << r;
      }
    }
  }
  // The global mean (a kGlobalAverage block) is uploaded as trained.
  EXPECT_EQ(normalized[0].values[0], y[0].data[0]);
  steps.End();
  EXPECT_TRUE(steps.Shapes().empty());
}

TEST(SiteSteps, AUnitThatIsNotAPositiveNumberIsRefusedSayingWhatWasFound) {
  std::unique_ptr<Model> model = SmallMf(12, 0.5f);
  SiteSteps steps;
  for (float unit : {-1.0f, std::nanf(""), INFINITY}) {
    const Status refused = steps.Begin(*model, unit, 100);
    EXPECT_EQ(refused.code(), Status::Code::kInvalidArgument);
    EXPECT_NE(refused.message().find("expected a steps unit that is a finite number > 0"),
              std::string::npos)
        << refused.message();
    EXPECT_FALSE(steps.active());
  }
}

}  // namespace
}  // namespace fedrec
