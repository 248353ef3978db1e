#include "worker/site_state.h"

#include <algorithm>
#include <filesystem>
#include <sstream>

#include "crypto/checkpoint_file.h"

namespace fedrec {
namespace {

constexpr std::string_view kPrefix = "round-";
constexpr std::string_view kSuffix = ".ckpt";

std::string Meta(uint32_t site, uint32_t round, const std::string& model,
                 const std::string& config_hash) {
  return "site " + std::to_string(site) + "\nround " + std::to_string(round) + "\nmodel " + model +
         "\nconfig " + config_hash + "\n";
}

}  // namespace

SiteStateStore::SiteStateStore(std::string dir, uint32_t site, uint32_t every,
                               std::string config_hash)
    : dir_(std::move(dir)), site_(site), every_(every), config_hash_(std::move(config_hash)) {}

std::string SiteStateStore::PathOf(uint32_t round) const {
  char name[32];
  std::snprintf(name, sizeof(name), "round-%06u.ckpt", round);
  return (std::filesystem::path(dir_) / name).string();
}

std::vector<uint32_t> SiteStateStore::Rounds() const {
  std::vector<uint32_t> rounds;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
    const std::string name = entry.path().filename().string();
    if (!name.starts_with(kPrefix) || !name.ends_with(kSuffix)) continue;
    const std::string digits =
        name.substr(kPrefix.size(), name.size() - kPrefix.size() - kSuffix.size());
    if (digits.empty() || !std::all_of(digits.begin(), digits.end(), ::isdigit)) continue;
    rounds.push_back(static_cast<uint32_t>(std::stoul(digits)));
  }
  std::sort(rounds.begin(), rounds.end());
  return rounds;
}

Status SiteStateStore::Save(uint32_t round, const Model& model) {
  std::ostringstream state;
  FEDREC_RETURN_IF_ERROR(model.SaveState(state));
  FEDREC_RETURN_IF_ERROR(WriteCheckpointFile(
      PathOf(round), {{"meta", Meta(site_, round, std::string(model.name()), config_hash_)},
                      {"state", state.str()}}));
  // The coordinator committed its checkpoint of round `committed` before
  // this round's plan; older files than the newest <= committed pair with
  // no checkpoint any more.
  const uint32_t committed = every_ > 0 ? (round - 1) / every_ * every_ : 0;
  const std::vector<uint32_t> rounds = Rounds();
  uint32_t keep = 0;
  for (uint32_t r : rounds)
    if (r <= committed) keep = r;
  for (uint32_t r : rounds) {
    std::error_code ec;
    if (r < keep) std::filesystem::remove(PathOf(r), ec);
  }
  return Status::Ok();
}

Result<std::optional<SiteStateStore::Saved>> SiteStateStore::TakeForResume(uint32_t round) {
  std::optional<uint32_t> newest;
  for (uint32_t r : Rounds()) {
    if (r <= round) {
      newest = r;
    } else {
      std::error_code ec;  // written after the checkpoint resumed from
      std::filesystem::remove(PathOf(r), ec);
    }
  }
  if (!newest) return std::optional<Saved>();
  Saved saved;
  saved.round = *newest;
  saved.path = PathOf(*newest);
  FEDREC_ASSIGN_OR_RETURN(CheckpointSections sections, ReadCheckpointFile(saved.path));
  FEDREC_ASSIGN_OR_RETURN(saved.meta, FindSection(sections, "meta", saved.path));
  FEDREC_ASSIGN_OR_RETURN(saved.state, FindSection(sections, "state", saved.path));
  return std::optional<Saved>(std::move(saved));
}

Status SiteStateStore::Check(const Saved& saved, const std::string& model_name) const {
  const std::string expected = Meta(site_, saved.round, model_name, config_hash_);
  // Compare line by line (the model's line only when it is named) and name
  // the first line that differs.
  std::istringstream want(expected), found(saved.meta);
  std::string a, b;
  while (std::getline(want, a)) {
    if (!std::getline(found, b)) b = "(nothing)";
    if (model_name.empty() && a.starts_with("model ") && b.starts_with("model ")) continue;
    if (a == b) continue;
    return Status::InvalidArgument("site state " + saved.path +
                                   " does not match this run: expected '" + a + "', found '" + b +
                                   "' (the configuration hash covers every key but checkpoint.* "
                                   "and output.*); it was not loaded");
  }
  return Status::Ok();
}

}  // namespace fedrec
