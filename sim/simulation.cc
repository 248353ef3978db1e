#include "sim/simulation.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>

#include "base/little_endian.h"
#include "coordinator/aggregation_shard.h"
#include "protocol/frame.h"
#include "protocol/inprocess_transport.h"
#include "sim/contacted_shutdown.h"
#include "sim/lazy_channel.h"

namespace fedrec {

namespace {

// Runs site handlers on a fixed set of threads. A site with pending messages
// is queued once; while it runs, new arrivals only mark it pending, so one
// site's messages are never handled concurrently or out of order.
class SiteScheduler {
 public:
  // `endpoints[s]` is site s's transport.
  // `on_receive(site, envelope)` runs before the worker handles each frame
  // (the virtual clock's bookkeeping).
  SiteScheduler(std::vector<Transport*> endpoints, std::vector<std::unique_ptr<Worker>>* workers,
                uint32_t threads, std::function<void(size_t, const Envelope&)> on_receive)
      : endpoints_(std::move(endpoints)),
        workers_(workers),
        on_receive_(std::move(on_receive)),
        state_(workers->size()) {
    for (uint32_t t = 0; t < threads; ++t) threads_.emplace_back([this] { Loop(); });
  }

  ~SiteScheduler() { Stop(); }

  // Called by the network when a message arrives for site index `site`.
  void Notify(size_t site) {
    std::lock_guard lock(mu_);
    State& s = state_[site];
    if (s.running) {
      s.pending = true;
    } else if (!s.queued) {
      s.queued = true;
      ready_.push_back(site);
      cv_.notify_one();
    }
  }

  void Stop() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_)
      if (t.joinable()) t.join();
    threads_.clear();
  }

  // True when no site is queued or running: every frame the sites sent has
  // been delivered, and none will be sent until a site is notified again.
  bool Idle() {
    std::lock_guard lock(mu_);
    return ready_.empty() && running_ == 0;
  }

  Status first_error() {
    std::lock_guard lock(mu_);
    return error_;
  }

 private:
  struct State {
    bool queued = false, running = false, pending = false;
  };

  void Loop() {
    for (;;) {
      size_t site;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return stopping_ || !ready_.empty(); });
        if (ready_.empty()) return;
        site = ready_.front();
        ready_.pop_front();
        state_[site].queued = false;
        state_[site].running = true;
        ++running_;
      }
      Drain(site);
      std::lock_guard lock(mu_);
      State& s = state_[site];
      s.running = false;
      --running_;
      if (s.pending) {
        s.pending = false;
        s.queued = true;
        ready_.push_back(site);
        cv_.notify_one();
      }
    }
  }

  void Drain(size_t site) {
    Worker& worker = *(*workers_)[site];
    Transport& endpoint = *endpoints_[site];
    for (;;) {
      Result<Envelope> envelope = endpoint.Recv(std::chrono::milliseconds(0));
      if (!envelope.ok()) return;  // empty (or closed)
      if (on_receive_) on_receive_(site, *envelope);
      bool done = false;
      Status status = worker.Handle(*envelope, &done);
      if (!status.ok()) {
        std::lock_guard lock(mu_);
        if (error_.ok()) error_ = status;
      }
    }
  }

  std::vector<Transport*> endpoints_;
  std::vector<std::unique_ptr<Worker>>* workers_;
  std::function<void(size_t, const Envelope&)> on_receive_;
  std::mutex mu_;
  size_t running_ = 0;  // guarded by mu_
  std::condition_variable cv_;
  std::deque<size_t> ready_;
  std::vector<State> state_;
  bool stopping_ = false;
  Status error_;
  std::vector<std::thread> threads_;
};

// The round a frame's header names (sealed frames copy it); 0 when unreadable.
uint32_t FrameRound(const std::vector<uint8_t>& bytes) {
  return bytes.size() >= kFrameHeaderSize ? GetLe<uint32_t>(bytes.data() + 8) : 0;
}

// A site's availability: frames to or from it while it is offline (at its
// virtual time) are lost, as on a network whose peer is down.
class AvailabilityTransport : public Transport {
 public:
  AvailabilityTransport(Transport* inner, InProcessNetwork* network, uint32_t site,
                        const AvailabilityModel* model)
      : inner_(inner), network_(network), site_(site), model_(model) {}

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  TrafficStats stats() const override { return inner_->stats(); }

  Status Send(int peer, std::vector<uint8_t> bytes) override {
    if (!model_->Online(site_, FrameRound(bytes), network_->virtual_time(rank()))) {
      lost_.fetch_add(1, std::memory_order_relaxed);
      return Status::Ok();
    }
    return inner_->Send(peer, std::move(bytes));
  }

  Result<Envelope> Recv(std::chrono::milliseconds timeout) override {
    for (;;) {
      Result<Envelope> envelope = inner_->Recv(timeout);
      if (!envelope.ok()) return envelope;
      const double t = std::max(network_->virtual_time(rank()), envelope->arrival);
      if (model_->Online(site_, FrameRound(envelope->bytes), t)) {
        // The site's clock reaches the frame's arrival before anything
        // handles it, so what the channel layer above sends in reply (a
        // hello) leaves at that time, not at the clock's last value.
        network_->set_virtual_time(rank(), t);
        return envelope;
      }
      lost_.fetch_add(1, std::memory_order_relaxed);
    }
  }

  uint64_t lost() const { return lost_.load(std::memory_order_relaxed); }

 private:
  Transport* inner_;
  InProcessNetwork* network_;
  const uint32_t site_;
  const AvailabilityModel* model_;
  std::atomic<uint64_t> lost_{0};
};

// The coordinator's clock: its rank's virtual time on the network.
class VirtualClock : public Clock {
 public:
  VirtualClock(InProcessNetwork* network, int rank, std::function<bool()> quiescent)
      : network_(network), rank_(rank), quiescent_(std::move(quiescent)) {}
  double Now() const override { return network_->virtual_time(rank_); }
  bool is_virtual() const override { return true; }
  double ArrivalTime(const Envelope& envelope) const override { return envelope.arrival; }
  bool Quiescent() const override { return quiescent_(); }
  void AdvanceTo(double t) override { network_->set_virtual_time(rank_, std::max(Now(), t)); }

 private:
  InProcessNetwork* network_;
  int rank_;
  std::function<bool()> quiescent_;
};

}  // namespace

Result<SimulationResult> RunSimulation(const SimulationOptions& options,
                                       CoordinatorOptions coordinator_options,
                                       std::unique_ptr<Model> server_model,
                                       std::unique_ptr<Strategy> strategy,
                                       const WorkerOptions& worker_options, uint32_t items,
                                       std::vector<SiteData> sites,
                                       const std::function<void(const RoundMetrics&)>& on_round) {
  const uint32_t num_sites = static_cast<uint32_t>(sites.size());
  if (num_sites == 0) return Status::InvalidArgument("simulation: no sites");
  if (!options.profiles.empty() && options.profiles.size() != num_sites) {
    return Status::InvalidArgument("simulation: " + std::to_string(options.profiles.size()) +
                                   " site profiles for " + std::to_string(num_sites) + " sites");
  }
  if (!options.byzantine_sites.empty()) {
    if (options.byzantine_sites.back() >= num_sites) {
      return Status::InvalidArgument("simulation: Byzantine site " +
                                     std::to_string(options.byzantine_sites.back()) + " of " +
                                     std::to_string(num_sites) + " sites");
    }
    FEDREC_RETURN_IF_ERROR(CheckAttackable(*server_model).WithContext("simulation"));
  }
  std::vector<SiteProfile> profiles = options.profiles;
  profiles.resize(num_sites);
  std::vector<uint64_t> train_ratings(num_sites), test_ratings(num_sites);
  for (uint32_t s = 0; s < num_sites; ++s) {
    train_ratings[s] = sites[s].train.size();
    test_ratings[s] = sites[s].test.size();
  }
  const int shards = static_cast<int>(options.shard_servers);
  const int first_shard = static_cast<int>(num_sites) + 1;
  InProcessNetwork network(first_shard + shards);
  // Every frame crosses the link of the site at one end (the coordinator's
  // and the shard servers' links are unlimited).
  network.SetLinkDelay([&profiles, first_shard](int from, int to, uint64_t bytes) {
    const int site_rank = from > 0 && from < first_shard ? from : to;
    if (site_rank <= 0 || site_rank >= first_shard) return 0.0;
    const SiteProfile& p = profiles[static_cast<size_t>(site_rank - 1)];
    return p.latency + (p.bandwidth > 0 ? static_cast<double>(bytes) / p.bandwidth : 0.0);
  });
  // Every rank's transport: the network's endpoint (sites: behind their
  // availability), or a channel over it.
  // The simulator's threads: the sites' handlers, and before them the making
  // of the channels.
  const uint32_t cores =
      options.threads > 0 ? options.threads : std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::unique_ptr<AvailabilityTransport>> availability;
  std::vector<std::unique_ptr<SecureTransport>> channels;
  std::vector<Transport*> endpoints;
  std::vector<std::optional<crypto::SigningKey>> identities(first_shard + shards);
  for (int rank = 0; rank < first_shard + shards; ++rank) {
    Transport* base = &network.endpoint(rank);
    if (rank > 0 && rank < first_shard &&
        options.availability.kind != AvailabilityModel::Kind::kAlways) {
      availability.push_back(std::make_unique<AvailabilityTransport>(
          base, &network, static_cast<uint32_t>(rank - 1), &options.availability));
      base = availability.back().get();
    }
    endpoints.push_back(base);
  }
  std::shared_ptr<BroadcastOpenings> openings;  // the sites' broadcasts, opened once
  std::vector<std::unique_ptr<LazyChannel>> lazy_channels(endpoints.size());
  if (options.channel_options) {
    // Each rank's identity is an Ed25519 key made from the OS CSPRNG (a
    // scalar multiplication each): on the simulator's threads, each rank's
    // channel in its own slot, the first error by rank. With
    // lazy_site_channels the sites after the first make theirs when first
    // contacted (LazyChannel), the same options then.
    const size_t ranks = endpoints.size();
    channels.resize(ranks);
    std::vector<Status> failed(ranks);
    const uint32_t workers = static_cast<uint32_t>(std::min<size_t>(cores, ranks));
    std::atomic<size_t> next{0};
    if (options.share_openings) openings = std::make_shared<BroadcastOpenings>();
    const auto lazy = [&](size_t rank) {
      return options.lazy_site_channels && rank >= 2 && rank < static_cast<size_t>(first_shard);
    };
    for (size_t rank = 0; rank < ranks; ++rank) {
      if (!lazy(rank)) continue;
      lazy_channels[rank] = std::make_unique<LazyChannel>(
          endpoints[rank], [&options, &openings, rank]() -> Result<SecureTransportOptions> {
            FEDREC_ASSIGN_OR_RETURN(SecureTransportOptions channel,
                                    options.channel_options(static_cast<int>(rank)));
            if (!channel.openings) channel.openings = openings;
            return channel;
          });
    }
    auto make = [&] {
      for (size_t rank; (rank = next.fetch_add(1)) < ranks;) {
        if (lazy(rank)) continue;
        Result<SecureTransportOptions> channel = options.channel_options(static_cast<int>(rank));
        if (!channel.ok()) {
          failed[rank] = channel.status();
          continue;
        }
        if (!channel->openings) channel->openings = openings;
        identities[rank] = channel->identity;
        Result<std::unique_ptr<SecureTransport>> secure =
            SecureTransport::Create(endpoints[rank], std::move(*channel));
        if (!secure.ok()) {
          failed[rank] = secure.status();
          continue;
        }
        channels[rank] = std::move(*secure);
      }
    };
    std::vector<std::thread> pool;
    for (uint32_t t = 1; t < workers; ++t) pool.emplace_back(make);
    make();
    for (std::thread& t : pool) t.join();
    for (const Status& status : failed) FEDREC_RETURN_IF_ERROR(status);
    for (size_t rank = 0; rank < ranks; ++rank) {
      endpoints[rank] = lazy_channels[rank] ? static_cast<Transport*>(lazy_channels[rank].get())
                                            : channels[rank].get();
    }
  }
  // Injected faults, above the channels: the coordinator's crash, the sites'
  // dropouts and frame faults.
  std::vector<std::unique_ptr<FaultTransport>> faults;
  const bool site_faults = options.faults.any_site_fault();
  if (options.faults.coordinator_crash_round > 0) {
    faults.push_back(std::make_unique<FaultTransport>(endpoints[0], &options.faults, std::nullopt));
    endpoints[0] = faults.back().get();
  }
  for (int rank = 1; site_faults && rank < first_shard; ++rank) {
    faults.push_back(std::make_unique<FaultTransport>(endpoints[rank], &options.faults,
                                                      static_cast<uint32_t>(rank - 1)));
    endpoints[rank] = faults.back().get();
  }
  ContactedShutdownTransport coordinator_endpoint(endpoints[0], 1, first_shard);
  endpoints[0] = &coordinator_endpoint;

  // The sites run in this process: each pairwise secret is computed once.
  auto memo = worker_options.agreement_memo;
  if (!memo && options.share_agreements) memo = std::make_shared<secagg::AgreementMemo>();
  std::vector<std::unique_ptr<Worker>> workers(num_sites);
  for (uint32_t s = 0; s < num_sites; ++s) {
    WorkerOptions wo = worker_options;
    wo.agreement_memo = memo;
    wo.site = s;
    wo.coordinator_rank = 0;
    if (identities[s + 1]) wo.identity = identities[s + 1];
    if (LazyChannel* channel = lazy_channels[s + 1].get())
      wo.make_identity = [channel] { return channel->identity(); };
    if (std::binary_search(options.byzantine_sites.begin(), options.byzantine_sites.end(), s))
      wo.byzantine = options.byzantine;
    if (options.customize_site) options.customize_site(&wo, s);
    workers[s] = std::make_unique<Worker>(wo, items, std::move(sites[s]), endpoints[s + 1]);
  }
  sites.clear();

  const uint32_t threads = std::min(cores, num_sites);
  // A site's clock moves to the frame's arrival, then by the frame's work:
  // training for a plan, scoring for an evaluation request (other steps are
  // not modelled). Sends while handling it leave at that time.
  const uint32_t epochs = std::max(1u, options.local_epochs);
  const auto on_receive = [&](size_t site, const Envelope& envelope) {
    const int rank = static_cast<int>(site) + 1;
    double work = 0.0;
    if (envelope.bytes.size() >= kFrameHeaderSize) {
      const auto type = static_cast<MessageType>(GetLe<uint16_t>(envelope.bytes.data() + 6));
      if (type == MessageType::kRoundPlan)
        work = static_cast<double>(train_ratings[site]) * epochs;
      else if (type == MessageType::kEvalRequest)
        work = static_cast<double>(test_ratings[site]);
    }
    const double speed = profiles[site].compute_speed;
    network.set_virtual_time(rank, std::max(network.virtual_time(rank), envelope.arrival) +
                                       (speed > 0 ? work / speed : 0.0));
  };
  SiteScheduler scheduler(
      std::vector<Transport*>(endpoints.begin() + 1, endpoints.begin() + first_shard), &workers,
      threads, on_receive);
  // The shard servers, one thread each, until the coordinator's Shutdown.
  std::vector<std::unique_ptr<AggregationShard>> shard_servers;
  std::vector<Status> shard_status(static_cast<size_t>(shards));
  std::vector<std::thread> shard_threads;
  // Every server is made before any thread starts: a thread that indexed
  // shard_servers while the next push_back grew it would read freed memory.
  for (int s = 0; s < shards; ++s)
    shard_servers.push_back(std::make_unique<AggregationShard>(0, endpoints[first_shard + s]));
  for (int s = 0; s < shards; ++s) {
    AggregationShard* server = shard_servers[s].get();
    Status* status = &shard_status[s];
    shard_threads.emplace_back(
        [server, status] { *status = server->Serve(std::chrono::hours(24 * 365)); });
  }
  VirtualClock clock(&network, 0, [&scheduler] { return scheduler.Idle(); });
  for (uint32_t s = 0; s < num_sites; ++s) {
    network.SetArrivalHook(static_cast<int>(s) + 1, [&scheduler, s] { scheduler.Notify(s); });
  }

  coordinator_options.site_ranks.resize(num_sites);
  coordinator_options.items = items;
  for (uint32_t s = 0; s < num_sites; ++s)
    coordinator_options.site_ranks[s] = static_cast<int>(s) + 1;
  coordinator_options.clock = &clock;
  coordinator_options.shard_ranks.clear();
  for (int s = 0; s < shards; ++s) coordinator_options.shard_ranks.push_back(first_shard + s);
  Coordinator coordinator(coordinator_options, std::move(server_model), std::move(strategy),
                          endpoints[0]);
  Status status = options.resume ? coordinator.Restore(*options.resume) : Status::Ok();
  // A site that cannot resume (its state file damaged or of another run)
  // ends the job before it starts: nothing is half-loaded.
  for (const auto& worker : workers)
    if (status.ok() && !worker->model_status().ok()) status = worker->model_status();
  if (!status.ok()) {
    coordinator.ShutdownSites(status.message(), true);
  } else {
    status = coordinator.Run(on_round);
  }
  // Sites handle their Shutdown; then the pool stops once the queues are empty.
  scheduler.Stop();
  for (std::thread& thread : shard_threads) thread.join();
  network.Close();
  if (!status.ok()) return status;
  for (const Status& shard : shard_status) FEDREC_RETURN_IF_ERROR(shard);
  FEDREC_RETURN_IF_ERROR(scheduler.first_error());
  if (options.after_run) {
    for (const auto& worker : workers) {
      if (worker->has_model()) options.after_run(*worker);
    }
  }

  if (memo) {
    const secagg::AgreementMemo::Counts agreed = memo->counts();
    spdlog::debug(
        "simulation: {} pairwise secrets computed for both sites of a pair, {} taken "
        "by the second, {} never taken",
        agreed.stored, agreed.taken, agreed.waiting);
  }
  if (openings) {
    const BroadcastOpenings::Counts opened = openings->counts();
    spdlog::debug(
        "simulation: {} broadcast bodies hashed and {} decrypted once for their receivers, {} "
        "results shared",
        opened.digests, opened.opened, opened.reused);
  }
  SimulationResult result;
  result.global = coordinator.global();
  result.strategy_state = coordinator.strategy().State();
  result.coordinator_traffic = endpoints[0]->stats();
  for (int s = 0; s < shards; ++s)
    result.shard_traffic.push_back(endpoints[first_shard + s]->stats());
  for (uint32_t s = 0; s < num_sites; ++s)
    result.site_bytes_sent += endpoints[s + 1]->stats().bytes_sent;
  result.sim_seconds = clock.Now();
  result.completed_round = coordinator.completed_round();
  result.stopped = coordinator.stopped();
  for (const auto& a : availability) result.frames_lost += a->lost();
  for (const auto& f : faults) {
    const FaultCounts c = f->counts();
    result.faults.dropped += c.dropped;
    result.faults.lost += c.lost;
    result.faults.duplicated += c.duplicated;
    result.faults.corrupted += c.corrupted;
  }
  return result;
}

}  // namespace fedrec
