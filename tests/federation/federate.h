// Runs a small federation in the simulator for tests: the synthetic data of a
// config, its model (model.name), the built-in FedAvg, every round's metrics
// collected.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <utility>
#include <vector>

#include "apps/job.h"
#include "sim/simulation.h"

namespace fedrec {

inline Config SmallConfig() {
  Config config;
  config.seed = 7;
  config.data.synthetic.users = 300;
  config.data.synthetic.items = 400;
  config.data.synthetic.ratings = 20000;
  config.model.factors = 16;
  config.federation.rounds = 6;
  config.federation.local_epochs = 1;
  config.eval.ranking = false;
  config.security.aggregation = "none";  // tests of secure aggregation set it
  return config;
}

struct FederatedRun {
  std::vector<ParamBlock> global;
  std::vector<RoundMetrics> rounds;
};

inline FederatedRun Federate(
    const Config& config, uint32_t threads = 2,
    const std::function<void(WorkerOptions*, uint32_t)>& per_site = nullptr) {
  Result<FederatedData> data = LoadFederatedData(config);
  EXPECT_TRUE(data.ok()) << data.status().ToString();
  Result<std::unique_ptr<Model>> server = MakeServerModel(config, data->dataset.items.size());
  EXPECT_TRUE(server.ok()) << server.status().ToString();
  CoordinatorOptions coordinator = MakeCoordinatorOptions(config);
  coordinator.rounds = static_cast<uint32_t>(EffectiveRounds(config));
  auto strategy = StrategyRegistry::WithBuiltins().Create("fedavg", MakeStrategyOptions(config));
  EXPECT_TRUE(strategy.ok());
  FederatedRun run;
  SimulationOptions options;
  options.threads = threads;
  options.customize_site = per_site;
  Result<SimulationResult> result =
      RunSimulation(options, coordinator, std::move(server).value(), std::move(strategy).value(),
                    MakeWorkerOptions(config), data->dataset.items.size(), std::move(data->sites),
                    [&](const RoundMetrics& m) { run.rounds.push_back(m); });
  EXPECT_TRUE(result.ok()) << result.status().ToString();
  if (result.ok()) run.global = result->global;
  return run;
}

}  // namespace fedrec
