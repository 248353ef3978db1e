#include "apps/model_files.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

namespace fedrec {

std::string SiteFolder(const std::string& run, uint32_t site) {
  return run + "/site" + std::to_string(site);
}

std::string CentralFolder(const std::string& run) { return run + "/central"; }

namespace {

Status WriteLines(const std::string& path, const std::vector<std::string>& lines) {
  std::ofstream out(path);
  for (const std::string& line : lines) out << line << '\n';
  if (!out) return Status::IoError("cannot write " + path);
  return Status::Ok();
}

}  // namespace

Status SaveGlobalFiles(const std::string& run, const Model& model,
                       const std::vector<std::string>& item_ids) {
  const std::string path = run + "/model.global";
  std::ofstream out(path, std::ios::binary);
  FEDREC_RETURN_IF_ERROR(model.SaveBlocks(out, true).WithContext(path));
  if (!out) return Status::IoError("cannot write " + path);
  return WriteLines(run + "/items.tsv", item_ids);
}

Status SaveHolderFiles(const std::string& folder, const Model& model,
                       const std::vector<std::string>& user_ids,
                       const std::vector<std::string>& item_ids, bool local_trained) {
  std::error_code ec;
  std::filesystem::create_directories(folder, ec);
  if (ec) return Status::IoError("cannot create " + folder + ": " + ec.message());
  FEDREC_RETURN_IF_ERROR(WriteLines(folder + "/users.tsv", user_ids));
  {
    const std::string path = folder + "/interactions.tsv";
    std::ofstream out(path);
    for (const Rating& r : model.train()) {
      if (r.user >= user_ids.size() || r.item >= item_ids.size())
        return Status::Internal(path + ": an interaction outside the holder's users or items");
      out << user_ids[r.user] << '\t' << item_ids[r.item] << '\t' << r.value << '\n';
    }
    if (!out) return Status::IoError("cannot write " + path);
  }
  const std::string path = folder + "/model.local";
  std::ofstream out(path, std::ios::binary);
  FEDREC_RETURN_IF_ERROR(model.SaveBlocks(out, false).WithContext(path));
  if (!out) return Status::IoError("cannot write " + path);
  const std::string marker = folder + "/" + std::string(kUntrainedMarker);
  if (local_trained) {
    std::filesystem::remove(marker, ec);
    if (ec) return Status::IoError("cannot remove " + marker + ": " + ec.message());
    return Status::Ok();
  }
  std::ofstream note(marker);
  note << "this holder's local blocks (model.local) were never trained: fedrec recommend fits "
          "them to interactions.tsv with the global model fixed (eval.reconstruct)\n";
  if (!note) return Status::IoError("cannot write " + marker);
  return Status::Ok();
}

Status SaveStrategyState(const std::string& run, std::string_view strategy,
                         const StrategyState& state) {
  nlohmann::json doc;
  doc["strategy"] = strategy;
  doc["vectors"] = nlohmann::json::object();
  for (const auto& [name, values] : state.vectors) doc["vectors"][name] = values;
  doc["scalars"] = nlohmann::json::object();
  for (const auto& [name, value] : state.scalars) doc["scalars"][name] = value;
  const std::string path = run + "/strategy.json";
  std::ofstream out(path);
  out << doc.dump() << "\n";
  if (!out) return Status::Internal("cannot write " + path);
  return Status::Ok();
}

Result<StrategyState> LoadStrategyState(const std::string& path, std::string_view strategy) {
  std::ifstream in(path);
  if (!in) return Status::NotFound("cannot open strategy state " + path);
  nlohmann::json doc = nlohmann::json::parse(in, nullptr, false);
  const auto bad = [&path](const std::string& what) {
    return Status::InvalidArgument(path + ": " + what);
  };
  if (doc.is_discarded() || !doc.is_object()) return bad("expected a JSON object, found none");
  if (!doc.contains("strategy") || !doc["strategy"].is_string())
    return bad("expected a \"strategy\" name");
  const std::string found = doc["strategy"].get<std::string>();
  if (found != strategy) {
    return bad("expected the state of strategy " + std::string(strategy) + ", found strategy " +
               found);
  }
  StrategyState state;
  for (const char* section : {"vectors", "scalars"}) {
    if (!doc.contains(section)) continue;
    if (!doc[section].is_object())
      return bad(std::string("expected \"") + section + "\" to be an object");
    for (const auto& [name, value] : doc[section].items()) {
      const std::string where = std::string(section) + "." + name;
      if (std::string(section) == "scalars") {
        if (!value.is_number())
          return bad("expected " + where + " to be a number, found " + value.dump());
        state.scalars[name] = value.get<double>();
        continue;
      }
      if (!value.is_array()) return bad("expected " + where + " to be an array of numbers");
      std::vector<double>& out = state.vectors[name];
      for (size_t i = 0; i < value.size(); ++i) {
        if (!value[i].is_number()) {
          return bad("expected " + where + "[" + std::to_string(i) + "] to be a number, found " +
                     value[i].dump());
        }
        out.push_back(value[i].get<double>());
      }
    }
  }
  return state;
}

}  // namespace fedrec
