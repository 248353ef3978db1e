// `fedrec recommend`: a user's top-K unseen items from a run directory
// (apps/model_files.h). In a federated run a user's factors exist only at
// their site: the user is resolved to the one site folder that lists them, and
// only that folder (with the run's global model) is read.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <unordered_map>

#include "apps/commands.h"
#include "apps/job.h"
#include "apps/model_files.h"
#include "data/side_features.h"
#include "data/split.h"

namespace fedrec {

namespace {

using nlohmann::json;
namespace fs = std::filesystem;

Result<std::vector<std::string>> ReadLines(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::NotFound("cannot read " + path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// The folder holding `user` (its users.tsv lists it) and the user's index there.
Result<std::pair<std::string, uint32_t>> FindHolder(const std::string& run, const std::string& user,
                                                    bool site_files) {
  std::vector<std::string> folders;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(run, ec)) {
    if (entry.is_directory() && fs::exists(entry.path() / "users.tsv"))
      folders.push_back(entry.path().string());
  }
  if (ec) return Status::NotFound("cannot read run directory " + run + ": " + ec.message());
  std::sort(folders.begin(), folders.end());
  for (const std::string& folder : folders) {
    FEDREC_ASSIGN_OR_RETURN(std::vector<std::string> users, ReadLines(folder + "/users.tsv"));
    for (uint32_t u = 0; u < users.size(); ++u) {
      if (users[u] == user) return std::make_pair(folder, u);
    }
  }
  if (folders.empty()) {
    return Status::NotFound(
        run +
        " holds no model of users (expected site<s>/ or central/ folders with users.tsv, as "
        "fedrec train, sim and run write them)" +
        (site_files ? std::string()
                    : "; the run was made with output.site_files = false, so no site saved "
                      "its users' model: run it again without it to serve from it"));
  }
  return Status::NotFound("user \"" + user + "\" is not in " + run + " (searched " +
                          std::to_string(folders.size()) + " holder folder(s))");
}

// The holder's training interactions, renumbered to its users and the run's items.
Result<std::vector<Rating>> ReadInteractions(
    const std::string& path, const std::unordered_map<std::string, uint32_t>& users,
    const std::unordered_map<std::string, uint32_t>& items) {
  std::ifstream in(path);
  if (!in) return Status::NotFound("cannot read " + path);
  std::vector<Rating> out;
  size_t line_no = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    const std::string where = path + ":" + std::to_string(line_no);
    const size_t a = line.find('\t');
    const size_t b = a == std::string::npos ? a : line.find('\t', a + 1);
    if (b == std::string::npos) {
      return Status::InvalidArgument(where + ": expected user<TAB>item<TAB>value, found \"" +
                                     line.substr(0, 80) + "\"");
    }
    const auto user = users.find(line.substr(0, a));
    const auto item = items.find(line.substr(a + 1, b - a - 1));
    if (user == users.end() || item == items.end()) {
      return Status::InvalidArgument(where + ": " + (user == users.end() ? "user" : "item") +
                                     " not in the holder's users.tsv / the run's items.tsv");
    }
    Rating r;
    r.user = user->second;
    r.item = item->second;
    try {
      r.value = std::stof(line.substr(b + 1));
    } catch (...) {
      return Status::InvalidArgument(where + ": expected a number as value, found \"" +
                                     line.substr(b + 1) + "\"");
    }
    out.push_back(r);
  }
  return out;
}

// ISO-8859-1 (MovieLens title files) as UTF-8.
std::string Latin1ToUtf8(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c < 0x80) {
      out += static_cast<char>(c);
    } else {
      out += static_cast<char>(0xC0 | (c >> 6));
      out += static_cast<char>(0x80 | (c & 0x3F));
    }
  }
  return out;
}

// Titles by raw item ID from an ML-100K `u.item` ("id|title|...") or ML-1M
// `movies.dat` ("id::title::genres") file.
Result<std::unordered_map<std::string, std::string>> ReadTitles(const std::string& path) {
  FEDREC_ASSIGN_OR_RETURN(std::vector<std::string> lines, ReadLines(path));
  std::unordered_map<std::string, std::string> titles;
  for (size_t n = 0; n < lines.size(); ++n) {
    const std::string& line = lines[n];
    if (line.empty()) continue;
    const bool dat = line.find("::") != std::string::npos;
    const std::string sep = dat ? "::" : "|";
    const size_t a = line.find(sep);
    const size_t b = a == std::string::npos ? a : line.find(sep, a + sep.size());
    if (a == std::string::npos) {
      return Status::InvalidArgument(path + ":" + std::to_string(n + 1) +
                                     ": expected id|title|... (u.item) or id::title::genres "
                                     "(movies.dat), found \"" +
                                     line.substr(0, 80) + "\"");
    }
    titles[line.substr(0, a)] = Latin1ToUtf8(line.substr(
        a + sep.size(), b == std::string::npos ? std::string::npos : b - a - sep.size()));
  }
  return titles;
}

// The item file beside the run's data (u.item, movies.dat), if any.
std::string FindTitleFile(const Config& config) {
  for (const std::string& data : {config.data.train, config.data.site_train}) {
    if (data.empty()) continue;
    const fs::path dir = fs::path(data).parent_path();
    for (const char* name : {"u.item", "movies.dat"}) {
      if (fs::exists(dir / name)) return (dir / name).string();
    }
  }
  return "";
}

// The holder's site index from its folder name "site<s>", if it is one.
std::optional<uint32_t> SiteOfFolder(const std::string& folder) {
  const std::string name = fs::path(folder).filename().string();
  if (!name.starts_with("site") || name.size() == 4) return std::nullopt;
  uint32_t site = 0;
  for (char c : name.substr(4)) {
    if (c < '0' || c > '9') return std::nullopt;
    site = site * 10 + static_cast<uint32_t>(c - '0');
  }
  return site;
}

// The run's side features (data.user_features, data.item_features or the
// synthetic ones) laid out by the holder's users and the run's items, and
// the holder's cold-start users: those the run's seed chose
// (ColdStartChosen) that hold at most data.cold_start.ratings training
// ratings (the split's cold users hold exactly that many; a chosen user who
// had no more than that stayed warm in training, and is served alike).
Status AddSideFeatures(const Config& config, const std::string& folder,
                       const std::vector<std::string>& users,
                       const std::vector<std::string>& item_ids, ModelData* data) {
  Result<SideFeatureFiles> files = LoadSideFeatureFiles(config, SiteOfFolder(folder));
  if (!files.ok()) return files.status().WithContext("the run's side features");
  if (files->users) data->user_features = IndexFeatures(*files->users, users);
  if (files->items) {
    data->item_features =
        std::make_shared<const FeatureTable>(IndexFeatures(*files->items, item_ids));
  }
  if (config.data.cold_start.share > 0.0) {
    ColdStartOptions options;
    options.share = config.data.cold_start.share;
    options.ratings = static_cast<uint32_t>(config.data.cold_start.ratings);
    options.seed = config.seed;
    std::vector<uint32_t> count(users.size(), 0);
    for (const Rating& r : data->train) ++count[r.user];
    data->cold_users.assign(users.size(), 0);
    for (size_t u = 0; u < users.size(); ++u) {
      data->cold_users[u] = ColdStartChosen(options, users[u]) && count[u] <= options.ratings;
    }
  }
  return Status::Ok();
}

}  // namespace

Result<Recommendations> Recommend(const RecommendRequest& request, const Registries& registries) {
  const std::string& run = request.run;
  if (!fs::is_directory(run)) return Status::NotFound("no run directory " + run);
  Result<Config> config = LoadConfigFile(run + "/config.toml");
  if (!config.ok()) return config.status().WithContext("the run's configuration");
  Result<JobRegistries> job = LoadJobRegistries(config->plugins, registries);
  if (!job.ok()) return job.status().WithContext("the run's plugins");
  const ModelRegistry* models = &job->models;
  FEDREC_ASSIGN_OR_RETURN(std::vector<std::string> item_ids, ReadLines(run + "/items.tsv"));
  std::unordered_map<std::string, uint32_t> item_index;
  for (uint32_t i = 0; i < item_ids.size(); ++i) item_index.emplace(item_ids[i], i);

  FEDREC_ASSIGN_OR_RETURN(auto holder, FindHolder(run, request.user, config->output.site_files));
  const std::string& folder = holder.first;
  const uint32_t user = holder.second;
  FEDREC_ASSIGN_OR_RETURN(std::vector<std::string> users, ReadLines(folder + "/users.tsv"));
  std::unordered_map<std::string, uint32_t> user_index;
  ModelData data;
  data.items = static_cast<uint32_t>(item_ids.size());
  for (uint32_t u = 0; u < users.size(); ++u) {
    user_index.emplace(users[u], u);
    data.user_keys.push_back(StableIdKey(users[u]));
  }
  FEDREC_ASSIGN_OR_RETURN(data.train,
                          ReadInteractions(folder + "/interactions.tsv", user_index, item_index));
  FEDREC_RETURN_IF_ERROR(AddSideFeatures(*config, folder, users, item_ids, &data));
  std::vector<uint8_t> seen(data.items, 0);
  for (const Rating& r : data.train) {
    if (r.user == user) seen[r.item] = 1;
  }

  FEDREC_ASSIGN_OR_RETURN(std::unique_ptr<Model> model,
                          MakeModel(*config, std::move(data), models));
  for (const auto& [path, global] :
       {std::pair{run + "/model.global", true}, std::pair{folder + "/model.local", false}}) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return Status::NotFound("cannot read " + path);
    FEDREC_RETURN_IF_ERROR(model->LoadBlocks(in, global, path));
  }
  // A holder whose local blocks were never trained is served as it
  // evaluated: with them fitted to its interactions (when the model can).
  if (config->eval.reconstruct && fs::exists(folder + "/" + std::string(kUntrainedMarker)))
    model->ReconstructLocal();

  std::vector<float> scores(item_ids.size());
  model->Score(user, scores);
  std::vector<uint32_t> candidates;
  for (uint32_t i = 0; i < scores.size(); ++i) {
    if (!seen[i]) candidates.push_back(i);
  }
  const auto key = [&scores](uint32_t i) {
    return std::isnan(scores[i]) ? -std::numeric_limits<float>::infinity() : scores[i];
  };
  const auto better = [&key](uint32_t a, uint32_t b) {
    return key(a) > key(b) || (key(a) == key(b) && a < b);
  };
  const size_t k = std::min<size_t>(request.k, candidates.size());
  std::partial_sort(candidates.begin(), candidates.begin() + static_cast<std::ptrdiff_t>(k),
                    candidates.end(), better);
  candidates.resize(k);

  std::unordered_map<std::string, std::string> titles;
  const std::string title_file = request.items.empty() ? FindTitleFile(*config) : request.items;
  if (!title_file.empty()) {
    FEDREC_ASSIGN_OR_RETURN(titles, ReadTitles(title_file));
  }
  Recommendations out;
  out.holder = fs::path(folder).filename().string();
  for (uint32_t i : candidates) {
    auto title = titles.find(item_ids[i]);
    out.items.push_back(
        {item_ids[i], scores[i], title != titles.end() ? title->second : std::string()});
  }
  return out;
}

int RunRecommend(const RecommendRequest& request, const Registries& registries) {
  Result<Recommendations> answer = Recommend(request, registries);
  if (!answer.ok()) {
    std::cerr << ("fedrec recommend: " + answer.status().message() + "\n");
    return 1;
  }
  if (!request.json) {
    for (size_t r = 0; r < answer->items.size(); ++r) {
      const Recommendation& rec = answer->items[r];
      std::cout << fmt::format("{:>3}  {:<8} {:>10.4f}  {}\n", r + 1, rec.item, rec.score,
                               rec.title);
    }
    return 0;
  }
  json list = json::array();
  for (size_t r = 0; r < answer->items.size(); ++r) {
    const Recommendation& rec = answer->items[r];
    json entry = {{"rank", r + 1}, {"item", rec.item}, {"score", rec.score}};
    if (!rec.title.empty()) entry["title"] = rec.title;
    list.push_back(entry);
  }
  std::cout << json{{"command", "recommend"},
                    {"run", request.run},
                    {"user", request.user},
                    {"holder", answer->holder},
                    {"items", list}}
                   .dump()
            << std::endl;
  return 0;
}

}  // namespace fedrec
