// Partitioners. "Users with ratings" below means users with at least one
// rating in dataset.train: those are the ones that give a site training data,
// so every site gets at least one of them. Users without train ratings (only
// test ratings, or none) still get a site.
#include "data/partition.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <numeric>
#include <span>
#include <string>
#include <utility>

#include "base/random.h"

namespace fedrec {
namespace {

// Train ratings per user, after checking that every rating's indices are in range.
Result<std::vector<uint32_t>> TrainCounts(const Dataset& dataset) {
  const uint32_t n_users = dataset.users.size(), n_items = dataset.items.size();
  std::vector<uint32_t> count(n_users, 0);
  for (const auto* list : {&dataset.train, &dataset.test}) {
    for (const Rating& r : *list) {
      if (r.user >= n_users || r.item >= n_items) {
        return Status::InvalidArgument("rating of user index " + std::to_string(r.user) +
                                       ", item index " + std::to_string(r.item) +
                                       " is outside the dataset's " + std::to_string(n_users) +
                                       " users and " + std::to_string(n_items) + " items");
      }
    }
  }
  for (const Rating& r : dataset.train) ++count[r.user];
  return count;
}

Status CheckSites(uint32_t sites, size_t users_with_ratings) {
  if (sites == 0) return Status::InvalidArgument("sites must be >= 1, found 0");
  if (sites > users_with_ratings) {
    return Status::InvalidArgument(
        "cannot partition " + std::to_string(users_with_ratings) +
        " users with train ratings over " + std::to_string(sites) +
        " sites: every site needs at least one such user (sites must be <= " +
        std::to_string(users_with_ratings) + ")");
  }
  return Status::Ok();
}

}  // namespace

Result<std::vector<uint32_t>> PartitionByUser(const Dataset& dataset,
                                              const PartitionOptions& options) {
  FEDREC_ASSIGN_OR_RETURN(const std::vector<uint32_t> count, TrainCounts(dataset));
  std::vector<uint32_t> active, inactive;
  for (uint32_t u = 0; u < count.size(); ++u) (count[u] > 0 ? active : inactive).push_back(u);
  FEDREC_RETURN_IF_ERROR(CheckSites(options.sites, active.size()));

  // Users with train ratings are dealt first, then the others continue the
  // round-robin, so both the users with ratings and all users are balanced.
  Rng rng(options.seed, 0, 0, Purpose::kPartition);
  rng.Shuffle(std::span<uint32_t>(active));
  rng.Shuffle(std::span<uint32_t>(inactive));
  std::vector<uint32_t> site_of_user(count.size(), 0);
  size_t dealt = 0;
  for (const auto* list : {&active, &inactive}) {
    for (uint32_t u : *list) site_of_user[u] = static_cast<uint32_t>(dealt++ % options.sites);
  }
  return site_of_user;
}

// Streams: p_g from Rng(seed, 1, g, kPartition) (drawn only for groups some
// user needs); the users' site draws, in user index order, from
// Rng(seed, 0, 0, kPartition). A user without train ratings gets a uniform site.
//
// Afterwards no site may lack users with train ratings: each such site, in
// increasing site order, takes the highest-index user with train ratings from
// the site that has the most of them (lowest site index on ties). That site
// has >= 2 since sites <= users with train ratings.
Result<std::vector<uint32_t>> PartitionDirichlet(const Dataset& dataset,
                                                 const PartitionOptions& options) {
  const double alpha = options.dirichlet_alpha;
  if (!(alpha > 0.0 && std::isfinite(alpha))) {
    return Status::InvalidArgument("dirichlet_alpha must be a positive number, found " +
                                   std::to_string(alpha));
  }
  if (options.item_groups == 0) {
    return Status::InvalidArgument("item_groups must be >= 1, found 0");
  }
  FEDREC_ASSIGN_OR_RETURN(const std::vector<uint32_t> count, TrainCounts(dataset));
  const uint32_t n_users = static_cast<uint32_t>(count.size());
  const size_t n_active = static_cast<size_t>(
      std::count_if(count.begin(), count.end(), [](uint32_t c) { return c > 0; }));
  FEDREC_RETURN_IF_ERROR(CheckSites(options.sites, n_active));
  const uint32_t sites = options.sites;

  // Groups beyond the item count hold no items and are never dominant.
  const uint32_t groups =
      std::max<uint32_t>(1, std::min(options.item_groups, dataset.items.size()));

  // Train ratings grouped by user (counting sort), then each user's dominant group.
  std::vector<size_t> start(static_cast<size_t>(n_users) + 1, 0);
  for (uint32_t u = 0; u < n_users; ++u) start[u + 1] = start[u] + count[u];
  std::vector<uint32_t> group_of_rating(dataset.train.size());
  {
    std::vector<size_t> next(start.begin(), start.end() - 1);
    for (const Rating& r : dataset.train) group_of_rating[next[r.user]++] = r.item % groups;
  }
  constexpr uint32_t kNoGroup = 0xffffffffu;
  std::vector<uint32_t> dominant(n_users, kNoGroup);
  {
    std::vector<uint32_t> per_group(groups, 0);
    for (uint32_t u = 0; u < n_users; ++u) {
      if (count[u] == 0) continue;
      const auto first = group_of_rating.begin() + static_cast<ptrdiff_t>(start[u]);
      const auto last = group_of_rating.begin() + static_cast<ptrdiff_t>(start[u + 1]);
      uint32_t best = kNoGroup;
      for (auto it = first; it != last; ++it) {
        const uint32_t g = *it;
        ++per_group[g];
        if (best == kNoGroup || per_group[g] > per_group[best] ||
            (per_group[g] == per_group[best] && g < best)) {
          best = g;
        }
      }
      dominant[u] = best;
      for (auto it = first; it != last; ++it) per_group[*it] = 0;
    }
  }

  // Cumulative site proportions of each needed group, p_g ~ Dir(alpha).
  std::vector<std::vector<double>> cumulative(groups);
  for (uint32_t u = 0; u < n_users; ++u) {
    const uint32_t g = dominant[u];
    if (g == kNoGroup || !cumulative[g].empty()) continue;
    Rng rng(options.seed, 1, g, Purpose::kPartition);
    std::vector<double> p(sites);
    double total = 0.0;
    for (double& x : p) total += (x = rng.Gamma(alpha));
    if (!(total > 0.0)) {  // every draw underflowed (tiny alpha): the limit is a random vertex
      std::fill(p.begin(), p.end(), 0.0);
      p[rng.Below(sites)] = 1.0;
      total = 1.0;
    }
    double acc = 0.0;
    for (double& x : p) x = (acc += x / total);
    cumulative[g] = std::move(p);
  }

  Rng rng(options.seed, 0, 0, Purpose::kPartition);
  std::vector<uint32_t> site_of_user(n_users, 0);
  std::vector<std::vector<uint32_t>> members(sites);  // users with train ratings, ascending
  for (uint32_t u = 0; u < n_users; ++u) {
    if (dominant[u] == kNoGroup) {
      site_of_user[u] = static_cast<uint32_t>(rng.Below(sites));
      continue;
    }
    const std::vector<double>& cdf = cumulative[dominant[u]];
    const double x = rng.Uniform();
    const auto it = std::upper_bound(cdf.begin(), cdf.end(), x);
    uint32_t s = static_cast<uint32_t>(it - cdf.begin());
    if (it == cdf.end()) {  // cdf.back() is 1 only up to rounding: take the last site with mass
      s = sites - 1;
      while (s > 0 && cdf[s] == cdf[s - 1]) --s;
    }
    site_of_user[u] = s;
    members[s].push_back(u);
  }

  for (uint32_t s = 0; s < sites; ++s) {
    if (!members[s].empty()) continue;
    uint32_t largest = 0;
    for (uint32_t t = 1; t < sites; ++t) {
      if (members[t].size() > members[largest].size()) largest = t;
    }
    const uint32_t u = members[largest].back();
    members[largest].pop_back();
    members[s].push_back(u);
    site_of_user[u] = s;
  }
  return site_of_user;
}

PartitionerRegistry PartitionerRegistry::WithBuiltins() {
  PartitionerRegistry registry;
  registry.Register("user", PartitionByUser);
  registry.Register("dirichlet", PartitionDirichlet);
  return registry;
}

void PartitionerRegistry::Register(const std::string& name, Partitioner partitioner) {
  partitioners_[name] = std::move(partitioner);
}

Result<Partitioner> PartitionerRegistry::Find(const std::string& name) const {
  if (auto it = partitioners_.find(name); it != partitioners_.end()) return it->second;
  std::string known;
  for (const auto& [key, unused] : partitioners_) known += (known.empty() ? "" : ", ") + key;
  return Status::InvalidArgument("unknown partitioner \"" + name +
                                 "\"; known: " + (known.empty() ? "(none)" : known));
}

std::vector<std::vector<Rating>> SplitBySite(const std::vector<Rating>& ratings,
                                             const std::vector<uint32_t>& site_of_user,
                                             uint32_t sites) {
  std::vector<size_t> sizes(sites, 0);
  for (const Rating& r : ratings) {
    assert(r.user < site_of_user.size() && site_of_user[r.user] < sites);
    if (r.user < site_of_user.size() && site_of_user[r.user] < sites) {
      ++sizes[site_of_user[r.user]];
    }
  }
  std::vector<std::vector<Rating>> by_site(sites);
  for (uint32_t s = 0; s < sites; ++s) by_site[s].reserve(sizes[s]);
  for (const Rating& r : ratings) {
    if (r.user < site_of_user.size() && site_of_user[r.user] < sites) {
      by_site[site_of_user[r.user]].push_back(r);
    }
  }
  return by_site;
}

}  // namespace fedrec
