// Checkpoint and resume for `fedrec sim` and `fedrec run` (checkpoint.*):
// where the files go, what a checkpoint must match, which jobs can be
// checkpointed, and the stop signals (SIGINT/SIGTERM end a run after the
// round in progress, with its summary, model and checkpoint written).
//
// Layout of a checkpoint folder (checkpoint.dir, default <run>/checkpoint):
//   coordinator.ckpt          coordinator/checkpoint.h, written last: it
//                             commits the round
//   site-<s>/round-<r>.ckpt   site s's state after training in round r
//                             (worker/site_state.h), unless
//                             checkpoint.site_dir puts them elsewhere
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "algorithms/model.h"
#include "algorithms/strategy.h"
#include "apps/config.h"
#include "base/status.h"
#include "coordinator/checkpoint.h"
#include "worker/worker.h"

namespace fedrec {

// SHA-256 of the resolved configuration without the keys that do not change
// the model: checkpoint.*, output.* and sim.threads.
std::string ConfigHash(const Config& config);

// The checkpoint folder: the one resumed from, else checkpoint.dir, else
// <run_dir>/checkpoint.
std::string CheckpointDir(const Config& config, const std::string& run_dir);

// Checks that the job can be checkpointed when checkpoint.every > 0 or it
// resumes: the model keeps its sites' state (Model::SupportsCheckpoint) and
// the rounds are federated; resuming needs checkpoint.every > 0. (A two-tier
// site's state is its leader's model: its group's ranks keep none between
// rounds.)
// (Every built-in strategy's state rides in the checkpoint, SCAFFOLD's
// server and site control variates included.) InvalidArgument naming the key.
Status CheckCheckpointable(const Config& config, const Model& model);

// Sets the sites' checkpoint options: their state folder, checkpoint.every,
// the configuration's hash and, when resuming, the round to resume from.
void SetSiteCheckpointOptions(const Config& config, const std::string& checkpoint_dir,
                              uint32_t resume_round, WorkerOptions* options);

// Reads the checkpoint to resume from (checkpoint.resume), checked against
// the job: nullopt when not resuming.
Result<std::optional<CoordinatorCheckpoint>> LoadResumeCheckpoint(
    const Config& config, const CheckpointIdentity& identity);

// Writes the coordinator's checkpoint of `round` into `dir`, with the lines
// of `metrics_path` (the run's metrics.jsonl) so far.
Status WriteRunCheckpoint(const std::string& dir, const CheckpointIdentity& identity,
                          const Coordinator& coordinator, uint32_t round,
                          const std::string& metrics_path);

// SIGINT and SIGTERM set a flag the coordinator polls after every round
// (CoordinatorOptions::stop_requested); a second signal ends the process at
// once. Process-wide: installed by the commands, read through StopSignal.
void InstallStopSignals();
// The signal that asked to stop, 0 when none.
int StopSignal();

}  // namespace fedrec
