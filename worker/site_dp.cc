#include "worker/site_dp.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace fedrec {

Status SiteDp::Begin(const Model& model, const RoundPlan& plan, const DpOptions& own) {
  End();
  const auto mode = static_cast<DpMode>(plan.dp_mode);
  const auto unit = static_cast<DpUnit>(plan.dp_unit);
  if (plan.dp_mode > 2 || plan.dp_unit > 1) {
    return Status::InvalidArgument(
        fmt::format("round plan: expected dp_mode 0..2 and dp_unit 0..1, found {} and {}",
                    plan.dp_mode, plan.dp_unit));
  }
  if (mode != own.mode || (mode != DpMode::kNone && unit != own.unit)) {
    return Status::InvalidArgument(fmt::format(
        "round plan: differential privacy mode {}, unit {}, but this site is configured with "
        "dp.mode = {}, dp.unit = {}",
        DpModeName(mode), DpUnitName(unit), DpModeName(own.mode), DpUnitName(own.unit)));
  }
  if (mode == DpMode::kNone) return Status::Ok();
  const bool adaptive = own.target_quantile > 0.0;
  if (!(plan.dp_clip > 0.0 && std::isfinite(plan.dp_clip)) ||
      !(plan.dp_user_fraction > 0.0 && plan.dp_user_fraction <= 1.0) ||
      !std::isfinite(plan.dp_noise_stddev) || !std::isfinite(plan.dp_count_stddev)) {
    return Status::InvalidArgument(fmt::format(
        "round plan: expected a finite dp_clip > 0 and dp_user_fraction in (0, 1], found {} and "
        "{} (noise {}, count noise {})",
        plan.dp_clip, plan.dp_user_fraction, plan.dp_noise_stddev, plan.dp_count_stddev));
  }
  // The site's own floor: its configured multiplier times the plan's clip.
  const double need = UpdateNoiseMultiplier(own) * plan.dp_clip * (1.0 - 1e-9);
  if (plan.dp_noise_stddev < need || (adaptive && plan.dp_count_stddev < own.count_stddev) ||
      plan.dp_user_fraction > own.user_fraction) {
    return Status::InvalidArgument(fmt::format(
        "round plan: differential-privacy noise stddev {} (count {}) and user fraction {}, but "
        "this site requires at least {} = dp.noise_multiplier x clip {} (count {}) and at most "
        "user fraction {}",
        plan.dp_noise_stddev, plan.dp_count_stddev, plan.dp_user_fraction, need, plan.dp_clip,
        adaptive ? own.count_stddev : 0.0, own.user_fraction));
  }
  round_.mode = mode;
  expected_units_ = own.expected_units;
  round_.unit = unit;
  round_.clip = plan.dp_clip;
  round_.noise_stddev = plan.dp_noise_stddev;
  round_.count_stddev = plan.dp_count_stddev;
  round_.user_fraction = plan.dp_user_fraction;
  for (const ParamBlock& shape : model.UploadShapes()) {
    ParamBlock& d = delta_.emplace_back(shape);
    d.data.assign(static_cast<size_t>(shape.rows) * shape.cols, 0.0f);
    ones_.emplace_back(shape.rows, 1u);
  }
  if (unit == DpUnit::kSite) {
    for (const ParamBlock& d : delta_) {
      const ParamBlock* global = FindBlock(model.blocks(), d.name);
      if (global == nullptr || global->data.size() != d.data.size()) {
        return Status::InvalidArgument("dp.unit = \"site\": upload block '" + d.name +
                                       "' is not a global block of model " +
                                       std::string(model.name()));
      }
      anchor_.push_back(*global);
    }
  }
  active_ = true;
  return Status::Ok();
}

Result<LossSums> SiteDp::Train(Model* model, const TrainPlan& plan, uint64_t seed,
                               const std::function<Result<LossSums>(const TrainPlan&)>& train) {
  if (round_.unit == DpUnit::kUser) {
    PerUserClip clip;
    clip.clip = round_.clip;
    clip.user_fraction = round_.user_fraction;
    clip.seed = seed;
    FEDREC_ASSIGN_OR_RETURN(const PerUserStats stats,
                            model->TrainClippedPerUser(plan, clip, &delta_));
    SetCount(stats.users, stats.unclipped);
    return stats.loss;
  }
  FEDREC_ASSIGN_OR_RETURN(const LossSums loss, train(plan));
  std::vector<std::span<const float>> parts;
  for (size_t b = 0; b < delta_.size(); ++b) {
    const ParamBlock* trained = FindBlock(model->blocks(), delta_[b].name);
    for (size_t i = 0; i < delta_[b].data.size(); ++i)
      delta_[b].data[i] = trained->data[i] - anchor_[b].data[i];
    parts.emplace_back(delta_[b].data);
  }
  const double norm = L2Norm(parts);
  const double factor = ClipFactor(norm, round_.clip);
  for (ParamBlock& d : delta_)
    for (float& x : d.data) x = static_cast<float>(x * factor);
  SetCount(1, norm <= round_.clip ? 1.0 : 0.0);
  anchor_.clear();
  return loss;
}

void SiteDp::SetCount(uint32_t units, double unclipped) {
  // The coordinator decodes sum(weight x value) = sum(unclipped - units / 2)
  // (times expected_units with a fixed denominator, whose scaled value keeps
  // within the fixed-point format's clip as the unscaled one would not).
  const double excess = unclipped - 0.5 * units;
  if (expected_units_ > 0.0) {
    units_ = 1;
    count_value_ = static_cast<float>(excess / expected_units_);
  } else {
    units_ = units;
    count_value_ = units == 0 ? 0.0f : static_cast<float>(excess / units);
  }
}

std::vector<ParamBlock> SiteDp::Shapes() const {
  std::vector<ParamBlock> shapes;
  if (!active_) return shapes;
  for (const ParamBlock& d : delta_) shapes.push_back(ShapeOf(d));
  shapes.push_back(DpCountShape());
  return shapes;
}

std::vector<DenseBlockView> SiteDp::Views() const {
  std::vector<DenseBlockView> views;
  if (!active_) return views;
  for (size_t b = 0; b < delta_.size(); ++b) views.push_back({ones_[b], delta_[b].data});
  views.push_back(
      {std::span<const uint32_t>(&units_, 1), std::span<const float>(&count_value_, 1)});
  return views;
}

NoiseShareAdder SiteDp::NoiseShares(uint32_t frac_bits, uint32_t sites, uint64_t seed,
                                    uint32_t round, uint32_t site) const {
  if (!active_ || round_.mode != DpMode::kDistributed) return NoiseShareAdder();
  std::vector<NoiseShareAdder::Block> blocks;
  const double mu = SkellamShareMu(round_.noise_stddev, frac_bits, sites);
  for (const ParamBlock& d : delta_) blocks.push_back({d.rows, d.cols, mu});
  // The count's noise in the units of its value (scaled by a fixed denominator).
  const double count_scale = expected_units_ > 0.0 ? 1.0 / expected_units_ : 1.0;
  blocks.push_back({1, 1, SkellamShareMu(round_.count_stddev * count_scale, frac_bits, sites)});
  return NoiseShareAdder(std::move(blocks), DeriveSeed(seed, round, site, Purpose::kDpNoise));
}

void SiteDp::End() {
  active_ = false;
  round_ = DpRound();
  anchor_.clear();
  delta_.clear();
  ones_.clear();
  units_ = 0;
  count_value_ = 0.0f;
}

}  // namespace fedrec
