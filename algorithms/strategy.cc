#include "algorithms/strategy.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "base/random.h"

namespace fedrec {

double StrategyOptions::Param(const std::string& key) const { return ParamOf(params, key); }

std::vector<uint32_t> Strategy::Sample(uint32_t count, uint32_t want, uint64_t seed,
                                       uint32_t round) {
  std::vector<uint32_t> all(count);
  std::iota(all.begin(), all.end(), 0u);
  if (want >= count) return all;
  Rng rng(seed, round, 0, Purpose::kSample);
  // Partial Fisher-Yates: the first `want` entries are a uniform sample.
  for (uint32_t i = 0; i < want; ++i) {
    const uint32_t j = i + static_cast<uint32_t>(rng.Below(count - i));
    std::swap(all[i], all[j]);
  }
  all.resize(want);
  std::sort(all.begin(), all.end());
  return all;
}

RoundConfig Strategy::ConfigureRound(const RoundContext& context) {
  RoundConfig config;
  config.instructions = options_.instructions;
  const uint32_t available = static_cast<uint32_t>(context.available.size());
  if (available == 0 || available < options_.min_available) {
    config.skip_reason = std::to_string(available) + " sites available, fewer than " +
                         std::to_string(std::max<uint32_t>(options_.min_available, 1)) +
                         " (federation.min_available)";
    return config;
  }
  // The same share of the whole federation as when every site is available.
  uint32_t want = available;
  if (options_.fraction < 1.0) {
    want = static_cast<uint32_t>(std::llround(options_.fraction * context.num_sites));
  }
  want = std::clamp<uint32_t>(want, std::min(std::max<uint32_t>(options_.min_sites, 1), available),
                              available);
  for (uint32_t i : Sample(available, want, options_.seed, context.round))
    config.sites.push_back(context.available[i]);
  const uint32_t lo = options_.instructions.local_epochs;
  if (options_.local_epochs_max > lo) {
    for (uint32_t site : config.sites) {
      Rng rng(options_.seed, context.round, site, Purpose::kLocalEpochs);
      SiteInstructions& own = config.per_site[site] = options_.instructions;
      own.local_epochs = lo + static_cast<uint32_t>(rng.Below(options_.local_epochs_max - lo + 1));
    }
  }
  return config;
}

Status Strategy::Restore(const StrategyState& state) {
  if (state == StrategyState{}) return Status::Ok();
  return Status::InvalidArgument("strategy " + std::string(name()) +
                                 " keeps no state, found a state of " +
                                 std::to_string(state.vectors.size()) + " vectors and " +
                                 std::to_string(state.scalars.size()) + " scalars");
}

std::vector<ParamBlock> ControlShapes(const std::vector<ParamBlock>& upload) {
  std::vector<ParamBlock> shapes;
  for (const ParamBlock& b : upload) {
    if (b.scope != Scope::kGlobal) continue;
    ParamBlock shape = ShapeOf(b);
    shape.name += ".control";
    shapes.push_back(std::move(shape));
  }
  return shapes;
}

std::vector<ParamBlock> StepShapes(const std::vector<ParamBlock>& upload) {
  std::vector<ParamBlock> shapes;
  for (const ParamBlock& b : upload) {
    if (b.scope != Scope::kGlobal) continue;
    ParamBlock& shape = shapes.emplace_back();
    shape.name = b.name + ".steps";
    shape.scope = Scope::kGlobal;
    shape.rows = b.rows;
    shape.cols = 2;
  }
  return shapes;
}

std::vector<ParamBlock> SiteExtraShapes(const Strategy& strategy,
                                        const std::vector<ParamBlock>& upload) {
  if (strategy.UsesControlVariates()) return ControlShapes(upload);
  if (strategy.NormalizesUpdates()) return StepShapes(upload);
  return {};
}

Status CheckAggregateShape(std::string_view strategy, const AggregateInput& input,
                           const std::vector<ParamBlock>& global,
                           const std::vector<ParamBlock>& extra) {
  const std::string who(strategy);
  const size_t blocks = global.size() + extra.size();
  if (input.weighted_sum.size() != blocks || input.row_weight.size() != blocks) {
    return Status::InvalidArgument(
        who + ": aggregate has " + std::to_string(input.weighted_sum.size()) +
        " blocks, expected " + std::to_string(blocks) + " (the global model's " +
        std::to_string(global.size()) + " and " + std::to_string(extra.size()) + " more)");
  }
  for (size_t b = 0; b < blocks; ++b) {
    const ParamBlock& block = b < global.size() ? global[b] : extra[b - global.size()];
    const size_t values = static_cast<size_t>(block.rows) * block.cols;
    if (input.row_weight[b].size() != block.rows || input.weighted_sum[b].size() != values) {
      return Status::InvalidArgument(who + ": block '" + block.name + "' has shape " +
                                     std::to_string(block.rows) + "x" + std::to_string(block.cols) +
                                     ", the aggregate has " +
                                     std::to_string(input.row_weight[b].size()) + " rows and " +
                                     std::to_string(input.weighted_sum[b].size()) + " values");
    }
  }
  return Status::Ok();
}

void ForEachAveragedRow(
    const AggregateInput& input, std::vector<ParamBlock>* global,
    const std::function<void(size_t block, uint32_t row, std::span<const double> avg)>& visit) {
  std::vector<double> avg;
  for (size_t b = 0; b < global->size(); ++b) {
    ParamBlock& block = (*global)[b];
    const std::vector<double>& sum = input.weighted_sum[b];
    const std::vector<double>& weight = input.row_weight[b];
    avg.resize(block.cols);
    for (uint32_t r = 0; r < block.rows; ++r) {
      const double w = weight[r];
      if (!(w > 0.0)) continue;
      const double* s = sum.data() + static_cast<size_t>(r) * block.cols;
      for (uint32_t c = 0; c < block.cols; ++c) avg[c] = s[c] / w;
      if (block.scope == Scope::kGlobalAverage) {
        float* row = block.Row(r);
        for (uint32_t c = 0; c < block.cols; ++c) row[c] = static_cast<float>(avg[c]);
        continue;
      }
      visit(b, r, avg);
    }
  }
}

StrategyRegistry StrategyRegistry::WithBuiltins() {
  StrategyRegistry registry;
  RegisterLinearStrategies(&registry);
  RegisterRobustStrategies(&registry);
  return registry;
}

void StrategyRegistry::Register(StrategyInfo info) {
  std::string name = info.name;
  strategies_[name] = std::move(info);
}

const StrategyInfo* StrategyRegistry::Find(const std::string& name) const {
  auto it = strategies_.find(name);
  return it == strategies_.end() ? nullptr : &it->second;
}

std::vector<std::string> StrategyRegistry::Names() const {
  std::vector<std::string> names;
  for (const auto& [name, _] : strategies_) names.push_back(name);
  return names;
}

Result<std::unique_ptr<Strategy>> StrategyRegistry::Create(const std::string& name,
                                                           StrategyOptions options) const {
  const StrategyInfo* info = Find(name);
  if (info == nullptr) {
    return Status::InvalidArgument("unknown strategy '" + name +
                                   "'; registered: " + JoinNames(Names()));
  }
  FEDREC_RETURN_IF_ERROR(FillParams("strategy", name, info->keys, &options.params));
  if (!(options.server_lr > 0.0)) {
    return Status::InvalidArgument("strategy " + name +
                                   ": federation.server_lr must be > 0, found " +
                                   std::to_string(options.server_lr));
  }
  return info->create(options);
}

}  // namespace fedrec
