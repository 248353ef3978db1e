#include "data/ratings.h"

#include <cassert>
#include <limits>

namespace fedrec {

uint32_t IdMap::Intern(std::string_view raw) {
  if (auto it = index_.find(raw); it != index_.end()) return it->second;
  assert(raw_.size() < std::numeric_limits<uint32_t>::max() && "IdMap is full");
  const auto index = static_cast<uint32_t>(raw_.size());
  raw_.emplace_back(raw);
  index_.emplace(raw_.back(), index);
  return index;
}

int64_t IdMap::Find(std::string_view raw) const {
  if (auto it = index_.find(raw); it != index_.end()) return it->second;
  return -1;
}

}  // namespace fedrec
