// The robust strategies: each needs every site's update in the clear
// (security.aggregation = "none"), and bounds what a few arbitrary
// ("Byzantine") updates can do to the model.
//
// Per row r of a kGlobal block, with x the current value, S_r the sites that
// trained the row (weight > 0) and n_r = |S_r|:
//   fedmedian      a_r = coordinate-wise median of the values of S_r
//                  (Yin et al., ICML 2018); an even count takes the mean of
//                  the two middle values
//   fedtrimmedavg  a_r = coordinate-wise mean of the values of S_r after
//                  cutting k = floor(beta n_r) values from each end (Yin et
//                  al., ICML 2018), beta = strategy.fedtrimmedavg.beta
// and the row steps x + eta (a_r - x), eta = federation.server_lr (1: the
// papers' rules). These two are unweighted, as in the papers: a site's
// interaction count only decides whether it trained the row, so a Byzantine
// site cannot outvote the others by claiming a large weight.
//
// krum and multikrum (Blanchard et al., NeurIPS 2017) see each of the round's
// n sites as one vector over every kGlobal block: v_i holds the site's values
// in the rows it trained and the current global value x in the rows it did not
// (a zero step there, which is what the site proposes for them). With
// d(i, j) = ||v_i - v_j||^2, score(i) is the sum of the n - f - 2 smallest
// d(i, j), j != i, for f assumed Byzantine sites (strategy.<name>.f; -1, the
// default, derives the largest f the rule tolerates, floor((n - 3) / 2)).
//   krum       adopts v of the best-scoring site: its trained rows step
//              x + eta (v - x); the other rows keep their value, which is
//              exactly adopting its whole vector as defined above.
//   multikrum  averages the m best-scoring sites (strategy.multikrum.m; 0, the
//              default, = n - f; at most n) row by row with interaction
//              weights, as FedAvg does, then steps x + eta (avg - x); rows
//              none of them trained keep their value. m = n is FedAvg.
// Ties in score go to the lower site id. The rules need n > 2f + 2: a round
// with fewer updates is refused (Aborted, the model unchanged, naming the
// round and the counts); the job goes on.
//
// For every rule, rows no site trained keep their value, and blocks of scope
// kGlobalAverage (statistics such as the global mean) take the sites'
// weighted average, as the linear strategies do. Values are summed in a fixed
// order (sorted values, site order), so the result does not depend on timing.
#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "algorithms/strategy.h"

namespace fedrec {
namespace {

// Every update's shape against the model's, sites strictly ascending, and
// present when sites reported.
Status CheckUpdates(std::string_view strategy, const AggregateInput& input,
                    const std::vector<ParamBlock>& global) {
  const std::string who = std::string(strategy) + ", round " + std::to_string(input.round);
  if (input.updates.size() != input.sites) {
    return Status::InvalidArgument(
        who + ": expected each reporting site's update (" + std::to_string(input.sites) +
        " sites reported), found " + std::to_string(input.updates.size()) +
        "; this strategy needs individual updates, which only security.aggregation = \"none\" "
        "provides");
  }
  for (size_t i = 0; i < input.updates.size(); ++i) {
    const SiteUpdate& u = input.updates[i];
    const std::string where = who + ", site " + std::to_string(u.site);
    if (i > 0 && u.site <= input.updates[i - 1].site) {
      return Status::InvalidArgument(where + ": updates must be ascending by site, found site " +
                                     std::to_string(u.site) + " after site " +
                                     std::to_string(input.updates[i - 1].site));
    }
    if (u.weight.size() != global.size() || u.values.size() != global.size()) {
      return Status::InvalidArgument(where + ": update has " + std::to_string(u.weight.size()) +
                                     " weight and " + std::to_string(u.values.size()) +
                                     " value blocks, the global model has " +
                                     std::to_string(global.size()));
    }
    for (size_t b = 0; b < global.size(); ++b) {
      if (u.weight[b].size() == global[b].rows && u.values[b].size() == global[b].data.size())
        continue;
      return Status::InvalidArgument(where + ": block '" + global[b].name + "' has shape " +
                                     std::to_string(global[b].rows) + "x" +
                                     std::to_string(global[b].cols) + ", the update has " +
                                     std::to_string(u.weight[b].size()) + " row weights and " +
                                     std::to_string(u.values[b].size()) + " values");
    }
  }
  return Status::Ok();
}

// x + eta (a - x) over one row.
void StepRow(double eta, std::span<const double> target, float* row) {
  for (size_t c = 0; c < target.size(); ++c) {
    row[c] = eta == 1.0 ? static_cast<float>(target[c])
                        : static_cast<float>(row[c] + eta * (target[c] - row[c]));
  }
}

// fedmedian and fedtrimmedavg: a statistic of the sorted values per coordinate.
class CoordinateWise : public Strategy {
 public:
  enum class Kind { kMedian, kTrimmedMean };
  CoordinateWise(const StrategyOptions& options, Kind kind)
      : Strategy(options),
        kind_(kind),
        beta_(kind == Kind::kTrimmedMean ? options.Param("beta") : 0) {}
  std::string_view name() const override {
    return kind_ == Kind::kMedian ? "fedmedian" : "fedtrimmedavg";
  }
  bool NeedsIndividualUpdates() const override { return true; }

  Status Aggregate(const AggregateInput& input, std::vector<ParamBlock>* global) override {
    FEDREC_RETURN_IF_ERROR(CheckAggregateShape(name(), input, *global));
    FEDREC_RETURN_IF_ERROR(CheckUpdates(name(), input, *global));
    std::vector<double> target, column;
    ForEachAveragedRow(input, global, [&](size_t b, uint32_t r, std::span<const double>) {
      ParamBlock& block = (*global)[b];
      const size_t base = static_cast<size_t>(r) * block.cols;
      target.assign(block.cols, 0.0);
      for (uint32_t c = 0; c < block.cols; ++c) {
        column.clear();
        for (const SiteUpdate& u : input.updates) {
          if (u.weight[b][r] > 0.0) column.push_back(u.values[b][base + c]);
        }
        if (column.empty()) return;  // the sums saw weight the updates do not hold
        std::sort(column.begin(), column.end());
        target[c] = Statistic(column);
      }
      StepRow(options_.server_lr, target, block.Row(r));
    });
    return Status::Ok();
  }

 private:
  // REQUIRES: sorted, not empty.
  double Statistic(const std::vector<double>& sorted) const {
    const size_t n = sorted.size();
    if (kind_ == Kind::kMedian) {
      return n % 2 == 1 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
    }
    // beta < 0.5, so n - 2k >= 1. The epsilon keeps beta * n = 3 from
    // flooring to 2 when beta * n rounds to 2.9999999999999996.
    const size_t k = static_cast<size_t>(std::floor(beta_ * static_cast<double>(n) + 1e-9));
    double sum = 0.0;
    for (size_t i = k; i < n - k; ++i) sum += sorted[i];
    return sum / static_cast<double>(n - 2 * k);
  }

  Kind kind_;
  double beta_;
};

// krum and multikrum.
class Krum : public Strategy {
 public:
  Krum(const StrategyOptions& options, bool multi)
      : Strategy(options),
        multi_(multi),
        f_(static_cast<int64_t>(options.Param("f"))),
        m_(multi ? static_cast<int64_t>(options.Param("m")) : 1) {}
  std::string_view name() const override { return multi_ ? "multikrum" : "krum"; }
  bool NeedsIndividualUpdates() const override { return true; }

  Status Aggregate(const AggregateInput& input, std::vector<ParamBlock>* global) override {
    FEDREC_RETURN_IF_ERROR(CheckAggregateShape(name(), input, *global));
    FEDREC_RETURN_IF_ERROR(CheckUpdates(name(), input, *global));
    const size_t n = input.updates.size();
    if (n == 0) return Status::Ok();
    const std::string key = "strategy." + std::string(name()) + ".f";
    if (f_ < 0 && n < 3) {
      return Status::Aborted(std::string(name()) + ", round " + std::to_string(input.round) + ": " +
                             std::to_string(n) +
                             " site update(s), the rule needs at least 3 to tell one out (" + key +
                             " = -1 derives f from the round's sites)");
    }
    const size_t f = f_ >= 0 ? static_cast<size_t>(f_) : (n - 3) / 2;
    if (n <= 2 * f + 2) {
      return Status::Aborted(std::string(name()) + ", round " + std::to_string(input.round) + ": " +
                             std::to_string(n) + " site updates, the rule needs more than " +
                             "2f + 2 = " + std::to_string(2 * f + 2) + " with " + key + " = " +
                             std::to_string(f));
    }
    const std::vector<size_t> chosen = Choose(input, *global, n - f - 2, Want(n, f));

    // kGlobalAverage blocks are averaged by ForEachAveragedRow; kGlobal rows
    // average the chosen sites that trained them.
    std::vector<double> target;
    ForEachAveragedRow(input, global, [&](size_t b, uint32_t r, std::span<const double>) {
      ParamBlock& block = (*global)[b];
      const size_t base = static_cast<size_t>(r) * block.cols;
      target.assign(block.cols, 0.0);
      double weight = 0.0;
      for (size_t i : chosen) {
        const SiteUpdate& u = input.updates[i];
        const double w = u.weight[b][r];
        if (!(w > 0.0)) continue;
        weight += w;
        for (uint32_t c = 0; c < block.cols; ++c) target[c] += w * u.values[b][base + c];
      }
      if (!(weight > 0.0)) return;  // none of the chosen trained it
      for (double& t : target) t /= weight;
      StepRow(options_.server_lr, target, block.Row(r));
    });
    return Status::Ok();
  }

 private:
  // How many sites to keep: krum 1; multikrum m (0 = n - f), at most n.
  size_t Want(size_t n, size_t f) const {
    if (!multi_) return 1;
    return m_ == 0 ? n - f : std::min(static_cast<size_t>(m_), n);
  }

  // Indices (into input.updates, ascending) of the `want` sites of lowest
  // score, each scored over its `neighbours` closest other sites.
  static std::vector<size_t> Choose(const AggregateInput& input,
                                    const std::vector<ParamBlock>& global, size_t neighbours,
                                    size_t want) {
    const size_t n = input.updates.size();
    std::vector<double> distance(n * n, 0.0);
    for (size_t i = 0; i < n; ++i) {
      for (size_t j = i + 1; j < n; ++j) {
        const double d = SquaredDistance(input.updates[i], input.updates[j], global);
        distance[i * n + j] = d;
        distance[j * n + i] = d;
      }
    }
    std::vector<double> score(n, 0.0), others;
    for (size_t i = 0; i < n; ++i) {
      others.clear();
      for (size_t j = 0; j < n; ++j)
        if (j != i) others.push_back(distance[i * n + j]);
      std::sort(others.begin(), others.end());
      for (size_t k = 0; k < neighbours; ++k) score[i] += others[k];
    }
    std::vector<size_t> order(n);
    std::iota(order.begin(), order.end(), size_t{0});
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return score[a] < score[b]; });
    order.resize(want);
    std::sort(order.begin(), order.end());
    return order;
  }

  // ||v_a - v_b||^2 over the kGlobal blocks, v holding the global value in
  // the rows its site did not train.
  static double SquaredDistance(const SiteUpdate& a, const SiteUpdate& b,
                                const std::vector<ParamBlock>& global) {
    double sum = 0.0;
    for (size_t k = 0; k < global.size(); ++k) {
      const ParamBlock& block = global[k];
      if (block.scope != Scope::kGlobal) continue;
      for (uint32_t r = 0; r < block.rows; ++r) {
        const bool in_a = a.weight[k][r] > 0.0, in_b = b.weight[k][r] > 0.0;
        if (!in_a && !in_b) continue;
        const size_t base = static_cast<size_t>(r) * block.cols;
        const float* x = block.Row(r);
        for (uint32_t c = 0; c < block.cols; ++c) {
          const double va = in_a ? a.values[k][base + c] : x[c];
          const double vb = in_b ? b.values[k][base + c] : x[c];
          sum += (va - vb) * (va - vb);
        }
      }
    }
    return sum;
  }

  bool multi_;
  int64_t f_;
  int64_t m_;
};

// An integer key in [lo, inf).
Status IntegerAtLeast(const StrategyOptions& options, const std::string& strategy,
                      const std::string& key, double lo, const std::string& meaning) {
  const double v = options.Param(key);
  if (v >= lo && v <= 1e9 && v == std::floor(v)) return Status::Ok();
  return Status::InvalidArgument("config strategy." + strategy + "." + key +
                                 ": expected an integer >= " + std::to_string(int64_t(lo)) + " (" +
                                 meaning + "), found " + std::to_string(v));
}

}  // namespace

void RegisterRobustStrategies(StrategyRegistry* registry) {
  registry->Register(
      {"fedmedian",
       "FedMedian (Yin et al.): each row steps to the coordinate-wise median of the sites that "
       "trained it; needs security.aggregation = \"none\"",
       {},
       [](const StrategyOptions& o) -> Result<std::unique_ptr<Strategy>> {
         return std::unique_ptr<Strategy>(new CoordinateWise(o, CoordinateWise::Kind::kMedian));
       }});
  registry->Register(
      {"fedtrimmedavg",
       "FedTrimmedAvg (Yin et al.): coordinate-wise mean after cutting floor(beta n) values "
       "from each end; needs security.aggregation = \"none\"",
       {{"beta", 0.2, "share of the values cut from each end, in [0, 0.5)"}},
       [](const StrategyOptions& o) -> Result<std::unique_ptr<Strategy>> {
         const double beta = o.Param("beta");
         if (!(beta >= 0.0 && beta < 0.5)) {
           return Status::InvalidArgument(
               "config strategy.fedtrimmedavg.beta: expected a number in [0, 0.5), found " +
               std::to_string(beta));
         }
         return std::unique_ptr<Strategy>(
             new CoordinateWise(o, CoordinateWise::Kind::kTrimmedMean));
       }});
  const std::string f_doc =
      "assumed Byzantine sites f, an integer; -1 derives floor((n - 3) / 2) from the round's n "
      "sites; rounds with n <= 2f + 2 are refused";
  registry->Register(
      {"krum",
       "Krum (Blanchard et al.): adopts the update closest to its n - f - 2 nearest others; "
       "needs security.aggregation = \"none\"",
       {{"f", -1, f_doc}},
       [](const StrategyOptions& o) -> Result<std::unique_ptr<Strategy>> {
         FEDREC_RETURN_IF_ERROR(IntegerAtLeast(o, "krum", "f", -1, "-1: derive from the sites"));
         return std::unique_ptr<Strategy>(new Krum(o, false));
       }});
  registry->Register(
      {"multikrum",
       "Multi-Krum (Blanchard et al.): interaction-weighted average of the m best Krum scores; "
       "needs security.aggregation = \"none\"",
       {{"f", -1, f_doc}, {"m", 0, "sites averaged, an integer; 0 = n - f; at most n"}},
       [](const StrategyOptions& o) -> Result<std::unique_ptr<Strategy>> {
         FEDREC_RETURN_IF_ERROR(
             IntegerAtLeast(o, "multikrum", "f", -1, "-1: derive from the sites"));
         FEDREC_RETURN_IF_ERROR(IntegerAtLeast(o, "multikrum", "m", 0, "0: n - f"));
         return std::unique_ptr<Strategy>(new Krum(o, true));
       }});
}

}  // namespace fedrec
