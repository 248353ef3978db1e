// Biased matrix factorization: r_hat(u, i) = mu + b_u + b_i + p_u . q_i.
//
// Blocks (fixed order): global "global_mean" (1 x 1), "item_bias" (items x 1),
// "item_factors" (items x k); local "user_bias" (users x 1), "user_factors"
// (users x k). User indices are local to the model (a site's own users); the
// caller keeps the map to global user IDs for initialization.
//
// Thread-safety: none; one model per thread.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/param_block.h"

namespace fedrec {

struct MfInitOptions {
  float init_std = 0.1f;  // factor entries ~ N(0, init_std^2); biases start at 0
  uint64_t seed = 1;
};

class MfModel {
 public:
  static constexpr const char* kGlobalMean = "global_mean";
  static constexpr const char* kItemBias = "item_bias";
  static constexpr const char* kItemFactors = "item_factors";
  static constexpr const char* kUserBias = "user_bias";
  static constexpr const char* kUserFactors = "user_factors";

  MfModel() : MfModel(0, 0, 1) {}
  // allocate_global = false leaves the item blocks empty (shape only) until
  // values are set (a site's, whose coordinator sends them).
  MfModel(uint32_t users, uint32_t items, uint32_t factors, bool allocate_global = true);

  // Item rows i are drawn from stream (seed, 0, i, kInitItem), so every site and
  // the coordinator draw the same initial global model.
  void InitGlobal(const MfInitOptions& options);
  // Item i's initial factors (k floats at `out`) as InitGlobal draws them: a
  // shard server that holds only some items draws the same values.
  static void InitItemRow(const MfInitOptions& options, uint32_t item, float* out, uint32_t k);
  // User row u is drawn from stream (seed, 0, user_keys[u], kInitUser) (key u
  // when user_keys is empty). With keys from the raw user IDs (StableIdKey), a
  // user's initial factors depend neither on which site holds the user nor on
  // how the site numbers its users.
  void InitUsers(const MfInitOptions& options, std::span<const uint64_t> user_keys = {});

  float Predict(uint32_t user, uint32_t item) const;

  uint32_t users() const { return users_; }
  uint32_t items() const { return items_; }
  uint32_t factors() const { return factors_; }

  float global_mean() const { return blocks_[0].data[0]; }
  void set_global_mean(float mu) { blocks_[0].data[0] = mu; }
  float* item_bias() { return blocks_[1].data.data(); }
  const float* item_bias() const { return blocks_[1].data.data(); }
  float* item_factors() { return blocks_[2].data.data(); }
  const float* item_factors() const { return blocks_[2].data.data(); }
  float* user_bias() { return blocks_[3].data.data(); }
  const float* user_bias() const { return blocks_[3].data.data(); }
  float* user_factors() { return blocks_[4].data.data(); }
  const float* user_factors() const { return blocks_[4].data.data(); }

  // All blocks, global first.
  std::vector<ParamBlock>& blocks() { return blocks_; }
  const std::vector<ParamBlock>& blocks() const { return blocks_; }

  // Copies of the global blocks (what the coordinator holds).
  std::vector<ParamBlock> GlobalBlocks() const;
  // Overwrites the global blocks from `global` (matched by name; shapes must
  // agree). Returns false when a block is missing or misshapen.
  bool SetGlobalBlocks(const std::vector<ParamBlock>& global);

 private:
  uint32_t users_, items_, factors_;
  std::vector<ParamBlock> blocks_;
};

}  // namespace fedrec
