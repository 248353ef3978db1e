// Parameter-server mode (federation.mode = "ps") as a job: config -> the
// options of each role, and the runs of `fedrec sim` (every role a thread over
// the in-process transport) and `fedrec run` (one role per MPI rank). Both
// run the same role code over a Transport; only how ranks are started differs.
//
// Rank layout (both): rank 0 the driver (coordinator/ps_driver.h), ranks
// 1..S the shard servers (S = cluster.shard_servers), ranks S+1..S+W the
// workers (W = federation.sites; worker w holds site w's users).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "algorithms/metrics.h"
#include "apps/config.h"
#include "apps/plugin.h"
#include "coordinator/ps_driver.h"
#include "coordinator/shard_server.h"
#include "protocol/transport.h"
#include "worker/ps_worker.h"

namespace fedrec {

struct PsLayout {
  int driver = 0;
  std::vector<int> shard_ranks;
  std::vector<int> worker_ranks;
  int size() const { return 1 + static_cast<int>(shard_ranks.size() + worker_ranks.size()); }
};
PsLayout MakePsLayout(const Config& config);

ShardServerOptions MakeShardServerOptions(const Config& config, const PsLayout& layout,
                                          uint32_t shard);
// Options of worker `worker`; its threads as PsWorkerThreads(config).
PsWorkerOptions MakePsWorkerOptions(const Config& config, const PsLayout& layout, uint32_t worker);
// A PS worker's threads: train.threads, or with 0 one (RunPsInProcess: two
// when every worker of the process has two cores). With two or more, one
// makes the minibatches (the epoch's shuffle, each step's slotting) ahead of
// the steps and the others take the gradient; splitting the gradient itself
// over threads was slower at every minibatch measured (BENCHMARKS.md, issue
// 17, "Multi-threaded workers": a step moves the pulled rows, terms and
// gradients between cores, which costs more than the gradient work split).
uint32_t PsWorkerThreads(const Config& config);
PsDriverOptions MakePsDriverOptions(const Config& config, const PsLayout& layout, uint32_t items);

// The driver's record of the epochs so far (those of the run resumed from
// included): each epoch's metrics.jsonl line and each evaluation.
struct PsHistory {
  std::map<uint32_t, std::string> lines;
  std::map<uint32_t, ErrorSums> evals;
  // The lines of the epochs <= `epoch`, one per line.
  std::string MetricsThrough(uint32_t epoch) const;
  // The newest evaluation of an epoch <= `epoch` (empty when none).
  ErrorSums LastEvalThrough(uint32_t epoch) const;
};

// "<checkpoint folder>/ps-driver.ckpt": the driver's checkpoint, which
// commits an epoch (crypto/ps_checkpoint.h has the layout of the folder).
std::string PsDriverCheckpointPath(const std::string& dir);

// Parameter-server checkpoints (checkpoint.every > 0 epochs) for the driver
// of a run whose directory is `run_dir`: the folder, the interval and, with
// checkpoint.resume, the epoch to resume from, with `history` restored from
// the driver's file (which must belong to this configuration, worker and
// shard count: an error names what differs). on_checkpoint writes that file
// from `history`, which must outlive the run. Resuming needs
// checkpoint.every > 0.
Status SetPsCheckpointing(const Config& config, const std::string& run_dir, PsHistory* history,
                          PsDriverOptions* options);

// A PS job with every role a thread over the in-process transport: the
// driver on the calling thread, `sites[w]` the data of worker w. What
// `fedrec sim` runs, and what tests and benchmarks call directly;
// `adjust_driver` may change the driver's options (checkpoints) first.
struct PsInProcessRun {
  PsStart start;
  std::vector<float> rows;  // the final model's rows, items x (k + 1)
  std::vector<ShardStats> shards;
  std::vector<PsClientStats> clients;
  // Each shard's and worker's PsMemory (peak RSS: of the one shared process).
  std::vector<PsRankMemory> memory;
  // Ended by the driver's stop_requested (no rows read), after committing
  // the checkpoint of epoch `committed` (0: none).
  bool stopped = false;
  uint32_t committed = 0;
};
Result<PsInProcessRun> RunPsInProcess(
    const Config& config, std::vector<SiteData> sites, uint32_t items,
    const std::function<void(const PsEpochMetrics&)>& on_epoch = nullptr,
    const std::function<Status(PsDriverOptions*)>& adjust_driver = nullptr);
// MF's global blocks from the PS rows (and the job's global mean).
std::vector<ParamBlock> PsGlobalBlocks(const Config& config, const PsStart& start,
                                       const std::vector<float>& rows);

// `fedrec sim` with federation.mode = "ps".
int RunPsSim(const Config& config, const Registries& registries);
// One rank of `mpirun ... fedrec run` with federation.mode = "ps" (RunMpi
// checked the rank count); `hosts` is every rank's host name.
int RunPsRank(const Config& config, Transport& transport, const std::vector<std::string>& hosts,
              const Registries& registries);

}  // namespace fedrec
