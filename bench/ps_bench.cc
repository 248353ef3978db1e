// Parameter-server pull/push throughput over MPI: rows per second per shard
// server, through the real roles (ShardServer, PsClient) and MpiTransport.
//
//   mpiexec --oversubscribe -np 1+S build/bench/ps_bench [--keys=N] [--requests=N]
//       [--depth=N] [--cols=N] [--rows=N]
//
// Rank 0 is the client (and the shards' driver: it sends PsStart and, at the
// end, Shutdown); ranks 1..S are shard servers under the async policy with
// SGD, holding `rows` rows of `cols` floats (default 100,000 x 33: MF item
// rows at k = 32, factors and bias). The client alternates Pull and Push of
// `keys` distinct keys (spread over every shard), keeping `depth` requests in
// flight, `requests` of them after 20 warm-up requests; each request is one
// message per shard. Reported: rows moved (pulled + pushed) per second in
// all and per shard, three runs, and the median.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

#include "coordinator/shard_server.h"
#include "protocol/messages.h"
#include "protocol/mpi_transport.h"
#include "protocol/ps_client.h"

namespace fedrec {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

struct Args {
  uint32_t keys = 4096, requests = 2000, depth = 2, cols = 33, rows = 100000, runs = 3;
};

uint32_t Flag(const char* arg, const char* name, uint32_t fallback) {
  const size_t n = std::strlen(name);
  if (std::strncmp(arg, name, n) == 0 && arg[n] == '=')
    return std::strtoul(arg + n + 1, nullptr, 10);
  return fallback;
}

// Issues `count` requests (pull, push, pull, ...) keeping `depth` in flight.
Status Drive(PsClient& client, const Args& a, uint32_t count, uint32_t* clock,
             const std::vector<uint32_t>& keys, std::vector<std::vector<float>>& buffers,
             const std::vector<float>& gradients) {
  std::deque<uint64_t> inflight;
  for (uint32_t i = 0; i < count; ++i) {
    if (inflight.size() == a.depth) {
      FEDREC_RETURN_IF_ERROR(client.Wait(inflight.front(), milliseconds(60000)));
      inflight.pop_front();
    }
    if (i % 2 == 0) {
      inflight.push_back(client.Pull(keys, buffers[i % buffers.size()].data(), *clock));
    } else {
      inflight.push_back(client.Push(keys, gradients.data(), (*clock)++, 0));
    }
  }
  for (uint64_t t : inflight) FEDREC_RETURN_IF_ERROR(client.Wait(t, milliseconds(60000)));
  return Status::Ok();
}

int Main(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    a.keys = Flag(argv[i], "--keys", a.keys);
    a.requests = Flag(argv[i], "--requests", a.requests);
    a.depth = std::max(1u, Flag(argv[i], "--depth", a.depth));
    a.cols = Flag(argv[i], "--cols", a.cols);
    a.rows = Flag(argv[i], "--rows", a.rows);
    a.runs = Flag(argv[i], "--runs", a.runs);
  }
  Result<std::unique_ptr<MpiTransport>> started = MpiTransport::Start();
  if (!started.ok()) {
    std::fprintf(stderr, "%s\n", started.status().ToString().c_str());
    return 1;
  }
  MpiTransport& t = **started;
  const uint32_t shards = static_cast<uint32_t>(t.size() - 1);
  std::vector<int> shard_ranks;
  for (uint32_t s = 0; s < shards; ++s) shard_ranks.push_back(static_cast<int>(s) + 1);
  int code = 0;
  if (t.rank() > 0) {
    ShardServerOptions o;
    o.shard = static_cast<uint32_t>(t.rank() - 1);
    o.sharding.shards = shards;
    o.driver_rank = 0;
    o.worker_ranks = {0};
    o.consistency = Consistency::kAsync;
    o.optimizer.schedule.lr = 1e-6f;
    ShardServer server(o, &t);
    Status s = server.Serve();
    if (!s.ok()) {
      std::fprintf(stderr, "shard %d: %s\n", t.rank(), s.ToString().c_str());
      code = 1;
    }
  } else if (shards == 0) {
    std::fprintf(stderr, "ps_bench needs at least 2 ranks: the client and a shard server\n");
    code = 1;
  } else {
    PsStart start{a.rows, a.cols, 1, 1, 0.0f, 1, 0, 0, ""};
    for (int r : shard_ranks) (void)t.Send(r, EncodePsStart(start, 0));
    PsClient client(&t, shard_ranks, a.cols, -1);
    // `keys` distinct rows spread over the table (and so over every shard).
    std::vector<uint32_t> keys(a.keys);
    for (uint32_t j = 0; j < a.keys; ++j)
      keys[j] = static_cast<uint32_t>((uint64_t{j} * 2654435761u) % a.rows);
    std::sort(keys.begin(), keys.end());
    keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
    std::vector<std::vector<float>> buffers(a.depth, std::vector<float>(keys.size() * a.cols));
    const std::vector<float> gradients(keys.size() * a.cols, 1.0f);
    uint32_t clock = 0;
    Status s = Drive(client, a, 20, &clock, keys, buffers, gradients);
    std::vector<double> rates;
    for (uint32_t run = 0; run < a.runs && s.ok(); ++run) {
      const auto begin = Clock::now();
      s = Drive(client, a, a.requests, &clock, keys, buffers, gradients);
      const double seconds = std::chrono::duration<double>(Clock::now() - begin).count();
      const double rows = static_cast<double>(a.requests) * keys.size();
      rates.push_back(rows / seconds);
      std::printf(
          "run %u: %u requests x %zu keys (cols %u, depth %u) in %.3f s: %.2f M rows/s, "
          "%.2f M rows/s per shard (%u shards), %.0f MB/s\n",
          run + 1, a.requests, keys.size(), a.cols, a.depth, seconds, rows / seconds / 1e6,
          rows / seconds / 1e6 / shards, shards, rows * a.cols * 4 / seconds / 1e6);
    }
    if (!s.ok()) {
      std::fprintf(stderr, "client: %s\n", s.ToString().c_str());
      code = 1;
    } else {
      std::sort(rates.begin(), rates.end());
      std::printf("median: %.2f M rows/s per shard\n", rates[rates.size() / 2] / 1e6 / shards);
    }
    for (int r : shard_ranks) (void)t.Send(r, EncodeMessage(Shutdown{"done"}, 0, 0));
  }
  t.Close();
  return code;
}

}  // namespace
}  // namespace fedrec

int main(int argc, char** argv) { return fedrec::Main(argc, argv); }
