// Frames: every message on a Transport is a 24-byte header followed by a
// payload (a cereal portable-binary archive of one message struct).
//
//   offset size field
//        0    4 magic "FDRC"
//        4    2 protocol version (kProtocolVersion)
//        6    2 message type (MessageType)
//        8    4 round
//       12    4 sender rank
//       16    8 payload length in bytes
//
// All integers little-endian. A frame with another magic, an unknown version or
// type, or fewer payload bytes than announced is rejected with a Corruption
// status naming the sender (when readable) and the round.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"

namespace fedrec {

constexpr uint32_t kFrameMagic = 0x43524446;  // "FDRC" read as little-endian
constexpr uint16_t kProtocolVersion = 9;
constexpr size_t kFrameHeaderSize = 24;
// Capacity encoders leave after a frame's last byte, so that an encrypted
// channel can seal the frame in its own buffer (SecureTransport appends 48
// bytes) instead of copying it into a new one.
constexpr size_t kFrameSealingRoom = 48;

enum class MessageType : uint16_t {
  kRoundPlan = 1,
  kModelUpdate = 2,
  kEvalRequest = 3,
  kEvalReport = 4,
  kShutdown = 5,
  kSiteError = 6,
  kSiteHello = 7,
  kCatalogue = 8,
  // Authenticated channels (crypto/secure_transport.h).
  kChannelHello = 9,
  kSealed = 10,
  // Secure aggregation (crypto/secagg.h), in protocol order.
  kSecAggKeys = 11,
  kSecAggKeyList = 12,
  kSecAggShares = 13,
  kSecAggRoutedShares = 14,
  kSecAggMasked = 15,
  kSecAggUnmaskRequest = 16,
  kSecAggUnmaskShares = 17,
  // Paillier aggregation (crypto/paillier.h).
  kPaillierKey = 18,
  kPaillierUpdate = 19,
  kPaillierSum = 20,
  kPaillierDecrypted = 21,
  // Secure aggregation's consistency check (crypto/secagg.h, step 4).
  kSecAggSurvivorSignature = 22,
  // An authenticated channel's unauthenticated notice that it refused the
  // receiver's hello (crypto/secure_transport.h).
  kChannelRefused = 23,
  // Parameter-server mode (protocol/ps_messages.h): sparse pull/push between
  // workers and shard servers, and the driver's start and epoch reports.
  kPsPull = 24,
  kPsPullReply = 25,
  kPsPush = 26,
  kPsPushAck = 27,
  kPsStart = 28,
  kPsReport = 29,
  kPsMemory = 30,
  // Sharded aggregation of federated rounds (cluster.shard_servers > 0,
  // coordinator/aggregation_shard.h): the coordinator's round and close
  // requests to a shard server and its slice of the sums.
  kShardRound = 31,
  kShardClose = 32,
  kShardSums = 33,
  // Keyed rows assigned, not stepped (protocol/ps_messages.h PsRows): a site
  // that trains in parameter-server mode inside itself (two tiers) loads the
  // round's global rows into its shard servers and its users' rows into its
  // workers, and the workers return their users' rows.
  kPsRows = 34,
};
// Highest MessageType value this build understands.
constexpr uint16_t kMaxMessageType = 34;

const char* MessageTypeName(MessageType type);

struct FrameHeader {
  uint16_t version = kProtocolVersion;
  MessageType type = MessageType::kShutdown;
  uint32_t round = 0;
  uint32_t sender = 0;
  uint64_t payload_length = 0;
};

// A decoded frame; `payload` views the bytes passed to DecodeFrame.
struct FrameView {
  FrameHeader header;
  std::span<const uint8_t> payload;
};

std::vector<uint8_t> EncodeFrame(MessageType type, uint32_t round, uint32_t sender,
                                 std::span<const uint8_t> payload);

// Writes the 24-byte header for `header` (magic first) into `out`. Lets an
// encoder reserve the header space, write the payload after it and fill the
// header in last, so the payload is never copied.
void EncodeFrameHeader(const FrameHeader& header, std::span<uint8_t, kFrameHeaderSize> out);

// Validates magic, version, type and length (payload must be exactly the
// announced length).
Result<FrameView> DecodeFrame(std::span<const uint8_t> bytes);

}  // namespace fedrec
