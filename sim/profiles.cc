#include "sim/profiles.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <numeric>
#include <sstream>

#include "base/random.h"

namespace fedrec {

std::vector<SiteProfile> DrawSiteProfiles(const ProfileDistribution& d, uint32_t sites,
                                          uint64_t seed) {
  std::vector<SiteProfile> profiles(sites);
  for (uint32_t s = 0; s < sites; ++s) {
    Rng rng(seed, 0, s, Purpose::kSimProfile);
    const double speed = rng.Normal(), latency = rng.Normal(), bandwidth = rng.Normal();
    SiteProfile& p = profiles[s];
    p.compute_speed = d.compute_speed * std::exp(d.speed_spread * speed);
    p.latency = d.latency_ms / 1000.0 * std::exp(d.link_spread * latency);
    p.bandwidth = d.bandwidth_mbps * 1e6 / 8.0 * std::exp(d.link_spread * bandwidth);
  }
  const uint32_t stragglers = std::min<uint32_t>(
      sites, static_cast<uint32_t>(std::llround(d.stragglers * static_cast<double>(sites))));
  std::vector<uint32_t> order(sites);
  std::iota(order.begin(), order.end(), 0u);
  Rng rng(seed, 0, sites, Purpose::kSimProfile);
  for (uint32_t i = 0; i < stragglers; ++i) {  // partial Fisher-Yates
    std::swap(order[i], order[i + static_cast<uint32_t>(rng.Below(sites - i))]);
    SiteProfile& p = profiles[order[i]];
    p.straggler = true;
    p.compute_speed /= d.straggler_slowdown;
  }
  return profiles;
}

std::vector<uint32_t> ChooseByzantineSites(double fraction, uint32_t sites, uint64_t seed) {
  const uint32_t count = std::min<uint32_t>(
      sites, static_cast<uint32_t>(std::llround(fraction * static_cast<double>(sites))));
  std::vector<uint32_t> order(sites);
  std::iota(order.begin(), order.end(), 0u);
  Rng rng(seed, 0, sites, Purpose::kDropout);
  for (uint32_t i = 0; i < count; ++i)  // partial Fisher-Yates
    std::swap(order[i], order[i + static_cast<uint32_t>(rng.Below(sites - i))]);
  order.resize(count);
  std::sort(order.begin(), order.end());
  return order;
}

bool AvailabilityModel::Online(uint32_t site, uint32_t round, double t) const {
  switch (kind) {
    case Kind::kAlways:
      return true;
    case Kind::kBernoulli:
      return round == 0 || Rng(seed, round, site, Purpose::kAvailability).Uniform() < p;
    case Kind::kTrace: {
      auto it = windows.find(site);
      if (it == windows.end()) return true;
      for (const auto& [start, end] : it->second)
        if (t >= start && t < end) return true;
      return false;
    }
  }
  return true;
}

Result<std::map<uint32_t, std::vector<std::pair<double, double>>>> ReadAvailabilityTrace(
    const std::string& path, uint32_t sites) {
  std::ifstream in(path);
  if (!in) return Status::NotFound("availability trace " + path + ": cannot open the file");
  std::map<uint32_t, std::vector<std::pair<double, double>>> windows;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    const std::string where = path + ":" + std::to_string(number);
    const size_t first = line.find_first_not_of(" \t\r");
    if (first == std::string::npos || line[first] == '#') continue;
    std::istringstream fields(line);
    int64_t site = -1;
    double start = 0.0, end = 0.0;
    std::string extra;
    if (!(fields >> site >> start >> end) || (fields >> extra)) {
      return Status::InvalidArgument(where +
                                     ": expected \"site start end\" (a site index and two "
                                     "numbers of seconds), found \"" +
                                     line + "\"");
    }
    if (site < 0 || site >= static_cast<int64_t>(sites)) {
      return Status::InvalidArgument(where + ": expected a site index in 0.." +
                                     std::to_string(sites - 1) + ", found " + std::to_string(site));
    }
    if (!std::isfinite(start) || !std::isfinite(end) || start < 0 || end <= start) {
      return Status::InvalidArgument(where + ": expected 0 <= start < end, found start " +
                                     std::to_string(start) + " and end " + std::to_string(end));
    }
    windows[static_cast<uint32_t>(site)].emplace_back(start, end);
  }
  return windows;
}

}  // namespace fedrec
