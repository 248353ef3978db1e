#include "protocol/ps_client.h"

#include <algorithm>
#include <cstring>

#include "protocol/messages.h"

namespace fedrec {

PsClient::PsClient(Transport* transport, std::vector<int> shard_ranks, uint32_t cols,
                   int driver_rank)
    : transport_(transport),
      shard_ranks_(std::move(shard_ranks)),
      sharding_{static_cast<uint32_t>(shard_ranks_.size())},
      divider_(std::max<uint32_t>(sharding_.shards, 1)),
      cols_(cols),
      driver_rank_(driver_rank),
      shard_keys_(shard_ranks_.size()) {}

int PsClient::ShardOf(int rank) const {
  for (size_t s = 0; s < shard_ranks_.size(); ++s)
    if (shard_ranks_[s] == rank) return static_cast<int>(s);
  return -1;
}

void PsClient::Split(std::span<const uint32_t> keys, Ticket* t) {
  const size_t shards = shard_ranks_.size();
  t->answered.assign(shards, 0);
  t->owed = static_cast<uint32_t>(shards);
  t->rows = keys.size();
  t->whole = shards == 1;
  if (t->whole) return;  // the keys and rows go as they are
  t->positions.assign(shards, {});
  for (auto& k : shard_keys_) k.clear();
  for (uint32_t j = 0; j < keys.size(); ++j) {
    const uint32_t s = divider_.Mod(keys[j]);  // = sharding_.ShardOf(keys[j])
    t->positions[s].push_back(j);
    shard_keys_[s].push_back(keys[j]);
  }
}

uint64_t PsClient::Pull(std::span<const uint32_t> keys, float* out, uint32_t clock,
                        uint32_t flags) {
  const uint64_t id = next_ticket_++;
  Ticket& t = tickets_[id];
  t.pull = true;
  t.clock = clock;
  t.clocked = !(flags & kPsPullUnclocked);
  t.out = out;
  Split(keys, &t);
  for (size_t s = 0; s < shard_ranks_.size(); ++s) {
    Status sent = transport_->Send(
        shard_ranks_[s], EncodePsPull(id, clock, flags, ShardKeys(s, keys, t), transport_->rank()));
    if (!sent.ok() && t.error.ok())
      t.error = sent.WithContext("pull from shard " + std::to_string(s));
  }
  ++stats_.pulls;
  stats_.rows_pulled += keys.size();
  return id;
}

uint64_t PsClient::Push(std::span<const uint32_t> keys, const float* gradients, uint32_t clock,
                        uint32_t epoch) {
  const uint64_t id = next_ticket_++;
  Ticket& t = tickets_[id];
  t.clock = clock;
  Split(keys, &t);
  for (size_t s = 0; s < shard_ranks_.size(); ++s) {
    const std::span<const uint32_t> shard_keys = ShardKeys(s, keys, t);
    std::vector<uint8_t> frame =
        EncodePsPushHead(id, clock, epoch, cols_, shard_keys.size(), transport_->rank());
    AppendPsWords(&frame, shard_keys.data(), shard_keys.size());
    if (t.whole) {
      AppendPsWords(&frame, gradients, shard_keys.size() * cols_);
    } else {
      for (uint32_t j : t.positions[s])
        AppendPsWords(&frame, gradients + static_cast<size_t>(j) * cols_, cols_);
    }
    Status sent = transport_->Send(shard_ranks_[s], std::move(frame));
    if (!sent.ok() && t.error.ok())
      t.error = sent.WithContext("push to shard " + std::to_string(s));
  }
  // The pull positions are not needed for a push.
  t.positions.clear();
  ++stats_.pushes;
  stats_.rows_pushed += keys.size();
  return id;
}

Status PsClient::Handle(Envelope e) {
  const int shard = ShardOf(e.from);
  Result<FrameView> frame = DecodeFrame(e);
  if (shard < 0 || !frame.ok()) {
    if (frame.ok() && e.from == driver_rank_ && frame->header.type == MessageType::kShutdown) {
      Result<Shutdown> shutdown = DecodeMessage<Shutdown>(*frame);
      failure_ = Status::Aborted("the driver ended the job" +
                                 (shutdown.ok() ? ": " + shutdown->reason : std::string()));
    }
    other_.push_back(std::move(e));
    return Status::Ok();
  }
  const std::string from =
      "shard " + std::to_string(shard) + " (rank " + std::to_string(e.from) + ")";
  const MessageType type = frame->header.type;
  if (type == MessageType::kSiteError) {
    Result<SiteError> error = DecodeMessage<SiteError>(*frame);
    failure_ = Status::InvalidArgument(
        from + " refused a request: " + (error.ok() ? error->message : error.status().message()));
    return Status::Ok();
  }
  uint64_t request = 0;
  Result<PsPullReplyView> reply = Status::NotFound("");
  if (type == MessageType::kPsPullReply) {
    reply = DecodePsPullReply(*frame);
    if (!reply.ok()) return reply.status().WithContext(from);
    request = reply->request;
  } else if (type == MessageType::kPsPushAck) {
    Result<PsPushAck> ack = DecodePsPushAck(*frame);
    if (!ack.ok()) return ack.status().WithContext(from);
    request = ack->request;
  } else {
    return Status::Corruption(from + " sent a " + MessageTypeName(type) +
                              " frame, expected PsPullReply or PsPushAck");
  }
  auto it = tickets_.find(request);
  if (it == tickets_.end() || it->second.answered[static_cast<size_t>(shard)] ||
      it->second.pull != (type == MessageType::kPsPullReply)) {
    return Status::Corruption(
        from + " answered request " + std::to_string(request) + ", which is not an open " +
        (type == MessageType::kPsPullReply ? "pull" : "push") + " of this client");
  }
  Ticket& t = it->second;
  if (reply.ok()) {
    const uint64_t expected = t.whole ? t.rows : t.positions[static_cast<size_t>(shard)].size();
    if (reply->rows != expected || reply->cols != cols_) {
      return Status::Corruption(from + " answered pull " + std::to_string(request) + " with " +
                                std::to_string(reply->rows) + " rows of " +
                                std::to_string(reply->cols) + " floats, expected " +
                                std::to_string(expected) + " rows of " + std::to_string(cols_));
    }
    if (t.whole) {
      if (expected > 0) std::memcpy(t.out, reply->values, expected * cols_ * sizeof(float));
    } else {
      const std::vector<uint32_t>& positions = t.positions[static_cast<size_t>(shard)];
      for (size_t i = 0; i < positions.size(); ++i)
        reply->CopyRow(i, t.out + static_cast<size_t>(positions[i]) * cols_);
    }
    if (t.clocked) {
      stats_.max_clock_gap =
          std::max(stats_.max_clock_gap, static_cast<int64_t>(t.clock) - reply->min_clock);
    }
  }
  t.answered[static_cast<size_t>(shard)] = 1;
  // A completed push has nothing left to hand over: forget it (Wait on it
  // then returns at once). A completed pull stays until Wait collects it.
  if (--t.owed == 0 && !t.pull && t.error.ok()) tickets_.erase(it);
  return Status::Ok();
}

Status PsClient::Poll(std::chrono::milliseconds timeout) {
  Result<Envelope> e = transport_->Recv(timeout);
  if (!e.ok()) return e.status();
  FEDREC_RETURN_IF_ERROR(Handle(std::move(e).value()));
  return failure_;
}

Status PsClient::Wait(uint64_t ticket, std::chrono::milliseconds timeout) {
  for (;;) {
    // Looked up anew after every frame: a push is forgotten once complete.
    auto it = tickets_.find(ticket);
    if (it == tickets_.end()) return failure_;  // complete (or already waited for)
    Ticket& t = it->second;
    if (t.owed == 0 || !t.error.ok() || !failure_.ok()) {
      Status error = t.error;
      tickets_.erase(it);
      if (!failure_.ok()) return failure_;
      return error;
    }
    Status s = Poll(timeout);
    if (s.code() == Status::Code::kTimeout) {
      std::string owed;
      for (size_t sh = 0; sh < shard_ranks_.size(); ++sh) {
        if (!t.answered[sh])
          owed += (owed.empty() ? "" : ", ") + std::to_string(sh) + " (rank " +
                  std::to_string(shard_ranks_[sh]) + ")";
      }
      return Status::Timeout(std::string(t.pull ? "pull" : "push") + " at clock " +
                             std::to_string(t.clock) + ": no answer from shard " + owed +
                             " within " + std::to_string(timeout.count()) + " ms");
    }
    FEDREC_RETURN_IF_ERROR(s);
  }
}

Status PsClient::WaitAll(std::chrono::milliseconds timeout) {
  while (!tickets_.empty()) FEDREC_RETURN_IF_ERROR(Wait(tickets_.begin()->first, timeout));
  return failure_;
}

std::optional<Envelope> PsClient::TakeOther() {
  if (other_.empty()) return std::nullopt;
  Envelope e = std::move(other_.front());
  other_.pop_front();
  return e;
}

}  // namespace fedrec
