// Byzantine sites, a fault the simulator injects (sim.byzantine_*): a site
// that trains as usual and then sends an attack formed from its honest step
// instead of its trained values. The attack is applied to the model's
// parameters before the upload is formed, so it is the same under every
// aggregation scheme (in the clear, SecAgg, Paillier).
//
// Per value of a kGlobal block in a row the site trained (upload weight > 0),
// with x the global value the site received and t its trained value:
//   scale      x + s (t - x)   a step s times too long
//   sign_flip  x - s (t - x)   a step s times too long the wrong way
//   random     s z, z ~ N(0, 1) from stream (seed, round, site, kDropout),
//              drawn in row-major order over the trained rows
// with s = sim.byzantine_scale. Rows the site did not train, local blocks and
// statistics (kGlobalAverage blocks, e.g. MF's global mean) are sent as
// trained: the robust rules average statistics with the linear ones, and the
// attack is on the parameters they protect.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "algorithms/model.h"
#include "base/param_block.h"
#include "base/status.h"

namespace fedrec {

struct ByzantineAttack {
  enum class Kind : uint8_t { kNone = 0, kScale, kSignFlip, kRandom };
  Kind kind = Kind::kNone;
  double scale = 10.0;
};

// "scale" | "sign_flip" | "random"; an error naming `key` otherwise.
Result<ByzantineAttack::Kind> ParseByzantineAttack(std::string_view name, std::string_view key);

// OK when `model` uploads its kGlobal parameter blocks themselves (gradient
// models such as mf and bpr), which the attack alters; models that upload
// statistics (ials, ease, itemknn, popularity) are refused, naming the model.
Status CheckAttackable(const Model& model);

// Replaces the trained values of `model`'s kGlobal upload blocks by the
// attack's, in the rows the site trained. `received`: the global blocks the
// site trained from. REQUIRES: CheckAttackable(*model) is OK.
void ApplyByzantineAttack(const ByzantineAttack& attack, const std::vector<ParamBlock>& received,
                          uint64_t seed, uint32_t round, uint32_t site, Model* model);

}  // namespace fedrec
