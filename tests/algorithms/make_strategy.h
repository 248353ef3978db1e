// A built-in strategy with the given keys and server rate, for the
// strategy tests.
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>

#include "algorithms/strategy.h"

namespace fedrec {

inline std::unique_ptr<Strategy> Make(const std::string& name,
                                      std::map<std::string, double> params = {},
                                      double server_lr = 1.0) {
  StrategyOptions options;
  options.server_lr = server_lr;
  options.params = std::move(params);
  auto created = StrategyRegistry::WithBuiltins().Create(name, options);
  EXPECT_TRUE(created.ok()) << created.status().ToString();
  return created.ok() ? std::move(created).value() : nullptr;
}

}  // namespace fedrec
