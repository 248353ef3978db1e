// MpiTransport: the Transport over Open MPI, one role per rank.
//
// One thread, the progress thread, makes every MPI call: it initialises MPI
// (MPI_Init_thread asking for MPI_THREAD_FUNNELED, and checks what was granted),
// posts non-blocking sends, probes and receives frames of any size, and
// finalises MPI. Send() and Recv() only touch queues shared with it, so roles
// may call them from any thread, exactly as with the in-process transport.
//
// Frames up to `max_message` bytes travel as one MPI message; larger ones
// (beyond MPI's int count, 2^31 - 1 bytes) are split into chunks announced by a
// header message, and reassembled before delivery. Messages between a pair of
// ranks arrive in send order.
//
// Nothing a peer announces is allocated unchecked: a chunk header announcing
// more than `max_frame` bytes, a second chunked frame before the first one's
// chunks, or chunks that do not fit the announced frame are refused with an
// error naming the peer and the sizes, counted (refused_messages()), and
// dropped; the transport keeps working. A peer can make a rank allocate at most one frame of
// `max_frame` bytes beyond what it actually sent.
//
// Shutdown: Close() stops accepting sends, waits up to `flush_timeout` for
// queued sends to complete, then finalises MPI. A peer that already finished
// does not make it hang: eager messages to it complete locally, and sends still
// pending at the deadline are logged and abandoned.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "protocol/transport.h"

namespace fedrec {

struct MpiTransportOptions {
  // Largest frame sent as a single MPI message; larger frames are chunked.
  size_t max_message = size_t{1} << 30;
  // Largest frame accepted from a peer (the buffer of a frame is allocated
  // when its header arrives, before its bytes: this bounds what a forged
  // header can make a rank allocate). Larger frames are refused, not sent.
  size_t max_frame = size_t{8} << 30;
  std::chrono::milliseconds flush_timeout{10000};
};

class MpiTransport : public Transport {
 public:
  // Starts the progress thread and initialises MPI. Error when MPI cannot be
  // initialised or grants less than MPI_THREAD_FUNNELED. At most one per process.
  static Result<std::unique_ptr<MpiTransport>> Start(const MpiTransportOptions& options = {});

  ~MpiTransport() override;  // Close()

  int rank() const override;
  int size() const override;
  Status Send(int peer, std::vector<uint8_t> bytes) override;
  Result<Envelope> Recv(std::chrono::milliseconds timeout) override;
  TrafficStats stats() const override;

  // Flushes pending sends (bounded by flush_timeout) and finalises MPI.
  // Idempotent; Send and Recv return Unavailable afterwards.
  void Close();

  // Ends the whole job now (MPI_Abort with `code`) after logging `reason`; for
  // failures that leave no way to tell the other ranks.
  [[noreturn]] void Abort(int code, const std::string& reason);

  // Name of the host this rank runs on (MPI_Get_processor_name).
  const std::string& host() const;

  // Every rank's host name, indexed by rank (an allgather over
  // MPI_COMM_WORLD: every rank must call it, at the same point). Errors as
  // RunOnMpiThread's, or Internal when the collective fails.
  Result<std::vector<std::string>> AllHosts();

  // Messages from peers refused since Start (oversized or inconsistent
  // frames, unknown tags); each was logged with the peer and the sizes.
  // Thread-safe.
  uint64_t refused_messages() const;

  // Test hook, playing a hostile or broken peer: posts `bytes` to `peer` as
  // one raw message with wire tag `tag` (1 a whole frame, 2 a chunk header of
  // two little-endian uint64: total bytes and chunk count, 3 a chunk),
  // bypassing the framing. Blocks until sent.
  Status SendRawForTesting(int peer, int tag, std::vector<uint8_t> bytes);

  // Runs `fn` on the progress thread, the only thread allowed to call MPI, and
  // waits for it to return (inline when called from the progress thread). For
  // raw MPI calls next to the transport (benchmarks, barriers in tests); fn
  // must use its own communicator (e.g. MPI_COMM_WORLD), must not wait on
  // this transport (Recv, Close), and blocks all transport progress while it
  // runs.
  // Unavailable after Close(); Internal when fn throws.
  Status RunOnMpiThread(const std::function<void()>& fn);

  // Waits until every rank has called Barrier, at most `timeout` (then
  // Timeout). Used before a failing job exits: mpirun kills every rank at the
  // first non-zero exit, so ranks meet here once each has said why it stops.
  Status Barrier(std::chrono::milliseconds timeout);

  class Impl;

 private:
  explicit MpiTransport(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fedrec
