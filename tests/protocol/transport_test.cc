#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "protocol/frame.h"
#include "protocol/inprocess_transport.h"

namespace fedrec {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

#define EXPECT_CONTAINS(haystack, needle) \
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, needle, haystack)

// A message carrying (sender, sequence number) and `pad` extra bytes.
std::vector<uint8_t> Msg(uint32_t sender, uint32_t seq, size_t pad = 0) {
  std::vector<uint8_t> m(8 + pad, 0xab);
  std::memcpy(m.data(), &sender, 4);
  std::memcpy(m.data() + 4, &seq, 4);
  return m;
}
uint32_t SenderOf(const std::vector<uint8_t>& m) {
  uint32_t v;
  std::memcpy(&v, m.data(), 4);
  return v;
}
uint32_t SeqOf(const std::vector<uint8_t>& m) {
  uint32_t v;
  std::memcpy(&v, m.data() + 4, 4);
  return v;
}

// A frame whose encoder filled the payload after the header and left the
// checksum unset (as parameter-server frames are).
std::vector<uint8_t> UnstampedFrame(size_t payload) {
  std::vector<uint8_t> frame(kFrameHeaderSize + payload, 0x5a);
  FrameHeader h;
  h.type = MessageType::kPsPush;
  h.round = 3;
  h.sender = 1;
  h.payload_length = payload;
  EncodeFrameHeader(h, std::span<uint8_t, kFrameHeaderSize>(frame.data(), kFrameHeaderSize));
  return frame;
}

TEST(InProcessTransport, AnUnstampedFrameIsMovedIntactAndDecodedWithoutItsChecksum) {
  InProcessNetwork net(2);
  std::vector<uint8_t> frame = UnstampedFrame(4096);
  ASSERT_TRUE(FrameChecksumUnset(frame));
  const uint8_t* buffer = frame.data();
  ASSERT_TRUE(net.endpoint(1).Send(0, std::move(frame)).ok());
  Result<Envelope> e = net.endpoint(0).Recv(milliseconds(0));
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_TRUE(e->intact);
  EXPECT_EQ(e->bytes.data(), buffer);  // moved, not copied
  EXPECT_TRUE(FrameChecksumUnset(e->bytes));
  Result<FrameView> view = DecodeFrame(*e);
  ASSERT_TRUE(view.ok()) << view.status().ToString();
  EXPECT_EQ(view->header.type, MessageType::kPsPush);
  EXPECT_EQ(view->payload.size(), 4096u);
  // The same bytes without the envelope's word are checked, and refused.
  EXPECT_EQ(DecodeFrame(std::span<const uint8_t>(e->bytes)).status().code(),
            Status::Code::kCorruption);
}

TEST(InProcessTransport, AStampedFrameIsCheckedSoDamageBeforeSendIsStillRefused) {
  InProcessNetwork net(2);
  std::vector<uint8_t> frame = UnstampedFrame(64);
  StampFrame(frame);  // a fault injector stamps, then damages
  frame[kFrameHeaderSize + 10] ^= 0x04;
  ASSERT_TRUE(net.endpoint(1).Send(0, std::move(frame)).ok());
  Result<Envelope> e = net.endpoint(0).Recv(milliseconds(0));
  ASSERT_TRUE(e.ok());
  EXPECT_FALSE(e->intact);
  Result<FrameView> view = DecodeFrame(*e);
  EXPECT_EQ(view.status().code(), Status::Code::kCorruption);
  EXPECT_CONTAINS(view.status().message(), "checksum mismatch");
  // An envelope that claims intact bytes but carries a checksum is checked too.
  e->intact = true;
  EXPECT_EQ(DecodeFrame(*e).status().code(), Status::Code::kCorruption);
}

TEST(InProcessTransport, EndpointsKnowTheirRankAndSize) {
  InProcessNetwork net(4);
  EXPECT_EQ(net.size(), 4);
  for (int r = 0; r < 4; ++r) {
    EXPECT_EQ(net.endpoint(r).rank(), r);
    EXPECT_EQ(net.endpoint(r).size(), 4);
  }
}

TEST(InProcessTransport, DeliversInSendOrderWithSenderRank) {
  InProcessNetwork net(3);
  for (uint32_t i = 0; i < 100; ++i) ASSERT_TRUE(net.endpoint(1).Send(2, Msg(1, i)).ok());
  for (uint32_t i = 0; i < 100; ++i) {
    Result<Envelope> e = net.endpoint(2).Recv(milliseconds(0));
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    EXPECT_EQ(e->from, 1);
    EXPECT_EQ(SeqOf(e->bytes), i);
  }
  EXPECT_EQ(net.endpoint(2).Recv(milliseconds(0)).status().code(), Status::Code::kTimeout);
}

TEST(InProcessTransport, SelfSendIsDelivered) {
  InProcessNetwork net(1);
  ASSERT_TRUE(net.endpoint(0).Send(0, Msg(0, 5)).ok());
  Result<Envelope> e = net.endpoint(0).Recv(milliseconds(0));
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->from, 0);
  EXPECT_EQ(SeqOf(e->bytes), 5u);
}

TEST(InProcessTransport, RecvTimesOutNamingRankAndWait) {
  InProcessNetwork net(3);
  const auto start = Clock::now();
  Result<Envelope> e = net.endpoint(2).Recv(milliseconds(50));
  const auto waited = Clock::now() - start;
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), Status::Code::kTimeout);
  EXPECT_EQ(e.status().message(), "no message for rank 2 within 50 ms");
  EXPECT_GE(waited, milliseconds(50));
}

TEST(InProcessTransport, ZeroTimeoutPollsWithoutWaiting) {
  InProcessNetwork net(2);
  const auto start = Clock::now();
  Result<Envelope> e = net.endpoint(1).Recv(milliseconds(0));
  EXPECT_LT(Clock::now() - start, milliseconds(1000));  // far from any scheduling delay
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), Status::Code::kTimeout);
  ASSERT_TRUE(net.endpoint(0).Send(1, Msg(0, 1)).ok());
  EXPECT_TRUE(net.endpoint(1).Recv(milliseconds(0)).ok());
}

TEST(InProcessTransport, RecvWakesWhenAMessageArrives) {
  InProcessNetwork net(2);
  std::thread sender([&] {
    std::this_thread::sleep_for(milliseconds(20));
    EXPECT_TRUE(net.endpoint(0).Send(1, Msg(0, 42)).ok());
  });
  const auto start = Clock::now();
  Result<Envelope> e = net.endpoint(1).Recv(milliseconds(10000));
  EXPECT_LT(Clock::now() - start, milliseconds(5000));
  sender.join();
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  EXPECT_EQ(SeqOf(e->bytes), 42u);
}

TEST(InProcessTransport, SendToInvalidRankIsInvalidArgument) {
  InProcessNetwork net(3);
  for (int peer : {-1, 3, 100}) {
    const Status s = net.endpoint(0).Send(peer, Msg(0, 0));
    EXPECT_EQ(s.code(), Status::Code::kInvalidArgument) << peer;
    EXPECT_EQ(s.message(), "rank 0 cannot send to rank " + std::to_string(peer) +
                               ": the network has ranks 0..2");
  }
  EXPECT_EQ(net.endpoint(0).stats().messages_sent, 0u);
}

TEST(InProcessTransport, ManySendersOneReceiverKeepPerSenderOrder) {
  constexpr int kSenders = 8;
  constexpr uint32_t kPerSender = 2000;
  InProcessNetwork net(kSenders + 1);
  std::vector<std::thread> threads;
  for (int s = 1; s <= kSenders; ++s) {
    threads.emplace_back([&net, s] {
      for (uint32_t i = 0; i < kPerSender; ++i)
        ASSERT_TRUE(net.endpoint(s).Send(0, Msg(static_cast<uint32_t>(s), i, i % 7)).ok());
    });
  }
  std::vector<uint32_t> next(kSenders + 1, 0);
  size_t received = 0;
  while (received < kSenders * kPerSender) {
    Result<Envelope> e = net.endpoint(0).Recv(milliseconds(5000));
    ASSERT_TRUE(e.ok()) << e.status().ToString() << " after " << received;
    ASSERT_EQ(static_cast<int>(SenderOf(e->bytes)), e->from);
    ASSERT_EQ(SeqOf(e->bytes), next[e->from]) << "from " << e->from;
    ++next[e->from];
    ++received;
  }
  for (auto& t : threads) t.join();
  for (int s = 1; s <= kSenders; ++s) EXPECT_EQ(next[s], kPerSender);
  EXPECT_EQ(net.endpoint(0).Recv(milliseconds(0)).status().code(), Status::Code::kTimeout);
  EXPECT_EQ(net.endpoint(0).stats().messages_received, uint64_t{kSenders} * kPerSender);
}

TEST(InProcessTransport, CloseDrainsQueuedMessagesThenIsUnavailable) {
  InProcessNetwork net(2);
  ASSERT_TRUE(net.endpoint(0).Send(1, Msg(0, 1)).ok());
  ASSERT_TRUE(net.endpoint(0).Send(1, Msg(0, 2)).ok());
  net.Close();
  Result<Envelope> a = net.endpoint(1).Recv(milliseconds(1000));
  Result<Envelope> b = net.endpoint(1).Recv(milliseconds(0));
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(SeqOf(a->bytes), 1u);
  EXPECT_EQ(SeqOf(b->bytes), 2u);
  const auto start = Clock::now();
  Result<Envelope> c = net.endpoint(1).Recv(milliseconds(10000));
  EXPECT_LT(Clock::now() - start, milliseconds(1000));  // no waiting once closed
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), Status::Code::kUnavailable);
  EXPECT_CONTAINS(c.status().message(), "rank 1");
}

TEST(InProcessTransport, CloseWakesABlockedReceiver) {
  InProcessNetwork net(2);
  std::atomic<bool> returned{false};
  Status status;
  std::thread receiver([&] {
    status = net.endpoint(1).Recv(milliseconds(30000)).status();
    returned = true;
  });
  std::this_thread::sleep_for(milliseconds(20));
  EXPECT_FALSE(returned.load());
  const auto start = Clock::now();
  net.Close();
  receiver.join();
  EXPECT_LT(Clock::now() - start, milliseconds(5000));
  EXPECT_EQ(status.code(), Status::Code::kUnavailable);
}

TEST(InProcessTransport, SendAfterCloseIsUnavailable) {
  InProcessNetwork net(2);
  net.Close();
  const Status s = net.endpoint(0).Send(1, Msg(0, 0));
  EXPECT_EQ(s.code(), Status::Code::kUnavailable);
  EXPECT_EQ(s.message(), "rank 0 cannot send to rank 1: the network is closed");
  EXPECT_EQ(net.endpoint(0).stats().messages_sent, 0u);
}

TEST(InProcessTransport, StatsCountBytesAndMessagesBothWays) {
  InProcessNetwork net(3);
  ASSERT_TRUE(net.endpoint(0).Send(1, std::vector<uint8_t>(100)).ok());
  ASSERT_TRUE(net.endpoint(0).Send(2, std::vector<uint8_t>(30)).ok());
  ASSERT_TRUE(net.endpoint(2).Send(1, std::vector<uint8_t>(7)).ok());
  ASSERT_TRUE(net.endpoint(1).Recv(milliseconds(0)).ok());
  ASSERT_TRUE(net.endpoint(1).Recv(milliseconds(0)).ok());

  const TrafficStats s0 = net.endpoint(0).stats();
  EXPECT_EQ(s0.bytes_sent, 130u);
  EXPECT_EQ(s0.messages_sent, 2u);
  EXPECT_EQ(s0.bytes_received, 0u);
  EXPECT_EQ(s0.messages_received, 0u);

  const TrafficStats s1 = net.endpoint(1).stats();
  EXPECT_EQ(s1.bytes_received, 107u);
  EXPECT_EQ(s1.messages_received, 2u);
  EXPECT_EQ(s1.bytes_sent, 0u);

  const TrafficStats s2 = net.endpoint(2).stats();
  EXPECT_EQ(s2.bytes_sent, 7u);
  EXPECT_EQ(s2.messages_sent, 1u);
  EXPECT_EQ(s2.messages_received, 0u);  // its message is still queued
}

TEST(InProcessTransport, ArrivalHookRunsAfterQueuingOutsideTheLock) {
  InProcessNetwork net(2);
  int calls = 0;
  std::vector<uint32_t> seen;
  // The hook receives the message itself: this only works if the message is
  // already queued and the queue's lock is not held while the hook runs.
  net.SetArrivalHook(1, [&] {
    ++calls;
    Result<Envelope> e = net.endpoint(1).Recv(milliseconds(0));
    ASSERT_TRUE(e.ok()) << e.status().ToString();
    seen.push_back(SeqOf(e->bytes));
  });
  ASSERT_TRUE(net.endpoint(0).Send(1, Msg(0, 10)).ok());
  ASSERT_TRUE(net.endpoint(0).Send(1, Msg(0, 11)).ok());
  ASSERT_TRUE(net.endpoint(1).Send(0, Msg(1, 12)).ok());  // rank 0 has no hook
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(seen, (std::vector<uint32_t>{10, 11}));
}

TEST(InProcessTransport, ArrivalHookFiresFromEverySendingThread) {
  constexpr int kSenders = 4;
  constexpr int kPerSender = 500;
  InProcessNetwork net(kSenders + 1);
  std::atomic<int> calls{0};
  net.SetArrivalHook(0, [&] { calls.fetch_add(1); });
  std::vector<std::thread> threads;
  for (int s = 1; s <= kSenders; ++s) {
    threads.emplace_back([&net, s] {
      for (int i = 0; i < kPerSender; ++i)
        EXPECT_TRUE(net.endpoint(s).Send(0, Msg(static_cast<uint32_t>(s), i)).ok());
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(calls.load(), kSenders * kPerSender);
}

}  // namespace
}  // namespace fedrec
