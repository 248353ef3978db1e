// UpdateAggregator: folds the sites' updates of one round into the per-row
// weighted sums a Strategy consumes (AggregateInput).
//
// Updates are folded in ascending site order, whatever order they arrive in,
// so the floating-point sums (and the model) do not depend on timing. An
// update waits only until every site before it has answered or failed, then is
// folded and dropped: nothing individual outlives its turn, unless the
// strategy needs individual updates (keep_updates), when each folded update is
// also kept, laid out densely, in AggregateInput::updates.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "algorithms/strategy.h"
#include "base/param_block.h"
#include "base/status.h"
#include "protocol/messages.h"

namespace fedrec {

class UpdateAggregator {
 public:
  // `global` gives the block shapes (names, rows, cols; values are not read;
  // it must outlive the aggregator);
  // `version` is the model version the sites were sent; `selected` ascending;
  // `keep_updates`: keep each folded update for the strategy (memory: one
  // dense copy of the upload per reporting site).
  UpdateAggregator(const std::vector<ParamBlock>& global, uint64_t version, uint32_t round,
                   std::vector<uint32_t> selected, bool keep_updates = false);

  // Validates `update` against the model (version, block names, columns, rows)
  // and folds it in its turn. On error the site counts as failed and the
  // message names the site and round.
  Status Add(uint32_t site, ModelUpdate update);
  // Marks a site as failed (error, invalid update, timeout).
  void Fail(uint32_t site);
  // Folds what is still pending, skipping sites that never answered.
  // REQUIRES: called once, last.
  AggregateInput Finish();

  uint32_t failures() const { return static_cast<uint32_t>(failed_.size()); }
  double train_squared_error() const { return train_squared_; }
  uint64_t train_count() const { return train_count_; }

 private:
  Status Validate(const ModelUpdate& update, uint32_t site) const;
  void Fold(uint32_t site, const ModelUpdate& update);
  void Advance(bool finishing);

  const std::vector<ParamBlock>& global_;
  uint64_t version_;
  uint32_t round_;
  std::vector<uint32_t> selected_;
  bool keep_updates_;
  size_t next_ = 0;
  std::map<uint32_t, ModelUpdate> pending_;
  std::set<uint32_t> failed_;
  AggregateInput input_;
  double train_squared_ = 0.0;
  uint64_t train_count_ = 0;
};

}  // namespace fedrec
