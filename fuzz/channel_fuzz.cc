// The secure channel's receiving path (crypto/secure_transport.h): frames
// from the network reach SecureTransport::Recv of rank 1, whose peer is rank
// 0. The first input byte picks the case:
//   0  the rest as a frame from rank 0 before any session (hellos, notices,
//      sealed frames without a session);
//   1  a session is made, rank 0 seals a frame and the rest of the input
//      edits the sealed bytes on the wire ((u16 offset, u8 xor) triples; a
//      trailing byte truncates);
//   2  a session is made and the rest goes on the wire as a frame from rank 0.
// Properties: nothing but the frame rank 0 sealed is ever delivered, and a
// refused frame changes nothing: the genuine frame sent after it still
// arrives.
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <span>

#include "crypto/secure_transport.h"
#include "fuzz/fuzz_util.h"
#include "protocol/inprocess_transport.h"
#include "protocol/messages.h"

using namespace fedrec;
using std::chrono::milliseconds;

namespace {

// Forwards to an in-process endpoint, or keeps what is sent while capturing.
class Tap : public ForwardingTransport {
 public:
  explicit Tap(Transport* inner) : ForwardingTransport(inner) {}
  Status Send(int peer, std::vector<uint8_t> bytes) override {
    if (capture) {
      captured.push_back(std::move(bytes));
      return Status::Ok();
    }
    return inner()->Send(peer, std::move(bytes));
  }

  bool capture = false;
  std::vector<std::vector<uint8_t>> captured;
};

crypto::SigningKey FixedKey(uint8_t fill) {
  crypto::Key32 seed;
  seed.fill(fill);
  Result<crypto::SigningKey> key = crypto::SigningKeyFromPrivate(seed);
  fuzz::Require(key.ok(), "identity key from a fixed seed");
  return *key;
}

struct Pair {
  InProcessNetwork network{2};
  Tap tap{&network.endpoint(0)};
  std::unique_ptr<SecureTransport> ends[2];

  Pair() {
    static const crypto::SigningKey keys[2] = {FixedKey(1), FixedKey(2)};
    for (int r = 0; r < 2; ++r) {
      SecureTransportOptions o;
      o.identity = keys[r];
      o.peer_keys[1 - r] = keys[1 - r].public_key;
      o.job_id.fill(9);
      Transport* inner = r == 0 ? static_cast<Transport*>(&tap) : &network.endpoint(1);
      Result<std::unique_ptr<SecureTransport>> end = SecureTransport::Create(inner, std::move(o));
      fuzz::Require(end.ok(), "channel set-up");
      ends[r] = std::move(*end);
    }
  }

  // What rank 1 delivers from what has arrived (nullopt: nothing).
  std::optional<std::vector<uint8_t>> Deliver() {
    for (int i = 0; i < 8; ++i) {
      Result<Envelope> e = ends[1]->Recv(milliseconds(0));
      if (e.ok()) {
        fuzz::Require(e->from == 0, "a frame delivered from its sender");
        return std::move(e->bytes);
      }
      if (e.status().code() == Status::Code::kTimeout) return std::nullopt;
    }
    return std::nullopt;
  }

  // Sends `frame` from rank 0 and lets both ranks handshake until rank 1 has it.
  void Handshake(const std::vector<uint8_t>& frame) {
    fuzz::Require(ends[0]->Send(1, frame).ok(), "send of the first frame");
    for (int i = 0; i < 8; ++i) {
      if (std::optional<std::vector<uint8_t>> got = Deliver()) {
        fuzz::Require(*got == frame, "the handshake's frame arrives intact");
        return;
      }
      (void)ends[0]->Recv(milliseconds(0));
    }
    fuzz::Require(false, "handshake completes");
  }
};

const std::vector<uint8_t>& Genuine() {
  static const std::vector<uint8_t> frame = EncodeMessage(Shutdown{"genuine frame", false}, 4, 0);
  return frame;
}

// Rank 0 seals Genuine(); returns the sealed bytes without sending them.
std::vector<uint8_t> Seal(Pair& pair) {
  pair.tap.capture = true;
  fuzz::Require(pair.ends[0]->Send(1, Genuine()).ok(), "seal a frame");
  pair.tap.capture = false;
  fuzz::Require(pair.tap.captured.size() == 1, "one sealed frame per send");
  std::vector<uint8_t> sealed = std::move(pair.tap.captured.back());
  pair.tap.captured.clear();
  return sealed;
}

void Inject(Pair& pair, std::vector<uint8_t> bytes) {
  fuzz::Require(pair.network.endpoint(0).Send(1, std::move(bytes)).ok(), "inject a frame");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool quiet = [] {
    spdlog::set_level(spdlog::level::off);
    return true;
  }();
  (void)quiet;
  if (size == 0) return 0;
  const std::span<const uint8_t> rest(data + 1, size - 1);
  Pair pair;
  switch (data[0] % 3) {
    case 0:
      Inject(pair, std::vector<uint8_t>(rest.begin(), rest.end()));
      fuzz::Require(!pair.Deliver().has_value(), "nothing is delivered without a session");
      break;
    case 1: {
      pair.Handshake(EncodeMessage(Shutdown{"hello", false}, 1, 0));
      const std::vector<uint8_t> sealed = Seal(pair);
      std::vector<uint8_t> edited = sealed;
      size_t i = 0;
      for (; i + 3 <= rest.size(); i += 3) {
        const size_t at = (size_t{rest[i]} | size_t{rest[i + 1]} << 8) % (edited.size() + 1);
        if (at < edited.size()) edited[at] ^= rest[i + 2];
      }
      if (i < rest.size()) edited.resize(rest[i] % (edited.size() + 1));
      Inject(pair, edited);
      std::optional<std::vector<uint8_t>> got = pair.Deliver();
      if (edited == sealed) {
        fuzz::Require(got.has_value() && *got == Genuine(), "an untouched frame is delivered");
        break;
      }
      fuzz::Require(!got.has_value(), "an edited sealed frame is refused");
      Inject(pair, sealed);
      got = pair.Deliver();
      fuzz::Require(got.has_value() && *got == Genuine(),
                    "the genuine frame still arrives after a refused one");
      break;
    }
    default: {
      pair.Handshake(EncodeMessage(Shutdown{"hello", false}, 1, 0));
      Inject(pair, std::vector<uint8_t>(rest.begin(), rest.end()));
      fuzz::Require(!pair.Deliver().has_value(), "a forged frame is not delivered");
      Inject(pair, Seal(pair));
      std::optional<std::vector<uint8_t>> got = pair.Deliver();
      fuzz::Require(got.has_value() && *got == Genuine(),
                    "the genuine frame still arrives after a forged one");
      break;
    }
  }
  return 0;
}
