#include "base/param_block.h"

#include <algorithm>
#include <type_traits>

namespace fedrec {

namespace {

// The block of `global` for each global block of `blocks`, in order; empty
// when one is missing or misshapen.
template <typename Blocks>  // std::vector<ParamBlock>, const or not
auto GlobalSources(Blocks& global, const std::vector<ParamBlock>& blocks) {
  using Block = std::remove_reference_t<decltype(global.front())>;
  std::vector<Block*> sources;
  for (const ParamBlock& b : blocks) {
    if (!IsGlobal(b.scope)) continue;
    Block* src = nullptr;
    for (Block& g : global) {
      if (g.name == b.name) {
        src = &g;
        break;
      }
    }
    // A released block (Model::ReleaseGlobal) has no values until assigned.
    if (src == nullptr || src->rows != b.rows || src->cols != b.cols ||
        src->data.size() != static_cast<size_t>(b.rows) * b.cols) {
      return std::vector<Block*>{};
    }
    sources.push_back(src);
  }
  return sources;
}

size_t GlobalCount(const std::vector<ParamBlock>& blocks) {
  return static_cast<size_t>(std::count_if(blocks.begin(), blocks.end(),
                                           [](const ParamBlock& b) { return IsGlobal(b.scope); }));
}

}  // namespace

bool AssignGlobalBlocks(const std::vector<ParamBlock>& global, std::vector<ParamBlock>* blocks) {
  // Check every block before changing any, so a failed call changes nothing.
  const std::vector<const ParamBlock*> sources = GlobalSources(global, *blocks);
  if (sources.size() != GlobalCount(*blocks)) return false;
  size_t next = 0;
  for (ParamBlock& b : *blocks) {
    if (!IsGlobal(b.scope)) continue;
    // assign, not resize and copy: a released block is not zeroed first.
    b.data.assign(sources[next]->data.begin(), sources[next]->data.end());
    ++next;
  }
  return true;
}

bool AssignGlobalBlocks(std::vector<ParamBlock>&& global, std::vector<ParamBlock>* blocks) {
  const std::vector<ParamBlock*> sources = GlobalSources(global, *blocks);
  if (sources.size() != GlobalCount(*blocks)) return false;
  size_t next = 0;
  for (ParamBlock& b : *blocks) {
    if (!IsGlobal(b.scope)) continue;
    b.data = std::move(sources[next]->data);
    sources[next]->data.clear();
    ++next;
  }
  return true;
}

}  // namespace fedrec
