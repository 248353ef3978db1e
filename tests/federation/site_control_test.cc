// SCAFFOLD at a site: the drift it trains with and the control change it
// uploads, against the formulas of Karimireddy et al. (option II).
#include "worker/site_control.h"

#include <gtest/gtest.h>

#include <cmath>

#include "tests/federation/small_mf.h"

namespace fedrec {
namespace {

// The server's control: c = 0.1 * (row + 1) in every column.
std::vector<ParamBlock> ServerControl(const Model& model) {
  std::vector<ParamBlock> control;
  for (const ParamBlock& shape : model.UploadShapes()) {
    if (shape.scope != Scope::kGlobal) continue;
    ParamBlock& c = control.emplace_back(shape.name, Scope::kGlobal, shape.rows, shape.cols);
    for (uint32_t r = 0; r < c.rows; ++r)
      for (uint32_t j = 0; j < c.cols; ++j) c.Row(r)[j] = 0.1f * static_cast<float>(r + 1);
  }
  return control;
}

TEST(SiteControl, UploadsTheChangeOfItsControlByOptionTwoAndKeepsItForTheNextRound) {
  std::unique_ptr<Model> model = SmallMf(11);
  const std::vector<ParamBlock> c = ServerControl(*model);
  SiteControl control;
  ASSERT_TRUE(control.Begin(c, *model).ok());
  ASSERT_TRUE(control.active());
  // First round: c_i = 0, so the drift is c on trained rows and 0 elsewhere.
  const std::vector<ParamBlock>& drift = *control.drift();
  ASSERT_EQ(drift.size(), 2u);  // item_bias, item_factors
  for (const ParamBlock& d : drift) {
    EXPECT_FLOAT_EQ(d.Row(0)[0], 0.1f) << d.name;
    EXPECT_EQ(d.Row(4)[0], 0.0f) << d.name;  // item 4: not trained here
  }
  const std::vector<ParamBlock> x = model->GlobalBlocks();
  TrainPlan plan{1, 0, 2, 0.05f};
  plan.drift = control.drift();
  const LossSums loss = model->Train(plan);
  EXPECT_NEAR(loss.lr_sum, 0.1, 1e-7);  // two epochs at 0.05 (no decay)
  control.Finish(*model, loss.lr_sum);

  const std::vector<ParamBlock> shapes = control.Shapes();
  const std::vector<DenseBlockView> views = control.Views();
  ASSERT_EQ(shapes.size(), 2u);
  EXPECT_EQ(shapes[0].name, "item_bias.control");
  EXPECT_EQ(shapes[1].name, "item_factors.control");
  const std::vector<DenseBlockView> trained = model->Upload();
  std::vector<ParamBlock> second = c;
  for (size_t k = 0; k < 2; ++k) {
    const size_t b = k + 1;  // upload block: global_mean first
    for (uint32_t r = 0; r < 5; ++r) {
      const uint32_t visits = trained[b].weights[r];
      EXPECT_EQ(views[k].weights[r], visits > 0 ? 1u : 0u) << r;
      for (uint32_t j = 0; j < shapes[k].cols; ++j) {
        const size_t i = static_cast<size_t>(r) * shapes[k].cols + j;
        // dc = (x - y) / (visits * lr_sum) - c.
        const double expected =
            visits > 0 ? (x[b].data[i] - trained[b].values[i]) / (visits * 0.1) - c[k].data[i]
                       : 0.0;
        EXPECT_NEAR(views[k].values[i], expected, 1e-4 * (1 + std::abs(expected))) << r;
        second[k].data[i] = c[k].data[i] + 1.0f;  // next round's server control
      }
    }
  }
  // Next round: the drift is the new c minus c_i = 0 + dc (its change kept).
  std::vector<float> kept(views[1].values.begin(), views[1].values.end());
  control.End();
  EXPECT_TRUE(control.Shapes().empty());
  ASSERT_TRUE(control.Begin(second, *model).ok());
  const ParamBlock& d = (*control.drift())[1];
  for (uint32_t j = 0; j < d.cols; ++j) {
    const float c_i = kept[j];
    EXPECT_NEAR(d.Row(0)[j], second[1].Row(0)[j] - c_i, 1e-5);
  }
}

TEST(SiteControl, ControlOfAnotherShapeIsRefusedSayingWhatWasExpected) {
  std::unique_ptr<Model> model = SmallMf(11);
  std::vector<ParamBlock> c = ServerControl(*model);
  c[1].cols = 4;
  SiteControl control;
  const Status refused = control.Begin(c, *model);
  EXPECT_EQ(refused.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(refused.message().find("expected block 'item_factors' 5x3, found 'item_factors' 5x4"),
            std::string::npos)
      << refused.message();
  EXPECT_FALSE(control.active());
  c.pop_back();
  EXPECT_NE(control.Begin(c, *model).message().find("expected 2 blocks"), std::string::npos);
}

}  // namespace
}  // namespace fedrec
