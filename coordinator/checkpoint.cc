#include "coordinator/checkpoint.h"

#include <cstring>
#include <filesystem>
#include <map>
#include <sstream>

#include "base/little_endian.h"
#include "crypto/checkpoint_file.h"

namespace fedrec {
namespace {

constexpr std::string_view kExtraPrefix = "extra.";

std::string EncodeBlocks(const std::vector<ParamBlock>& blocks) {
  std::string out = std::to_string(blocks.size()) + "\n";
  for (const ParamBlock& b : blocks) {
    out += b.name + " " + std::to_string(static_cast<int>(b.scope)) + " " + std::to_string(b.rows) +
           " " + std::to_string(b.cols) + "\n";
    std::vector<uint8_t> bytes;
    AppendFloatsLe(&bytes, b.data.data(), b.data.size());
    out.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    out += '\n';
  }
  return out;
}

Result<std::vector<ParamBlock>> DecodeBlocks(const std::string& bytes, const std::string& where) {
  std::istringstream in(bytes);
  size_t count = 0;
  if (!(in >> count) || in.get() != '\n')
    return Status::Corruption(where + ": bad block count in section 'global'");
  std::vector<ParamBlock> blocks;
  for (size_t i = 0; i < count; ++i) {
    ParamBlock b;
    int scope = 0;
    if (!(in >> b.name >> scope >> b.rows >> b.cols) || in.get() != '\n')
      return Status::Corruption(where + ": bad header of global block " + std::to_string(i));
    b.scope = static_cast<Scope>(scope);
    const size_t n = static_cast<size_t>(b.rows) * b.cols;
    if (n > bytes.size() / 4)
      return Status::Corruption(where + ": global block " + b.name + " claims " +
                                std::to_string(n) + " values, more than the section holds");
    std::vector<uint8_t> raw(n * 4);
    in.read(reinterpret_cast<char*>(raw.data()), static_cast<std::streamsize>(raw.size()));
    if (in.gcount() != static_cast<std::streamsize>(raw.size()) || in.get() != '\n')
      return Status::Corruption(where + ": global block " + b.name + " is truncated");
    b.data.resize(n);
    GetFloatsLe(raw.data(), n, b.data.data());
    blocks.push_back(std::move(b));
  }
  return blocks;
}

// Doubles as their bits in hex: exact, NaN and infinities included.
std::string Bits(double v) {
  uint64_t u;
  std::memcpy(&u, &v, 8);
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(u));
  return hex;
}

bool FromBits(const std::string& hex, double* v) {
  if (hex.size() != 16) return false;
  char* end = nullptr;
  const uint64_t u = std::strtoull(hex.c_str(), &end, 16);
  if (end != hex.c_str() + 16) return false;
  std::memcpy(v, &u, 8);
  return true;
}

std::string EncodeStrategy(const StrategyState& state) {
  std::string out;
  for (const auto& [name, value] : state.scalars) {
    out += "scalar ";
    out += name;
    out += ' ';
    out += Bits(value);
    out += '\n';
  }
  for (const auto& [name, values] : state.vectors) {
    out += "vector " + name + " " + std::to_string(values.size());
    for (double v : values) {
      out += ' ';
      out += Bits(v);
    }
    out += '\n';
  }
  return out;
}

Result<StrategyState> DecodeStrategy(const std::string& bytes, const std::string& where) {
  StrategyState state;
  std::istringstream in(bytes);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string kind, name, hex;
    words >> kind >> name;
    const auto bad = [&] {
      return Status::Corruption(where + ": bad strategy state line '" + line.substr(0, 60) + "'");
    };
    if (kind == "scalar") {
      double v;
      if (!(words >> hex) || !FromBits(hex, &v)) return bad();
      state.scalars[name] = v;
    } else if (kind == "vector") {
      size_t n = 0;
      if (!(words >> n)) return bad();
      std::vector<double> values(n);
      for (double& v : values)
        if (!(words >> hex) || !FromBits(hex, &v)) return bad();
      state.vectors[name] = std::move(values);
    } else {
      return bad();
    }
  }
  return state;
}

std::map<std::string, std::string> ParseMeta(const std::string& meta) {
  std::map<std::string, std::string> fields;
  std::istringstream in(meta);
  std::string line;
  while (std::getline(in, line)) {
    const size_t space = line.find(' ');
    if (space != std::string::npos) fields[line.substr(0, space)] = line.substr(space + 1);
  }
  return fields;
}

}  // namespace

std::string CoordinatorCheckpointPath(const std::string& dir) {
  return (std::filesystem::path(dir) / "coordinator.ckpt").string();
}

Status WriteCoordinatorCheckpoint(const std::string& path, const CheckpointIdentity& identity,
                                  const CoordinatorCheckpoint& checkpoint) {
  const CoordinatorState& state = checkpoint.state;
  CheckpointSections sections;
  sections.emplace_back("meta", "round " + std::to_string(state.round) + "\nversion " +
                                    std::to_string(state.version) + "\nmodel " + identity.model +
                                    "\nsites " + std::to_string(identity.sites) + "\nconfig " +
                                    identity.config_hash + "\nstrategy " + state.strategy + "\n");
  sections.emplace_back("global", EncodeBlocks(state.global));
  sections.emplace_back("strategy_state", EncodeStrategy(state.strategy_state));
  sections.emplace_back("metrics", checkpoint.metrics);
  for (const auto& [name, bytes] : state.extra)
    sections.emplace_back(std::string(kExtraPrefix) + name, bytes);
  return WriteCheckpointFile(path, sections);
}

Result<CoordinatorCheckpoint> ReadCoordinatorCheckpoint(const std::string& path,
                                                        const CheckpointIdentity& expected) {
  FEDREC_ASSIGN_OR_RETURN(CheckpointSections sections, ReadCheckpointFile(path));
  FEDREC_ASSIGN_OR_RETURN(std::string meta_bytes, FindSection(sections, "meta", path));
  std::map<std::string, std::string> meta = ParseMeta(meta_bytes);
  std::string differs;
  const auto compare = [&](const std::string& field, const std::string& want, const char* what) {
    if (meta[field] == want) return;
    differs += (differs.empty() ? "" : "; ") + std::string(what) + ": expected " + want +
               ", found " + (meta[field].empty() ? "none" : meta[field]);
  };
  compare("model", expected.model, "model.name");
  compare("sites", std::to_string(expected.sites), "federation.sites");
  compare("config", expected.config_hash,
          "configuration hash (every key but checkpoint.* and output.*)");
  if (!differs.empty()) {
    return Status::InvalidArgument("checkpoint " + path +
                                   " was written by another run and was not loaded: " + differs);
  }
  CoordinatorCheckpoint checkpoint;
  CoordinatorState& state = checkpoint.state;
  try {
    state.round = static_cast<uint32_t>(std::stoul(meta["round"]));
    state.version = std::stoull(meta["version"]);
  } catch (const std::exception&) {
    return Status::Corruption("checkpoint " + path + ": bad round or version in section 'meta'");
  }
  state.strategy = meta["strategy"];
  FEDREC_ASSIGN_OR_RETURN(std::string global, FindSection(sections, "global", path));
  FEDREC_ASSIGN_OR_RETURN(state.global, DecodeBlocks(global, "checkpoint " + path));
  FEDREC_ASSIGN_OR_RETURN(std::string strategy, FindSection(sections, "strategy_state", path));
  FEDREC_ASSIGN_OR_RETURN(state.strategy_state, DecodeStrategy(strategy, "checkpoint " + path));
  FEDREC_ASSIGN_OR_RETURN(checkpoint.metrics, FindSection(sections, "metrics", path));
  for (const auto& [name, bytes] : sections) {
    if (name.starts_with(kExtraPrefix))
      state.extra.emplace_back(name.substr(kExtraPrefix.size()), bytes);
  }
  return checkpoint;
}

}  // namespace fedrec
