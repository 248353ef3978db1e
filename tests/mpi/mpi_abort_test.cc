// MpiTransport::Abort ends the whole job: rank 1 aborts with code 7 while the
// other ranks wait for a message that never comes. Registered with CTest to
// pass when Open MPI reports the abort with that code and no rank got past its
// wait ("NOT ABORTED").
#include <chrono>
#include <cstdio>
#include <thread>

#include "protocol/mpi_transport.h"

int main() {
  auto started = fedrec::MpiTransport::Start();
  if (!started.ok()) {
    std::fprintf(stderr, "MpiTransport::Start: %s\n", started.status().ToString().c_str());
    return 1;
  }
  fedrec::MpiTransport& t = **started;
  if (t.rank() == 1) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    t.Abort(7, "abort test: rank 1 gives up");
  }
  auto e = t.Recv(std::chrono::milliseconds(30000));
  std::printf("NOT ABORTED: rank %d: %s\n", t.rank(), e.status().ToString().c_str());
  return 0;
}
