// The subcommands of `fedrec`, each returning the process exit code. They
// print errors to stderr and, on success, one JSON summary as the last line of
// stdout (on rank 0 only for `run`).
#pragma once

#include <cstdint>
#include <string>

#include "apps/config.h"

namespace fedrec {

int RunTrain(const Config& config);  // centralized baseline
int RunSim(const Config& config);    // every role in one process
// One role per MPI rank: rank 0 coordinator, ranks 1..S shard servers, the
// rest one site each. Call on every rank of an mpirun job.
int RunMpi(const Config& config);
// Writes the configured synthetic data as CSV: <dir>/ratings.csv with all of it
// and <dir>/site<s>.csv for each of federation.sites sites (partitioned as
// configured), for trying per-site files and multi-machine runs.
int RunGenerate(const Config& config, const std::string& dir);
// Creates identity key files: one pair at `prefix` (<prefix>.key, .pub), or,
// with `dir`, coordinator.* and site<s>.* for `sites` sites. Prints the public
// keys as the summary JSON.
int RunKeygen(const std::string& prefix, const std::string& dir, int64_t sites, bool overwrite);

}  // namespace fedrec
