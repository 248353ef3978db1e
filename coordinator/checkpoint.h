// The coordinator's checkpoint file (checkpoint.every > 0): its state after
// a round (CoordinatorState: global model, round, model version, strategy
// state, other components' sections) and the run's metrics so far, written
// atomically with a SHA-256 (crypto/checkpoint_file.h).
//
// A checkpoint belongs to one run: the configuration's hash (every key but
// checkpoint.* and output.*), the model's name and the number of sites are
// bound into it, and reading it for another run is refused with what
// differs. Sites keep their own state next to it (worker/site_state.h).
#pragma once

#include <cstdint>
#include <string>

#include "base/status.h"
#include "coordinator/coordinator.h"

namespace fedrec {

// What a checkpoint must match to be resumed from.
struct CheckpointIdentity {
  std::string config_hash;
  std::string model;
  uint32_t sites = 0;
};

struct CoordinatorCheckpoint {
  CoordinatorState state;
  std::string metrics;  // the run's metrics.jsonl lines up to state.round
};

// "<dir>/coordinator.ckpt".
std::string CoordinatorCheckpointPath(const std::string& dir);

Status WriteCoordinatorCheckpoint(const std::string& path, const CheckpointIdentity& identity,
                                  const CoordinatorCheckpoint& checkpoint);

// Reads and checks a checkpoint against `expected`: Corruption when the file
// is damaged, InvalidArgument naming each field that differs. Nothing is
// returned half-read.
Result<CoordinatorCheckpoint> ReadCoordinatorCheckpoint(const std::string& path,
                                                        const CheckpointIdentity& expected);

}  // namespace fedrec
