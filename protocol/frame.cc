#include "protocol/frame.h"

#include <algorithm>
#include <cstdio>
#include <string>

#if defined(__x86_64__) && defined(__GNUC__)
#include <nmmintrin.h>
#endif

#include "base/little_endian.h"
#include "protocol/transport.h"

namespace fedrec {
namespace {

// Slicing-by-8 tables of the reflected CRC-32C polynomial 0x82f63b78.
struct Crc32cTables {
  uint32_t t[8][256];
  constexpr Crc32cTables() : t{} {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c >> 1) ^ ((c & 1) ? 0x82f63b78U : 0U);
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i)
      for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xff];
  }
};
constexpr Crc32cTables kCrc32c;

constexpr size_t kChecksumAt = 24;

std::string HexBytes(const uint8_t* bytes, size_t n) {
  std::string out;
  char buf[4];
  for (size_t i = 0; i < n; ++i) {
    std::snprintf(buf, sizeof(buf), i == 0 ? "%02x" : " %02x", bytes[i]);
    out += buf;
  }
  return out;
}

std::string PrintableBytes(const uint8_t* bytes, size_t n) {
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    const bool printable = bytes[i] >= 0x20 && bytes[i] < 0x7f && bytes[i] != '"';
    out += printable ? static_cast<char>(bytes[i]) : '.';
  }
  return out;
}

}  // namespace

const char* MessageTypeName(MessageType type) {
  switch (type) {
    case MessageType::kRoundPlan:
      return "RoundPlan";
    case MessageType::kModelUpdate:
      return "ModelUpdate";
    case MessageType::kEvalRequest:
      return "EvalRequest";
    case MessageType::kEvalReport:
      return "EvalReport";
    case MessageType::kShutdown:
      return "Shutdown";
    case MessageType::kSiteError:
      return "SiteError";
    case MessageType::kSiteHello:
      return "SiteHello";
    case MessageType::kCatalogue:
      return "Catalogue";
    case MessageType::kChannelHello:
      return "ChannelHello";
    case MessageType::kSealed:
      return "Sealed";
    case MessageType::kSecAggKeys:
      return "SecAggKeys";
    case MessageType::kSecAggKeyList:
      return "SecAggKeyList";
    case MessageType::kSecAggShares:
      return "SecAggShares";
    case MessageType::kSecAggRoutedShares:
      return "SecAggRoutedShares";
    case MessageType::kSecAggMasked:
      return "SecAggMasked";
    case MessageType::kSecAggUnmaskRequest:
      return "SecAggUnmaskRequest";
    case MessageType::kSecAggUnmaskShares:
      return "SecAggUnmaskShares";
    case MessageType::kPaillierKey:
      return "PaillierKey";
    case MessageType::kPaillierUpdate:
      return "PaillierUpdate";
    case MessageType::kPaillierSum:
      return "PaillierSum";
    case MessageType::kPaillierDecrypted:
      return "PaillierDecrypted";
    case MessageType::kSecAggSurvivorSignature:
      return "SecAggSurvivorSignature";
    case MessageType::kChannelRefused:
      return "ChannelRefused";
    case MessageType::kPsPull:
      return "PsPull";
    case MessageType::kPsPullReply:
      return "PsPullReply";
    case MessageType::kPsPush:
      return "PsPush";
    case MessageType::kPsPushAck:
      return "PsPushAck";
    case MessageType::kPsStart:
      return "PsStart";
    case MessageType::kPsReport:
      return "PsReport";
    case MessageType::kPsMemory:
      return "PsMemory";
    case MessageType::kShardRound:
      return "ShardRound";
    case MessageType::kShardClose:
      return "ShardClose";
    case MessageType::kShardSums:
      return "ShardSums";
    case MessageType::kPsRows:
      return "PsRows";
    case MessageType::kBroadcastKey:
      return "BroadcastKey";
    case MessageType::kBroadcastBody:
      return "BroadcastBody";
    case MessageType::kPsCheckpoint:
      return "PsCheckpoint";
  }
  return "unknown message type";
}

RoundStep StepOf(MessageType type) {
  switch (type) {
    case MessageType::kRoundPlan:
    case MessageType::kShardRound:
      return RoundStep::kPlan;
    case MessageType::kSecAggKeys:
    case MessageType::kSecAggKeyList:
    case MessageType::kPaillierKey:
      return RoundStep::kKeys;
    case MessageType::kSecAggShares:
    case MessageType::kSecAggRoutedShares:
      return RoundStep::kShares;
    case MessageType::kModelUpdate:
    case MessageType::kSecAggMasked:
    case MessageType::kPaillierUpdate:
      return RoundStep::kUpload;
    case MessageType::kSecAggSurvivorSignature:
      return RoundStep::kSignature;
    case MessageType::kSecAggUnmaskRequest:
    case MessageType::kSecAggUnmaskShares:
    case MessageType::kPaillierSum:
    case MessageType::kPaillierDecrypted:
    case MessageType::kShardClose:
    case MessageType::kShardSums:
      return RoundStep::kUnmask;
    case MessageType::kEvalRequest:
    case MessageType::kEvalReport:
      return RoundStep::kEval;
    default:
      return RoundStep::kNone;
  }
}

const char* RoundStepName(RoundStep step) {
  switch (step) {
    case RoundStep::kNone:
      return "none";
    case RoundStep::kPlan:
      return "plan";
    case RoundStep::kKeys:
      return "keys";
    case RoundStep::kShares:
      return "shares";
    case RoundStep::kUpload:
      return "upload";
    case RoundStep::kSignature:
      return "signature";
    case RoundStep::kUnmask:
      return "unmask";
    case RoundStep::kEval:
      return "eval";
  }
  return "none";
}

Result<RoundStep> ParseRoundStep(const std::string& name) {
  for (uint32_t s = 1; s <= kRoundSteps; ++s) {
    const auto step = static_cast<RoundStep>(s);
    if (name == RoundStepName(step)) return step;
  }
  return Status::InvalidArgument(
      "unknown round step \"" + name +
      "\": expected plan, keys, shares, upload, signature, unmask or eval");
}

void EncodeFrameHeader(const FrameHeader& header, std::span<uint8_t, kFrameHeaderSize> out) {
  uint8_t* p = out.data();
  PutLe<uint32_t>(p + 0, kFrameMagic);
  PutLe<uint16_t>(p + 4, header.version);
  PutLe<uint16_t>(p + 6, static_cast<uint16_t>(header.type));
  PutLe<uint32_t>(p + 8, header.round);
  PutLe<uint32_t>(p + 12, header.sender);
  PutLe<uint64_t>(p + 16, header.payload_length);
  PutLe<uint32_t>(p + kChecksumAt, header.checksum);
  PutLe<uint32_t>(p + 28, 0);
}

namespace {

// The reflected CRC-32C register after `bytes` from `c` (no pre/post inversion).
uint32_t Crc32cTables8(uint32_t c, const uint8_t* p, size_t n) {
  const auto& t = kCrc32c.t;
  while (n >= 8) {
    const uint32_t lo = GetLe<uint32_t>(p) ^ c;
    const uint32_t hi = GetLe<uint32_t>(p + 4);
    c = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^ t[4][lo >> 24] ^
        t[3][hi & 0xff] ^ t[2][(hi >> 8) & 0xff] ^ t[1][(hi >> 16) & 0xff] ^ t[0][hi >> 24];
    p += 8;
    n -= 8;
  }
  while (n-- > 0) c = (c >> 8) ^ t[0][(c ^ *p++) & 0xff];
  return c;
}

#if defined(__x86_64__) && defined(__GNUC__)
#define FEDREC_CRC32C_SSE42 1
#define FEDREC_SSE42_TARGET __attribute__((target("sse4.2")))

// The SSE4.2 crc32 instruction over three interleaved lanes of kLane bytes
// (its latency is three cycles, its throughput one), joined with the linear
// map "register after kLane (or 2 kLane) zero bytes": the register after
// A || B || C from c is Z2(crc(c, A)) ^ Z1(crc(0, B)) ^ crc(0, C).
constexpr size_t kLane = 1024;

FEDREC_SSE42_TARGET uint32_t Crc32cSse42Serial(uint32_t c, const uint8_t* p, size_t n) {
  uint64_t c64 = c;
  for (; n >= 8; p += 8, n -= 8) c64 = _mm_crc32_u64(c64, GetLe<uint64_t>(p));
  c = static_cast<uint32_t>(c64);
  for (; n > 0; ++p, --n) c = _mm_crc32_u8(c, *p);
  return c;
}

// Z(c) for one shift, as four byte-indexed tables.
struct ZeroShift {
  uint32_t t[4][256];
  uint32_t operator()(uint32_t c) const {
    return t[0][c & 0xff] ^ t[1][(c >> 8) & 0xff] ^ t[2][(c >> 16) & 0xff] ^ t[3][c >> 24];
  }
};

FEDREC_SSE42_TARGET ZeroShift MakeZeroShift(size_t zeros) {
  static const uint8_t kZeros[2 * kLane] = {};
  uint32_t basis[32];
  for (int bit = 0; bit < 32; ++bit) basis[bit] = Crc32cSse42Serial(1u << bit, kZeros, zeros);
  ZeroShift z{};
  for (int k = 0; k < 4; ++k) {
    for (uint32_t b = 0; b < 256; ++b) {
      uint32_t v = 0;
      for (int bit = 0; bit < 8; ++bit)
        if (b & (1u << bit)) v ^= basis[8 * k + bit];
      z.t[k][b] = v;
    }
  }
  return z;
}

FEDREC_SSE42_TARGET uint32_t Crc32cSse42(uint32_t c, const uint8_t* p, size_t n) {
  static const ZeroShift kOne = MakeZeroShift(kLane);
  static const ZeroShift kTwo = MakeZeroShift(2 * kLane);
  while (n >= 3 * kLane) {
    uint64_t a = c, b = 0, d = 0;
    for (size_t i = 0; i < kLane; i += 8) {
      a = _mm_crc32_u64(a, GetLe<uint64_t>(p + i));
      b = _mm_crc32_u64(b, GetLe<uint64_t>(p + kLane + i));
      d = _mm_crc32_u64(d, GetLe<uint64_t>(p + 2 * kLane + i));
    }
    c = kTwo(static_cast<uint32_t>(a)) ^ kOne(static_cast<uint32_t>(b)) ^ static_cast<uint32_t>(d);
    p += 3 * kLane;
    n -= 3 * kLane;
  }
  return Crc32cSse42Serial(c, p, n);
}

bool HasSse42() {
  static const bool has = __builtin_cpu_supports("sse4.2");
  return has;
}
#else
#define FEDREC_CRC32C_SSE42 0
#endif

}  // namespace

uint32_t Crc32c(std::span<const uint8_t> bytes, uint32_t crc) {
#if FEDREC_CRC32C_SSE42
  if (HasSse42()) return ~Crc32cSse42(~crc, bytes.data(), bytes.size());
#endif
  return ~Crc32cTables8(~crc, bytes.data(), bytes.size());
}

uint32_t Crc32cPortable(std::span<const uint8_t> bytes, uint32_t crc) {
  return ~Crc32cTables8(~crc, bytes.data(), bytes.size());
}

uint32_t FrameChecksum(std::span<const uint8_t> bytes) {
  static constexpr uint8_t kZero[4] = {0, 0, 0, 0};
  uint32_t crc = Crc32c(bytes.first(kChecksumAt));
  crc = Crc32c(kZero, crc);
  return Crc32c(bytes.subspan(kChecksumAt + 4), crc);
}

void StampFrame(std::span<uint8_t> frame) {
  if (frame.size() < kFrameHeaderSize || GetLe<uint32_t>(frame.data()) != kFrameMagic) return;
  const uint16_t type = GetLe<uint16_t>(frame.data() + 6);
  if (type == static_cast<uint16_t>(MessageType::kSealed) ||
      type == static_cast<uint16_t>(MessageType::kBroadcastBody))
    return;
  PutLe<uint32_t>(frame.data() + kChecksumAt, FrameChecksum(frame));
}

void StampFrameIfUnset(std::span<uint8_t> frame) {
  if (frame.size() >= kFrameHeaderSize && GetLe<uint32_t>(frame.data() + kChecksumAt) == 0)
    StampFrame(frame);
}

std::vector<uint8_t> EncodeFrame(MessageType type, uint32_t round, uint32_t sender,
                                 std::span<const uint8_t> payload) {
  std::vector<uint8_t> out;
  out.reserve(kFrameHeaderSize + payload.size() + kFrameSealingRoom);
  out.resize(kFrameHeaderSize);
  out.insert(out.end(), payload.begin(), payload.end());
  FrameHeader header;
  header.type = type;
  header.round = round;
  header.sender = sender;
  header.payload_length = payload.size();
  EncodeFrameHeader(header, std::span<uint8_t, kFrameHeaderSize>(out.data(), kFrameHeaderSize));
  StampFrame(out);
  return out;
}

bool FrameChecksumUnset(std::span<const uint8_t> frame) {
  return frame.size() >= kFrameHeaderSize && GetLe<uint32_t>(frame.data()) == kFrameMagic &&
         GetLe<uint32_t>(frame.data() + kChecksumAt) == 0;
}

namespace {

Result<FrameView> Decode(std::span<const uint8_t> bytes, bool verify_checksum) {
  if (bytes.size() < kFrameHeaderSize) {
    return Status::Corruption("truncated frame header: " + std::to_string(bytes.size()) + " of " +
                              std::to_string(kFrameHeaderSize) + " bytes");
  }
  const uint8_t* p = bytes.data();
  const uint32_t magic = GetLe<uint32_t>(p + 0);
  if (magic != kFrameMagic) {
    uint8_t expected[4];
    PutLe<uint32_t>(expected, kFrameMagic);
    return Status::Corruption("bad frame magic: expected bytes " + HexBytes(expected, 4) + " (\"" +
                              PrintableBytes(expected, 4) + "\"), found " + HexBytes(p, 4) +
                              " (\"" + PrintableBytes(p, 4) + "\") in a " +
                              std::to_string(bytes.size()) + "-byte frame");
  }

  FrameView view;
  FrameHeader& h = view.header;
  h.version = GetLe<uint16_t>(p + 4);
  const uint16_t type = GetLe<uint16_t>(p + 6);
  h.round = GetLe<uint32_t>(p + 8);
  h.sender = GetLe<uint32_t>(p + 12);
  h.payload_length = GetLe<uint64_t>(p + 16);
  h.checksum = GetLe<uint32_t>(p + kChecksumAt);
  const std::string where =
      "from rank " + std::to_string(h.sender) + ", round " + std::to_string(h.round);

  if (h.version != kProtocolVersion) {
    return Status::Corruption("unsupported protocol version " + std::to_string(h.version) +
                              " in frame " + where + ": this build supports version " +
                              std::to_string(kProtocolVersion));
  }
  if (type < 1 || type > kMaxMessageType) {
    return Status::Corruption("unknown message type " + std::to_string(type) + " in frame " +
                              where + ": this build knows types 1.." +
                              std::to_string(kMaxMessageType));
  }
  h.type = static_cast<MessageType>(type);

  const uint64_t present = bytes.size() - kFrameHeaderSize;
  if (h.payload_length != present) {
    const std::string what = std::string(MessageTypeName(h.type)) + " frame " + where +
                             " announces " + std::to_string(h.payload_length) +
                             " payload bytes but " + std::to_string(present) + " are present";
    if (present < h.payload_length) {
      return Status::Corruption("truncated payload: " + what + " (" +
                                std::to_string(h.payload_length - present) + " missing)");
    }
    return Status::Corruption("trailing bytes after payload: " + what + " (" +
                              std::to_string(present - h.payload_length) + " extra)");
  }
  if (const uint32_t reserved = GetLe<uint32_t>(p + 28); reserved != 0) {
    return Status::Corruption("reserved header bytes 28..31 of " +
                              std::string(MessageTypeName(h.type)) + " frame " + where + " are " +
                              std::to_string(reserved) + ", expected 0");
  }
  // Sealed frames are opened by their channel (crypto/secure_transport.h),
  // never decoded here, so every frame decoded here carries a checksum, or
  // was moved in process unstamped (Envelope::intact).
  const uint32_t computed = verify_checksum ? FrameChecksum(bytes) : h.checksum;
  if (computed != h.checksum) {
    char found[32];
    std::snprintf(found, sizeof(found), "%08x, computed %08x", h.checksum, computed);
    return Status::Corruption(std::string("checksum mismatch: ") + MessageTypeName(h.type) +
                              " frame " + where + " carries checksum " + found +
                              " over its header and " + std::to_string(h.payload_length) +
                              " payload bytes (the frame was damaged on its way)");
  }
  view.payload = bytes.subspan(kFrameHeaderSize);
  return view;
}

}  // namespace

Result<FrameView> DecodeFrame(std::span<const uint8_t> bytes) { return Decode(bytes, true); }

Result<FrameView> DecodeFrame(const Envelope& envelope) {
  return Decode(envelope.bytes, !(envelope.intact && FrameChecksumUnset(envelope.bytes)));
}

}  // namespace fedrec
