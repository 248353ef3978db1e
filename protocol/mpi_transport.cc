// MpiTransport: see mpi_transport.h for the contract. Implementation notes:
//
// Threads. Send(), Recv(), stats() and RunOnMpiThread() run on the callers'
// threads and only touch two queues: the outbox (frames to post, tasks to run;
// out_mu_) and the inbox (delivered frames; an Inbox). The progress thread owns
// every MPI object: it is the thread that called MPI_Init_thread, so
// MPI_THREAD_FUNNELED is all fedrec needs.
//
// Wire. All fedrec traffic uses a duplicate of MPI_COMM_WORLD with
// MPI_ERRORS_RETURN, so an MPI failure becomes a logged Status, not an abort.
// A frame of at most max_message bytes is one message (kTagFrame). A larger one
// is a 16-byte header message (kTagHeader: total length and chunk count, both
// uint64 little-endian) followed by its chunks (kTagChunk), each at most
// max_message bytes. All messages of a frame are posted back to back by the
// one progress thread, and every receive matches (MPI_ANY_SOURCE, MPI_ANY_TAG),
// so MPI's non-overtaking rule delivers them in send order per sender: the
// chunks of a sender always belong to that sender's latest header. Each frame
// is received straight into its final buffer (chunk k at its offset), with one
// non-blocking receive per message, and frames are delivered per sender in the
// order they were matched.
//
// Bounds. A frame's buffer is allocated when its (unauthenticated) header is
// matched, so every announced size is checked first: at most max_frame bytes,
// chunk counts consistent with the size, one open chunked frame per sender.
// A refused header allocates nothing; a refused message that carries bytes
// (a chunk of no open frame) is received whole and freed: those bytes were
// actually sent.
//
// Receive buffers. A frame's buffer must be a zero-filled std::vector before
// MPI writes into it; for a 16 MiB frame that costs ~0.7 ms, and ~12 ms when
// the memory is fresh from the kernel (4 KiB page faults on a VM). So large
// buffers are advised to use transparent huge pages, and while the progress
// thread is idle it prepares spare zero-filled buffers for large frames (as
// many as frames of 1 MiB or more arrived in the last 2 s, at most 64 MiB in
// all; dropped after 2 s without such frames), so that the next round's
// frames are received without that work on their path.
//
// Idle policy. MPI has no "wake me when a message arrives" that another thread
// could interrupt, so the progress thread polls. To stay cheap on an
// oversubscribed machine it polls eagerly (yielding the core between polls)
// right after activity, then backs off to sleeping on the outbox condition
// variable, doubling the sleep from 20 us up to 200 us while requests are in
// flight or a frame went out or came in during the last 50 ms (a reply is
// likely), and up to 1 ms once it has been quiet. Send() wakes it at once, so
// outbound latency is unaffected; inbound latency is at most one sleep.
#include "protocol/mpi_transport.h"

#include <mpi.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cassert>
#include <climits>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <exception>
#include <future>
#include <list>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "protocol/frame.h"
#include "protocol/inbox.h"

namespace fedrec {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kTagFrame = 1;   // a whole frame
constexpr int kTagHeader = 2;  // announces a chunked frame
constexpr int kTagChunk = 3;   // next chunk of the sender's latest announced frame
constexpr int kChunkHeaderBytes = 16;

// Progress-thread polling (see the file comment).
constexpr int kEagerPolls = 32;                           // polls after activity before sleeping
constexpr std::chrono::microseconds kFirstSleep{20};      // first back-off sleep
constexpr std::chrono::microseconds kMaxSleepBusy{200};   // cap while traffic is likely
constexpr std::chrono::microseconds kMaxSleepIdle{1000};  // cap once it has been quiet
// Traffic is likely while requests are in flight and for this long after the
// last frame went out or came in (a reply is probably on its way).
constexpr std::chrono::milliseconds kRecentTraffic{50};
constexpr int kMaxProbesPerPass = 256;  // bounded, so posting sends is never starved

// Spare receive buffers (see TakeReceiveBuffer): kept for frames of at least
// kSpareMinBytes, at most kSpareBudgetBytes in all, as many as such frames
// arrived during the last kSpareWindow.
constexpr size_t kSpareMinBytes = size_t{1} << 20;
constexpr size_t kSpareBudgetBytes = size_t{64} << 20;
constexpr std::chrono::seconds kSpareWindow{2};

// Set by the first Start(): MPI can be initialised only once per process.
std::atomic<bool> g_started{false};

std::string MpiErrorString(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) {
    return "MPI error code " + std::to_string(code);
  }
  return std::string(text, static_cast<size_t>(length));
}

Status MpiError(const std::string& what, int code) {
  return Status::Internal(what + " failed: " + MpiErrorString(code));
}

void PutU64(uint8_t* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint64_t GetU64(const uint8_t* in) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(in[i]) << (8 * i);
  return v;
}

// A zero-filled buffer of `n` bytes for a frame being received. Large buffers
// are advised to use transparent huge pages before their first touch: fresh
// memory is faulted in 2 MiB at a time instead of 4 KiB, which on a VM cuts the
// cost of a fresh 16 MiB buffer from ~12 ms to ~2 ms (a no-op where THP is
// off, and for memory the allocator hands out again).
std::vector<uint8_t> NewReceiveBuffer(size_t n) {
  std::vector<uint8_t> bytes;
#ifdef MADV_HUGEPAGE
  constexpr size_t kHugePage = size_t{2} << 20;
  if (n >= 2 * kHugePage) {
    bytes.reserve(n);  // allocates, touches nothing
    const uintptr_t data = reinterpret_cast<uintptr_t>(bytes.data());
    const uintptr_t begin = (data + kHugePage - 1) & ~(kHugePage - 1);
    const uintptr_t end = (data + n) & ~(kHugePage - 1);
    if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
  }
#endif
  bytes.resize(n);
  return bytes;
}

// A frame handed to the progress thread.
struct Outgoing {
  int peer = -1;
  std::vector<uint8_t> bytes;
};

// A frame posted to MPI; owns the buffers until every request completed.
struct InFlightSend {
  int peer = -1;
  std::vector<uint8_t> bytes;
  std::array<uint8_t, kChunkHeaderBytes> header{};
  std::vector<MPI_Request> requests;
};

// A frame being received from one sender.
struct InFlightRecv {
  std::vector<uint8_t> bytes;  // final size from the start
  uint64_t chunks = 1;         // messages carrying the bytes
  uint64_t posted = 0;         // of those, receives posted so far
  uint64_t offset = 0;         // bytes covered by the posted receives
  std::vector<MPI_Request> requests;
  bool lost = false;  // a receive failed: dropped instead of delivered
  bool Complete() const { return posted == chunks && requests.empty(); }
};

// RunOnMpiThread's request.
struct Task {
  const std::function<void()>* fn = nullptr;
  bool done = false;  // guarded by out_mu_
  Status status;
};

}  // namespace

class MpiTransport::Impl {
 public:
  explicit Impl(const MpiTransportOptions& options) : options_(options) {}
  ~Impl() { Close(); }

  Status Start();
  void Close();
  Status Send(int peer, std::vector<uint8_t> bytes);
  Result<Envelope> Recv(std::chrono::milliseconds timeout);
  TrafficStats stats() const;
  Status RunOnMpiThread(const std::function<void()>& fn);
  [[noreturn]] void Abort(int code, const std::string& reason);
  Status SendRaw(int peer, int tag, std::vector<uint8_t> bytes);
  uint64_t refused() const { return refused_.load(std::memory_order_relaxed); }

  int rank() const { return rank_; }
  int size() const { return size_; }
  const std::string& host() const { return host_; }

 private:
  // Progress thread.
  void Run(std::promise<Status>* started);
  Status InitMpi();
  bool Pass(bool* stop);  // one round of work; true when anything happened
  void PostSend(Outgoing out);
  bool TestSends();
  bool ProbeAndReceive();
  void ReceiveMatched(MPI_Message message, const MPI_Status& status);
  void Discard(MPI_Message message, int source, int count, const std::string& why);
  bool TestReceives();
  void Deliver(int source, std::vector<uint8_t> bytes);
  // Polls again or sleeps, per the idle policy. While flushing (no new sends
  // or tasks can come), only an abort cuts a sleep short.
  void Backoff(int idle_passes, bool flushing = false);
  void Flush();
  void Finalize();
  [[noreturn]] void AbortNow(int code);
  bool InFlight() const { return !sends_.empty() || recv_frames_ > 0; }
  // A zero-filled buffer of `n` bytes for a frame being received: a spare one
  // when there is one that fits, else a new one.
  std::vector<uint8_t> TakeReceiveBuffer(size_t n);
  // Prepares one more spare buffer if fewer are ready than large frames
  // arrived lately; true if it did (it took time: poll again first).
  bool ReplenishSpares();

  const MpiTransportOptions options_;
  int rank_ = -1;
  int size_ = 0;
  std::string host_;
  std::thread thread_;
  std::thread::id thread_id_;
  std::mutex close_mu_;  // serialises Close()

  // Shared with callers of Send / RunOnMpiThread / Abort.
  std::mutex out_mu_;
  std::condition_variable out_cv_;   // wakes the progress thread
  std::condition_variable task_cv_;  // wakes RunOnMpiThread callers
  std::deque<Outgoing> outbox_;
  std::deque<Task*> tasks_;
  bool closed_ = false;    // Send and RunOnMpiThread refuse
  bool stop_ = false;      // progress thread: flush and finalise
  bool finished_ = false;  // progress thread returned (MPI finalised or never up)
  bool sleeping_ = false;  // progress thread waits on out_cv_
  bool abort_ = false;
  int abort_code_ = 1;

  // Shared with Recv callers.
  Inbox inbox_{-1};  // its rank is set by InitMpi, before Start returns

  std::atomic<uint64_t> bytes_sent_{0};
  std::atomic<uint64_t> messages_sent_{0};
  std::atomic<uint64_t> refused_{0};

  // Progress thread only.
  MPI_Comm comm_ = MPI_COMM_NULL;
  std::list<InFlightSend> sends_;
  std::vector<std::deque<InFlightRecv>> recvs_;  // per sender, in match order
  size_t recv_frames_ = 0;                       // frames in recvs_
  Clock::time_point last_traffic_;               // last frame posted or matched
  // Zero-filled buffers prepared while idle, so that zero-filling (and, for
  // fresh memory, faulting in) a large frame's buffer is off the critical path
  // when it arrives.
  std::vector<std::vector<uint8_t>> spares_;
  std::deque<std::pair<Clock::time_point, size_t>> large_arrivals_;  // within kSpareWindow
};

// ---------------------------------------------------------------------------
// Callers' side

Status MpiTransport::Impl::Start() {
  std::promise<Status> started;
  std::future<Status> result = started.get_future();
  thread_ = std::thread([this, &started] { Run(&started); });
  thread_id_ = thread_.get_id();
  Status status = result.get();
  if (!status.ok()) thread_.join();
  return status;
}

void MpiTransport::Impl::Close() {
  std::lock_guard<std::mutex> close_lock(close_mu_);
  if (!thread_.joinable()) return;
  assert(std::this_thread::get_id() != thread_id_ && "Close() called on the MPI progress thread");
  {
    std::lock_guard<std::mutex> lock(out_mu_);
    closed_ = true;
    stop_ = true;
  }
  out_cv_.notify_all();
  thread_.join();
}

Status MpiTransport::Impl::Send(int peer, std::vector<uint8_t> bytes) {
  StampFrameIfUnset(bytes);
  if (peer < 0 || peer >= size_) {
    return Status::InvalidArgument("rank " + std::to_string(rank_) + " cannot send to rank " +
                                   std::to_string(peer) + ": the MPI job has ranks 0.." +
                                   std::to_string(size_ - 1));
  }
  if (bytes.size() > options_.max_frame) {
    return Status::InvalidArgument(
        "rank " + std::to_string(rank_) + " cannot send a " + std::to_string(bytes.size()) +
        "-byte frame to rank " + std::to_string(peer) + ": more than the " +
        std::to_string(options_.max_frame) + " bytes allowed (MpiTransportOptions::max_frame)");
  }
  bool wake = false;
  {
    std::lock_guard<std::mutex> lock(out_mu_);
    if (closed_) {
      return Status::Unavailable("rank " + std::to_string(rank_) + " cannot send to rank " +
                                 std::to_string(peer) + ": the MPI transport is closed");
    }
    outbox_.push_back(Outgoing{peer, std::move(bytes)});
    wake = sleeping_;
  }
  if (wake) out_cv_.notify_one();
  return Status::Ok();
}

Result<Envelope> MpiTransport::Impl::Recv(std::chrono::milliseconds timeout) {
  return inbox_.Pop(timeout);
}

TrafficStats MpiTransport::Impl::stats() const {
  TrafficStats s;
  s.bytes_sent = bytes_sent_.load(std::memory_order_relaxed);
  s.bytes_received = inbox_.bytes_received();
  s.messages_sent = messages_sent_.load(std::memory_order_relaxed);
  s.messages_received = inbox_.messages_received();
  return s;
}

Status MpiTransport::Impl::RunOnMpiThread(const std::function<void()>& fn) {
  if (std::this_thread::get_id() == thread_id_) {
    try {
      fn();
    } catch (const std::exception& e) {
      return Status::Internal(std::string("function run on the MPI thread threw: ") + e.what());
    } catch (...) {
      return Status::Internal("function run on the MPI thread threw a non-standard exception");
    }
    return Status::Ok();
  }
  Task task;
  task.fn = &fn;
  std::unique_lock<std::mutex> lock(out_mu_);
  if (closed_) {
    return Status::Unavailable("rank " + std::to_string(rank_) +
                               " cannot run on the MPI thread: the MPI transport is closed");
  }
  tasks_.push_back(&task);
  if (sleeping_) out_cv_.notify_one();
  task_cv_.wait(lock, [&task] { return task.done; });
  return task.status;
}

void MpiTransport::Impl::Abort(int code, const std::string& reason) {
  spdlog::critical("MPI rank {}: aborting the job with code {}: {}", rank_, code, reason);
  spdlog::default_logger()->flush();
  if (std::this_thread::get_id() == thread_id_) AbortNow(code);
  {
    std::lock_guard<std::mutex> lock(out_mu_);
    if (finished_) {
      // MPI is finalised (or never came up): no MPI_Abort; end this process.
      std::_Exit(code);
    }
    abort_ = true;
    abort_code_ = code;
  }
  out_cv_.notify_all();
  // The progress thread calls MPI_Abort at its next pass. Should it be stuck in
  // a blocking call (a RunOnMpiThread function, MPI_Finalize waiting for the
  // other ranks), end at least this process.
  std::this_thread::sleep_for(std::chrono::seconds(30));
  spdlog::critical("MPI rank {}: MPI_Abort did not end the process within 30 s; exiting", rank_);
  std::_Exit(code);
}

// ---------------------------------------------------------------------------
// Progress thread

void MpiTransport::Impl::Run(std::promise<Status>* started) {
  Status init = InitMpi();
  if (!init.ok()) {
    {
      std::lock_guard<std::mutex> lock(out_mu_);
      closed_ = true;
      finished_ = true;
    }
    inbox_.Close();
    started->set_value(std::move(init));
    return;
  }
  recvs_.resize(static_cast<size_t>(size_));
  started->set_value(Status::Ok());  // `started` dies with Start(): not used below

  int idle_passes = 0;
  bool stop = false;
  while (!stop) {
    if (Pass(&stop)) {
      idle_passes = 0;
    } else if (!stop) {
      Backoff(++idle_passes);
    }
  }
  Flush();
  Finalize();
}

Status MpiTransport::Impl::InitMpi() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized || finalized) {
    return Status::Internal(
        "MPI is already initialised in this process; MpiTransport must be the one to initialise "
        "it");
  }
  int provided = MPI_THREAD_SINGLE;
  int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
  if (rc != MPI_SUCCESS) return MpiError("MPI_Init_thread", rc);
  if (provided < MPI_THREAD_FUNNELED) {
    MPI_Finalize();
    return Status::Internal("MPI granted thread level " + std::to_string(provided) +
                            " but fedrec needs at least MPI_THREAD_FUNNELED (" +
                            std::to_string(MPI_THREAD_FUNNELED) + ")");
  }
  Status status;
  if ((rc = MPI_Comm_dup(MPI_COMM_WORLD, &comm_)) != MPI_SUCCESS) {
    status = MpiError("MPI_Comm_dup(MPI_COMM_WORLD)", rc);
  } else if ((rc = MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN)) != MPI_SUCCESS) {
    status = MpiError("MPI_Comm_set_errhandler", rc);
  } else if ((rc = MPI_Comm_rank(comm_, &rank_)) != MPI_SUCCESS) {
    status = MpiError("MPI_Comm_rank", rc);
  } else if ((rc = MPI_Comm_size(comm_, &size_)) != MPI_SUCCESS) {
    status = MpiError("MPI_Comm_size", rc);
  } else {
    inbox_.set_rank(rank_);
    char name[MPI_MAX_PROCESSOR_NAME];
    int length = 0;
    if ((rc = MPI_Get_processor_name(name, &length)) != MPI_SUCCESS) {
      status = MpiError("MPI_Get_processor_name", rc);
    } else {
      host_.assign(name, static_cast<size_t>(length));
    }
  }
  if (!status.ok()) {
    MPI_Finalize();
    return status;
  }
  return Status::Ok();
}

bool MpiTransport::Impl::Pass(bool* stop) {
  std::deque<Outgoing> outgoing;
  std::deque<Task*> tasks;
  {
    std::lock_guard<std::mutex> lock(out_mu_);
    if (abort_) AbortNow(abort_code_);
    outgoing.swap(outbox_);
    tasks.swap(tasks_);
    *stop = stop_;
  }
  bool progressed = !outgoing.empty() || !tasks.empty();
  // Frames first: a caller that sent and then asked for a task (say, a
  // barrier) expects its frames to be on their way before the task runs.
  for (Outgoing& out : outgoing) PostSend(std::move(out));
  for (Task* task : tasks) {
    Status status;
    try {
      (*task->fn)();
    } catch (const std::exception& e) {
      status = Status::Internal(std::string("function run on the MPI thread threw: ") + e.what());
    } catch (...) {
      status = Status::Internal("function run on the MPI thread threw a non-standard exception");
    }
    {
      std::lock_guard<std::mutex> lock(out_mu_);
      task->status = std::move(status);
      task->done = true;
    }
    task_cv_.notify_all();
  }
  const bool received = ProbeAndReceive();
  if (received || !outgoing.empty()) last_traffic_ = Clock::now();
  progressed |= received;
  progressed |= TestSends();
  progressed |= TestReceives();
  return progressed;
}

void MpiTransport::Impl::PostSend(Outgoing out) {
  InFlightSend& send = sends_.emplace_back();
  send.peer = out.peer;
  send.bytes = std::move(out.bytes);
  const uint64_t total = send.bytes.size();
  const uint64_t max_message = options_.max_message;
  int rc = MPI_SUCCESS;
  // MPI wants a non-null buffer even for zero bytes on some implementations.
  uint8_t* data = send.bytes.empty() ? send.header.data() : send.bytes.data();
  if (total <= max_message) {
    send.requests.resize(1);
    rc = MPI_Isend(data, static_cast<int>(total), MPI_BYTE, send.peer, kTagFrame, comm_,
                   &send.requests[0]);
  } else {
    const uint64_t chunks = (total + max_message - 1) / max_message;
    PutU64(send.header.data(), total);
    PutU64(send.header.data() + 8, chunks);
    send.requests.reserve(static_cast<size_t>(chunks) + 1);
    send.requests.push_back(MPI_REQUEST_NULL);
    rc = MPI_Isend(send.header.data(), kChunkHeaderBytes, MPI_BYTE, send.peer, kTagHeader, comm_,
                   &send.requests.back());
    for (uint64_t offset = 0; rc == MPI_SUCCESS && offset < total; offset += max_message) {
      const uint64_t n = std::min(max_message, total - offset);
      send.requests.push_back(MPI_REQUEST_NULL);
      rc = MPI_Isend(data + offset, static_cast<int>(n), MPI_BYTE, send.peer, kTagChunk, comm_,
                     &send.requests.back());
    }
  }
  if (rc != MPI_SUCCESS) {
    // Requests already posted keep their buffer alive in sends_; the frame is
    // lost for the peer (it may see a header without all chunks).
    spdlog::error("MPI rank {}: dropped a {}-byte frame to rank {}: {}", rank_, total, send.peer,
                  MpiErrorString(rc));
    if (send.requests.back() == MPI_REQUEST_NULL) send.requests.pop_back();
    if (send.requests.empty()) sends_.pop_back();
    return;
  }
  bytes_sent_.fetch_add(total, std::memory_order_relaxed);
  messages_sent_.fetch_add(1, std::memory_order_relaxed);
}

bool MpiTransport::Impl::TestSends() {
  bool progressed = false;
  for (auto it = sends_.begin(); it != sends_.end();) {
    int done = 0;
    const int rc = MPI_Testall(static_cast<int>(it->requests.size()), it->requests.data(), &done,
                               MPI_STATUSES_IGNORE);
    if (rc != MPI_SUCCESS) {
      spdlog::error("MPI rank {}: a {}-byte frame to rank {} failed: {}", rank_, it->bytes.size(),
                    it->peer, MpiErrorString(rc));
      done = 1;  // MPI_ERRORS_RETURN: the failed requests are released
    }
    if (done) {
      it = sends_.erase(it);
      progressed = true;
    } else {
      ++it;
    }
  }
  return progressed;
}

bool MpiTransport::Impl::ProbeAndReceive() {
  bool progressed = false;
  for (int i = 0; i < kMaxProbesPerPass; ++i) {
    int found = 0;
    MPI_Message message = MPI_MESSAGE_NULL;
    MPI_Status status;
    const int rc = MPI_Improbe(MPI_ANY_SOURCE, MPI_ANY_TAG, comm_, &found, &message, &status);
    if (rc != MPI_SUCCESS) {
      spdlog::error("MPI rank {}: MPI_Improbe failed: {}", rank_, MpiErrorString(rc));
      break;
    }
    if (!found) break;
    ReceiveMatched(message, status);
    progressed = true;
  }
  return progressed;
}

void MpiTransport::Impl::ReceiveMatched(MPI_Message message, const MPI_Status& status) {
  const int source = status.MPI_SOURCE;
  int count = 0;
  int rc = MPI_Get_count(&status, MPI_BYTE, &count);
  if (rc != MPI_SUCCESS || count == MPI_UNDEFINED || count < 0) {
    Discard(message, source, 0, "its size is not a byte count");
    return;
  }
  std::deque<InFlightRecv>& frames = recvs_[static_cast<size_t>(source)];
  switch (status.MPI_TAG) {
    case kTagFrame: {
      if (static_cast<uint64_t>(count) > options_.max_frame) {
        Discard(message, source, count,
                "more than the " + std::to_string(options_.max_frame) +
                    " bytes allowed (MpiTransportOptions::max_frame)");
        return;
      }
      InFlightRecv& frame = frames.emplace_back();
      ++recv_frames_;
      frame.bytes = TakeReceiveBuffer(static_cast<size_t>(count));
      frame.chunks = 1;
      frame.posted = 1;
      frame.offset = static_cast<uint64_t>(count);
      frame.requests.resize(1);
      static uint8_t empty_frame_sink;  // never written: the count is 0
      rc = MPI_Imrecv(count > 0 ? frame.bytes.data() : &empty_frame_sink, count, MPI_BYTE, &message,
                      &frame.requests[0]);
      if (rc != MPI_SUCCESS) {
        spdlog::error("MPI rank {}: lost a {}-byte frame from rank {}: {}", rank_, count, source,
                      MpiErrorString(rc));
        frames.pop_back();
        --recv_frames_;
      }
      return;
    }
    case kTagHeader: {
      std::array<uint8_t, kChunkHeaderBytes> header{};
      if (count != kChunkHeaderBytes) {
        Discard(message, source, count, "a chunk header must be 16 bytes");
        return;
      }
      rc = MPI_Mrecv(header.data(), count, MPI_BYTE, &message, MPI_STATUS_IGNORE);
      if (rc != MPI_SUCCESS) {
        spdlog::error("MPI rank {}: lost a chunk header from rank {}: {}", rank_, source,
                      MpiErrorString(rc));
        return;
      }
      const uint64_t total = GetU64(header.data());
      const uint64_t chunks = GetU64(header.data() + 8);
      // Every chunk carries 1..INT_MAX bytes; the buffer is allocated now,
      // before any of them arrived.
      std::string refusal;
      if (total > options_.max_frame) {
        refusal = "it announces " + std::to_string(total) + " bytes, more than the " +
                  std::to_string(options_.max_frame) + " allowed (MpiTransportOptions::max_frame)";
      } else if (chunks == 0 || chunks > total || total / chunks > static_cast<uint64_t>(INT_MAX)) {
        refusal = "it announces " + std::to_string(total) + " bytes in " + std::to_string(chunks) +
                  " chunks (each chunk must carry 1.." + std::to_string(INT_MAX) + " bytes)";
      } else if (!frames.empty() && frames.back().posted < frames.back().chunks) {
        refusal = "the chunks of its previous " + std::to_string(frames.back().bytes.size()) +
                  "-byte frame have not all arrived (" + std::to_string(frames.back().posted) +
                  " of " + std::to_string(frames.back().chunks) + ")";
      }
      if (!refusal.empty()) {
        refused_.fetch_add(1, std::memory_order_relaxed);
        spdlog::error(
            "MPI rank {}: refused a chunked frame from rank {}: {}; its chunks are dropped", rank_,
            source, refusal);
        return;
      }
      InFlightRecv& frame = frames.emplace_back();
      ++recv_frames_;
      frame.bytes = TakeReceiveBuffer(static_cast<size_t>(total));
      frame.chunks = chunks;
      frame.requests.reserve(static_cast<size_t>(std::min<uint64_t>(chunks, 1024)));
      return;
    }
    case kTagChunk: {
      if (frames.empty() || frames.back().posted == frames.back().chunks) {
        Discard(message, source, count, "no chunked frame from it is open");
        return;
      }
      InFlightRecv& frame = frames.back();
      if (frame.offset + static_cast<uint64_t>(count) > frame.bytes.size() ||
          (frame.posted + 1 == frame.chunks &&
           frame.offset + static_cast<uint64_t>(count) != frame.bytes.size())) {
        Discard(message, source, count,
                "it does not fit the announced " + std::to_string(frame.bytes.size()) +
                    "-byte frame at offset " + std::to_string(frame.offset));
        return;
      }
      frame.requests.push_back(MPI_REQUEST_NULL);
      rc = MPI_Imrecv(frame.bytes.data() + frame.offset, count, MPI_BYTE, &message,
                      &frame.requests.back());
      if (rc != MPI_SUCCESS) {
        spdlog::error("MPI rank {}: lost a {}-byte chunk from rank {}: {}", rank_, count, source,
                      MpiErrorString(rc));
        frame.requests.pop_back();
        frame.lost = true;
      }
      // Counted even when lost, so the sender's later messages stay aligned.
      frame.offset += static_cast<uint64_t>(count);
      ++frame.posted;
      return;
    }
    default:
      Discard(message, source, count, "tag " + std::to_string(status.MPI_TAG) + " is not fedrec's");
  }
}

void MpiTransport::Impl::Discard(MPI_Message message, int source, int count,
                                 const std::string& why) {
  refused_.fetch_add(1, std::memory_order_relaxed);
  spdlog::error("MPI rank {}: dropped a {}-byte message from rank {}: {}", rank_, count, source,
                why);
  // The whole message must be received (a shorter buffer is not safe with
  // every transport: shared-memory single copy writes the full length); its
  // bytes were actually sent, so this is bounded by what the peer spent.
  std::vector<uint8_t> sink(static_cast<size_t>(std::max(count, 1)));
  MPI_Mrecv(sink.data(), count, MPI_BYTE, &message, MPI_STATUS_IGNORE);
}

bool MpiTransport::Impl::TestReceives() {
  if (recv_frames_ == 0) return false;
  bool progressed = false;
  for (size_t source = 0; source < recvs_.size(); ++source) {
    std::deque<InFlightRecv>& frames = recvs_[source];
    for (InFlightRecv& frame : frames) {
      if (frame.requests.empty()) continue;
      int done = 0;
      const int rc = MPI_Testall(static_cast<int>(frame.requests.size()), frame.requests.data(),
                                 &done, MPI_STATUSES_IGNORE);
      if (rc != MPI_SUCCESS) {
        spdlog::error("MPI rank {}: receiving a {}-byte frame from rank {} failed: {}", rank_,
                      frame.bytes.size(), source, MpiErrorString(rc));
        done = 1;  // MPI_ERRORS_RETURN: the failed requests are released
        frame.lost = true;
      }
      if (done) {
        frame.requests.clear();
        progressed = true;
      }
    }
    // Deliver in match order: a later frame waits for the earlier ones.
    while (!frames.empty() && frames.front().Complete()) {
      if (frames.front().lost) {
        spdlog::error("MPI rank {}: dropped an incomplete {}-byte frame from rank {}", rank_,
                      frames.front().bytes.size(), source);
      } else {
        Deliver(static_cast<int>(source), std::move(frames.front().bytes));
      }
      frames.pop_front();
      --recv_frames_;
    }
  }
  return progressed;
}

void MpiTransport::Impl::Deliver(int source, std::vector<uint8_t> bytes) {
  inbox_.Push(Envelope{source, std::move(bytes)});
}

std::vector<uint8_t> MpiTransport::Impl::TakeReceiveBuffer(size_t n) {
  if (n >= kSpareMinBytes) {
    const auto now = Clock::now();
    while (!large_arrivals_.empty() && now - large_arrivals_.front().first > kSpareWindow) {
      large_arrivals_.pop_front();
    }
    large_arrivals_.emplace_back(now, n);
    // A spare at most 1/8 larger than needed: shrinking it costs nothing.
    for (auto it = spares_.begin(); it != spares_.end(); ++it) {
      if (it->size() >= n && it->size() - n <= n / 8) {
        std::vector<uint8_t> bytes = std::move(*it);
        spares_.erase(it);
        bytes.resize(n);
        return bytes;
      }
    }
  }
  return NewReceiveBuffer(n);
}

bool MpiTransport::Impl::ReplenishSpares() {
  const auto now = Clock::now();
  while (!large_arrivals_.empty() && now - large_arrivals_.front().first > kSpareWindow) {
    large_arrivals_.pop_front();
  }
  if (large_arrivals_.empty()) {
    spares_.clear();  // quiet for a while: give the memory back
    return false;
  }
  size_t size = 0;
  for (const auto& arrival : large_arrivals_) size = std::max(size, arrival.second);
  const size_t wanted = std::min(large_arrivals_.size(), kSpareBudgetBytes / size);
  // Spares for other sizes go first.
  std::erase_if(spares_, [size](const std::vector<uint8_t>& b) {
    return b.size() < size || b.size() - size > size / 8;
  });
  if (spares_.size() >= wanted) return false;
  spares_.push_back(NewReceiveBuffer(size));
  return true;
}

void MpiTransport::Impl::Backoff(int idle_passes, bool flushing) {
  if (idle_passes <= kEagerPolls) {
    std::this_thread::yield();
    return;
  }
  // Idle for a while (and not shutting down): prepare spare buffers, one per
  // pass so that new traffic is looked at between them.
  if (!flushing && !InFlight() && idle_passes > kEagerPolls + 2 && ReplenishSpares()) return;
  const int doublings = std::min(idle_passes - kEagerPolls - 1, 10);
  const bool busy = InFlight() || Clock::now() - last_traffic_ < kRecentTraffic;
  const auto cap = busy ? kMaxSleepBusy : kMaxSleepIdle;
  const auto sleep = std::min<std::chrono::microseconds>(kFirstSleep * (1 << doublings), cap);
  std::unique_lock<std::mutex> lock(out_mu_);
  sleeping_ = true;
  out_cv_.wait_for(lock, sleep, [this, flushing] {
    return abort_ || (!flushing && (!outbox_.empty() || !tasks_.empty() || stop_));
  });
  sleeping_ = false;
}

void MpiTransport::Impl::Flush() {
  // closed_ is set: outbox_ and tasks_ stay empty after the last Pass.
  const auto deadline = Clock::now() + options_.flush_timeout;
  int idle_passes = 0;
  bool stop = true;
  while (!sends_.empty() && Clock::now() < deadline) {
    if (Pass(&stop)) {
      idle_passes = 0;
    } else {
      Backoff(++idle_passes, /*flushing=*/true);
    }
  }
  if (!sends_.empty()) {
    uint64_t bytes = 0;
    std::string peers;
    for (const InFlightSend& send : sends_) {
      bytes += send.bytes.size();
      if (!peers.empty()) peers += ", ";
      peers += std::to_string(send.peer);
    }
    spdlog::warn(
        "MPI rank {}: closing with {} frame(s) ({} bytes) still unsent after the {} ms flush "
        "timeout; abandoning them (to ranks {})",
        rank_, sends_.size(), bytes, options_.flush_timeout.count(), peers);
  }
  if (recv_frames_ > 0) {
    spdlog::warn("MPI rank {}: closing with {} frame(s) partly received; dropping them", rank_,
                 recv_frames_);
  }
}

void MpiTransport::Impl::Finalize() {
  // Abandoned requests stay active; their buffers are released only after
  // MPI_Finalize, when no peer can read them any more.
  const int rc = MPI_Finalize();
  if (rc != MPI_SUCCESS) {
    spdlog::error("MPI rank {}: MPI_Finalize failed: {}", rank_, MpiErrorString(rc));
  }
  comm_ = MPI_COMM_NULL;
  sends_.clear();
  recvs_.clear();
  recv_frames_ = 0;
  {
    std::lock_guard<std::mutex> lock(out_mu_);
    finished_ = true;
  }
  inbox_.Close();
}

void MpiTransport::Impl::AbortNow(int code) {
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);  // MPI_Abort does not return; in case it does
}

Status MpiTransport::Impl::SendRaw(int peer, int tag, std::vector<uint8_t> bytes) {
  if (peer < 0 || peer >= size_) return Status::InvalidArgument("no rank " + std::to_string(peer));
  int rc = MPI_SUCCESS;
  Status ran = RunOnMpiThread([&] {
    rc = MPI_Send(bytes.empty() ? nullptr : bytes.data(), static_cast<int>(bytes.size()), MPI_BYTE,
                  peer, tag, comm_);
  });
  if (!ran.ok()) return ran;
  return rc == MPI_SUCCESS ? Status::Ok() : MpiError("MPI_Send", rc);
}

// ---------------------------------------------------------------------------
// MpiTransport

Result<std::unique_ptr<MpiTransport>> MpiTransport::Start(const MpiTransportOptions& options) {
  if (options.max_message == 0 || options.max_message > static_cast<size_t>(INT_MAX)) {
    return Status::InvalidArgument("MpiTransportOptions.max_message is " +
                                   std::to_string(options.max_message) + ", expected 1.." +
                                   std::to_string(INT_MAX) + " (an MPI count)");
  }
  if (options.max_frame == 0) {
    return Status::InvalidArgument("MpiTransportOptions.max_frame is 0, expected at least 1");
  }
  if (options.flush_timeout.count() < 0) {
    return Status::InvalidArgument("MpiTransportOptions.flush_timeout is negative");
  }
  if (g_started.exchange(true)) {
    return Status::Unavailable(
        "MpiTransport::Start: MPI was already started in this process (MPI can be initialised "
        "once per process, so there is at most one MpiTransport)");
  }
  auto impl = std::make_unique<Impl>(options);
  FEDREC_RETURN_IF_ERROR(impl->Start());
  return std::unique_ptr<MpiTransport>(new MpiTransport(std::move(impl)));
}

MpiTransport::MpiTransport(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MpiTransport::~MpiTransport() { Close(); }

int MpiTransport::rank() const { return impl_->rank(); }
int MpiTransport::size() const { return impl_->size(); }
Status MpiTransport::Send(int peer, std::vector<uint8_t> bytes) {
  return impl_->Send(peer, std::move(bytes));
}
Result<Envelope> MpiTransport::Recv(std::chrono::milliseconds timeout) {
  return impl_->Recv(timeout);
}
TrafficStats MpiTransport::stats() const { return impl_->stats(); }
void MpiTransport::Close() { impl_->Close(); }
void MpiTransport::Abort(int code, const std::string& reason) { impl_->Abort(code, reason); }
const std::string& MpiTransport::host() const { return impl_->host(); }
uint64_t MpiTransport::refused_messages() const { return impl_->refused(); }
Status MpiTransport::SendRawForTesting(int peer, int tag, std::vector<uint8_t> bytes) {
  return impl_->SendRaw(peer, tag, std::move(bytes));
}

Result<std::vector<std::string>> MpiTransport::AllHosts() {
  const int n = size();
  std::vector<char> mine(MPI_MAX_PROCESSOR_NAME, '\0');
  std::copy_n(host().begin(), std::min<size_t>(host().size(), MPI_MAX_PROCESSOR_NAME - 1),
              mine.begin());
  std::vector<char> all(static_cast<size_t>(n) * MPI_MAX_PROCESSOR_NAME, '\0');
  int rc = MPI_SUCCESS;
  FEDREC_RETURN_IF_ERROR(impl_->RunOnMpiThread([&] {
    rc = MPI_Allgather(mine.data(), MPI_MAX_PROCESSOR_NAME, MPI_CHAR, all.data(),
                       MPI_MAX_PROCESSOR_NAME, MPI_CHAR, MPI_COMM_WORLD);
  }));
  if (rc != MPI_SUCCESS) return MpiError("MPI_Allgather of the host names", rc);
  std::vector<std::string> hosts;
  for (int r = 0; r < n; ++r)
    hosts.emplace_back(all.data() + static_cast<size_t>(r) * MPI_MAX_PROCESSOR_NAME);
  return hosts;
}
Status MpiTransport::RunOnMpiThread(const std::function<void()>& fn) {
  return impl_->RunOnMpiThread(fn);
}

Status MpiTransport::Barrier(std::chrono::milliseconds timeout) {
  Status result;
  Status ran = impl_->RunOnMpiThread([&] {
    MPI_Request request;
    int rc = MPI_Ibarrier(MPI_COMM_WORLD, &request);
    if (rc != MPI_SUCCESS) {
      result = Status::Internal("MPI_Ibarrier failed with code " + std::to_string(rc));
      return;
    }
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (int done = 0;;) {
      rc = MPI_Test(&request, &done, MPI_STATUS_IGNORE);
      if (rc != MPI_SUCCESS || done) break;
      if (std::chrono::steady_clock::now() >= deadline) {
        result = Status::Timeout("not every rank reached the barrier within " +
                                 std::to_string(timeout.count()) + " ms");
        return;  // the request stays pending; the job is ending anyway
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  return ran.ok() ? result : ran;
}

}  // namespace fedrec
