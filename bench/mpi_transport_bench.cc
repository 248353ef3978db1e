// FedAvg round over MpiTransport against a raw MPI_Reduce of the same bytes,
// measured in the same program run:
//
//   mpiexec --oversubscribe -np 4 build/bench/mpi_transport_bench
//       [--rounds=N] [--max_message=BYTES] [--malloc=keep|default]
//
// Model: one global block of 131072 x 32 floats (4,194,304 floats, 16 MiB).
//
// (a) raw:    on the progress thread (RunOnMpiThread): MPI_Barrier, then
//             MPI_Reduce of the 4M floats (MPI_FLOAT, MPI_SUM) to rank 0, timed
//             on rank 0 from the barrier to the end of the reduce.
// (b) fedrec: every worker (ranks 1..n-1) encodes its ModelUpdate frame (one
//             BlockUpdate with all 131072 rows, weights 1.0; 17.8 MB) BEFORE the
//             round starts and tells rank 0 it is ready. Rank 0 starts the
//             clock, sends each worker a 1-byte "go" and receives the frames.
//             Like the coordinator (coordinator.cc, UpdateAggregator), it
//             decodes each frame as it arrives (DecodeFrame +
//             DecodeMessage<ModelUpdate>) and folds the updates in ascending
//             site order as soon as it is their turn: acc[row*32 + c] +=
//             weight * value into a float accumulator of 4M entries (the same
//             arithmetic as MPI_SUM on MPI_FLOAT). The clock stops when the
//             last site is folded; then rank 0 tells the workers the round is
//             done (so none starts encoding its next frame while a round is
//             timed).
// (b2) as (b) with a double accumulator, as UpdateAggregator folds.
// (c) fedrec, encode after go: as (b), but each worker encodes after the go,
//             so the round also pays the encoding (for reference).
// (d) fedrec, transfer only: as (b), but rank 0 only receives the frames (no
//             decode, no fold): the transport's share of (b).
//
// The variants run interleaved, round by round, in an order that rotates each
// round ((a) (b) (b2) (c) (d), then (b) (b2) (c) (d) (a), ...), so background
// load and after-effects of the previous variant hit all of them alike; 2
// warm-up rounds, then `rounds` timed ones. Rank 0 prints medians (min, max),
// the ratio (b)/(a), and checks the folded sums after every round.
//
// --malloc=keep (default) sets glibc's mmap and trim thresholds so freed
// 16 MiB buffers stay in the process, as a long-running coordinator would want:
// without it glibc hands some of them back to the kernel every round and the
// next round faults them in again (~12 ms per fresh 16 MiB on a VM), which is
// allocator churn in the decoding, not transport cost. --malloc=default keeps
// glibc's defaults.
#include <malloc.h>
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "protocol/frame.h"
#include "protocol/messages.h"
#include "protocol/mpi_transport.h"

namespace fedrec {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr uint32_t kRows = 131072;
constexpr uint32_t kCols = 32;
constexpr size_t kFloats = size_t{kRows} * kCols;  // 4,194,304
constexpr milliseconds kWait{60000};
constexpr uint8_t kGo = 1;
constexpr uint8_t kDone = 2;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

struct Summary {
  double median = 0, min = 0, max = 0;
};
Summary Summarize(std::vector<double> v) {
  Summary s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  s.median = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  s.min = v.front();
  s.max = v.back();
  return s;
}

[[noreturn]] void Fail(MpiTransport& t, const std::string& what) {
  t.Abort(3, "mpi_transport_bench: " + what);
}

void Check(MpiTransport& t, const Status& s, const char* what) {
  if (!s.ok()) Fail(t, std::string(what) + ": " + s.ToString());
}

Envelope MustRecv(MpiTransport& t) {
  Result<Envelope> e = t.Recv(kWait);
  if (!e.ok()) Fail(t, "Recv: " + e.status().ToString());
  return std::move(e).value();
}

void ExpectSignal(MpiTransport& t, uint8_t signal) {
  Envelope e = MustRecv(t);
  if (e.from != 0 || e.bytes.size() != 1 || e.bytes[0] != signal) {
    Fail(t, "expected signal " + std::to_string(signal) + " from rank 0");
  }
}

// Site s's update: all rows, weight 1, value s + (i % 7) / 4 (exact in float
// and double, so the folded sums can be checked exactly).
ModelUpdate SiteUpdate(int site) {
  ModelUpdate u;
  u.round = 0;
  u.model_version = 1;
  u.num_examples = 1000;
  BlockUpdate b;
  b.name = "item_factors";
  b.cols = kCols;
  b.rows.resize(kRows);
  for (uint32_t r = 0; r < kRows; ++r) b.rows[r] = r;
  b.weights.assign(kRows, 1.0f);
  b.values.resize(kFloats);
  for (size_t i = 0; i < kFloats; ++i) b.values[i] = static_cast<float>(site) + (i % 7) * 0.25f;
  u.blocks.push_back(std::move(b));
  return u;
}

// ---------------------------------------------------------------------------
// (a) raw MPI_Reduce: one round, ms on rank 0.

struct RawBuffers {
  std::vector<float> send, recv;
};

double RawRound(MpiTransport& t, RawBuffers& buffers) {
  double ms = 0;
  int rc = MPI_SUCCESS;
  const bool root = t.rank() == 0;
  Check(t, t.RunOnMpiThread([&] {
    MPI_Barrier(MPI_COMM_WORLD);
    const auto t0 = Clock::now();
    rc = MPI_Reduce(buffers.send.data(), root ? buffers.recv.data() : nullptr,
                    static_cast<int>(kFloats), MPI_FLOAT, MPI_SUM, 0, MPI_COMM_WORLD);
    ms = Ms(Clock::now() - t0);
  }),
        "RunOnMpiThread(MPI_Reduce)");
  if (rc != MPI_SUCCESS) Fail(t, "MPI_Reduce failed");
  if (root) {
    // 0 + 1 + ... + (n-1) plus n * (i % 7) / 4.
    const int n = t.size();
    for (size_t i : {size_t{0}, size_t{5}, kFloats - 1}) {
      const float expected = static_cast<float>(n * (n - 1) / 2) + n * ((i % 7) * 0.25f);
      if (buffers.recv[i] != expected) Fail(t, "MPI_Reduce result " + std::to_string(i));
    }
  }
  return ms;
}

// ---------------------------------------------------------------------------
// (b)-(d) fedrec rounds

enum class Mode {
  kEncodeBeforeGo,        // (b) float accumulator
  kEncodeBeforeGoDouble,  // (b2) double accumulator
  kEncodeAfterGo,         // (c) float accumulator
  kTransferOnly,          // (d)
};

struct Rank0Times {
  double round = 0, wait = 0, decode = 0, fold = 0;
};

// A worker's part of one round: [encode,] say ready, wait for go, [encode,]
// send, wait until rank 0 has folded everything.
void WorkerRound(MpiTransport& t, Mode mode, uint32_t round, const ModelUpdate& update) {
  std::vector<uint8_t> frame;
  if (mode != Mode::kEncodeAfterGo) frame = EncodeMessage(update, round, t.rank());
  Check(t, t.Send(0, {1}), "Send(ready)");
  ExpectSignal(t, kGo);
  if (mode == Mode::kEncodeAfterGo) frame = EncodeMessage(update, round, t.rank());
  Check(t, t.Send(0, std::move(frame)), "Send(update)");
  ExpectSignal(t, kDone);
}

ModelUpdate Decode(MpiTransport& t, const std::vector<uint8_t>& bytes) {
  Result<FrameView> view = DecodeFrame(bytes);
  if (!view.ok()) Fail(t, view.status().ToString());
  Result<ModelUpdate> update = DecodeMessage<ModelUpdate>(*view);
  if (!update.ok()) Fail(t, update.status().ToString());
  return std::move(update).value();
}

// Per-row weighted sums of the values and the weights, in float (the
// arithmetic MPI_SUM does on MPI_FLOAT) or double (as UpdateAggregator does).
template <typename T>
struct Sums {
  std::vector<T> acc = std::vector<T>(kFloats);
  std::vector<T> weight_sum = std::vector<T>(kRows);

  void Clear() {
    std::fill(acc.begin(), acc.end(), T{0});
    std::fill(weight_sum.begin(), weight_sum.end(), T{0});
  }
  void Fold(MpiTransport& t, const ModelUpdate& update) {
    for (const BlockUpdate& b : update.blocks) {
      if (b.cols != kCols) Fail(t, "unexpected block shape");
      for (size_t k = 0; k < b.rows.size(); ++k) {
        const T w = b.weights[k];
        const uint32_t row = b.rows[k];
        weight_sum[row] += w;
        T* a = acc.data() + size_t{row} * kCols;
        const float* v = b.values.data() + k * kCols;
        for (uint32_t c = 0; c < kCols; ++c) a[c] += w * static_cast<T>(v[c]);
      }
    }
  }
  // Sites 1..n-1: sum of s is n(n-1)/2, plus (n-1) * (i % 7) / 4 (exact in both).
  void Verify(MpiTransport& t, int n) const {
    for (size_t i : {size_t{0}, size_t{3}, size_t{12345}, kFloats - 1}) {
      const T expected = static_cast<T>(n * (n - 1) / 2.0 + (n - 1) * ((i % 7) * 0.25));
      if (acc[i] != expected) Fail(t, "wrong sum at " + std::to_string(i));
    }
    if (weight_sum[kRows - 1] != static_cast<T>(n - 1)) Fail(t, "wrong weight sum");
  }
};

struct Accumulator {
  Sums<float> single;
  Sums<double> twice;
};

// Rank 0's part of one round.
Rank0Times CoordinatorRound(MpiTransport& t, Mode mode, Accumulator& sums) {
  const int n = t.size();
  const bool in_double = mode == Mode::kEncodeBeforeGoDouble;
  if (in_double) {
    sums.twice.Clear();
  } else {
    sums.single.Clear();
  }
  for (int ready = 1; ready < n; ++ready) {
    Envelope e = MustRecv(t);
    if (e.bytes.size() != 1) Fail(t, "expected a ready");
  }
  Rank0Times times;
  const auto start = Clock::now();
  for (int site = 1; site < n; ++site) Check(t, t.Send(site, {kGo}), "Send(go)");
  std::vector<std::optional<ModelUpdate>> pending(static_cast<size_t>(n));
  std::vector<bool> arrived(static_cast<size_t>(n), false);
  int next = 1;  // next site to fold
  for (int received = 0; received < n - 1; ++received) {
    const auto w0 = Clock::now();
    Envelope e = MustRecv(t);
    const auto w1 = Clock::now();
    times.wait += Ms(w1 - w0);
    const size_t from = static_cast<size_t>(e.from);
    if (e.from < 1 || e.from >= n || arrived[from] || e.bytes.size() < 2) {
      Fail(t, "unexpected frame from rank " + std::to_string(e.from));
    }
    arrived[from] = true;
    if (mode == Mode::kTransferOnly) continue;
    pending[from] = Decode(t, e.bytes);
    e.bytes = {};  // the frame is not needed any more
    const auto w2 = Clock::now();
    times.decode += Ms(w2 - w1);
    while (next < n && pending[static_cast<size_t>(next)]) {
      if (in_double) {
        sums.twice.Fold(t, *pending[static_cast<size_t>(next)]);
      } else {
        sums.single.Fold(t, *pending[static_cast<size_t>(next)]);
      }
      pending[static_cast<size_t>(next)].reset();
      ++next;
    }
    times.fold += Ms(Clock::now() - w2);
  }
  times.round = Ms(Clock::now() - start);
  for (int site = 1; site < n; ++site) Check(t, t.Send(site, {kDone}), "Send(done)");
  if (in_double) {
    sums.twice.Verify(t, n);
  } else if (mode != Mode::kTransferOnly) {
    sums.single.Verify(t, n);
  }
  return times;
}

struct Series {
  std::vector<double> round, wait, decode, fold;
  void Add(const Rank0Times& x) {
    round.push_back(x.round);
    wait.push_back(x.wait);
    decode.push_back(x.decode);
    fold.push_back(x.fold);
  }
};

void PrintRow(const char* name, const std::vector<double>& v) {
  const Summary s = Summarize(v);
  std::printf("  %-46s %8.2f %8.2f %8.2f\n", name, s.median, s.min, s.max);
}

}  // namespace
}  // namespace fedrec

int main(int argc, char** argv) {
  using namespace fedrec;
  int rounds = 30;
  bool keep_memory = true;
  MpiTransportOptions options;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--rounds=", 9) == 0) {
      rounds = std::atoi(argv[i] + 9);
    } else if (std::strncmp(argv[i], "--max_message=", 14) == 0) {
      options.max_message = static_cast<size_t>(std::strtoull(argv[i] + 14, nullptr, 10));
    } else if (std::strcmp(argv[i], "--malloc=keep") == 0) {
      keep_memory = true;
    } else if (std::strcmp(argv[i], "--malloc=default") == 0) {
      keep_memory = false;
    } else {
      std::fprintf(stderr, "usage: %s [--rounds=N] [--max_message=BYTES] [--malloc=keep|default]\n",
                   argv[0]);
      return 2;
    }
  }
  if (keep_memory) {
    // Before any thread exists. 32 MiB is glibc's largest mmap threshold.
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
  }
  auto started = MpiTransport::Start(options);
  if (!started.ok()) {
    std::fprintf(stderr, "MpiTransport::Start: %s\n", started.status().ToString().c_str());
    return 1;
  }
  MpiTransport& t = **started;
  if (t.size() < 2) t.Abort(2, "mpi_transport_bench needs at least 2 ranks");
  const bool root = t.rank() == 0;

  RawBuffers raw_buffers;
  raw_buffers.send.resize(kFloats);
  for (size_t i = 0; i < kFloats; ++i) {
    raw_buffers.send[i] = static_cast<float>(t.rank()) + (i % 7) * 0.25f;
  }
  raw_buffers.recv.assign(root ? kFloats : 1, 0.0f);
  std::optional<ModelUpdate> update;
  std::optional<Accumulator> sums;
  if (root) {
    sums.emplace();
  } else {
    update = SiteUpdate(t.rank());
  }

  std::vector<double> raw;
  Series before, before_double, after, transfer;
  const Mode modes[] = {Mode::kEncodeBeforeGo, Mode::kEncodeBeforeGoDouble, Mode::kEncodeAfterGo,
                        Mode::kTransferOnly};
  Series* series[] = {&before, &before_double, &after, &transfer};
  constexpr int kModes = 4;
  // Variant k of round i runs in position (k - i) mod 5: every variant runs
  // equally often right after every other one.
  constexpr int kVariants = kModes + 1;  // the raw reduce is variant kModes
  for (int round = -2; round < rounds; ++round) {
    for (int position = 0; position < kVariants; ++position) {
      const int v = (position + round + 2) % kVariants;
      if (v == kModes) {
        const double raw_ms = RawRound(t, raw_buffers);
        if (round >= 0) raw.push_back(raw_ms);
        continue;
      }
      const uint32_t r = static_cast<uint32_t>(kVariants * (round + 2) + position);
      if (root) {
        const Rank0Times x = CoordinatorRound(t, modes[v], *sums);
        if (round >= 0) series[v]->Add(x);
      } else {
        WorkerRound(t, modes[v], r, *update);
      }
    }
  }

  if (root) {
    const size_t frame_bytes = EncodeMessage(SiteUpdate(1), 0, 1).size();
    std::printf(
        "FedAvg round over MpiTransport vs raw MPI_Reduce: %d ranks (%d sites), %zu floats "
        "(%.1f MiB) per site,\nModelUpdate frame %zu bytes, max_message %zu, malloc %s, %d "
        "interleaved rounds (+2 warm-up)\n",
        t.size(), t.size() - 1, kFloats, kFloats * 4.0 / (1 << 20), frame_bytes,
        options.max_message, keep_memory ? "keep" : "default", rounds);
    std::printf("  %-46s %8s %8s %8s\n", "ms on rank 0", "median", "min", "max");
    PrintRow("(a) raw MPI_Reduce (MPI_FLOAT, MPI_SUM)", raw);
    PrintRow("(b) fedrec round, encoded before go, float sums", before.round);
    PrintRow("      waiting in Recv", before.wait);
    PrintRow("      decoding (DecodeFrame + DecodeMessage)", before.decode);
    PrintRow("      folding into the accumulator", before.fold);
    PrintRow("(b2) as (b) with double sums", before_double.round);
    PrintRow("      waiting in Recv", before_double.wait);
    PrintRow("      decoding (DecodeFrame + DecodeMessage)", before_double.decode);
    PrintRow("      folding into the accumulator", before_double.fold);
    PrintRow("(c) fedrec round, encoded after go, float sums", after.round);
    PrintRow("(d) fedrec transfer only (no decode, no fold)", transfer.round);
    const double a = Summarize(raw).median;
    std::printf(
        "  ratio of medians: (b)/(a) = %.2f   (b2)/(a) = %.2f   (c)/(a) = %.2f   (d)/(a) = %.2f\n",
        Summarize(before.round).median / a, Summarize(before_double.round).median / a,
        Summarize(after.round).median / a, Summarize(transfer.round).median / a);
  }
  t.Close();
  return 0;
}
