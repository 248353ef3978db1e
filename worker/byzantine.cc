#include "worker/byzantine.h"

#include <string>

#include "base/random.h"

namespace fedrec {

Result<ByzantineAttack::Kind> ParseByzantineAttack(std::string_view name, std::string_view key) {
  if (name == "scale") return ByzantineAttack::Kind::kScale;
  if (name == "sign_flip") return ByzantineAttack::Kind::kSignFlip;
  if (name == "random") return ByzantineAttack::Kind::kRandom;
  return Status::InvalidArgument("config " + std::string(key) +
                                 ": expected scale, sign_flip or random, found \"" +
                                 std::string(name) + "\"");
}

Status CheckAttackable(const Model& model) {
  const std::vector<ParamBlock> shapes = model.UploadShapes();
  for (const ParamBlock& shape : shapes) {
    if (shape.scope != Scope::kGlobal) continue;
    const ParamBlock* block = FindBlock(model.blocks(), shape.name);
    if (block != nullptr && block->scope == Scope::kGlobal && block->rows == shape.rows &&
        block->cols == shape.cols)
      continue;
    return Status::InvalidArgument(
        "Byzantine sites (sim.byzantine_fraction > 0) alter the parameters a site uploads; "
        "expected a model that uploads its parameter blocks, found model " +
        std::string(model.name()) + ", whose upload block '" + shape.name +
        "' is a statistic, not one of its parameter blocks");
  }
  return Status::Ok();
}

void ApplyByzantineAttack(const ByzantineAttack& attack, const std::vector<ParamBlock>& received,
                          uint64_t seed, uint32_t round, uint32_t site, Model* model) {
  if (attack.kind == ByzantineAttack::Kind::kNone) return;
  const std::vector<ParamBlock> shapes = model->UploadShapes();
  // The row weights, copied: the views read the blocks being changed.
  std::vector<std::vector<uint32_t>> weights;
  for (const DenseBlockView& view : model->Upload())
    weights.emplace_back(view.weights.begin(), view.weights.end());
  Rng rng(seed, round, site, Purpose::kDropout);
  const double s = attack.scale;
  for (size_t b = 0; b < shapes.size(); ++b) {
    if (shapes[b].scope != Scope::kGlobal) continue;
    ParamBlock* block = FindBlock(model->blocks(), shapes[b].name);
    const ParamBlock* before = FindBlock(received, shapes[b].name);
    if (block == nullptr || before == nullptr || before->data.size() != block->data.size())
      continue;  // excluded by CheckAttackable
    for (uint32_t r = 0; r < block->rows; ++r) {
      if (weights[b][r] == 0) continue;
      float* t = block->Row(r);
      const float* x = before->Row(r);
      for (uint32_t c = 0; c < block->cols; ++c) {
        const double step = static_cast<double>(t[c]) - x[c];
        switch (attack.kind) {
          case ByzantineAttack::Kind::kScale:
            t[c] = static_cast<float>(x[c] + s * step);
            break;
          case ByzantineAttack::Kind::kSignFlip:
            t[c] = static_cast<float>(x[c] - s * step);
            break;
          case ByzantineAttack::Kind::kRandom:
            t[c] = static_cast<float>(s * rng.Normal());
            break;
          case ByzantineAttack::Kind::kNone:
            break;
        }
      }
    }
  }
}

}  // namespace fedrec
