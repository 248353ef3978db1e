// Checkpoint files of parameter-server mode (federation.mode = "ps",
// checkpoint.every > 0 epochs): each rank that holds model state saves its
// own slice at every checkpoint epoch, in a folder only it writes, and the
// driver commits the epoch once every slice is saved.
//
// Layout of the checkpoint folder (checkpoint.dir, default <run>/checkpoint;
// on every host that runs a shard server or a worker, or shared):
//   ps-driver.ckpt               the driver's (apps/run_checkpoint.h), written
//                                last: it commits epoch e
//   shard-<s>/epoch-<e>.ckpt     shard server s's rows and optimizer state
//                                after epoch e (coordinator/shard_server.h)
//   worker-<w>/epoch-<e>.ckpt    worker w's users' rows after epoch e
//                                (worker/ps_worker.h)
//
// Why files of several epochs: a rank saves epoch e before the driver can
// commit it, so until the driver says the checkpoint of e is committed
// (PsCheckpoint) the rank keeps its file of the last committed epoch too.
// Resuming from the driver's epoch E, each rank removes its files of other
// epochs and loads its file of E.
//
// Each file binds the role, the rank's index among how many, its rows and
// floats per row, the epoch and the configuration's hash; one that differs
// is refused naming what differs, and a damaged one by its checksum
// (crypto/checkpoint_file.h). Nothing is loaded half-way.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"

namespace fedrec {

struct PsSliceIdentity {
  std::string role;  // "shard" or "worker": also the folder's prefix
  uint32_t index = 0;
  uint32_t count = 0;  // shard servers or workers in the job
  uint32_t rows = 0;   // rows of the slice
  uint32_t cols = 0;   // floats per row
  std::string config_hash;
};

class PsSliceStore {
 public:
  // Files go to "<checkpoint_dir>/<role>-<index>".
  PsSliceStore(const std::string& checkpoint_dir, PsSliceIdentity identity);

  // Writes `arrays` (each rows x cols floats, in order) as the slice after
  // `epoch`, atomically.
  Status Save(uint32_t epoch, const std::vector<std::span<const float>>& arrays) const;
  // The driver committed `epoch`: removes the files of earlier epochs.
  void Committed(uint32_t epoch) const;
  // A run that starts afresh: removes every file of an earlier run.
  void Clear() const;
  // Resuming from the driver's `epoch`: removes the files of other epochs
  // and reads the file of `epoch`, which must hold `arrays` arrays. NotFound
  // when it is missing, Corruption when damaged, InvalidArgument naming
  // what differs from this run.
  Result<std::vector<std::vector<float>>> Load(uint32_t epoch, size_t arrays) const;

  std::string PathOf(uint32_t epoch) const;
  // The epochs of the files present, ascending.
  std::vector<uint32_t> Epochs() const;
  const std::string& dir() const { return dir_; }

 private:
  std::string Meta(uint32_t epoch, size_t arrays) const;

  std::string dir_;
  PsSliceIdentity identity_;
};

}  // namespace fedrec
