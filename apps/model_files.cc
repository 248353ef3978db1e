#include "apps/model_files.h"

#include <filesystem>
#include <fstream>

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
                       const std::vector<std::string>& item_ids) {
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
  return Status::Ok();
}

}  // namespace fedrec
