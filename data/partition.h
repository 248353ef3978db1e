// Partitioners: assign every user to one site, so each site owns all ratings
// of its users (user factors then live at exactly one site).
//
// Partitioners are registered by name in a PartitionerRegistry; adding one is
// a new function plus one Register call.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "base/status.h"
#include "data/ratings.h"

namespace fedrec {

struct PartitionOptions {
  uint32_t sites = 10;
  double dirichlet_alpha = 0.5;  // smaller = more skewed sites
  uint32_t item_groups = 10;     // items are grouped by index modulo this count
  uint64_t seed = 1;
};

// Returns site_of_user (size users.size()).
using Partitioner = std::function<Result<std::vector<uint32_t>>(
    const Dataset& dataset, const PartitionOptions& options)>;

// "user": users dealt to sites in a seeded random order, sites balanced by user count.
Result<std::vector<uint32_t>> PartitionByUser(const Dataset& dataset,
                                              const PartitionOptions& options);

// "dirichlet": each item group g draws site proportions p_g ~ Dir(alpha); a user
// goes to a site drawn from p_g of the group holding most of the user's train
// ratings. Sites so differ in which item groups their users favour (non-IID).
Result<std::vector<uint32_t>> PartitionDirichlet(const Dataset& dataset,
                                                 const PartitionOptions& options);

class PartitionerRegistry {
 public:
  // A registry holding "user" and "dirichlet".
  static PartitionerRegistry WithBuiltins();
  void Register(const std::string& name, Partitioner partitioner);
  // Error lists the known names when `name` is unknown.
  Result<Partitioner> Find(const std::string& name) const;

 private:
  std::map<std::string, Partitioner> partitioners_;
};

// The ratings of each site, in input order. REQUIRES: site_of_user covers every
// user index in `ratings` and values are < sites.
std::vector<std::vector<Rating>> SplitBySite(const std::vector<Rating>& ratings,
                                             const std::vector<uint32_t>& site_of_user,
                                             uint32_t sites);

}  // namespace fedrec
