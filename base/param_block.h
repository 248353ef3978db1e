// ParamBlock: a named, dense, row-major block of model parameters, tagged as
// global (aggregated across sites) or local (never leaves the site). The
// vocabulary type shared by models (algorithms/), wire messages (protocol/)
// and the roles.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace fedrec {

// kGlobal: aggregated across sites and stepped by the strategy (e.g. item
//   factors; a server learning rate or optimizer applies to it).
// kLocal: never leaves the site (e.g. user factors).
// kGlobalAverage: aggregated, and simply replaced by the sites' weighted
//   average, never stepped by a server optimizer: statistics such as the
//   global mean rating.
enum class Scope : uint8_t { kGlobal = 0, kLocal = 1, kGlobalAverage = 2 };

inline bool IsGlobal(Scope scope) { return scope != Scope::kLocal; }

struct ParamBlock {
  std::string name;
  Scope scope = Scope::kGlobal;
  uint32_t rows = 0;
  uint32_t cols = 0;
  std::vector<float> data;  // rows * cols values, row-major

  ParamBlock() = default;
  ParamBlock(std::string name_, Scope scope_, uint32_t rows_, uint32_t cols_)
      : name(std::move(name_)),
        scope(scope_),
        rows(rows_),
        cols(cols_),
        data(static_cast<size_t>(rows_) * cols_, 0.0f) {}

  float* Row(uint32_t r) { return data.data() + static_cast<size_t>(r) * cols; }
  const float* Row(uint32_t r) const { return data.data() + static_cast<size_t>(r) * cols; }
  std::span<const std::byte> Bytes() const { return std::as_bytes(std::span<const float>(data)); }

  friend bool operator==(const ParamBlock&, const ParamBlock&) = default;
};

// A site's upload read in place from its model (Model::Upload), for encoding
// straight into the frame that carries it: per global block (model order), every row's
// weight (0 for rows the site did not train, which encode as zeros) and the
// block's values, row-major.
struct DenseBlockView {
  std::span<const uint32_t> weights;  // one per row
  std::span<const float> values;      // rows * cols
};

// The shape of `block` (name, scope, rows, cols) without its values.
inline ParamBlock ShapeOf(const ParamBlock& block) {
  ParamBlock shape;
  shape.name = block.name;
  shape.scope = block.scope;
  shape.rows = block.rows;
  shape.cols = block.cols;
  return shape;
}

// The global blocks of `blocks` (Scope other than kLocal), copied.
inline std::vector<ParamBlock> CopyGlobalBlocks(const std::vector<ParamBlock>& blocks) {
  std::vector<ParamBlock> global;
  for (const ParamBlock& b : blocks) {
    if (IsGlobal(b.scope)) global.push_back(b);
  }
  return global;
}

// Overwrites the global blocks of `blocks` with the blocks of `global` that
// have their names (shapes must agree). False, with nothing changed, when one
// is missing or misshapen.
bool AssignGlobalBlocks(const std::vector<ParamBlock>& global, std::vector<ParamBlock>* blocks);
// The same taking the values of `global` instead of copying them (a site
// adopting the model it just decoded): on success they are moved out.
bool AssignGlobalBlocks(std::vector<ParamBlock>&& global, std::vector<ParamBlock>* blocks);

// The block named `name`, or nullptr.
inline ParamBlock* FindBlock(std::vector<ParamBlock>& blocks, std::string_view name) {
  for (auto& b : blocks)
    if (b.name == name) return &b;
  return nullptr;
}
inline const ParamBlock* FindBlock(const std::vector<ParamBlock>& blocks, std::string_view name) {
  for (const auto& b : blocks)
    if (b.name == name) return &b;
  return nullptr;
}

}  // namespace fedrec
