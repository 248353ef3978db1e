// The simulator: the coordinator and every site of a federation in one process,
// over the in-process transport. The coordinator runs on the calling thread;
// sites are event-driven (Worker::Handle) and run on a fixed pool of threads,
// so thousands of virtual sites need no thread each. Each site's messages are
// handled one at a time and in order.
//
// Same inputs => bit-identical final model whatever `threads` is: sites train
// from their own (seed, round, site) streams and the coordinator folds updates
// in site order.
//
// Time is virtual (sim/profiles.h). Each rank has a virtual clock; the
// network stamps every frame with its arrival = the sender's clock + the
// link's latency + bytes / bandwidth. A site's clock becomes max(its clock,
// arrival) + the modelled cost of the frame's work before it handles a
// frame, so what it sends leaves after that work. The coordinator judges
// deadlines (CoordinatorOptions::round_timeout) on its virtual clock: a reply
// arriving after the deadline missed it, and once no frame is in flight and
// no site handler runs, a wait ends at once with the clock at the deadline,
// so a dead site costs a virtual timeout and no real time. No measured time
// enters the model.
//
// Availability (AvailabilityModel) is a Transport decorator on each site
// (under its authenticated channel): frames to or from an offline site are
// lost; the roles do not know. Injected faults (FaultOptions, sim/faults.h)
// are a decorator above the channel of each site and of the coordinator.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "coordinator/coordinator.h"
#include "crypto/secure_transport.h"
#include "sim/faults.h"
#include "sim/profiles.h"
#include "worker/worker.h"

namespace fedrec {

struct SimulationOptions {
  uint32_t threads = 0;  // site threads; 0 = hardware concurrency
  // The sites share one secagg::AgreementMemo (unless the WorkerOptions bring
  // one): each pairwise secret is computed once per pair. Same results.
  bool share_agreements = true;
  // With channels, the ranks share one BroadcastOpenings (unless their
  // SecureTransportOptions bring one): each broadcast body is hashed and
  // decrypted once for every site that receives it. Same results.
  bool share_openings = true;
  // Shard servers that sum slices of the updates (coordinator/aggregation_shard.h),
  // each on its own thread at ranks sites + 1 .. sites + S; 0 = none.
  uint32_t shard_servers = 0;
  // Adjusts one site's options after `site` is set (fault injection in tests,
  // per-site identities).
  std::function<void(WorkerOptions* options, uint32_t site)> customize_site;
  // Authenticated, encrypted channels (crypto/secure_transport.h): the
  // options of each rank (0 = coordinator, site s = rank s + 1, then the
  // shard servers); unset = plain
  // in-process queues. A site signs its secure-aggregation keys with its
  // channel identity. Called once per rank, from several threads at once
  // (the simulator's): before the run, or for lazy_site_channels when the
  // site is first contacted.
  std::function<Result<SecureTransportOptions>(int rank)> channel_options;
  // With channel_options: the sites' channels after the first are made when
  // the site is first contacted (sim/lazy_channel.h), so a site never sampled
  // makes no identity. For options that make each site's identity (not ones
  // that load a file per site, which start-up should check); the first
  // site's channel is still made at start-up, so options every site shares
  // are checked there.
  bool lazy_site_channels = false;
  // Called for every site that built its model (that took part in a round
  // or an evaluation) once the run has ended, before the sites are destroyed
  // (e.g. to save each site's local model in its own folder).
  std::function<void(const Worker& worker)> after_run;
  // Virtual time: each site's speed and link (empty = every site the default
  // SiteProfile), and the local epochs of a round plan (the work it costs).
  std::vector<SiteProfile> profiles;
  uint32_t local_epochs = 1;
  AvailabilityModel availability;
  // Byzantine sites (worker/byzantine.h): these sites, ascending, send
  // `byzantine` instead of their trained values (ChooseByzantineSites).
  std::vector<uint32_t> byzantine_sites;
  ByzantineAttack byzantine;
  // Resuming (checkpoint.*): the coordinator starts from this state
  // (Coordinator::Restore); the sites resume from their own state files
  // (WorkerOptions::resume_round).
  std::optional<CoordinatorState> resume;
  // Injected faults (sim.faults.*): dropouts at protocol steps, crashes,
  // delays, lost, duplicated and damaged frames.
  FaultOptions faults;
};

struct SimulationResult {
  std::vector<ParamBlock> global;  // final global model
  StrategyState strategy_state;    // the strategy's state at the end
  TrafficStats coordinator_traffic;
  std::vector<TrafficStats> shard_traffic;  // per shard server
  uint64_t site_bytes_sent = 0;             // summed over sites
  double sim_seconds = 0.0;                 // the coordinator's virtual clock at the end
  uint64_t frames_lost = 0;                 // to or from offline sites (availability)
  uint32_t completed_round = 0;             // the last round run
  bool stopped = false;                     // CoordinatorOptions::stop_requested ended the run
  FaultCounts faults;                       // what fault injection did, summed over sites
};

// Runs one federation: rank 0 is the coordinator, site s is rank s + 1.
// `worker_options.site` is set per site. Errors: the coordinator's fatal error,
// or a site whose transport failed.
// The coordinator holds `server_model` (the coordinator's part of the model:
// its global blocks are the initial model); sites build theirs with
// worker_options.make_model.
Result<SimulationResult> RunSimulation(const SimulationOptions& options,
                                       CoordinatorOptions coordinator_options,
                                       std::unique_ptr<Model> server_model,
                                       std::unique_ptr<Strategy> strategy,
                                       const WorkerOptions& worker_options, uint32_t items,
                                       std::vector<SiteData> sites,
                                       const std::function<void(const RoundMetrics&)>& on_round);

}  // namespace fedrec
