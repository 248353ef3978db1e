#include "algorithms/interactions.h"

#include <algorithm>
#include <cassert>

namespace fedrec {

Csr UserPositives(std::span<const Rating> train, uint32_t users, float threshold) {
  Csr p;
  p.offsets.assign(static_cast<size_t>(users) + 1, 0);
  for (const Rating& r : train) {
    assert(r.user < users);
    if (r.value >= threshold) ++p.offsets[r.user + 1];
  }
  for (uint32_t u = 0; u < users; ++u) p.offsets[u + 1] += p.offsets[u];
  p.entries.resize(p.offsets[users]);
  std::vector<size_t> next(p.offsets.begin(), p.offsets.end() - 1);
  for (const Rating& r : train) {
    if (r.value >= threshold) p.entries[next[r.user]++] = r.item;
  }
  // Sort and deduplicate each user's items, compacting in place.
  size_t write = 0;
  for (uint32_t u = 0; u < users; ++u) {
    const auto begin = p.entries.begin() + static_cast<std::ptrdiff_t>(p.offsets[u]);
    const auto end = p.entries.begin() + static_cast<std::ptrdiff_t>(p.offsets[u + 1]);
    std::sort(begin, end);
    const auto unique_end = std::unique(begin, end);
    p.offsets[u] = write;
    for (auto it = begin; it != unique_end; ++it) p.entries[write++] = *it;
  }
  p.offsets[users] = write;
  p.entries.resize(write);
  return p;
}

Csr Transpose(const Csr& rows, uint32_t cols) {
  Csr t;
  t.offsets.assign(static_cast<size_t>(cols) + 1, 0);
  for (uint32_t c : rows.entries) {
    assert(c < cols);
    ++t.offsets[c + 1];
  }
  for (uint32_t c = 0; c < cols; ++c) t.offsets[c + 1] += t.offsets[c];
  t.entries.resize(rows.entries.size());
  std::vector<size_t> next(t.offsets.begin(), t.offsets.end() - 1);
  for (uint32_t r = 0; r < rows.rows(); ++r) {
    for (uint32_t c : rows.Row(r)) t.entries[next[c]++] = r;
  }
  return t;
}

}  // namespace fedrec
