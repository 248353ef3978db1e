// Decoders of the federated round's messages (protocol/messages.h). The
// first input byte picks the message type, the rest is the frame's payload.
// A payload either is refused with a message or decodes to a message whose
// encoding is the payload again, byte for byte (the wire format has one
// encoding per message: no trailing bytes, bools and enums checked).
#include <cstring>
#include <span>
#include <tuple>

#include "fuzz/fuzz_util.h"
#include "protocol/messages.h"

using namespace fedrec;

namespace {

using Messages =
    std::tuple<RoundPlan, ModelUpdate, EvalRequest, EvalReport, Shutdown, SiteError, SiteHello,
               Catalogue, SecAggKeys, SecAggKeyList, SecAggShares, SecAggRoutedShares, SecAggMasked,
               SecAggUnmaskRequest, SecAggUnmaskShares, SecAggSurvivorSignature, PaillierKey,
               PaillierUpdate, PaillierSum, PaillierDecrypted, ShardRound, ShardClose, ShardSums,
               SecAggMaskedView>;
constexpr size_t kKinds = std::tuple_size_v<Messages>;

FrameView View(MessageType type, std::span<const uint8_t> payload) {
  FrameView view;
  view.header.type = type;
  view.header.round = 7;
  view.header.sender = 3;
  view.header.payload_length = payload.size();
  view.payload = payload;
  return view;
}

template <typename M>
void Check(std::span<const uint8_t> payload) {
  const FrameView view = View(M::kType, payload);
  Result<M> decoded = DecodeMessage<M>(view);
  if (!decoded.ok()) {
    fuzz::Require(!decoded.status().message().empty(), "a refused payload names why");
    return;
  }
  if constexpr (std::is_same_v<M, SecAggMaskedView>) {
    fuzz::Require(decoded->data.empty() || (decoded->data.data() >= payload.data() &&
                                            decoded->data.data() + decoded->data.size() <=
                                                payload.data() + payload.size()),
                  "the masked input views the payload");
  } else {
    const std::vector<uint8_t> frame = EncodeMessage(*decoded, 7, 3);
    fuzz::Require(
        frame.size() == kFrameHeaderSize + payload.size() &&
            std::memcmp(frame.data() + kFrameHeaderSize, payload.data(), payload.size()) == 0,
        std::string(MessageTypeName(M::kType)) + " re-encodes to its payload");
    Result<FrameView> again = DecodeFrame(frame);
    fuzz::Require(again.ok(), "an encoded message is a valid frame");
    fuzz::Require(DecodeMessage<M>(*again).ok(), "an encoded message decodes");
  }
}

template <size_t I = 0>
void Dispatch(size_t kind, std::span<const uint8_t> payload) {
  if constexpr (I < kKinds) {
    if (kind == I) return Check<std::tuple_element_t<I, Messages>>(payload);
    Dispatch<I + 1>(kind, payload);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  Dispatch(data[0] % kKinds, std::span<const uint8_t>(data + 1, size - 1));
  // The wrong type is refused whatever the payload.
  const FrameView wrong =
      View(MessageType::kShutdown, std::span<const uint8_t>(data + 1, size - 1));
  fuzz::Require(!DecodeMessage<RoundPlan>(wrong).ok(), "a frame of another type is refused");
  return 0;
}
