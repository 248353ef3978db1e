#include "base/param_block.h"

#include <algorithm>

namespace fedrec {

bool AssignGlobalBlocks(const std::vector<ParamBlock>& global, std::vector<ParamBlock>* blocks) {
  // Check every block before changing any, so a failed call changes nothing.
  std::vector<const ParamBlock*> sources;
  for (const ParamBlock& b : *blocks) {
    if (!IsGlobal(b.scope)) continue;
    const ParamBlock* src = FindBlock(global, b.name);
    // A released block (Model::ReleaseGlobal) has no values until assigned.
    if (src == nullptr || src->rows != b.rows || src->cols != b.cols ||
        src->data.size() != static_cast<size_t>(b.rows) * b.cols) {
      return false;
    }
    sources.push_back(src);
  }
  size_t next = 0;
  for (ParamBlock& b : *blocks) {
    if (!IsGlobal(b.scope)) continue;
    b.data.resize(sources[next]->data.size());
    std::copy(sources[next]->data.begin(), sources[next]->data.end(), b.data.begin());
    ++next;
  }
  return true;
}

}  // namespace fedrec
