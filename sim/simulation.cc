#include "sim/simulation.h"

#include <spdlog/spdlog.h>

#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>

#include "protocol/inprocess_transport.h"

namespace fedrec {

namespace {

// Runs site handlers on a fixed set of threads. A site with pending messages
// is queued once; while it runs, new arrivals only mark it pending, so one
// site's messages are never handled concurrently or out of order.
class SiteScheduler {
 public:
  // `endpoints[s]` is site s's transport.
  SiteScheduler(std::vector<Transport*> endpoints, std::vector<std::unique_ptr<Worker>>* workers,
                uint32_t threads)
      : endpoints_(std::move(endpoints)), workers_(workers), state_(workers->size()) {
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
      }
      Drain(site);
      std::lock_guard lock(mu_);
      State& s = state_[site];
      s.running = false;
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
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<size_t> ready_;
  std::vector<State> state_;
  bool stopping_ = false;
  Status error_;
  std::vector<std::thread> threads_;
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
  InProcessNetwork network(static_cast<int>(num_sites) + 1);
  // Every rank's transport: the network's endpoint, or a channel over it.
  std::vector<std::unique_ptr<SecureTransport>> channels;
  std::vector<Transport*> endpoints;
  std::vector<std::optional<crypto::SigningKey>> identities(num_sites + 1);
  for (int rank = 0; rank <= static_cast<int>(num_sites); ++rank) {
    if (!options.channel_options) {
      endpoints.push_back(&network.endpoint(rank));
      continue;
    }
    FEDREC_ASSIGN_OR_RETURN(SecureTransportOptions channel, options.channel_options(rank));
    identities[rank] = channel.identity;
    FEDREC_ASSIGN_OR_RETURN(std::unique_ptr<SecureTransport> secure,
                            SecureTransport::Create(&network.endpoint(rank), std::move(channel)));
    endpoints.push_back(secure.get());
    channels.push_back(std::move(secure));
  }

  std::vector<std::unique_ptr<Worker>> workers(num_sites);
  for (uint32_t s = 0; s < num_sites; ++s) {
    WorkerOptions wo = worker_options;
    wo.site = s;
    wo.coordinator_rank = 0;
    if (identities[s + 1]) wo.identity = identities[s + 1];
    if (options.customize_site) options.customize_site(&wo, s);
    workers[s] = std::make_unique<Worker>(wo, items, std::move(sites[s]), endpoints[s + 1]);
  }
  sites.clear();

  uint32_t threads = options.threads;
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  threads = std::min(threads, num_sites);
  SiteScheduler scheduler(std::vector<Transport*>(endpoints.begin() + 1, endpoints.end()), &workers,
                          threads);
  for (uint32_t s = 0; s < num_sites; ++s) {
    network.SetArrivalHook(static_cast<int>(s) + 1, [&scheduler, s] { scheduler.Notify(s); });
  }

  coordinator_options.site_ranks.resize(num_sites);
  coordinator_options.items = items;
  for (uint32_t s = 0; s < num_sites; ++s)
    coordinator_options.site_ranks[s] = static_cast<int>(s) + 1;
  Coordinator coordinator(coordinator_options, std::move(server_model), std::move(strategy),
                          endpoints[0]);
  Status status = coordinator.Run(on_round);
  // Sites handle their Shutdown; then the pool stops once the queues are empty.
  scheduler.Stop();
  network.Close();
  if (!status.ok()) return status;
  FEDREC_RETURN_IF_ERROR(scheduler.first_error());
  if (options.after_run) {
    for (const auto& worker : workers) {
      if (worker->has_model()) options.after_run(*worker);
    }
  }

  SimulationResult result;
  result.global = coordinator.global();
  result.coordinator_traffic = endpoints[0]->stats();
  for (uint32_t s = 0; s < num_sites; ++s)
    result.site_bytes_sent += endpoints[s + 1]->stats().bytes_sent;
  return result;
}

}  // namespace fedrec
