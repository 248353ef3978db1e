// SiteDp: a site's side of differentially private rounds (crypto/dp.h).
//
// In a round whose plan asks for it (RoundPlan::dp_mode != 0), the site
// checks the plan's privacy parameters against its own configuration (it
// never takes less noise than it was configured with, whatever the
// coordinator says), then trains:
//   dp_unit = site: as usual, then its change of the global blocks
//     (trained - received) is clipped to L2 norm dp_clip: one unit;
//   dp_unit = user: Model::TrainClippedPerUser: each sampled user's change
//     clipped to dp_clip and summed: one unit per user.
// Its upload is that (clipped) change with weight 1 on every row, followed
// by the dp.count block (DpCountShape): weight = its units, value =
// (unclipped units - units / 2) / units. In distributed mode it also adds
// its Skellam share of the round's noise to its encoded update (NoiseShares)
// before secure aggregation masks it.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "algorithms/model.h"
#include "base/param_block.h"
#include "base/status.h"
#include "crypto/dp.h"
#include "protocol/messages.h"

namespace fedrec {

class SiteDp {
 public:
  // Starts a round. OK and inactive when neither the plan nor `own` asks for
  // DP; an error when they disagree (mode or unit), when the plan's noise is
  // below what `own` requires for its clip, or when its values are not
  // finite and in range. REQUIRES: the model holds the round's global blocks.
  Status Begin(const Model& model, const RoundPlan& plan, const DpOptions& own);
  bool active() const { return active_; }

  // Trains the round (see above); `train` is the site's usual training.
  Result<LossSums> Train(Model* model, const TrainPlan& plan, uint64_t seed,
                         const std::function<Result<LossSums>(const TrainPlan&)>& train);

  // The upload: the model's upload shapes and then dp.count; views valid
  // until the next Begin or End.
  std::vector<ParamBlock> Shapes() const;
  std::vector<DenseBlockView> Views() const;

  // Distributed mode: this site's noise shares over its encoded upload (the
  // Shapes() blocks, then the training-loss row, which gets none) when
  // `sites` sites share the round's noise; an adder of no noise otherwise.
  NoiseShareAdder NoiseShares(uint32_t frac_bits, uint32_t sites, uint64_t seed, uint32_t round,
                              uint32_t site) const;

  void End();

 private:
  bool active_ = false;
  DpRound round_;
  // dp.expected_units (0: none): with it the count block has weight 1 and
  // value (unclipped - units / 2) / expected_units, so no unit count is sent.
  double expected_units_ = 0.0;
  // The count block's weight and value from a round's units and how many
  // of them were within the clip.
  void SetCount(uint32_t units, double unclipped);
  std::vector<ParamBlock> anchor_;  // dp_unit = site: the global blocks received
  std::vector<ParamBlock> delta_;   // shaped as the model's upload
  std::vector<std::vector<uint32_t>> ones_;
  uint32_t units_ = 0;
  float count_value_ = 0.0f;
};

}  // namespace fedrec
