// Runs a small federation in the simulator for tests: the synthetic data of a
// config, its model (model.name), its strategy (federation.strategy, FedAvg
// by default), every round's metrics collected.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <utility>
#include <vector>

#include "apps/job.h"
#include "crypto/crypto.h"
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

// Paillier sites need identities and a roster of them (sim makes them in
// `fedrec sim`); tests also lower the modulus floor to use fast 1024-bit keys.
inline std::function<void(WorkerOptions*, uint32_t)> PaillierTestSites(uint32_t sites) {
  std::vector<crypto::SigningKey> identities;
  auto roster = std::make_shared<std::map<uint32_t, crypto::Key32>>();
  for (uint32_t s = 0; s < sites; ++s) {
    identities.push_back(*crypto::GenerateSigningKey());
    (*roster)[s] = identities.back().public_key;
  }
  return [identities, roster = std::shared_ptr<const std::map<uint32_t, crypto::Key32>>(roster)](
             WorkerOptions* o, uint32_t site) {
    o->identity = identities[site];
    o->roster = roster;
    o->insecure_test_min_paillier_bits = 1024;
  };
}

struct FederatedRun {
  std::vector<ParamBlock> global;
  std::vector<RoundMetrics> rounds;
};

// The sites' options, with the catalogue's side features (one shared table).
inline WorkerOptions SiteOptions(const Config& config, const FederatedData& data) {
  WorkerOptions options = MakeWorkerOptions(config);
  options.item_features = data.item_features;
  return options;
}

// Site `site` goes silent from `step` of `round` to that round's end (fault
// injection, sim/faults.h): a Federate customization.
inline std::function<void(SimulationOptions*, CoordinatorOptions*)> SilenceSite(uint32_t site,
                                                                                uint32_t round,
                                                                                RoundStep step) {
  return [=](SimulationOptions* options, CoordinatorOptions*) {
    options->faults.silences.push_back(SiteSilence{site, round, step, false});
  };
}

inline FederatedRun Federate(
    const Config& config, uint32_t threads = 2,
    const std::function<void(WorkerOptions*, uint32_t)>& per_site = nullptr,
    const std::function<void(SimulationOptions*, CoordinatorOptions*)>& customize = nullptr) {
  Result<FederatedData> data = LoadFederatedData(config);
  EXPECT_TRUE(data.ok()) << data.status().ToString();
  Result<std::unique_ptr<Model>> server = MakeServerModel(config, data->dataset.items.size());
  EXPECT_TRUE(server.ok()) << server.status().ToString();
  CoordinatorOptions coordinator = MakeCoordinatorOptions(config);
  coordinator.rounds = static_cast<uint32_t>(EffectiveRounds(config));
  auto strategy = StrategyRegistry::WithBuiltins().Create(config.federation.strategy,
                                                          MakeStrategyOptions(config));
  EXPECT_TRUE(strategy.ok()) << strategy.status().ToString();
  FederatedRun run;
  SimulationOptions options;
  options.threads = threads;
  options.shard_servers = static_cast<uint32_t>(config.cluster.shard_servers);
  options.customize_site = per_site;
  if (per_site) {  // sites given a roster check survivor signatures: send them
    WorkerOptions probe;
    per_site(&probe, 0);
    coordinator.sites_hold_roster = probe.roster && !probe.roster->empty();
  }
  Status profiled =
      SetSimulationProfiles(config, static_cast<uint32_t>(data->sites.size()), &options);
  EXPECT_TRUE(profiled.ok()) << profiled.ToString();
  if (customize) customize(&options, &coordinator);
  Result<SimulationResult> result =
      RunSimulation(options, coordinator, std::move(server).value(), std::move(strategy).value(),
                    SiteOptions(config, *data), data->dataset.items.size(), std::move(data->sites),
                    [&](const RoundMetrics& m) { run.rounds.push_back(m); });
  EXPECT_TRUE(result.ok()) << result.status().ToString();
  if (result.ok()) run.global = result->global;
  return run;
}

}  // namespace fedrec
