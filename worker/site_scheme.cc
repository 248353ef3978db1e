// What the sites' parts of the aggregation schemes share, and the scheme in
// the clear (a ModelUpdate, sliced by rows when there are shard servers).
#include "worker/site_scheme.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>

#include "worker/worker.h"

namespace fedrec {

std::vector<BlockUpdate> CollectUpdate(const std::vector<ParamBlock>& shapes,
                                       const std::vector<DenseBlockView>& views) {
  std::vector<BlockUpdate> blocks;
  for (size_t b = 0; b < shapes.size(); ++b) {
    const ParamBlock& shape = shapes[b];
    const DenseBlockView& view = views[b];
    BlockUpdate update;
    update.name = shape.name;
    update.cols = shape.cols;
    for (uint32_t row = 0; row < shape.rows; ++row) {
      if (view.weights[row] == 0) continue;
      const float* values = view.values.data() + static_cast<size_t>(row) * shape.cols;
      update.rows.push_back(row);
      update.weights.push_back(static_cast<float>(view.weights[row]));
      update.values.insert(update.values.end(), values, values + shape.cols);
    }
    blocks.push_back(std::move(update));
  }
  return blocks;
}

Status SiteScheme::OnShardMessage(uint32_t shard, const FrameView& frame) {
  spdlog::warn(
      "dropped {} of round {} from shard server {}: aggregation {} takes nothing from "
      "shard servers",
      MessageTypeName(frame.header.type), frame.header.round, shard, AggregationName(kind()));
  return Status::Ok();
}

std::vector<BlockUpdate> SliceRows(const std::vector<ParamBlock>& shapes,
                                   const std::vector<BlockUpdate>& blocks, uint32_t shard,
                                   uint32_t shards) {
  std::vector<BlockUpdate> out;
  for (size_t b = 0; b < blocks.size(); ++b) {
    const BlockUpdate& block = blocks[b];
    const Slice rows = ShardSlice(shapes[b].rows, shard, shards);
    BlockUpdate& slice = out.emplace_back();
    slice.name = block.name;
    slice.cols = block.cols;
    const auto first = std::lower_bound(block.rows.begin(), block.rows.end(), rows.begin);
    const auto last = std::lower_bound(first, block.rows.end(), rows.end);
    const size_t from = static_cast<size_t>(first - block.rows.begin());
    const size_t to = static_cast<size_t>(last - block.rows.begin());
    for (size_t k = from; k < to; ++k)
      slice.rows.push_back(block.rows[k] - static_cast<uint32_t>(rows.begin));
    slice.weights.assign(block.weights.begin() + static_cast<ptrdiff_t>(from),
                         block.weights.begin() + static_cast<ptrdiff_t>(to));
    slice.values.assign(block.values.begin() + static_cast<ptrdiff_t>(from * block.cols),
                        block.values.begin() + static_cast<ptrdiff_t>(to * block.cols));
  }
  return out;
}

Status CheckFinite(const std::vector<ParamBlock>& shapes,
                   const std::vector<DenseBlockView>& views) {
  for (size_t b = 0; b < shapes.size(); ++b) {
    const std::span<const float> values = views[b].values;
    for (size_t i = 0; i < values.size(); ++i) {
      if (std::isfinite(values[i])) continue;
      const uint32_t cols = std::max<uint32_t>(shapes[b].cols, 1);
      return Status::InvalidArgument(
          "refusing to send an update holding " + std::to_string(values[i]) + " in block '" +
          shapes[b].name + "', row " + std::to_string(i / cols) + ", column " +
          std::to_string(i % cols) +
          ": expected finite values (training diverged; lower the learning rate)");
    }
  }
  return Status::Ok();
}

namespace {

// In the clear: the update to the coordinator, or each shard server its rows
// and the coordinator the rest (the loss sums, no blocks).
class PlainSite : public SiteScheme {
 public:
  explicit PlainSite(SiteContext* context) : c_(*context) {}
  Aggregation kind() const override { return Aggregation::kNone; }

  Status OnPlan(RoundPlan plan, std::vector<uint64_t>) override {
    Result<LossSums> trained = c_.Train(plan);
    if (!trained.ok()) return c_.SendError(plan.round, trained.status().message());
    const LossSums loss = *trained;
    ModelUpdate update;
    update.round = plan.round;
    update.model_version = plan.model_version;
    update.num_examples = c_.model().train().size();
    update.train_squared_error = loss.sum;
    update.train_count = loss.count;
    const std::vector<ParamBlock> shapes = c_.UploadShapes();
    update.blocks = CollectUpdate(shapes, c_.UploadViews());
    c_.AfterAnswer();
    if (!plan.shard_ranks.empty()) {
      std::vector<BlockUpdate> blocks = std::move(update.blocks);
      update.blocks.clear();
      const uint32_t shards = static_cast<uint32_t>(plan.shard_ranks.size());
      for (uint32_t s = 0; s < shards; ++s) {
        ModelUpdate slice = update;
        slice.blocks = SliceRows(shapes, blocks, s, shards);
        FEDREC_RETURN_IF_ERROR(c_.Send(slice, plan.round, plan.shard_ranks[s]));
      }
    }
    return c_.Send(update, plan.round);
  }

  Status OnEvaluation(const EvalRequest& request, const EvalReport& report) override {
    return c_.Send(report, request.round);
  }

  bool Claims(MessageType, uint32_t) const override { return false; }
  Status OnMessage(const FrameView& frame) override {
    return c_.SendError(frame.header.round,
                        std::string("unexpected ") + MessageTypeName(frame.header.type));
  }

 private:
  SiteContext& c_;
};

}  // namespace

std::unique_ptr<SiteScheme> MakePlainSite(SiteContext* context) {
  return std::make_unique<PlainSite>(context);
}

}  // namespace fedrec
