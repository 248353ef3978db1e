// The subcommands of `fedrec`, each returning the process exit code. They
// print errors to stderr and, on success, one JSON summary as the last line of
// stdout (on rank 0 only for `run`).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "algorithms/model.h"
#include "apps/config.h"
#include "apps/plugin.h"
#include "base/status.h"

namespace fedrec {

// `registries` are where federation.strategy and model.name are looked up:
// the built-ins by default; a program with its own strategies or models
// passes registries holding them (see examples/plugin_model). Each command
// first loads config.plugins into copies of them (apps/plugin.h).
int RunTrain(const Config& config, const Registries& registries = {});  // centralized
int RunSim(const Config& config, const Registries& registries = {});    // one process
// One role per MPI rank: rank 0 coordinator, ranks 1..S shard servers, the
// rest one site each. Call on every rank of an mpirun job; every rank loads
// the plug-ins, and one that cannot ends the job on every rank.
int RunMpi(const Config& config, const Registries& registries = {});
// Writes the configured synthetic data as CSV: <dir>/ratings.csv with all of it
// and <dir>/site<s>.csv for each of federation.sites sites (partitioned as
// configured), for trying per-site files and multi-machine runs.
int RunGenerate(const Config& config, const std::string& dir);
// Creates identity key files: one pair at `prefix` (<prefix>.key, .pub), or,
// with `dir`, coordinator.* and site<s>.* for `sites` sites. Prints the public
// keys as the summary JSON.
int RunKeygen(const std::string& prefix, const std::string& dir, int64_t sites, bool overwrite);

struct RecommendRequest {
  std::string run;   // run directory of fedrec train, sim or run
  std::string user;  // raw user ID
  uint32_t k = 10;
  bool json = false;  // one JSON object instead of text lines
  std::string items;  // title file (u.item, movies.dat); empty = look beside data.train
};
struct Recommendation {
  std::string item;  // raw item ID
  float score = 0.0f;
  std::string title;  // empty without a title file
};
struct Recommendations {
  std::string holder;  // the folder the user's factors came from (site<s> or central)
  std::vector<Recommendation> items;  // best first
};
// The user's top-K items not seen in training, scored by the run's model, with
// titles when a title file is found. Reads only the run's global model and the
// one holder folder that lists the user (and loads the plug-ins the run's
// configuration names). Errors (unknown run or user, damaged files) name what
// was expected and what was found.
Result<Recommendations> Recommend(const RecommendRequest& request,
                                  const Registries& registries = {});
// Prints Recommend's answer as text lines or, with request.json, one JSON object.
int RunRecommend(const RecommendRequest& request, const Registries& registries = {});

}  // namespace fedrec
