#include "worker/site_control.h"

#include <algorithm>
#include <sstream>

#include "base/little_endian.h"

namespace fedrec {

Status SiteControl::Begin(const std::vector<ParamBlock>& server, const Model& model) {
  End();
  const std::vector<ParamBlock> shapes = model.UploadShapes();
  const std::vector<DenseBlockView> views = model.Upload();
  std::vector<size_t> global;  // upload indices of the kGlobal blocks
  for (size_t b = 0; b < shapes.size(); ++b)
    if (shapes[b].scope == Scope::kGlobal) global.push_back(b);
  if (server.size() != global.size()) {
    return Status::InvalidArgument("control variates: expected " + std::to_string(global.size()) +
                                   " blocks (one per global block of model " +
                                   std::string(model.name()) + "), found " +
                                   std::to_string(server.size()));
  }
  const bool first = blocks_.empty();
  for (size_t k = 0; k < global.size(); ++k) {
    const ParamBlock& shape = shapes[global[k]];
    const ParamBlock& c = server[k];
    if (c.name != shape.name || c.rows != shape.rows || c.cols != shape.cols ||
        c.data.size() != static_cast<size_t>(c.rows) * c.cols) {
      return Status::InvalidArgument(
          "control variates: expected block '" + shape.name + "' " + std::to_string(shape.rows) +
          "x" + std::to_string(shape.cols) + ", found '" + c.name + "' " + std::to_string(c.rows) +
          "x" + std::to_string(c.cols) + " with " + std::to_string(c.data.size()) + " values");
    }
    if (!first && (blocks_[k].name != shape.name || blocks_[k].rows != shape.rows ||
                   blocks_[k].cols != shape.cols)) {
      return Status::InvalidArgument("control variates: block '" + shape.name +
                                     "' differs from the site's own c_i '" + blocks_[k].name + "'");
    }
  }
  if (first) blocks_.resize(global.size());
  server_ = server;
  drift_.clear();
  for (size_t k = 0; k < global.size(); ++k) {
    Block& block = blocks_[k];
    const ParamBlock& shape = shapes[global[k]];
    const DenseBlockView& view = views[global[k]];
    block.name = shape.name;
    block.rows = shape.rows;
    block.cols = shape.cols;
    block.upload_index = global[k];
    block.trained.clear();
    for (uint32_t r = 0; r < shape.rows; ++r)
      if (view.weights[r] > 0) block.trained.push_back(r);
    if (block.local.size() != block.trained.size() * block.cols)
      block.local.assign(block.trained.size() * block.cols, 0.0f);
    block.anchor.clear();
    ParamBlock& drift = drift_.emplace_back(shape.name, Scope::kGlobal, shape.rows, shape.cols);
    const ParamBlock& c = server_[k];
    for (size_t i = 0; i < block.trained.size(); ++i) {
      const uint32_t r = block.trained[i];
      const float* x = view.values.data() + static_cast<size_t>(r) * block.cols;
      block.anchor.insert(block.anchor.end(), x, x + block.cols);
      for (uint32_t j = 0; j < block.cols; ++j)
        drift.Row(r)[j] = c.Row(r)[j] - block.local[i * block.cols + j];
    }
  }
  active_ = true;
  return Status::Ok();
}

void SiteControl::Finish(const Model& model, double lr_sum) {
  if (!active_) return;
  const std::vector<DenseBlockView> views = model.Upload();
  for (size_t k = 0; k < blocks_.size(); ++k) {
    Block& block = blocks_[k];
    const DenseBlockView& view = views[block.upload_index];
    const ParamBlock& c = server_[k];
    block.delta.assign(static_cast<size_t>(block.rows) * block.cols, 0.0f);
    block.weights.assign(block.rows, 0);
    for (size_t i = 0; i < block.trained.size(); ++i) {
      const uint32_t r = block.trained[i];
      const double steps = static_cast<double>(view.weights[r]) * lr_sum;
      const float* y = view.values.data() + static_cast<size_t>(r) * block.cols;
      float* delta = block.delta.data() + static_cast<size_t>(r) * block.cols;
      for (uint32_t j = 0; j < block.cols; ++j) {
        const double x = block.anchor[i * block.cols + j];
        const double dc = steps > 0.0 ? (x - y[j]) / steps - c.Row(r)[j] : 0.0;
        delta[j] = static_cast<float>(dc);
        block.local[i * block.cols + j] += static_cast<float>(dc);
      }
      block.weights[r] = 1;
    }
  }
}

std::vector<ParamBlock> SiteControl::Shapes() const {
  std::vector<ParamBlock> shapes;
  if (!active_) return shapes;
  for (const Block& block : blocks_) {
    ParamBlock& shape = shapes.emplace_back();
    shape.name = block.name + ".control";
    shape.scope = Scope::kGlobal;
    shape.rows = block.rows;
    shape.cols = block.cols;
  }
  return shapes;
}

std::vector<DenseBlockView> SiteControl::Views() const {
  std::vector<DenseBlockView> views;
  if (!active_) return views;
  for (const Block& block : blocks_) views.push_back(DenseBlockView{block.weights, block.delta});
  return views;
}

void SiteControl::End() {
  active_ = false;
  server_.clear();
  drift_.clear();
  for (Block& block : blocks_) {
    block.anchor.clear();
    block.delta = {};
    block.weights = {};
  }
}

// Format: "control <blocks>\n", then per block "<name> <rows> <cols>
// <floats>\n" and its c_i (compact over the rows it trains) as little-endian
// floats, then "\n".
std::string SiteControl::Save() const {
  if (blocks_.empty()) return {};
  std::string out = "control " + std::to_string(blocks_.size()) + "\n";
  std::vector<uint8_t> bytes;
  for (const Block& block : blocks_) {
    out += block.name + " " + std::to_string(block.rows) + " " + std::to_string(block.cols) + " " +
           std::to_string(block.local.size()) + "\n";
    bytes.clear();
    AppendFloatsLe(&bytes, block.local.data(), block.local.size());
    out.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    out += '\n';
  }
  return out;
}

Status SiteControl::Load(const std::string& bytes, const std::string& where) {
  std::istringstream in(bytes);
  std::string word;
  size_t count = 0;
  if (!(in >> word >> count) || word != "control" || in.get() != '\n' || count > 4096)
    return Status::Corruption(where +
                              ": expected 'control <blocks>' at the start of the site's "
                              "control variates");
  std::vector<Block> blocks(count);
  for (size_t k = 0; k < count; ++k) {
    Block& block = blocks[k];
    size_t floats = 0;
    if (!(in >> block.name >> block.rows >> block.cols >> floats) || in.get() != '\n' ||
        floats > bytes.size() / sizeof(float) || (block.cols > 0 && floats % block.cols != 0) ||
        floats > static_cast<size_t>(block.rows) * block.cols) {
      return Status::Corruption(where + ": control variate block " + std::to_string(k) +
                                " has a bad header (expected '<name> <rows> <cols> <floats>' with "
                                "at most rows x cols floats)");
    }
    std::string raw(floats * sizeof(float), '\0');
    in.read(raw.data(), static_cast<std::streamsize>(raw.size()));
    if (in.gcount() != static_cast<std::streamsize>(raw.size()) || in.get() != '\n')
      return Status::Corruption(where + ": control variate block " + block.name + " is truncated");
    block.local.resize(floats);
    GetFloatsLe(reinterpret_cast<const uint8_t*>(raw.data()), floats, block.local.data());
  }
  if (in.peek() != std::char_traits<char>::eof())
    return Status::Corruption(where + ": bytes after the last control variate block");
  End();
  blocks_ = std::move(blocks);
  return Status::Ok();
}

}  // namespace fedrec
