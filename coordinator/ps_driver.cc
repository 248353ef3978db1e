#include "coordinator/ps_driver.h"

#include <spdlog/spdlog.h>

#include <map>
#include <optional>

#include "protocol/messages.h"
#include "protocol/ps_client.h"

namespace fedrec {

PsDriver::PsDriver(PsDriverOptions options, Transport* transport)
    : options_(std::move(options)), transport_(transport) {}

int PsDriver::WorkerOf(int rank) const {
  for (size_t w = 0; w < options_.worker_ranks.size(); ++w)
    if (options_.worker_ranks[w] == rank) return static_cast<int>(w);
  return -1;
}

void PsDriver::ShutdownAll(const std::string& reason, bool failed) {
  Shutdown shutdown{reason};
  shutdown.failed = failed;
  std::vector<int> ranks = options_.shard_ranks;
  ranks.insert(ranks.end(), options_.worker_ranks.begin(), options_.worker_ranks.end());
  for (int r : ranks) {
    Status sent = transport_->Send(r, EncodeMessage(shutdown, 0, transport_->rank()));
    if (!sent.ok()) spdlog::warn("driver: shutdown of rank {}: {}", r, sent.message());
  }
}

Status PsDriver::Gather(const std::function<void(const PsEpochMetrics&)>& on_epoch) {
  const size_t workers = options_.worker_ranks.size();
  std::vector<std::optional<PsReport>> hellos(workers);
  std::map<uint32_t, std::vector<std::optional<PsReport>>> epochs;
  std::vector<uint8_t> finished(workers, 0);
  size_t hellos_in = 0, finished_count = 0;
  uint32_t next_epoch = 1;
  std::chrono::steady_clock::time_point started;
  while (hellos_in < workers || finished_count < workers) {
    Result<Envelope> e = transport_->Recv(options_.timeout);
    if (!e.ok()) {
      if (e.status().code() != Status::Code::kTimeout) return e.status();
      std::string missing;
      for (size_t w = 0; w < workers; ++w) {
        if (hellos_in < workers ? !hellos[w] : !finished[w])
          missing += (missing.empty() ? "" : ", ") + std::to_string(w) + " (rank " +
                     std::to_string(options_.worker_ranks[w]) + ")";
      }
      return Status::Timeout("no report from worker " + missing + " within " +
                             std::to_string(options_.timeout.count() / 1000) + " s");
    }
    const int w = WorkerOf(e->from);
    Result<FrameView> frame = DecodeFrame(e->bytes);
    if (w < 0 || !frame.ok()) {
      spdlog::warn("driver: dropped a frame from rank {}: {}", e->from,
                   w < 0 ? "not a worker rank" : frame.status().message());
      continue;
    }
    const std::string who =
        "worker " + std::to_string(w) + " (rank " + std::to_string(e->from) + ")";
    if (frame->header.type == MessageType::kSiteError) {
      Result<SiteError> error = DecodeMessage<SiteError>(*frame);
      return Status::Aborted(
          who + " failed: " + (error.ok() ? error->message : error.status().message()));
    }
    Result<PsReport> report = DecodePsReport(*frame);
    if (!report.ok()) return report.status().WithContext(who);
    if (hellos_in < workers) {
      if (report->epoch != 0 || hellos[static_cast<size_t>(w)]) {
        return Status::InvalidArgument(who + " sent a report of epoch " +
                                       std::to_string(report->epoch) + " before the start");
      }
      hellos[static_cast<size_t>(w)] = *report;
      if (++hellos_in < workers) continue;
      // Every worker is in: fix the global mean and the steps, then start.
      double sum = 0.0;
      uint64_t count = 0;
      for (const auto& h : hellos) {
        sum += h->rating_sum;
        count += h->train_count;
      }
      const uint64_t batch = std::max<uint64_t>(options_.batch_size, 1);
      start_.items = options_.items;
      start_.cols = options_.cols;
      start_.steps_per_epoch =
          static_cast<uint32_t>(std::max<uint64_t>(1, (count + batch - 1) / batch));
      start_.epochs = options_.epochs;
      start_.global_mean = count ? static_cast<float>(sum / static_cast<double>(count)) : 0.0f;
      start_.workers = static_cast<uint32_t>(workers);
      spdlog::info(
          "ps: {} workers, {} shard servers, {} ratings, {} steps per epoch, global mean {:.4f}",
          workers, options_.shard_ranks.size(), count, start_.steps_per_epoch, start_.global_mean);
      started = std::chrono::steady_clock::now();
      for (int r : options_.shard_ranks)
        FEDREC_RETURN_IF_ERROR(transport_->Send(r, EncodePsStart(start_, transport_->rank())));
      for (int r : options_.worker_ranks)
        FEDREC_RETURN_IF_ERROR(transport_->Send(r, EncodePsStart(start_, transport_->rank())));
      continue;
    }
    if (report->epoch == 0 || report->epoch > start_.epochs || finished[static_cast<size_t>(w)]) {
      return Status::InvalidArgument(
          who + " reported epoch " + std::to_string(report->epoch) +
          (finished[static_cast<size_t>(w)] ? " after its final report" : "") +
          ", expected an epoch in 1.." + std::to_string(start_.epochs));
    }
    std::vector<std::optional<PsReport>>& slot = epochs[report->epoch];
    slot.resize(workers);
    slot[static_cast<size_t>(w)] = *report;
    if (report->final) {
      finished[static_cast<size_t>(w)] = 1;
      ++finished_count;
    }
    // Epochs every worker reported, in order.
    for (auto it = epochs.find(next_epoch); it != epochs.end(); it = epochs.find(next_epoch)) {
      if (std::any_of(it->second.begin(), it->second.end(), [](const auto& r) { return !r; }))
        break;
      PsEpochMetrics m;
      m.epoch = next_epoch;
      m.epochs = start_.epochs;
      double sse = 0.0;
      uint64_t n = 0;
      for (const auto& r : it->second) {
        sse += r->train_squared_error;
        n += r->train_count;
        m.test.squared += r->squared_error;
        m.test.absolute += r->absolute_error;
        m.test.count += r->count;
      }
      m.train_mse = n ? sse / static_cast<double>(n) : 0.0;
      m.evaluated = m.test.count > 0;
      m.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      m.driver_traffic = transport_->stats();
      if (on_epoch) on_epoch(m);
      epochs.erase(it);
      ++next_epoch;
    }
  }
  return Status::Ok();
}

Status PsDriver::ReadModel() {
  PsClient client(transport_, options_.shard_ranks, options_.cols, -1);
  std::vector<uint32_t> keys(options_.items);
  for (uint32_t i = 0; i < options_.items; ++i) keys[i] = i;
  rows_.assign(static_cast<size_t>(options_.items) * options_.cols, 0.0f);
  return client.Wait(client.Pull(keys, rows_.data(), 0, kPsPullUnclocked), options_.timeout);
}

Status PsDriver::Run(const std::function<void(const PsEpochMetrics&)>& on_epoch) {
  Status status = Gather(on_epoch);
  if (status.ok()) status = ReadModel();
  if (!status.ok()) {
    ShutdownAll(status.message(), true);
    return status;
  }
  ShutdownAll("done", false);
  return Status::Ok();
}

}  // namespace fedrec
