#include "coordinator/shard_server.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cassert>
#include <cstring>
#include <string>

#include "base/memory.h"
#include "protocol/messages.h"

namespace fedrec {

const char* ConsistencyName(Consistency c) {
  switch (c) {
    case Consistency::kBsp:
      return "bsp";
    case Consistency::kSsp:
      return "ssp";
    case Consistency::kAsync:
      return "async";
  }
  return "unknown";
}

ShardServer::ShardServer(ShardServerOptions options, Transport* transport)
    : options_(std::move(options)),
      transport_(transport),
      divider_(std::max(options_.sharding.shards, 1u)) {
  clocks_.assign(options_.worker_ranks.size(), 0);
  if (options_.consistency == Consistency::kBsp) options_.staleness = 0;
}

int ShardServer::WorkerOf(int rank) const {
  for (size_t w = 0; w < options_.worker_ranks.size(); ++w)
    if (options_.worker_ranks[w] == rank) return static_cast<int>(w);
  return -1;
}

uint32_t ShardServer::MinClock() const {
  return clocks_.empty() ? 0 : *std::min_element(clocks_.begin(), clocks_.end());
}

float ShardServer::LearningRate(uint32_t epoch) {
  if (epoch != lr_epoch_) {
    lr_ = options_.optimizer.schedule.LearningRate(epoch);
    lr_epoch_ = epoch;
  }
  return lr_;
}

void ShardServer::Refuse(int to, const std::string& why) {
  ++stats_.refused;
  const std::string message = "shard server " + std::to_string(options_.shard) + " (rank " +
                              std::to_string(transport_->rank()) + "): " + why;
  spdlog::warn("{}", message);
  SiteError error{0, message};
  Status sent = transport_->Send(to, EncodeMessage(error, 0, transport_->rank()));
  if (!sent.ok()) spdlog::warn("refusal to rank {}: {}", to, sent.message());
}

std::string ShardServer::CheckKeys(const uint8_t* keys, uint64_t n) const {
  const uint32_t shards = options_.sharding.shards;
  unsigned bad = 0;
  for (uint64_t i = 0; i < n; ++i) {
    uint32_t key;
    std::memcpy(&key, keys + i * 4, 4);
    bad |= static_cast<unsigned>((key >= items_) | (divider_.Mod(key) != options_.shard));
  }
  if (!bad) return {};
  for (uint64_t i = 0; i < n; ++i) {
    uint32_t key;
    std::memcpy(&key, keys + i * 4, 4);
    if (key >= items_) {
      return "key " + std::to_string(i) + " is row " + std::to_string(key) +
             ", expected a row below " + std::to_string(items_);
    }
    if (divider_.Mod(key) != options_.shard) {
      return "key " + std::to_string(i) + " is row " + std::to_string(key) + ", held by shard " +
             std::to_string(divider_.Mod(key)) + " (row mod " + std::to_string(shards) +
             "), not by this shard";
    }
  }
  return {};
}

uint64_t ShardServer::SliceBytes(const ShardServerOptions& options, uint32_t items, uint32_t cols) {
  const uint64_t copies = 1 + (options.optimizer.HasState() ? 1 : 0) +
                          (options.consistency == Consistency::kBsp ? 1 : 0);
  return static_cast<uint64_t>(options.sharding.RowsOf(options.shard, items)) * cols *
         sizeof(float) * copies;
}

Status ShardServer::Start(const PsStart& start) {
  if (start.workers != options_.worker_ranks.size()) {
    return Status::InvalidArgument("shard server " + std::to_string(options_.shard) +
                                   ": the driver's PsStart names " + std::to_string(start.workers) +
                                   " workers, this shard was configured with " +
                                   std::to_string(options_.worker_ranks.size()));
  }
  items_ = start.items;
  cols_ = start.cols;
  rows_ = options_.sharding.RowsOf(options_.shard, items_);
  values_.assign(static_cast<size_t>(rows_) * cols_, 0.0f);
  for (uint32_t local = 0; local < rows_; ++local) {
    std::span<float> row(values_.data() + static_cast<size_t>(local) * cols_, cols_);
    if (options_.init_row)
      options_.init_row(options_.sharding.GlobalRow(options_.shard, local), row);
  }
  if (options_.optimizer.HasState())
    state_.assign(values_.size(), options_.optimizer.adagrad_initial);
  if (options_.consistency == Consistency::kBsp) {
    sum_.assign(values_.size(), 0.0f);
    is_touched_.assign(rows_, 0);
  }
  FEDREC_RETURN_IF_ERROR(StartCheckpoints(start));
  started_ = true;
  return Status::Ok();
}

Status ShardServer::StartCheckpoints(const PsStart& start) {
  if (start.checkpoint_every == 0) return Status::Ok();
  steps_ = start.steps_per_epoch;
  epochs_ = start.epochs;
  every_ = start.checkpoint_every;
  store_.emplace(start.checkpoint_dir,
                 PsSliceIdentity{"shard", options_.shard, options_.sharding.shards, rows_, cols_,
                                 options_.config_hash});
  if (start.first_epoch == 0) {
    store_->Clear();
  } else {
    const size_t arrays = state_.empty() ? 1 : 2;
    Result<std::vector<std::vector<float>>> slice = store_->Load(start.first_epoch, arrays);
    if (!slice.ok()) return slice.status();
    values_ = std::move((*slice)[0]);
    if (arrays == 2) state_ = std::move((*slice)[1]);
    const uint64_t clock = uint64_t{start.first_epoch} * steps_;
    if (clock > UINT32_MAX)
      return Status::InvalidArgument("epoch " + std::to_string(start.first_epoch) +
                                     " x steps per epoch overflows the 32-bit clock");
    clocks_.assign(clocks_.size(), static_cast<uint32_t>(clock));
    completed_ = static_cast<uint32_t>(clock);
    spdlog::info("shard {}: resumed from {}", options_.shard, store_->PathOf(start.first_epoch));
  }
  save_epoch_ = start.first_epoch;
  save_epoch_ = save_epoch_ >= epochs_ ? 0 : std::min(epochs_, (save_epoch_ / every_ + 1) * every_);
  return Status::Ok();
}

uint64_t ShardServer::BoundaryClock() const {
  return save_epoch_ == 0 ? UINT64_MAX : uint64_t{save_epoch_} * steps_;
}

uint32_t ShardServer::AppliedThrough() const {
  return options_.consistency == Consistency::kBsp ? completed_ : MinClock();
}

void ShardServer::Acknowledge(int to, const PsPushView& push) {
  Status sent = transport_->Send(
      to, EncodePsPushAck(PsPushAck{push.request, push.clock}, transport_->rank()));
  if (!sent.ok()) spdlog::warn("shard {}: ack to rank {}: {}", options_.shard, to, sent.message());
}

void ShardServer::MaybeSave() {
  while (store_ && save_epoch_ != 0 && AppliedThrough() >= BoundaryClock()) {
    const uint32_t epoch = save_epoch_;
    std::vector<std::span<const float>> arrays = {values_};
    if (!state_.empty()) arrays.emplace_back(state_);
    Status saved = store_->Save(epoch, arrays);
    if (!saved.ok()) {
      // The driver ends the job; serving goes on until it does.
      Refuse(options_.driver_rank,
             "saving the checkpoint of epoch " + std::to_string(epoch) + ": " + saved.message());
      store_.reset();
      break;
    }
    Status sent = transport_->Send(options_.driver_rank,
                                   EncodePsCheckpoint(PsCheckpoint{epoch}, transport_->rank()));
    if (!sent.ok()) spdlog::warn("shard {}: checkpoint notice: {}", options_.shard, sent.message());
    save_epoch_ = epoch >= epochs_ ? 0 : std::min(epochs_, epoch + every_);
    // ssp/async: the pushes that waited for this save, in arrival order.
    size_t kept = 0;
    for (size_t i = 0; i < deferred_.size(); ++i) {
      if (deferred_[i].push.clock < BoundaryClock()) {
        ApplyPush(deferred_[i].push);
        Acknowledge(deferred_[i].frame.from, deferred_[i].push);
      } else {
        if (kept != i) deferred_[kept] = std::move(deferred_[i]);
        ++kept;
      }
    }
    deferred_.resize(kept);
  }
}

bool ShardServer::Ready(const PsPull& pull) const {
  if (pull.flags & kPsPullUnclocked) return true;
  if (options_.consistency == Consistency::kAsync) return true;
  return static_cast<uint64_t>(pull.clock) <=
         static_cast<uint64_t>(MinClock()) + options_.staleness;
}

void ShardServer::Answer(int from, const PsPull& pull) {
  const uint32_t min_clock = MinClock();
  if (!(pull.flags & kPsPullUnclocked)) {
    stats_.max_clock_gap =
        std::max(stats_.max_clock_gap, static_cast<int64_t>(pull.clock) - min_clock);
  }
  std::vector<uint8_t> frame =
      EncodePsPullReplyHead(pull.request, min_clock, cols_, pull.keys.size(), transport_->rank());
  for (uint32_t key : pull.keys) {
    AppendPsWords(&frame, values_.data() + static_cast<size_t>(divider_.Divide(key)) * cols_,
                  cols_);
  }
  ++stats_.pulls;
  stats_.rows_pulled += pull.keys.size();
  Status sent = transport_->Send(from, std::move(frame));
  if (!sent.ok())
    spdlog::warn("shard {}: pull reply to rank {}: {}", options_.shard, from, sent.message());
}

void ShardServer::ApplyPush(const PsPushView& push) {
  const float lr = LearningRate(push.epoch);
  std::vector<float> gradient(cols_);
  for (uint64_t i = 0; i < push.rows; ++i) {
    const size_t local = divider_.Divide(push.Key(i));
    push.CopyRow(i, gradient.data());
    options_.optimizer.Apply(lr, values_.data() + local * cols_,
                             state_.empty() ? nullptr : state_.data() + local * cols_,
                             gradient.data(), cols_);
  }
  ++stats_.pushes;
  stats_.rows_pushed += push.rows;
}

bool ShardServer::ApplyAlone(const PsPushView& push, float* gradient) {
  // The sum of one push whose keys are distinct is the push itself (0 + g:
  // the bits of the summed path), and distinct rows' steps commute, so each
  // row is stepped as it is read, without the pass through sum_.
  bool distinct = true;
  for (uint64_t i = 0; i < push.rows; ++i) {
    uint8_t& mark = is_touched_[divider_.Divide(push.Key(i))];
    distinct &= !mark;
    mark = 1;
  }
  for (uint64_t i = 0; i < push.rows; ++i) is_touched_[divider_.Divide(push.Key(i))] = 0;
  if (!distinct) return false;
  const float lr = LearningRate(push.epoch);
  for (uint64_t i = 0; i < push.rows; ++i) {
    const size_t local = divider_.Divide(push.Key(i));
    // Read from the frame element by element: copying the row first (a
    // memcpy call of 4 x cols bytes) and reading it back stalled on
    // store-to-load forwarding.
    for (uint32_t j = 0; j < cols_; ++j) gradient[j] = 0.0f + push.Gradient(i, j);
    options_.optimizer.Apply(lr, values_.data() + local * cols_,
                             state_.empty() ? nullptr : state_.data() + local * cols_, gradient,
                             cols_);
  }
  ++stats_.pushes;
  stats_.rows_pushed += push.rows;
  return true;
}

void ShardServer::CompleteBspClocks() {
  std::vector<float> gradient(cols_);
  while (!bsp_pushes_.empty()) {
    auto first = bsp_pushes_.begin();
    std::vector<BufferedPush>& slots = first->second;
    if (std::any_of(slots.begin(), slots.end(),
                    [](const BufferedPush& p) { return p.frame.bytes.empty(); }))
      return;
    // Every worker's push of this clock is here: sum them per row in worker
    // order, then one optimizer step per touched row (in first-touch order).
    uint32_t epoch = 0;
    std::vector<PsPushAck> acks(slots.size());
    const bool alone = slots.size() == 1 && ApplyAlone(slots[0].push, gradient.data());
    if (alone) acks[0] = PsPushAck{slots[0].push.request, slots[0].push.clock};
    for (size_t w = 0; !alone && w < slots.size(); ++w) {
      const PsPushView* push = &slots[w].push;  // checked when it arrived
      if (w == 0) epoch = push->epoch;
      acks[w] = PsPushAck{push->request, push->clock};
      for (uint64_t i = 0; i < push->rows; ++i) {
        const uint32_t local = divider_.Divide(push->Key(i));
        float* sum = sum_.data() + static_cast<size_t>(local) * cols_;
        for (uint32_t j = 0; j < cols_; ++j) sum[j] += push->Gradient(i, j);
        if (!is_touched_[local]) {
          is_touched_[local] = 1;
          touched_.push_back(local);
        }
      }
      ++stats_.pushes;
      stats_.rows_pushed += push->rows;
    }
    const float lr = LearningRate(epoch);
    for (uint32_t local : touched_) {
      float* sum = sum_.data() + static_cast<size_t>(local) * cols_;
      options_.optimizer.Apply(lr, values_.data() + static_cast<size_t>(local) * cols_,
                               state_.empty() ? nullptr : state_.data() + local * cols_, sum,
                               cols_);
      std::fill(sum, sum + cols_, 0.0f);
      is_touched_[local] = 0;
    }
    touched_.clear();
    for (size_t w = 0; w < slots.size(); ++w) {
      const int to = slots[w].frame.from;
      Status sent = transport_->Send(to, EncodePsPushAck(acks[w], transport_->rank()));
      if (!sent.ok())
        spdlog::warn("shard {}: ack to rank {}: {}", options_.shard, to, sent.message());
    }
    completed_ = first->first + 1;
    bsp_pushes_.erase(first);
    MaybeSave();  // before a later clock is applied
  }
}

void ShardServer::ServePending() {
  size_t kept = 0;
  for (size_t i = 0; i < pending_.size(); ++i) {
    if (Ready(pending_[i].pull)) {
      Answer(pending_[i].from, pending_[i].pull);
    } else {
      if (kept != i) pending_[kept] = std::move(pending_[i]);
      ++kept;
    }
  }
  pending_.resize(kept);
}

void ShardServer::HandlePull(int from, PsPull pull) {
  const int worker = WorkerOf(from);
  const bool unclocked = pull.flags & kPsPullUnclocked;
  if (worker < 0 && !(from == options_.driver_rank && unclocked)) {
    Refuse(from, "a PsPull from rank " + std::to_string(from) +
                     ", which is not a worker rank (only the driver may read unclocked)");
    return;
  }
  const std::string bad =
      CheckKeys(reinterpret_cast<const uint8_t*>(pull.keys.data()), pull.keys.size());
  if (!bad.empty()) {
    Refuse(from, "PsPull " + std::to_string(pull.request) + " from rank " + std::to_string(from) +
                     ": " + bad);
    return;
  }
  if (Ready(pull)) {
    Answer(from, pull);
    return;
  }
  ++stats_.pulls_waited;
  pending_.push_back(PendingPull{from, static_cast<uint32_t>(worker), std::move(pull)});
}

void ShardServer::HandlePush(int from, Envelope& e, const PsPushView& push) {
  const int worker = WorkerOf(from);
  const std::string where =
      "PsPush " + std::to_string(push.request) + " from rank " + std::to_string(from);
  if (worker < 0) {
    Refuse(from, where + ": rank " + std::to_string(from) + " is not a worker rank");
    return;
  }
  if (push.cols != cols_) {
    Refuse(from, where + " has rows of " + std::to_string(push.cols) + " floats, expected " +
                     std::to_string(cols_));
    return;
  }
  const std::string bad = CheckKeys(push.keys, push.rows);
  if (!bad.empty()) {
    Refuse(from, where + ": " + bad);
    return;
  }
  uint32_t& clock = clocks_[static_cast<size_t>(worker)];
  if (push.clock != clock) {
    Refuse(from, where + " is for clock " + std::to_string(push.clock) + ", expected clock " +
                     std::to_string(clock) + " (each worker pushes once per clock, in order)");
    return;
  }
  ++clock;
  if (options_.consistency == Consistency::kBsp) {
    std::vector<BufferedPush>& slots = bsp_pushes_[push.clock];
    slots.resize(options_.worker_ranks.size());
    // The view points into the frame's buffer, which moving the frame keeps.
    slots[static_cast<size_t>(worker)] = BufferedPush{std::move(e), push};
    CompleteBspClocks();
  } else if (push.clock >= BoundaryClock()) {
    // Beyond the next checkpoint: applied once it is saved (MaybeSave).
    deferred_.push_back(BufferedPush{std::move(e), push});
    MaybeSave();
  } else {
    ApplyPush(push);
    Acknowledge(from, push);
    MaybeSave();
  }
  ServePending();
}

Status ShardServer::Handle(Envelope& e, bool* done) {
  Result<FrameView> frame = DecodeFrame(e);
  const bool from_driver = e.from == options_.driver_rank;
  if (!frame.ok()) {
    if (WorkerOf(e.from) >= 0) {
      Refuse(e.from, "a frame from rank " + std::to_string(e.from) +
                         " does not decode: " + frame.status().message());
    } else {
      spdlog::warn("shard {}: dropped a frame from rank {}: {}", options_.shard, e.from,
                   frame.status().message());
    }
    return Status::Ok();
  }
  const MessageType type = frame->header.type;
  if (from_driver && type == MessageType::kShutdown) {
    Result<Shutdown> shutdown = DecodeMessage<Shutdown>(*frame);
    *done = true;
    if (!start_error_.ok()) return start_error_;
    if (shutdown.ok() && shutdown->failed)
      return Status::Aborted("the driver ended the job: " + shutdown->reason);
    const PsMemory memory{PsRole::kShardServer, options_.shard, PeakRssBytes(),
                          SliceBytes(options_, items_, cols_)};
    Status sent =
        transport_->Send(options_.driver_rank, EncodePsMemory(memory, transport_->rank()));
    if (!sent.ok()) spdlog::warn("shard {}: memory report: {}", options_.shard, sent.message());
    return Status::Ok();
  }
  if (from_driver && type == MessageType::kPsStart) {
    if (started_ || !start_error_.ok()) {
      spdlog::warn("shard {}: dropped a second PsStart from the driver", options_.shard);
      return Status::Ok();
    }
    Result<PsStart> start = DecodePsStart(*frame);
    if (!start.ok())
      return start.status().WithContext("shard server " + std::to_string(options_.shard));
    const uint64_t need = SliceBytes(options_, start->items, start->cols);
    if (options_.memory_limit > 0 && need > options_.memory_limit) {
      const uint32_t rows = options_.sharding.RowsOf(options_.shard, start->items);
      const std::string why = fmt::format(
          "holding {} of the {} item rows ({} floats each{}{}) needs {}, more than "
          "cluster.memory_limit = {}; use more shard servers (cluster.shard_servers = {} "
          "holds about {} per shard)",
          rows, start->items, start->cols, options_.optimizer.HasState() ? ", Adagrad state" : "",
          options_.consistency == Consistency::kBsp ? ", bsp gradient sums" : "", FormatBytes(need),
          FormatBytes(options_.memory_limit), options_.sharding.shards * 2, FormatBytes(need / 2));
      // The driver ends the job on every rank; serve on until it does.
      Refuse(options_.driver_rank, why);
      start_error_ = Status::InvalidArgument(why);
      return Status::Ok();  // not started: workers' frames wait, unanswered
    }
    if (Status started = Start(*start); !started.ok()) {
      // A checkpoint that cannot be resumed from: the driver ends the job.
      Refuse(options_.driver_rank, started.message());
      start_error_ = started;
      return Status::Ok();
    }
    if (!Serving()) return Status::Ok();  // the rows come first
    std::vector<Envelope> early = std::move(early_);
    for (Envelope& waiting : early) FEDREC_RETURN_IF_ERROR(Handle(waiting, done));
    return Status::Ok();
  }
  if (from_driver && type == MessageType::kPsRows) return Assign(*frame, done);
  if (from_driver && type == MessageType::kPsCheckpoint) {
    Result<PsCheckpoint> committed = DecodePsCheckpoint(*frame);
    if (!committed.ok()) {
      spdlog::warn("shard {}: {}", options_.shard, committed.status().message());
    } else if (store_) {
      store_->Committed(committed->epoch);
    }
    return Status::Ok();
  }
  if (type != MessageType::kPsPull && type != MessageType::kPsPush) {
    if (WorkerOf(e.from) >= 0) {
      Refuse(e.from, std::string("a ") + MessageTypeName(type) + " frame from rank " +
                         std::to_string(e.from) + ", expected PsPull or PsPush");
    } else {
      spdlog::warn("shard {}: dropped a {} frame from rank {}", options_.shard,
                   MessageTypeName(type), e.from);
    }
    return Status::Ok();
  }
  if (!Serving()) {
    early_.push_back(std::move(e));
    return Status::Ok();
  }
  if (type == MessageType::kPsPull) {
    Result<PsPull> pull = DecodePsPull(*frame);
    if (!pull.ok()) {
      Refuse(e.from, pull.status().message());
      return Status::Ok();
    }
    HandlePull(e.from, std::move(pull).value());
    return Status::Ok();
  }
  Result<PsPushView> push = DecodePsPush(*frame);
  if (!push.ok()) {
    Refuse(e.from, push.status().message());
    return Status::Ok();
  }
  HandlePush(e.from, e, *push);
  return Status::Ok();
}

Status ShardServer::Assign(const FrameView& frame, bool* done) {
  const std::string who = "shard server " + std::to_string(options_.shard);
  if (!options_.rows_from_driver || !started_) {
    return Status::InvalidArgument(who + ": the driver sent PsRows " +
                                   (started_
                                        ? "to a shard whose rows start from its own initial values"
                                        : "before PsStart, expected PsStart first"));
  }
  Result<PsPushView> rows = DecodePsRows(frame);
  if (!rows.ok()) return rows.status().WithContext(who + ", the driver's rows");
  if (rows->cols != cols_) {
    return Status::InvalidArgument(
        fmt::format("{}: the driver's rows have {} floats, expected {}", who, rows->cols, cols_));
  }
  if (std::string bad = CheckKeys(rows->keys, rows->rows); !bad.empty())
    return Status::InvalidArgument(who + ", the driver's rows: " + bad);
  if (rows->rows > rows_ - assigned_) {
    return Status::InvalidArgument(
        fmt::format("{}: the driver assigned {} rows more, beyond the {} this shard holds", who,
                    rows->rows, rows_));
  }
  for (uint64_t i = 0; i < rows->rows; ++i)
    rows->CopyRow(i, values_.data() + static_cast<size_t>(divider_.Divide(rows->Key(i))) * cols_);
  assigned_ += static_cast<uint32_t>(rows->rows);
  if (!Serving()) return Status::Ok();
  std::vector<Envelope> early = std::move(early_);
  for (Envelope& waiting : early) FEDREC_RETURN_IF_ERROR(Handle(waiting, done));
  return Status::Ok();
}

Status ShardServer::Serve() {
  for (bool done = false; !done;) {
    Result<Envelope> e = transport_->Recv(options_.idle_timeout);
    if (!e.ok()) {
      if (e.status().code() == Status::Code::kTimeout) {
        return Status::Timeout("shard server " + std::to_string(options_.shard) +
                               ": no frame for " +
                               std::to_string(options_.idle_timeout.count() / 1000) + " s");
      }
      return e.status().WithContext("shard server " + std::to_string(options_.shard));
    }
    FEDREC_RETURN_IF_ERROR(Handle(*e, &done));
  }
  return Status::Ok();
}

Status ShardServer::HandleQueued() {
  while (!done_) {
    Result<Envelope> e = transport_->Recv(std::chrono::milliseconds(0));
    if (!e.ok()) {
      if (e.status().code() == Status::Code::kTimeout) return Status::Ok();
      done_ = true;
      return e.status().WithContext("shard server " + std::to_string(options_.shard));
    }
    Status s = Handle(*e, &done_);
    if (!s.ok()) {
      done_ = true;
      return s;
    }
  }
  return Status::Ok();
}

}  // namespace fedrec
