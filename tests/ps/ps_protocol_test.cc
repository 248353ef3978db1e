// Parameter-server wire messages, the client's split and merge by shard, and
// a shard server's refusal of malformed requests.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "base/fast_divide.h"
#include "base/random.h"
#include "coordinator/shard_server.h"
#include "protocol/inprocess_transport.h"
#include "protocol/messages.h"
#include "protocol/ps_client.h"
#include "protocol/ps_messages.h"
#include "tests/federation/spawn.h"

namespace fedrec {
namespace {

using std::chrono::milliseconds;

// The frame as a transport delivers it: parameter-server encoders leave the
// checksum to the sending transport (protocol/frame.h), so stamp it here.
FrameView View(const std::vector<uint8_t>& frame) {
  StampFrameIfUnset(std::span<uint8_t>(const_cast<uint8_t*>(frame.data()), frame.size()));
  Result<FrameView> view = DecodeFrame(frame);
  EXPECT_TRUE(view.ok()) << view.status().ToString();
  return *view;
}

std::vector<uint8_t> PushFrame(std::vector<uint32_t> keys, std::vector<float> gradients,
                               uint32_t cols, uint32_t clock = 0) {
  size_t keys_at = 0, gradients_at = 0;
  std::vector<uint8_t> frame =
      EncodePsPushShell(9, clock, 2, cols, keys.size(), 3, &keys_at, &gradients_at);
  std::memcpy(frame.data() + keys_at, keys.data(), keys.size() * 4);
  std::memcpy(frame.data() + gradients_at, gradients.data(), gradients.size() * 4);
  return frame;
}

// Sets the frame header's payload length to what the frame holds.
void FixLength(std::vector<uint8_t>* frame) {
  const uint64_t payload = frame->size() - kFrameHeaderSize;
  std::memcpy(frame->data() + 16, &payload, 8);
}

TEST(FastDivider32, QuotientAndRemainderEqualTheHardwareDivisionsForEveryDivisorShape) {
  // Small ones, powers of two and their neighbours, and the largest.
  std::vector<uint32_t> divisors = {641, 4096, 65535, 65536, 65537};
  for (uint32_t d : {(1u << 31) - 1, 1u << 31, UINT32_MAX - 1, UINT32_MAX}) divisors.push_back(d);
  for (uint32_t d = 1; d <= 300; ++d) divisors.push_back(d);
  Rng rng(7, 0, 0, Purpose::kShuffle);
  for (int i = 0; i < 200; ++i) divisors.push_back(static_cast<uint32_t>(rng.Next() | 1));
  std::vector<uint32_t> numerators = {
      0, 1, 2, 3, 4095, 4096, 4097, UINT32_MAX - 1, UINT32_MAX, 1u << 31, (1u << 31) - 1};
  for (int i = 0; i < 2000; ++i) numerators.push_back(static_cast<uint32_t>(rng.Next()));
  for (uint32_t d : divisors) {
    const FastDivider32 divider(d);
    for (uint32_t n : numerators) {
      ASSERT_EQ(divider.Divide(n), n / d) << n << " / " << d;
      ASSERT_EQ(divider.Mod(n), n % d) << n << " % " << d;
    }
    // Each divisor's own multiples and their neighbours, where a rounding
    // error would show first.
    for (uint64_t q : {uint64_t{1}, uint64_t{2}, uint64_t{UINT32_MAX} / d}) {
      for (int64_t delta = -1; delta <= 1; ++delta) {
        const int64_t n = static_cast<int64_t>(q * d) + delta;
        if (n < 0 || n > static_cast<int64_t>(UINT32_MAX)) continue;
        const uint32_t m = static_cast<uint32_t>(n);
        ASSERT_EQ(divider.Divide(m), m / d) << m << " / " << d;
        ASSERT_EQ(divider.Mod(m), m % d) << m << " % " << d;
      }
    }
  }
}

TEST(PsMessages, PullPushAndReplyRoundTrip) {
  const std::vector<uint8_t> pull = EncodePsPull(PsPull{42, 7, 0, {5, 1, 9}}, 4);
  Result<PsPull> p = DecodePsPull(View(pull));
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->request, 42u);
  EXPECT_EQ(p->clock, 7u);
  EXPECT_EQ(p->keys, (std::vector<uint32_t>{5, 1, 9}));

  const std::vector<uint8_t> push = PushFrame({3, 8}, {1, 2, 3, 4, 5, 6}, 3, 4);
  Result<PsPushView> q = DecodePsPush(View(push));
  ASSERT_TRUE(q.ok()) << q.status().ToString();
  EXPECT_EQ(q->rows, 2u);
  EXPECT_EQ(q->Key(1), 8u);
  EXPECT_EQ(q->clock, 4u);
  EXPECT_EQ(q->epoch, 2u);
  float row[3];
  q->CopyRow(1, row);
  EXPECT_EQ(row[2], 6.0f);

  size_t at = 0;
  std::vector<uint8_t> reply = EncodePsPullReplyShell(42, 3, 2, 2, 1, &at);
  const float values[4] = {1.5f, -2, 3, 4};
  std::memcpy(reply.data() + at, values, sizeof(values));
  Result<PsPullReplyView> r = DecodePsPullReply(View(reply));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->min_clock, 3u);
  r->CopyRow(0, row);
  EXPECT_EQ(row[0], 1.5f);
  EXPECT_EQ(row[1], -2.0f);

  PsReport report;
  report.epoch = 3;
  report.final = true;
  report.squared_error = 2.5;
  report.rating_sum = 17;
  Result<PsReport> back = DecodePsReport(View(EncodePsReport(report, 5)));
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(back->final);
  EXPECT_EQ(back->squared_error, 2.5);
  EXPECT_EQ(back->rating_sum, 17.0);
}

// Found by fuzz_ps_messages: an empty key list went through memcpy with a
// null pointer on both sides (undefined behaviour, fatal under UBSan). The
// sanitizer builds (scripts/sanitize.sh address) fail this test if it returns.
TEST(PsMessages, FramesAppendedToTheirHeadEqualTheShellsWrittenInPlace) {
  const std::vector<uint32_t> keys = {4, 0, 9};
  const std::vector<float> values = {1.5f, -2.0f, 3.0f, 0.25f, -0.0f, 6.0f};  // 3 rows of 2

  std::vector<uint8_t> push = EncodePsPushHead(9, 1, 2, 2, keys.size(), 3);
  AppendPsWords(&push, keys.data(), keys.size());
  AppendPsWords(&push, values.data(), values.size());
  EXPECT_EQ(push, PushFrame(keys, values, 2, 1));
  // The room a channel seals in is still there: appending never reallocated.
  EXPECT_GE(push.capacity(), push.size() + kFrameSealingRoom);

  size_t at = 0;
  std::vector<uint8_t> shell = EncodePsPullReplyShell(42, 3, 2, keys.size(), 1, &at);
  std::memcpy(shell.data() + at, values.data(), values.size() * sizeof(float));
  std::vector<uint8_t> reply = EncodePsPullReplyHead(42, 3, 2, keys.size(), 1);
  for (size_t r = 0; r < keys.size(); ++r) AppendPsWords(&reply, values.data() + r * 2, 2);
  EXPECT_EQ(reply, shell);
  Result<PsPullReplyView> view = DecodePsPullReply(View(reply));
  ASSERT_TRUE(view.ok()) << view.status().ToString();
  float row[2];
  view->CopyRow(2, row);
  EXPECT_TRUE(std::signbit(row[0]));
  EXPECT_EQ(row[1], 6.0f);
}

TEST(PsMessages, PullWithoutKeysRoundTrips) {
  const std::vector<uint8_t> pull = EncodePsPull(PsPull{8, 2, kPsPullUnclocked, {}}, 4);
  ASSERT_EQ(pull.size(), kFrameHeaderSize + 24);
  Result<PsPull> p = DecodePsPull(View(pull));
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->request, 8u);
  EXPECT_EQ(p->flags, uint32_t{kPsPullUnclocked});
  EXPECT_TRUE(p->keys.empty());
}

TEST(PsMessages, MalformedFramesAreRefusedNamingWhatIsWrong) {
  // A key count beyond the payload.
  std::vector<uint8_t> pull = EncodePsPull(PsPull{1, 0, 0, {1, 2}}, 4);
  const uint64_t huge = uint64_t{1} << 60;
  std::memcpy(pull.data() + kFrameHeaderSize + 16, &huge, 8);
  Result<PsPull> p = DecodePsPull(View(pull));
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), Status::Code::kCorruption);
  EXPECT_NE(p.status().message().find("PsPull from rank 4: key count claims 1152921504606846976"),
            std::string::npos)
      << p.status().message();

  // Trailing bytes.
  pull = EncodePsPull(PsPull{1, 0, 0, {1}}, 4);
  pull.push_back(0);
  FixLength(&pull);
  p = DecodePsPull(View(pull));
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("1 trailing bytes"), std::string::npos);

  // Truncated in a fixed field.
  pull = EncodePsPull(PsPull{1, 0, 0, {}}, 4);
  pull.resize(kFrameHeaderSize + 10);
  FixLength(&pull);
  p = DecodePsPull(View(pull));
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("truncated at field clock"), std::string::npos)
      << p.status().message();

  // Unknown flags.
  p = DecodePsPull(View(EncodePsPull(PsPull{1, 0, 6, {}}, 4)));
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.status().message().find("unknown flags 6"), std::string::npos);

  // Rows x cols beyond the payload, with a product that overflows 64 bits.
  std::vector<uint8_t> push = PushFrame({1}, {1, 2}, 2);
  const uint32_t cols = 0xffffffffu;
  std::memcpy(push.data() + kFrameHeaderSize + 16, &cols, 4);
  const uint64_t rows = uint64_t{1} << 40;
  std::memcpy(push.data() + kFrameHeaderSize + 20, &rows, 8);
  Result<PsPushView> q = DecodePsPush(View(push));
  ASSERT_FALSE(q.ok());
  EXPECT_EQ(q.status().code(), Status::Code::kCorruption);

  // A non-finite gradient, named by key and column.
  q = DecodePsPush(View(PushFrame({4, 6}, {0, 1, std::numeric_limits<float>::quiet_NaN(), 2}, 2)));
  ASSERT_FALSE(q.ok());
  EXPECT_EQ(q.status().code(), Status::Code::kInvalidArgument);
  EXPECT_NE(q.status().message().find("gradient of key 6, column 0 is nan"), std::string::npos)
      << q.status().message();

  // The wrong message type.
  q = DecodePsPush(View(pull));
  ASSERT_FALSE(q.ok());
  EXPECT_NE(q.status().message().find("expected a PsPush frame but got PsPull"), std::string::npos);
}

// Shard servers 1..S over `items` rows of `cols` floats whose initial value
// is (row, column) -> row * 100 + column; rank 0 drives, the last rank is the
// worker running `client_fn`.
void WithShards(uint32_t shards, uint32_t items, uint32_t cols, Consistency consistency,
                const std::function<void(Transport&, const std::vector<int>&)>& client_fn) {
  const int worker_rank = static_cast<int>(shards) + 1;
  std::vector<int> shard_ranks;
  for (uint32_t s = 0; s < shards; ++s) shard_ranks.push_back(static_cast<int>(s) + 1);
  testing::SpawnRanks(worker_rank + 1, [&](int rank, Transport& t) {
    if (rank == 0) {
      PsStart start{items, cols, 1, 1, 0.0f, 1, 0, 0, ""};
      for (int r : shard_ranks) ASSERT_TRUE(t.Send(r, EncodePsStart(start, 0)).ok());
      // Wait for the worker to finish, then stop the shards.
      Result<Envelope> done = t.Recv(milliseconds(60000));
      ASSERT_TRUE(done.ok());
      for (int r : shard_ranks) ASSERT_TRUE(t.Send(r, EncodeMessage(Shutdown{"done"}, 0, 0)).ok());
    } else if (rank < worker_rank) {
      ShardServerOptions o;
      o.shard = static_cast<uint32_t>(rank - 1);
      o.sharding.shards = shards;
      o.worker_ranks = {worker_rank};
      o.consistency = consistency;
      o.optimizer.schedule.lr = 0.5f;
      o.init_row = [](uint64_t row, std::span<float> out) {
        for (size_t c = 0; c < out.size(); ++c) out[c] = static_cast<float>(row * 100 + c);
      };
      ShardServer server(o, &t);
      Status s = server.Serve();
      EXPECT_TRUE(s.ok()) << s.ToString();
    } else {
      client_fn(t, shard_ranks);
      ASSERT_TRUE(t.Send(0, EncodeMessage(Shutdown{"worker done"}, 0, rank)).ok());
    }
  });
}

TEST(PsClient, PullSplitsKeysByShardAndMergesRepliesInTheCallersOrder) {
  for (uint32_t shards : {1u, 2u, 3u}) {
    WithShards(shards, 50, 3, Consistency::kBsp, [&](Transport& t, const std::vector<int>& ranks) {
      PsClient client(&t, ranks, 3, 0);
      const std::vector<uint32_t> keys = {17, 2, 49, 0, 31, 5, 6};
      std::vector<float> out(keys.size() * 3, -1.0f);
      const uint64_t ticket = client.Pull(keys, out.data(), 0);
      ASSERT_TRUE(client.Wait(ticket, milliseconds(60000)).ok());
      for (size_t j = 0; j < keys.size(); ++j)
        for (uint32_t c = 0; c < 3; ++c) EXPECT_EQ(out[j * 3 + c], keys[j] * 100.0f + c);
      // One message per shard server per call, even to a shard with no keys.
      EXPECT_EQ(t.stats().messages_sent, shards);

      // A push lands on the right rows of the right shards (SGD, lr 0.5).
      std::vector<float> gradients(keys.size() * 3, 2.0f);
      client.Push(keys, gradients.data(), 0, 0);
      std::vector<float> after(keys.size() * 3);
      ASSERT_TRUE(client.Wait(client.Pull(keys, after.data(), 1), milliseconds(60000)).ok());
      for (size_t j = 0; j < keys.size(); ++j)
        for (uint32_t c = 0; c < 3; ++c) EXPECT_EQ(after[j * 3 + c], keys[j] * 100.0f + c - 1.0f);
      EXPECT_EQ(client.outstanding(), 0u);
    });
  }
}

TEST(ShardServer, RefusesMalformedRequestsWithClearErrorsAndKeepsServing) {
  WithShards(2, 10, 2, Consistency::kAsync, [&](Transport& t, const std::vector<int>& ranks) {
    const int me = t.rank();
    auto refusal = [&](std::vector<uint8_t> frame) -> std::string {
      EXPECT_TRUE(t.Send(ranks[0], std::move(frame)).ok());
      Result<Envelope> e = t.Recv(milliseconds(60000));
      EXPECT_TRUE(e.ok());
      Result<FrameView> view = DecodeFrame(*e);
      EXPECT_TRUE(view.ok());
      Result<SiteError> error = DecodeMessage<SiteError>(*view);
      EXPECT_TRUE(error.ok()) << "expected a SiteError, got " << MessageTypeName(view->header.type);
      return error.ok() ? error->message : "";
    };
    // Shard 0 holds the even rows.
    EXPECT_NE(refusal(EncodePsPull(PsPull{1, 0, 0, {4, 3}}, me))
                  .find("key 1 is row 3, held by shard 1 (row mod 2), not by this shard"),
              std::string::npos);
    EXPECT_NE(refusal(EncodePsPull(PsPull{1, 0, 0, {12}}, me)).find("expected a row below 10"),
              std::string::npos);
    EXPECT_NE(refusal(PushFrame({2}, {1, 2, 3}, 3)).find("rows of 3 floats, expected 2"),
              std::string::npos);
    EXPECT_NE(refusal(PushFrame({2}, {1, 2}, 2, 5)).find("for clock 5, expected clock 0"),
              std::string::npos);
    std::vector<uint8_t> garbage = EncodePsPull(PsPull{1, 0, 0, {2}}, me);
    garbage[0] = 'X';
    EXPECT_NE(refusal(garbage).find("does not decode: bad frame magic"), std::string::npos);
    std::vector<uint8_t> short_push = PushFrame({2}, {1, 2}, 2);
    short_push.erase(short_push.end() - 3, short_push.end());
    FixLength(&short_push);
    EXPECT_NE(refusal(short_push).find("gradients (row count x cols) claims 1 rows of 2 floats"),
              std::string::npos);
    EXPECT_NE(refusal(EncodeMessage(EvalReport{}, 0, me)).find("expected PsPull or PsPush"),
              std::string::npos);
    // Still serving.
    PsClient client(&t, ranks, 2, 0);
    std::vector<float> out(2);
    const std::vector<uint32_t> keys = {4};
    ASSERT_TRUE(client.Wait(client.Pull(keys, out.data(), 0), milliseconds(60000)).ok());
    EXPECT_EQ(out[0], 400.0f);
  });
}

TEST(PsClient, AShardsRefusalFailsTheWaitWithTheShardsMessage) {
  WithShards(2, 10, 2, Consistency::kAsync, [&](Transport& t, const std::vector<int>& ranks) {
    PsClient client(&t, ranks, 2, 0);
    std::vector<float> out(2);
    const std::vector<uint32_t> keys = {11};  // beyond the 10 rows
    Status s = client.Wait(client.Pull(keys, out.data(), 0), milliseconds(60000));
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.message().find("shard 1 (rank 2) refused a request"), std::string::npos)
        << s.message();
    EXPECT_NE(s.message().find("key 0 is row 11, expected a row below 10"), std::string::npos)
        << s.message();
  });
}

}  // namespace
}  // namespace fedrec
