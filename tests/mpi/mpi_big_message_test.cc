// One frame larger than MPI's int count (2^31 - 1 bytes) from rank 1 to rank 0,
// with the default options (1 GiB chunks): exercises the chunked path for real.
// Needs about 2 x 2.2 GB of memory; skipped on both ranks when rank 0 sees less
// than 6 GiB available.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "tests/mpi/mpi_test_env.h"

namespace fedrec {
namespace {

using mpitest::Barrier;
using mpitest::Transport;
using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

constexpr size_t kFrameBytes = 2'200'000'000;  // > 2^31 = 2'147'483'648
static_assert(kFrameBytes > (size_t{1} << 31));

uint64_t AvailableBytes() {
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  uint64_t kib = 0;
  std::string unit;
  while (meminfo >> key >> kib >> unit) {
    if (key == "MemAvailable:") return kib * 1024;
  }
  return 0;
}

uint64_t Word(uint64_t i) { return (i + 1) * 0x9E3779B97F4A7C15ull; }

void ReceiveAndCheck(MpiTransport& t) {
  const auto start = Clock::now();
  Result<Envelope> e = t.Recv(milliseconds(120000));
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ(e->from, 1);
  ASSERT_EQ(e->bytes.size(), kFrameBytes);
  const size_t words = kFrameBytes / 8;
  size_t bad = words;
  for (size_t i = 0; i < words; ++i) {
    uint64_t w;
    std::memcpy(&w, e->bytes.data() + 8 * i, 8);
    if (w != Word(i)) {
      bad = i;
      break;
    }
  }
  EXPECT_EQ(bad, words) << "first wrong word";
  std::printf(
      "2.2 GB frame from rank 1: received %.2f s after the go (sender fills it first), "
      "%.2f GB/s\n",
      seconds, static_cast<double>(kFrameBytes) / seconds * 1e-9);
  EXPECT_LT(seconds, 60.0);
  EXPECT_EQ(t.stats().bytes_received, kFrameBytes);
}

void FillAndSend(MpiTransport& t) {
  std::vector<uint8_t> frame(kFrameBytes);
  for (size_t i = 0; i < kFrameBytes / 8; ++i) {
    const uint64_t w = Word(i);
    std::memcpy(frame.data() + 8 * i, &w, 8);
  }
  ASSERT_TRUE(t.Send(0, std::move(frame)).ok());
}

TEST(MpiBigMessage, FrameOverTwoGigabytesArrivesIntact) {
  ASSERT_TRUE(Barrier().ok());
  MpiTransport& t = Transport();
  ASSERT_GE(t.size(), 2);
  const int me = t.rank();
  // Rank 0 decides for everyone (one byte: 1 = run), so no rank disagrees.
  bool run = false;
  uint64_t available = 0;
  if (me == 0) {
    available = AvailableBytes();
    run = available >= (uint64_t{6} << 30);
    for (int r = 1; r < t.size(); ++r) {
      ASSERT_TRUE(t.Send(r, {static_cast<uint8_t>(run)}).ok());
    }
  } else {
    Result<Envelope> go = t.Recv(milliseconds(20000));
    ASSERT_TRUE(go.ok()) << go.status().ToString();
    ASSERT_EQ(go->bytes.size(), 1u);
    run = go->bytes[0] == 1;
  }
  if (run && me == 0) ReceiveAndCheck(t);
  if (run && me == 1) FillAndSend(t);
  ASSERT_TRUE(Barrier().ok());  // every rank gets here, run or not
  if (!run) GTEST_SKIP() << "rank 0 has " << (available >> 20) << " MiB available, needs 6 GiB";
  if (me == 1) {
    EXPECT_EQ(t.stats().bytes_sent, kFrameBytes);
  }
}

}  // namespace
}  // namespace fedrec
