#include "coordinator/ps_driver.h"

#include <spdlog/spdlog.h>

#include <algorithm>
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

uint32_t PsDriver::NextCheckpoint(uint32_t epoch) const {
  const uint32_t every = options_.checkpoint_every, epochs = start_.epochs;
  if (every == 0 || epoch >= epochs) return 0;
  return std::min(epochs, (epoch / every + 1) * every);
}

Status PsDriver::Commit(uint32_t reported) {
  for (uint32_t e = NextCheckpoint(committed_); e != 0 && e < reported;
       e = NextCheckpoint(committed_)) {
    if (std::any_of(shard_saved_.begin(), shard_saved_.end(),
                    [e](uint32_t saved) { return saved < e; }))
      break;
    if (options_.on_checkpoint)
      FEDREC_RETURN_IF_ERROR(
          options_.on_checkpoint(e).WithContext("the checkpoint of epoch " + std::to_string(e)));
    committed_ = e;
    std::vector<int> ranks = options_.shard_ranks;
    ranks.insert(ranks.end(), options_.worker_ranks.begin(), options_.worker_ranks.end());
    for (int r : ranks) {
      Status sent = transport_->Send(r, EncodePsCheckpoint(PsCheckpoint{e}, transport_->rank()));
      if (!sent.ok()) spdlog::warn("driver: checkpoint notice to rank {}: {}", r, sent.message());
    }
  }
  return Status::Ok();
}

bool PsDriver::ShouldStop(bool started) {
  if (!stop_asked_at_) {
    if (!options_.stop_requested || !options_.stop_requested()) return false;
    stop_asked_at_ = committed_;
  }
  return !started || options_.checkpoint_every == 0 || committed_ > *stop_asked_at_;
}

Status PsDriver::Gather(const std::function<void(const PsEpochMetrics&)>& on_epoch) {
  const size_t workers = options_.worker_ranks.size();
  std::vector<std::optional<PsReport>> hellos(workers);
  std::map<uint32_t, std::vector<std::optional<PsReport>>> epochs;
  std::vector<uint8_t> finished(workers, 0);
  size_t hellos_in = 0, finished_count = 0;
  uint32_t next_epoch = options_.first_epoch + 1;
  committed_ = options_.first_epoch;
  shard_saved_.assign(options_.shard_ranks.size(), options_.first_epoch);
  std::chrono::steady_clock::time_point started;
  // With checkpoints, until the last epoch is committed too.
  auto more = [&] {
    return hellos_in < workers || finished_count < workers ||
           (options_.checkpoint_every > 0 && committed_ < start_.epochs);
  };
  auto last_frame = std::chrono::steady_clock::now();
  const auto poll = std::chrono::milliseconds(200);
  while (more()) {
    if (ShouldStop(hellos_in == workers)) {
      stopped_ = true;
      return Status::Ok();
    }
    const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - last_frame);
    const auto left = std::max(options_.timeout - waited, std::chrono::milliseconds(0));
    Result<Envelope> e =
        transport_->Recv(options_.stop_requested ? std::min(left, poll) : options_.timeout);
    if (e.ok()) last_frame = std::chrono::steady_clock::now();
    if (!e.ok()) {
      if (e.status().code() != Status::Code::kTimeout) return e.status();
      if (options_.stop_requested && left > poll) continue;  // polled the stop only
      std::string missing;
      for (size_t w = 0; w < workers; ++w) {
        if (hellos_in < workers ? !hellos[w] : !finished[w])
          missing += (missing.empty() ? "" : ", ") + std::to_string(w) + " (rank " +
                     std::to_string(options_.worker_ranks[w]) + ")";
      }
      const std::string within =
          " within " + std::to_string(options_.timeout.count() / 1000) + " s";
      if (missing.empty()) {  // every worker is done: a shard's save is owed
        for (size_t s = 0; s < shard_saved_.size(); ++s) {
          if (shard_saved_[s] < start_.epochs)
            missing += (missing.empty() ? "" : ", ") + std::to_string(s) + " (rank " +
                       std::to_string(options_.shard_ranks[s]) + ")";
        }
        return Status::Timeout("no checkpoint of epoch " + std::to_string(start_.epochs) +
                               " from shard server " + missing + within);
      }
      return Status::Timeout("no report from worker " + missing + within);
    }
    const int w = WorkerOf(e->from);
    Result<FrameView> frame = DecodeFrame(*e);
    const bool from_shard = std::find(options_.shard_ranks.begin(), options_.shard_ranks.end(),
                                      e->from) != options_.shard_ranks.end();
    if (from_shard && frame.ok() && frame->header.type == MessageType::kSiteError) {
      // A shard that cannot hold its rows (cluster.memory_limit) says so and why.
      Result<SiteError> error = DecodeMessage<SiteError>(*frame);
      return Status::Aborted(error.ok() ? error->message
                                        : "shard server at rank " + std::to_string(e->from) +
                                              " failed: " + error.status().message());
    }
    if (from_shard && frame.ok() && frame->header.type == MessageType::kPsCheckpoint) {
      Result<PsCheckpoint> saved = DecodePsCheckpoint(*frame);
      const size_t s = static_cast<size_t>(
          std::find(options_.shard_ranks.begin(), options_.shard_ranks.end(), e->from) -
          options_.shard_ranks.begin());
      if (!saved.ok() || saved->epoch != NextCheckpoint(shard_saved_[s])) {
        return Status::InvalidArgument(
            "shard server " + std::to_string(s) + " (rank " + std::to_string(e->from) +
            "): expected its checkpoint of epoch " +
            std::to_string(NextCheckpoint(shard_saved_[s])) + ", found " +
            (saved.ok() ? "epoch " + std::to_string(saved->epoch) : saved.status().message()));
      }
      shard_saved_[s] = saved->epoch;
      FEDREC_RETURN_IF_ERROR(Commit(next_epoch));
      continue;
    }
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
    if (frame->header.type == MessageType::kPsRows && options_.on_worker_rows) {
      FEDREC_RETURN_IF_ERROR(
          options_.on_worker_rows(static_cast<uint32_t>(w), *frame).WithContext(who));
      continue;
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
      if (options_.global_mean) start_.global_mean = *options_.global_mean;
      start_.workers = static_cast<uint32_t>(workers);
      start_.first_epoch = options_.first_epoch;
      start_.checkpoint_every = options_.checkpoint_every;
      start_.checkpoint_dir = options_.checkpoint_every > 0 ? options_.checkpoint_dir : "";
      if (start_.first_epoch > start_.epochs) {
        return Status::InvalidArgument("resuming after epoch " +
                                       std::to_string(start_.first_epoch) + " of a job of " +
                                       std::to_string(start_.epochs) + " epochs");
      }
      spdlog::log(
          options_.global_mean ? spdlog::level::debug : spdlog::level::info,
          "ps: {} workers, {} shard servers, {} ratings, {} steps per epoch, global mean {:.4f}",
          workers, options_.shard_ranks.size(), count, start_.steps_per_epoch, start_.global_mean);
      started = std::chrono::steady_clock::now();
      for (int r : options_.shard_ranks)
        FEDREC_RETURN_IF_ERROR(transport_->Send(r, EncodePsStart(start_, transport_->rank())));
      if (options_.load_shards) FEDREC_RETURN_IF_ERROR(options_.load_shards());
      for (int r : options_.worker_ranks)
        FEDREC_RETURN_IF_ERROR(transport_->Send(r, EncodePsStart(start_, transport_->rank())));
      continue;
    }
    // A job resumed after its last epoch: each worker only says it is done.
    const bool done_before =
        report->final && report->epoch == start_.first_epoch && start_.first_epoch == start_.epochs;
    if (done_before && !finished[static_cast<size_t>(w)]) {
      finished[static_cast<size_t>(w)] = 1;
      ++finished_count;
      continue;
    }
    if (report->epoch <= start_.first_epoch || report->epoch > start_.epochs ||
        finished[static_cast<size_t>(w)]) {
      return Status::InvalidArgument(
          who + " reported epoch " + std::to_string(report->epoch) +
          (finished[static_cast<size_t>(w)] ? " after its final report" : "") +
          ", expected an epoch in " + std::to_string(start_.first_epoch + 1) + ".." +
          std::to_string(start_.epochs));
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
    FEDREC_RETURN_IF_ERROR(Commit(next_epoch));
  }
  return Status::Ok();
}

Status PsDriver::ReadModel(const std::function<Status(const PsRowReader&)>& on_model) {
  PsClient client(transport_, options_.shard_ranks, options_.cols, -1);
  std::vector<uint32_t> keys;
  const PsRowReader read = [&](uint32_t first, uint32_t count, float* out) -> Status {
    if (first > options_.items || count > options_.items - first) {
      return Status::InvalidArgument("rows " + std::to_string(first) + ".." +
                                     std::to_string(uint64_t{first} + count) + " of a model of " +
                                     std::to_string(options_.items) + " rows");
    }
    keys.resize(count);
    for (uint32_t i = 0; i < count; ++i) keys[i] = first + i;
    return client.Wait(client.Pull(keys, out, 0, kPsPullUnclocked), options_.timeout);
  };
  if (on_model) return on_model(read);
  rows_.assign(static_cast<size_t>(options_.items) * options_.cols, 0.0f);
  return read(0, options_.items, rows_.data());
}

void PsDriver::CollectMemory() {
  std::vector<int> ranks = options_.shard_ranks;
  ranks.insert(ranks.end(), options_.worker_ranks.begin(), options_.worker_ranks.end());
  std::vector<std::optional<PsMemory>> got(ranks.size());
  size_t in = 0;
  // Every role answers the Shutdown at once; a role that does not is not
  // worth failing the finished job for.
  const auto wait = std::min(options_.timeout, std::chrono::milliseconds(60000));
  while (in < ranks.size()) {
    Result<Envelope> e = transport_->Recv(wait);
    if (!e.ok()) {
      spdlog::warn("driver: {} of {} memory reports in: {}", in, ranks.size(),
                   e.status().message());
      break;
    }
    const auto at = std::find(ranks.begin(), ranks.end(), e->from);
    Result<FrameView> frame = DecodeFrame(*e);
    if (at == ranks.end() || !frame.ok() || frame->header.type != MessageType::kPsMemory)
      continue;  // late frames of the finished job
    Result<PsMemory> memory = DecodePsMemory(*frame);
    if (!memory.ok()) {
      spdlog::warn("driver: {}", memory.status().message());
      continue;
    }
    std::optional<PsMemory>& slot = got[static_cast<size_t>(at - ranks.begin())];
    if (!slot) ++in;
    slot = *memory;
  }
  memory_.clear();
  for (size_t i = 0; i < ranks.size(); ++i)
    if (got[i]) memory_.push_back(PsRankMemory{ranks[i], *got[i]});
}

Status PsDriver::Run(const std::function<void(const PsEpochMetrics&)>& on_epoch,
                     const std::function<Status(const PsRowReader&)>& on_model) {
  Status status = Gather(on_epoch);
  if (status.ok() && stopped_) {
    ShutdownAll("the job was stopped by a signal to the driver" +
                    (committed_ > 0 ? " after the checkpoint of epoch " + std::to_string(committed_)
                                    : std::string()),
                true);
    return Status::Ok();
  }
  if (status.ok()) status = ReadModel(on_model);
  if (!status.ok()) {
    ShutdownAll(status.message(), true);
    return status;
  }
  ShutdownAll("done", false);
  CollectMemory();
  return Status::Ok();
}

}  // namespace fedrec
