// Authenticated channels: frames get through sealed, and every kind of forged,
// altered, replayed, reordered or unauthenticated frame is refused with its
// own error naming the peer and the round.
#include <gtest/gtest.h>

#include <algorithm>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "protocol/identity.h"
#include "protocol/inprocess_transport.h"
#include "protocol/messages.h"
#include "protocol/secure_transport.h"

namespace fedrec {
namespace {

using std::chrono::milliseconds;

// Sits between a SecureTransport and its network endpoint: keeps a copy of
// every frame that arrives, lets a test alter or hold arriving frames and
// inject its own.
class Tap : public Transport {
 public:
  explicit Tap(Transport* inner) : inner_(inner) {}
  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  Status Send(int peer, std::vector<uint8_t> bytes) override {
    sent.push_back(bytes);
    return inner_->Send(peer, std::move(bytes));
  }
  Result<Envelope> Recv(milliseconds timeout) override {
    for (;;) {
      if (!injected.empty()) {
        Envelope e = std::move(injected.front());
        injected.pop_front();
        return e;
      }
      Result<Envelope> e = inner_->Recv(timeout);
      if (!e.ok()) return e;
      seen.push_back(e->bytes);
      if (hold_next_sealed && Type(e->bytes) == MessageType::kSealed) {
        hold_next_sealed = false;
        held.push_back(std::move(e).value());
        continue;
      }
      if (alter) alter(e->bytes);
      return e;
    }
  }
  TrafficStats stats() const override { return inner_->stats(); }

  static MessageType Type(const std::vector<uint8_t>& bytes) {
    return static_cast<MessageType>(bytes[6] | (bytes[7] << 8));
  }

  std::vector<std::vector<uint8_t>> sent, seen;
  std::deque<Envelope> injected, held;
  bool hold_next_sealed = false;
  std::function<void(std::vector<uint8_t>&)> alter;

 private:
  Transport* inner_;
};

crypto::SigningKey NewKey() { return *crypto::GenerateSigningKey(); }

// A network of `ranks` ranks, each a SecureTransport over a Tap.
struct Channels {
  InProcessNetwork network;
  std::vector<std::unique_ptr<Tap>> taps;
  std::vector<crypto::SigningKey> keys;
  std::vector<std::unique_ptr<SecureTransport>> ends;

  // `options(rank, &o)` adjusts each rank's options (identity and peers are
  // preset: every rank authenticates every other with its key).
  explicit Channels(int ranks,
                    const std::function<void(int, SecureTransportOptions*)>& options = nullptr)
      : network(ranks) {
    for (int r = 0; r < ranks; ++r) keys.push_back(NewKey());
    for (int r = 0; r < ranks; ++r) {
      taps.push_back(std::make_unique<Tap>(&network.endpoint(r)));
      SecureTransportOptions o;
      o.identity = keys[r];
      for (int p = 0; p < ranks; ++p)
        if (p != r) o.peer_keys[p] = keys[p].public_key;
      o.peer_name = [](int rank) {
        return rank == 0
                   ? std::string("coordinator (rank 0)")
                   : "site " + std::to_string(rank - 1) + " (rank " + std::to_string(rank) + ")";
      };
      if (options) options(r, &o);
      ends.push_back(std::move(SecureTransport::Create(taps[r].get(), std::move(o)).value()));
    }
  }

  // Lets every rank process what has arrived until nothing moves; returns the
  // application frames delivered to each rank.
  std::vector<std::vector<Envelope>> PumpAll() {
    std::vector<std::vector<Envelope>> delivered(ends.size());
    for (int quiet = 0; quiet < 3;) {
      bool moved = false;
      for (size_t r = 0; r < ends.size(); ++r) {
        for (;;) {
          Result<Envelope> e = ends[r]->Recv(milliseconds(0));
          if (!e.ok()) break;
          moved = true;
          delivered[r].push_back(std::move(e).value());
        }
      }
      quiet = moved ? 0 : quiet + 1;
    }
    return delivered;
  }
  std::vector<Envelope> Pump(int rank) { return PumpAll()[static_cast<size_t>(rank)]; }
};

std::vector<uint8_t> Frame(uint32_t round, const std::string& text) {
  return EncodeMessage(Shutdown{text}, round, 0);
}

void ExpectRejected(const SecureTransport& end, ChannelError error, const std::string& peer,
                    uint32_t round) {
  ASSERT_EQ(end.rejection_count(error), 1u) << ChannelErrorName(error);
  const std::vector<ChannelRejection> all = end.rejections();
  ASSERT_FALSE(all.empty());
  const ChannelRejection& r = all.back();
  EXPECT_EQ(r.error, error);
  EXPECT_NE(r.message.find(peer), std::string::npos) << r.message;
  if (round != 0) {
    EXPECT_EQ(r.round, round);
    EXPECT_NE(r.message.find("round " + std::to_string(round)), std::string::npos) << r.message;
  }
}

TEST(SecureChannel, DeliversFramesBothWaysAndAuthenticatesThePeer) {
  Channels c(2);
  const auto to_site = Frame(3, "to the site");
  const auto to_coordinator = Frame(4, "to the coordinator");
  ASSERT_TRUE(c.ends[0]->Send(1, to_site).ok());
  ASSERT_TRUE(c.ends[1]->Send(0, to_coordinator).ok());
  std::vector<std::vector<Envelope>> delivered = c.PumpAll();
  const std::vector<Envelope>& at_site = delivered[1];
  ASSERT_EQ(at_site.size(), 1u);
  EXPECT_EQ(at_site[0].from, 0);
  EXPECT_EQ(at_site[0].bytes, to_site);
  const std::vector<Envelope>& at_coordinator = delivered[0];
  ASSERT_EQ(at_coordinator.size(), 1u);
  EXPECT_EQ(at_coordinator[0].bytes, to_coordinator);
  EXPECT_TRUE(c.ends[0]->HasSession(1));
  EXPECT_EQ(c.ends[0]->PeerIdentity(1), c.keys[1].public_key);
  EXPECT_EQ(c.ends[1]->PeerIdentity(0), c.keys[0].public_key);
  EXPECT_EQ(c.ends[0]->rejection_count(), 0u);
}

TEST(SecureChannel, ManyAndLargeFramesArriveInOrder) {
  Channels c(2);
  std::vector<std::vector<uint8_t>> frames;
  for (uint32_t i = 0; i < 50; ++i) frames.push_back(Frame(i, std::string(i * 100, 'x')));
  frames.push_back(Frame(99, std::string(24 << 20, 'y')));  // 24 MB
  for (const auto& f : frames) ASSERT_TRUE(c.ends[0]->Send(1, f).ok());
  std::vector<Envelope> got = c.Pump(1);
  ASSERT_EQ(got.size(), frames.size());
  for (size_t i = 0; i < frames.size(); ++i) EXPECT_EQ(got[i].bytes, frames[i]) << i;
}

TEST(SecureChannel, FramesOnTheWireDoNotContainThePlaintext) {
  Channels c(2);
  const std::string secret = "item 4711 rated 5 by user 42";
  ASSERT_TRUE(c.ends[0]->Send(1, Frame(1, secret)).ok());
  ASSERT_EQ(c.Pump(1).size(), 1u);
  for (const auto& bytes : c.taps[1]->seen) {
    const std::string wire(bytes.begin(), bytes.end());
    EXPECT_EQ(wire.find(secret), std::string::npos);
  }
}

// Sets up the session and returns with rank 1 about to receive `frames`.
void Connect(Channels& c) {
  ASSERT_TRUE(c.ends[0]->Send(1, Frame(1, "hello")).ok());
  ASSERT_EQ(c.Pump(1).size(), 1u);
}

TEST(SecureChannel, RejectsFlippedBit) {
  Channels c(2);
  Connect(c);
  c.taps[1]->alter = [](std::vector<uint8_t>& b) { b[40] ^= 0x04; };
  ASSERT_TRUE(c.ends[0]->Send(1, Frame(7, "payload")).ok());
  EXPECT_TRUE(c.Pump(1).empty());
  ExpectRejected(*c.ends[1], ChannelError::kTampered, "coordinator (rank 0)", 7);
}

TEST(SecureChannel, RejectsTruncatedFrame) {
  Channels c(2);
  Connect(c);
  c.taps[1]->alter = [](std::vector<uint8_t>& b) { b.resize(b.size() - 5); };
  ASSERT_TRUE(c.ends[0]->Send(1, Frame(8, "payload")).ok());
  EXPECT_TRUE(c.Pump(1).empty());
  ExpectRejected(*c.ends[1], ChannelError::kTruncated, "coordinator (rank 0)", 8);
}

TEST(SecureChannel, RejectsReplayedFrame) {
  Channels c(2);
  Connect(c);
  ASSERT_TRUE(c.ends[0]->Send(1, Frame(5, "pay 100")).ok());
  ASSERT_EQ(c.Pump(1).size(), 1u);
  c.taps[1]->injected.push_back(Envelope{0, c.taps[1]->seen.back()});
  EXPECT_TRUE(c.Pump(1).empty());
  ExpectRejected(*c.ends[1], ChannelError::kReplayed, "coordinator (rank 0)", 5);
  // The channel still works afterwards.
  ASSERT_TRUE(c.ends[0]->Send(1, Frame(6, "next")).ok());
  EXPECT_EQ(c.Pump(1).size(), 1u);
}

TEST(SecureChannel, RejectsReorderedFrame) {
  Channels c(2);
  Connect(c);
  c.taps[1]->hold_next_sealed = true;
  ASSERT_TRUE(c.ends[0]->Send(1, Frame(10, "first")).ok());
  ASSERT_TRUE(c.ends[0]->Send(1, Frame(11, "second")).ok());
  EXPECT_TRUE(c.Pump(1).empty());  // "first" held back, "second" out of order
  ExpectRejected(*c.ends[1], ChannelError::kReordered, "coordinator (rank 0)", 11);
  c.taps[1]->injected.push_back(std::move(c.taps[1]->held.front()));
  std::vector<Envelope> got = c.Pump(1);
  ASSERT_EQ(got.size(), 1u);  // the held frame is still the expected one
  EXPECT_EQ(got[0].bytes, Frame(10, "first"));
}

TEST(SecureChannel, RefusesUnknownSite) {
  const crypto::SigningKey stranger = NewKey();
  Channels c(2, [&](int rank, SecureTransportOptions* o) {
    if (rank == 1) o->identity = stranger;  // the coordinator expects another key
  });
  ASSERT_TRUE(c.ends[1]->Send(0, Frame(1, "let me in")).ok());
  EXPECT_TRUE(c.Pump(0).empty());
  ExpectRejected(*c.ends[0], ChannelError::kUnknownPeer, "site 0 (rank 1)", 0);
  EXPECT_FALSE(c.ends[0]->HasSession(1));
}

TEST(SecureChannel, RefusesWrongIdentityKey) {
  // Rank 1 presents the identity configured for rank 2.
  crypto::SigningKey rank2;
  Channels c(3, [&](int rank, SecureTransportOptions* o) {
    if (rank == 2) rank2 = o->identity;
  });
  Channels d(3, [&](int rank, SecureTransportOptions* o) {
    if (rank == 0) {
      o->peer_keys[2] = rank2.public_key;
    } else if (rank == 1) {
      o->identity = rank2;
    }
  });
  ASSERT_TRUE(d.ends[1]->Send(0, Frame(1, "it is me")).ok());
  EXPECT_TRUE(d.Pump(0).empty());
  ExpectRejected(*d.ends[0], ChannelError::kWrongIdentity, "site 0 (rank 1)", 0);
  EXPECT_NE(d.ends[0]->rejections().back().message.find("site 1 (rank 2)"), std::string::npos)
      << d.ends[0]->rejections().back().message;
}

TEST(SecureChannel, RefusesBadSignature) {
  Channels c(2);
  // Alter the signature inside the site's hello as it arrives.
  c.taps[0]->alter = [](std::vector<uint8_t>& b) {
    if (Tap::Type(b) == MessageType::kChannelHello) b[kFrameHeaderSize + 100] ^= 1;
  };
  ASSERT_TRUE(c.ends[1]->Send(0, Frame(1, "hello")).ok());
  EXPECT_TRUE(c.Pump(0).empty());
  ExpectRejected(*c.ends[0], ChannelError::kBadSignature, "site 0 (rank 1)", 0);
}

TEST(SecureChannel, RefusesPlaintextFrameFromPeer) {
  Channels c(2);
  Connect(c);
  ASSERT_TRUE(c.network.endpoint(0).Send(1, Frame(12, "plain")).ok());
  EXPECT_TRUE(c.Pump(1).empty());
  ExpectRejected(*c.ends[1], ChannelError::kNotSealed, "coordinator (rank 0)", 12);
}

TEST(SecureChannel, UnauthenticatedModeAcceptsAnyIdentity) {
  Channels c(2, [](int, SecureTransportOptions* o) {
    o->authenticate = false;
    o->peer_keys.clear();
    o->identity = NewKey();
  });
  Connect(c);
  EXPECT_EQ(c.ends[0]->rejection_count(), 0u);
  EXPECT_EQ(c.ends[1]->rejection_count(), 0u);
}

TEST(SecureChannel, CreateRefusesMismatchedIdentity) {
  InProcessNetwork network(2);
  SecureTransportOptions o;
  o.identity = NewKey();
  o.identity.public_key = NewKey().public_key;
  EXPECT_FALSE(SecureTransport::Create(&network.endpoint(0), o).ok());
}

std::string TestDir() {
  const char* tmp = std::getenv("FEDREC_TEST_TMPDIR");
  const std::string dir = std::string(tmp ? tmp : "/tmp") + "/identity";
  std::filesystem::create_directories(dir);
  return dir;
}

TEST(IdentityFiles, RoundTripWithPrivateModeAndNoSilentOverwrite) {
  const std::string prefix = TestDir() + "/site0";
  std::filesystem::remove(prefix + ".key");
  std::filesystem::remove(prefix + ".pub");
  Result<crypto::SigningKey> made = GenerateIdentityFiles(prefix, false);
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  const auto perms = std::filesystem::status(prefix + ".key").permissions();
  EXPECT_EQ(perms & std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  Result<crypto::SigningKey> loaded = LoadIdentity(prefix + ".key");
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  EXPECT_EQ(loaded->public_key, made->public_key);
  EXPECT_EQ(*LoadPublicKeyFile(prefix + ".pub"), made->public_key);
  const Status again = GenerateIdentityFiles(prefix, false).status();
  EXPECT_NE(again.message().find("refusing to overwrite"), std::string::npos);
  EXPECT_TRUE(GenerateIdentityFiles(prefix, true).ok());
}

TEST(IdentityFiles, MalformedFilesAreClearErrors) {
  const std::string dir = TestDir();
  std::ofstream(dir + "/bad.key") << "not a key\n";
  const Status bad = LoadIdentity(dir + "/bad.key").status();
  EXPECT_NE(bad.message().find(dir + "/bad.key"), std::string::npos) << bad.ToString();
  EXPECT_NE(bad.message().find("PEM"), std::string::npos) << bad.ToString();
  EXPECT_FALSE(LoadIdentity(dir + "/missing.key").ok());
  std::ofstream(dir + "/bad.pub") << "12345\n";
  const Status pub = LoadPublicKeyFile(dir + "/bad.pub").status();
  EXPECT_NE(pub.message().find("64 hex digits"), std::string::npos) << pub.ToString();
  EXPECT_TRUE(ParsePublicKey("  " + std::string(64, 'a') + "\n", "test").ok());
}

}  // namespace
}  // namespace fedrec
