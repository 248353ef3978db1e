// Aggregation in the clear: each site sends its update (ModelUpdate) and the
// coordinator folds it into the per-row sums in site order, keeping no
// update after folding it unless the strategy needs individual updates.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <optional>

#include "coordinator/aggregator.h"
#include "coordinator/scheme_common.h"

namespace fedrec {
namespace {

class PlainScheme : public CoordinatorScheme {
 public:
  explicit PlainScheme(SchemeContext context) : c_(std::move(context)) {}
  Aggregation kind() const override { return Aggregation::kNone; }

  Status Round(RoundPlan plan, const std::vector<uint32_t>& selected, bool individual,
               RoundMetrics* metrics, AggregateInput* input, RoundMetrics*) override {
    const uint32_t round = plan.round;
    SiteLink& link = *c_.link;
    const bool sharded = !c_.options->shard_ranks.empty();
    if (sharded) {
      if (individual) {
        return Status::InvalidArgument(
            "the strategy needs each site's update, but with shard servers "
            "(cluster.shard_servers) the coordinator receives only sums: use a strategy over "
            "sums, or no shard servers");
      }
      ShardRound announce;
      announce.round = round;
      announce.aggregation = Aggregation::kNone;
      announce.model_version = plan.model_version;
      announce.sites = selected;
      for (const ParamBlock& block : *c_.upload)
        announce.blocks.push_back(ShardBlock{block.name, block.rows, block.cols});
      FEDREC_RETURN_IF_ERROR(AnnounceShards(c_, std::move(announce), &plan));
    }
    FEDREC_RETURN_IF_ERROR(c_.send_plan(&plan, selected));
    UpdateAggregator aggregator(*c_.upload, plan.model_version, round, selected, individual);
    std::vector<uint32_t> reported;
    FEDREC_RETURN_IF_ERROR(link.Collect<ModelUpdate>(
        round, selected,
        [&](uint32_t site, ModelUpdate update) {
          // Sharded: the blocks went to the shard servers; this is the rest.
          Status added = sharded && !update.blocks.empty()
                             ? Status::InvalidArgument(
                                   "sent its update's blocks to the coordinator, expected them "
                                   "at the shard servers")
                             : aggregator.Add(site, std::move(update));
          if (!added.ok()) {
            spdlog::warn("coordinator: {} {}", link.SiteName(site), added.message());
            link.ForgetModel(site);
            if (sharded) aggregator.Fail(site);
            return;
          }
          reported.push_back(site);
        },
        [&](uint32_t site, const std::string& reason) {
          spdlog::warn("coordinator, round {}: {} failed: {}", round, link.SiteName(site), reason);
          aggregator.Fail(site);
          link.ForgetModel(site);  // resend the model next time
        }));
    *input = aggregator.Finish();
    if (sharded) {
      std::sort(reported.begin(), reported.end());
      ShardClose close;
      close.round = round;
      close.sites = reported;
      Result<std::vector<ShardSums>> sums = CloseShards(c_, close);
      if (!sums.ok()) {
        if (sums.status().code() != Status::Code::kAborted) return sums.status();
        metrics->aborted = true;
        metrics->abort_reason = sums.status().message();
        spdlog::warn("coordinator, round {}: aborted, the model is unchanged: {}", round,
                     sums.status().message());
        return Status::Ok();
      }
      if (Status gathered = Gather(*sums, input); !gathered.ok())
        return gathered.WithContext("coordinator, round " + std::to_string(round));
    }
    metrics->train_mse =
        aggregator.train_count()
            ? aggregator.train_squared_error() / static_cast<double>(aggregator.train_count())
            : 0.0;
    return Status::Ok();
  }

  // Lays the shard servers' slices of the sums out in `input`.
  Status Gather(const std::vector<ShardSums>& sums, AggregateInput* input) const {
    const std::vector<ParamBlock>& blocks = *c_.upload;
    const uint32_t shards = static_cast<uint32_t>(sums.size());
    for (uint32_t s = 0; s < shards; ++s) {
      const ShardSums& slice = sums[s];
      size_t weights = 0, values = 0;
      for (const ParamBlock& block : blocks) {
        const Slice rows = ShardSlice(block.rows, s, shards);
        weights += rows.size();
        values += rows.size() * block.cols;
      }
      if (slice.row_weight.size() != weights || slice.weighted_sum.size() != values) {
        return Status::Corruption("shard server " + std::to_string(s) + " sent " +
                                  std::to_string(slice.row_weight.size()) + " row weights and " +
                                  std::to_string(slice.weighted_sum.size()) +
                                  " weighted sums, expected " + std::to_string(weights) + " and " +
                                  std::to_string(values));
      }
      size_t w = 0, v = 0;
      for (size_t b = 0; b < blocks.size(); ++b) {
        const Slice rows = ShardSlice(blocks[b].rows, s, shards);
        const size_t cols = blocks[b].cols;
        std::copy_n(slice.row_weight.begin() + static_cast<ptrdiff_t>(w), rows.size(),
                    input->row_weight[b].begin() + static_cast<ptrdiff_t>(rows.begin));
        std::copy_n(slice.weighted_sum.begin() + static_cast<ptrdiff_t>(v), rows.size() * cols,
                    input->weighted_sum[b].begin() + static_cast<ptrdiff_t>(rows.begin * cols));
        w += rows.size();
        v += rows.size() * cols;
      }
    }
    return Status::Ok();
  }

  Status Evaluate(uint32_t round, uint64_t version, const std::vector<uint32_t>& sites,
                  RoundMetrics* metrics) override {
    SiteLink& link = *c_.link;
    EvalRequest request;
    request.round = round;
    request.model_version = version;
    FEDREC_RETURN_IF_ERROR(c_.send_eval(&request, sites));
    std::vector<std::optional<EvalReport>> reports(link.num_sites());
    FEDREC_RETURN_IF_ERROR(link.Collect<EvalReport>(
        round, sites, [&](uint32_t site, EvalReport report) { reports[site] = std::move(report); },
        [&](uint32_t site, const std::string& reason) {
          spdlog::warn("coordinator, round {}: evaluation at {} failed: {}", round,
                       link.SiteName(site), reason);
          link.ForgetModel(site);
        }));
    for (uint32_t site = 0; site < reports.size(); ++site) {  // fixed summation order
      const std::optional<EvalReport>& report = reports[site];
      if (!report) continue;
      if (Status fits = CheckEvalReport(*report, c_.eval_layout); !fits.ok()) {
        spdlog::warn("coordinator, round {}: evaluation at {} not counted: {}", round,
                     link.SiteName(site), fits.message());
        continue;
      }
      const EvalSums sums = SumsOfReport(*report, c_.eval_tasks);
      MergeSums(sums, metrics);
      ++metrics->sites_evaluated;
      if (c_.options->eval_per_site) metrics->sites.push_back({site, sums});
    }
    metrics->evaluated = true;
    return Status::Ok();
  }

 private:
  SchemeContext c_;
};

}  // namespace

std::unique_ptr<CoordinatorScheme> MakePlainScheme(SchemeContext context) {
  return std::make_unique<PlainScheme>(std::move(context));
}

}  // namespace fedrec
