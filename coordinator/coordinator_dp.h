// CoordinatorDp: the coordinator's side of differentially private rounds
// (crypto/dp.h): the round's clip norm and noise for the plan, the noise of
// central DP, the fixed-denominator average of the clipped deltas, the
// adaptive clip's update and the RDP accountant.
//
// A private round's decoded sums hold, per upload block, the sum of the
// units' clipped deltas (each row with weight 1 per site), then the dp.count
// block: the sum of units (its weight) and of (unclipped - 1/2) per unit.
// Privatize turns them into what the strategy expects: per row, weight W
// (the round's units, or dp.expected_units when set: then sites weigh the
// count block 1 each and the unit count is never formed) and weighted sum
// W * global + noised sum of deltas, so FedAvg's step is
// global + server_lr * noised sum / W.
//
// Thread-safety: none; owned by the coordinator's thread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "algorithms/strategy.h"
#include "base/param_block.h"
#include "base/status.h"
#include "crypto/dp.h"
#include "crypto/rdp_accountant.h"
#include "protocol/messages.h"

namespace fedrec {

// What a private round reports (RoundMetrics::dp).
struct DpRoundMetrics {
  bool on = false;
  double epsilon = 0.0;  // spent after this round, at delta
  double delta = 0.0;
  uint32_t order = 0;            // the RDP order that gives epsilon
  double clip = 0.0;             // the clip norm of this round
  double noise_stddev = 0.0;     // of the noise in the round's sum of deltas
  double unclipped_share = 0.0;  // noised estimate (adaptive clipping)
  // Units that contributed; with a fixed denominator (dp.expected_units)
  // the count is not known and `units_known` is false.
  uint64_t units = 0;
  bool units_known = true;
};

class CoordinatorDp {
 public:
  // `site_fraction`: the share of sites sampled per round
  // (federation.fraction); `dropout_rate`: the secure aggregation's
  // (security.dropout_rate), which distributed noise is split for
  // (DpShareSites). REQUIRES: ValidateDpOptions(options).ok(),
  // options.mode != kNone.
  CoordinatorDp(const DpOptions& options, uint64_t seed, double site_fraction,
                double dropout_rate = 0.0);

  const DpOptions& options() const { return options_; }
  // The sampling rate of a unit in a round: the site fraction, times the
  // user fraction with dp.unit = user.
  double SamplingRate() const;
  // The round's privacy parameters, and the plan fields that carry them.
  DpRound Round() const;
  void FillPlan(RoundPlan* plan) const;

  // With dp.target_epsilon > 0: whether one more round would spend more than
  // it; *next is what epsilon would then be.
  bool BudgetExhausted(double* next) const;

  // See above. `sums` holds the upload blocks then dp.count; on return it
  // holds the upload blocks only. `global` are the current global blocks,
  // matched to the upload blocks by position and checked by name and size.
  // Aborted (the round leaves the model unchanged) when no unit contributed.
  // Distributed mode: each of the `selected` sites added a share sized for
  // DpShareSites(selected, dropout_rate) sites; when fewer sites' shares
  // reached the sum (sums->sites), the noise in it is smaller and the
  // accountant charges the round at the smaller noise multiplier.
  Status Privatize(uint32_t round, uint32_t selected, const std::vector<ParamBlock>& global,
                   AggregateInput* sums, DpRoundMetrics* metrics);

  double clip() const { return clip_.clip(); }
  const RdpAccountant& accountant() const { return accountant_; }

  // The state between rounds (the clip norm and the accountant) as one line
  // of text, and back; LoadState fails, saying what it expected, on text
  // SaveState did not write.
  std::string SaveState() const;
  Status LoadState(const std::string& state);

 private:
  DpOptions options_;
  uint64_t seed_;
  double site_fraction_;
  AdaptiveClip clip_;
  double dropout_rate_;
  RdpAccountant accountant_;
};

}  // namespace fedrec
