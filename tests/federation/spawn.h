// SpawnRanks: runs one function per rank, each on its own thread, over one
// in-process network, and joins them. The way most distributed tests run.
#pragma once

#include <functional>
#include <thread>
#include <vector>

#include "protocol/inprocess_transport.h"

namespace fedrec::testing {

inline void SpawnRanks(int ranks, const std::function<void(int rank, Transport& transport)>& fn) {
  InProcessNetwork network(ranks);
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r) {
    threads.emplace_back([&, r] { fn(r, network.endpoint(r)); });
  }
  for (auto& t : threads) t.join();
}

}  // namespace fedrec::testing
