#include "coordinator/aggregator.h"

#include <algorithm>
#include <utility>

namespace fedrec {

UpdateAggregator::UpdateAggregator(const std::vector<ParamBlock>& global, uint64_t version,
                                   uint32_t round, std::vector<uint32_t> selected,
                                   bool keep_updates)
    : global_(global),
      version_(version),
      round_(round),
      selected_(std::move(selected)),
      keep_updates_(keep_updates) {
  input_.round = round;
  for (const ParamBlock& b : global_) {
    input_.weighted_sum.emplace_back(static_cast<size_t>(b.rows) * b.cols, 0.0);
    input_.row_weight.emplace_back(b.rows, 0.0);
  }
}

Status UpdateAggregator::Validate(const ModelUpdate& update, uint32_t site) const {
  const std::string where = "site " + std::to_string(site) + ", round " + std::to_string(round_);
  if (update.round != round_) {
    return Status::InvalidArgument(where + ": update is for round " + std::to_string(update.round));
  }
  if (update.model_version != version_) {
    return Status::InvalidArgument(where + ": update trained from model version " +
                                   std::to_string(update.model_version) + ", expected " +
                                   std::to_string(version_));
  }
  for (const BlockUpdate& b : update.blocks) {
    const ParamBlock* block = FindBlock(global_, b.name);
    if (block == nullptr) {
      return Status::InvalidArgument(where + ": update names block '" + b.name +
                                     "', which the global model does not have");
    }
    if (b.cols != block->cols) {
      return Status::InvalidArgument(where + ": block '" + b.name + "' has " +
                                     std::to_string(b.cols) + " columns, expected " +
                                     std::to_string(block->cols));
    }
    if (!b.rows.empty() && b.rows.back() >= block->rows) {
      return Status::InvalidArgument(where + ": block '" + b.name + "' updates row " +
                                     std::to_string(b.rows.back()) + ", the block has " +
                                     std::to_string(block->rows) + " rows");
    }
  }
  return Status::Ok();
}

Status UpdateAggregator::Add(uint32_t site, ModelUpdate update) {
  if (Status valid = Validate(update, site); !valid.ok()) {
    Fail(site);
    return valid;
  }
  pending_.emplace(site, std::move(update));
  Advance(false);
  return Status::Ok();
}

void UpdateAggregator::Fail(uint32_t site) {
  failed_.insert(site);
  Advance(false);
}

void UpdateAggregator::Fold(uint32_t site, const ModelUpdate& update) {
  SiteUpdate* kept = nullptr;
  if (keep_updates_) {
    kept = &input_.updates.emplace_back();
    kept->site = site;
    for (const ParamBlock& block : global_) {
      kept->weight.emplace_back(block.rows, 0.0);
      kept->values.emplace_back(static_cast<size_t>(block.rows) * block.cols, 0.0f);
    }
  }
  for (const BlockUpdate& b : update.blocks) {
    size_t index = 0;
    while (global_[index].name != b.name) ++index;
    if (kept != nullptr) {
      for (size_t k = 0; k < b.rows.size(); ++k) {
        kept->weight[index][b.rows[k]] = b.weights[k];
        std::copy_n(b.values.begin() + static_cast<ptrdiff_t>(k * b.cols), b.cols,
                    kept->values[index].begin() + static_cast<ptrdiff_t>(b.rows[k]) * b.cols);
      }
    }
    auto& sum = input_.weighted_sum[index];
    auto& weight = input_.row_weight[index];
    for (size_t k = 0; k < b.rows.size(); ++k) {
      const double w = b.weights[k];
      weight[b.rows[k]] += w;
      double* dst = sum.data() + static_cast<size_t>(b.rows[k]) * b.cols;
      const float* src = b.values.data() + k * b.cols;
      for (uint32_t c = 0; c < b.cols; ++c) dst[c] += w * static_cast<double>(src[c]);
    }
  }
  train_squared_ += update.train_squared_error;
  train_count_ += update.train_count;
  ++input_.sites;
}

void UpdateAggregator::Advance(bool finishing) {
  while (next_ < selected_.size()) {
    const uint32_t site = selected_[next_];
    if (auto it = pending_.find(site); it != pending_.end()) {
      Fold(site, it->second);
      pending_.erase(it);
    } else if (!failed_.contains(site) && !finishing) {
      return;
    }
    ++next_;
  }
}

AggregateInput UpdateAggregator::Finish() {
  Advance(true);
  input_.failures = failures();
  return std::move(input_);
}

}  // namespace fedrec
