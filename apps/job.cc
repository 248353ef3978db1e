#include "apps/job.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>
#include <unordered_map>

#include "crypto/identity.h"
#include "crypto/sha256.h"
#include "data/partition.h"
#include "data/rating_checks.h"
#include "data/readers.h"
#include "data/side_features.h"
#include "data/split.h"
#include "data/synthetic.h"
#include "data/text.h"

namespace fedrec {

namespace {

void ReplaceAll(std::string* s, const std::string& from, const std::string& to) {
  for (size_t pos = 0; (pos = s->find(from, pos)) != std::string::npos; pos += to.size())
    s->replace(pos, from.size(), to);
}

// {site} = site index, {rank} = the site's rank (1 + shard servers + site).
std::string SitePath(const Config& config, const std::string& pattern, uint32_t site) {
  std::string path = pattern;
  ReplaceAll(&path, "{site}", std::to_string(site));
  ReplaceAll(&path, "{rank}", std::to_string(1 + config.cluster.shard_servers + site));
  return path;
}

Result<SplitResult> SplitRatings(const Config& config, const std::vector<Rating>& all,
                                 uint64_t seed) {
  if (config.data.split == "random") return RandomSplit(all, config.data.test_fraction, seed);
  return HoldoutPerUser(
      all, static_cast<uint32_t>(config.data.holdout_k),
      config.data.split == "holdout_last" ? HoldoutOrder::kLastByTime : HoldoutOrder::kRandom,
      seed);
}

ReadOptions MakeReadOptions(const Config& config, RatingFormat format) {
  ReadOptions options;
  options.format = format;
  options.rating_min = static_cast<float>(config.data.rating_min);
  options.rating_max = static_cast<float>(config.data.rating_max);
  return options;
}

// Reads `path` into `*out`, recording in `*origins` where each rating came from.
Status ReadTracked(const std::string& path, const ReadOptions& read, IdMap* users, IdMap* items,
                   std::vector<Rating>* out, RatingOrigins* origins) {
  FEDREC_RETURN_IF_ERROR(ReadRatings(path, read, users, items, out, &origins->lines));
  origins->AddFile(path, out->size());
  return Status::Ok();
}

// Applies data.duplicates to one role of the data (`what`: "training data"...).
Status ApplyDuplicatePolicy(const Config& config, const IdMap& users, const IdMap& items,
                            const char* what, std::vector<Rating>* ratings,
                            RatingOrigins* origins) {
  Result<DuplicatePolicy> policy = ParseDuplicatePolicy(config.data.duplicates);
  if (!policy.ok()) return policy.status().WithContext("config data.duplicates");
  Result<size_t> dropped = ResolveDuplicates(*policy, users, items, what, ratings, origins);
  if (!dropped.ok()) {
    return Status::InvalidArgument(dropped.status().message() +
                                   " (data.duplicates = \"last\" keeps the row read last, "
                                   "\"mean\" averages the repeats)");
  }
  if (*dropped > 0) {
    spdlog::warn("{}: {} repeated (user, item) row{} merged (data.duplicates = {})", what, *dropped,
                 *dropped == 1 ? "" : "s", config.data.duplicates);
  }
  return Status::Ok();
}

// Refuses (user, item) pairs in both the training and the test files unless
// data.allow_overlap is set; then warns.
Status CheckTrainTestOverlap(const Config& config, const IdMap& users, const IdMap& items,
                             const std::vector<Rating>& train, const RatingOrigins& train_origins,
                             const std::vector<Rating>& test, const RatingOrigins& test_origins) {
  FEDREC_ASSIGN_OR_RETURN(const Overlap overlap, FindOverlap(train, test));
  if (overlap.pairs == 0) return Status::Ok();
  const std::string what =
      DescribeOverlap(overlap, users, items, test, &train_origins, &test_origins);
  if (config.data.allow_overlap) {
    spdlog::warn(
        "{}; kept (data.allow_overlap = true): the test metrics count ratings the model "
        "trained on",
        what);
    return Status::Ok();
  }
  return Status::InvalidArgument(
      what +
      "; expected disjoint training and test data, since a test rating the model trained "
      "on makes the metrics too good (data.allow_overlap = true keeps them)");
}

// Refuses a test file that is the training file (`test_key` names the setting).
Status CheckDistinctFiles(const std::string& train, const std::string& test, const char* train_key,
                          const char* test_key) {
  std::error_code ec;
  if (train != test && !std::filesystem::equivalent(train, test, ec)) return Status::Ok();
  return Status::InvalidArgument("config " + std::string(test_key) +
                                 ": expected a held-out rating file other than " + train_key +
                                 ", found the same file " + text::Quote(test) +
                                 " (every test rating would be a training rating)");
}

// Renumbers the users of `users` (ascending global indices) to 0..n-1 in that
// order, drops ratings of other users, and keys each user by its raw ID. The
// site's user features are the rows of `user_features` (by global index;
// empty: none) of its users in local order, its cold flags those of
// `cold_users` (by global index; empty: none).
SiteData MakeSiteData(const IdMap& user_ids, const std::vector<uint32_t>& users,
                      std::vector<Rating> train, std::vector<Rating> test,
                      std::vector<std::string>* raw_ids, const FeatureTable& user_features,
                      const std::vector<uint8_t>& cold_users) {
  std::unordered_map<uint32_t, uint32_t> local;
  SiteData site;
  for (uint32_t u : users) {
    local.emplace(u, static_cast<uint32_t>(site.user_keys.size()));
    site.user_keys.push_back(StableIdKey(user_ids.Raw(u)));
    raw_ids->push_back(user_ids.Raw(u));
  }
  if (!user_features.empty()) site.user_features = SelectFeatureRows(user_features, users);
  if (!cold_users.empty()) {
    site.cold_users.reserve(users.size());
    for (uint32_t u : users) site.cold_users.push_back(u < cold_users.size() ? cold_users[u] : 0);
  }
  auto renumber = [&](std::vector<Rating>& ratings) {
    for (Rating& r : ratings) r.user = local.at(r.user);
  };
  renumber(train);
  renumber(test);
  site.train = std::move(train);
  site.test = std::move(test);
  return site;
}

FeatureReadOptions FeatureOptions(const Config& config, FeatureEntity entity) {
  FeatureReadOptions options;
  // Validated by ValidateConfig; "auto" on anything else.
  Result<FeatureFormat> format = ParseFeatureFormat(config.data.features_format);
  options.format = format.ok() ? *format : FeatureFormat::kAuto;
  options.entity = entity;
  options.schema =
      entity == FeatureEntity::kUsers ? config.data.user_schema : config.data.item_schema;
  return options;
}

Result<std::shared_ptr<const FeatureFile>> ReadFeatures(const Config& config,
                                                        const std::string& path,
                                                        FeatureEntity entity, const char* key) {
  Result<FeatureFile> file = ReadFeatureFile(path, FeatureOptions(config, entity));
  if (!file.ok()) return file.status().WithContext(std::string("config ") + key);
  return std::shared_ptr<const FeatureFile>(std::make_shared<FeatureFile>(std::move(file).value()));
}

// A FeatureFile of `table`'s rows keyed by `ids` (row r = ids.Raw(r)).
std::shared_ptr<const FeatureFile> FileOfTable(const IdMap& ids, FeatureTable table) {
  auto file = std::make_shared<FeatureFile>();
  for (uint32_t r = 0; r < ids.size(); ++r) file->ids.Intern(ids.Raw(r));
  file->table = std::move(table);
  return file;
}

// `file`'s rows laid out by `ids`, logging the rows skipped and the IDs
// without features.
FeatureTable IndexLogged(const FeatureFile& file, const IdMap& ids, const char* what) {
  FeatureIndexStats stats;
  FeatureTable table = IndexFeatures(file, ids, &stats);
  spdlog::info(
      "{} features: {} fields for {} {}s; {} rows skipped (ID not in the ratings), {} "
      "{}s without a row (missing features)",
      what, table.fields.size(), ids.size(), what, stats.unknown_rows, stats.missing_rows, what);
  return table;
}

// The side-feature files, with the synthetic data's when `synthetic` is set
// and data.synthetic.side_features is on (a configured file wins).
Result<SideFeatureFiles> SideFeatures(const Config& config, std::optional<uint32_t> site,
                                      const SyntheticData* synthetic,
                                      const SyntheticOptions* options) {
  SideFeatureFiles files;
  if (synthetic != nullptr && config.data.synthetic.side_features) {
    FeatureTable users, items;
    MakeSyntheticSideFeatures(*synthetic, *options, &users, &items);
    files.users = FileOfTable(synthetic->dataset.users, std::move(users));
    files.items = FileOfTable(synthetic->dataset.items, std::move(items));
  }
  std::string user_path = config.data.user_features;
  const char* user_key = "data.user_features";
  if (site && config.federation.partition == "files" && !config.data.site_user_features.empty()) {
    user_path = SitePath(config, config.data.site_user_features, *site);
    user_key = "data.site_user_features";
  }
  if (!user_path.empty()) {
    FEDREC_ASSIGN_OR_RETURN(files.users,
                            ReadFeatures(config, user_path, FeatureEntity::kUsers, user_key));
  }
  if (!config.data.item_features.empty()) {
    FEDREC_ASSIGN_OR_RETURN(files.items, ReadFeatures(config, config.data.item_features,
                                                      FeatureEntity::kItems, "data.item_features"));
  }
  return files;
}

ColdStartOptions MakeColdStartOptions(const Config& config) {
  ColdStartOptions options;
  options.share = config.data.cold_start.share;
  options.ratings = static_cast<uint32_t>(config.data.cold_start.ratings);
  options.seed = config.seed;
  return options;
}

// Applies data.cold_start to `*train`; returns the cold flags by user index
// (empty when off).
Result<std::vector<uint8_t>> ApplyColdStart(const Config& config, const IdMap& users,
                                            const std::vector<Rating>& test,
                                            std::vector<Rating>* train) {
  Result<std::vector<uint8_t>> cold =
      ColdStartSplit(users, test, MakeColdStartOptions(config), train);
  if (!cold.ok()) return cold.status().WithContext("config data.cold_start");
  return cold;
}

void LogColdStart(const Config& config, const std::vector<uint8_t>& cold) {
  if (config.data.cold_start.share <= 0.0) return;
  const auto n = std::count(cold.begin(), cold.end(), uint8_t{1});
  spdlog::info("cold start: {} users became cold (kept {} training ratings each; share {})", n,
               config.data.cold_start.ratings, config.data.cold_start.share);
}

// Side features and the cold-start split of a loaded, split dataset.
Status FinishDataset(const Config& config, const SyntheticData* synthetic,
                     const SyntheticOptions* options, Dataset* dataset) {
  FEDREC_ASSIGN_OR_RETURN(const SideFeatureFiles files,
                          SideFeatures(config, std::nullopt, synthetic, options));
  if (files.users) dataset->user_features = IndexLogged(*files.users, dataset->users, "user");
  if (files.items) dataset->item_features = IndexLogged(*files.items, dataset->items, "item");
  FEDREC_ASSIGN_OR_RETURN(dataset->cold_users,
                          ApplyColdStart(config, dataset->users, dataset->test, &dataset->train));
  LogColdStart(config, dataset->cold_users);
  return Status::Ok();
}

SyntheticOptions MakeSyntheticOptions(const Config& config) {
  SyntheticOptions options;
  options.users = static_cast<uint32_t>(config.data.synthetic.users);
  options.items = static_cast<uint32_t>(config.data.synthetic.items);
  options.ratings = static_cast<uint64_t>(config.data.synthetic.ratings);
  options.rank = static_cast<uint32_t>(config.data.synthetic.rank);
  options.noise_std = config.data.synthetic.noise_std;
  options.user_skew = config.data.synthetic.user_skew;
  options.item_skew = config.data.synthetic.item_skew;
  options.rating_min = static_cast<float>(config.data.rating_min);
  options.rating_max = static_cast<float>(config.data.rating_max);
  options.seed = config.seed;
  return options;
}

}  // namespace

Result<SideFeatureFiles> LoadSideFeatureFiles(const Config& config, std::optional<uint32_t> site) {
  if (config.data.train.empty() && config.data.synthetic.side_features) {
    const SyntheticOptions options = MakeSyntheticOptions(config);
    const SyntheticData synthetic = GenerateSynthetic(options);
    return SideFeatures(config, site, &synthetic, &options);
  }
  return SideFeatures(config, site, nullptr, nullptr);
}

namespace {

// LoadDataset without its summary line.
Result<Dataset> ReadDataset(const Config& config) {
  Dataset dataset;
  dataset.rating_min = static_cast<float>(config.data.rating_min);
  dataset.rating_max = static_cast<float>(config.data.rating_max);
  if (config.data.train.empty()) {
    const SyntheticOptions options = MakeSyntheticOptions(config);
    SyntheticData synthetic = GenerateSynthetic(options);
    FEDREC_ASSIGN_OR_RETURN(SplitResult split,
                            SplitRatings(config, synthetic.dataset.train, config.seed));
    dataset.users = synthetic.dataset.users;
    dataset.items = synthetic.dataset.items;
    dataset.train = std::move(split.train);
    dataset.test = std::move(split.test);
    FEDREC_RETURN_IF_ERROR(FinishDataset(config, &synthetic, &options, &dataset));
    return dataset;
  }
  FEDREC_ASSIGN_OR_RETURN(RatingFormat format, ParseRatingFormat(config.data.format));
  const ReadOptions read = MakeReadOptions(config, format);
  const bool test_file = !config.data.test.empty();
  if (test_file) {
    FEDREC_RETURN_IF_ERROR(
        CheckDistinctFiles(config.data.train, config.data.test, "data.train", "data.test"));
  }
  std::vector<Rating> all;
  RatingOrigins train_origins;
  FEDREC_RETURN_IF_ERROR(
      ReadTracked(config.data.train, read, &dataset.users, &dataset.items, &all, &train_origins));
  // Before any split: a repeated pair could otherwise land in train and test.
  FEDREC_RETURN_IF_ERROR(ApplyDuplicatePolicy(config, dataset.users, dataset.items,
                                              test_file ? "training data" : "rating data", &all,
                                              &train_origins));
  if (!test_file) {
    // The split sends each rating to train or test: disjoint pairs.
    FEDREC_ASSIGN_OR_RETURN(SplitResult split, SplitRatings(config, all, config.seed));
    dataset.train = std::move(split.train);
    dataset.test = std::move(split.test);
  } else {
    dataset.train = std::move(all);
    RatingOrigins test_origins;
    FEDREC_RETURN_IF_ERROR(ReadTracked(config.data.test, read, &dataset.users, &dataset.items,
                                       &dataset.test, &test_origins));
    FEDREC_RETURN_IF_ERROR(ApplyDuplicatePolicy(config, dataset.users, dataset.items, "test data",
                                                &dataset.test, &test_origins));
    FEDREC_RETURN_IF_ERROR(CheckTrainTestOverlap(config, dataset.users, dataset.items,
                                                 dataset.train, train_origins, dataset.test,
                                                 test_origins));
  }
  FEDREC_RETURN_IF_ERROR(FinishDataset(config, nullptr, nullptr, &dataset));
  return dataset;
}

}  // namespace

Result<Dataset> LoadDataset(const Config& config) {
  FEDREC_ASSIGN_OR_RETURN(Dataset dataset, ReadDataset(config));
  spdlog::info("{}", DatasetStatsLine(ComputeDatasetStats(dataset)));
  return dataset;
}

namespace {

// The line of `path` where item `id` first appears (0 when not found), read
// with the field separator of `format`.
uint64_t FirstLineOfItem(const std::string& path, RatingFormat format, const std::string& id) {
  if (format == RatingFormat::kAuto) {
    Result<RatingFormat> detected = DetectRatingFormat(path);
    if (!detected.ok()) return 0;
    format = *detected;
  }
  const std::string sep = format == RatingFormat::kMl100k ? "\t"
                          : format == RatingFormat::kMl1m ? "::"
                                                          : ",";
  std::ifstream in(path);
  std::string line;
  for (uint64_t number = 1; std::getline(in, line); ++number) {
    const size_t first = line.find(sep);
    if (first == std::string::npos) continue;
    const size_t start = first + sep.size();
    size_t end = line.find(sep, start);
    if (end == std::string::npos) end = line.size();
    std::string_view field(line.data() + start, end - start);
    if (!field.empty() && field.back() == '\r') field.remove_suffix(1);
    if (field == id) return number;
  }
  return 0;
}

// Reads one rating file into the maps; with a universe (`universe` items
// interned first in `items`), an item outside it is an error naming path:line.
Status ReadSiteFile(const Config& config, const std::string& path, const ReadOptions& read,
                    uint32_t universe, IdMap* users, IdMap* items, std::vector<Rating>* out,
                    RatingOrigins* origins) {
  FEDREC_RETURN_IF_ERROR(ReadTracked(path, read, users, items, out, origins));
  if (universe == 0 || items->size() == universe) return Status::Ok();
  const std::string& id = items->Raw(universe);
  const uint64_t line = FirstLineOfItem(path, read.format, id);
  return Status::InvalidArgument(
      path + (line ? ":" + std::to_string(line) : std::string()) + ": item '" + id +
      "' is not in the item universe " + config.data.item_universe + " (data.item_universe, " +
      std::to_string(universe) + " items); add it there, for every site, or drop the line");
}

}  // namespace

// The ratings of some sites (partition = files), by site.
struct SiteRatings {
  std::vector<std::vector<Rating>> train, test;  // per entry of `sites`
};

// Reads the own files of `sites` (partition = files), interning IDs in
// `users` and `items` site by site: its train file, then its test file.
// `universe`: the number of universe items already interned in `items` (0 =
// none). Each site's data is checked on its own, as a site of `fedrec run`
// checks it: the same raw user ID at two sites is two people, so a pair at
// two sites is neither a duplicate nor an overlap. data.duplicates applies to
// the site's training file and to its test file; with test files, a pair in
// both is refused unless data.allow_overlap. Without test files, each site's
// ratings are split (seed + site) after its duplicates are resolved.
Result<SiteRatings> ReadSites(const Config& config, const std::vector<uint32_t>& sites,
                              IdMap* users, IdMap* items, uint32_t universe = 0) {
  FEDREC_ASSIGN_OR_RETURN(RatingFormat format, ParseRatingFormat(config.data.format));
  const ReadOptions read = MakeReadOptions(config, format);
  const bool test_files = !config.data.site_test.empty();
  SiteRatings result;
  result.train.resize(sites.size());
  result.test.resize(sites.size());
  for (size_t k = 0; k < sites.size(); ++k) {
    const uint32_t s = sites[k];
    const std::string where = "site " + std::to_string(s);
    const std::string train_path = SitePath(config, config.data.site_train, s);
    std::vector<Rating> train, test;
    RatingOrigins train_origins, test_origins;
    FEDREC_RETURN_IF_ERROR(
        ReadSiteFile(config, train_path, read, universe, users, items, &train, &train_origins)
            .WithContext(where));
    const std::string train_what = where + (test_files ? " training data" : " rating data");
    FEDREC_RETURN_IF_ERROR(
        ApplyDuplicatePolicy(config, *users, *items, train_what.c_str(), &train, &train_origins));
    if (!test_files) {
      FEDREC_ASSIGN_OR_RETURN(SplitResult split, SplitRatings(config, train, config.seed + s));
      result.train[k] = std::move(split.train);
      result.test[k] = std::move(split.test);
      continue;
    }
    const std::string test_path = SitePath(config, config.data.site_test, s);
    FEDREC_RETURN_IF_ERROR(
        CheckDistinctFiles(train_path, test_path, "data.site_train", "data.site_test")
            .WithContext(where));
    FEDREC_RETURN_IF_ERROR(
        ReadSiteFile(config, test_path, read, universe, users, items, &test, &test_origins)
            .WithContext(where));
    const std::string test_what = where + " test data";
    FEDREC_RETURN_IF_ERROR(
        ApplyDuplicatePolicy(config, *users, *items, test_what.c_str(), &test, &test_origins));
    FEDREC_RETURN_IF_ERROR(
        CheckTrainTestOverlap(config, *users, *items, train, train_origins, test, test_origins)
            .WithContext(where));
    result.train[k] = std::move(train);
    result.test[k] = std::move(test);
  }
  return result;
}

// Interns data.item_universe (when set) into `items`; returns its size (0
// when unset).
Result<uint32_t> InternUniverse(const Config& config, IdMap* items) {
  if (config.data.item_universe.empty()) return 0u;
  FEDREC_ASSIGN_OR_RETURN(std::vector<std::string> universe,
                          ReadItemUniverse(config.data.item_universe));
  for (const std::string& id : universe) items->Intern(id);
  return items->size();
}

// Users present in `train` or `test`, ascending.
std::vector<uint32_t> UsersOf(const std::vector<Rating>& train, const std::vector<Rating>& test) {
  std::vector<uint32_t> users;
  for (const Rating& r : train) users.push_back(r.user);
  for (const Rating& r : test) users.push_back(r.user);
  std::sort(users.begin(), users.end());
  users.erase(std::unique(users.begin(), users.end()), users.end());
  return users;
}

Result<FederatedData> LoadFederatedData(const Config& config) {
  FederatedData data;
  const uint32_t sites = static_cast<uint32_t>(config.federation.sites);
  if (config.federation.partition == "files") {
    Dataset& d = data.dataset;
    d.rating_min = static_cast<float>(config.data.rating_min);
    d.rating_max = static_cast<float>(config.data.rating_max);
    std::vector<std::vector<Rating>> train(sites), test(sites);
    // Items numbered by the published universe, else in first-seen order
    // over the sites (what `fedrec run` gets from the sites' IDs).
    FEDREC_ASSIGN_OR_RETURN(const uint32_t universe, InternUniverse(config, &d.items));
    {
      std::vector<uint32_t> all_sites(sites);
      std::iota(all_sites.begin(), all_sites.end(), 0u);
      FEDREC_ASSIGN_OR_RETURN(SiteRatings read,
                              ReadSites(config, all_sites, &d.users, &d.items, universe));
      train = std::move(read.train);
      test = std::move(read.test);
    }
    for (uint32_t s = 0; s < sites; ++s) {
      // The cold-start choice depends only on the seed and raw IDs: the same
      // per site as over the whole dataset.
      FEDREC_ASSIGN_OR_RETURN(const std::vector<uint8_t> cold,
                              ApplyColdStart(config, d.users, test[s], &train[s]));
      if (!cold.empty()) {
        d.cold_users.resize(d.users.size(), 0);
        for (size_t u = 0; u < cold.size(); ++u) d.cold_users[u] |= cold[u];
      }
      d.train.insert(d.train.end(), train[s].begin(), train[s].end());
      d.test.insert(d.test.end(), test[s].begin(), test[s].end());
    }
    if (!d.cold_users.empty()) d.cold_users.resize(d.users.size(), 0);
    LogColdStart(config, d.cold_users);
    // Items: one shared table by the federation's item order. Users: the
    // shared file by the dataset's users, or each site's own file.
    FEDREC_ASSIGN_OR_RETURN(const SideFeatureFiles shared, LoadSideFeatureFiles(config));
    if (shared.items) {
      d.item_features = IndexLogged(*shared.items, d.items, "item");
      data.item_features = std::make_shared<const FeatureTable>(d.item_features);
    }
    const bool per_site_users = !config.data.site_user_features.empty();
    if (shared.users && !per_site_users)
      d.user_features = IndexLogged(*shared.users, d.users, "user");
    data.site_user_ids.resize(sites);
    for (uint32_t s = 0; s < sites; ++s) {
      const std::vector<uint32_t> users = UsersOf(train[s], test[s]);
      data.sites.push_back(MakeSiteData(d.users, users, std::move(train[s]), std::move(test[s]),
                                        &data.site_user_ids[s], d.user_features, d.cold_users));
      if (per_site_users) {
        FEDREC_ASSIGN_OR_RETURN(const SideFeatureFiles own, LoadSideFeatureFiles(config, s));
        if (own.users)
          data.sites.back().user_features = IndexFeatures(*own.users, data.site_user_ids[s]);
      }
    }
    spdlog::info("{}", DatasetStatsLine(ComputeDatasetStats(data.dataset, data.sites)));
    return data;
  }
  FEDREC_ASSIGN_OR_RETURN(data.dataset, ReadDataset(config));
  PartitionOptions options;
  options.sites = sites;
  options.dirichlet_alpha = config.federation.dirichlet_alpha;
  options.item_groups = static_cast<uint32_t>(config.federation.item_groups);
  options.seed = config.seed;
  FEDREC_ASSIGN_OR_RETURN(Partitioner partitioner,
                          PartitionerRegistry::WithBuiltins().Find(config.federation.partition));
  FEDREC_ASSIGN_OR_RETURN(std::vector<uint32_t> site_of_user, partitioner(data.dataset, options));
  std::vector<std::vector<Rating>> train = SplitBySite(data.dataset.train, site_of_user, sites);
  std::vector<std::vector<Rating>> test = SplitBySite(data.dataset.test, site_of_user, sites);
  std::vector<std::vector<uint32_t>> users(sites);
  for (uint32_t u = 0; u < site_of_user.size(); ++u) users[site_of_user[u]].push_back(u);
  spdlog::info("partition {}: users per site {}", config.federation.partition,
               UsersPerSiteLine(users));
  data.site_user_ids.resize(sites);
  for (uint32_t s = 0; s < sites; ++s) {
    data.sites.push_back(MakeSiteData(data.dataset.users, users[s], std::move(train[s]),
                                      std::move(test[s]), &data.site_user_ids[s],
                                      data.dataset.user_features, data.dataset.cold_users));
  }
  if (!data.dataset.item_features.empty())
    data.item_features = std::make_shared<const FeatureTable>(data.dataset.item_features);
  spdlog::info("{}", DatasetStatsLine(ComputeDatasetStats(data.dataset, data.sites)));
  return data;
}

Result<LocalSite> LoadLocalSite(const Config& config, uint32_t site) {
  LocalSite local;
  if (config.federation.partition == "files") {
    IdMap users, items;
    std::vector<Rating> train, test;
    FEDREC_ASSIGN_OR_RETURN(const uint32_t universe, InternUniverse(config, &items));
    {
      FEDREC_ASSIGN_OR_RETURN(SiteRatings read,
                              ReadSites(config, {site}, &users, &items, universe));
      train = std::move(read.train[0]);
      test = std::move(read.test[0]);
    }
    FEDREC_ASSIGN_OR_RETURN(const std::vector<uint8_t> cold,
                            ApplyColdStart(config, users, test, &train));
    LogColdStart(config, cold);
    FEDREC_ASSIGN_OR_RETURN(const SideFeatureFiles files, LoadSideFeatureFiles(config, site));
    std::vector<uint32_t> held = UsersOf(train, test);
    local.data = MakeSiteData(users, held, std::move(train), std::move(test), &local.user_ids,
                              FeatureTable(), cold);
    if (files.users) local.data.user_features = IndexFeatures(*files.users, local.user_ids);
    for (uint32_t i = 0; i < items.size(); ++i) local.item_ids.push_back(items.Raw(i));
    local.in_universe = universe > 0;
    {
      DatasetStats stats;
      stats.users = local.user_ids.size();
      stats.items = local.item_ids.size();
      stats.train = local.data.train.size();
      stats.test = local.data.test.size();
      stats.density = Density(stats);
      spdlog::info("site {}: {}", site, DatasetStatsLine(stats));
    }
    if (files.items) {
      local.item_feature_rows = files.items;
      local.item_features =
          std::make_shared<const FeatureTable>(IndexFeatures(*files.items, local.item_ids));
    }
    return local;
  }
  FEDREC_ASSIGN_OR_RETURN(FederatedData all, LoadFederatedData(config));
  if (site >= all.sites.size()) {
    return Status::InvalidArgument("site " + std::to_string(site) + " does not exist: " +
                                   std::to_string(all.sites.size()) + " sites configured");
  }
  local.data = std::move(all.sites[site]);
  local.user_ids = std::move(all.site_user_ids[site]);
  for (uint32_t i = 0; i < all.dataset.items.size(); ++i)
    local.item_ids.push_back(all.dataset.items.Raw(i));
  if (all.item_features) {
    local.item_features = all.item_features;
    local.item_feature_rows = FileOfTable(all.dataset.items, *all.item_features);
  }
  return local;
}

Status AdoptItemCatalogue(const std::vector<std::string>& catalogue, LocalSite* site) {
  std::unordered_map<std::string_view, uint32_t> index;
  index.reserve(catalogue.size());
  for (uint32_t i = 0; i < catalogue.size(); ++i) index.emplace(catalogue[i], i);
  std::vector<uint32_t> global(site->item_ids.size());
  for (size_t i = 0; i < site->item_ids.size(); ++i) {
    auto it = index.find(site->item_ids[i]);
    if (it == index.end()) {
      return Status::InvalidArgument("the coordinator's item catalogue (" +
                                     std::to_string(catalogue.size()) +
                                     " items) lacks this site's item '" + site->item_ids[i] + "'");
    }
    global[i] = it->second;
  }
  for (Rating& r : site->data.train) r.item = global[r.item];
  for (Rating& r : site->data.test) r.item = global[r.item];
  // Every site lays the same rows out by the same catalogue: equal tables.
  if (site->item_feature_rows) {
    site->item_features =
        std::make_shared<const FeatureTable>(IndexFeatures(*site->item_feature_rows, catalogue));
  }
  return Status::Ok();
}

double Density(const DatasetStats& stats) {
  const double cells = static_cast<double>(stats.users) * static_cast<double>(stats.items);
  return cells > 0 ? static_cast<double>(stats.train + stats.test) / cells : 0.0;
}

DatasetStats ComputeDatasetStats(const Dataset& dataset, std::span<const SiteData> sites) {
  DatasetStats stats;
  stats.users = dataset.users.size();
  stats.items = dataset.items.size();
  stats.train = dataset.train.size();
  stats.test = dataset.test.size();
  stats.density = Density(stats);
  stats.sites = sites.size();
  if (!sites.empty()) {
    std::vector<uint64_t> sizes;
    for (const SiteData& site : sites) sizes.push_back(site.train.size() + site.test.size());
    std::sort(sizes.begin(), sizes.end());
    const size_t n = sizes.size();
    stats.site_ratings_min = sizes.front();
    stats.site_ratings_max = sizes.back();
    stats.site_ratings_median =
        n % 2 == 1
            ? static_cast<double>(sizes[n / 2])
            : (static_cast<double>(sizes[n / 2 - 1]) + static_cast<double>(sizes[n / 2])) / 2;
  }
  return stats;
}

std::string DatasetStatsLine(const DatasetStats& stats) {
  std::string line =
      fmt::format("data: {} users, {} items, {} train and {} test ratings, density {:.4g}",
                  stats.users, stats.items, stats.train, stats.test, stats.density);
  if (stats.sites > 0) {
    line += fmt::format("; {} sites, ratings per site min {} median {:g} max {}", stats.sites,
                        stats.site_ratings_min, stats.site_ratings_median, stats.site_ratings_max);
  }
  return line;
}

std::string UsersPerSiteLine(const std::vector<std::vector<uint32_t>>& users) {
  constexpr size_t kListed = 20;
  if (users.size() <= kListed) {
    std::string line;
    for (size_t s = 0; s < users.size(); ++s)
      line += (s == 0 ? "" : ", ") + std::to_string(users[s].size());
    return line;
  }
  std::vector<size_t> counts;
  counts.reserve(users.size());
  for (const std::vector<uint32_t>& u : users) counts.push_back(u.size());
  std::sort(counts.begin(), counts.end());
  return fmt::format("min {} median {} max {} over {} sites", counts.front(),
                     counts[counts.size() / 2], counts.back(), counts.size());
}

nlohmann::json DatasetStatsJson(const DatasetStats& stats) {
  nlohmann::json j = {{"users", stats.users},
                      {"items", stats.items},
                      {"train", stats.train},
                      {"test", stats.test},
                      {"density", stats.density}};
  if (stats.sites > 0) {
    j["sites"] = stats.sites;
    j["site_ratings"] = {{"min", stats.site_ratings_min},
                         {"median", stats.site_ratings_median},
                         {"max", stats.site_ratings_max}};
  }
  return j;
}

Result<std::vector<std::string>> ReadItemUniverse(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    if (!std::filesystem::exists(path))
      return Status::NotFound("item universe " + path + " (data.item_universe) does not exist");
    return Status::IoError("cannot read item universe " + path + " (data.item_universe)");
  }
  std::vector<std::string> ids;
  std::unordered_map<std::string, uint64_t> first_line;
  std::string line;
  for (uint64_t number = 1; std::getline(in, line); ++number) {
    if (number == 1 && line.starts_with(text::kUtf8Bom)) line.erase(0, text::kUtf8Bom.size());
    const size_t begin = line.find_first_not_of(" \t\r");
    if (begin == std::string::npos) continue;
    const size_t end = line.find_last_not_of(" \t\r");
    std::string id = line.substr(begin, end - begin + 1);
    auto [it, fresh] = first_line.emplace(id, number);
    if (!fresh) {
      return Status::InvalidArgument(path + ":" + std::to_string(number) + ": item '" + id +
                                     "' is listed twice (first at line " +
                                     std::to_string(it->second) +
                                     "); expected one item ID per line (data.item_universe)");
    }
    ids.push_back(std::move(id));
  }
  if (in.bad()) return Status::IoError("cannot read item universe " + path);
  if (ids.empty()) {
    return Status::InvalidArgument("item universe " + path +
                                   " (data.item_universe): expected one item ID per line, found "
                                   "none");
  }
  return ids;
}

crypto::Key32 JobId(const Config& config, const crypto::Key32& coordinator_key,
                    const crypto::Key32& nonce) {
  const std::string resolved = ConfigToToml(config);
  Sha256 sha;
  sha.Update(std::as_bytes(std::span(resolved.data(), resolved.size())));
  sha.Update(std::as_bytes(std::span(coordinator_key)));
  sha.Update(std::as_bytes(std::span(nonce)));
  return crypto::Key32FromHex(sha.HexDigest(), "job id").value();
}

Result<crypto::Key32> NewJobId(const Config& config, const crypto::Key32& coordinator_key) {
  crypto::Key32 nonce;
  FEDREC_RETURN_IF_ERROR(crypto::RandomBytes(nonce));
  return JobId(config, coordinator_key, nonce);
}

crypto::Key32 PopularityJobId(const crypto::Key32& job) {
  constexpr std::string_view kLabel = "fedrec popularity baseline";
  Sha256 sha;
  sha.Update(std::as_bytes(std::span(kLabel.data(), kLabel.size())));
  sha.Update(std::as_bytes(std::span(job)));
  return crypto::Key32FromHex(sha.HexDigest(), "job id").value();
}

Status CheckRunConfig(const Config& config, const std::vector<std::string>& hosts) {
  const Config::Security& sec = config.security;
  const std::set<std::string> distinct(hosts.begin(), hosts.end());
  const bool authenticated = sec.channels && !sec.coordinator_identity.empty() &&
                             !sec.coordinator_public_key.empty() && !sec.site_identity.empty() &&
                             !sec.site_public_keys.empty();
  if (distinct.size() > 1 && !authenticated && !sec.allow_unauthenticated) {
    std::string names;
    for (const std::string& h : distinct) names += (names.empty() ? "" : ", ") + h;
    return Status::InvalidArgument(fmt::format(
        "fedrec run: the job spans {} hosts ({}), but its channels are not authenticated{}: "
        "expected security.channels = true and identity keys in security.coordinator_identity, "
        "security.coordinator_public_key, security.site_identity and security.site_public_keys "
        "(`fedrec keygen --dir keys --sites {}` makes them and prints the settings), or "
        "security.allow_unauthenticated = true to run without authentication",
        distinct.size(), names,
        sec.channels ? std::string(" (no identity keys are configured)")
                     : std::string(" (security.channels = false)"),
        config.federation.sites));
  }
  if (config.federation.partition == "files" && config.data.item_universe.empty() &&
      config.security.aggregation != "none") {
    return Status::InvalidArgument(
        "config data.item_universe: expected the published item list (one item ID per line) "
        "that every site maps its items onto, found nothing: with per-site files "
        "(federation.partition = files) and security.aggregation = \"" +
        config.security.aggregation +
        "\", fedrec run does not collect the sites' own item IDs at the coordinator (`fedrec "
        "generate` writes items.txt; or set security.aggregation = \"none\")");
  }
  return Status::Ok();
}

MfTrainerOptions TrainerOptions(const Config& config) {
  MfTrainerOptions options;
  options.factors = static_cast<uint32_t>(config.model.factors);
  options.init.init_std = static_cast<float>(config.model.init_std);
  options.init.seed = config.seed;
  options.sgd.lr = static_cast<float>(config.train.lr);
  options.sgd.lr_decay = static_cast<float>(config.train.lr_decay);
  options.sgd.reg = static_cast<float>(config.train.reg);
  options.sgd.bias_reg = static_cast<float>(config.train.bias_reg);
  options.sgd.parallel.threads = static_cast<uint32_t>(config.train.threads);
  options.sgd.parallel.blocks = static_cast<uint32_t>(config.train.blocks);
  ParseSgdSchedule(config.train.schedule, &options.sgd.parallel.schedule);  // validated
  return options;
}

ModelOptions MakeModelOptions(const Config& config) {
  ModelOptions options;
  options.seed = config.seed;
  options.factors = static_cast<uint32_t>(config.model.factors);
  options.init_std = static_cast<float>(config.model.init_std);
  const MfTrainerOptions mf = TrainerOptions(config);
  options.sgd = mf.sgd;
  options.positive_threshold = static_cast<float>(config.data.positive_threshold);
  const std::string prefix = config.model.name + ".";
  for (const auto& [key, value] : config.model.params) {
    if (key.starts_with(prefix)) options.params[key.substr(prefix.size())] = value;
  }
  return options;
}

Result<std::unique_ptr<Model>> MakeModel(const Config& config, ModelData data,
                                         const ModelRegistry* registry) {
  const ModelRegistry builtins = registry ? ModelRegistry() : ModelRegistry::WithBuiltins();
  Result<std::unique_ptr<Model>> model =
      (registry ? *registry : builtins)
          .Create(config.model.name, MakeModelOptions(config), std::move(data));
  if (!model.ok()) return model.status().WithContext("config model.name = " + config.model.name);
  return model;
}

Result<std::unique_ptr<Model>> MakeServerModel(const Config& config, uint32_t items,
                                               const ModelRegistry* registry) {
  ModelData none;
  none.items = items;
  // The shapes of a model's global blocks may follow the side features'
  // fields and vocabularies (embeddings of categorical features): the
  // coordinator's model gets the fields with no rows, so it holds no user's
  // features. With per-site user files the first site's file declares them.
  const bool site_users = config.data.user_features.empty() &&
                          config.federation.partition == "files" &&
                          !config.data.site_user_features.empty();
  FEDREC_ASSIGN_OR_RETURN(
      const SideFeatureFiles files,
      LoadSideFeatureFiles(config, site_users ? std::optional<uint32_t>(0) : std::nullopt));
  const std::vector<std::string> no_rows;
  if (files.users) none.user_features = IndexFeatures(*files.users, no_rows);
  if (files.items)
    none.item_features = std::make_shared<const FeatureTable>(IndexFeatures(*files.items, no_rows));
  FEDREC_ASSIGN_OR_RETURN(std::unique_ptr<Model> model,
                          MakeModel(config, std::move(none), registry));
  // Under differential privacy sites do not start from their own mean (it
  // would bypass the noise): the global mean starts public, at the middle of
  // the rating range, and stays there.
  if (config.dp.mode != "none") {
    for (ParamBlock& block : model->blocks()) {
      if (block.name == "global_mean" && block.data.size() == 1)
        block.data[0] = static_cast<float>((config.data.rating_min + config.data.rating_max) / 2);
    }
  }
  return model;
}

namespace {

// Steps after which the configured model changes nothing (0 = no limit).
uint32_t StepsToConverge(const Config& config, const ModelRegistry* registry) {
  Result<std::unique_ptr<Model>> model = MakeServerModel(config, 0, registry);
  return model.ok() ? (*model)->StepsToConverge() : 0;
}

}  // namespace

Status CheckFederatedModel(const Config& config, const Model& model, const Strategy& strategy) {
  if (strategy.UsesControlVariates() && !model.SupportsControlVariates()) {
    return Status::InvalidArgument(fmt::format(
        "config: federation.strategy = \"{}\" corrects each site's training with control "
        "variates, which model.name = \"{}\" does not train with; choose model mf or another "
        "strategy",
        config.federation.strategy, config.model.name));
  }
  if (strategy.NormalizesUpdates() && !model.CountsLocalSteps()) {
    return Status::InvalidArgument(fmt::format(
        "config: federation.strategy = \"{}\" normalizes each site's update by its local steps, "
        "which model.name = \"{}\" does not count; choose model mf or another strategy",
        config.federation.strategy, config.model.name));
  }
  if (config.dp.mode != "none") {
    if (model.SolvesFromSums() || strategy.NeedsIndividualUpdates() ||
        strategy.UsesControlVariates() || strategy.NormalizesUpdates()) {
      return Status::InvalidArgument(fmt::format(
          "config dp.mode: expected none with model.name = \"{}\" and federation.strategy = "
          "\"{}\" (differential privacy needs a gradient model and a strategy that averages "
          "updates: fedavg, fedavgm, fedadam, fedyogi, fedadagrad, fedprox), found \"{}\"",
          config.model.name, config.federation.strategy, config.dp.mode));
    }
    if (config.dp.unit == "user" && !model.TrainsClippedPerUser()) {
      return Status::InvalidArgument(fmt::format(
          "config dp.unit: expected site with model.name = \"{}\" (only mf trains each user "
          "apart), found \"user\"",
          config.model.name));
    }
  }
  if (model.SolvesFromSums() && config.federation.fraction < 1.0) {
    return Status::InvalidArgument(
        fmt::format("config federation.fraction: expected 1 for model {}, which solves from the "
                    "sums of every site's statistics (a round over a sample of sites would count "
                    "only the sampled sites' users), found {}",
                    config.model.name, config.federation.fraction));
  }
  return Status::Ok();
}

int64_t EffectiveRounds(const Config& config, const ModelRegistry* registry) {
  const uint32_t steps = StepsToConverge(config, registry);
  return steps ? std::min<int64_t>(config.federation.rounds, steps) : config.federation.rounds;
}

int64_t EffectiveEpochs(const Config& config, const ModelRegistry* registry) {
  const uint32_t steps = StepsToConverge(config, registry);
  return steps ? std::min<int64_t>(config.train.epochs, steps) : config.train.epochs;
}

bool EvalWarmCold(const Config& config) {
  return config.eval.warm_cold || config.data.cold_start.share > 0;
}

WorkerOptions MakeWorkerOptions(const Config& config, const ModelRegistry* registry) {
  WorkerOptions options;
  // Every site's options share one copy of the configuration. Sites decay
  // their learning rate by the federation's schedule (federation.lr_decay).
  Config site = config;
  site.train.lr_decay = config.federation.lr_decay;
  options.make_model = [config = std::make_shared<const Config>(std::move(site)),
                        registry](ModelData data) {
    return MakeModel(*config, std::move(data), registry);
  };
  options.rating_min = static_cast<float>(config.data.rating_min);
  options.rating_max = static_cast<float>(config.data.rating_max);
  options.evaluate_ranking = config.eval.ranking;
  options.ranking.k = static_cast<uint32_t>(config.eval.top_k);
  options.ranking.relevant_threshold = static_cast<float>(config.eval.relevant_threshold);
  options.click_negatives = static_cast<uint32_t>(config.eval.click_negatives);
  options.auc_bins = static_cast<uint32_t>(config.eval.auc_bins);
  options.eval_warm_cold = EvalWarmCold(config);
  options.reconstruct_local = config.eval.reconstruct;
  options.seed = config.seed;
  options.secagg_policy = SecAggPolicy(config);
  options.dp = DpOptionsOf(config);
  return options;
}

Aggregation AggregationOf(const Config& config) {
  const std::string& a = config.security.aggregation;
  if (a == "secagg" || a == "secagg+") return Aggregation::kSecAgg;
  if (a == "paillier") return Aggregation::kPaillier;
  return Aggregation::kNone;
}

secagg::Policy SecAggPolicy(const Config& config) {
  secagg::Policy policy;
  if (config.security.aggregation == "secagg+" || config.security.graph == "sparse") {
    policy.graph = secagg::Graph::kSparse;
  } else if (config.security.graph == "complete") {
    policy.graph = secagg::Graph::kComplete;
  } else {
    policy.graph = secagg::Graph::kAuto;
  }
  policy.threshold_fraction = config.security.threshold;
  policy.threat.adversarial_rate = config.security.adversarial_rate;
  policy.threat.dropout_rate = config.security.dropout_rate;
  return policy;
}

CoordinatorOptions MakeCoordinatorOptions(const Config& config) {
  CoordinatorOptions options;
  options.rounds = static_cast<uint32_t>(config.federation.rounds);
  options.local_epochs = LocalEpochs(config);
  options.fraction = config.federation.fraction;
  options.min_sites = static_cast<uint32_t>(config.federation.min_sites);
  options.eval_every = static_cast<uint32_t>(config.eval.every);
  options.eval_fraction = config.eval.fraction;
  options.eval_with_next_round = config.eval.with_next_round;
  options.eval_follow_on = config.eval.follow_on;
  options.auc_bins = static_cast<uint32_t>(config.eval.auc_bins);
  options.eval_warm_cold = EvalWarmCold(config);
  options.eval_per_site = config.eval.per_site;
  options.seed = config.seed;
  options.round_timeout =
      std::chrono::milliseconds(static_cast<int64_t>(config.federation.round_timeout * 1000.0));
  options.aggregation = AggregationOf(config);
  options.secagg = SecAggPolicy(config);
  options.sites_hold_roster = !config.security.site_public_keys.empty();
  options.format.frac_bits = static_cast<uint32_t>(config.security.quantization_bits);
  options.format.clip = static_cast<float>(config.security.clip);
  options.format.max_weight = static_cast<uint64_t>(config.security.max_weight);
  options.paillier_bits = static_cast<uint32_t>(config.security.paillier_bits);
  options.dp = DpOptionsOf(config);
  return options;
}

namespace {

// A public key given as 64 hex digits or as the path of a .pub file.
Result<crypto::Key32> ReadPublicKey(const std::string& text_or_path, const std::string& what) {
  Result<crypto::Key32> key = text_or_path.size() == 64 ? ParsePublicKey(text_or_path, what)
                                                        : LoadPublicKeyFile(text_or_path);
  if (!key.ok()) return key.status().WithContext(what);
  return key;
}

}  // namespace

Result<std::map<uint32_t, crypto::Key32>> SiteRoster(const Config& config, uint32_t sites) {
  std::map<uint32_t, crypto::Key32> roster;
  const std::string& pattern = config.security.site_public_keys;
  for (uint32_t s = 0; !pattern.empty() && s < sites; ++s) {
    FEDREC_ASSIGN_OR_RETURN(
        roster[s], ReadPublicKey(SitePath(config, pattern, s),
                                 "config security.site_public_keys, site " + std::to_string(s)));
  }
  return roster;
}

std::function<std::string(int rank)> RankNames(const std::vector<int>& site_ranks) {
  // Site ranks are contiguous in every launch mode: the names need only the
  // first rank and the count, not a copy of the list per rank.
  const bool contiguous =
      std::adjacent_find(site_ranks.begin(), site_ranks.end(),
                         [](int a, int b) { return b != a + 1; }) == site_ranks.end();
  const int first = site_ranks.empty() ? 0 : site_ranks.front();
  const int count = static_cast<int>(site_ranks.size());
  return [first, count, ranks = contiguous ? std::vector<int>{} : site_ranks](int rank) {
    if (rank == 0) return std::string("coordinator (rank 0)");
    int site = -1;
    if (ranks.empty()) {
      if (rank >= first && rank < first + count) site = rank - first;
    } else {
      const auto it = std::find(ranks.begin(), ranks.end(), rank);
      if (it != ranks.end()) site = static_cast<int>(it - ranks.begin());
    }
    if (site < 0 && rank >= 1 && rank < first)
      return "shard server (rank " + std::to_string(rank) + ")";
    if (site < 0) return "rank " + std::to_string(rank);
    return "site " + std::to_string(site) + " (rank " + std::to_string(rank) + ")";
  };
}

Result<SecureTransportOptions> ChannelOptions(const Config& config, std::optional<uint32_t> site,
                                              const std::vector<int>& site_ranks,
                                              const std::vector<int>& shard_ranks,
                                              std::function<std::string(int rank)> peer_name) {
  const Config::Security& sec = config.security;
  SecureTransportOptions options;
  const std::string identity_file =
      site ? (sec.site_identity.empty() ? "" : SitePath(config, sec.site_identity, *site))
           : sec.coordinator_identity;
  if (identity_file.empty()) {
    FEDREC_ASSIGN_OR_RETURN(options.identity, crypto::GenerateSigningKey());
  } else {
    Result<crypto::SigningKey> identity = LoadIdentity(identity_file);
    if (!identity.ok())
      return identity.status().WithContext(site ? "config security.site_identity"
                                                : "config security.coordinator_identity");
    options.identity = *identity;
  }
  if (site) {
    options.authenticate = !sec.coordinator_public_key.empty();
    if (options.authenticate) {
      FEDREC_ASSIGN_OR_RETURN(
          options.peer_keys[0],
          ReadPublicKey(sec.coordinator_public_key, "config security.coordinator_public_key"));
      // Shard servers present the coordinator's identity (ShardChannelOptions).
      for (int rank : shard_ranks) options.peer_keys[rank] = options.peer_keys[0];
    }
  } else {
    options.authenticate = !sec.site_public_keys.empty();
    FEDREC_ASSIGN_OR_RETURN(auto roster,
                            SiteRoster(config, static_cast<uint32_t>(site_ranks.size())));
    for (const auto& [s, key] : roster) options.peer_keys[site_ranks[s]] = key;
    for (int rank : shard_ranks) options.peer_keys[rank] = options.identity.public_key;
  }
  options.peer_name = peer_name ? std::move(peer_name) : RankNames(site_ranks);
  return options;
}

Result<SecureTransportOptions> ShardChannelOptions(
    const Config& config, const std::vector<int>& site_ranks, const std::vector<int>& shard_ranks,
    const std::optional<crypto::SigningKey>& coordinator_identity) {
  FEDREC_ASSIGN_OR_RETURN(SecureTransportOptions options,
                          ChannelOptions(config, std::nullopt, site_ranks, shard_ranks));
  if (coordinator_identity) {
    options.identity = *coordinator_identity;
  } else if (config.security.coordinator_identity.empty() &&
             !config.security.site_public_keys.empty()) {
    return Status::InvalidArgument(
        "config security.coordinator_identity: expected the coordinator's identity key file with "
        "cluster.shard_servers > 0 and authenticated sites (security.site_public_keys): shard "
        "servers present the coordinator's identity, found none (an ephemeral one)");
  }
  for (int rank : shard_ranks) options.peer_keys[rank] = options.identity.public_key;
  if (options.authenticate) options.peer_keys[0] = options.identity.public_key;
  options.learn_job = true;
  return options;
}

void LogChannelSecurity(const Config& config) {
  const Config::Security& sec = config.security;
  if (!sec.channels) {
    spdlog::warn(
        "security.channels = false: frames between the coordinator and the sites travel "
        "unencrypted and unauthenticated");
    return;
  }
  if (sec.site_public_keys.empty()) {
    spdlog::info(
        "sites are not authenticated (security.site_public_keys is empty): channels are "
        "encrypted with identities made for this job only; create keys with `fedrec keygen` to "
        "enforce them");
  }
}

StrategyOptions MakeStrategyOptions(const Config& config) {
  StrategyOptions options;
  options.seed = config.seed;
  options.fraction = config.federation.fraction;
  options.min_sites = static_cast<uint32_t>(config.federation.min_sites);
  options.min_available = static_cast<uint32_t>(config.federation.min_available);
  options.accept_failures = config.federation.accept_failures;
  options.server_lr = config.federation.server_lr;
  if (options.server_lr == 0.0) {
    const ModelRegistry builtins = ModelRegistry::WithBuiltins();
    const ModelInfo* info = builtins.Find(config.model.name);
    options.server_lr = info != nullptr ? info->server_lr : ModelInfo{}.server_lr;
  }
  options.instructions.local_epochs = LocalEpochs(config);
  options.local_epochs_max = static_cast<uint32_t>(config.federation.local_epochs_max);
  options.instructions.lr = static_cast<float>(config.train.lr);
  // Only the chosen strategy's keys ("<name>.<key>"); other strategies' are ignored.
  const std::string prefix = config.federation.strategy + ".";
  for (const auto& [key, value] : config.federation.strategy_params)
    if (key.starts_with(prefix)) options.params[key.substr(prefix.size())] = value;
  return options;
}

EvalOptions MakeEvalOptions(const Config& config) {
  EvalOptions options;
  options.rating_min = static_cast<float>(config.data.rating_min);
  options.rating_max = static_cast<float>(config.data.rating_max);
  options.ranking = config.eval.ranking;
  options.ranking_options.k = static_cast<uint32_t>(config.eval.top_k);
  options.ranking_options.relevant_threshold = static_cast<float>(config.eval.relevant_threshold);
  options.click_negatives = static_cast<uint32_t>(config.eval.click_negatives);
  options.auc_bins = static_cast<uint32_t>(config.eval.auc_bins);
  options.warm_cold = EvalWarmCold(config);
  options.seed = config.seed;
  return options;
}

EvalResult Evaluate(const Config& config, const Model& model, std::span<const Rating> test,
                    std::span<const uint64_t> user_keys, std::span<const uint8_t> cold_users) {
  EvalSums sums = EvaluateAll(model, test, user_keys, cold_users, MakeEvalOptions(config));
  EvalResult result;
  result.errors = sums.all.errors;
  result.ranking = std::move(sums.all.ranking);
  result.tasks = std::move(sums.all.tasks);
  result.warm_cold = sums.warm_cold;
  result.warm = std::move(sums.warm);
  result.cold = std::move(sums.cold);
  return result;
}

Result<CentralizedResult> TrainCentralized(
    const Config& config, const Dataset& dataset,
    const std::function<void(const ProgressPoint&)>& on_epoch, const ModelRegistry* registry) {
  const auto start = std::chrono::steady_clock::now();
  ModelData data;
  data.items = dataset.items.size();
  data.train = dataset.train;
  data.user_keys.resize(dataset.users.size());
  for (uint32_t u = 0; u < dataset.users.size(); ++u)
    data.user_keys[u] = StableIdKey(dataset.users.Raw(u));
  data.user_features = dataset.user_features;
  if (!dataset.item_features.empty())
    data.item_features = std::make_shared<const FeatureTable>(dataset.item_features);
  data.cold_users = dataset.cold_users;
  const std::vector<uint64_t> user_keys = data.user_keys;  // evaluation: click negatives
  FEDREC_ASSIGN_OR_RETURN(std::unique_ptr<Model> model,
                          MakeModel(config, std::move(data), registry));
  model->OnInitialModel();
  const std::vector<Rating>& test = dataset.test;
  const uint32_t epochs = static_cast<uint32_t>(EffectiveEpochs(config, registry));
  CentralizedResult result;
  for (uint32_t epoch = 0; epoch < epochs; ++epoch) {
    TrainPlan plan;
    plan.round = epoch + 1;
    plan.epoch_offset = epoch;
    plan.epochs = 1;
    plan.lr = static_cast<float>(config.train.lr);
    const LossSums loss = model->Train(plan);
    if (model->SolvesFromSums()) FEDREC_RETURN_IF_ERROR(SolveFromOwnSums(model.get(), epoch + 1));
    ProgressPoint point;
    point.step = epoch + 1;
    point.steps = epochs;
    point.train_mse = loss.Mean();
    const bool last = epoch + 1 == epochs;
    if (last || (epoch + 1) % config.eval.every == 0) {
      point.evaluated = true;
      point.eval = Evaluate(config, *model, test, user_keys, dataset.cold_users);
      if (last) result.eval = point.eval;
    }
    if (on_epoch) on_epoch(point);
  }
  result.global = model->GlobalBlocks();
  result.model = std::move(model);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

Result<EvalResult> PopularityBaseline(const Config& config, const Dataset& dataset) {
  Config popularity = config;
  popularity.model.name = "popularity";
  popularity.eval.every = 1 << 30;  // only the final evaluation
  FEDREC_ASSIGN_OR_RETURN(CentralizedResult result, TrainCentralized(popularity, dataset, nullptr));
  return result.eval;
}

std::string ModelTsvHeader(const std::vector<std::pair<std::string, uint32_t>>& item_blocks) {
  std::string header =
      "# fedrec-model-tsv v1: first one line per global block that is not per item "
      "(<block>\t<values>), then one line per item (<raw item id>\t<its row of each block "
      "below>)\n#columns\titem";
  for (const auto& [name, cols] : item_blocks) header += fmt::format("\t{}[{}]", name, cols);
  return header + "\n";
}

Status SaveGlobalModel(const std::string& path, const std::vector<ParamBlock>& global,
                       const IdMap& items) {
  std::ofstream out(path);
  std::vector<std::pair<std::string, uint32_t>> item_blocks;
  for (const ParamBlock& b : global)
    if (b.rows == items.size() && b.rows != 1) item_blocks.emplace_back(b.name, b.cols);
  out << ModelTsvHeader(item_blocks);
  for (const ParamBlock& b : global) {
    if (b.rows == items.size() && b.rows != 1) continue;
    out << b.name;
    for (float v : b.data) out << '\t' << fmt::format("{}", v);
    out << '\n';
  }
  for (uint32_t i = 0; i < items.size(); ++i) {
    out << items.Raw(i);
    for (const ParamBlock& b : global) {
      if (b.rows != items.size() || b.rows == 1) continue;
      const float* row = b.Row(i);
      for (uint32_t c = 0; c < b.cols; ++c) out << '\t' << fmt::format("{}", row[c]);
    }
    out << '\n';
  }
  if (!out) return Status::IoError("cannot write " + path);
  return Status::Ok();
}

namespace {

// The files and folders a run writes into its directory (apps/model_files.h).
bool IsRunFile(const std::filesystem::path& entry) {
  static constexpr std::string_view kFiles[] = {"config.toml",  "metrics.jsonl", "summary.json",
                                                "model.global", "model.tsv",     "items.tsv",
                                                "strategy.json"};
  const std::string name = entry.filename().string();
  for (std::string_view file : kFiles)
    if (name == file) return true;
  if (name == "central") return true;
  return name.size() > 4 && name.starts_with("site") &&
         name.find_first_not_of("0123456789", 4) == std::string::npos;
}

// The run directory of `config`: made here, never one another run uses.
Result<std::string> MakeRunDirectory(const Config& config, const std::string& command) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (config.output.dir.empty()) {
    const std::time_t now = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&now, &tm);
    char stamp[32];
    std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
    const std::string base = "runs/" + command + "-" + stamp;
    fs::create_directories("runs", ec);
    if (ec) return Status::IoError("cannot create the folder runs: " + ec.message());
    // create_directory is atomic: of two runs in the same second, one gets
    // the name and the other the next suffix.
    for (int n = 1; n < 10000; ++n) {
      const std::string dir = n == 1 ? base : base + "-" + std::to_string(n);
      if (fs::create_directory(dir, ec)) return dir;
      if (ec) return Status::IoError("cannot create run directory " + dir + ": " + ec.message());
    }
    return Status::IoError("cannot find a free run directory name after " + base + "-9999");
  }
  const std::string& dir = config.output.dir;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec))
    return Status::InvalidArgument("config output.dir: " + dir + " exists and is not a folder");
  const bool resuming = !config.checkpoint.resume.empty();
  if (fs::is_directory(dir, ec) && !fs::is_empty(dir, ec) && !resuming) {
    if (!config.output.force) {
      return Status::InvalidArgument(
          "config output.dir: " + dir +
          " is not empty (an earlier run's files would be mixed with this run's); choose an "
          "empty or new folder, or pass --force (output.force = true) to replace the run there");
    }
    for (const fs::directory_entry& entry : fs::directory_iterator(dir, ec)) {
      if (!IsRunFile(entry.path())) continue;
      fs::remove_all(entry.path(), ec);
      if (ec)
        return Status::IoError("--force: cannot remove " + entry.path().string() + ": " +
                               ec.message());
    }
    if (ec) return Status::IoError("cannot list " + dir + ": " + ec.message());
    spdlog::info("output.force: replaced the earlier run's files in {}", dir);
  }
  fs::create_directories(dir, ec);
  if (ec) return Status::IoError("cannot create run directory " + dir + ": " + ec.message());
  return dir;
}

}  // namespace

Result<RunOutput> RunOutput::Create(const Config& config, const std::string& command) {
  RunOutput out;
  FEDREC_ASSIGN_OR_RETURN(out.dir_, MakeRunDirectory(config, command));
  {
    std::ofstream cfg(out.dir_ + "/config.toml");
    cfg << "# resolved configuration of this run (fedrec " << command << ")\n"
        << ConfigToToml(config);
    if (!cfg) return Status::IoError("cannot write " + out.dir_ + "/config.toml");
  }
  out.metrics_ = std::make_shared<std::ofstream>(out.dir_ + "/metrics.jsonl");
  if (!*out.metrics_) return Status::IoError("cannot write " + out.dir_ + "/metrics.jsonl");
  ProgressReporter::Options progress;
  progress.enabled = config.output.progress;
  progress.tty = isatty(STDERR_FILENO);
  out.progress_ = std::make_shared<ProgressReporter>(std::move(progress));
  return out;
}

void RunOutput::WriteMetrics(const std::string& json_line) {
  *metrics_ << json_line << '\n';
  metrics_->flush();
}

void RunOutput::PlanSteps(std::string_view unit, uint64_t steps, uint64_t done_before) {
  progress_->Plan(unit, steps, done_before);
}

void RunOutput::Step(std::string_view unit, uint64_t step, uint64_t steps,
                     std::string_view metrics) {
  progress_->Step(unit, step, steps, metrics);
}

void RunOutput::Within(std::string_view what, uint64_t done, uint64_t total) {
  progress_->Within(what, done, total);
}

void RunOutput::EndProgress() { progress_->End(); }

Status RunOutput::WriteSummary(const std::string& json) {
  std::ofstream out(dir_ + "/summary.json");
  out << json << '\n';
  if (!out) return Status::IoError("cannot write " + dir_ + "/summary.json");
  return Status::Ok();
}

}  // namespace fedrec

namespace fedrec {

Status SetSimulationProfiles(const Config& config, uint32_t sites, SimulationOptions* options) {
  ProfileDistribution d;
  d.compute_speed = config.sim.compute_speed;
  d.speed_spread = config.sim.speed_spread;
  d.latency_ms = config.sim.latency_ms;
  d.bandwidth_mbps = config.sim.bandwidth_mbps;
  d.link_spread = config.sim.link_spread;
  d.stragglers = config.sim.stragglers;
  d.straggler_slowdown = config.sim.straggler_slowdown;
  options->profiles = DrawSiteProfiles(d, sites, config.seed);
  if (config.sim.byzantine_fraction > 0.0) {
    FEDREC_ASSIGN_OR_RETURN(
        options->byzantine.kind,
        ParseByzantineAttack(config.sim.byzantine_attack, "sim.byzantine_attack"));
    options->byzantine.scale = config.sim.byzantine_scale;
    options->byzantine_sites =
        ChooseByzantineSites(config.sim.byzantine_fraction, sites, config.seed);
  }
  options->local_epochs = LocalEpochs(config);
  FaultOptions& f = options->faults;
  const auto& faults = config.sim.faults;
  f.seed = config.seed;
  f.dropout = faults.dropout;
  f.dropout_steps.clear();
  const auto parse = [](const std::string& name, const char* key) -> Result<RoundStep> {
    Result<RoundStep> step = ParseRoundStep(name);
    if (!step.ok()) return step.status().WithContext(std::string("config ") + key);
    return step;
  };
  for (const std::string& name : faults.dropout_steps) {
    FEDREC_ASSIGN_OR_RETURN(RoundStep step, parse(name, "sim.faults.dropout_steps"));
    f.dropout_steps.push_back(step);
  }
  if (faults.crash_site >= 0) {
    FEDREC_ASSIGN_OR_RETURN(RoundStep step, parse(faults.crash_step, "sim.faults.crash_step"));
    f.silences.push_back(SiteSilence{static_cast<uint32_t>(faults.crash_site),
                                     static_cast<uint32_t>(faults.crash_round), step, true});
  }
  f.coordinator_crash_round = static_cast<uint32_t>(faults.coordinator_crash_round);
  FEDREC_ASSIGN_OR_RETURN(f.coordinator_crash_step, parse(faults.coordinator_crash_step,
                                                          "sim.faults.coordinator_crash_step"));
  f.delay_s = faults.delay_ms / 1000.0;
  f.frame_loss = faults.frame_loss;
  f.duplicate = faults.duplicate;
  f.corrupt = faults.corrupt;
  AvailabilityModel& a = options->availability;
  a.seed = config.seed;
  a.p = config.sim.availability_p;
  if (config.sim.availability == "bernoulli") {
    a.kind = AvailabilityModel::Kind::kBernoulli;
  } else if (config.sim.availability == "trace") {
    a.kind = AvailabilityModel::Kind::kTrace;
    Result<std::map<uint32_t, std::vector<std::pair<double, double>>>> windows =
        ReadAvailabilityTrace(config.sim.availability_trace, sites);
    if (!windows.ok()) return windows.status().WithContext("config sim.availability_trace");
    a.windows = std::move(windows).value();
  } else if (config.sim.availability != "always") {
    return Status::InvalidArgument(
        "config sim.availability: expected always, bernoulli or trace, "
        "found \"" +
        config.sim.availability + "\"");
  }
  return Status::Ok();
}

}  // namespace fedrec
