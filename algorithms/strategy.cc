#include "algorithms/strategy.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "base/random.h"

namespace fedrec {

std::vector<uint32_t> Strategy::SelectSites(uint32_t round, uint32_t num_sites, double fraction,
                                            uint64_t seed) const {
  std::vector<uint32_t> all(num_sites);
  std::iota(all.begin(), all.end(), 0u);
  if (fraction >= 1.0 || num_sites == 0) return all;
  const uint32_t want = std::clamp<uint32_t>(
      static_cast<uint32_t>(std::llround(fraction * num_sites)), 1u, num_sites);
  Rng rng(seed, round, 0, Purpose::kSample);
  // Partial Fisher-Yates: the first `want` entries are a uniform sample.
  for (uint32_t i = 0; i < want; ++i) {
    const uint32_t j = i + static_cast<uint32_t>(rng.Below(num_sites - i));
    std::swap(all[i], all[j]);
  }
  all.resize(want);
  std::sort(all.begin(), all.end());
  return all;
}

Status FedAvg::Aggregate(const AggregateInput& input, std::vector<ParamBlock>* global) {
  if (input.weighted_sum.size() != global->size() || input.row_weight.size() != global->size()) {
    return Status::InvalidArgument(
        "fedavg: aggregate has " + std::to_string(input.weighted_sum.size()) +
        " blocks, the global model has " + std::to_string(global->size()));
  }
  const double eta = options_.server_lr;
  for (size_t b = 0; b < global->size(); ++b) {
    ParamBlock& block = (*global)[b];
    const auto& sum = input.weighted_sum[b];
    const auto& weight = input.row_weight[b];
    if (weight.size() != block.rows || sum.size() != block.data.size()) {
      return Status::InvalidArgument("fedavg: block '" + block.name + "' has shape " +
                                     std::to_string(block.rows) + "x" + std::to_string(block.cols) +
                                     ", the aggregate does not match it");
    }
    const double step = block.scope == Scope::kGlobalAverage ? 1.0 : eta;
    for (uint32_t r = 0; r < block.rows; ++r) {
      const double w = weight[r];
      if (!(w > 0.0)) continue;
      float* row = block.Row(r);
      const double* s = sum.data() + static_cast<size_t>(r) * block.cols;
      for (uint32_t c = 0; c < block.cols; ++c) {
        const double avg = s[c] / w;
        row[c] = step == 1.0 ? static_cast<float>(avg)
                             : static_cast<float>(row[c] + step * (avg - row[c]));
      }
    }
  }
  return Status::Ok();
}

StrategyRegistry StrategyRegistry::WithBuiltins() {
  StrategyRegistry registry;
  registry.Register("fedavg",
                    [](const StrategyOptions& options) -> Result<std::unique_ptr<Strategy>> {
                      if (!(options.server_lr > 0.0)) {
                        return Status::InvalidArgument("fedavg: server_lr must be > 0, found " +
                                                       std::to_string(options.server_lr));
                      }
                      return std::unique_ptr<Strategy>(new FedAvg(options));
                    });
  return registry;
}

void StrategyRegistry::Register(const std::string& name, StrategyFactory factory) {
  factories_[name] = std::move(factory);
}

std::vector<std::string> StrategyRegistry::Names() const {
  std::vector<std::string> names;
  for (const auto& [name, _] : factories_) names.push_back(name);
  return names;
}

Result<std::unique_ptr<Strategy>> StrategyRegistry::Create(const std::string& name,
                                                           const StrategyOptions& options) const {
  auto it = factories_.find(name);
  if (it == factories_.end()) {
    std::string known;
    for (const auto& n : Names()) known += (known.empty() ? "" : ", ") + n;
    return Status::InvalidArgument("unknown strategy '" + name + "'; registered: " + known);
  }
  return it->second(options);
}

}  // namespace fedrec
