// Authenticated channels: frames get through sealed, and every kind of forged,
// altered, replayed, reordered or unauthenticated frame is refused with its
// own error naming the peer and the round, without stopping Recv.
// Identity key files: round trip, file modes, no silent overwrite, clear
// errors.
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>

#include "crypto/identity.h"
#include "crypto/secure_transport.h"
#include "protocol/frame.h"
#include "protocol/inprocess_transport.h"
#include "protocol/messages.h"

namespace fedrec {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

MessageType TypeOf(const std::vector<uint8_t>& bytes) {
  return static_cast<MessageType>(bytes[6] | (bytes[7] << 8));
}

// Sits between a SecureTransport and its network endpoint, i.e. on the wire:
// keeps a copy of every frame sent and received, and lets a test hold back or
// alter arriving frames and inject its own. Single-threaded tests only.
class Tap : public ForwardingTransport {
 public:
  explicit Tap(Transport* inner) : ForwardingTransport(inner) {}
  Status Send(int peer, std::vector<uint8_t> bytes) override {
    sent.push_back(bytes);
    return inner()->Send(peer, std::move(bytes));
  }
  // By reference, as the network would carry it.
  Status SendShared(int peer, const SharedFrame& frame) override {
    sent.push_back(*frame);
    return inner()->SendShared(peer, frame);
  }
  Result<Envelope> Recv(milliseconds timeout) override {
    for (;;) {
      if (!injected.empty()) {
        Envelope e = std::move(injected.front());
        injected.pop_front();
        return e;
      }
      Result<Envelope> e = inner()->Recv(timeout);
      if (!e.ok()) return e;
      seen.push_back(e->bytes);
      if (hold_if && hold_if(e->bytes)) {
        held.push_back(std::move(e).value());
        continue;
      }
      if (alter) alter(e->bytes);
      return e;
    }
  }

  // Holds back the next arriving frame of `type` (and only that one).
  void HoldNext(MessageType type) {
    hold_if = [this, type](const std::vector<uint8_t>& b) {
      if (TypeOf(b) != type) return false;
      hold_if = nullptr;
      return true;
    };
  }
  // Queues `bytes` as if they had arrived from `from`.
  void Inject(int from, std::vector<uint8_t> bytes) {
    injected.push_back(Envelope{from, std::move(bytes)});
  }
  std::vector<uint8_t> TakeHeld() {
    std::vector<uint8_t> bytes = std::move(held.front().bytes);
    held.pop_front();
    return bytes;
  }

  std::vector<std::vector<uint8_t>> sent, seen;
  std::deque<Envelope> injected, held;
  std::function<bool(const std::vector<uint8_t>&)> hold_if;
  std::function<void(std::vector<uint8_t>&)> alter;
};

crypto::SigningKey NewKey() { return *crypto::GenerateSigningKey(); }

std::string PeerName(int rank) {
  return rank == 0 ? std::string("coordinator (rank 0)")
                   : "site " + std::to_string(rank - 1) + " (rank " + std::to_string(rank) + ")";
}

// A network of `ranks` ranks, each a SecureTransport over a Tap. Every rank
// authenticates every other with its key.
struct Channels {
  InProcessNetwork network;
  std::vector<std::unique_ptr<Tap>> taps;
  std::vector<crypto::SigningKey> keys;
  std::vector<std::unique_ptr<SecureTransport>> ends;

  // `options(rank, &o)` adjusts a rank's preset options.
  // `identities`: the ranks' identity keys (a later run of the same
  // federation); fresh ones when empty.
  explicit Channels(int ranks,
                    const std::function<void(int, SecureTransportOptions*)>& options = nullptr,
                    std::vector<crypto::SigningKey> identities = {})
      : network(ranks), keys(std::move(identities)) {
    while (keys.size() < static_cast<size_t>(ranks)) keys.push_back(NewKey());
    for (int r = 0; r < ranks; ++r) {
      taps.push_back(std::make_unique<Tap>(&network.endpoint(r)));
      SecureTransportOptions o;
      o.identity = keys[r];
      for (int p = 0; p < ranks; ++p)
        if (p != r) o.peer_keys[p] = keys[p].public_key;
      o.peer_name = PeerName;
      if (options) options(r, &o);
      ends.push_back(std::move(SecureTransport::Create(taps[r].get(), std::move(o)).value()));
    }
  }

  // Lets every rank process what has arrived, polling as the simulator does,
  // until nothing moves; returns the application frames each rank received.
  std::vector<std::vector<Envelope>> PumpAll() {
    std::vector<std::vector<Envelope>> delivered(ends.size());
    for (int quiet = 0; quiet < 3;) {
      bool moved = false;
      for (size_t r = 0; r < ends.size(); ++r) {
        for (;;) {
          Result<Envelope> e = ends[r]->Recv(milliseconds(0));
          if (!e.ok()) {
            EXPECT_EQ(e.status().code(), Status::Code::kTimeout) << e.status().ToString();
            break;
          }
          moved = true;
          delivered[r].push_back(std::move(e).value());
        }
      }
      quiet = moved ? 0 : quiet + 1;
    }
    return delivered;
  }
  std::vector<Envelope> Pump(int rank) { return PumpAll()[static_cast<size_t>(rank)]; }

  // Sets up the session between ranks 0 and 1 with one frame.
  void Connect() {
    ASSERT_TRUE(ends[0]->Send(1, Frame(1, "hello")).ok());
    ASSERT_EQ(Pump(1).size(), 1u);
    ASSERT_TRUE(ends[1]->HasSession(0));
  }

  static std::vector<uint8_t> Frame(uint32_t round, const std::string& text) {
    return EncodeMessage(Shutdown{text}, round, 0);
  }
};

std::vector<uint8_t> Frame(uint32_t round, const std::string& text) {
  return Channels::Frame(round, text);
}

// The only rejection `end` made is `error`, naming `peer` and `round`.
void ExpectRejected(const SecureTransport& end, ChannelError error, const std::string& peer,
                    uint32_t round) {
  EXPECT_EQ(end.rejection_count(error), 1u) << ChannelErrorName(error);
  EXPECT_EQ(end.rejection_count(), 1u);
  const std::vector<ChannelRejection> all = end.rejections();
  ASSERT_EQ(all.size(), 1u);
  const ChannelRejection& r = all.back();
  EXPECT_EQ(r.error, error) << ChannelErrorName(r.error) << ": " << r.message;
  EXPECT_EQ(r.round, round);
  EXPECT_NE(r.message.find(peer), std::string::npos) << r.message;
  EXPECT_NE(r.message.find("round " + std::to_string(round)), std::string::npos) << r.message;
}

// --- Delivery ---

TEST(SecureChannel, DeliversFramesBothWaysOverInProcessNetwork) {
  Channels c(3);
  for (int site = 1; site <= 2; ++site) {
    ASSERT_TRUE(c.ends[0]->Send(site, Frame(3, "plan for " + std::to_string(site))).ok());
    ASSERT_TRUE(c.ends[site]->Send(0, Frame(3, "update from " + std::to_string(site))).ok());
  }
  std::vector<std::vector<Envelope>> delivered = c.PumpAll();
  ASSERT_EQ(delivered[0].size(), 2u);
  for (int site = 1; site <= 2; ++site) {
    ASSERT_EQ(delivered[site].size(), 1u);
    EXPECT_EQ(delivered[site][0].from, 0);
    EXPECT_EQ(delivered[site][0].bytes, Frame(3, "plan for " + std::to_string(site)));
    const auto from_site = std::find_if(delivered[0].begin(), delivered[0].end(),
                                        [&](const Envelope& e) { return e.from == site; });
    ASSERT_NE(from_site, delivered[0].end());
    EXPECT_EQ(from_site->bytes, Frame(3, "update from " + std::to_string(site)));
    EXPECT_TRUE(c.ends[0]->HasSession(site));
    EXPECT_EQ(c.ends[0]->PeerIdentity(site), c.keys[site].public_key);
    EXPECT_EQ(c.ends[site]->PeerIdentity(0), c.keys[0].public_key);
  }
  EXPECT_FALSE(c.ends[1]->HasSession(2));  // sites never talked to each other
  for (const auto& end : c.ends) EXPECT_EQ(end->rejection_count(), 0u);
}

TEST(SecureChannel, ManyFramesArriveInSendOrder) {
  Channels c(2);
  std::vector<std::vector<uint8_t>> frames;
  for (uint32_t i = 0; i < 200; ++i) frames.push_back(Frame(i, std::string(i * 37, 'x')));
  for (const auto& f : frames) ASSERT_TRUE(c.ends[0]->Send(1, f).ok());
  std::vector<Envelope> got = c.Pump(1);
  ASSERT_EQ(got.size(), frames.size());
  for (size_t i = 0; i < frames.size(); ++i) EXPECT_EQ(got[i].bytes, frames[i]) << i;
}

TEST(SecureChannel, LargeFrameRoundTrips) {
  Channels c(2);
  std::string body(32 << 20, '\0');  // 32 MiB
  for (size_t i = 0; i < body.size(); ++i) body[i] = static_cast<char>((i * 2654435761u) >> 13);
  const std::vector<uint8_t> frame = Frame(9, body);
  ASSERT_TRUE(c.ends[0]->Send(1, frame).ok());
  std::vector<Envelope> at_site = c.Pump(1);
  ASSERT_EQ(at_site.size(), 1u);
  ASSERT_TRUE(at_site[0].bytes == frame);
  ASSERT_TRUE(c.ends[1]->Send(0, std::move(at_site[0].bytes)).ok());  // echoed back
  std::vector<Envelope> back = c.Pump(0);
  ASSERT_EQ(back.size(), 1u);
  EXPECT_TRUE(back[0].bytes == frame);
  // On the wire: the frame plus header, sequence number and tag, each way.
  EXPECT_GE(c.ends[0]->stats().bytes_sent, frame.size() + 48);
  EXPECT_LT(c.ends[0]->stats().bytes_sent, frame.size() + 48 + 1024);
}

TEST(SecureChannel, FramesOfEverySizeAroundAHeaderRoundTrip) {
  // Shorter than a frame header, exactly one, and just longer: the sealed
  // form moves the first min(n, kFrameHeaderSize) bytes behind the rest and back.
  Channels c(2);
  std::vector<std::vector<uint8_t>> frames;
  for (size_t n = 0; n <= 2 * kFrameHeaderSize + 1; ++n) {
    std::vector<uint8_t>& f = frames.emplace_back(n);
    for (size_t i = 0; i < n; ++i) f[i] = static_cast<uint8_t>(n * 31 + i);
  }
  for (const auto& f : frames) ASSERT_TRUE(c.ends[0]->Send(1, f).ok());
  std::vector<Envelope> got = c.Pump(1);
  ASSERT_EQ(got.size(), frames.size());
  for (size_t i = 0; i < frames.size(); ++i) EXPECT_EQ(got[i].bytes, frames[i]) << i << " bytes";
  EXPECT_EQ(c.ends[1]->rejection_count(), 0u);
}

TEST(SecureChannel, ConcurrentHandshakeFromBothSides) {
  Channels c(2);
  // Both sides start before either has seen the other's hello.
  ASSERT_TRUE(c.ends[0]->Send(1, Frame(1, "from the coordinator")).ok());
  ASSERT_TRUE(c.ends[1]->Send(0, Frame(1, "from the site")).ok());
  ASSERT_TRUE(c.ends[0]->Send(1, Frame(2, "second from the coordinator")).ok());
  std::vector<std::vector<Envelope>> delivered = c.PumpAll();
  ASSERT_EQ(delivered[1].size(), 2u);
  EXPECT_EQ(delivered[1][0].bytes, Frame(1, "from the coordinator"));
  EXPECT_EQ(delivered[1][1].bytes, Frame(2, "second from the coordinator"));
  ASSERT_EQ(delivered[0].size(), 1u);
  EXPECT_EQ(delivered[0][0].bytes, Frame(1, "from the site"));
  // Each side sent its opening and answered the other's, and the crossing
  // hellos agreed on keys. The coordinator opened once more for the frame of
  // round 2 (a retry, as if the first opening had been lost), which changes
  // nothing: the site's answer to it, if any, is its own handshake again.
  for (const auto& tap : c.taps) {
    const auto hellos = std::count_if(tap->sent.begin(), tap->sent.end(), [](const auto& b) {
      return TypeOf(b) == MessageType::kChannelHello;
    });
    EXPECT_GE(hellos, 2);
    EXPECT_LE(hellos, 3);
  }
  EXPECT_EQ(c.ends[0]->rejection_count() + c.ends[1]->rejection_count(), 0u);
}

TEST(SecureChannel, ConcurrentSendersAndReceiversKeepPerSenderOrder) {
  // Four threads per side send at once from the start (hellos cross), one
  // thread per side receives with a blocking Recv.
  constexpr int kThreads = 4;
  constexpr uint32_t kFrames = 150;
  InProcessNetwork network(2);
  const crypto::SigningKey keys[2] = {NewKey(), NewKey()};
  std::unique_ptr<SecureTransport> ends[2];
  for (int r = 0; r < 2; ++r) {
    SecureTransportOptions o;
    o.identity = keys[r];
    o.peer_keys[1 - r] = keys[1 - r].public_key;
    ends[r] = std::move(SecureTransport::Create(&network.endpoint(r), std::move(o)).value());
  }
  std::vector<std::thread> threads;
  std::atomic<bool> failed{false};
  for (int r = 0; r < 2; ++r) {
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, r, t] {
        for (uint32_t i = 0; i < kFrames; ++i) {
          // round = thread, payload = sequence within the thread
          std::vector<uint8_t> f = EncodeMessage(
              Shutdown{std::to_string(i)}, static_cast<uint32_t>(t), static_cast<uint32_t>(r));
          if (!ends[r]->Send(1 - r, std::move(f)).ok()) failed = true;
        }
      });
    }
  }
  std::vector<std::vector<uint32_t>> next(2, std::vector<uint32_t>(kThreads, 0));
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      for (uint32_t got = 0; got < kThreads * kFrames;) {
        Result<Envelope> e = ends[r]->Recv(milliseconds(5000));
        if (!e.ok()) {
          failed = true;
          return;
        }
        Result<FrameView> view = DecodeFrame(*e);
        if (!view.ok()) {
          failed = true;
          return;
        }
        Result<Shutdown> message = DecodeMessage<Shutdown>(*view);
        if (!message.ok() || view->header.round >= kThreads) {
          failed = true;
          return;
        }
        uint32_t& expected = next[r][view->header.round];
        if (message->reason != std::to_string(expected)) failed = true;
        ++expected;
        ++got;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_FALSE(failed);
  for (int r = 0; r < 2; ++r) {
    for (int t = 0; t < kThreads; ++t) EXPECT_EQ(next[r][t], kFrames);
    EXPECT_EQ(ends[r]->rejection_count(), 0u);
  }
}

TEST(SecureChannel, RecvWaitsAcrossTheHandshake) {
  Channels c(2);
  std::atomic<bool> done{false};
  Result<Envelope> got = Status::Timeout("not yet");
  std::thread site([&] {
    got = c.ends[1]->Recv(milliseconds(5000));  // consumes the hello, keeps waiting
    done = true;
  });
  ASSERT_TRUE(c.ends[0]->Send(1, Frame(4, "plan")).ok());
  const auto start = Clock::now();
  while (!done && Clock::now() - start < std::chrono::seconds(5)) {
    (void)c.ends[0]->Recv(milliseconds(10));  // takes the site's hello, flushes the plan
  }
  site.join();
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->bytes, Frame(4, "plan"));
}

TEST(SecureChannel, RecvHonoursTheTimeoutWhileOnlyHandshakeFramesArrive) {
  Channels c(2);
  ASSERT_TRUE(c.ends[0]->Send(1, Frame(1, "plan")).ok());
  const auto start = Clock::now();
  Result<Envelope> e = c.ends[1]->Recv(milliseconds(60));
  const auto waited = Clock::now() - start;
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), Status::Code::kTimeout);
  EXPECT_NE(e.status().message().find("within 60 ms"), std::string::npos);
  EXPECT_GE(waited, milliseconds(60));
  EXPECT_LT(waited, milliseconds(2000));
  // The hello was handled meanwhile: the site answered it.
  ASSERT_EQ(c.taps[1]->sent.size(), 1u);
  EXPECT_EQ(TypeOf(c.taps[1]->sent[0]), MessageType::kChannelHello);
}

TEST(SecureChannel, SelfSendIsSealedAndDelivered) {
  Channels c(2);
  ASSERT_TRUE(c.ends[1]->Send(1, Frame(2, "note to self")).ok());
  std::vector<Envelope> got = c.Pump(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].from, 1);
  EXPECT_EQ(got[0].bytes, Frame(2, "note to self"));
  for (const auto& b : c.taps[1]->seen) EXPECT_NE(TypeOf(b), MessageType::kShutdown);
}

TEST(SecureChannel, FramesOnTheWireDoNotContainThePlaintext) {
  Channels c(2);
  const std::string secret = "item 4711 rated 5 by user 42";
  std::string body;
  for (int i = 0; i < 100; ++i) body += secret;
  ASSERT_TRUE(c.ends[0]->Send(1, Frame(1, body)).ok());
  ASSERT_TRUE(c.ends[1]->Send(0, Frame(1, body)).ok());
  std::vector<std::vector<Envelope>> delivered = c.PumpAll();
  ASSERT_EQ(delivered[0].size(), 1u);
  ASSERT_EQ(delivered[1].size(), 1u);
  size_t wire_frames = 0;
  for (const auto& tap : c.taps) {
    for (const auto& bytes : tap->sent) {
      ++wire_frames;
      const MessageType type = TypeOf(bytes);
      EXPECT_TRUE(type == MessageType::kChannelHello || type == MessageType::kSealed);
      const std::string wire(bytes.begin(), bytes.end());
      EXPECT_EQ(wire.find(secret.substr(0, 12)), std::string::npos);
    }
  }
  EXPECT_EQ(wire_frames, 6u);  // an opening, an answer and one sealed frame each way
}

// --- Broadcast: one encryption for every peer ---

SharedFrame SharedModelFrame(uint32_t round, const std::string& secret) {
  std::string body;
  while (body.size() < 3 * SecureTransport::kBroadcastMinimum) body += secret;
  return std::make_shared<const std::vector<uint8_t>>(Frame(round, body));
}

TEST(SecureChannel, SharedFrameIsEncryptedOnceAndReachesEveryPeer) {
  Channels c(4);
  const std::string secret = "item 4711 rated 5 by user 42 ";
  // Before any session (queued behind the handshakes), then on open channels.
  const SharedFrame first = SharedModelFrame(1, secret);
  const SharedFrame second = SharedModelFrame(2, secret + "again ");
  for (const SharedFrame& frame : {first, second}) {
    for (int site = 1; site <= 3; ++site) ASSERT_TRUE(c.ends[0]->SendShared(site, frame).ok());
    std::vector<std::vector<Envelope>> delivered = c.PumpAll();
    for (int site = 1; site <= 3; ++site) {
      ASSERT_EQ(delivered[site].size(), 1u) << "site rank " << site;
      EXPECT_EQ(delivered[site][0].from, 0);
      EXPECT_TRUE(delivered[site][0].bytes == *frame) << "site rank " << site;
    }
  }
  // On the wire: per broadcast one body, the same bytes for every peer, and
  // a sealed key per peer; never the plaintext, never a key in the clear.
  std::vector<std::vector<uint8_t>> bodies;
  for (const auto& bytes : c.taps[0]->sent) {
    const MessageType type = TypeOf(bytes);
    EXPECT_TRUE(type == MessageType::kChannelHello || type == MessageType::kSealed ||
                type == MessageType::kBroadcastBody)
        << MessageTypeName(type);
    const std::string wire(bytes.begin(), bytes.end());
    EXPECT_EQ(wire.find(secret.substr(0, 12)), std::string::npos);
    if (type == MessageType::kBroadcastBody) bodies.push_back(bytes);
  }
  ASSERT_EQ(bodies.size(), 6u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_TRUE(bodies[i] == bodies[0]);
    EXPECT_TRUE(bodies[3 + i] == bodies[3]);
  }
  EXPECT_FALSE(bodies[0] == bodies[3]);
  EXPECT_EQ(bodies[0].size(), first->size() + kFrameHeaderSize + crypto::kGcmTagSize);
  for (const auto& end : c.ends) EXPECT_EQ(end->rejection_count(), 0u);
}

TEST(SecureChannel, SharedFramesSentInTurnAreEachEncryptedOnce) {
  // A round's plan in two variants (e.g. two groups of sites with different
  // instructions), sent to the sites in site order.
  Channels c(5);
  const SharedFrame a = SharedModelFrame(1, "variant a ");
  const SharedFrame b = SharedModelFrame(1, "variant b ");
  for (int site = 1; site <= 4; ++site)
    ASSERT_TRUE(c.ends[0]->SendShared(site, site % 2 ? a : b).ok());
  std::vector<std::vector<Envelope>> delivered = c.PumpAll();
  std::vector<std::vector<uint8_t>> bodies;  // in send order
  for (const auto& bytes : c.taps[0]->sent)
    if (TypeOf(bytes) == MessageType::kBroadcastBody) bodies.push_back(bytes);
  ASSERT_EQ(bodies.size(), 4u);
  EXPECT_TRUE(bodies[0] == bodies[2]);  // sites 1 and 3: variant a, one encryption
  EXPECT_TRUE(bodies[1] == bodies[3]);  // sites 2 and 4: variant b
  EXPECT_FALSE(bodies[0] == bodies[1]);
  for (int site = 1; site <= 4; ++site) {
    ASSERT_EQ(delivered[site].size(), 1u);
    EXPECT_TRUE(delivered[site][0].bytes == *(site % 2 ? a : b)) << "site rank " << site;
  }
}

TEST(SecureChannel, SmallSharedFrameTravelsSealedLikeAnyOther) {
  Channels c(2);
  const auto frame = std::make_shared<const std::vector<uint8_t>>(Frame(3, "a short plan"));
  ASSERT_TRUE(c.ends[0]->SendShared(1, frame).ok());
  std::vector<Envelope> got = c.Pump(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].bytes, *frame);
  for (const auto& bytes : c.taps[0]->sent) EXPECT_NE(TypeOf(bytes), MessageType::kBroadcastBody);
}

TEST(SecureChannel, BroadcastBodyThatDoesNotMatchItsSealedDigestIsRefused) {
  Channels c(3);
  c.Connect();
  ASSERT_TRUE(c.ends[0]->Send(2, Frame(1, "hello")).ok());
  ASSERT_EQ(c.Pump(2).size(), 1u);
  // Altered on its way to rank 2 only: rank 1 still gets the broadcast.
  c.taps[2]->alter = [](std::vector<uint8_t>& bytes) {
    if (TypeOf(bytes) == MessageType::kBroadcastBody) bytes[kFrameHeaderSize + 100] ^= 0x01;
  };
  const SharedFrame frame = SharedModelFrame(4, "weights ");
  for (int site = 1; site <= 2; ++site) ASSERT_TRUE(c.ends[0]->SendShared(site, frame).ok());
  std::vector<std::vector<Envelope>> delivered = c.PumpAll();
  ASSERT_EQ(delivered[1].size(), 1u);
  EXPECT_TRUE(delivered[1][0].bytes == *frame);
  EXPECT_TRUE(delivered[2].empty());
  ExpectRejected(*c.ends[2], ChannelError::kBroadcastMismatch, "coordinator (rank 0)", 4);
  EXPECT_NE(c.ends[2]->rejections().back().message.find("SHA-256 differs"), std::string::npos)
      << c.ends[2]->rejections().back().message;
  // The genuine body, arriving after the forgery, still opens.
  c.taps[2]->alter = nullptr;
  c.taps[2]->Inject(0, c.taps[0]->sent.back());
  std::vector<Envelope> late = c.Pump(2);
  ASSERT_EQ(late.size(), 1u);
  EXPECT_TRUE(late[0].bytes == *frame);
}

TEST(SecureChannel, ReceiversSharingOpeningsOpenABroadcastOnceAndATamperedCopyIsStillRefused) {
  auto openings = std::make_shared<BroadcastOpenings>();
  Channels c(4, [&](int rank, SecureTransportOptions* o) {
    if (rank > 0) o->openings = openings;
  });
  c.Connect();
  // Altered on its way to rank 3 only: its copy no longer is the shared bytes.
  c.taps[3]->alter = [](std::vector<uint8_t>& bytes) {
    if (TypeOf(bytes) == MessageType::kBroadcastBody) bytes[kFrameHeaderSize + 100] ^= 0x01;
  };
  const SharedFrame frame = SharedModelFrame(4, "weights ");
  for (int site = 1; site <= 3; ++site) ASSERT_TRUE(c.ends[0]->SendShared(site, frame).ok());
  std::vector<std::vector<Envelope>> delivered = c.PumpAll();
  for (int site = 1; site <= 2; ++site) {
    ASSERT_EQ(delivered[site].size(), 1u) << site;
    EXPECT_TRUE(delivered[site][0].bytes == *frame) << site;
    EXPECT_EQ(delivered[site][0].shared, nullptr) << site;  // the plaintext is the site's own
  }
  EXPECT_TRUE(delivered[3].empty());
  ExpectRejected(*c.ends[3], ChannelError::kBroadcastMismatch, "coordinator (rank 0)", 4);
  // Sites 1 and 2: one hash and one decryption between them.
  const BroadcastOpenings::Counts counts = openings->counts();
  EXPECT_EQ(counts.digests, 1u);
  EXPECT_EQ(counts.opened, 1u);
  EXPECT_EQ(counts.reused, 2u);
}

TEST(BroadcastOpenings, EachBodyIsHashedOnceAndOpenedOncePerKey) {
  BroadcastOpenings openings;
  const SharedFrame body = std::make_shared<const std::vector<uint8_t>>(1000, uint8_t{7});
  EXPECT_EQ(openings.Digest(body), crypto::Sha256(*body));
  EXPECT_EQ(openings.Digest(body), crypto::Sha256(*body));
  crypto::Key32 a{}, b{};
  a[0] = 1;
  b[0] = 2;
  int calls = 0;
  auto open = [&](std::vector<uint8_t> bytes) -> Result<std::vector<uint8_t>> {
    ++calls;
    EXPECT_EQ(bytes.size(), 1000u);
    if (calls == 2) return Status::InvalidArgument("bad tag");
    bytes.resize(10);
    return bytes;
  };
  const BroadcastOpenings::Opened first = openings.Open(body, a, open);
  ASSERT_TRUE(first->ok());
  EXPECT_EQ((*first)->size(), 10u);
  // Another key is opened on its own, and its failure is its own.
  EXPECT_FALSE(openings.Open(body, b, open)->ok());
  EXPECT_EQ(openings.Open(body, a, open), first);
  EXPECT_EQ(calls, 2);
  // Other bytes (here at another address) get their own results.
  const SharedFrame other = std::make_shared<const std::vector<uint8_t>>(1000, uint8_t{8});
  EXPECT_EQ(openings.Digest(other), crypto::Sha256(*other));
  EXPECT_TRUE(openings.Open(other, a, open)->ok());
  EXPECT_EQ(calls, 3);
  const BroadcastOpenings::Counts counts = openings.counts();
  EXPECT_EQ(counts.digests, 2u);
  EXPECT_EQ(counts.opened, 3u);
  EXPECT_EQ(counts.reused, 2u);
}

TEST(SecureChannel, BroadcastBodyReplayedOrWithoutItsKeyIsRefused) {
  Channels c(2);
  c.Connect();
  const SharedFrame old_frame = SharedModelFrame(5, "old model ");
  ASSERT_TRUE(c.ends[0]->SendShared(1, old_frame).ok());
  ASSERT_EQ(c.Pump(1).size(), 1u);
  const std::vector<uint8_t> old_body = c.taps[1]->seen.back();
  ASSERT_EQ(TypeOf(old_body), MessageType::kBroadcastBody);
  // Without a key sealed before it.
  c.taps[1]->Inject(0, old_body);
  EXPECT_TRUE(c.Pump(1).empty());
  ExpectRejected(*c.ends[1], ChannelError::kBroadcastMismatch, "coordinator (rank 0)", 5);
  // In place of the next broadcast's body: refused, and the key waits for
  // its own body.
  c.taps[1]->HoldNext(MessageType::kBroadcastBody);
  const SharedFrame new_frame = SharedModelFrame(6, "new model ");
  ASSERT_TRUE(c.ends[0]->SendShared(1, new_frame).ok());
  EXPECT_TRUE(c.Pump(1).empty());
  c.taps[1]->Inject(0, old_body);
  EXPECT_TRUE(c.Pump(1).empty());
  EXPECT_EQ(c.ends[1]->rejection_count(ChannelError::kBroadcastMismatch), 2u);
  c.taps[1]->Inject(0, c.taps[1]->TakeHeld());
  std::vector<Envelope> got = c.Pump(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(got[0].bytes == *new_frame);
  // A body whose key never came: the next key records the loss and replaces it.
  c.taps[1]->hold_if = [](const std::vector<uint8_t>& b) {
    return TypeOf(b) == MessageType::kBroadcastBody;
  };
  ASSERT_TRUE(c.ends[0]->SendShared(1, SharedModelFrame(7, "lost ")).ok());
  EXPECT_TRUE(c.Pump(1).empty());
  c.taps[1]->hold_if = nullptr;
  const SharedFrame last = SharedModelFrame(8, "last ");
  ASSERT_TRUE(c.ends[0]->SendShared(1, last).ok());
  got = c.Pump(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_TRUE(got[0].bytes == *last);
  EXPECT_EQ(c.ends[1]->rejection_count(ChannelError::kBroadcastMismatch), 3u);
  EXPECT_NE(c.ends[1]->rejections().back().message.find("round 7"), std::string::npos)
      << c.ends[1]->rejections().back().message;
}

// --- Rejected sealed frames ---

TEST(SecureChannel, RejectsFlippedBit) {
  Channels c(2);
  c.Connect();
  c.taps[1]->HoldNext(MessageType::kSealed);
  ASSERT_TRUE(c.ends[0]->Send(1, Frame(7, "payload")).ok());
  EXPECT_TRUE(c.Pump(1).empty());
  const std::vector<uint8_t> original = c.taps[1]->TakeHeld();
  for (size_t at : {size_t{40}, original.size() - 1, size_t{10}}) {  // ciphertext, tag, round
    std::vector<uint8_t> flipped = original;
    flipped[at] ^= 0x04;
    c.taps[1]->Inject(0, std::move(flipped));
  }
  EXPECT_TRUE(c.Pump(1).empty());
  EXPECT_EQ(c.ends[1]->rejection_count(ChannelError::kTampered), 3u);
  const ChannelRejection first = c.ends[1]->rejections().front();
  EXPECT_EQ(first.error, ChannelError::kTampered);
  EXPECT_EQ(first.peer, 0);
  EXPECT_NE(first.message.find("coordinator (rank 0), round 7"), std::string::npos)
      << first.message;
  // The genuine frame, and the next, still get through.
  c.taps[1]->Inject(0, original);
  ASSERT_TRUE(c.ends[0]->Send(1, Frame(8, "next")).ok());
  std::vector<Envelope> got = c.Pump(1);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].bytes, Frame(7, "payload"));
  EXPECT_EQ(got[1].bytes, Frame(8, "next"));
}

TEST(SecureChannel, RejectsTruncatedFrame) {
  Channels c(2);
  c.Connect();
  c.taps[1]->HoldNext(MessageType::kSealed);
  ASSERT_TRUE(c.ends[0]->Send(1, Frame(8, "payload")).ok());
  EXPECT_TRUE(c.Pump(1).empty());
  const std::vector<uint8_t> original = c.taps[1]->TakeHeld();
  c.taps[1]->Inject(0, std::vector<uint8_t>(original.begin(), original.end() - 5));
  EXPECT_TRUE(c.Pump(1).empty());
  ExpectRejected(*c.ends[1], ChannelError::kTruncated, "coordinator (rank 0)", 8);
  // Shorter than header + sequence number + tag.
  c.taps[1]->Inject(0, std::vector<uint8_t>(original.begin(), original.begin() + 40));
  EXPECT_TRUE(c.Pump(1).empty());
  EXPECT_EQ(c.ends[1]->rejection_count(ChannelError::kTruncated), 2u);
  EXPECT_NE(c.ends[1]->rejections().back().message.find(
                "expected at least " + std::to_string(kFrameHeaderSize + 24) + " bytes"),
            std::string::npos)
      << c.ends[1]->rejections().back().message;
  c.taps[1]->Inject(0, original);
  std::vector<Envelope> got = c.Pump(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].bytes, Frame(8, "payload"));
}

TEST(SecureChannel, RejectsReplayedFrame) {
  Channels c(2);
  c.Connect();
  ASSERT_TRUE(c.ends[0]->Send(1, Frame(5, "pay 100")).ok());
  ASSERT_EQ(c.Pump(1).size(), 1u);
  c.taps[1]->Inject(0, c.taps[1]->seen.back());
  EXPECT_TRUE(c.Pump(1).empty());
  ExpectRejected(*c.ends[1], ChannelError::kReplayed, "coordinator (rank 0)", 5);
  EXPECT_NE(c.ends[1]->rejections().back().message.find("expected sequence number 2, found 1"),
            std::string::npos)
      << c.ends[1]->rejections().back().message;
  ASSERT_TRUE(c.ends[0]->Send(1, Frame(6, "next")).ok());
  std::vector<Envelope> got = c.Pump(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].bytes, Frame(6, "next"));
}

TEST(SecureChannel, RejectsReorderedFrame) {
  Channels c(2);
  c.Connect();
  c.taps[1]->HoldNext(MessageType::kSealed);
  ASSERT_TRUE(c.ends[0]->Send(1, Frame(10, "first")).ok());
  ASSERT_TRUE(c.ends[0]->Send(1, Frame(11, "second")).ok());
  EXPECT_TRUE(c.Pump(1).empty());  // "first" held back, "second" out of order
  ExpectRejected(*c.ends[1], ChannelError::kReordered, "coordinator (rank 0)", 11);
  EXPECT_NE(c.ends[1]->rejections().back().message.find("expected sequence number 1, found 2"),
            std::string::npos)
      << c.ends[1]->rejections().back().message;
  const std::vector<uint8_t> second = c.taps[1]->seen.back();
  c.taps[1]->Inject(0, c.taps[1]->TakeHeld());
  c.taps[1]->Inject(0, second);  // in order now
  std::vector<Envelope> got = c.Pump(1);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].bytes, Frame(10, "first"));
  EXPECT_EQ(got[1].bytes, Frame(11, "second"));
}

TEST(SecureChannel, RefusesSealedFrameBeforeSession) {
  Channels c(2);
  const std::vector<uint8_t> forged =
      EncodeFrame(MessageType::kSealed, 4, 0, std::vector<uint8_t>(64, 0x5a));
  ASSERT_TRUE(c.network.endpoint(0).Send(1, forged).ok());
  EXPECT_TRUE(c.Pump(1).empty());
  ExpectRejected(*c.ends[1], ChannelError::kNoSession, "coordinator (rank 0)", 4);
  c.Connect();
}

TEST(SecureChannel, RefusesPlaintextFrameFromPeer) {
  Channels c(2);
  ASSERT_TRUE(c.network.endpoint(0).Send(1, Frame(12, "plain")).ok());  // before a session
  EXPECT_TRUE(c.Pump(1).empty());
  ExpectRejected(*c.ends[1], ChannelError::kNotSealed, "coordinator (rank 0)", 12);
  c.Connect();
  ASSERT_TRUE(c.network.endpoint(0).Send(1, Frame(13, "plain")).ok());  // and after
  ASSERT_TRUE(c.ends[0]->Send(1, Frame(13, "sealed")).ok());
  std::vector<Envelope> got = c.Pump(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].bytes, Frame(13, "sealed"));
  EXPECT_EQ(c.ends[1]->rejection_count(ChannelError::kNotSealed), 2u);
}

TEST(SecureChannel, ManyForgedFramesNeitherStopRecvNorGrowTheRecordWithoutBound) {
  Channels c(2);
  c.Connect();
  for (uint32_t i = 0; i < 1000; ++i) {
    ASSERT_TRUE(c.network.endpoint(0).Send(1, Frame(i, "forged")).ok());
  }
  ASSERT_TRUE(c.ends[0]->Send(1, Frame(2000, "genuine")).ok());
  std::vector<Envelope> got = c.Pump(1);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].bytes, Frame(2000, "genuine"));
  EXPECT_EQ(c.ends[1]->rejection_count(ChannelError::kNotSealed), 1000u);
  const std::vector<ChannelRejection> kept = c.ends[1]->rejections();
  ASSERT_EQ(kept.size(), SecureTransport::kKeptRejections);
  EXPECT_EQ(kept.back().round, 999u);  // oldest first, newest last
  EXPECT_EQ(kept.front().round, 1000u - SecureTransport::kKeptRejections);
}

TEST(SecureChannel, RandomGarbageIsRefusedWithoutCrashing) {
  Channels c(2);
  c.Connect();
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> byte(0, 255), length(0, 200);
  constexpr uint16_t kTypes[] = {9, 10, 2, 0, 999};  // hello, sealed, plaintext, invalid
  int sent = 0;
  for (int i = 0; i < 500; ++i) {
    std::vector<uint8_t> bytes(static_cast<size_t>(length(rng)));
    for (auto& b : bytes) b = static_cast<uint8_t>(byte(rng));
    if (bytes.size() >= kFrameHeaderSize && i % 5 != 0) {
      FrameHeader header;
      header.type = static_cast<MessageType>(kTypes[i % 5]);
      header.round = static_cast<uint32_t>(i);
      header.payload_length =
          i % 3 == 0 ? static_cast<uint64_t>(byte(rng)) : bytes.size() - kFrameHeaderSize;
      EncodeFrameHeader(header,
                        std::span<uint8_t, kFrameHeaderSize>(bytes.data(), kFrameHeaderSize));
    }
    c.taps[1]->Inject(0, std::move(bytes));
    ++sent;
  }
  EXPECT_TRUE(c.Pump(1).empty());
  EXPECT_EQ(c.ends[1]->rejection_count(), static_cast<uint64_t>(sent));
  ASSERT_TRUE(c.ends[0]->Send(1, Frame(3, "genuine")).ok());
  EXPECT_EQ(c.Pump(1).size(), 1u);
}

// --- Refused hellos ---

TEST(SecureChannel, RefusesUnknownSite) {
  const crypto::SigningKey stranger = NewKey();
  Channels c(3, [&](int rank, SecureTransportOptions* o) {
    if (rank == 2) o->identity = stranger;  // the coordinator expects another key
  });
  ASSERT_TRUE(c.ends[2]->Send(0, Frame(3, "let me in")).ok());
  ASSERT_TRUE(c.ends[1]->Send(0, Frame(3, "genuine")).ok());
  std::vector<Envelope> got = c.Pump(0);
  ASSERT_EQ(got.size(), 1u);  // the configured site still gets through
  EXPECT_EQ(got[0].from, 1);
  ExpectRejected(*c.ends[0], ChannelError::kUnknownPeer, "site 1 (rank 2)", 3);
  EXPECT_NE(c.ends[0]->rejections().back().message.find("not among the configured keys"),
            std::string::npos);
  EXPECT_FALSE(c.ends[0]->HasSession(2));
  EXPECT_TRUE(c.ends[0]->HasSession(1));
}

TEST(SecureChannel, RefusesWrongIdentityKey) {
  // Rank 1 presents the identity configured for rank 2.
  crypto::SigningKey rank2_key;
  Channels c(3, [&](int rank, SecureTransportOptions* o) {
    if (rank == 2) rank2_key = o->identity;
  });
  Channels d(3, [&](int rank, SecureTransportOptions* o) {
    if (rank == 0) o->peer_keys[2] = rank2_key.public_key;
    if (rank == 1) o->identity = rank2_key;
  });
  ASSERT_TRUE(d.ends[1]->Send(0, Frame(2, "it is me")).ok());
  EXPECT_TRUE(d.Pump(0).empty());
  ExpectRejected(*d.ends[0], ChannelError::kWrongIdentity, "site 0 (rank 1)", 2);
  EXPECT_NE(d.ends[0]->rejections().back().message.find("identity key of site 1 (rank 2)"),
            std::string::npos)
      << d.ends[0]->rejections().back().message;
}

TEST(SecureChannel, RefusesKeyListedOnlyAmongKnownKeysAsWrongIdentity) {
  const crypto::SigningKey other_site = NewKey();
  Channels c(2, [&](int rank, SecureTransportOptions* o) {
    if (rank == 0) o->known_keys.push_back(other_site.public_key);
    if (rank == 1) o->identity = other_site;
  });
  ASSERT_TRUE(c.ends[1]->Send(0, Frame(1, "hello")).ok());
  EXPECT_TRUE(c.Pump(0).empty());
  ExpectRejected(*c.ends[0], ChannelError::kWrongIdentity, "site 0 (rank 1)", 1);
}

// Whether a hello answers a key (bytes 104..135 of its payload not zero).
bool IsAnswer(const std::vector<uint8_t>& hello) {
  return TypeOf(hello) == MessageType::kChannelHello &&
         std::any_of(hello.begin() + kFrameHeaderSize + 104, hello.begin() + kFrameHeaderSize + 136,
                     [](uint8_t b) { return b != 0; });
}

TEST(SecureChannel, RefusesAnAnswerWithABadSignature) {
  Channels c(2);
  // Rank 1 opens; rank 0's answer is held back on its way to rank 1.
  c.taps[1]->hold_if = [&c](const std::vector<uint8_t>& b) {
    if (!IsAnswer(b)) return false;
    c.taps[1]->hold_if = nullptr;
    return true;
  };
  ASSERT_TRUE(c.ends[1]->Send(0, Frame(1, "hello")).ok());
  EXPECT_TRUE(c.Pump(0).empty());
  const std::vector<uint8_t> answer = c.taps[1]->TakeHeld();
  std::vector<uint8_t> forged = answer;
  forged[kFrameHeaderSize + 150] ^= 1;  // inside the signature
  c.taps[1]->Inject(0, forged);
  forged = answer;
  forged[kFrameHeaderSize + 80] ^= 1;  // the ephemeral key it signs
  c.taps[1]->Inject(0, forged);
  EXPECT_TRUE(c.Pump(1).empty());
  EXPECT_EQ(c.ends[1]->rejection_count(ChannelError::kBadSignature), 2u);
  EXPECT_FALSE(c.ends[1]->HasSession(0));
  const ChannelRejection r = c.ends[1]->rejections().back();
  EXPECT_NE(r.message.find("coordinator (rank 0), round 1"), std::string::npos) << r.message;
  // The genuine answer still opens the channel.
  c.taps[1]->Inject(0, answer);
  std::vector<Envelope> got = c.PumpAll()[0];
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].bytes, Frame(1, "hello"));
}

TEST(SecureChannel, OpeningsAreUnsignedAndAForgedOneNeverMakesASession) {
  Channels c(2);
  c.Connect();
  const auto opening = std::find_if(
      c.taps[0]->sent.begin(), c.taps[0]->sent.end(),
      [](const std::vector<uint8_t>& b) { return TypeOf(b) == MessageType::kChannelHello; });
  ASSERT_NE(opening, c.taps[0]->sent.end());
  ASSERT_FALSE(IsAnswer(*opening));
  EXPECT_TRUE(std::all_of(opening->begin() + kFrameHeaderSize + 136, opening->end(),
                          [](uint8_t b) { return b == 0; }));
  // An opening in rank 1's name with a key of the forger's own: answered
  // (a signature's cost, as a replayed opening always was), but no session
  // follows, and the genuine handshake completes beside it.
  Channels d(2);
  std::vector<uint8_t> payload(200, 0);
  payload[0] = 1;  // sender rank
  payload[4] = 0;  // addressee rank
  std::copy(d.keys[1].public_key.begin(), d.keys[1].public_key.end(), payload.begin() + 40);
  const crypto::Key32 forger = crypto::X25519Key::Generate()->public_key();
  std::copy(forger.begin(), forger.end(), payload.begin() + 72);
  d.taps[0]->Inject(1, EncodeFrame(MessageType::kChannelHello, 1, 1, payload));
  EXPECT_TRUE(d.Pump(0).empty());
  EXPECT_FALSE(d.ends[0]->HasSession(1));
  EXPECT_EQ(d.ends[0]->rejection_count(), 0u);
  ASSERT_FALSE(d.taps[0]->sent.empty());
  EXPECT_TRUE(IsAnswer(d.taps[0]->sent.back()));  // the answer went out
  ASSERT_TRUE(d.ends[1]->Send(0, Frame(2, "genuine")).ok());
  std::vector<Envelope> got = d.PumpAll()[0];
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].bytes, Frame(2, "genuine"));
  // Rank 1 refused the answer to the forger's key as stale.
  EXPECT_EQ(d.ends[1]->rejection_count(ChannelError::kStaleHello), 1u);
}

TEST(SecureChannel, RefusesHelloAddressedToAnotherRank) {
  Channels c(3);
  c.taps[2]->HoldNext(MessageType::kChannelHello);
  ASSERT_TRUE(c.ends[1]->Send(2, Frame(6, "to rank 2")).ok());
  EXPECT_TRUE(c.Pump(2).empty());
  const std::vector<uint8_t> hello = c.taps[2]->TakeHeld();
  c.taps[0]->Inject(1, hello);  // rank 1's hello for rank 2, delivered to rank 0
  EXPECT_TRUE(c.Pump(0).empty());
  ExpectRejected(*c.ends[0], ChannelError::kMisaddressed, "site 0 (rank 1)", 6);
  EXPECT_NE(c.ends[0]->rejections().back().message.find("addressee rank 0, found"),
            std::string::npos)
      << c.ends[0]->rejections().back().message;
  c.taps[2]->Inject(2, hello);  // claiming to come from rank 2 itself
  EXPECT_TRUE(c.Pump(2).empty());
  EXPECT_EQ(c.ends[2]->rejection_count(ChannelError::kMisaddressed), 1u);
  EXPECT_FALSE(c.ends[0]->HasSession(1));
}

TEST(SecureChannel, RefusesANewHandshakeOnAnOpenChannelAndIgnoresItsOwnHellosAgain) {
  Channels c(2);
  c.Connect();
  // The session's own hello again (a handshake retried while it crossed, or
  // a replay of it): it changes nothing and is ignored.
  const auto hello = std::find_if(c.taps[1]->seen.begin(), c.taps[1]->seen.end(),
                                  [](auto& b) { return TypeOf(b) == MessageType::kChannelHello; });
  ASSERT_NE(hello, c.taps[1]->seen.end());
  c.taps[1]->Inject(0, *hello);
  EXPECT_TRUE(c.Pump(1).empty());
  EXPECT_EQ(c.ends[1]->rejection_count(), 0u);
  // A new handshake of the same identity (another run of it) is refused.
  Channels other(2, nullptr, c.keys);
  ASSERT_TRUE(other.ends[0]->Send(1, Frame(1, "another run")).ok());
  const auto fresh = std::find_if(other.taps[0]->sent.begin(), other.taps[0]->sent.end(),
                                  [](auto& b) { return TypeOf(b) == MessageType::kChannelHello; });
  ASSERT_NE(fresh, other.taps[0]->sent.end());
  c.taps[1]->Inject(0, *fresh);
  EXPECT_TRUE(c.Pump(1).empty());
  ExpectRejected(*c.ends[1], ChannelError::kDuplicateHello, "coordinator (rank 0)", 1);
  ASSERT_TRUE(c.ends[0]->Send(1, Frame(2, "still fine")).ok());
  EXPECT_EQ(c.Pump(1).size(), 1u);
}

TEST(SecureChannel, SiteRefusesAnImpostorCoordinator) {
  Channels c(2, [](int rank, SecureTransportOptions* o) {
    if (rank == 0) o->identity = NewKey();
  });
  ASSERT_TRUE(c.ends[0]->Send(1, Frame(1, "train on this")).ok());
  EXPECT_TRUE(c.Pump(1).empty());
  ExpectRejected(*c.ends[1], ChannelError::kUnknownPeer, "coordinator (rank 0)", 1);
}

TEST(SecureChannel, UnauthenticatedModeAcceptsAnyIdentity) {
  Channels c(2, [](int, SecureTransportOptions* o) {
    o->authenticate = false;
    o->peer_keys.clear();
    o->identity = NewKey();
  });
  ASSERT_TRUE(c.ends[0]->Send(1, Frame(1, "plan")).ok());
  ASSERT_TRUE(c.ends[1]->Send(0, Frame(1, "update")).ok());
  std::vector<std::vector<Envelope>> delivered = c.PumpAll();
  EXPECT_EQ(delivered[0].size(), 1u);
  EXPECT_EQ(delivered[1].size(), 1u);
  EXPECT_TRUE(c.ends[0]->PeerIdentity(1).has_value());
  EXPECT_EQ(c.ends[0]->rejection_count(), 0u);
  EXPECT_EQ(c.ends[1]->rejection_count(), 0u);
  // An answer's signature is still checked: one whose ephemeral key was
  // changed in transit is refused.
  const auto answer = std::find_if(c.taps[0]->seen.begin(), c.taps[0]->seen.end(), IsAnswer);
  ASSERT_NE(answer, c.taps[0]->seen.end());
  std::vector<uint8_t> altered = *answer;
  altered[kFrameHeaderSize + 72] ^= 1;  // the ephemeral key (secure_transport.h)
  c.taps[0]->Inject(1, altered);
  EXPECT_TRUE(c.Pump(0).empty());
  EXPECT_EQ(c.ends[0]->rejection_count(ChannelError::kBadSignature), 1u);
}

// --- Job binding and replayed hellos ---

crypto::Key32 JobOf(uint8_t tag) {
  crypto::Key32 job{};
  job.fill(tag);
  return job;
}

// Every rank knows `job`.
std::function<void(int, SecureTransportOptions*)> InJob(const crypto::Key32& job) {
  return [job](int, SecureTransportOptions* o) { o->job_id = job; };
}

// The coordinator (rank 0) knows `job`; sites learn it from the coordinator.
std::function<void(int, SecureTransportOptions*)> SitesLearn(const crypto::Key32& job) {
  return [job](int rank, SecureTransportOptions* o) {
    o->job_id = job;
    o->learn_job = rank != 0;
  };
}

std::vector<std::vector<uint8_t>> HellosIn(const std::vector<std::vector<uint8_t>>& frames) {
  std::vector<std::vector<uint8_t>> hellos;
  for (const auto& b : frames)
    if (TypeOf(b) == MessageType::kChannelHello) hellos.push_back(b);
  return hellos;
}

// Frames flow both ways between ranks 0 and 1 of `c`.
void ExpectFramesBothWays(Channels& c, uint32_t round) {
  ASSERT_TRUE(c.ends[0]->Send(1, Frame(round, "plan")).ok());
  ASSERT_TRUE(c.ends[1]->Send(0, Frame(round, "update")).ok());
  std::vector<std::vector<Envelope>> delivered = c.PumpAll();
  ASSERT_EQ(delivered[1].size(), 1u);
  EXPECT_EQ(delivered[1][0].bytes, Frame(round, "plan"));
  ASSERT_EQ(delivered[0].size(), 1u);
  EXPECT_EQ(delivered[0][0].bytes, Frame(round, "update"));
  EXPECT_TRUE(c.ends[0]->HasSession(1));
  EXPECT_TRUE(c.ends[1]->HasSession(0));
}

TEST(SecureChannel, HelloOfAnotherJobIsRefusedBeforeAnySession) {
  Channels c(2, [](int rank, SecureTransportOptions* o) { o->job_id = JobOf(rank == 0 ? 1 : 2); });
  ASSERT_TRUE(c.ends[1]->Send(0, Frame(4, "update of job 2")).ok());
  std::vector<std::vector<Envelope>> delivered = c.PumpAll();
  EXPECT_TRUE(delivered[0].empty());
  ExpectRejected(*c.ends[0], ChannelError::kWrongJob, "site 0 (rank 1)", 4);
  const std::string message = c.ends[0]->rejections().back().message;
  EXPECT_NE(message.find("expected job 01010101"), std::string::npos) << message;
  EXPECT_NE(message.find("found job 02020202"), std::string::npos) << message;
  EXPECT_FALSE(c.ends[0]->HasSession(1));
  EXPECT_FALSE(c.ends[1]->HasSession(0));
  // The rank that refused never answered: nothing of it reached the site.
  EXPECT_TRUE(HellosIn(c.taps[0]->sent).empty());
}

TEST(SecureChannel, HelloReplayedFromAnEarlierJobIsRefusedAndTheGenuineHandshakeWorks) {
  Channels earlier(2, InJob(JobOf(1)));
  earlier.Connect();
  const auto old_site_hellos = HellosIn(earlier.taps[1]->sent);
  const auto old_coordinator_hellos = HellosIn(earlier.taps[0]->sent);
  ASSERT_EQ(old_site_hellos.size(), 1u);         // the site's answer
  ASSERT_EQ(old_coordinator_hellos.size(), 2u);  // the opening, then the answer

  // The same identities in a new job; every old hello arrives first.
  Channels now(2, InJob(JobOf(2)), earlier.keys);
  now.taps[0]->Inject(1, old_site_hellos[0]);
  for (const auto& hello : old_coordinator_hellos) now.taps[1]->Inject(0, hello);
  EXPECT_TRUE(now.Pump(0).empty());
  EXPECT_EQ(now.ends[0]->rejection_count(ChannelError::kWrongJob), 1u);
  EXPECT_EQ(now.ends[1]->rejection_count(ChannelError::kWrongJob), 2u);
  EXPECT_FALSE(now.ends[0]->HasSession(1));
  EXPECT_FALSE(now.ends[1]->HasSession(0));
  const ChannelRejection r = now.ends[1]->rejections().front();
  EXPECT_NE(r.message.find("channel hello from coordinator (rank 0), round 1: expected job "
                           "02020202"),
            std::string::npos)
      << r.message;
  EXPECT_NE(r.message.find("another job or an earlier run"), std::string::npos) << r.message;

  ExpectFramesBothWays(now, 2);
  EXPECT_EQ(now.ends[0]->rejection_count() + now.ends[1]->rejection_count(), 3u);
}

TEST(SecureChannel, OpeningReplayedWithinTheJobCannotWedgeTheChannel) {
  // A site's opening hello from an earlier transport (same job, same keys)
  // reaches the coordinator before the genuine one: the coordinator answers
  // it, the site refuses that answer (it never offered the key it answers),
  // and the genuine hellos still make a session.
  Channels earlier(2, InJob(JobOf(3)));
  ASSERT_TRUE(earlier.ends[1]->Send(0, Frame(1, "old")).ok());
  const auto old_opening = HellosIn(earlier.taps[1]->sent);
  ASSERT_EQ(old_opening.size(), 1u);

  Channels now(2, InJob(JobOf(3)), earlier.keys);
  now.taps[0]->Inject(1, old_opening[0]);
  ExpectFramesBothWays(now, 5);
  EXPECT_EQ(now.ends[0]->rejection_count(), 0u);
  EXPECT_EQ(now.ends[1]->rejection_count(), 1u);
  const ChannelRejection r = now.ends[1]->rejections().back();
  EXPECT_EQ(r.error, ChannelError::kStaleHello) << r.message;
  EXPECT_NE(r.message.find("coordinator (rank 0)"), std::string::npos) << r.message;
  EXPECT_NE(r.message.find("replayed from an earlier handshake"), std::string::npos) << r.message;
  // The session's keys are the genuine ones: later frames flow too.
  ExpectFramesBothWays(now, 6);
}

TEST(SecureChannel, LearningSiteLearnsTheJobFromTheCoordinatorWhoeverOpens) {
  for (const bool site_opens : {true, false}) {
    Channels c(2, SitesLearn(JobOf(7)));
    EXPECT_EQ(c.ends[1]->job_id(), std::nullopt);
    EXPECT_EQ(c.ends[0]->job_id(), JobOf(7));
    const int opener = site_opens ? 1 : 0;
    ASSERT_TRUE(c.ends[opener]->Send(1 - opener, Frame(1, "first")).ok());
    std::vector<std::vector<Envelope>> delivered = c.PumpAll();
    ASSERT_EQ(delivered[1 - opener].size(), 1u) << site_opens;
    EXPECT_EQ(c.ends[1]->job_id(), JobOf(7));
    ExpectFramesBothWays(c, 2);
    EXPECT_EQ(c.ends[0]->rejection_count() + c.ends[1]->rejection_count(), 0u) << site_opens;
  }
}

TEST(SecureChannel, LearningSiteRefusesAHelloReplayedFromAnEarlierJob) {
  Channels earlier(2, SitesLearn(JobOf(1)));
  earlier.Connect();  // the coordinator opens; the site learns job 1
  const auto old_coordinator_hellos = HellosIn(earlier.taps[0]->sent);
  ASSERT_EQ(old_coordinator_hellos.size(), 2u);
  ASSERT_TRUE(earlier.ends[1]->Send(0, Frame(1, "x")).ok());
  const auto old_site_hellos = HellosIn(earlier.taps[1]->sent);
  ASSERT_EQ(old_site_hellos.size(), 2u);  // its opening, then its answer

  Channels now(2, SitesLearn(JobOf(2)), earlier.keys);
  // The coordinator's old answer, before the site offered anything; the
  // site's old opening, which the coordinator cannot tell from a fresh one.
  now.taps[1]->Inject(0, old_coordinator_hellos[1]);
  now.taps[0]->Inject(1, old_site_hellos[0]);
  now.taps[0]->Inject(1, old_site_hellos[1]);  // and its old answer: another job
  for (const auto& got : now.PumpAll()) EXPECT_TRUE(got.empty());
  ExpectFramesBothWays(now, 3);
  EXPECT_EQ(now.ends[1]->job_id(), JobOf(2));
  EXPECT_EQ(now.ends[0]->rejection_count(ChannelError::kWrongJob), 1u);
  // The old answer, and the coordinator's answer to the replayed opening.
  EXPECT_EQ(now.ends[1]->rejection_count(ChannelError::kStaleHello), 2u);
  EXPECT_NE(now.ends[1]->rejections().front().message.find("this rank has offered none yet"),
            std::string::npos)
      << now.ends[1]->rejections().front().message;
}

TEST(SecureChannel, HelloLayoutAndTranscript) {
  // The byte layout of the header comment: job, identity, ephemeral, the key
  // answered, then the signature over the label and bytes 0..135.
  Channels c(2, InJob(JobOf(9)));
  c.Connect();
  const auto opening = HellosIn(c.taps[0]->sent)[0];
  const auto answer = HellosIn(c.taps[1]->sent)[0];
  ASSERT_EQ(opening.size(), kFrameHeaderSize + 200);
  ASSERT_EQ(answer.size(), kFrameHeaderSize + 200);
  const uint8_t* o = opening.data() + kFrameHeaderSize;
  const uint8_t* a = answer.data() + kFrameHeaderSize;
  EXPECT_EQ(o[0], 0);  // sender rank
  EXPECT_EQ(o[4], 1);  // addressee rank
  EXPECT_TRUE(std::equal(o + 8, o + 40, JobOf(9).begin()));
  EXPECT_TRUE(std::equal(o + 40, o + 72, c.keys[0].public_key.begin()));
  EXPECT_TRUE(std::all_of(o + 104, o + 136, [](uint8_t b) { return b == 0; }));  // an opening
  EXPECT_TRUE(std::equal(a + 104, a + 136, o + 72));  // the site answers the coordinator's key
  std::string transcript("fedrec channel hello v2\0", 24);
  transcript.append(reinterpret_cast<const char*>(a), 136);
  crypto::Signature signature;
  std::copy(a + 136, a + 200, signature.begin());
  EXPECT_TRUE(crypto::Verify(
      c.keys[1].public_key,
      std::span(reinterpret_cast<const uint8_t*>(transcript.data()), transcript.size()),
      signature));
}

TEST(SecureChannel, CreateRefusesMismatchedIdentityAndOutOfRangePeers) {
  InProcessNetwork network(2);
  SecureTransportOptions o;
  o.identity = NewKey();
  o.identity.public_key = NewKey().public_key;
  EXPECT_EQ(SecureTransport::Create(&network.endpoint(0), o).status().code(),
            Status::Code::kInvalidArgument);
  o.identity = NewKey();
  o.peer_keys[5] = NewKey().public_key;
  const Status out_of_range = SecureTransport::Create(&network.endpoint(0), o).status();
  EXPECT_NE(out_of_range.message().find("rank 5"), std::string::npos) << out_of_range.ToString();
}

TEST(SecureChannel, ErrorNamesAreDistinct) {
  std::vector<std::string> names;
  for (size_t i = 0; i < kChannelErrorCount; ++i)
    names.push_back(ChannelErrorName(static_cast<ChannelError>(i)));
  std::sort(names.begin(), names.end());
  EXPECT_EQ(std::unique(names.begin(), names.end()), names.end());
}

// --- Identity files ---

// A fresh, empty directory for one test.
std::string TestDir(const std::string& name) {
  const char* tmp = std::getenv("FEDREC_TEST_TMPDIR");
  const std::filesystem::path dir =
      std::filesystem::path(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") /
      ("channel_test_" + std::to_string(::getpid())) / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::filesystem::perms Mode(const std::string& path) {
  return std::filesystem::status(path).permissions() & std::filesystem::perms::all;
}

constexpr auto kOwnerReadWrite =
    std::filesystem::perms::owner_read | std::filesystem::perms::owner_write;

// Writes `pkey` as PEM, optionally encrypted with a passphrase.
void WritePem(const std::string& path, EVP_PKEY* pkey, bool encrypted) {
  BIO* bio = BIO_new_file(path.c_str(), "w");
  ASSERT_NE(bio, nullptr);
  char passphrase[] = "secret";
  const int ok = encrypted
                     ? PEM_write_bio_PKCS8PrivateKey(bio, pkey, EVP_aes_256_cbc(), passphrase, 6,
                                                     nullptr, nullptr)
                     : PEM_write_bio_PrivateKey(bio, pkey, nullptr, nullptr, 0, nullptr, nullptr);
  BIO_free(bio);
  ASSERT_EQ(ok, 1);
}

TEST(IdentityFiles, RoundTrip) {
  const std::string prefix = TestDir("round_trip") + "/site0";
  Result<crypto::SigningKey> made = GenerateIdentityFiles(prefix, false);
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  EXPECT_EQ(Slurp(prefix + ".pub"), crypto::ToHex(made->public_key) + "\n");
  EXPECT_EQ(Slurp(prefix + ".key").rfind("-----BEGIN PRIVATE KEY-----\n", 0), 0u);
  Result<crypto::SigningKey> loaded = LoadIdentity(prefix + ".key");
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->private_key, made->private_key);
  EXPECT_EQ(loaded->public_key, made->public_key);
  Result<crypto::Key32> pub = LoadPublicKeyFile(prefix + ".pub");
  ASSERT_TRUE(pub.ok()) << pub.status().ToString();
  EXPECT_EQ(*pub, made->public_key);
}

TEST(IdentityFiles, OpenSslReadsTheKeyAndFedrecReadsOpenSslKeys) {
  if (std::system("openssl version > /dev/null 2>&1") != 0) GTEST_SKIP() << "no openssl CLI";
  const std::string dir = TestDir("openssl");
  ASSERT_TRUE(GenerateIdentityFiles(dir + "/site", false).ok());
  EXPECT_EQ(std::system(("openssl pkey -in " + dir + "/site.key -noout 2>/dev/null").c_str()), 0);
  ASSERT_EQ(std::system(("openssl genpkey -algorithm ed25519 -out " + dir + "/other.key").c_str()),
            0);
  std::filesystem::permissions(dir + "/other.key", std::filesystem::perms(0600));
  Result<crypto::SigningKey> other = LoadIdentity(dir + "/other.key");
  EXPECT_TRUE(other.ok()) << other.status().ToString();
}

TEST(IdentityFiles, KeyFileHasMode0600WhateverTheUmaskOrPreviousFile) {
  const std::string dir = TestDir("mode");
  const mode_t old_umask = ::umask(0);
  ASSERT_TRUE(GenerateIdentityFiles(dir + "/a", false).ok());
  ::umask(old_umask);
  EXPECT_EQ(Mode(dir + "/a.key"), kOwnerReadWrite);
  // Overwriting a world-readable file narrows it.
  std::ofstream(dir + "/b.key") << "old\n";
  std::filesystem::permissions(dir + "/b.key", std::filesystem::perms(0644));
  ASSERT_TRUE(GenerateIdentityFiles(dir + "/b", true).ok());
  EXPECT_EQ(Mode(dir + "/b.key"), kOwnerReadWrite);
  EXPECT_TRUE(LoadIdentity(dir + "/b.key").ok());
}

TEST(IdentityFiles, RefusesAPrivateKeyOthersCanRead) {
  const std::string dir = TestDir("readable");
  ASSERT_TRUE(GenerateIdentityFiles(dir + "/site", false).ok());
  for (const auto mode : {0644, 0640, 0604, 0660}) {
    std::filesystem::permissions(dir + "/site.key", std::filesystem::perms(mode));
    const Status refused = LoadIdentity(dir + "/site.key").status();
    EXPECT_EQ(refused.code(), Status::Code::kInvalidArgument) << std::oct << mode;
    EXPECT_NE(refused.message().find(dir + "/site.key: expected a private key only its owner can "
                                           "read (mode 0600)"),
              std::string::npos)
        << refused.ToString();
    EXPECT_NE(refused.message().find("chmod 600"), std::string::npos);
  }
  std::filesystem::permissions(dir + "/site.key", std::filesystem::perms(0400));
  EXPECT_TRUE(LoadIdentity(dir + "/site.key").ok());
}

TEST(IdentityFiles, RefusesToOverwriteUnlessAsked) {
  const std::string dir = TestDir("overwrite");
  Result<crypto::SigningKey> first = GenerateIdentityFiles(dir + "/site", false);
  ASSERT_TRUE(first.ok());
  const std::string key_text = Slurp(dir + "/site.key");
  const Status again = GenerateIdentityFiles(dir + "/site", false).status();
  EXPECT_EQ(again.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(again.message().find("refusing to overwrite"), std::string::npos) << again.ToString();
  EXPECT_NE(again.message().find(dir + "/site.key"), std::string::npos) << again.ToString();
  EXPECT_EQ(Slurp(dir + "/site.key"), key_text);
  // Only the .pub exists: refused before anything is written.
  std::ofstream(dir + "/half.pub") << "x\n";
  EXPECT_FALSE(GenerateIdentityFiles(dir + "/half", false).ok());
  EXPECT_FALSE(std::filesystem::exists(dir + "/half.key"));
  // Asked to: replaced by a new identity.
  Result<crypto::SigningKey> second = GenerateIdentityFiles(dir + "/site", true);
  ASSERT_TRUE(second.ok());
  EXPECT_NE(second->public_key, first->public_key);
  EXPECT_EQ(LoadIdentity(dir + "/site.key")->public_key, second->public_key);
  EXPECT_EQ(*LoadPublicKeyFile(dir + "/site.pub"), second->public_key);
}

TEST(IdentityFiles, LoadIdentityErrorsNameTheFileAndTheProblem) {
  const std::string dir = TestDir("errors");
  const Status missing = LoadIdentity(dir + "/missing.key").status();
  EXPECT_EQ(missing.code(), Status::Code::kNotFound);
  EXPECT_NE(missing.message().find(dir + "/missing.key"), std::string::npos);
  EXPECT_NE(missing.message().find("does not exist"), std::string::npos) << missing.ToString();

  std::ofstream(dir + "/text.key") << "not a key\n";
  const Status text = LoadIdentity(dir + "/text.key").status();
  EXPECT_EQ(text.code(), Status::Code::kInvalidArgument);
  EXPECT_NE(text.message().find(dir + "/text.key"), std::string::npos);
  EXPECT_NE(text.message().find("no PEM block"), std::string::npos) << text.ToString();

  std::ofstream(dir + "/broken.key") << "-----BEGIN PRIVATE KEY-----\nAAAA\n"
                                     << "-----END PRIVATE KEY-----\n";
  const Status broken = LoadIdentity(dir + "/broken.key").status();
  EXPECT_NE(broken.message().find("not a readable private key"), std::string::npos)
      << broken.ToString();

  EVP_PKEY* x25519 = EVP_PKEY_Q_keygen(nullptr, nullptr, "X25519");
  ASSERT_NE(x25519, nullptr);
  WritePem(dir + "/x25519.key", x25519, false);
  WritePem(dir + "/encrypted.key", x25519, true);
  EVP_PKEY_free(x25519);
  const Status wrong_type = LoadIdentity(dir + "/x25519.key").status();
  EXPECT_NE(wrong_type.message().find(dir + "/x25519.key"), std::string::npos);
  EXPECT_NE(wrong_type.message().find("expected an Ed25519 key, found a X25519 key"),
            std::string::npos)
      << wrong_type.ToString();
  const Status encrypted = LoadIdentity(dir + "/encrypted.key").status();
  EXPECT_NE(encrypted.message().find("encrypted"), std::string::npos) << encrypted.ToString();
}

TEST(IdentityFiles, PublicKeysParseFromHexWithWhitespaceAndNameWhereOnError) {
  const std::string hex = crypto::ToHex(NewKey().public_key);
  Result<crypto::Key32> plain = ParsePublicKey(hex, "test");
  ASSERT_TRUE(plain.ok());
  Result<crypto::Key32> padded = ParsePublicKey(" \t" + hex + "\r\n", "test");
  ASSERT_TRUE(padded.ok());
  EXPECT_EQ(*padded, *plain);
  std::string upper = hex;
  std::transform(upper.begin(), upper.end(), upper.begin(), ::toupper);
  EXPECT_EQ(*ParsePublicKey(upper, "test"), *plain);

  const Status short_key = ParsePublicKey("12345", "sites[2].public_key").status();
  EXPECT_NE(short_key.message().find("sites[2].public_key"), std::string::npos);
  EXPECT_NE(short_key.message().find("64 hex digits"), std::string::npos) << short_key.ToString();
  std::string bad = hex;
  bad[10] = 'g';
  EXPECT_NE(ParsePublicKey(bad, "x").status().message().find("'g'"), std::string::npos);

  const std::string dir = TestDir("pub");
  std::ofstream(dir + "/bad.pub") << "12345\n";
  const Status file = LoadPublicKeyFile(dir + "/bad.pub").status();
  EXPECT_NE(file.message().find(dir + "/bad.pub"), std::string::npos) << file.ToString();
  EXPECT_EQ(LoadPublicKeyFile(dir + "/none.pub").status().code(), Status::Code::kNotFound);
}

}  // namespace
}  // namespace fedrec
