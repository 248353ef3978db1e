// Interactions grouped for implicit-feedback models: each user's distinct
// positive items, and the transpose (each item's users), in compressed rows.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "data/ratings.h"

namespace fedrec {

// Compressed rows: the entries of row r are entries[offsets[r] .. offsets[r + 1]).
struct Csr {
  std::vector<size_t> offsets;  // rows + 1
  std::vector<uint32_t> entries;

  std::span<const uint32_t> Row(uint32_t r) const {
    return std::span<const uint32_t>(entries).subspan(offsets[r], offsets[r + 1] - offsets[r]);
  }
  uint32_t rows() const { return offsets.empty() ? 0 : static_cast<uint32_t>(offsets.size() - 1); }
};

// Each user's distinct items among the interactions with value >= threshold,
// ascending (a user counts once per item however often they interacted).
// REQUIRES: every interaction's user < users.
Csr UserPositives(std::span<const Rating> train, uint32_t users, float threshold);

// The transpose of `rows` (rows x cols): row c lists the rows holding c,
// ascending. REQUIRES: every entry < cols.
Csr Transpose(const Csr& rows, uint32_t cols);

}  // namespace fedrec
