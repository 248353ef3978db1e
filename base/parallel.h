// Splitting a loop over a few threads, for the coordinator's bursts of work
// (unmasking a round's sum) that would otherwise leave the other cores idle.
#pragma once

#include <algorithm>
#include <cstddef>
#include <thread>
#include <vector>

namespace fedrec {

// Calls fn(begin, end) on contiguous ranges that cover [0, n), at most
// `threads` of them at once, each range but the last a multiple of `grain`
// long; the calling thread runs the first range. Returns when all are done.
// fn must not throw. threads <= 1 (or a small n) runs fn(0, n) on the caller.
template <typename Fn>
void ParallelRanges(size_t n, size_t grain, unsigned threads, Fn fn) {
  grain = std::max<size_t>(grain, 1);
  const size_t grains = (n + grain - 1) / grain;
  const size_t parts = std::min<size_t>(std::max(threads, 1u), grains);
  if (parts <= 1) {
    if (n > 0) fn(size_t{0}, n);
    return;
  }
  const size_t per_part = (grains + parts - 1) / parts * grain;
  std::vector<std::thread> helpers;
  for (size_t begin = per_part; begin < n; begin += per_part)
    helpers.emplace_back([&fn, begin, end = std::min(n, begin + per_part)] { fn(begin, end); });
  fn(size_t{0}, std::min(n, per_part));
  for (std::thread& helper : helpers) helper.join();
}

}  // namespace fedrec
