// Vose's alias table: draws index i with probability weights[i] / sum in O(1)
// (one Below and one Uniform from the caller's stream). Built once, in a fixed
// order, so the same weights and stream give the same draws.
#pragma once

#include <cstdint>
#include <numeric>
#include <span>
#include <vector>

#include "base/random.h"

namespace fedrec {

class AliasTable {
 public:
  AliasTable() = default;
  // REQUIRES: weights non-negative and finite, not all zero.
  explicit AliasTable(std::span<const double> weights)
      : prob_(weights.size()), alias_(weights.size()) {
    const size_t n = weights.size();
    const double total = std::accumulate(weights.begin(), weights.end(), 0.0);
    std::vector<double> scaled(n);
    std::vector<uint32_t> small, large;
    for (size_t i = 0; i < n; ++i) {
      scaled[i] = weights[i] * static_cast<double>(n) / total;
      (scaled[i] < 1.0 ? small : large).push_back(static_cast<uint32_t>(i));
    }
    while (!small.empty() && !large.empty()) {
      const uint32_t s = small.back(), l = large.back();
      small.pop_back();
      prob_[s] = scaled[s];
      alias_[s] = l;
      scaled[l] = (scaled[l] + scaled[s]) - 1.0;
      if (scaled[l] < 1.0) {
        large.pop_back();
        small.push_back(l);
      }
    }
    // What is left is 1 up to rounding.
    for (const auto* rest : {&large, &small}) {
      for (uint32_t i : *rest) {
        prob_[i] = 1.0;
        alias_[i] = i;
      }
    }
  }

  // REQUIRES: built from at least one weight.
  uint32_t Sample(Rng& rng) const {
    const auto i = static_cast<uint32_t>(rng.Below(prob_.size()));
    return rng.Uniform() < prob_[i] ? i : alias_[i];
  }

 private:
  std::vector<double> prob_;
  std::vector<uint32_t> alias_;
};

}  // namespace fedrec
