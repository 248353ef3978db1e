// main() for the GoogleTest programs run under mpiexec.
//
//   mpiexec -np N <program> [gtest flags] [--max_message=BYTES] [--max_frame=BYTES]
//       [--flush_timeout_ms=MS]
//
// Starts one MpiTransport (options from the flags, defaults otherwise), runs
// the tests on every rank, closes the transport and exits non-zero when any
// test failed on this rank (mpiexec then exits non-zero too). Rank 0 prints the
// usual gtest output; the other ranks print only their failures, prefixed with
// their rank.
#include <gtest/gtest.h>
#include <mpi.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

#include "tests/mpi/mpi_test_env.h"

namespace fedrec::mpitest {
namespace {

MpiTransport* g_transport = nullptr;
MpiTransportOptions g_options;

// Replaces the default printer on ranks other than 0: silent, except for the
// failed assertions (and the names of the tests that failed).
class FailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit FailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: Failure\n%s\n", rank_,
                 result.file_name() ? result.file_name() : "unknown", result.line_number(),
                 result.message());
  }
  void OnTestEnd(const ::testing::TestInfo& info) override {
    if (info.result()->Failed()) {
      std::fprintf(stderr, "[rank %d] [  FAILED  ] %s.%s\n", rank_, info.test_suite_name(),
                   info.name());
    }
  }

 private:
  int rank_;
};

bool ParseSize(const char* arg, const char* flag, size_t* out) {
  const size_t n = std::strlen(flag);
  if (std::strncmp(arg, flag, n) != 0) return false;
  *out = static_cast<size_t>(std::strtoull(arg + n, nullptr, 10));
  return true;
}

}  // namespace

MpiTransport& Transport() { return *g_transport; }
const MpiTransportOptions& Options() { return g_options; }

Status Barrier() {
  // MPI_Barrier would busy-poll (yielding) for as long as the slowest rank
  // takes: on an oversubscribed machine that steals the cores the ranks still
  // working need. Poll a non-blocking barrier with short sleeps instead.
  return g_transport->RunOnMpiThread([] {
    MPI_Request request;
    MPI_Ibarrier(MPI_COMM_WORLD, &request);
    int done = 0;
    MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    while (!done) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      MPI_Test(&request, &done, MPI_STATUS_IGNORE);
    }
  });
}

}  // namespace fedrec::mpitest

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);  // removes the gtest flags
  fedrec::MpiTransportOptions options;
  for (int i = 1; i < argc; ++i) {
    size_t value = 0;
    if (fedrec::mpitest::ParseSize(argv[i], "--max_message=", &value)) {
      options.max_message = value;
    } else if (fedrec::mpitest::ParseSize(argv[i], "--max_frame=", &value)) {
      options.max_frame = value;
    } else if (fedrec::mpitest::ParseSize(argv[i], "--flush_timeout_ms=", &value)) {
      options.flush_timeout = std::chrono::milliseconds(value);
    } else {
      std::fprintf(stderr, "unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  auto started = fedrec::MpiTransport::Start(options);
  if (!started.ok()) {
    std::fprintf(stderr, "MpiTransport::Start: %s\n", started.status().ToString().c_str());
    return 1;
  }
  std::unique_ptr<fedrec::MpiTransport> transport = std::move(started).value();
  fedrec::mpitest::g_transport = transport.get();
  fedrec::mpitest::g_options = options;
  const int rank = transport->rank();
  if (rank != 0) {
    ::testing::TestEventListeners& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new fedrec::mpitest::FailurePrinter(rank));
  } else {
    std::printf("MPI job: %d ranks, max_message %zu bytes, flush timeout %lld ms, host %s\n",
                transport->size(), options.max_message,
                static_cast<long long>(options.flush_timeout.count()), transport->host().c_str());
  }
  const int failed = RUN_ALL_TESTS();
  transport->Close();
  transport.reset();
  return failed == 0 ? 0 : 1;
}
