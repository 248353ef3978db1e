// Strategy: the aggregation algorithm, a plug-in registered by name.
//
// A strategy picks the sites of a round and turns what the coordinator learnt
// from them into the next global model. It does no I/O. Linear strategies
// (FedAvg family) only need the per-row *sums* of the sites' weighted values,
// which is all the coordinator learns under secure aggregation; a strategy that
// needs individual updates says so, and combining it with secure aggregation is
// refused.
//
// Adding a strategy: one new file with a Strategy subclass and one
// StrategyRegistry::Register call (a plug-in library does the same on the
// registry the application hands it).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/param_block.h"
#include "base/status.h"

namespace fedrec {

// What the coordinator learnt from the sites of one round: for each global block
// (same order as the model), the per-row sums over sites s of w_{s,r} and of
// w_{s,r} * value_{s,r,c}, where value is the site's locally trained parameter
// and w its weight for that row (its training ratings of the row).
struct AggregateInput {
  uint32_t round = 0;
  std::vector<std::vector<double>> weighted_sum;  // [block][row * cols + c]
  std::vector<std::vector<double>> row_weight;    // [block][row]
  uint32_t sites = 0;                             // sites whose update is in the sums
  uint32_t failures = 0;                          // selected sites that failed or timed out
};

struct StrategyOptions {
  double server_lr = 1.0;  // step toward the sites' average: 1 = plain FedAvg
};

class Strategy {
 public:
  virtual ~Strategy() = default;
  virtual std::string_view name() const = 0;

  // True when the rule needs each site's update in the clear (median, Krum...).
  virtual bool NeedsIndividualUpdates() const { return false; }

  // Sites taking part in `round`, ascending. Default: a uniform sample of
  // max(1, round(fraction * num_sites)) sites from stream (seed, round, 0, kSample).
  virtual std::vector<uint32_t> SelectSites(uint32_t round, uint32_t num_sites, double fraction,
                                            uint64_t seed) const;

  // Forms the next global model in place. Rows with zero total weight keep
  // their value. Error when the input does not match the model's shape.
  virtual Status Aggregate(const AggregateInput& input, std::vector<ParamBlock>* global) = 0;
};

// FedAvg with per-row weights: row r becomes old + server_lr * (avg_r - old),
// avg_r = weighted_sum_r / row_weight_r (exactly the sites' value when one site
// trained it and server_lr = 1). Blocks of scope kGlobalAverage take avg_r.
class FedAvg : public Strategy {
 public:
  explicit FedAvg(const StrategyOptions& options) : options_(options) {}
  std::string_view name() const override { return "fedavg"; }
  Status Aggregate(const AggregateInput& input, std::vector<ParamBlock>* global) override;

 private:
  StrategyOptions options_;
};

using StrategyFactory =
    std::function<Result<std::unique_ptr<Strategy>>(const StrategyOptions& options)>;

class StrategyRegistry {
 public:
  // A registry holding the built-in strategies ("fedavg").
  static StrategyRegistry WithBuiltins();
  void Register(const std::string& name, StrategyFactory factory);
  // Error lists the registered names when `name` is unknown.
  Result<std::unique_ptr<Strategy>> Create(const std::string& name,
                                           const StrategyOptions& options) const;
  std::vector<std::string> Names() const;

 private:
  std::map<std::string, StrategyFactory> factories_;
};

}  // namespace fedrec
