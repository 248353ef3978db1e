#include "coordinator/coordinator_dp.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <sstream>

#include "base/random.h"

namespace fedrec {

CoordinatorDp::CoordinatorDp(const DpOptions& options, uint64_t seed, double site_fraction,
                             double dropout_rate)
    : options_(options),
      seed_(seed),
      site_fraction_(site_fraction),
      clip_(options.clip, options.target_quantile, options.clip_lr),
      dropout_rate_(dropout_rate) {}

double CoordinatorDp::SamplingRate() const {
  const double q = std::min(1.0, site_fraction_);
  return options_.unit == DpUnit::kUser ? q * options_.user_fraction : q;
}

DpRound CoordinatorDp::Round() const {
  DpRound r;
  r.mode = options_.mode;
  r.unit = options_.unit;
  r.clip = clip_.clip();
  r.noise_stddev = UpdateNoiseMultiplier(options_) * r.clip;
  r.count_stddev = clip_.adaptive() ? options_.count_stddev : 0.0;
  r.user_fraction = options_.unit == DpUnit::kUser ? options_.user_fraction : 1.0;
  return r;
}

void CoordinatorDp::FillPlan(RoundPlan* plan) const {
  const DpRound r = Round();
  plan->dp_mode = static_cast<uint32_t>(r.mode);
  plan->dp_unit = static_cast<uint32_t>(r.unit);
  plan->dp_clip = r.clip;
  plan->dp_noise_stddev = r.noise_stddev;
  plan->dp_count_stddev = r.count_stddev;
  plan->dp_user_fraction = r.user_fraction;
}

bool CoordinatorDp::BudgetExhausted(double* next) const {
  if (options_.target_epsilon <= 0.0) return false;
  const double eps =
      accountant_.EpsilonAfter(SamplingRate(), options_.noise_multiplier, options_.delta).epsilon;
  if (next != nullptr) *next = eps;
  return eps > options_.target_epsilon;
}

Status CoordinatorDp::Privatize(uint32_t round, uint32_t selected,
                                const std::vector<ParamBlock>& global, AggregateInput* sums,
                                DpRoundMetrics* metrics) {
  const std::string where = "coordinator, round " + std::to_string(round) + ": ";
  if (sums->weighted_sum.size() != global.size() + 1 ||
      sums->row_weight.size() != global.size() + 1 || sums->row_weight.back().size() != 1) {
    return Status::Internal(where + fmt::format("private sums: expected {} blocks and then "
                                                "dp.count, found {}",
                                                global.size(), sums->weighted_sum.size()));
  }
  const DpRound r = Round();
  const bool fixed = options_.expected_units > 0.0;
  // Sites scale their count by 1 / expected_units under a fixed denominator.
  double count = sums->weighted_sum.back()[0] * (fixed ? options_.expected_units : 1.0);
  const double units = sums->row_weight.back()[0];
  sums->weighted_sum.pop_back();
  sums->row_weight.pop_back();
  Rng noise(seed_, round, 0, Purpose::kDpNoise);
  const bool central = options_.mode == DpMode::kCentral;
  if (central && r.count_stddev > 0.0) count += r.count_stddev * noise.Normal();
  metrics->on = true;
  metrics->clip = r.clip;
  metrics->noise_stddev = r.noise_stddev;
  const double denominator = fixed ? options_.expected_units : units;
  metrics->units_known = !fixed;
  metrics->units = fixed ? 0 : static_cast<uint64_t>(std::llround(units));
  // The noise multiplier the round is charged at: the configured one, less
  // when sites beyond the threat model's dropouts took their distributed
  // shares with them (every noise term scales alike, the count's too).
  double z = options_.noise_multiplier;
  if (!central) {
    const uint32_t share_sites = DpShareSites(selected, dropout_rate_);
    metrics->noise_stddev = DistributedNoiseStddev(r.noise_stddev, sums->sites, share_sites);
    z *= std::min(1.0, DistributedNoiseStddev(1.0, sums->sites, share_sites));
  }
  // Every sampled unit was sampled: the round is spent whether or not it
  // changes the model.
  accountant_.Step(SamplingRate(), z);
  const EpsilonAtOrder spent = accountant_.Epsilon(options_.delta);
  metrics->epsilon = spent.epsilon;
  metrics->order = spent.order;
  metrics->delta = options_.delta;
  if (fixed ? sums->sites == 0 : !(units > 0.0))
    return Status::Aborted("no unit (site or user) contributed to the round");
  for (size_t b = 0; b < global.size(); ++b) {
    std::vector<double>& ws = sums->weighted_sum[b];
    std::vector<double>& rw = sums->row_weight[b];
    if (ws.size() != global[b].data.size() || rw.size() != global[b].rows) {
      return Status::Internal(where + "private sums of block '" + global[b].name +
                              "' do not match the global block's shape");
    }
    for (size_t i = 0; i < ws.size(); ++i) {
      double value = ws[i];
      if (central) value += r.noise_stddev * noise.Normal();
      ws[i] = denominator * global[b].data[i] + value;
    }
    for (size_t row = 0; row < rw.size(); ++row) rw[row] = denominator;
  }
  metrics->unclipped_share = count / denominator + 0.5;
  clip_.Update(metrics->unclipped_share);
  return Status::Ok();
}

std::string CoordinatorDp::SaveState() const {
  std::ostringstream out;
  out.precision(17);
  out << "dp v1 clip " << clip_.clip() << " | " << accountant_.SaveState();
  return out.str();
}

Status CoordinatorDp::LoadState(const std::string& state) {
  const size_t bar = state.find(" | ");
  std::istringstream head(state.substr(0, bar));
  std::string magic, version, clip_word;
  double clip = 0.0;
  head >> magic >> version >> clip_word >> clip;
  if (bar == std::string::npos || !head || magic != "dp" || version != "v1" ||
      clip_word != "clip" || !(clip > 0.0) || !std::isfinite(clip)) {
    return Status::InvalidArgument(
        "differential-privacy state: expected \"dp v1 clip <norm > 0> | <accountant state>\", "
        "found \"" +
        state.substr(0, 80) + "\"");
  }
  RdpAccountant accountant = accountant_;
  FEDREC_RETURN_IF_ERROR(accountant.LoadState(state.substr(bar + 3)));
  accountant_ = std::move(accountant);
  clip_.set_clip(clip);
  return Status::Ok();
}

}  // namespace fedrec
