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
#include "data/side_features.h"

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

namespace {

constexpr uint32_t kNoScenario = 0xffffffffu;

// Sites from each user's scenario (kNoScenario: none); see partition.h.
Result<std::vector<uint32_t>> ScenarioSites(const std::vector<uint32_t>& count,
                                            const std::vector<uint32_t>& scenario_of_user,
                                            uint32_t scenarios, uint32_t sites,
                                            const std::string& what) {
  if (sites == 0) return Status::InvalidArgument("sites must be >= 1, found 0");
  std::vector<uint64_t> users_in(scenarios, 0);
  for (size_t u = 0; u < count.size(); ++u) {
    if (count[u] > 0 && scenario_of_user[u] != kNoScenario) ++users_in[scenario_of_user[u]];
  }
  std::vector<uint32_t> ranked;
  for (uint32_t s = 0; s < scenarios; ++s) {
    if (users_in[s] > 0) ranked.push_back(s);
  }
  const uint32_t k = static_cast<uint32_t>(ranked.size());
  if (sites > k) {
    return Status::InvalidArgument("the " + what + " partition has " + std::to_string(k) +
                                   " non-empty scenarios (users with train ratings), so at most " +
                                   std::to_string(k) + " sites; found " + std::to_string(sites) +
                                   " sites (federation.sites)");
  }
  std::stable_sort(ranked.begin(), ranked.end(),
                   [&users_in](uint32_t a, uint32_t b) { return users_in[a] > users_in[b]; });
  const uint32_t own = sites == k ? k : sites - 1;
  std::vector<uint32_t> kept(ranked.begin(), ranked.begin() + own);
  std::sort(kept.begin(), kept.end());
  std::vector<uint32_t> site_of_scenario(scenarios, sites - 1);
  for (uint32_t i = 0; i < own; ++i) site_of_scenario[kept[i]] = i;
  std::vector<uint32_t> site_of_user(count.size(), sites - 1);
  for (size_t u = 0; u < count.size(); ++u) {
    if (count[u] > 0 && scenario_of_user[u] != kNoScenario)
      site_of_user[u] = site_of_scenario[scenario_of_user[u]];
  }
  return site_of_user;
}

Result<uint32_t> RequireField(const FeatureTable& table, uint32_t rows, const char* name,
                              const char* entity, const char* partition) {
  const int64_t c = CategoricalFieldIndex(table, name);
  if (c < 0 || table.rows != rows) {
    return Status::InvalidArgument(
        std::string("federation.partition = ") + partition + " needs the categorical " + entity +
        " feature \"" + name + "\" (data." + entity + "_features, e.g. MovieLens' " +
        (std::string(entity) == "item" ? "u.item or movies.dat" : "u.user or users.dat") +
        "), found " +
        (table.empty() ? std::string("no ") + entity + " features"
         : c < 0       ? std::string("no such field")
                       : "a table of " + std::to_string(table.rows) + " rows for " +
                       std::to_string(rows) + " " + entity + "s"));
  }
  return static_cast<uint32_t>(c);
}

uint32_t VocabularyOf(const FeatureTable& table, uint32_t categorical) {
  uint32_t c = 0;
  for (const auto& f : table.fields) {
    if (f.numeric) continue;
    if (c++ == categorical) return f.vocabulary;
  }
  return 0;
}

}  // namespace

Result<std::vector<uint32_t>> PartitionByGenre(const Dataset& dataset,
                                               const PartitionOptions& options) {
  FEDREC_ASSIGN_OR_RETURN(const std::vector<uint32_t> count, TrainCounts(dataset));
  const FeatureTable& items = dataset.item_features;
  FEDREC_ASSIGN_OR_RETURN(const uint32_t field,
                          RequireField(items, dataset.items.size(), "genres", "item", "genre"));
  const uint32_t genres = VocabularyOf(items, field);
  std::vector<uint32_t> main_genre(dataset.items.size(), kNoScenario);
  for (uint32_t i = 0; i < dataset.items.size(); ++i) {
    const std::span<const uint32_t> ids = items.Ids(i, field);
    if (!ids.empty() && ids[0] < genres) main_genre[i] = ids[0];
  }
  const uint32_t n_users = dataset.users.size();
  std::vector<uint32_t> per_genre(static_cast<size_t>(n_users) * genres, 0);
  for (const Rating& r : dataset.train) {
    if (main_genre[r.item] != kNoScenario)
      ++per_genre[static_cast<size_t>(r.user) * genres + main_genre[r.item]];
  }
  std::vector<uint32_t> scenario(n_users, kNoScenario);
  for (uint32_t u = 0; u < n_users; ++u) {
    const uint32_t* row = per_genre.data() + static_cast<size_t>(u) * genres;
    uint32_t best = kNoScenario;
    for (uint32_t g = 0; g < genres; ++g) {
      if (row[g] > 0 && (best == kNoScenario || row[g] > row[best])) best = g;
    }
    scenario[u] = best;
  }
  return ScenarioSites(count, scenario, genres, options.sites, "genre");
}

Result<std::vector<uint32_t>> PartitionByAgeGroup(const Dataset& dataset,
                                                  const PartitionOptions& options) {
  FEDREC_ASSIGN_OR_RETURN(const std::vector<uint32_t> count, TrainCounts(dataset));
  const FeatureTable& users = dataset.user_features;
  FEDREC_ASSIGN_OR_RETURN(const uint32_t field, RequireField(users, dataset.users.size(),
                                                             "age_group", "user", "age_group"));
  const uint32_t groups = VocabularyOf(users, field);
  std::vector<uint32_t> scenario(dataset.users.size(), kNoScenario);
  for (uint32_t u = 0; u < dataset.users.size(); ++u) {
    const std::span<const uint32_t> ids = users.Ids(u, field);
    if (!ids.empty() && ids[0] < groups) scenario[u] = ids[0];
  }
  return ScenarioSites(count, scenario, groups, options.sites, "age_group");
}

PartitionerRegistry PartitionerRegistry::WithBuiltins() {
  PartitionerRegistry registry;
  registry.Register("user", PartitionByUser);
  registry.Register("dirichlet", PartitionDirichlet);
  registry.Register("genre", PartitionByGenre);
  registry.Register("age_group", PartitionByAgeGroup);
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
