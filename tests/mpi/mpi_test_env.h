// Shared by the GoogleTest programs that run under mpiexec (mpi_test_main.cc
// provides main): one MpiTransport per process, started before the tests and
// closed after them. Every rank runs the same test list in the same order; each
// TEST does its rank's part.
#pragma once

#include "protocol/mpi_transport.h"

namespace fedrec::mpitest {

// The process's transport (valid while tests run; a test may Close() it, after
// which later tests see it closed).
MpiTransport& Transport();
// The options it was started with (--max_message, --max_frame, --flush_timeout_ms).
const MpiTransportOptions& Options();

// A barrier over MPI_COMM_WORLD (MPI_Ibarrier polled with short sleeps), run
// on the transport's progress thread.
// Unavailable once the transport is closed.
Status Barrier();

}  // namespace fedrec::mpitest
