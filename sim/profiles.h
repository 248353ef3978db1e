// Site profiles of the simulator: how fast each simulated site computes, how
// fast its link is, and when it is online. They drive the virtual clock
// (sim/simulation.h): a site's handling of a round plan costs
//   train ratings x local epochs / compute_speed
// virtual seconds (an evaluation request: test ratings / compute_speed), and
// a frame between the coordinator and a site takes
//   latency + bytes / bandwidth
// on the site's link (the coordinator's own link is unlimited). Nothing here
// reads a real clock, so an experiment on slow sites gives the same result on
// any machine and any number of threads.
//
// Every draw comes from a stream derived from (seed, site, purpose), never
// from the thread schedule.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "base/status.h"

namespace fedrec {

struct SiteProfile {
  double compute_speed = 1e6;  // rating-epochs per virtual second
  double latency = 0.0;        // seconds, each way
  double bandwidth = 0.0;      // bytes per second, each way; 0 = unlimited
  bool straggler = false;      // drawn as a straggler (compute_speed already slowed)
};

// The heterogeneity of a federation's sites (config sim.*).
struct ProfileDistribution {
  double compute_speed = 1e6;        // median rating-epochs per second
  double speed_spread = 0.0;         // lognormal sigma of the speed
  double latency_ms = 0.0;           // median latency
  double bandwidth_mbps = 0.0;       // median bandwidth in megabits per second; 0 = unlimited
  double link_spread = 0.0;          // lognormal sigma of latency and bandwidth
  double stragglers = 0.0;           // share of sites that are stragglers
  double straggler_slowdown = 10.0;  // a straggler's speed is divided by this
};

// One profile per site: site s draws from stream (seed, 0, s, kSimProfile);
// the stragglers are exactly round(stragglers * sites) sites, a uniform sample
// from stream (seed, 0, sites, kSimProfile).
std::vector<SiteProfile> DrawSiteProfiles(const ProfileDistribution& distribution, uint32_t sites,
                                          uint64_t seed);

// The Byzantine sites (sim.byzantine_fraction), ascending: exactly
// round(fraction * sites) of them, a uniform sample from stream (seed, 0,
// sites, kDropout).
std::vector<uint32_t> ChooseByzantineSites(double fraction, uint32_t sites, uint64_t seed);

// When simulated sites are online; frames to and from an offline site are
// lost (sim/simulation.cc decorates each site's transport with it).
struct AvailabilityModel {
  enum class Kind { kAlways, kBernoulli, kTrace };
  Kind kind = Kind::kAlways;
  double p = 1.0;  // kBernoulli: chance a site is online in a round
  uint64_t seed = 1;
  // kTrace: per site, its online windows [start, end) in virtual seconds.
  // A site with no window in the trace is always online.
  std::map<uint32_t, std::vector<std::pair<double, double>>> windows;

  // Whether `site` is online for a frame of `round` at virtual time `t`.
  // Kbernoulli: online in round r when stream (seed, r, site, kAvailability)
  // draws below p; round 0 (start-up and shutdown frames) is always online.
  bool Online(uint32_t site, uint32_t round, double t) const;
};

// Reads a trace of online windows: one "site start end" line per window
// (site index, seconds, start < end); blank lines and lines starting with '#'
// are skipped. Errors name path:line, what was expected and what was found;
// sites must be below `sites`.
Result<std::map<uint32_t, std::vector<std::pair<double, double>>>> ReadAvailabilityTrace(
    const std::string& path, uint32_t sites);

}  // namespace fedrec
