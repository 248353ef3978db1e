#include "worker/site_steps.h"

#include <algorithm>
#include <cmath>

namespace fedrec {

Status SiteSteps::Begin(const Model& model, float unit, uint64_t max_weight) {
  End();
  if (!(unit > 0.0f && std::isfinite(unit))) {
    return Status::InvalidArgument(
        "round plan: expected a steps unit that is a finite number > 0 (FedNova), found " +
        std::to_string(unit));
  }
  unit_ = unit;
  max_weight_ = std::max<uint64_t>(max_weight, 1);
  const std::vector<ParamBlock> shapes = model.UploadShapes();
  const std::vector<DenseBlockView> views = model.Upload();
  blocks_.clear();
  for (size_t b = 0; b < shapes.size(); ++b) {
    if (shapes[b].scope != Scope::kGlobal) continue;
    Block& block = blocks_.emplace_back();
    block.name = shapes[b].name;
    block.rows = shapes[b].rows;
    block.cols = shapes[b].cols;
    block.weights.assign(views[b].weights.begin(), views[b].weights.end());
    for (uint32_t r = 0; r < block.rows; ++r) {
      if (block.weights[r] == 0) continue;
      block.trained.push_back(r);
      const float* x = views[b].values.data() + static_cast<size_t>(r) * block.cols;
      block.anchor.insert(block.anchor.end(), x, x + block.cols);
    }
  }
  active_ = true;
  return Status::Ok();
}

void SiteSteps::Finish(Model* model, const LossSums& loss) {
  if (!active_) return;
  const double epochs = loss.lr_first > 0.0 ? loss.lr_sum / (loss.lr_first * unit_) : 0.0;
  for (Block& block : blocks_) {
    block.steps.assign(static_cast<size_t>(block.rows) * 2, 0.0f);
    ParamBlock* trained = FindBlock(model->blocks(), block.name);
    for (size_t i = 0; i < block.trained.size(); ++i) {
      const uint32_t r = block.trained[i];
      const double w = static_cast<double>(std::min<uint64_t>(block.weights[r], max_weight_));
      block.steps[2 * static_cast<size_t>(r)] = static_cast<float>(epochs);
      block.steps[2 * static_cast<size_t>(r) + 1] = static_cast<float>(1.0 / w);
      // UploadShapes blocks that are not parameter blocks (statistics) are
      // not normalized: the strategy is refused for such models.
      if (trained == nullptr || !(epochs > 0.0)) continue;
      float* y = trained->Row(r);
      const float* x = block.anchor.data() + i * block.cols;
      for (uint32_t c = 0; c < block.cols; ++c)
        y[c] = static_cast<float>(x[c] + (static_cast<double>(y[c]) - x[c]) / (epochs * w));
    }
  }
}

std::vector<ParamBlock> SiteSteps::Shapes() const {
  std::vector<ParamBlock> shapes;
  if (!active_) return shapes;
  for (const Block& block : blocks_) {
    ParamBlock& shape = shapes.emplace_back();
    shape.name = block.name + ".steps";
    shape.scope = Scope::kGlobal;
    shape.rows = block.rows;
    shape.cols = 2;
  }
  return shapes;
}

std::vector<DenseBlockView> SiteSteps::Views() const {
  std::vector<DenseBlockView> views;
  if (!active_) return views;
  for (const Block& block : blocks_) views.push_back(DenseBlockView{block.weights, block.steps});
  return views;
}

void SiteSteps::End() {
  active_ = false;
  blocks_.clear();
}

}  // namespace fedrec
