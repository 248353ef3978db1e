// Frames: every message on a Transport is a 32-byte header followed by a
// payload (a cereal portable-binary archive of one message struct).
//
//   offset size field
//        0    4 magic "FDRC"
//        4    2 protocol version (kProtocolVersion)
//        6    2 message type (MessageType)
//        8    4 round
//       12    4 sender rank
//       16    8 payload length in bytes
//       24    4 checksum: CRC-32C of the header (this field taken as zero)
//                and the payload
//       28    4 reserved, zero
//
// All integers little-endian. A frame with another magic, an unknown version or
// type, fewer payload bytes than announced or a checksum that does not match
// is rejected with a Corruption status naming the sender (when readable) and
// the round, so a frame damaged on its way never reaches a role.
//
// Who stamps the checksum: EncodeFrame and EncodeMessage stamp the frames they
// finish; encoders that fill the payload after the header (the masked input of
// secure aggregation, parameter-server frames) leave it zero, and every base
// transport stamps a frame whose checksum is zero when it is sent
// (StampFrameIfUnset), except the in-process network, which moves such a frame
// into the receiver's inbox unstamped and marks it intact (Envelope::intact):
// its bytes never leave the process, so the receiver skips the check. Sealed frames (kSealed) and
// broadcast bodies (kBroadcastBody) carry none: their AEAD tag, and the body's digest sealed per
// receiver, protect them.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/status.h"

namespace fedrec {

struct Envelope;  // protocol/transport.h

constexpr uint32_t kFrameMagic = 0x43524446;  // "FDRC" read as little-endian
constexpr uint16_t kProtocolVersion = 12;
constexpr size_t kFrameHeaderSize = 32;
// Capacity encoders leave after a frame's last byte, so that an encrypted
// channel can seal the frame in its own buffer (SecureTransport appends the
// inner header, a sequence number and a tag) instead of copying it into a new one.
constexpr size_t kFrameSealingRoom = kFrameHeaderSize + 24;

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
  // A frame an authenticated channel sends to many peers, encrypted once
  // (crypto/secure_transport.h, "Broadcast"): the one-time key and digest,
  // sealed per peer, then the body every peer shares.
  kBroadcastKey = 35,
  kBroadcastBody = 36,
  // Parameter-server checkpoints (protocol/ps_messages.h PsCheckpoint): a
  // shard server saved its slice of an epoch; the driver committed an epoch.
  kPsCheckpoint = 37,
};
// Highest MessageType value this build understands.
constexpr uint16_t kMaxMessageType = 37;

const char* MessageTypeName(MessageType type);

// The steps of a federated round, as fault injection (sim/faults.h) and the
// per-round metrics (RoundMetrics::failed_steps) name them. Plain rounds have
// plan, upload and eval; secure aggregation adds keys, shares, signature and
// unmask (crypto/secagg.h); Paillier keys, upload and unmask.
enum class RoundStep : uint8_t {
  kNone = 0,  // start-up, probes, errors, shutdown
  kPlan = 1,
  kKeys = 2,
  kShares = 3,
  kUpload = 4,
  kSignature = 5,
  kUnmask = 6,
  kEval = 7,
};
constexpr uint32_t kRoundSteps = 7;

// The step a message of `type` belongs to (either direction).
RoundStep StepOf(MessageType type);
// "plan", "keys", "shares", "upload", "signature", "unmask", "eval" ("none").
const char* RoundStepName(RoundStep step);
// The step called `name` (RoundStepName); error naming the known steps.
Result<RoundStep> ParseRoundStep(const std::string& name);

struct FrameHeader {
  uint16_t version = kProtocolVersion;
  MessageType type = MessageType::kShutdown;
  uint32_t round = 0;
  uint32_t sender = 0;
  uint64_t payload_length = 0;
  uint32_t checksum = 0;  // as read (DecodeFrame) or to write (EncodeFrameHeader)
};

// A decoded frame; `payload` views the bytes passed to DecodeFrame.
struct FrameView {
  FrameHeader header;
  std::span<const uint8_t> payload;
};

std::vector<uint8_t> EncodeFrame(MessageType type, uint32_t round, uint32_t sender,
                                 std::span<const uint8_t> payload);

// Writes the 32-byte header for `header` (magic first) into `out`. Lets an
// encoder reserve the header space, write the payload after it and fill the
// header in last, so the payload is never copied.
void EncodeFrameHeader(const FrameHeader& header, std::span<uint8_t, kFrameHeaderSize> out);

// Validates magic, version, type, length (payload must be exactly the
// announced length) and checksum.
Result<FrameView> DecodeFrame(std::span<const uint8_t> bytes);
// DecodeFrame of a received envelope's bytes: every check, except that the
// checksum of an intact envelope (Envelope::intact: moved in process, never
// stamped) is not computed. What roles call on what they receive.
Result<FrameView> DecodeFrame(const Envelope& envelope);

// CRC-32C (Castagnoli) of `bytes`, continuing from `crc` (0 to start).
uint32_t Crc32c(std::span<const uint8_t> bytes, uint32_t crc = 0);
// The same without the SSE4.2 instruction Crc32c uses where the CPU has it
// (for tests that both agree).
uint32_t Crc32cPortable(std::span<const uint8_t> bytes, uint32_t crc = 0);

// The checksum a frame's header should carry: CRC-32C of its bytes with the
// checksum field taken as zero. REQUIRES: bytes.size() >= kFrameHeaderSize.
uint32_t FrameChecksum(std::span<const uint8_t> bytes);

// Writes FrameChecksum into the header of `frame` (when it holds at least a
// header and is not a sealed frame); call after the last byte is written.
void StampFrame(std::span<uint8_t> frame);

// StampFrame unless the frame already carries a checksum: what base
// transports call on every frame they send.
void StampFrameIfUnset(std::span<uint8_t> frame);
// Whether `frame` starts with a frame header whose checksum field is zero
// (what StampFrameIfUnset would stamp).
bool FrameChecksumUnset(std::span<const uint8_t> frame);

}  // namespace fedrec
