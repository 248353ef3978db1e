// Parameter-server messages: sparse pull/push of model rows between workers
// and shard servers (in the spirit of ps-lite's KVWorker/KVServer), and the
// driver's control messages. The roles that use them are described in
// coordinator/shard_server.h (the server), worker/ps_client.h (the client)
// and coordinator/ps_driver.h (the run, step by step).
//
// Rows. A shard server holds rows of the model's row-keyed global blocks: for
// MF, item i's row is [item_factors[i] (k floats), item_bias[i]] (ps_layout
// below). Row r lives on shard r mod S at local index r div S: item indices
// are dense 0..items-1, so the modulus spreads them evenly and needs no map.
// Federated slice aggregation is meant to use the same RowSharding.
//
// Payloads are hand-laid little-endian records (after the 32-byte frame
// header), so a pull reply's values are copied straight from the frame into
// the caller's buffer and a push's gradients are read in place:
//
//   PsPull       u64 request, u32 clock, u32 flags, u64 n, n x u32 keys
//   PsPullReply  u64 request, u32 min_clock, u32 cols, u64 n, n x cols f32
//   PsPush       u64 request, u32 clock, u32 epoch, u32 cols, u64 n,
//                n x u32 keys, n x cols f32 gradients
//   PsPushAck    u64 request, u32 clock
//   PsStart      u32 items, u32 cols, u32 steps_per_epoch, u32 epochs,
//                f32 global_mean, u32 workers, u32 first_epoch,
//                u32 checkpoint_every, u32 n, n bytes checkpoint_dir
//   PsReport     u32 epoch, u32 clock, u8 final, f64 train_squared_error,
//                u64 train_count, f64 squared_error, f64 absolute_error, u64 count,
//                f64 rating_sum
//   PsMemory     u8 role, u32 index, u64 peak_rss_bytes, u64 slice_bytes
//   PsCheckpoint u32 epoch
//
// Decoding is strict: a payload of another length than its counts imply, a
// count larger than the payload, or a non-finite gradient is refused with a
// Corruption/InvalidArgument status naming the message, the sender and what
// was expected and found. Keys are checked against the shard's rows by the
// server, which knows them.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"
#include "protocol/frame.h"

namespace fedrec {

// Which shard server holds a row, and where. S >= 1.
struct RowSharding {
  uint32_t shards = 1;

  uint32_t ShardOf(uint64_t row) const { return static_cast<uint32_t>(row % shards); }
  uint32_t LocalIndex(uint64_t row) const { return static_cast<uint32_t>(row / shards); }
  // Rows of `rows` held by shard `shard`.
  uint32_t RowsOf(uint32_t shard, uint32_t rows) const {
    return rows / shards + (shard < rows % shards ? 1u : 0u);
  }
  // The global row id of shard `shard`'s local row `local`.
  uint64_t GlobalRow(uint32_t shard, uint32_t local) const {
    return static_cast<uint64_t>(local) * shards + shard;
  }
};

// PsPull flags.
enum PsPullFlags : uint32_t {
  // A read outside the clocked training steps (the driver's final read of the
  // model): never waits for the consistency policy.
  kPsPullUnclocked = 1,
};

struct PsPull {
  static constexpr MessageType kType = MessageType::kPsPull;
  uint64_t request = 0;
  uint32_t clock = 0;  // the worker's clock: minibatches it has pushed
  uint32_t flags = 0;
  std::vector<uint32_t> keys;
};

// A pull reply as received: the values stay in the frame.
struct PsPullReplyView {
  uint64_t request = 0;
  uint32_t min_clock = 0;  // the shard's slowest worker clock when it answered
  uint32_t cols = 0;
  uint64_t rows = 0;
  const uint8_t* values = nullptr;  // rows * cols little-endian floats (unaligned)

  // Copies row `i` into `out` (cols floats).
  void CopyRow(uint64_t i, float* out) const {
    std::memcpy(out, values + i * cols * sizeof(float), cols * sizeof(float));
  }
};

// A push as received: keys and gradients stay in the frame.
struct PsPushView {
  uint64_t request = 0;
  uint32_t clock = 0;
  uint32_t epoch = 0;  // the worker's epoch (the server's learning-rate schedule)
  uint32_t cols = 0;
  uint64_t rows = 0;
  const uint8_t* keys = nullptr;       // rows little-endian u32
  const uint8_t* gradients = nullptr;  // rows * cols little-endian floats

  uint32_t Key(uint64_t i) const {
    uint32_t k;
    std::memcpy(&k, keys + i * sizeof(uint32_t), sizeof(k));
    return k;
  }
  void CopyRow(uint64_t i, float* out) const {
    std::memcpy(out, gradients + i * cols * sizeof(float), cols * sizeof(float));
  }
  // Gradient j of row `i` (unaligned in the frame).
  float Gradient(uint64_t i, uint32_t j) const {
    float g;
    std::memcpy(&g, gradients + (i * cols + j) * sizeof(float), sizeof(g));
    return g;
  }
};

struct PsPushAck {
  static constexpr MessageType kType = MessageType::kPsPushAck;
  uint64_t request = 0;
  uint32_t clock = 0;
};

// Driver -> shard servers and workers: the job's shape, once the workers'
// data is known.
struct PsStart {
  static constexpr MessageType kType = MessageType::kPsStart;
  uint32_t items = 0;            // rows of the row-keyed blocks
  uint32_t cols = 0;             // floats per row
  uint32_t steps_per_epoch = 0;  // minibatches per epoch, the same at every worker
  uint32_t epochs = 0;
  float global_mean = 0.0f;  // mean of every worker's training ratings
  uint32_t workers = 0;
  // Checkpoints (checkpoint.every > 0; crypto/ps_checkpoint.h): the epochs
  // already trained (> 0: resume from the files of that epoch), the epochs
  // between checkpoints (0: none) and the folder of the files. The decoder
  // checks first_epoch <= epochs and that a folder is named iff
  // checkpoint_every > 0.
  uint32_t first_epoch = 0;
  uint32_t checkpoint_every = 0;
  std::string checkpoint_dir;
};

// Worker -> driver. Epoch 0 is the worker's hello, before training: its
// train_count ratings sum to rating_sum (the driver's global mean). Then one
// after each epoch, the last with final = true, sent once the worker's pushes
// are applied.
struct PsReport {
  static constexpr MessageType kType = MessageType::kPsReport;
  uint32_t epoch = 0;  // epochs completed
  uint32_t clock = 0;
  bool final = false;
  double train_squared_error = 0.0;  // over the epoch's ratings
  uint64_t train_count = 0;
  double squared_error = 0.0, absolute_error = 0.0;  // test sums (count 0: not evaluated)
  uint64_t count = 0;
  double rating_sum = 0.0;  // epoch 0 only
};

// Shard server or worker -> driver, in answer to the driver's Shutdown of a
// job that succeeded: what the process measured of its memory (peak resident
// set size; in-process runs share one process) and what its model slice was
// estimated to need (the figure checked against cluster.memory_limit).
enum class PsRole : uint8_t { kDriver = 0, kShardServer = 1, kWorker = 2 };
const char* PsRoleName(PsRole role);
struct PsMemory {
  static constexpr MessageType kType = MessageType::kPsMemory;
  PsRole role = PsRole::kWorker;
  uint32_t index = 0;  // shard or worker index
  uint64_t peak_rss_bytes = 0;
  uint64_t slice_bytes = 0;
};

// Checkpoints of parameter-server mode (coordinator/shard_server.h,
// coordinator/ps_driver.h). From a shard server to the driver: the shard's
// slice after `epoch` is saved. From the driver to shard servers and
// workers: the checkpoint of `epoch` is committed (the driver's file is
// written), so files of earlier epochs may go.
struct PsCheckpoint {
  static constexpr MessageType kType = MessageType::kPsCheckpoint;
  uint32_t epoch = 0;
};

// Encoders: complete frames (header included, kFrameSealingRoom spare).
std::vector<uint8_t> EncodePsPull(const PsPull& m, uint32_t sender);
std::vector<uint8_t> EncodePsPull(uint64_t request, uint32_t clock, uint32_t flags,
                                  std::span<const uint32_t> keys, uint32_t sender);
// A reply of `rows` rows whose values the caller writes at the returned
// pointer (rows * cols floats, unaligned: use memcpy).
std::vector<uint8_t> EncodePsPullReplyShell(uint64_t request, uint32_t min_clock, uint32_t cols,
                                            uint64_t rows, uint32_t sender, size_t* values_at);
// A push whose keys and gradients the caller writes at the returned offsets.
// With `type` kPsRows, the same layout carries rows to assign (PsRows).
std::vector<uint8_t> EncodePsPushShell(uint64_t request, uint32_t clock, uint32_t epoch,
                                       uint32_t cols, uint64_t rows, uint32_t sender,
                                       size_t* keys_at, size_t* gradients_at,
                                       MessageType type = MessageType::kPsPush);
// The same frames up to their fixed fields, with room for the rest, which the
// caller appends (AppendPsWords): a reply's rows x cols floats; a push's rows
// keys, then its rows x cols floats. Appending writes each byte once, where
// a shell is zero-filled first.
std::vector<uint8_t> EncodePsPullReplyHead(uint64_t request, uint32_t min_clock, uint32_t cols,
                                           uint64_t rows, uint32_t sender);
std::vector<uint8_t> EncodePsPushHead(uint64_t request, uint32_t clock, uint32_t epoch,
                                      uint32_t cols, uint64_t rows, uint32_t sender,
                                      MessageType type = MessageType::kPsPush);
// Appends `n` 4-byte words (keys or floats) as stored (little-endian hosts).
template <typename T>
void AppendPsWords(std::vector<uint8_t>* frame, const T* words, size_t n) {
  static_assert(sizeof(T) == 4);
  if (n == 0) return;
  const auto* bytes = reinterpret_cast<const uint8_t*>(words);
  frame->insert(frame->end(), bytes, bytes + n * sizeof(T));
}
// PsRows: `keys` and their rows (keys.size() x cols floats at `values`),
// values to take as they are; `epoch` is the sender's epoch offset.
std::vector<uint8_t> EncodePsRows(uint64_t request, uint32_t epoch, uint32_t cols,
                                  std::span<const uint32_t> keys, const float* values,
                                  uint32_t sender);
std::vector<uint8_t> EncodePsPushAck(const PsPushAck& m, uint32_t sender);
std::vector<uint8_t> EncodePsStart(const PsStart& m, uint32_t sender);
std::vector<uint8_t> EncodePsReport(const PsReport& m, uint32_t sender);
std::vector<uint8_t> EncodePsMemory(const PsMemory& m, uint32_t sender);
std::vector<uint8_t> EncodePsCheckpoint(const PsCheckpoint& m, uint32_t sender);

// Decoders of a frame's payload (DecodeFrame first). Views point into the
// frame's bytes and are valid while they are.
Result<PsPull> DecodePsPull(const FrameView& frame);
Result<PsPullReplyView> DecodePsPullReply(const FrameView& frame);
Result<PsPushView> DecodePsPush(const FrameView& frame);
// A PsRows frame, in the push's layout (values in `gradients`), finite values only.
Result<PsPushView> DecodePsRows(const FrameView& frame);
Result<PsPushAck> DecodePsPushAck(const FrameView& frame);
Result<PsStart> DecodePsStart(const FrameView& frame);
Result<PsReport> DecodePsReport(const FrameView& frame);
Result<PsMemory> DecodePsMemory(const FrameView& frame);
Result<PsCheckpoint> DecodePsCheckpoint(const FrameView& frame);

}  // namespace fedrec
