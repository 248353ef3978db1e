// A small biased-MF site model for the tests of a site's strategy parts
// (SCAFFOLD's SiteControl, FedNova's SiteSteps): 6 users, items 0..3 rated
// 60 times in all, item 4 never.
#pragma once

#include <memory>

#include "algorithms/model.h"
#include "base/random.h"

namespace fedrec {

inline std::unique_ptr<Model> SmallMf(uint64_t seed, float lr_decay = 1.0f) {
  ModelData data;
  data.items = 5;
  Rng rng(seed);
  for (uint32_t n = 0; n < 60; ++n) {
    data.train.push_back({static_cast<uint32_t>(rng.Below(6)), static_cast<uint32_t>(rng.Below(4)),
                          static_cast<float>(1 + rng.Below(5))});
  }
  for (uint32_t u = 0; u < 6; ++u) data.user_keys.push_back(100 + u);
  ModelOptions options;
  options.factors = 3;
  options.sgd.lr_decay = lr_decay;
  std::unique_ptr<Model> model =
      std::move(ModelRegistry::WithBuiltins().Create("mf", options, std::move(data))).value();
  model->OnInitialModel();
  return model;
}

}  // namespace fedrec
