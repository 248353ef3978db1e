#include "algorithms/model.h"

#include <algorithm>
#include <cassert>
#include <cstring>
#include <limits>

#include "base/little_endian.h"

namespace fedrec {

double ModelOptions::Param(const std::string& key) const { return ParamOf(params, key); }

std::vector<ParamBlock> Model::GlobalBlocks() const { return CopyGlobalBlocks(blocks()); }

bool Model::SetGlobalBlocks(const std::vector<ParamBlock>& global) {
  if (!AssignGlobalBlocks(global, &blocks())) return false;
  OnGlobalModel();
  return true;
}

bool Model::SetGlobalBlocks(std::vector<ParamBlock>&& global) {
  if (!AssignGlobalBlocks(std::move(global), &blocks())) return false;
  OnGlobalModel();
  return true;
}

void Model::ReleaseGlobal() {
  for (ParamBlock& b : blocks()) {
    if (!IsGlobal(b.scope)) continue;
    b.data.clear();
    b.data.shrink_to_fit();
  }
}

std::vector<ParamBlock> Model::UploadShapes() const {
  std::vector<ParamBlock> shapes;
  for (const ParamBlock& b : blocks()) {
    if (IsGlobal(b.scope)) shapes.push_back(ShapeOf(b));
  }
  return shapes;
}

Status Model::Apply(const AggregateInput& sums, Strategy* strategy,
                    std::vector<ParamBlock>* global) const {
  if (strategy == nullptr) {
    return Status::InvalidArgument("model " + std::string(name()) +
                                   " is combined by a strategy, and none was given");
  }
  return strategy->Aggregate(sums, global);
}

float Model::Predict(uint32_t, uint32_t) const {
  assert(false && "Predict called on a model that does not predict ratings");
  return std::numeric_limits<float>::quiet_NaN();
}

void Model::PredictTasks(uint32_t, uint32_t, std::span<float> out) const {
  assert(out.empty() && "PredictTasks called on a model without tasks");
  (void)out;
}

void AddUpload(const Model& model, AggregateInput* sums) {
  const std::vector<ParamBlock> shapes = model.UploadShapes();
  const std::vector<DenseBlockView> views = model.Upload();
  assert(views.size() == shapes.size());
  if (sums->weighted_sum.empty()) {
    for (const ParamBlock& shape : shapes) {
      sums->row_weight.emplace_back(shape.rows, 0.0);
      sums->weighted_sum.emplace_back(static_cast<size_t>(shape.rows) * shape.cols, 0.0);
    }
  }
  for (size_t b = 0; b < shapes.size(); ++b) {
    const uint32_t cols = shapes[b].cols;
    for (uint32_t r = 0; r < shapes[b].rows; ++r) {
      const double w = views[b].weights[r];
      if (w == 0) continue;
      sums->row_weight[b][r] += w;
      double* dst = sums->weighted_sum[b].data() + static_cast<size_t>(r) * cols;
      const float* src = views[b].values.data() + static_cast<size_t>(r) * cols;
      for (uint32_t c = 0; c < cols; ++c) dst[c] += w * static_cast<double>(src[c]);
    }
  }
  ++sums->sites;
}

Status SolveFromOwnSums(Model* model, uint32_t round) {
  AggregateInput sums;
  sums.round = round;
  AddUpload(*model, &sums);
  std::vector<ParamBlock> global = model->GlobalBlocks();
  FEDREC_RETURN_IF_ERROR(model->Apply(sums, nullptr, &global));
  if (!model->SetGlobalBlocks(global))
    return Status::Internal("model " + std::string(model->name()) + " changed its block shapes");
  return Status::Ok();
}

std::vector<uint32_t> ItemCounts(std::span<const Rating> train, uint32_t items) {
  std::vector<uint32_t> counts(items, 0);
  for (const Rating& r : train) {
    assert(r.item < items);
    if (counts[r.item] != std::numeric_limits<uint32_t>::max()) ++counts[r.item];
  }
  return counts;
}

namespace {

constexpr std::string_view kMagic = Model::kBlocksMagic;

bool ReadLine(std::istream& in, std::string* line) {
  return static_cast<bool>(std::getline(in, *line));
}

}  // namespace

Status Model::SaveBlocks(std::ostream& out, bool global) const {
  size_t count = 0;
  for (const ParamBlock& b : blocks()) count += IsGlobal(b.scope) == global;
  out << kMagic << ' ' << name() << ' ' << count << '\n';
  for (const ParamBlock& b : blocks()) {
    if (IsGlobal(b.scope) != global) continue;
    out << b.name << ' ' << static_cast<int>(b.scope) << ' ' << b.rows << ' ' << b.cols << '\n';
    std::vector<uint8_t> bytes;
    AppendFloatsLe(&bytes, b.data.data(), b.data.size());
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
    out << '\n';
  }
  if (!out) return Status::IoError("writing the model's blocks failed");
  return Status::Ok();
}

std::vector<std::vector<float>> Model::LocalValues() const {
  std::vector<std::vector<float>> values;
  for (const ParamBlock& b : blocks())
    if (!IsGlobal(b.scope)) values.push_back(b.data);
  return values;
}

void Model::RestoreLocalValues(std::vector<std::vector<float>> values) {
  size_t next = 0;
  for (ParamBlock& b : blocks())
    if (!IsGlobal(b.scope)) b.data = std::move(values[next++]);
}

Status Model::LoadBlocks(std::istream& in, bool global, const std::string& where) {
  std::string line;
  const std::string expected_header = std::string(kMagic) + ' ' + std::string(name()) + ' ';
  if (!ReadLine(in, &line) || !line.starts_with(expected_header)) {
    return Status::InvalidArgument(where + ": expected a header \"" + expected_header +
                                   "<blocks>\", found \"" + line.substr(0, 80) + "\"");
  }
  // Read every block first, so a bad file leaves the model unchanged.
  std::vector<ParamBlock> read;
  for (const ParamBlock& b : blocks()) {
    if (IsGlobal(b.scope) != global) continue;
    if (!ReadLine(in, &line)) {
      return Status::InvalidArgument(where + ": expected block " + b.name + ", found end of file");
    }
    const std::string expected = b.name + ' ' + std::to_string(static_cast<int>(b.scope)) + ' ' +
                                 std::to_string(b.rows) + ' ' + std::to_string(b.cols);
    if (line != expected) {
      return Status::InvalidArgument(where + ": expected block \"" + expected + "\", found \"" +
                                     line.substr(0, 80) + "\"");
    }
    ParamBlock block = ShapeOf(b);
    block.data.resize(b.data.size());
    std::vector<uint8_t> bytes(b.data.size() * 4);
    in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    if (in.gcount() != static_cast<std::streamsize>(bytes.size()) || in.get() != '\n') {
      return Status::InvalidArgument(where + ": block " + b.name + " is truncated: expected " +
                                     std::to_string(bytes.size()) + " bytes of values");
    }
    GetFloatsLe(bytes.data(), block.data.size(), block.data.data());
    read.push_back(std::move(block));
  }
  size_t next = 0;
  for (ParamBlock& b : blocks()) {
    if (IsGlobal(b.scope) != global) continue;
    b.data = std::move(read[next++].data);
  }
  if (global) OnGlobalModel();
  return Status::Ok();
}

void ModelRegistry::Register(ModelInfo info) {
  std::string name = info.name;
  models_[name] = std::move(info);
}

const ModelInfo* ModelRegistry::Find(const std::string& name) const {
  auto it = models_.find(name);
  return it == models_.end() ? nullptr : &it->second;
}

std::vector<std::string> ModelRegistry::Names() const {
  std::vector<std::string> names;
  for (const auto& [name, info] : models_) names.push_back(name);
  return names;
}

Result<std::unique_ptr<Model>> ModelRegistry::Create(const std::string& name, ModelOptions options,
                                                     ModelData data) const {
  const ModelInfo* info = Find(name);
  if (info == nullptr) {
    return Status::InvalidArgument("unknown model \"" + name +
                                   "\"; registered models: " + JoinNames(Names()));
  }
  FEDREC_RETURN_IF_ERROR(FillParams("model", name, info->keys, &options.params));
  return info->create(options, std::move(data));
}

ModelRegistry ModelRegistry::WithBuiltins() {
  ModelRegistry registry;
  RegisterBiasedMf(&registry);
  RegisterBpr(&registry);
  RegisterIals(&registry);
  RegisterItemModels(&registry);
  RegisterMultiTask(&registry);
  return registry;
}

Result<PerUserStats> Model::TrainClippedPerUser(const TrainPlan&, const PerUserClip&,
                                                std::vector<ParamBlock>*) {
  return Status::InvalidArgument("model " + std::string(name()) +
                                 " cannot train each user apart, which dp.unit = \"user\" needs; "
                                 "use model.name = \"mf\" or dp.unit = \"site\"");
}

}  // namespace fedrec
