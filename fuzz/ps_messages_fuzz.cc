// Decoders of the parameter-server messages (protocol/ps_messages.h). The
// first input byte picks the message type, the rest is the frame's payload.
// A payload either is refused with a message or decodes to a message whose
// encoding is the payload again, byte for byte; every row a view announces
// lies inside the payload.
#include <cstring>
#include <span>
#include <vector>

#include "fuzz/fuzz_util.h"
#include "protocol/ps_messages.h"

using namespace fedrec;

namespace {

FrameView View(MessageType type, std::span<const uint8_t> payload) {
  FrameView view;
  view.header.type = type;
  view.header.round = 0;
  view.header.sender = 5;
  view.header.payload_length = payload.size();
  view.payload = payload;
  return view;
}

void RequireSame(const std::vector<uint8_t>& frame, std::span<const uint8_t> payload,
                 const char* what) {
  fuzz::Require(
      frame.size() == kFrameHeaderSize + payload.size() &&
          std::memcmp(frame.data() + kFrameHeaderSize, payload.data(), payload.size()) == 0,
      std::string(what) + " re-encodes to its payload");
}

template <typename M>
bool Refused(const Result<M>& r) {
  if (r.ok()) return false;
  fuzz::Require(!r.status().message().empty(), "a refused payload names why");
  return true;
}

// Reads every row of a keyed-rows view (what the shard server does).
void ReadRows(const PsPushView& m, std::span<const uint8_t> payload, MessageType type) {
  std::vector<uint32_t> keys(m.rows);
  std::vector<float> values(m.rows * m.cols);
  for (uint64_t i = 0; i < m.rows; ++i) {
    keys[i] = m.Key(i);
    m.CopyRow(i, values.data() + i * m.cols);
  }
  size_t keys_at = 0, values_at = 0;
  std::vector<uint8_t> frame =
      EncodePsPushShell(m.request, m.clock, m.epoch, m.cols, m.rows, 5, &keys_at, &values_at, type);
  if (!keys.empty()) {
    std::memcpy(frame.data() + keys_at, keys.data(), keys.size() * sizeof(uint32_t));
    std::memcpy(frame.data() + values_at, values.data(), values.size() * sizeof(float));
  }
  RequireSame(frame, payload, MessageTypeName(type));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::span<const uint8_t> payload(data + 1, size - 1);
  switch (data[0] % 9) {
    case 0: {
      Result<PsPull> m = DecodePsPull(View(MessageType::kPsPull, payload));
      if (!Refused(m)) RequireSame(EncodePsPull(*m, 5), payload, "PsPull");
      break;
    }
    case 1: {
      Result<PsPullReplyView> m = DecodePsPullReply(View(MessageType::kPsPullReply, payload));
      if (Refused(m)) break;
      std::vector<float> values(m->rows * m->cols);
      for (uint64_t i = 0; i < m->rows; ++i) m->CopyRow(i, values.data() + i * m->cols);
      size_t values_at = 0;
      std::vector<uint8_t> frame =
          EncodePsPullReplyShell(m->request, m->min_clock, m->cols, m->rows, 5, &values_at);
      if (!values.empty())
        std::memcpy(frame.data() + values_at, values.data(), values.size() * sizeof(float));
      RequireSame(frame, payload, "PsPullReply");
      break;
    }
    case 2: {
      Result<PsPushView> m = DecodePsPush(View(MessageType::kPsPush, payload));
      if (!Refused(m)) ReadRows(*m, payload, MessageType::kPsPush);
      break;
    }
    case 3: {
      Result<PsPushView> m = DecodePsRows(View(MessageType::kPsRows, payload));
      if (!Refused(m)) ReadRows(*m, payload, MessageType::kPsRows);
      break;
    }
    case 4: {
      Result<PsPushAck> m = DecodePsPushAck(View(MessageType::kPsPushAck, payload));
      if (!Refused(m)) RequireSame(EncodePsPushAck(*m, 5), payload, "PsPushAck");
      break;
    }
    case 5: {
      Result<PsStart> m = DecodePsStart(View(MessageType::kPsStart, payload));
      if (!Refused(m)) RequireSame(EncodePsStart(*m, 5), payload, "PsStart");
      break;
    }
    case 6: {
      Result<PsReport> m = DecodePsReport(View(MessageType::kPsReport, payload));
      if (!Refused(m)) RequireSame(EncodePsReport(*m, 5), payload, "PsReport");
      break;
    }
    case 7: {
      Result<PsCheckpoint> m = DecodePsCheckpoint(View(MessageType::kPsCheckpoint, payload));
      if (!Refused(m)) RequireSame(EncodePsCheckpoint(*m, 5), payload, "PsCheckpoint");
      break;
    }
    default: {
      Result<PsMemory> m = DecodePsMemory(View(MessageType::kPsMemory, payload));
      if (!Refused(m)) RequireSame(EncodePsMemory(*m, 5), payload, "PsMemory");
      break;
    }
  }
  // A frame of another type is refused by each decoder.
  const FrameView other = View(MessageType::kShutdown, payload);
  fuzz::Require(!DecodePsPull(other).ok() && !DecodePsPush(other).ok() &&
                    !DecodePsPullReply(other).ok() && !DecodePsMemory(other).ok(),
                "a frame of another type is refused");
  return 0;
}
