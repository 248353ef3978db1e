// Aggregation in the clear: each site sends its update (ModelUpdate) and the
// coordinator folds it into the per-row sums in site order, keeping no
// update after folding it unless the strategy needs individual updates.
#include <spdlog/spdlog.h>

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
    FEDREC_RETURN_IF_ERROR(c_.send_plan(&plan, selected));
    UpdateAggregator aggregator(*c_.upload, plan.model_version, round, selected, individual);
    FEDREC_RETURN_IF_ERROR(link.Collect<ModelUpdate>(
        round, selected,
        [&](uint32_t site, ModelUpdate update) {
          if (Status added = aggregator.Add(site, std::move(update)); !added.ok()) {
            spdlog::warn("coordinator: {} {}", link.SiteName(site), added.message());
            link.ForgetModel(site);
          }
        },
        [&](uint32_t site, const std::string& reason) {
          spdlog::warn("coordinator, round {}: {} failed: {}", round, link.SiteName(site), reason);
          aggregator.Fail(site);
          link.ForgetModel(site);  // resend the model next time
        }));
    *input = aggregator.Finish();
    metrics->train_mse =
        aggregator.train_count()
            ? aggregator.train_squared_error() / static_cast<double>(aggregator.train_count())
            : 0.0;
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
    for (const auto& report : reports) {  // site order: fixed summation order
      if (report) MergeReport(*report, metrics);
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
