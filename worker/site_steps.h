// SiteSteps: a site's side of FedNova (Wang et al., NeurIPS 2020), per row of
// the global blocks.
//
// In a round whose plan asks for it (RoundPlan::steps_unit > 0), the site
// keeps the round's global rows x it trains, trains as usual to y, and then
// replaces each trained row by its normalized step
//   x + (y - x) / (epsilon w)
// where w is the row's upload weight (its visits per epoch, capped as the
// fixed-point format caps it) and epsilon = lr_sum / (lr_first steps_unit)
// the site's epochs at its starting rate: w epsilon is the row's local steps
// tau. It uploads, after the model's blocks, the "<block>.steps" blocks
// (StepShapes): per trained row (epsilon, 1 / w) with weight w, whose sums
// give the coordinator sum_i tau_i and the number of sites. Rows it did not
// train are zero with weight zero, as in every update.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "algorithms/model.h"
#include "base/param_block.h"
#include "base/status.h"

namespace fedrec {

class SiteSteps {
 public:
  // Starts a round: keeps the global rows of `model` this site trains.
  // `unit` is the plan's steps_unit (> 0), `max_weight` the weight cap of the
  // round's fixed-point format (UINT64_MAX when sums are in the clear).
  // Error when unit is not a finite number > 0. REQUIRES: the model holds the
  // round's global blocks and CountsLocalSteps().
  Status Begin(const Model& model, float unit, uint64_t max_weight);
  bool active() const { return active_; }
  // After training: normalizes the trained rows of `model` in place and
  // fills the steps blocks (loss from Model::Train).
  void Finish(Model* model, const LossSums& loss);
  // The steps blocks: shapes, and views valid until the next Begin or End.
  // Empty when no such round is in progress.
  std::vector<ParamBlock> Shapes() const;
  std::vector<DenseBlockView> Views() const;
  void End();

 private:
  struct Block {
    std::string name;
    uint32_t rows = 0, cols = 0;
    std::vector<uint32_t> weights;  // the row's upload weight (0: not trained)
    std::vector<uint32_t> trained;  // rows with a weight, ascending
    std::vector<float> anchor;      // x over `trained`
    std::vector<float> steps;       // rows * 2: (epsilon, 1 / w), after Finish
  };
  bool active_ = false;
  float unit_ = 1.0f;
  uint64_t max_weight_ = UINT64_MAX;
  std::vector<Block> blocks_;
};

}  // namespace fedrec
