#include "protocol/ps_messages.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

#include "base/little_endian.h"

namespace fedrec {
namespace {

static_assert(std::endian::native == std::endian::little,
              "parameter-server frames copy floats and keys as stored: little-endian hosts only");

// A frame of `type` with `payload` bytes after the header, the header filled
// in. With `present` < payload, only the first `present` payload bytes exist
// yet (zero), and the caller appends the rest (the capacity holds them).
std::vector<uint8_t> NewFrame(MessageType type, uint32_t sender, size_t payload,
                              size_t present = SIZE_MAX) {
  std::vector<uint8_t> frame;
  frame.reserve(kFrameHeaderSize + payload + kFrameSealingRoom);
  frame.resize(kFrameHeaderSize + std::min(payload, present));
  FrameHeader header;
  header.type = type;
  header.sender = sender;
  header.payload_length = payload;
  EncodeFrameHeader(header, std::span<uint8_t, kFrameHeaderSize>(frame.data(), kFrameHeaderSize));
  return frame;
}

// Writes fields in order after the header.
class Writer {
 public:
  explicit Writer(std::vector<uint8_t>* frame) : p_(frame->data() + kFrameHeaderSize) {}
  template <std::unsigned_integral T>
  Writer& Put(T v) {
    PutLe<T>(p_, v);
    p_ += sizeof(T);
    return *this;
  }
  Writer& PutF32(float v) { return Put(std::bit_cast<uint32_t>(v)); }
  Writer& PutF64(double v) { return Put(std::bit_cast<uint64_t>(v)); }
  Writer& PutBytes(const void* data, size_t n) {
    // An empty span's data() may be null, which memcpy may not be given.
    if (n != 0) std::memcpy(p_, data, n);
    p_ += n;
    return *this;
  }
  uint8_t* at() const { return p_; }

 private:
  uint8_t* p_;
};

// Reads fields in order, checking each against the bytes left; errors name
// the message, its sender and the field.
class Reader {
 public:
  explicit Reader(const FrameView& frame)
      : frame_(frame), p_(frame.payload.data()), end_(p_ + frame.payload.size()) {}

  std::string Where() const {
    return std::string(MessageTypeName(frame_.header.type)) + " from rank " +
           std::to_string(frame_.header.sender);
  }
  template <std::unsigned_integral T>
  bool Get(T* v, const char* field) {
    if (!Need(sizeof(T), field)) return false;
    *v = GetLe<T>(p_);
    p_ += sizeof(T);
    return true;
  }
  bool GetF32(float* v, const char* field) {
    uint32_t bits;
    if (!Get(&bits, field)) return false;
    *v = std::bit_cast<float>(bits);
    return true;
  }
  bool GetF64(double* v, const char* field) {
    uint64_t bits;
    if (!Get(&bits, field)) return false;
    *v = std::bit_cast<double>(bits);
    return true;
  }
  // `count` elements of `size` bytes: the count checked against what is left
  // before any multiplication can overflow.
  const uint8_t* Take(uint64_t count, uint64_t size, const char* field) {
    if (!status_.ok()) return nullptr;
    const uint64_t left = static_cast<uint64_t>(end_ - p_);
    if (size != 0 && count > left / size) {
      status_ = Status::Corruption(Where() + ": " + field + " claims " + std::to_string(count) +
                                   " x " + std::to_string(size) + " bytes but only " +
                                   std::to_string(left) + " payload bytes remain");
      return nullptr;
    }
    const uint8_t* at = p_;
    p_ += count * size;
    return at;
  }
  // rows x cols floats, the product formed without overflow.
  const uint8_t* TakeFloats(uint64_t rows, uint64_t cols, const char* field) {
    const unsigned __int128 bytes = static_cast<unsigned __int128>(rows) * cols * sizeof(float);
    const uint64_t left = static_cast<uint64_t>(end_ - p_);
    if (status_.ok() && bytes > left) {
      status_ = Status::Corruption(Where() + ": " + field + " claims " + std::to_string(rows) +
                                   " rows of " + std::to_string(cols) + " floats but only " +
                                   std::to_string(left) + " payload bytes remain");
      return nullptr;
    }
    return status_.ok() ? Take(rows * cols, sizeof(float), field) : nullptr;
  }
  // OK when every payload byte was read; else the error so far or the trailing bytes.
  Status Finish() {
    if (!status_.ok()) return status_;
    if (p_ != end_) {
      return Status::Corruption(Where() + ": " + std::to_string(end_ - p_) +
                                " trailing bytes after the message (payload of " +
                                std::to_string(frame_.payload.size()) + " bytes)");
    }
    return Status::Ok();
  }
  const Status& status() const { return status_; }

 private:
  bool Need(size_t n, const char* field) {
    if (!status_.ok()) return false;
    if (static_cast<size_t>(end_ - p_) < n) {
      status_ = Status::Corruption(Where() + ": truncated at field " + field + ": needs " +
                                   std::to_string(n) + " bytes, " + std::to_string(end_ - p_) +
                                   " remain");
      return false;
    }
    return true;
  }

  const FrameView& frame_;
  const uint8_t* p_;
  const uint8_t* end_;
  Status status_;
};

Status ExpectType(const FrameView& frame, MessageType type) {
  if (frame.header.type == type) return Status::Ok();
  return Status::Corruption("expected a " + std::string(MessageTypeName(type)) + " frame but got " +
                            MessageTypeName(frame.header.type) + " from rank " +
                            std::to_string(frame.header.sender));
}

constexpr size_t kPullFixed = 8 + 4 + 4 + 8;
constexpr size_t kReplyFixed = 8 + 4 + 4 + 8;
constexpr size_t kPushFixed = 8 + 4 + 4 + 4 + 8;

}  // namespace

std::vector<uint8_t> EncodePsPull(uint64_t request, uint32_t clock, uint32_t flags,
                                  std::span<const uint32_t> keys, uint32_t sender) {
  std::vector<uint8_t> frame =
      NewFrame(MessageType::kPsPull, sender, kPullFixed + keys.size() * sizeof(uint32_t));
  Writer(&frame)
      .Put<uint64_t>(request)
      .Put<uint32_t>(clock)
      .Put<uint32_t>(flags)
      .Put<uint64_t>(keys.size())
      .PutBytes(keys.data(), keys.size() * sizeof(uint32_t));
  return frame;
}

std::vector<uint8_t> EncodePsPull(const PsPull& m, uint32_t sender) {
  return EncodePsPull(m.request, m.clock, m.flags, m.keys, sender);
}

std::vector<uint8_t> EncodePsPullReplyHead(uint64_t request, uint32_t min_clock, uint32_t cols,
                                           uint64_t rows, uint32_t sender) {
  std::vector<uint8_t> frame = NewFrame(MessageType::kPsPullReply, sender,
                                        kReplyFixed + rows * cols * sizeof(float), kReplyFixed);
  Writer(&frame).Put<uint64_t>(request).Put<uint32_t>(min_clock).Put<uint32_t>(cols).Put<uint64_t>(
      rows);
  return frame;
}

std::vector<uint8_t> EncodePsPullReplyShell(uint64_t request, uint32_t min_clock, uint32_t cols,
                                            uint64_t rows, uint32_t sender, size_t* values_at) {
  std::vector<uint8_t> frame = EncodePsPullReplyHead(request, min_clock, cols, rows, sender);
  *values_at = frame.size();
  frame.resize(frame.size() + rows * cols * sizeof(float));
  return frame;
}

std::vector<uint8_t> EncodePsPushHead(uint64_t request, uint32_t clock, uint32_t epoch,
                                      uint32_t cols, uint64_t rows, uint32_t sender,
                                      MessageType type) {
  std::vector<uint8_t> frame =
      NewFrame(type, sender, kPushFixed + rows * (sizeof(uint32_t) + cols * 4), kPushFixed);
  Writer(&frame)
      .Put<uint64_t>(request)
      .Put<uint32_t>(clock)
      .Put<uint32_t>(epoch)
      .Put<uint32_t>(cols)
      .Put<uint64_t>(rows);
  return frame;
}

std::vector<uint8_t> EncodePsPushShell(uint64_t request, uint32_t clock, uint32_t epoch,
                                       uint32_t cols, uint64_t rows, uint32_t sender,
                                       size_t* keys_at, size_t* gradients_at, MessageType type) {
  std::vector<uint8_t> frame = EncodePsPushHead(request, clock, epoch, cols, rows, sender, type);
  *keys_at = frame.size();
  *gradients_at = *keys_at + rows * sizeof(uint32_t);
  frame.resize(frame.size() + rows * (sizeof(uint32_t) + cols * 4));
  return frame;
}

std::vector<uint8_t> EncodePsRows(uint64_t request, uint32_t epoch, uint32_t cols,
                                  std::span<const uint32_t> keys, const float* values,
                                  uint32_t sender) {
  std::vector<uint8_t> frame =
      EncodePsPushHead(request, 0, epoch, cols, keys.size(), sender, MessageType::kPsRows);
  AppendPsWords(&frame, keys.data(), keys.size());
  AppendPsWords(&frame, values, keys.size() * cols);
  return frame;
}

std::vector<uint8_t> EncodePsPushAck(const PsPushAck& m, uint32_t sender) {
  std::vector<uint8_t> frame = NewFrame(MessageType::kPsPushAck, sender, 8 + 4);
  Writer(&frame).Put<uint64_t>(m.request).Put<uint32_t>(m.clock);
  return frame;
}

std::vector<uint8_t> EncodePsStart(const PsStart& m, uint32_t sender) {
  std::vector<uint8_t> frame =
      NewFrame(MessageType::kPsStart, sender, 9 * 4 + m.checkpoint_dir.size());
  Writer(&frame)
      .Put<uint32_t>(m.items)
      .Put<uint32_t>(m.cols)
      .Put<uint32_t>(m.steps_per_epoch)
      .Put<uint32_t>(m.epochs)
      .PutF32(m.global_mean)
      .Put<uint32_t>(m.workers)
      .Put<uint32_t>(m.first_epoch)
      .Put<uint32_t>(m.checkpoint_every)
      .Put<uint32_t>(static_cast<uint32_t>(m.checkpoint_dir.size()))
      .PutBytes(m.checkpoint_dir.data(), m.checkpoint_dir.size());
  return frame;
}

std::vector<uint8_t> EncodePsReport(const PsReport& m, uint32_t sender) {
  std::vector<uint8_t> frame = NewFrame(MessageType::kPsReport, sender, 4 + 4 + 1 + 6 * 8);
  Writer(&frame)
      .Put<uint32_t>(m.epoch)
      .Put<uint32_t>(m.clock)
      .Put<uint8_t>(m.final ? 1 : 0)
      .PutF64(m.train_squared_error)
      .Put<uint64_t>(m.train_count)
      .PutF64(m.squared_error)
      .PutF64(m.absolute_error)
      .Put<uint64_t>(m.count)
      .PutF64(m.rating_sum);
  return frame;
}

const char* PsRoleName(PsRole role) {
  switch (role) {
    case PsRole::kDriver:
      return "driver";
    case PsRole::kShardServer:
      return "shard server";
    case PsRole::kWorker:
      return "worker";
  }
  return "unknown role";
}

std::vector<uint8_t> EncodePsMemory(const PsMemory& m, uint32_t sender) {
  std::vector<uint8_t> frame = NewFrame(MessageType::kPsMemory, sender, 1 + 4 + 8 + 8);
  Writer(&frame)
      .Put<uint8_t>(static_cast<uint8_t>(m.role))
      .Put<uint32_t>(m.index)
      .Put<uint64_t>(m.peak_rss_bytes)
      .Put<uint64_t>(m.slice_bytes);
  return frame;
}

std::vector<uint8_t> EncodePsCheckpoint(const PsCheckpoint& m, uint32_t sender) {
  std::vector<uint8_t> frame = NewFrame(MessageType::kPsCheckpoint, sender, 4);
  Writer(&frame).Put<uint32_t>(m.epoch);
  return frame;
}

Result<PsPull> DecodePsPull(const FrameView& frame) {
  FEDREC_RETURN_IF_ERROR(ExpectType(frame, MessageType::kPsPull));
  Reader r(frame);
  PsPull m;
  uint64_t n = 0;
  r.Get(&m.request, "request");
  r.Get(&m.clock, "clock");
  r.Get(&m.flags, "flags");
  r.Get(&n, "key count");
  const uint8_t* keys = r.Take(n, sizeof(uint32_t), "key count");
  FEDREC_RETURN_IF_ERROR(r.Finish());
  if (m.flags & ~uint32_t{kPsPullUnclocked}) {
    return Status::Corruption(r.Where() + ": unknown flags " + std::to_string(m.flags) +
                              ", expected 0 or " + std::to_string(kPsPullUnclocked));
  }
  // No memcpy for an empty list: keys.data() is then null, which memcpy may not be given.
  m.keys.resize(n);
  if (n != 0) std::memcpy(m.keys.data(), keys, n * sizeof(uint32_t));
  return m;
}

Result<PsPullReplyView> DecodePsPullReply(const FrameView& frame) {
  FEDREC_RETURN_IF_ERROR(ExpectType(frame, MessageType::kPsPullReply));
  Reader r(frame);
  PsPullReplyView m;
  r.Get(&m.request, "request");
  r.Get(&m.min_clock, "min_clock");
  r.Get(&m.cols, "cols");
  r.Get(&m.rows, "row count");
  if (r.status().ok() && m.cols == 0) {
    return Status::Corruption(r.Where() + ": cols is 0, expected at least 1 float per row");
  }
  m.values = r.TakeFloats(m.rows, m.cols, "values (row count x cols)");
  FEDREC_RETURN_IF_ERROR(r.Finish());
  return m;
}

namespace {
Result<PsPushView> DecodeKeyedRows(const FrameView& frame, MessageType type) {
  FEDREC_RETURN_IF_ERROR(ExpectType(frame, type));
  Reader r(frame);
  PsPushView m;
  r.Get(&m.request, "request");
  r.Get(&m.clock, "clock");
  r.Get(&m.epoch, "epoch");
  r.Get(&m.cols, "cols");
  r.Get(&m.rows, "row count");
  if (r.status().ok() && m.cols == 0) {
    return Status::Corruption(r.Where() + ": cols is 0, expected at least 1 float per row");
  }
  m.keys = r.Take(m.rows, sizeof(uint32_t), "keys (row count)");
  m.gradients = r.TakeFloats(m.rows, m.cols, "gradients (row count x cols)");
  FEDREC_RETURN_IF_ERROR(r.Finish());
  // A non-finite gradient would poison the row for good: refused, naming it.
  const uint64_t values = m.rows * m.cols;
  unsigned bad = 0;
  for (uint64_t i = 0; i < values; ++i) {
    uint32_t bits;
    std::memcpy(&bits, m.gradients + i * 4, 4);
    bad |= static_cast<unsigned>((bits & 0x7f800000u) == 0x7f800000u);
  }
  if (bad) {
    for (uint64_t i = 0; i < values; ++i) {
      float g;
      std::memcpy(&g, m.gradients + i * 4, 4);
      if (!std::isfinite(g)) {
        return Status::InvalidArgument(
            r.Where() + ": gradient of key " + std::to_string(m.Key(i / m.cols)) + ", column " +
            std::to_string(i % m.cols) + " is " + std::to_string(g) + ", expected a finite value");
      }
    }
  }
  return m;
}
}  // namespace

Result<PsPushView> DecodePsPush(const FrameView& frame) {
  return DecodeKeyedRows(frame, MessageType::kPsPush);
}

Result<PsPushView> DecodePsRows(const FrameView& frame) {
  return DecodeKeyedRows(frame, MessageType::kPsRows);
}

Result<PsPushAck> DecodePsPushAck(const FrameView& frame) {
  FEDREC_RETURN_IF_ERROR(ExpectType(frame, MessageType::kPsPushAck));
  Reader r(frame);
  PsPushAck m;
  r.Get(&m.request, "request");
  r.Get(&m.clock, "clock");
  FEDREC_RETURN_IF_ERROR(r.Finish());
  return m;
}

Result<PsStart> DecodePsStart(const FrameView& frame) {
  FEDREC_RETURN_IF_ERROR(ExpectType(frame, MessageType::kPsStart));
  Reader r(frame);
  PsStart m;
  r.Get(&m.items, "items");
  r.Get(&m.cols, "cols");
  r.Get(&m.steps_per_epoch, "steps_per_epoch");
  r.Get(&m.epochs, "epochs");
  r.GetF32(&m.global_mean, "global_mean");
  r.Get(&m.workers, "workers");
  r.Get(&m.first_epoch, "first_epoch");
  r.Get(&m.checkpoint_every, "checkpoint_every");
  uint32_t dir_size = 0;
  r.Get(&dir_size, "checkpoint_dir size");
  if (const uint8_t* dir = r.Take(dir_size, 1, "checkpoint_dir"))
    m.checkpoint_dir.assign(reinterpret_cast<const char*>(dir), dir_size);
  FEDREC_RETURN_IF_ERROR(r.Finish());
  if (m.first_epoch > m.epochs || (m.checkpoint_every > 0) != !m.checkpoint_dir.empty()) {
    return Status::InvalidArgument(
        r.Where() + ": expected first_epoch <= epochs (" + std::to_string(m.epochs) +
        ") and a checkpoint folder exactly when checkpoint_every > 0, found first_epoch " +
        std::to_string(m.first_epoch) + ", checkpoint_every " + std::to_string(m.checkpoint_every) +
        " and a folder of " + std::to_string(m.checkpoint_dir.size()) + " bytes");
  }
  if (m.cols == 0 || m.steps_per_epoch == 0 || m.workers == 0 || !std::isfinite(m.global_mean)) {
    return Status::InvalidArgument(
        r.Where() +
        ": expected cols, steps_per_epoch and workers >= 1 and a finite global mean, "
        "found cols " +
        std::to_string(m.cols) + ", steps_per_epoch " + std::to_string(m.steps_per_epoch) +
        ", workers " + std::to_string(m.workers) + ", global mean " +
        std::to_string(m.global_mean));
  }
  return m;
}

Result<PsReport> DecodePsReport(const FrameView& frame) {
  FEDREC_RETURN_IF_ERROR(ExpectType(frame, MessageType::kPsReport));
  Reader r(frame);
  PsReport m;
  uint8_t final = 0;
  r.Get(&m.epoch, "epoch");
  r.Get(&m.clock, "clock");
  r.Get(&final, "final");
  r.GetF64(&m.train_squared_error, "train_squared_error");
  r.Get(&m.train_count, "train_count");
  r.GetF64(&m.squared_error, "squared_error");
  r.GetF64(&m.absolute_error, "absolute_error");
  r.Get(&m.count, "count");
  r.GetF64(&m.rating_sum, "rating_sum");
  FEDREC_RETURN_IF_ERROR(r.Finish());
  if (final > 1) {
    return Status::Corruption(r.Where() + ": final is a bool but its byte is " +
                              std::to_string(final));
  }
  m.final = final == 1;
  return m;
}

Result<PsMemory> DecodePsMemory(const FrameView& frame) {
  FEDREC_RETURN_IF_ERROR(ExpectType(frame, MessageType::kPsMemory));
  Reader r(frame);
  PsMemory m;
  uint8_t role = 0;
  r.Get(&role, "role");
  r.Get(&m.index, "index");
  r.Get(&m.peak_rss_bytes, "peak_rss_bytes");
  r.Get(&m.slice_bytes, "slice_bytes");
  FEDREC_RETURN_IF_ERROR(r.Finish());
  if (role > static_cast<uint8_t>(PsRole::kWorker)) {
    return Status::Corruption(r.Where() +
                              ": role is 0 (driver), 1 (shard server) or 2 (worker), "
                              "found " +
                              std::to_string(role));
  }
  m.role = static_cast<PsRole>(role);
  return m;
}

Result<PsCheckpoint> DecodePsCheckpoint(const FrameView& frame) {
  FEDREC_RETURN_IF_ERROR(ExpectType(frame, MessageType::kPsCheckpoint));
  Reader r(frame);
  PsCheckpoint m;
  r.Get(&m.epoch, "epoch");
  FEDREC_RETURN_IF_ERROR(r.Finish());
  if (m.epoch == 0) return Status::InvalidArgument(r.Where() + ": expected an epoch >= 1, found 0");
  return m;
}

}  // namespace fedrec
