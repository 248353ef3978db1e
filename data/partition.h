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
using Partitioner = std::function<Result<std::vector<uint32_t>>(const Dataset& dataset,
                                                                const PartitionOptions& options)>;

// "user": users dealt to sites in a seeded random order, sites balanced by user count.
Result<std::vector<uint32_t>> PartitionByUser(const Dataset& dataset,
                                              const PartitionOptions& options);

// "dirichlet": each item group g draws site proportions p_g ~ Dir(alpha); a user
// goes to a site drawn from p_g of the group holding most of the user's train
// ratings. Sites so differ in which item groups their users favour (non-IID).
Result<std::vector<uint32_t>> PartitionDirichlet(const Dataset& dataset,
                                                 const PartitionOptions& options);

// Scenario partitioners: each user has a scenario (a genre, an age group);
// scenarios become sites. Scenarios are ranked by their users with train
// ratings (most first, lower scenario id on ties). With K non-empty
// scenarios and S sites: S == K gives each scenario its own site; S < K gives
// the S-1 largest their own sites and folds the rest into the last site;
// S > K is an error. Sites of their own are numbered in increasing scenario
// id. Users without a scenario (no train ratings, missing feature) go to the
// last site.
//
// "genre": an item's main genre is the first id of its categorical item
// feature "genres" (file order: for MovieLens 100K the lowest genre id, for
// 1M the first listed); a user's scenario is the main genre most frequent
// among their train ratings (lower genre id on ties); items without genres
// do not count. Error when the dataset has no item feature "genres".
Result<std::vector<uint32_t>> PartitionByGenre(const Dataset& dataset,
                                               const PartitionOptions& options);
// "age_group": a user's scenario is their categorical user feature
// "age_group" (its first id). Error when the dataset has no such feature.
Result<std::vector<uint32_t>> PartitionByAgeGroup(const Dataset& dataset,
                                                  const PartitionOptions& options);

class PartitionerRegistry {
 public:
  // A registry holding "user", "dirichlet", "genre" and "age_group".
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
