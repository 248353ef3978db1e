// Synthetic rating generator.
//
// Steps, each with its own stream Rng(seed, 0, site, Purpose::kSynthetic):
//   site 0  user factors p_u ~ N(0, factor_std^2 I_r), then user biases b_u ~ N(0, user_bias_std^2)
//   site 1  item factors q_i, then item biases b_i
//   site 2  activity ranks (a permutation of users) and popularity ranks (of items)
//   site 3  items of each user, drawn from the popularity distribution without replacement
//   site 4  order of the ratings (a shuffle, so the list interleaves users like a log)
//   site 5  rating noise
//
// Ratings per user: user at activity rank j has weight 1/(j+1)^user_skew; the
// user gets clamp(c * w_u, lo, hi) ratings (rounded so they sum to `ratings`),
// with lo = min(20, ratings / users) (ML-100K has >= 20 per user) and
// hi = ceil(items / 2), c found by bisection. Items of a user are distinct
// draws from the Zipf popularity weights (alias table + rejection of repeats;
// a user whose draws keep hitting items it already has switches to an exact
// weighted sample without replacement over all items).
//
// The ground-truth mean mu is set so that mu + b_u + b_i + p_u.q_i averages
// options.mean over the generated (user, item) pairs; rounding and clamping to
// the scale then shift the observed mean by a few hundredths at most.
//
// Timestamps are kEpoch + position in the list: increasing, so holdout by time
// takes each user's last ratings in the list.
#include "data/synthetic.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>

#include "base/alias_table.h"
#include "base/random.h"

namespace fedrec {
namespace {

constexpr int64_t kEpoch = 883612800;  // 1998-01-01, the ML-100K era
constexpr uint32_t kMinPerUser = 20;

// Zipf-like weights 1/(rank+1)^skew over a random ranking of n entities.
std::vector<double> ZipfWeights(uint32_t n, double skew, Rng& rng) {
  std::vector<uint32_t> order(n);
  std::iota(order.begin(), order.end(), 0u);
  rng.Shuffle(std::span<uint32_t>(order));
  std::vector<double> w(n);
  for (uint32_t j = 0; j < n; ++j) {
    // Floored so that extreme skews do not underflow to a zero weight.
    w[order[j]] = std::max(std::pow(static_cast<double>(j) + 1.0, -skew), 1e-300);
  }
  return w;
}

// Ratings per user summing to `total`, each in [lo, hi], roughly proportional to `w`.
// REQUIRES: users * lo <= total <= users * hi.
std::vector<uint32_t> RatingsPerUser(const std::vector<double>& w, uint64_t total, uint32_t lo,
                                     uint32_t hi) {
  const size_t n = w.size();
  auto target = [&](double c, size_t u) {
    return std::clamp(c * w[u], static_cast<double>(lo), static_cast<double>(hi));
  };
  auto sum_at = [&](double c) {
    double s = 0.0;
    for (size_t u = 0; u < n; ++u) s += target(c, u);
    return s;
  };
  const double min_w = *std::min_element(w.begin(), w.end());
  double c_lo = 0.0, c_hi = static_cast<double>(hi) / min_w;
  for (int iter = 0; iter < 100 && c_hi - c_lo > 1e-12 * c_hi; ++iter) {
    const double mid = 0.5 * (c_lo + c_hi);
    (sum_at(mid) <= static_cast<double>(total) ? c_lo : c_hi) = mid;
  }
  std::vector<uint32_t> count(n);
  uint64_t assigned = 0;
  for (size_t u = 0; u < n; ++u) {
    count[u] = static_cast<uint32_t>(std::floor(target(c_lo, u)));
    assigned += count[u];
  }
  // Hand out the remainder one by one, most active users first; take back any
  // excess (floating-point slack) from the most active users above `lo`.
  std::vector<uint32_t> by_activity(n);
  std::iota(by_activity.begin(), by_activity.end(), 0u);
  std::stable_sort(by_activity.begin(), by_activity.end(),
                   [&w](uint32_t a, uint32_t b) { return w[a] > w[b]; });
  while (assigned < total) {
    for (uint32_t u : by_activity) {
      if (assigned == total) break;
      if (count[u] < hi) ++count[u], ++assigned;
    }
  }
  while (assigned > total) {
    for (uint32_t u : by_activity) {
      if (assigned == total) break;
      if (count[u] > lo) --count[u], --assigned;
    }
  }
  return count;
}

// `k` distinct items drawn one by one with probability proportional to
// `weights` among the items not drawn yet (Efraimidis-Spirakis keys).
void ExactWeightedSample(const std::vector<double>& weights, uint32_t k, Rng& rng,
                         std::vector<uint32_t>* out) {
  std::vector<std::pair<double, uint32_t>> keys(weights.size());
  for (size_t i = 0; i < weights.size(); ++i) {
    const double u = rng.Uniform();
    // log(u) / w, larger is earlier; u == 0 ranks last.
    keys[i] = {u > 0.0 ? std::log(u) / weights[i] : -std::numeric_limits<double>::infinity(),
               static_cast<uint32_t>(i)};
  }
  std::partial_sort(keys.begin(), keys.begin() + k, keys.end(), [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  });
  for (uint32_t j = 0; j < k; ++j) out->push_back(keys[j].second);
}

// b_u + b_i + p_u . q_i: the ground truth without its mean, unclamped.
double Interaction(const SyntheticData& d, uint32_t user, uint32_t item) {
  double t = static_cast<double>(d.user_bias[user]) + d.item_bias[item];
  const float* p = d.user_factors.data() + static_cast<size_t>(user) * d.rank;
  const float* q = d.item_factors.data() + static_cast<size_t>(item) * d.rank;
  for (uint32_t f = 0; f < d.rank; ++f) t += static_cast<double>(p[f]) * q[f];
  return t;
}

}  // namespace

float SyntheticData::Truth(uint32_t user, uint32_t item) const {
  const double t = mean + Interaction(*this, user, item);
  return std::min(std::max(static_cast<float>(t), rating_min), rating_max);
}

double SyntheticData::NoiseFloorRmse(const std::vector<Rating>& ratings) const {
  double sum = 0.0;
  size_t n = 0;
  for (const Rating& r : ratings) {
    assert(r.user < user_bias.size() && r.item < item_bias.size());
    if (r.user >= user_bias.size() || r.item >= item_bias.size()) continue;
    const double e = static_cast<double>(r.value) - Truth(r.user, r.item);
    sum += e * e;
    ++n;
  }
  return n == 0 ? 0.0 : std::sqrt(sum / static_cast<double>(n));
}

SyntheticData GenerateSynthetic(const SyntheticOptions& o) {
  SyntheticData d;
  const uint32_t n_users = o.users, n_items = o.items, rank = o.rank;
  d.rank = rank;
  d.rating_min = d.dataset.rating_min = o.rating_min;
  d.rating_max = d.dataset.rating_max = o.rating_max;
  for (uint32_t u = 0; u < n_users; ++u) d.dataset.users.Intern(std::to_string(u));
  for (uint32_t i = 0; i < n_items; ++i) d.dataset.items.Intern(std::to_string(i));

  // Ground truth.
  auto draw = [](Rng& rng, size_t n, double stddev) {
    std::vector<float> v(n);
    for (float& x : v) x = static_cast<float>(stddev * rng.Normal());
    return v;
  };
  {
    Rng rng(o.seed, 0, 0, Purpose::kSynthetic);
    d.user_factors = draw(rng, static_cast<size_t>(n_users) * rank, o.factor_std);
    d.user_bias = draw(rng, n_users, o.user_bias_std);
  }
  {
    Rng rng(o.seed, 0, 1, Purpose::kSynthetic);
    d.item_factors = draw(rng, static_cast<size_t>(n_items) * rank, o.factor_std);
    d.item_bias = draw(rng, n_items, o.item_bias_std);
  }
  d.mean = o.mean;

  const uint64_t total = std::min<uint64_t>(o.ratings, uint64_t{n_users} * n_items / 2);
  if (total == 0) return d;

  // Who rates how much, and what.
  std::vector<double> activity, popularity;
  {
    Rng rng(o.seed, 0, 2, Purpose::kSynthetic);
    activity = ZipfWeights(n_users, o.user_skew, rng);
    popularity = ZipfWeights(n_items, o.item_skew, rng);
  }
  const auto lo = static_cast<uint32_t>(std::min<uint64_t>(kMinPerUser, total / n_users));
  const uint32_t hi = n_items - n_items / 2;  // ceil(items / 2)
  const std::vector<uint32_t> per_user = RatingsPerUser(activity, total, lo, hi);

  std::vector<Rating>& out = d.dataset.train;
  out.reserve(total);
  {
    Rng rng(o.seed, 0, 3, Purpose::kSynthetic);
    const AliasTable items(popularity);
    std::vector<uint32_t> mark(n_items, 0);  // user + 1 when the user has the item
    std::vector<uint32_t> chosen;
    for (uint32_t u = 0; u < n_users; ++u) {
      const uint32_t need = per_user[u];
      chosen.clear();
      uint64_t rejected = 0;
      const uint64_t budget = 8 * uint64_t{need} + 256;
      while (chosen.size() < need && rejected <= budget) {
        const uint32_t i = items.Sample(rng);
        if (mark[i] == u + 1) {
          ++rejected;
        } else {
          mark[i] = u + 1;
          chosen.push_back(i);
        }
      }
      if (chosen.size() < need) {  // too many repeats: sample this user exactly
        chosen.clear();
        ExactWeightedSample(popularity, need, rng, &chosen);
      }
      for (uint32_t i : chosen) out.push_back(Rating{u, i, 0.0f, 0});
    }
  }
  {
    Rng rng(o.seed, 0, 4, Purpose::kSynthetic);
    rng.Shuffle(std::span<Rating>(out));
  }

  // Center the ground truth on the generated pairs, then observe it with noise.
  double offset = 0.0;
  for (const Rating& r : out) offset += Interaction(d, r.user, r.item);
  d.mean = o.mean - offset / static_cast<double>(out.size());

  Rng noise(o.seed, 0, 5, Purpose::kSynthetic);
  const double lo_v = o.rating_min, hi_v = o.rating_max;
  for (size_t k = 0; k < out.size(); ++k) {
    Rating& r = out[k];
    double v = d.mean + Interaction(d, r.user, r.item) + o.noise_std * noise.Normal();
    if (o.round_to_integers) v = std::round(v);
    r.value = static_cast<float>(std::min(std::max(v, lo_v), hi_v));
    r.time = kEpoch + static_cast<int64_t>(k);
  }
  return d;
}

namespace {

FeatureField SyntheticCategory(std::string name, uint32_t n, const char* prefix) {
  FeatureField f;
  f.name = std::move(name);
  f.vocabulary = n;
  for (uint32_t i = 0; i < n; ++i) f.labels.push_back(prefix + std::to_string(i));
  return f;
}

// The sign pattern of the first b entries of `v`.
uint32_t SignCluster(const float* v, uint32_t b) {
  uint32_t c = 0;
  for (uint32_t d = 0; d < b; ++d) c |= (v[d] > 0.0f ? 1u : 0u) << d;
  return c;
}

}  // namespace

void MakeSyntheticSideFeatures(const SyntheticData& data, const SyntheticOptions& options,
                               FeatureTable* users, FeatureTable* items) {
  const uint32_t rank = data.rank;
  const uint32_t b = std::min<uint32_t>(rank, 3);
  const uint32_t groups = std::min<uint32_t>(rank, 7);
  const uint32_t genres = std::min<uint32_t>(rank, 8);
  const uint32_t n_users = static_cast<uint32_t>(data.user_bias.size());
  const uint32_t n_items = static_cast<uint32_t>(data.item_bias.size());

  *users = FeatureTable();
  users->fields = {SyntheticCategory("cluster", 1u << b, "c"),
                   SyntheticCategory("age_group", groups, "g")};
  FeatureField bias;
  bias.name = "bias";
  bias.numeric = true;
  users->fields.push_back(bias);
  users->rows = n_users;
  users->offsets.push_back(0);
  const double span = 6.0 * options.user_bias_std;
  for (uint32_t u = 0; u < n_users; ++u) {
    const float* p = data.user_factors.data() + static_cast<size_t>(u) * rank;
    users->ids.push_back(SignCluster(p, b));
    users->offsets.push_back(static_cast<uint32_t>(users->ids.size()));
    uint32_t best = 0;
    for (uint32_t d = 1; d < groups; ++d) {
      if (p[d] > p[best]) best = d;
    }
    users->ids.push_back(best);
    users->offsets.push_back(static_cast<uint32_t>(users->ids.size()));
    const double x = span > 0.0 ? (data.user_bias[u] + 3.0 * options.user_bias_std) / span : 0.5;
    users->numeric.push_back(static_cast<float>(std::min(1.0, std::max(0.0, x))));
  }

  *items = FeatureTable();
  items->fields = {SyntheticCategory("genres", genres, "d"),
                   SyntheticCategory("cluster", 1u << b, "c")};
  items->rows = n_items;
  items->offsets.push_back(0);
  const float threshold = static_cast<float>(options.factor_std / 2.0);
  std::vector<uint32_t> dims;
  for (uint32_t i = 0; i < n_items; ++i) {
    const float* q = data.item_factors.data() + static_cast<size_t>(i) * rank;
    dims.clear();
    for (uint32_t d = 0; d < genres; ++d) {
      if (q[d] > threshold) dims.push_back(d);
    }
    std::stable_sort(dims.begin(), dims.end(), [q](uint32_t a, uint32_t c) { return q[a] > q[c]; });
    items->ids.insert(items->ids.end(), dims.begin(), dims.end());
    items->offsets.push_back(static_cast<uint32_t>(items->ids.size()));
    items->ids.push_back(SignCluster(q, b));
    items->offsets.push_back(static_cast<uint32_t>(items->ids.size()));
  }
}

}  // namespace fedrec
