// PsDriver: rank 0 of a parameter-server job (federation.mode = "ps"). It
// holds no data and no model rows; it starts the job, collects the workers'
// epoch reports and, at the end, reads the model from the shard servers.
//
// The run, step by step (workers W_1..W_n, shard servers S_1..S_m):
//   1. Each worker sends its hello (PsReport, epoch 0: rating count and sum).
//   2. The driver fixes the global mean (the rating sums added in worker
//      order, over the total count) and the steps per epoch T =
//      ceil(total ratings / batch_size), the same at every worker, and sends
//      PsStart to every shard server, then to every worker.
//   3. Workers train (worker/ps_worker.h) against the shard servers
//      (coordinator/shard_server.h); each sends a PsReport per epoch. Once
//      every worker reported epoch e, the driver hands its totals to the
//      caller, in epoch order.
//   4. After every worker's final report (its pushes applied), the driver
//      pulls every row from the shards (unclocked): all at once into rows(),
//      or, when Run is given a model reader, in chunks the caller asks for,
//      so the driver never holds the whole model. Then it sends Shutdown to
//      every shard and worker.
//   5. Each shard and worker answers the Shutdown with a PsMemory (its peak
//      RSS and the size of its model slice), kept in memory() in rank order.
// Checkpoints (checkpoint_every > 0; crypto/ps_checkpoint.h): PsStart tells
// every rank the folder, the interval and the epoch to resume from. At each
// checkpoint epoch e (every checkpoint_every-th and the last) workers save
// before their report of e and shards save when e's pushes are applied
// (PsCheckpoint to the driver). Once all of them have, and the epoch's
// metrics went to on_epoch, the driver calls on_checkpoint(e) (the caller
// writes its own file, which commits e) and sends PsCheckpoint(e) to every
// shard and worker, which then drop their older files. Resuming
// (first_epoch = E > 0), epochs E+1.. are trained and reported.
// A worker's SiteError, a shard's SiteError (its slice does not fit
// cluster.memory_limit), a malformed report or a timeout ends the job: every
// shard and worker gets a failed Shutdown naming the reason.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "algorithms/metrics.h"
#include "protocol/ps_messages.h"
#include "protocol/transport.h"

namespace fedrec {

struct PsDriverOptions {
  std::vector<int> shard_ranks;
  std::vector<int> worker_ranks;
  uint32_t items = 0;
  uint32_t cols = 0;  // floats per row
  uint32_t epochs = 1;
  uint64_t batch_size = 1000;                 // ratings per step, summed over the workers
  std::chrono::milliseconds timeout{600000};  // longest wait for any report
  // A session of a site that trains in parameter-server mode inside itself
  // (two tiers; apps/site_group.h): the global mean it was given instead of
  // the workers' mean; `load_shards`, called once PsStart went to the shards
  // and before it goes to the workers, sends every shard its rows (PsRows;
  // the shards have rows_from_driver); `on_worker_rows` gets each PsRows
  // frame a worker sends (its users' rows), before its final report.
  std::optional<float> global_mean;
  std::function<Status()> load_shards;
  std::function<Status(uint32_t worker, const FrameView& frame)> on_worker_rows;
  // Checkpoints (see above): 0 = none.
  uint32_t checkpoint_every = 0;
  uint32_t first_epoch = 0;
  std::string checkpoint_dir;
  std::function<Status(uint32_t epoch)> on_checkpoint;
  // Polled at least every 200 ms: once true, the driver ends the job after
  // the next checkpoint it commits (at once without checkpoints, or before
  // the start), with a failed Shutdown to every rank, and Run returns OK
  // with stopped() set and no model read.
  std::function<bool()> stop_requested;
};

// Reads rows [first, first + count) of the final model into `out` (count x
// cols floats); may be called any number of times, in any order.
using PsRowReader = std::function<Status(uint32_t first, uint32_t count, float* out)>;

// What one rank said of its memory at the end (step 5).
struct PsRankMemory {
  int rank = 0;
  PsMemory memory;
};

struct PsEpochMetrics {
  uint32_t epoch = 0;  // epochs completed
  uint32_t epochs = 0;
  double train_mse = 0.0;
  bool evaluated = false;
  ErrorSums test;
  double seconds = 0.0;         // since the start was sent
  TrafficStats driver_traffic;  // the driver's transport counters so far
};

class PsDriver {
 public:
  // `transport` must outlive the driver.
  PsDriver(PsDriverOptions options, Transport* transport);

  // Runs the job (see above); `on_epoch` sees every epoch in order. With
  // `on_model`, the final model is read through the reader it is given
  // (before the shutdown) and rows() stays empty; its error ends the job.
  Status Run(const std::function<void(const PsEpochMetrics&)>& on_epoch,
             const std::function<Status(const PsRowReader&)>& on_model = nullptr);

  const PsStart& start() const { return start_; }
  // The final rows (items x cols) read from the shards after the run.
  const std::vector<float>& rows() const { return rows_; }
  // The shards' and workers' PsMemory reports, by rank (after a run that succeeded).
  const std::vector<PsRankMemory>& memory() const { return memory_; }
  // Whether stop_requested ended the run, and the last epoch committed.
  bool stopped() const { return stopped_; }
  uint32_t committed() const { return committed_; }

 private:
  Status Gather(const std::function<void(const PsEpochMetrics&)>& on_epoch);
  Status ReadModel(const std::function<Status(const PsRowReader&)>& on_model);
  void CollectMemory();
  void ShutdownAll(const std::string& reason, bool failed);
  int WorkerOf(int rank) const;
  // Commits every checkpoint epoch below `reported` (epochs every worker
  // reported) that every shard saved, in order.
  Status Commit(uint32_t reported);
  uint32_t NextCheckpoint(uint32_t epoch) const;

  PsDriverOptions options_;
  std::vector<uint32_t> shard_saved_;  // per shard: the last epoch it saved
  uint32_t committed_ = 0;
  bool stopped_ = false;
  // Whether a stop was asked, and the committed epoch when it was.
  bool ShouldStop(bool started);
  std::optional<uint32_t> stop_asked_at_;
  Transport* transport_;
  PsStart start_;
  std::vector<float> rows_;
  std::vector<PsRankMemory> memory_;
};

}  // namespace fedrec
