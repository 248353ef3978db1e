#include "data/ratings.h"

#include <cassert>
#include <limits>

namespace fedrec {

uint64_t StableIdKey(std::string_view raw) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : raw) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  // SplitMix64 finalizer, so similar IDs give unrelated keys.
  h += 0x9e3779b97f4a7c15ULL;
  h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ULL;
  h = (h ^ (h >> 27)) * 0x94d049bb133111ebULL;
  return h ^ (h >> 31);
}

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
