// ShardServer: the role that owns one slice of the model's row-keyed global
// blocks (rows r with r mod S = shard, protocol/ps_messages.h RowSharding).
//
// Parameter-server mode (federation.mode = "ps"), step by step:
//   1. The driver (coordinator/ps_driver.h) sends PsStart: the number of rows
//      and floats per row. The shard allocates only its rows and fills each
//      from `init_row` (MF: the item's initial factors, bias 0), so every
//      layout of shards starts from the same model as `fedrec train`.
//      Pulls and pushes that arrive before PsStart wait for it.
//   2. Workers send PsPull (keys + the worker's clock = minibatches pushed)
//      and PsPush (keys + gradients, clock, epoch). A pull is answered with
//      the rows in the order asked once the consistency policy allows it:
//        - ssp with staleness s: clock <= slowest worker's clock + s;
//        - bsp = ssp with s = 0; the pushes of one clock are summed per row
//          in worker order and applied as one optimizer step once every
//          worker pushed it, so the model is that of synchronous
//          data-parallel minibatch SGD, bit for bit whatever the arrival order;
//        - async: never waits.
//      ssp and async apply each push as it arrives. A push is acknowledged
//      (PsPushAck) once applied. Unclocked pulls (the driver's final read)
//      never wait.
//   3. Shutdown from the driver ends Serve(); after a job that succeeded the
//      shard first sends the driver a PsMemory (its peak RSS and slice size).
// Checkpoints (PsStart's checkpoint_every > 0; crypto/ps_checkpoint.h): at
// each checkpoint epoch e (every checkpoint_every-th and the last) the shard
// saves its rows and optimizer state once every worker's pushes of epochs
// <= e are applied and none of a later epoch is, then tells the driver
// (PsCheckpoint). Under bsp clocks are applied in order, so that state comes
// by itself; under ssp and async a push of a later epoch that arrives first
// waits, unapplied and unacknowledged, until the slowest worker finished
// epoch e and the slice is saved. The driver's PsCheckpoint (the epoch is
// committed) removes the files of earlier epochs. A PsStart with
// first_epoch E > 0 loads the slice of epoch E instead of the initial rows,
// and the workers' clocks start at E x steps_per_epoch; a file that is
// missing, damaged or of another run is refused to the driver (SiteError),
// which ends the job. A save that fails is reported the same way.
// Memory: with options.memory_limit set, PsStart's slice (SliceBytes) must
// fit in it; if not, the shard allocates nothing, tells the driver with a
// SiteError naming the rows, the bytes, the cap and the remedy (more shard
// servers), and serves on until the driver's Shutdown, then returns that error.
// A frame that does not decode, a key outside the shard's rows, a push of
// the wrong width or out of clock order is refused: the sender gets a
// SiteError naming what was expected and found, the shard logs it and keeps
// serving. Frames from ranks that are neither the driver nor a worker are
// dropped with a log line.
//
// Later roles of the same object (DESIGN.md): summing this shard's slice of
// federated updates uses the same RowSharding and row storage.
//
// Thread-safety: one thread calls Serve(), or calls of HandleQueued() never
// overlap and each happens after the previous one; stats() may be read after
// the last returned.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "algorithms/mf_minibatch.h"
#include "base/fast_divide.h"
#include "crypto/ps_checkpoint.h"
#include "protocol/ps_messages.h"
#include "protocol/transport.h"

namespace fedrec {

enum class Consistency : uint8_t { kBsp = 0, kSsp = 1, kAsync = 2 };
const char* ConsistencyName(Consistency c);

struct ShardServerOptions {
  uint32_t shard = 0;  // 0..sharding.shards - 1
  RowSharding sharding;
  int driver_rank = 0;
  std::vector<int> worker_ranks;  // worker w is worker_ranks[w]
  Consistency consistency = Consistency::kBsp;
  uint32_t staleness = 0;  // ssp's bound s (bsp: 0)
  RowOptimizer optimizer;
  // Fills the initial values of global row `row` (cols floats).
  std::function<void(uint64_t row, std::span<float> out)> init_row;
  // The driver assigns every row (PsRows) after PsStart, before the workers'
  // pulls and pushes are served (a site training in parameter-server mode
  // inside itself: the round's global rows); init_row is then unused.
  bool rows_from_driver = false;
  // The configuration's hash, bound into the shard's checkpoint files.
  std::string config_hash;
  // Per-process memory cap in bytes (cluster.memory_limit); 0 = none.
  uint64_t memory_limit = 0;
  // Serve() fails after this long without any frame.
  std::chrono::milliseconds idle_timeout{600000};
};

// What a shard saw, for tests and reports.
struct ShardStats {
  uint64_t pulls = 0, pushes = 0;
  uint64_t rows_pulled = 0, rows_pushed = 0;
  uint64_t pulls_waited = 0;  // clocked pulls that had to wait for slower workers
  // Largest (pull clock - slowest worker's clock) of an answered clocked pull:
  // never above the staleness bound under ssp, 0 under bsp.
  int64_t max_clock_gap = 0;
  uint64_t refused = 0;  // frames refused with a SiteError
};

class ShardServer {
 public:
  // `transport` must outlive the server.
  ShardServer(ShardServerOptions options, Transport* transport);

  // Serves until the driver's Shutdown (OK; Aborted when the shutdown says
  // the job failed), the idle timeout, or a transport failure.
  Status Serve();

  // Serve's work without a thread of its own: handles the frames queued now,
  // never waiting for one (in-process runs call it on the threads that
  // deliver the shard's frames, InProcessNetwork::ServeOnSenders). Returns
  // what Serve would return once done(); frames after that stay queued.
  Status HandleQueued();
  // Whether the driver's Shutdown (or a failure) ended the serving.
  bool done() const { return done_; }
  // Whether a PsStart came before the Shutdown (a job was served).
  bool started() const { return started_; }

  const ShardStats& stats() const { return stats_; }
  // Bytes this shard's slice of `items` rows of `cols` floats takes: the
  // values, the optimizer state (Adagrad) and bsp's gradient sums.
  static uint64_t SliceBytes(const ShardServerOptions& options, uint32_t items, uint32_t cols);
  // Rows held (local order: global row = sharding.GlobalRow(shard, local)).
  uint32_t rows() const { return rows_; }
  uint32_t cols() const { return cols_; }
  std::span<const float> values() const { return values_; }

 private:
  struct PendingPull {
    int from;
    uint32_t worker;
    PsPull pull;
  };

  Status Handle(Envelope& e, bool* done);
  Status Start(const PsStart& start);
  // Whether workers' frames are served yet: started, and with
  // rows_from_driver every row assigned.
  bool Serving() const { return started_ && (!options_.rows_from_driver || assigned_ == rows_); }
  Status Assign(const FrameView& frame, bool* done);
  void HandlePull(int from, PsPull pull);
  void HandlePush(int from, Envelope& e, const PsPushView& push);
  bool Ready(const PsPull& pull) const;
  void Answer(int from, const PsPull& pull);
  void ApplyPush(const PsPushView& push);
  void CompleteBspClocks();
  // bsp with one worker: applies its push of a clock row by row when its keys
  // are distinct (as a PsClient's are); false, with nothing done, otherwise.
  bool ApplyAlone(const PsPushView& push, float* gradient);
  void ServePending();
  void Refuse(int to, const std::string& why);
  // Checkpoints: loads the slice of start.first_epoch (or clears an earlier
  // run's files); saves every checkpoint epoch whose pushes are all applied,
  // then applies the pushes that waited for it.
  Status StartCheckpoints(const PsStart& start);
  void MaybeSave();
  uint64_t BoundaryClock() const;
  // The clocks every worker's pushes are applied through.
  uint32_t AppliedThrough() const;
  void Acknowledge(int to, const PsPushView& push);
  uint32_t MinClock() const;
  float LearningRate(uint32_t epoch);
  // Worker index of `rank`, or -1.
  int WorkerOf(int rank) const;
  // Empty when every key is one of this shard's rows; else why not.
  std::string CheckKeys(const uint8_t* keys, uint64_t n) const;  // n little-endian u32

  ShardServerOptions options_;
  Transport* transport_;
  bool started_ = false;
  Status start_error_;     // PsStart refused (memory cap): returned at Shutdown
  uint32_t assigned_ = 0;  // rows_from_driver: rows the driver's PsRows assigned
  bool done_ = false;      // HandleQueued: the serving ended
  FastDivider32 divider_;  // by options_.sharding.shards: a key's shard and local row
  uint32_t items_ = 0, rows_ = 0, cols_ = 0;
  std::vector<float> values_;     // rows_ x cols_
  std::vector<float> state_;      // optimizer state (Adagrad), rows_ x cols_
  std::vector<uint32_t> clocks_;  // per worker: pushes received (ssp/async: applied)
  std::vector<Envelope> early_;   // frames that arrived before PsStart
  std::vector<PendingPull> pending_;
  // bsp: the pushes of each clock not yet applied, one slot per worker (an
  // empty frame until the worker's push is in); the view reads the frame.
  struct BufferedPush {
    Envelope frame;
    PsPushView push;
  };
  std::map<uint32_t, std::vector<BufferedPush>> bsp_pushes_;
  std::vector<float> sum_;         // bsp: summed gradients, rows_ x cols_
  std::vector<uint32_t> touched_;  // bsp: local rows with a gradient in sum_
  std::vector<uint8_t> is_touched_;
  // Checkpoints: the store, the next epoch to save (0: none left), the
  // clocks bsp completed, and ssp/async pushes beyond the next save.
  std::optional<PsSliceStore> store_;
  uint32_t save_epoch_ = 0;
  uint32_t steps_ = 0, epochs_ = 0, every_ = 0;
  uint32_t completed_ = 0;
  std::vector<BufferedPush> deferred_;
  uint32_t lr_epoch_ = UINT32_MAX;
  float lr_ = 0.0f;
  ShardStats stats_;
};

}  // namespace fedrec
