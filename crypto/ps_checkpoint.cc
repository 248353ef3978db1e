#include "crypto/ps_checkpoint.h"

#include <filesystem>

#include "base/little_endian.h"
#include "crypto/checkpoint_file.h"

namespace fedrec {
namespace {

constexpr std::string_view kPrefix = "epoch-";

}  // namespace

PsSliceStore::PsSliceStore(const std::string& checkpoint_dir, PsSliceIdentity identity)
    : dir_((std::filesystem::path(checkpoint_dir) /
            (identity.role + "-" + std::to_string(identity.index)))
               .string()),
      identity_(std::move(identity)) {}

std::string PsSliceStore::PathOf(uint32_t epoch) const {
  return NumberedCheckpointPath(dir_, kPrefix, epoch);
}

std::vector<uint32_t> PsSliceStore::Epochs() const { return NumberedCheckpoints(dir_, kPrefix); }

std::string PsSliceStore::Meta(uint32_t epoch, size_t arrays) const {
  const PsSliceIdentity& id = identity_;
  return "role " + id.role + "\nindex " + std::to_string(id.index) + " of " +
         std::to_string(id.count) + "\nepoch " + std::to_string(epoch) + "\nrows " +
         std::to_string(id.rows) + "\ncols " + std::to_string(id.cols) + "\narrays " +
         std::to_string(arrays) + "\nconfig " + id.config_hash + "\n";
}

Status PsSliceStore::Save(uint32_t epoch, const std::vector<std::span<const float>>& arrays) const {
  const size_t size = static_cast<size_t>(identity_.rows) * identity_.cols;
  CheckpointSections sections = {{"meta", Meta(epoch, arrays.size())}};
  std::vector<uint8_t> bytes;
  for (size_t a = 0; a < arrays.size(); ++a) {
    if (arrays[a].size() != size) {
      return Status::Internal("checkpoint " + PathOf(epoch) + ": array " + std::to_string(a) +
                              " holds " + std::to_string(arrays[a].size()) + " floats, expected " +
                              std::to_string(size));
    }
    bytes.clear();
    AppendFloatsLe(&bytes, arrays[a].data(), arrays[a].size());
    sections.emplace_back("array" + std::to_string(a),
                          std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
  }
  return WriteCheckpointFile(PathOf(epoch), sections);
}

void PsSliceStore::Committed(uint32_t epoch) const {
  RemoveNumberedCheckpoints(dir_, kPrefix, [epoch](uint32_t e) { return e < epoch; });
}

void PsSliceStore::Clear() const {
  RemoveNumberedCheckpoints(dir_, kPrefix, [](uint32_t) { return true; });
}

Result<std::vector<std::vector<float>>> PsSliceStore::Load(uint32_t epoch, size_t arrays) const {
  // Later files were written after the checkpoint resumed from; earlier
  // ones the driver's commit of `epoch` made useless.
  RemoveNumberedCheckpoints(dir_, kPrefix, [epoch](uint32_t e) { return e != epoch; });
  const std::string path = PathOf(epoch);
  if (!std::filesystem::exists(path)) {
    return Status::NotFound(
        "checkpoint " + path + ": missing; the driver's checkpoint is of epoch " +
        std::to_string(epoch) + ", so " + identity_.role + " " + std::to_string(identity_.index) +
        " needs its file of that epoch (checkpoint.dir must be the folder "
        "the run wrote, on this host)");
  }
  FEDREC_ASSIGN_OR_RETURN(CheckpointSections sections, ReadCheckpointFile(path));
  FEDREC_ASSIGN_OR_RETURN(std::string meta, FindSection(sections, "meta", path));
  FEDREC_RETURN_IF_ERROR(CheckMetaLines("checkpoint " + path, Meta(epoch, arrays), meta));
  const size_t size = static_cast<size_t>(identity_.rows) * identity_.cols;
  std::vector<std::vector<float>> out(arrays);
  for (size_t a = 0; a < arrays; ++a) {
    FEDREC_ASSIGN_OR_RETURN(std::string bytes,
                            FindSection(sections, "array" + std::to_string(a), path));
    if (bytes.size() != size * sizeof(float)) {
      return Status::Corruption("checkpoint " + path + ": array " + std::to_string(a) + " holds " +
                                std::to_string(bytes.size()) + " bytes, expected " +
                                std::to_string(size * sizeof(float)) + "; it was not loaded");
    }
    out[a].resize(size);
    GetFloatsLe(reinterpret_cast<const uint8_t*>(bytes.data()), size, out[a].data());
  }
  return out;
}

}  // namespace fedrec
