// Ratings with dense indices, and the mapping back to the dataset's raw IDs.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "data/features.h"

namespace fedrec {

// One observed interaction. `user` and `item` are dense indices into the
// dataset's IdMaps; `time` is the source timestamp (0 when the source has none).
struct Rating {
  uint32_t user = 0;
  uint32_t item = 0;
  float value = 0.0f;
  int64_t time = 0;

  friend bool operator==(const Rating&, const Rating&) = default;
};

// Raw ID (as written in the source file) <-> dense index, assigned in first-seen
// order. Not thread-safe for writers.
class IdMap {
 public:
  // Index of `raw`, adding it if new.
  uint32_t Intern(std::string_view raw);
  // Index of `raw`, or -1 when absent.
  int64_t Find(std::string_view raw) const;
  // REQUIRES: index < size()
  const std::string& Raw(uint32_t index) const { return raw_[index]; }
  uint32_t size() const { return static_cast<uint32_t>(raw_.size()); }

 private:
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::vector<std::string> raw_;
  std::unordered_map<std::string, uint32_t, Hash, std::equal_to<>> index_;
};

// A stable 64-bit key of a raw ID (FNV-1a, then mixed): the same on every
// host and run, whatever index a reader gave the ID. Seeds per-user streams.
uint64_t StableIdKey(std::string_view raw);

// A loaded dataset: train and test ratings over one shared ID space.
struct Dataset {
  IdMap users;
  IdMap items;
  std::vector<Rating> train;
  std::vector<Rating> test;
  float rating_min = 1.0f;
  float rating_max = 5.0f;
  // Side features (data/features.h): users' rows by user index, items' by
  // item index; empty when the data has none.
  FeatureTable user_features;
  FeatureTable item_features;
  // Per user index: 1 = a cold-start user (data.cold_start), evaluated apart
  // from warm users. Empty: none.
  std::vector<uint8_t> cold_users;
};

}  // namespace fedrec
