// SiteControl: a site's side of SCAFFOLD (Karimireddy et al., ICML 2020,
// option II), per row of the global blocks.
//
// The site keeps its control variate c_i (rows it trains only, across
// rounds). In a round whose plan carries the server's c it trains with every
// step corrected by c - c_i (Model::Train with TrainPlan::drift), then forms
//   dc_i = (x - y) / (visits lr_sum) - c,   c_i += dc_i
// for each row it trained (x: the round's global row, y: its trained row,
// visits: its interactions of the row per epoch, lr_sum: the epochs' summed
// learning rates) and uploads dc_i, weight 1 per trained row, as the
// "<block>.control" blocks after the model's (ControlShapes).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "algorithms/model.h"
#include "base/param_block.h"
#include "base/status.h"

namespace fedrec {

class SiteControl {
 public:
  // Starts a round with the server's control variates: checks they are one
  // block per kGlobal upload block of `model` with its name and shape (the
  // error says what was expected and found), keeps the round's global rows
  // this site trains and forms the drift c - c_i. REQUIRES: the model holds
  // the round's global blocks and SupportsControlVariates().
  Status Begin(const std::vector<ParamBlock>& server, const Model& model);
  bool active() const { return active_; }
  // The drift for TrainPlan::drift (dense, one block per control block).
  const std::vector<ParamBlock>* drift() const { return &drift_; }
  // After training: dc_i and c_i (lr_sum from Model::Train's LossSums).
  void Finish(const Model& model, double lr_sum);
  // The upload blocks of dc_i: shapes, and views valid until the next Begin
  // or End. Empty when no round with control variates is in progress.
  std::vector<ParamBlock> Shapes() const;
  std::vector<DenseBlockView> Views() const;
  // Ends the round: frees what only the round needed (c_i stays).
  void End();

  // Checkpoints (worker/site_state.h): c_i between rounds, as bytes (empty
  // when the site holds none), and back. Load refuses bytes that do not
  // parse, naming `where`, and then changes nothing; call it before the
  // first round.
  std::string Save() const;
  Status Load(const std::string& bytes, const std::string& where);

 private:
  struct Block {
    std::string name;
    uint32_t rows = 0, cols = 0;
    size_t upload_index = 0;        // in the model's upload blocks
    std::vector<uint32_t> trained;  // rows with interactions, ascending
    std::vector<float> local;       // c_i over `trained`, compact; empty = zeros
    std::vector<float> anchor;      // x over `trained`, this round
    std::vector<float> delta;       // dc_i, dense rows * cols, after Finish
    std::vector<uint32_t> weights;  // 1 for trained rows
  };
  bool active_ = false;
  std::vector<Block> blocks_;
  std::vector<ParamBlock> server_;  // c, this round
  std::vector<ParamBlock> drift_;   // c - c_i, this round
};

}  // namespace fedrec
