// fedavg_decay: a fedrec strategy built outside the tree and loaded as a
// plug-in (docs/plugins.md walks through it).
//
// FedAvg whose server learning rate decays per aggregated round:
//   x <- x + eta_t (avg - x),   eta_t = eta0 * decay^t,
// with x a global row, avg the sites' weighted average of their trained rows
// and t the number of rounds aggregated before this one. Large early steps
// toward the sites' average, smaller ones as the model settles.
//
// It needs only the per-row sums of the sites' updates (NeedsIndividualUpdates
// stays false), so it runs under every secure-aggregation scheme. Its one
// piece of state, t, is a StrategyState scalar: saved with the final model
// (strategy.json) and restored by Restore.
#include <cmath>
#include <memory>
#include <string>

#include "algorithms/strategy.h"
#include "apps/plugin.h"

namespace fedavg_decay {

class FedAvgDecay : public fedrec::Strategy {
 public:
  // REQUIRES: options.params holds eta0 and decay (the registry fills them in).
  explicit FedAvgDecay(const fedrec::StrategyOptions& options)
      : Strategy(options), eta0_(options.Param("eta0")), decay_(options.Param("decay")) {}

  std::string_view name() const override { return "fedavg_decay"; }

  // The server learning rate of the next aggregation.
  double eta() const { return eta0_ * std::pow(decay_, static_cast<double>(aggregated_)); }

  fedrec::Status Aggregate(const fedrec::AggregateInput& input,
                           std::vector<fedrec::ParamBlock>* global) override {
    FEDREC_RETURN_IF_ERROR(fedrec::CheckAggregateShape(name(), input, *global));
    const double step = eta();
    fedrec::ForEachAveragedRow(input, global,
                               [&](size_t b, uint32_t r, std::span<const double> avg) {
                                 fedrec::ParamBlock& block = (*global)[b];
                                 float* row = block.Row(r);
                                 for (uint32_t c = 0; c < block.cols; ++c)
                                   row[c] = static_cast<float>(row[c] + step * (avg[c] - row[c]));
                               });
    ++aggregated_;
    return fedrec::Status::Ok();
  }

  fedrec::StrategyState State() const override {
    fedrec::StrategyState state;
    state.scalars["aggregated"] = static_cast<double>(aggregated_);
    return state;
  }

  fedrec::Status Restore(const fedrec::StrategyState& state) override {
    auto it = state.scalars.find("aggregated");
    const bool whole =
        it != state.scalars.end() && it->second >= 0.0 && it->second == std::floor(it->second);
    if (!whole || state.scalars.size() != 1 || !state.vectors.empty()) {
      return fedrec::Status::InvalidArgument(
          "strategy fedavg_decay: expected a state of one scalar 'aggregated' (a whole number "
          ">= 0), found " +
          std::to_string(state.scalars.size()) + " scalars and " +
          std::to_string(state.vectors.size()) + " vectors" +
          (it != state.scalars.end() ? ", aggregated = " + std::to_string(it->second) : ""));
    }
    aggregated_ = static_cast<uint64_t>(it->second);
    return fedrec::Status::Ok();
  }

 private:
  double eta0_;
  double decay_;
  uint64_t aggregated_ = 0;  // rounds aggregated so far
};

// Registers fedavg_decay with its keys strategy.fedavg_decay.eta0 and .decay.
fedrec::Status Register(const fedrec::PluginRegistries& registries) {
  registries.strategies->Register(
      {"fedavg_decay",
       "FedAvg with a server learning rate eta0 * decay^t after t rounds (a plug-in)",
       {{"eta0", 2.0, "server learning rate of the first round"},
        {"decay", 0.9, "factor applied to the server learning rate after each round, in (0, 1]"}},
       [](const fedrec::StrategyOptions& options)
           -> fedrec::Result<std::unique_ptr<fedrec::Strategy>> {
         const double eta0 = options.Param("eta0");
         const double decay = options.Param("decay");
         if (!(eta0 > 0.0) || !std::isfinite(eta0))
           return fedrec::Status::InvalidArgument(
               "strategy.fedavg_decay.eta0: expected a number > 0, found " + std::to_string(eta0));
         if (!(decay > 0.0 && decay <= 1.0))
           return fedrec::Status::InvalidArgument(
               "strategy.fedavg_decay.decay: expected a number in (0, 1], found " +
               std::to_string(decay));
         return std::unique_ptr<fedrec::Strategy>(std::make_unique<FedAvgDecay>(options));
       }});
  return fedrec::Status::Ok();
}

}  // namespace fedavg_decay

FEDREC_PLUGIN(fedavg_decay::Register)
