// Frame parser (protocol/frame.h): any bytes are either refused with a
// message or decode to a header that re-encodes to the same 24 bytes and a
// payload of exactly the announced length inside the input.
#include <cstring>
#include <span>

#include "fuzz/fuzz_util.h"
#include "protocol/frame.h"

using namespace fedrec;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> bytes(data, size);
  Result<FrameView> view = DecodeFrame(bytes);
  if (!view.ok()) {
    fuzz::Require(!view.status().message().empty(), "a refused frame names why");
    return 0;
  }
  const FrameHeader& h = view->header;
  fuzz::Require(h.payload_length == view->payload.size(), "payload of the announced length");
  fuzz::Require(view->payload.data() == data + kFrameHeaderSize &&
                    size == kFrameHeaderSize + view->payload.size(),
                "payload is the rest of the input");
  uint8_t header[kFrameHeaderSize];
  EncodeFrameHeader(h, std::span<uint8_t, kFrameHeaderSize>(header, kFrameHeaderSize));
  fuzz::Require(std::memcmp(header, data, kFrameHeaderSize) == 0, "header re-encodes identically");
  const std::vector<uint8_t> again = EncodeFrame(h.type, h.round, h.sender, view->payload);
  fuzz::Require(again.size() == size && std::memcmp(again.data(), data, size) == 0,
                "frame re-encodes identically");
  fuzz::Require(MessageTypeName(h.type) != nullptr, "every accepted type has a name");
  return 0;
}
