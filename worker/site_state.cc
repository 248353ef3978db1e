#include "worker/site_state.h"

#include <sstream>

#include "crypto/checkpoint_file.h"

namespace fedrec {
namespace {

constexpr std::string_view kPrefix = "round-";

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
  return NumberedCheckpointPath(dir_, kPrefix, round);
}

std::vector<uint32_t> SiteStateStore::Rounds() const { return NumberedCheckpoints(dir_, kPrefix); }

Status SiteStateStore::Save(uint32_t round, const Model& model, const std::string& control) {
  std::ostringstream state;
  FEDREC_RETURN_IF_ERROR(model.SaveState(state));
  CheckpointSections sections = {
      {"meta", Meta(site_, round, std::string(model.name()), config_hash_)},
      {"state", state.str()}};
  if (!control.empty()) sections.emplace_back("control", control);
  FEDREC_RETURN_IF_ERROR(WriteCheckpointFile(PathOf(round), sections));
  // The coordinator committed its checkpoint of round `committed` before
  // this round's plan; older files than the newest <= committed pair with
  // no checkpoint any more.
  const uint32_t committed = every_ > 0 ? (round - 1) / every_ * every_ : 0;
  uint32_t keep = 0;
  for (uint32_t r : Rounds())
    if (r <= committed) keep = r;
  RemoveNumberedCheckpoints(dir_, kPrefix, [keep](uint32_t r) { return r < keep; });
  return Status::Ok();
}

Result<std::optional<SiteStateStore::Saved>> SiteStateStore::TakeForResume(uint32_t round) {
  // Files of later rounds were written after the checkpoint resumed from.
  RemoveNumberedCheckpoints(dir_, kPrefix, [round](uint32_t r) { return r > round; });
  std::optional<uint32_t> newest;
  for (uint32_t r : Rounds())
    if (r <= round) newest = r;
  if (!newest) return std::optional<Saved>();
  Saved saved;
  saved.round = *newest;
  saved.path = PathOf(*newest);
  FEDREC_ASSIGN_OR_RETURN(CheckpointSections sections, ReadCheckpointFile(saved.path));
  FEDREC_ASSIGN_OR_RETURN(saved.meta, FindSection(sections, "meta", saved.path));
  FEDREC_ASSIGN_OR_RETURN(saved.state, FindSection(sections, "state", saved.path));
  if (Result<std::string> control = FindSection(sections, "control", saved.path); control.ok())
    saved.control = std::move(control).value();
  return std::optional<Saved>(std::move(saved));
}

Status SiteStateStore::Check(const Saved& saved, const std::string& model_name) const {
  // The model's line is compared only when it is named.
  return CheckMetaLines("site state " + saved.path,
                        Meta(site_, saved.round, model_name, config_hash_), saved.meta,
                        model_name.empty() ? "model " : "");
}

}  // namespace fedrec
