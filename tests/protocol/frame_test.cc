#include "protocol/frame.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

namespace fedrec {
namespace {

std::vector<uint8_t> Payload(size_t n) {
  std::vector<uint8_t> p(n);
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(i * 7 + 3);
  return p;
}

// Writes `value` little-endian into bytes [offset, offset + width).
void Poke(std::vector<uint8_t>& bytes, size_t offset, uint64_t value, size_t width) {
  for (size_t i = 0; i < width; ++i) bytes[offset + i] = static_cast<uint8_t>(value >> (8 * i));
}

TEST(Frames, HeaderHasTheDocumentedLittleEndianLayout) {
  const std::vector<uint8_t> payload = Payload(3);
  const std::vector<uint8_t> frame =
      EncodeFrame(MessageType::kModelUpdate, 0x01020304, 0x0a0b0c0d, payload);
  const std::vector<uint8_t> expected = {
      'F',        'D',        'R',       'C',                           // magic
      0x0c,       0x00,                                                 // version 12
      0x02,       0x00,                                                 // type ModelUpdate
      0x04,       0x03,       0x02,      0x01,                          // round
      0x0d,       0x0c,       0x0b,      0x0a,                          // sender
      0x03,       0x00,       0x00,      0x00, 0x00, 0x00, 0x00, 0x00,  // payload length
      0x00,       0x00,       0x00,      0x00,                          // checksum (below)
      0x00,       0x00,       0x00,      0x00,                          // reserved
      payload[0], payload[1], payload[2]};
  ASSERT_EQ(frame.size(), expected.size());
  EXPECT_TRUE(std::equal(frame.begin(), frame.begin() + 24, expected.begin()));
  EXPECT_TRUE(std::equal(frame.begin() + 28, frame.end(), expected.begin() + 28));
  // The checksum: CRC-32C of the frame with the checksum field as zero.
  const uint32_t crc = Crc32c(expected);
  EXPECT_EQ(frame[24], static_cast<uint8_t>(crc));
  EXPECT_EQ(frame[25], static_cast<uint8_t>(crc >> 8));
  EXPECT_EQ(frame[26], static_cast<uint8_t>(crc >> 16));
  EXPECT_EQ(frame[27], static_cast<uint8_t>(crc >> 24));
}

TEST(Frames, Crc32cMatchesTheCastagnoliCheckValue) {
  const std::string check = "123456789";
  EXPECT_EQ(Crc32c(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(check.data()),
                                            check.size())),
            0xe3069283U);
  // Continuing a CRC over a split input gives the CRC of the whole.
  const std::vector<uint8_t> bytes = Payload(1001);
  const std::span<const uint8_t> all(bytes);
  EXPECT_EQ(Crc32c(all.subspan(333), Crc32c(all.first(333))), Crc32c(all));
}

TEST(Frames, Crc32cHardwarePathEqualsThePortableTablesAtEveryLengthAndOffset) {
  // Lengths around the three-lane blocks (3 x 1,024 bytes) and odd offsets.
  const std::vector<uint8_t> bytes = Payload(20000);
  const std::span<const uint8_t> all(bytes);
  for (size_t length : {0, 1, 7, 8, 9, 1023, 3071, 3072, 3073, 6144, 6151, 9217, 19990}) {
    for (size_t offset : {0, 1, 3, 8}) {
      const auto piece = all.subspan(offset, length);
      EXPECT_EQ(Crc32c(piece), Crc32cPortable(piece))
          << "length " << length << " offset " << offset;
      EXPECT_EQ(Crc32c(piece, 0x12345678U), Crc32cPortable(piece, 0x12345678U));
    }
  }
  EXPECT_EQ(Crc32c(all.subspan(4000), Crc32c(all.first(4000))), Crc32cPortable(all));
}

TEST(Frames, RejectsEveryFlippedBitAsChecksumMismatchOrBadHeader) {
  const std::vector<uint8_t> clean = EncodeFrame(MessageType::kModelUpdate, 5, 2, Payload(40));
  for (size_t byte = 0; byte < clean.size(); ++byte) {
    for (int bit = 0; bit < 8; ++bit) {
      std::vector<uint8_t> frame = clean;
      frame[byte] ^= static_cast<uint8_t>(1u << bit);
      Result<FrameView> view = DecodeFrame(frame);
      ASSERT_FALSE(view.ok()) << "byte " << byte << " bit " << bit;
      EXPECT_EQ(view.status().code(), Status::Code::kCorruption);
      if (byte >= kFrameHeaderSize) {
        EXPECT_PRED_FORMAT2(::testing::IsSubstring, "checksum mismatch", view.status().message());
        EXPECT_PRED_FORMAT2(::testing::IsSubstring, "ModelUpdate frame from rank 2, round 5",
                            view.status().message());
      }
    }
  }
}

TEST(Frames, StampFrameIfUnsetKeepsAnExistingChecksum) {
  std::vector<uint8_t> frame(kFrameHeaderSize + 8, 7);
  FrameHeader h;
  h.type = MessageType::kPsPull;
  h.payload_length = 8;
  EncodeFrameHeader(h, std::span<uint8_t, kFrameHeaderSize>(frame.data(), kFrameHeaderSize));
  EXPECT_FALSE(DecodeFrame(frame).ok());  // payload written after the header: no checksum yet
  StampFrameIfUnset(frame);
  ASSERT_TRUE(DecodeFrame(frame).ok());
  frame.back() ^= 1;  // damaged after stamping: a later stamp must not hide it
  StampFrameIfUnset(frame);
  EXPECT_FALSE(DecodeFrame(frame).ok());
}

TEST(Frames, EncodeFrameHeaderMatchesEncodeFrame) {
  FrameHeader h;
  h.type = MessageType::kEvalReport;
  h.round = 77;
  h.sender = 5;
  h.payload_length = 0x1122334455667788ULL;
  uint8_t out[kFrameHeaderSize];
  EncodeFrameHeader(h, std::span<uint8_t, kFrameHeaderSize>(out, kFrameHeaderSize));
  const std::vector<uint8_t> frame = EncodeFrame(MessageType::kEvalReport, 77, 5, {});
  EXPECT_TRUE(std::equal(frame.begin(), frame.begin() + 16, out));
  const uint8_t length[8] = {0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11};
  EXPECT_TRUE(std::equal(length, length + 8, out + 16));
}

TEST(Frames, RoundTripsHeaderAndPayload) {
  const std::vector<uint8_t> payload = Payload(1000);
  const std::vector<uint8_t> frame = EncodeFrame(MessageType::kEvalRequest, 42, 3, payload);
  ASSERT_EQ(frame.size(), kFrameHeaderSize + payload.size());
  Result<FrameView> view = DecodeFrame(frame);
  ASSERT_TRUE(view.ok()) << view.status().ToString();
  EXPECT_EQ(view->header.version, kProtocolVersion);
  EXPECT_EQ(view->header.type, MessageType::kEvalRequest);
  EXPECT_EQ(view->header.round, 42u);
  EXPECT_EQ(view->header.sender, 3u);
  EXPECT_EQ(view->header.payload_length, payload.size());
  EXPECT_EQ(std::vector<uint8_t>(view->payload.begin(), view->payload.end()), payload);
  // The view points into the input, it is not a copy.
  EXPECT_EQ(view->payload.data(), frame.data() + kFrameHeaderSize);
}

TEST(Frames, RoundTripsEveryMessageTypeWithEmptyPayload) {
  for (uint16_t t = 1; t <= kMaxMessageType; ++t) {
    const auto type = static_cast<MessageType>(t);
    // Sealed frames and broadcast bodies carry no checksum (their tag and
    // digest protect them) and are opened by their channel, never decoded here.
    if (type == MessageType::kSealed || type == MessageType::kBroadcastBody) continue;
    const std::vector<uint8_t> frame = EncodeFrame(type, t * 10, t, {});
    Result<FrameView> view = DecodeFrame(frame);
    ASSERT_TRUE(view.ok()) << view.status().ToString();
    EXPECT_EQ(view->header.type, type);
    EXPECT_EQ(view->header.round, t * 10u);
    EXPECT_TRUE(view->payload.empty());
  }
}

TEST(Frames, RejectsTruncatedHeaderCountingBytes) {
  const std::vector<uint8_t> frame = EncodeFrame(MessageType::kShutdown, 1, 1, Payload(4));
  for (size_t n = 0; n < kFrameHeaderSize; ++n) {
    Result<FrameView> view = DecodeFrame(std::span<const uint8_t>(frame.data(), n));
    ASSERT_FALSE(view.ok()) << n;
    EXPECT_EQ(view.status().code(), Status::Code::kCorruption);
    EXPECT_EQ(view.status().message(),
              "truncated frame header: " + std::to_string(n) + " of 32 bytes");
  }
}

TEST(Frames, RejectsBadMagicShowingTheBytesInHex) {
  std::vector<uint8_t> frame = EncodeFrame(MessageType::kShutdown, 1, 1, Payload(4));
  frame[0] = 'G';
  frame[3] = 0xff;
  Result<FrameView> view = DecodeFrame(frame);
  ASSERT_FALSE(view.ok());
  EXPECT_EQ(view.status().code(), Status::Code::kCorruption);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "bad frame magic", view.status().message());
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "expected bytes 46 44 52 43",
                      view.status().message());
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "found 47 44 52 ff", view.status().message());
}

TEST(Frames, RejectsUnsupportedVersionNamingFoundAndSupported) {
  std::vector<uint8_t> frame = EncodeFrame(MessageType::kRoundPlan, 7, 3, Payload(4));
  Poke(frame, 4, kProtocolVersion + 1, 2);
  Result<FrameView> view = DecodeFrame(frame);
  ASSERT_FALSE(view.ok());
  EXPECT_EQ(view.status().code(), Status::Code::kCorruption);
  EXPECT_EQ(view.status().message(), "unsupported protocol version " +
                                         std::to_string(kProtocolVersion + 1) +
                                         " in frame from rank 3, round 7: this build supports "
                                         "version " +
                                         std::to_string(kProtocolVersion));
}

TEST(Frames, RejectsUnknownMessageTypeNamingSenderAndRound) {
  for (uint16_t type : {uint16_t{0}, uint16_t{kMaxMessageType + 1}, uint16_t{0xffff}}) {
    std::vector<uint8_t> frame = EncodeFrame(MessageType::kRoundPlan, 9, 4, Payload(4));
    Poke(frame, 6, type, 2);
    Result<FrameView> view = DecodeFrame(frame);
    ASSERT_FALSE(view.ok()) << type;
    EXPECT_EQ(view.status().code(), Status::Code::kCorruption);
    EXPECT_EQ(view.status().message(), "unknown message type " + std::to_string(type) +
                                           " in frame from rank 4, round 9: this build knows "
                                           "types 1.." +
                                           std::to_string(kMaxMessageType));
  }
}

TEST(Frames, RejectsTruncatedPayloadNamingSenderAndRound) {
  std::vector<uint8_t> frame = EncodeFrame(MessageType::kModelUpdate, 7, 3, Payload(100));
  frame.erase(frame.end() - 60, frame.end());
  Result<FrameView> view = DecodeFrame(frame);
  ASSERT_FALSE(view.ok());
  EXPECT_EQ(view.status().code(), Status::Code::kCorruption);
  EXPECT_EQ(view.status().message(),
            "truncated payload: ModelUpdate frame from rank 3, round 7 announces 100 payload "
            "bytes but 40 are present (60 missing)");
}

TEST(Frames, RejectsTrailingBytesNamingSenderAndRound) {
  std::vector<uint8_t> frame = EncodeFrame(MessageType::kEvalReport, 12, 2, Payload(10));
  frame.push_back(0);
  frame.push_back(1);
  Result<FrameView> view = DecodeFrame(frame);
  ASSERT_FALSE(view.ok());
  EXPECT_EQ(view.status().code(), Status::Code::kCorruption);
  EXPECT_EQ(view.status().message(),
            "trailing bytes after payload: EvalReport frame from rank 2, round 12 announces 10 "
            "payload bytes but 12 are present (2 extra)");
}

TEST(Frames, HugeAnnouncedLengthIsATruncatedPayloadNotAnOverflow) {
  std::vector<uint8_t> frame = EncodeFrame(MessageType::kRoundPlan, 1, 1, Payload(8));
  Poke(frame, 16, ~uint64_t{0}, 8);
  Result<FrameView> view = DecodeFrame(frame);
  ASSERT_FALSE(view.ok());
  EXPECT_EQ(view.status().code(), Status::Code::kCorruption);
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "announces 18446744073709551615 payload bytes",
                      view.status().message());
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, "but 8 are present", view.status().message());
}

TEST(Frames, EveryErrorHasItsOwnMessage) {
  std::set<std::string> messages;
  const std::vector<uint8_t> good = EncodeFrame(MessageType::kRoundPlan, 7, 3, Payload(16));
  auto error_of = [](const std::vector<uint8_t>& bytes) {
    Result<FrameView> view = DecodeFrame(bytes);
    EXPECT_FALSE(view.ok());
    return view.status().message();
  };
  std::vector<uint8_t> f = good;
  f.resize(10);
  messages.insert(error_of(f));  // truncated header
  f = good;
  f[1] = 'X';
  messages.insert(error_of(f));  // magic
  f = good;
  Poke(f, 4, 1, 2);
  messages.insert(error_of(f));  // version
  f = good;
  Poke(f, 6, 99, 2);
  messages.insert(error_of(f));  // type
  f = good;
  f.pop_back();
  messages.insert(error_of(f));  // truncated payload
  f = good;
  f.push_back(0);
  messages.insert(error_of(f));  // trailing bytes
  EXPECT_EQ(messages.size(), 6u);
}

TEST(Frames, MessageTypeNames) {
  EXPECT_STREQ(MessageTypeName(MessageType::kRoundPlan), "RoundPlan");
  EXPECT_STREQ(MessageTypeName(MessageType::kModelUpdate), "ModelUpdate");
  EXPECT_STREQ(MessageTypeName(MessageType::kEvalRequest), "EvalRequest");
  EXPECT_STREQ(MessageTypeName(MessageType::kEvalReport), "EvalReport");
  EXPECT_STREQ(MessageTypeName(MessageType::kShutdown), "Shutdown");
  EXPECT_STREQ(MessageTypeName(MessageType::kSiteError), "SiteError");
  EXPECT_STREQ(MessageTypeName(static_cast<MessageType>(42)), "unknown message type");
}

}  // namespace
}  // namespace fedrec
