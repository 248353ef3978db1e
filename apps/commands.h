// The subcommands of `fedrec`, each returning the process exit code. They
// print errors to stderr and, on success, one JSON summary as the last line of
// stdout (on rank 0 only for `run`).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "algorithms/model.h"
#include "apps/config.h"
#include "base/status.h"

namespace fedrec {

// `models` is the registry model.name is looked up in: the built-ins when
// null; a program with its own models passes ModelRegistry::WithBuiltins()
// plus its registrations (see examples/plugin_model).
int RunTrain(const Config& config, const ModelRegistry* models = nullptr);  // centralized
int RunSim(const Config& config, const ModelRegistry* models = nullptr);    // one process
// One role per MPI rank: rank 0 coordinator, ranks 1..S shard servers, the
// rest one site each. Call on every rank of an mpirun job.
int RunMpi(const Config& config, const ModelRegistry* models = nullptr);
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
// one holder folder that lists the user. Errors (unknown run or user, damaged
// files) name what was expected and what was found.
Result<Recommendations> Recommend(const RecommendRequest& request,
                                  const ModelRegistry* models = nullptr);
// Prints Recommend's answer as text lines or, with request.json, one JSON object.
int RunRecommend(const RecommendRequest& request, const ModelRegistry* models = nullptr);

}  // namespace fedrec
