// Side features of users and items (age, gender, occupation; genres), as
// models with side features read them (algorithms/model.h, ModelData).
//
// A FeatureTable holds one row per entity: a site's local users (private to
// the site, like its ratings) or the catalogue's items (public, the same at
// every site). Fields are categorical (ids into a vocabulary the same at every
// site, so an embedding row means one thing everywhere; a field may hold
// several ids per row, e.g. an item's genres; no id = missing) or numeric
// (scaled to about [0, 1] by a declared range, never by per-site statistics).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace fedrec {

struct FeatureField {
  std::string name;
  bool numeric = false;
  // Categorical: ids are 0..vocabulary-1; labels[id] names each (may be empty
  // for hashed fields).
  uint32_t vocabulary = 0;
  std::vector<std::string> labels;
};

struct FeatureTable {
  std::vector<FeatureField> fields;  // categorical and numeric, in declared order
  uint32_t rows = 0;
  // Categorical field c (c-th categorical field) of row r: the ids
  // ids[offsets[r * C + c] .. offsets[r * C + c + 1]), C = categorical().
  // offsets has rows * C + 1 entries (empty when C == 0).
  std::vector<uint32_t> offsets;
  std::vector<uint32_t> ids;
  // Numeric field n (n-th numeric field) of row r: numeric[r * N + n].
  std::vector<float> numeric;

  bool empty() const { return fields.empty(); }
  uint32_t categorical() const {
    uint32_t c = 0;
    for (const FeatureField& f : fields) c += f.numeric ? 0 : 1;
    return c;
  }
  uint32_t numerics() const { return static_cast<uint32_t>(fields.size()) - categorical(); }
  // The ids of categorical field c of row r. REQUIRES: r < rows, c < categorical().
  std::span<const uint32_t> Ids(uint32_t r, uint32_t c) const {
    const size_t at = static_cast<size_t>(r) * categorical() + c;
    return {ids.data() + offsets[at], ids.data() + offsets[at + 1]};
  }
  // Numeric fields of row r. REQUIRES: r < rows.
  std::span<const float> Numeric(uint32_t r) const {
    const size_t n = numerics();
    return {numeric.data() + r * n, n};
  }
};

}  // namespace fedrec
