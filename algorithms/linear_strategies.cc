// The linear strategies: each needs only the per-row sums of the round, so
// each works under every secure-aggregation scheme.
//
// Per row r of a global block, with x the current value, avg_r the sites'
// weighted average of their trained values and n_r the row's total weight,
// and Delta = avg_r - x (the sites' average step, the negative of the
// "pseudo-gradient"):
//   fedavg      x + eta Delta                         (McMahan et al., 2017)
//   fedprox     as fedavg; sites add (mu/2)||w - x||^2 (Li et al., MLSys 2020)
//   fedavgm     m = beta m + Delta; x + eta m          (Hsu et al., 2019)
// (eta: federation.server_lr for the first two, strategy.<name>.eta for
// the ones with server optimizer state)
//   fedadagrad  m = b1 m + (1-b1) Delta; v = v + Delta^2
//   fedadam     m as above; v = b2 v + (1-b2) Delta^2
//   fedyogi     m as above; v = v - (1-b2) Delta^2 sign(v - Delta^2)
//               all three: x + eta m / (sqrt(v) + tau) (Reddi et al., ICLR 2021)
//   scaffold    x + eta Delta, and the server control variate of each row
//               c_r += (|S| / N) * mean of the sites' changes of c_i,r over
//               the sites that trained it (Karimireddy et al., ICML 2020,
//               option II; sites correct every step by c - c_i)
//   fednova     x + eta tau_r Delta', with Delta' the sites' average of
//               their normalized steps (y_i - x) / tau_i,r and tau_r the
//               mean local steps on the row of the sites that trained it
//               (Wang et al., NeurIPS 2020; tau_i,r = w_i,r epsilon_i, the
//               row's visits times the site's epochs at its starting rate)
// Rows no site trained (n_r = 0) keep their value and their optimizer state:
// the per-row ("lazy") form of each rule, since item rows are trained by only
// the sites that hold their items. Blocks of scope kGlobalAverage take avg_r.
#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "algorithms/strategy.h"

namespace fedrec {
namespace {

// A per-row, per-block server state: one vector per global block, sized on
// the first round, saved as "<prefix>.<block>".
class BlockState {
 public:
  explicit BlockState(std::string prefix, double initial = 0.0)
      : prefix_(std::move(prefix)), initial_(initial) {}

  void Size(const std::vector<ParamBlock>& global) {
    if (values_.size() == global.size()) return;
    values_.clear();
    names_.clear();
    for (const ParamBlock& b : global) {
      values_.emplace_back(b.data.size(), initial_);
      names_.push_back(b.name);
    }
  }
  double* Row(size_t block, uint32_t row, uint32_t cols) {
    return values_[block].data() + static_cast<size_t>(row) * cols;
  }
  void Save(StrategyState* state) const {
    for (size_t b = 0; b < values_.size(); ++b)
      state->vectors[prefix_ + "." + names_[b]] = values_[b];
  }
  // Takes this state's vectors out of `state` (what remains is not ours).
  void Load(StrategyState* state) {
    values_.clear();
    names_.clear();
    const std::string start = prefix_ + ".";
    for (auto it = state->vectors.begin(); it != state->vectors.end();) {
      if (!it->first.starts_with(start)) {
        ++it;
        continue;
      }
      names_.push_back(it->first.substr(start.size()));
      values_.push_back(std::move(it->second));
      it = state->vectors.erase(it);
    }
  }
  // After Load: the blocks must be the model's. A checkpoint keeps them by
  // name (in name order): they are put back in the model's order first.
  Status Align(std::string_view strategy, const std::vector<ParamBlock>& global) {
    if (values_.empty()) return Status::Ok();
    std::vector<size_t> from;
    for (const ParamBlock& b : global) {
      const auto at = std::find(names_.begin(), names_.end(), b.name);
      if (at == names_.end()) break;
      from.push_back(static_cast<size_t>(at - names_.begin()));
    }
    if (from.size() == global.size() && values_.size() == global.size()) {
      std::vector<std::vector<double>> values;
      for (size_t b : from) values.push_back(std::move(values_[b]));
      values_ = std::move(values);
      for (size_t b = 0; b < global.size(); ++b) names_[b] = global[b].name;
    }
    return Check(strategy, global);
  }

 private:
  // The blocks, aligned, have the model's names and sizes.
  Status Check(std::string_view strategy, const std::vector<ParamBlock>& global) const {
    for (size_t b = 0; b < global.size() && b < values_.size(); ++b) {
      if (names_[b] == global[b].name && values_[b].size() == global[b].data.size()) continue;
      return Status::InvalidArgument(std::string(strategy) + ": restored state '" + prefix_ + "." +
                                     names_[b] + "' of " + std::to_string(values_[b].size()) +
                                     " values does not match block '" + global[b].name + "' of " +
                                     std::to_string(global[b].data.size()));
    }
    if (values_.size() != global.size()) {
      return Status::InvalidArgument(std::string(strategy) + ": restored state has " +
                                     std::to_string(values_.size()) + " '" + prefix_ +
                                     "' blocks, the model has " + std::to_string(global.size()));
    }
    return Status::Ok();
  }

  std::string prefix_;
  double initial_;
  std::vector<std::string> names_;  // block names, model order
  std::vector<std::vector<double>> values_;
};

Status RefuseLeftovers(std::string_view strategy, const StrategyState& rest) {
  if (rest.vectors.empty() && rest.scalars.empty()) return Status::Ok();
  const std::string what = rest.vectors.empty() ? "scalar '" + rest.scalars.begin()->first + "'"
                                                : "vector '" + rest.vectors.begin()->first + "'";
  return Status::InvalidArgument(std::string(strategy) + ": unknown state " + what);
}

// x + eta Delta: fedavg and fedprox.
class StepToAverage : public Strategy {
 public:
  enum class Kind { kFedAvg, kFedProx };
  StepToAverage(const StrategyOptions& options, Kind kind) : Strategy(options), kind_(kind) {
    if (kind_ == Kind::kFedProx)
      options_.instructions.proximal_mu = static_cast<float>(options_.Param("mu"));
  }
  std::string_view name() const override { return kind_ == Kind::kFedAvg ? "fedavg" : "fedprox"; }
  Status Aggregate(const AggregateInput& input, std::vector<ParamBlock>* global) override {
    FEDREC_RETURN_IF_ERROR(CheckAggregateShape(name(), input, *global));
    const double eta = options_.server_lr;
    ForEachAveragedRow(input, global, [&](size_t b, uint32_t r, std::span<const double> avg) {
      ParamBlock& block = (*global)[b];
      float* row = block.Row(r);
      for (uint32_t c = 0; c < block.cols; ++c)
        row[c] = eta == 1.0 ? static_cast<float>(avg[c])
                            : static_cast<float>(row[c] + eta * (avg[c] - row[c]));
    });
    return Status::Ok();
  }

 private:
  Kind kind_;
};

class FedAvgM : public Strategy {
 public:
  explicit FedAvgM(const StrategyOptions& options)
      : Strategy(options),
        momentum_("momentum"),
        beta_(options.Param("momentum")),
        eta_(options.Param("eta")) {}
  std::string_view name() const override { return "fedavgm"; }
  Status Aggregate(const AggregateInput& input, std::vector<ParamBlock>* global) override {
    FEDREC_RETURN_IF_ERROR(CheckAggregateShape(name(), input, *global));
    FEDREC_RETURN_IF_ERROR(momentum_.Align(name(), *global));
    momentum_.Size(*global);
    const double eta = eta_;
    ForEachAveragedRow(input, global, [&](size_t b, uint32_t r, std::span<const double> avg) {
      ParamBlock& block = (*global)[b];
      float* row = block.Row(r);
      double* m = momentum_.Row(b, r, block.cols);
      for (uint32_t c = 0; c < block.cols; ++c) {
        m[c] = beta_ * m[c] + (avg[c] - row[c]);
        row[c] = static_cast<float>(row[c] + eta * m[c]);
      }
    });
    return Status::Ok();
  }
  StrategyState State() const override {
    StrategyState state;
    momentum_.Save(&state);
    return state;
  }
  Status Restore(const StrategyState& state) override {
    StrategyState rest = state;
    momentum_.Load(&rest);
    return RefuseLeftovers(name(), rest);
  }

 private:
  BlockState momentum_;
  double beta_, eta_;
};

// FedOpt (Reddi et al., Algorithm 2) with the three second-moment rules.
class FedOpt : public Strategy {
 public:
  enum class Rule { kAdagrad, kAdam, kYogi };
  FedOpt(const StrategyOptions& options, Rule rule)
      : Strategy(options),
        rule_(rule),
        beta1_(options.Param("beta1")),
        beta2_(options.Param("beta2")),
        tau_(options.Param("tau")),
        eta_(options.Param("eta")),
        m_("m"),
        v_("v", tau_ * tau_) {}
  std::string_view name() const override {
    return rule_ == Rule::kAdagrad ? "fedadagrad" : rule_ == Rule::kAdam ? "fedadam" : "fedyogi";
  }
  Status Aggregate(const AggregateInput& input, std::vector<ParamBlock>* global) override {
    FEDREC_RETURN_IF_ERROR(CheckAggregateShape(name(), input, *global));
    FEDREC_RETURN_IF_ERROR(m_.Align(name(), *global));
    FEDREC_RETURN_IF_ERROR(v_.Align(name(), *global));
    m_.Size(*global);
    v_.Size(*global);
    const double eta = eta_;
    ForEachAveragedRow(input, global, [&](size_t b, uint32_t r, std::span<const double> avg) {
      ParamBlock& block = (*global)[b];
      float* row = block.Row(r);
      double* m = m_.Row(b, r, block.cols);
      double* v = v_.Row(b, r, block.cols);
      for (uint32_t c = 0; c < block.cols; ++c) {
        const double delta = avg[c] - row[c];
        const double d2 = delta * delta;
        m[c] = beta1_ * m[c] + (1.0 - beta1_) * delta;
        switch (rule_) {
          case Rule::kAdagrad:
            v[c] += d2;
            break;
          case Rule::kAdam:
            v[c] = beta2_ * v[c] + (1.0 - beta2_) * d2;
            break;
          case Rule::kYogi:
            v[c] -= (1.0 - beta2_) * d2 * (v[c] > d2 ? 1.0 : v[c] < d2 ? -1.0 : 0.0);
            break;
        }
        row[c] = static_cast<float>(row[c] + eta * m[c] / (std::sqrt(v[c]) + tau_));
      }
    });
    return Status::Ok();
  }
  StrategyState State() const override {
    StrategyState state;
    m_.Save(&state);
    v_.Save(&state);
    return state;
  }
  Status Restore(const StrategyState& state) override {
    StrategyState rest = state;
    m_.Load(&rest);
    v_.Load(&rest);
    return RefuseLeftovers(name(), rest);
  }

 private:
  Rule rule_;
  double beta1_, beta2_, tau_, eta_;
  BlockState m_, v_;
};

// SCAFFOLD: FedAvg's step on the model, and the server control variates c,
// moved by the sites' changes of their own c_i (sums: secure aggregation
// suffices). The paper's c += (1/N) sum_{i in S} dc_i, per row r: N_r, the
// sites holding the row, is estimated from n_r, the sites of the round that
// trained it (unit weights), as n_r N / |S|.
class Scaffold : public Strategy {
 public:
  explicit Scaffold(const StrategyOptions& options) : Strategy(options) {}
  std::string_view name() const override { return "scaffold"; }
  bool UsesControlVariates() const override { return true; }

  const std::vector<ParamBlock>* ControlVariates(const std::vector<ParamBlock>& upload) override {
    if (control_.empty()) {
      for (const ParamBlock& b : upload) {
        if (b.scope == Scope::kGlobal)
          control_.emplace_back(b.name, Scope::kGlobal, b.rows, b.cols);
      }
      AdoptRestored();
    }
    return &control_;
  }

  RoundConfig ConfigureRound(const RoundContext& context) override {
    num_sites_ = context.num_sites;
    return Strategy::ConfigureRound(context);
  }

  Status Aggregate(const AggregateInput& input, std::vector<ParamBlock>* global) override {
    ControlVariates(*global);
    FEDREC_RETURN_IF_ERROR(restore_error_);
    FEDREC_RETURN_IF_ERROR(CheckAggregateShape(name(), input, *global, ControlShapes(*global)));
    const double eta = options_.server_lr;
    ForEachAveragedRow(input, global, [&](size_t b, uint32_t r, std::span<const double> avg) {
      float* row = (*global)[b].Row(r);
      for (uint32_t c = 0; c < (*global)[b].cols; ++c)
        row[c] = static_cast<float>(row[c] + eta * (avg[c] - row[c]));
    });
    const double share =
        num_sites_ > 0 ? std::min(1.0, static_cast<double>(input.sites) / num_sites_) : 1.0;
    for (size_t k = 0; k < control_.size(); ++k) {
      ParamBlock& c = control_[k];
      const std::vector<double>& sum = input.weighted_sum[global->size() + k];
      const std::vector<double>& count = input.row_weight[global->size() + k];
      for (uint32_t r = 0; r < c.rows; ++r) {
        if (!(count[r] > 0.0)) continue;
        float* row = c.Row(r);
        const double* s = sum.data() + static_cast<size_t>(r) * c.cols;
        for (uint32_t j = 0; j < c.cols; ++j)
          row[j] = static_cast<float>(row[j] + share * s[j] / count[r]);
      }
    }
    return Status::Ok();
  }

  StrategyState State() const override {
    StrategyState state;
    for (const ParamBlock& c : control_)
      state.vectors["control." + c.name] = std::vector<double>(c.data.begin(), c.data.end());
    state.scalars["num_sites"] = num_sites_;
    return state;
  }
  Status Restore(const StrategyState& state) override {
    StrategyState rest = state;
    // Restored blocks are kept by name; their shapes are checked at the next step.
    std::vector<ParamBlock> control;
    for (auto it = rest.vectors.begin(); it != rest.vectors.end();) {
      if (!it->first.starts_with("control.")) {
        ++it;
        continue;
      }
      ParamBlock& c = control.emplace_back();
      c.name = it->first.substr(8);
      c.scope = Scope::kGlobal;
      c.data.assign(it->second.begin(), it->second.end());
      it = rest.vectors.erase(it);
    }
    if (auto n = rest.scalars.find("num_sites"); n != rest.scalars.end()) {
      num_sites_ = static_cast<uint32_t>(n->second);
      rest.scalars.erase(n);
    }
    FEDREC_RETURN_IF_ERROR(RefuseLeftovers(name(), rest));
    restored_ = std::move(control);
    control_.clear();
    return Status::Ok();
  }

 private:
  // Restored control variates take the place of the zeros they match by
  // name and size; any other restored state is an error at the next step.
  void AdoptRestored() {
    for (ParamBlock& c : control_) {
      auto it = std::find_if(restored_.begin(), restored_.end(),
                             [&c](const ParamBlock& r) { return r.name == c.name; });
      if (it == restored_.end()) continue;
      if (it->data.size() != c.data.size()) {
        restore_error_ = Status::InvalidArgument(
            "scaffold: restored control '" + c.name + "' has " + std::to_string(it->data.size()) +
            " values, the model's block has " + std::to_string(c.data.size()));
        return;
      }
      c.data = std::move(it->data);
      restored_.erase(it);
    }
    if (!restored_.empty()) {
      restore_error_ =
          Status::InvalidArgument("scaffold: restored control '" + restored_.front().name +
                                  "' matches no block of the model");
    }
    restored_.clear();
  }

  std::vector<ParamBlock> control_;
  std::vector<ParamBlock> restored_;
  Status restore_error_;
  uint32_t num_sites_ = 0;
};

// FedNova: normalized averaging. Site i uploads, per row r it trained,
// x + (y_i - x) / tau_i with weight w_i (tau_i = w_i epsilon_i its local
// steps on the row) and a steps row (epsilon_i, 1 / w_i) with weight w_i,
// so the sums give
//   avg'_r - x = sum_i (y_i - x) / epsilon_i / W_r      (sum_i w_i d_i / W_r)
//   T_r = sum_i w_i epsilon_i = sum_i tau_i,  n_r = sum_i 1
// and the row moves to x + eta (T_r / n_r) (avg'_r - x): the sites' steps
// normalized by their local work, then scaled by the mean work. With equal
// work everywhere this is FedAvg; with heterogeneous epochs it removes the
// bias toward the sites that trained more (the paper's "objective
// inconsistency"). The paper's tau_eff = sum_i p_i tau_i would need sums of
// w_i^2, which the fixed-point sums of secure aggregation cannot carry
// without clipping; the mean keeps the same fixed point and the same
// equivalence to FedAvg.
class FedNova : public Strategy {
 public:
  explicit FedNova(const StrategyOptions& options) : Strategy(options) {}
  std::string_view name() const override { return "fednova"; }
  bool NormalizesUpdates() const override { return true; }

  Status Aggregate(const AggregateInput& input, std::vector<ParamBlock>* global) override {
    FEDREC_RETURN_IF_ERROR(CheckAggregateShape(name(), input, *global, StepShapes(*global)));
    // The steps block of each kGlobal block, in model order.
    std::vector<size_t> steps(global->size(), 0);
    for (size_t b = 0, k = global->size(); b < global->size(); ++b)
      if ((*global)[b].scope == Scope::kGlobal) steps[b] = k++;
    const double eta = options_.server_lr;
    ForEachAveragedRow(input, global, [&](size_t b, uint32_t r, std::span<const double> avg) {
      const double* s = input.weighted_sum[steps[b]].data() + 2 * static_cast<size_t>(r);
      if (!(s[1] > 0.0)) return;  // no site reported its steps: keep the row
      const double tau = s[0] / s[1];
      float* row = (*global)[b].Row(r);
      for (uint32_t c = 0; c < (*global)[b].cols; ++c)
        row[c] = static_cast<float>(row[c] + eta * tau * (avg[c] - row[c]));
    });
    return Status::Ok();
  }
};

Status InRange(const StrategyOptions& options, const std::string& strategy, const std::string& key,
               double lo, double hi, bool hi_open) {
  const double v = options.Param(key);
  if (v >= lo && (hi_open ? v < hi : v <= hi)) return Status::Ok();
  return Status::InvalidArgument(
      "config strategy." + strategy + "." + key + ": expected a number in [" + std::to_string(lo) +
      ", " + std::to_string(hi) + (hi_open ? ")" : "]") + ", found " + std::to_string(v));
}

Status Positive(const StrategyOptions& options, const std::string& strategy,
                const std::string& key) {
  if (options.Param(key) > 0.0) return Status::Ok();
  return Status::InvalidArgument("config strategy." + strategy + "." + key +
                                 ": expected a number > 0, found " +
                                 std::to_string(options.Param(key)));
}

template <typename S, typename... Args>
Result<std::unique_ptr<Strategy>> Make(const StrategyOptions& options, Args... args) {
  return std::unique_ptr<Strategy>(new S(options, args...));
}

}  // namespace

void RegisterLinearStrategies(StrategyRegistry* registry) {
  registry->Register({"fedavg",
                      "FedAvg: each row steps federation.server_lr of the way to the sites' "
                      "interaction-weighted average",
                      {},
                      [](const StrategyOptions& o) {
                        return Make<StepToAverage>(o, StepToAverage::Kind::kFedAvg);
                      }});
  registry->Register({"fedprox",
                      "FedProx: FedAvg whose sites add (mu/2)||w - w_round||^2 to their loss",
                      {{"mu", 0.01, "proximal coefficient mu (>= 0)"}},
                      [](const StrategyOptions& o) -> Result<std::unique_ptr<Strategy>> {
                        FEDREC_RETURN_IF_ERROR(InRange(o, "fedprox", "mu", 0.0, 1e6, false));
                        return Make<StepToAverage>(o, StepToAverage::Kind::kFedProx);
                      }});
  registry->Register({"scaffold",
                      "SCAFFOLD: FedAvg with control variates that correct each site's drift "
                      "(sums only; model mf)",
                      {},
                      [](const StrategyOptions& o) { return Make<Scaffold>(o); }});
  registry->Register({"fednova",
                      "FedNova: FedAvg over each site's steps normalized by its local work, for "
                      "heterogeneous epochs (sums only; model mf)",
                      {},
                      [](const StrategyOptions& o) { return Make<FedNova>(o); }});
  registry->Register({"fedavgm",
                      "FedAvgM: server momentum over the sites' average step",
                      {{"momentum", 0.9, "server momentum beta in [0, 1)"},
                       {"eta", 0.5, "server learning rate > 0 (instead of federation.server_lr)"}},
                      [](const StrategyOptions& o) -> Result<std::unique_ptr<Strategy>> {
                        FEDREC_RETURN_IF_ERROR(InRange(o, "fedavgm", "momentum", 0.0, 1.0, true));
                        FEDREC_RETURN_IF_ERROR(Positive(o, "fedavgm", "eta"));
                        return Make<FedAvgM>(o);
                      }});
  const std::vector<StrategyKey> opt_keys = {
      {"beta1", 0.9, "first-moment decay in [0, 1)"},
      {"beta2", 0.99, "second-moment decay in [0, 1) (fedadam, fedyogi)"},
      {"tau", 1e-3, "adaptivity tau > 0 (v starts at tau^2)"},
      {"eta", 0.01, "server learning rate > 0 (instead of federation.server_lr)"}};
  const struct {
    const char* name;
    const char* doc;
    FedOpt::Rule rule;
  } opts[] = {
      {"fedadagrad", "FedAdagrad (Reddi et al.): adaptive server steps, v sums Delta^2",
       FedOpt::Rule::kAdagrad},
      {"fedadam", "FedAdam (Reddi et al.): Adam on the sites' average step", FedOpt::Rule::kAdam},
      {"fedyogi", "FedYogi (Reddi et al.): Yogi's additive second moment", FedOpt::Rule::kYogi}};
  for (const auto& opt : opts) {
    const std::string name = opt.name;
    const FedOpt::Rule rule = opt.rule;
    registry->Register(
        {name, opt.doc, opt_keys,
         [name, rule](const StrategyOptions& o) -> Result<std::unique_ptr<Strategy>> {
           FEDREC_RETURN_IF_ERROR(InRange(o, name, "beta1", 0.0, 1.0, true));
           FEDREC_RETURN_IF_ERROR(InRange(o, name, "beta2", 0.0, 1.0, true));
           FEDREC_RETURN_IF_ERROR(Positive(o, name, "tau"));
           FEDREC_RETURN_IF_ERROR(Positive(o, name, "eta"));
           return Make<FedOpt>(o, rule);
         }});
  }
}

}  // namespace fedrec
