#include "protocol/frame.h"

#include <algorithm>
#include <cstdio>
#include <string>

#include "base/little_endian.h"

namespace fedrec {
namespace {

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
  }
  return "unknown message type";
}

void EncodeFrameHeader(const FrameHeader& header, std::span<uint8_t, kFrameHeaderSize> out) {
  uint8_t* p = out.data();
  PutLe<uint32_t>(p + 0, kFrameMagic);
  PutLe<uint16_t>(p + 4, header.version);
  PutLe<uint16_t>(p + 6, static_cast<uint16_t>(header.type));
  PutLe<uint32_t>(p + 8, header.round);
  PutLe<uint32_t>(p + 12, header.sender);
  PutLe<uint64_t>(p + 16, header.payload_length);
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
  return out;
}

Result<FrameView> DecodeFrame(std::span<const uint8_t> bytes) {
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
  view.payload = bytes.subspan(kFrameHeaderSize);
  return view;
}

}  // namespace fedrec
