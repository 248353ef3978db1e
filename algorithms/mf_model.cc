#include "algorithms/mf_model.h"

#include <algorithm>
#include <cassert>

#include "base/random.h"

namespace fedrec {

namespace {

// Fills `count` floats at `out` with N(0, std^2) draws from `rng`, in order.
void FillNormal(Rng& rng, float stddev, float* out, uint32_t count) {
  for (uint32_t c = 0; c < count; ++c) {
    out[c] = static_cast<float>(static_cast<double>(stddev) * rng.Normal());
  }
}

}  // namespace

MfModel::MfModel(uint32_t users, uint32_t items, uint32_t factors, bool allocate_global)
    : users_(users), items_(items), factors_(factors) {
  blocks_.reserve(5);
  blocks_.emplace_back(kGlobalMean, Scope::kGlobalAverage, 1, 1);
  for (const auto& [name, cols] : {std::pair{kItemBias, 1u}, {kItemFactors, factors}}) {
    if (allocate_global) {
      blocks_.emplace_back(name, Scope::kGlobal, items, cols);
    } else {
      ParamBlock& shape = blocks_.emplace_back();
      shape.name = name;
      shape.scope = Scope::kGlobal;
      shape.rows = items;
      shape.cols = cols;
    }
  }
  blocks_.emplace_back(kUserBias, Scope::kLocal, users, 1);
  blocks_.emplace_back(kUserFactors, Scope::kLocal, users, factors);
}

// The global mean is left as it is: the caller sets it (usually TrainingMean),
// before or after initialisation.
void MfModel::InitGlobal(const MfInitOptions& options) {
  std::fill(blocks_[1].data.begin(), blocks_[1].data.end(), 0.0f);
  ParamBlock& q = blocks_[2];
  for (uint32_t i = 0; i < items_; ++i) InitItemRow(options, i, q.Row(i), factors_);
}

void MfModel::InitItemRow(const MfInitOptions& options, uint32_t item, float* out, uint32_t k) {
  Rng rng(options.seed, 0, item, Purpose::kInitItem);
  FillNormal(rng, options.init_std, out, k);
}

void MfModel::InitUsers(const MfInitOptions& options, std::span<const uint64_t> user_keys) {
  assert(user_keys.empty() || user_keys.size() == users_);
  std::fill(blocks_[3].data.begin(), blocks_[3].data.end(), 0.0f);
  ParamBlock& p = blocks_[4];
  for (uint32_t u = 0; u < users_; ++u) {
    const uint64_t site = user_keys.empty() ? u : user_keys[u];
    Rng rng(options.seed, 0, site, Purpose::kInitUser);
    FillNormal(rng, options.init_std, p.Row(u), factors_);
  }
}

float MfModel::Predict(uint32_t user, uint32_t item) const {
  assert(user < users_ && item < items_);
  const float* p = blocks_[4].Row(user);
  const float* q = blocks_[2].Row(item);
  float dot = 0.0f;
  for (uint32_t c = 0; c < factors_; ++c) dot += p[c] * q[c];
  return global_mean() + user_bias()[user] + item_bias()[item] + dot;
}

std::vector<ParamBlock> MfModel::GlobalBlocks() const { return CopyGlobalBlocks(blocks_); }

bool MfModel::SetGlobalBlocks(const std::vector<ParamBlock>& global) {
  return AssignGlobalBlocks(global, &blocks_);
}

}  // namespace fedrec
