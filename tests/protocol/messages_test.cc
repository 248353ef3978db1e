#include "protocol/messages.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <string>
#include <vector>

#include "base/random.h"
#include "tests/protocol/test_messages.h"

// ---------------------------------------------------------------------------
// Largest single allocation while tracking is on: lets the tests prove that a
// forged length prefix is rejected before anything is allocated for it.
namespace {
std::atomic<bool> g_track_allocations{false};
std::atomic<size_t> g_largest_allocation{0};

void* TrackedAlloc(size_t n) {
  if (g_track_allocations.load(std::memory_order_relaxed)) {
    size_t prev = g_largest_allocation.load(std::memory_order_relaxed);
    while (n > prev && !g_largest_allocation.compare_exchange_weak(prev, n)) {
    }
  }
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
}  // namespace

void* operator new(size_t n) { return TrackedAlloc(n); }
void* operator new[](size_t n) { return TrackedAlloc(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }

namespace fedrec {
namespace {

using testing::RandomBlockUpdate;
using testing::RandomMessage;
using testing::RandomModelUpdate;
using testing::RandomRoundPlan;

constexpr uint32_t kRound = 7;
constexpr uint32_t kSender = 3;

#define EXPECT_CONTAINS(haystack, needle) \
  EXPECT_PRED_FORMAT2(::testing::IsSubstring, needle, haystack)

template <typename M>
Result<M> Decode(const std::vector<uint8_t>& frame) {
  Result<FrameView> view = DecodeFrame(frame);
  if (!view.ok()) return view.status();
  return DecodeMessage<M>(*view);
}

// Appends little-endian integers / floats: hand-crafted payloads.
class Bytes {
 public:
  template <typename T>
  Bytes& Put(T value) {
    static_assert(std::is_arithmetic_v<T>);
    uint8_t raw[sizeof(T)];
    std::memcpy(raw, &value, sizeof(T));  // tests run on little-endian hosts (see sha256.cc)
    bytes_.insert(bytes_.end(), raw, raw + sizeof(T));
    return *this;
  }
  Bytes& Str(const std::string& s) {
    Put<uint64_t>(s.size());
    bytes_.insert(bytes_.end(), s.begin(), s.end());
    return *this;
  }
  const std::vector<uint8_t>& bytes() const { return bytes_; }

 private:
  std::vector<uint8_t> bytes_;
};

// The payload of a RoundPlan with one block named "a" whose data count is
// `claimed` but which carries `present` floats.
// The fields a RoundPlan ends with when it aggregates in the clear.
constexpr size_t kPlainAggregationBytes =
    1 + 8 + 4 + 4 + 4 + 4 + 8 + 4 + 4 + 4 + 8 + 32 + 1 + 4 + 8 + 4 + 8 + 4 + 4 + 8 * 4;
void AppendPlainAggregationFields(Bytes& b) {
  b.Put<uint8_t>(0).Put<uint64_t>(0);                      // kNone, no participants
  b.Put<uint32_t>(0).Put<uint32_t>(0);                     // threshold, degree
  b.Put<uint32_t>(0).Put<uint32_t>(0).Put<uint64_t>(0);    // colluders, dropouts, ring order
  b.Put<uint32_t>(64).Put<uint32_t>(16).Put<float>(8.0f);  // ring, fraction bits, clip
  b.Put<uint64_t>(65536);                                  // max weight
  for (int i = 0; i < 32; ++i) b.Put<uint8_t>(0);          // job id
  b.Put<uint8_t>(0);                                       // evaluate
  b.Put<float>(0.0f);                                      // proximal mu
  b.Put<uint64_t>(0);                                      // no control variates
  b.Put<float>(0.0f);                                      // plain update (steps unit)
  b.Put<uint64_t>(0);                                      // no shard servers
  b.Put<uint32_t>(0).Put<uint32_t>(0);                     // no differential privacy, unit
  b.Put<double>(0.0).Put<double>(0.0).Put<double>(0.0);    // dp clip, noise, count noise
  b.Put<double>(1.0);                                      // dp user fraction
}

std::vector<uint8_t> RoundPlanPayload(uint64_t claimed, uint32_t present) {
  Bytes b;
  b.Put<uint8_t>(1);  // little-endian archive
  b.Put<uint32_t>(kRound).Put<uint64_t>(11).Put<uint32_t>(2).Put<uint64_t>(4).Put<float>(0.5f);
  b.Put<uint8_t>(1);                                                   // includes_model
  b.Put<uint64_t>(1);                                                  // one block
  b.Str("a").Put<uint8_t>(0).Put<uint32_t>(1).Put<uint32_t>(present);  // name, scope, rows, cols
  b.Put<uint64_t>(claimed);
  for (uint32_t i = 0; i < present; ++i) b.Put<float>(static_cast<float>(i));
  AppendPlainAggregationFields(b);
  return b.bytes();
}

// ---------------------------------------------------------------------------
// Round trips

template <typename M>
class MessageRoundTrip : public ::testing::Test {};
using MessageTypes =
    ::testing::Types<RoundPlan, ModelUpdate, EvalRequest, EvalReport, Shutdown, SiteError,
                     SiteHello, Catalogue, SecAggKeys, SecAggKeyList, SecAggShares,
                     SecAggRoutedShares, SecAggMasked, SecAggUnmaskRequest, SecAggUnmaskShares,
                     SecAggSurvivorSignature, PaillierKey, PaillierUpdate, PaillierSum,
                     PaillierDecrypted, ShardRound, ShardClose>;
struct MessageName {
  template <typename M>
  static std::string GetName(int) {
    return MessageTypeName(M::kType);
  }
};
TYPED_TEST_SUITE(MessageRoundTrip, MessageTypes, MessageName);

TYPED_TEST(MessageRoundTrip, RandomContentsSurviveEncodeDecode) {
  Rng rng(20240611);
  for (int i = 0; i < 200; ++i) {
    const TypeParam message = RandomMessage<TypeParam>(rng);
    const uint32_t round = static_cast<uint32_t>(rng.Next());
    const uint32_t sender = static_cast<uint32_t>(rng.Below(1000));
    const std::vector<uint8_t> frame = EncodeMessage(message, round, sender);
    Result<FrameView> view = DecodeFrame(frame);
    ASSERT_TRUE(view.ok()) << view.status().ToString();
    EXPECT_EQ(view->header.type, TypeParam::kType);
    EXPECT_EQ(view->header.round, round);
    EXPECT_EQ(view->header.sender, sender);
    Result<TypeParam> decoded = DecodeMessage<TypeParam>(*view);
    ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
    EXPECT_EQ(*decoded, message) << "instance " << i;
  }
}

TYPED_TEST(MessageRoundTrip, DefaultMessageSurvivesEncodeDecode) {
  const TypeParam message{};
  Result<TypeParam> decoded = Decode<TypeParam>(EncodeMessage(message, 0, 0));
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(*decoded, message);
}

TEST(Messages, EmptyBlocksRoundTrip) {
  // Smallest possible elements: checks the decoder's per-element size bounds
  // never reject a legitimate message.
  RoundPlan plan;
  plan.model.resize(5);
  Result<RoundPlan> p = Decode<RoundPlan>(EncodeMessage(plan, 1, 1));
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->model.size(), 5u);

  ModelUpdate update;
  update.blocks.resize(4);
  Result<ModelUpdate> u = Decode<ModelUpdate>(EncodeMessage(update, 1, 1));
  ASSERT_TRUE(u.ok()) << u.status().ToString();
  EXPECT_EQ(*u, update);
}

TEST(Messages, WireFormatIsLittleEndianPortableBinary) {
  const std::vector<uint8_t> frame = EncodeMessage(Shutdown{"ab"}, 2, 9);
  const std::vector<uint8_t> payload(frame.begin() + kFrameHeaderSize, frame.end());
  const std::vector<uint8_t> expected = {1, 2, 0, 0, 0, 0, 0, 0, 0, 'a', 'b', 0};  // ..., failed
  EXPECT_EQ(payload, expected);
}

TEST(Messages, FloatDataIsOneContiguousLittleEndianBlock) {
  RoundPlan plan;
  plan.model.emplace_back("w", Scope::kGlobal, 1, 2);
  plan.model[0].data = {1.0f, 2.0f};
  const std::vector<uint8_t> frame = EncodeMessage(plan, 1, 1);
  const auto end = frame.end() - kPlainAggregationBytes;
  const std::vector<uint8_t> tail(end - 16, end);
  const std::vector<uint8_t> expected = {2, 0, 0,    0,    0, 0, 0, 0,      // count
                                         0, 0, 0x80, 0x3f, 0, 0, 0, 0x40};  // 1.0f 2.0f
  EXPECT_EQ(tail, expected);
}

TEST(Messages, HandCraftedPayloadDecodes) {
  // Guards the crafted-payload helper used by the hostile-length tests.
  Result<RoundPlan> plan = Decode<RoundPlan>(
      EncodeFrame(MessageType::kRoundPlan, kRound, kSender, RoundPlanPayload(3, 3)));
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  ASSERT_EQ(plan->model.size(), 1u);
  EXPECT_EQ(plan->model[0].data, (std::vector<float>{0.0f, 1.0f, 2.0f}));
  EXPECT_EQ(plan->lr, 0.5f);
}

// ---------------------------------------------------------------------------
// Hostile and broken payloads

TEST(Messages, RejectsWrongTypeNamingBothTypesSenderAndRound) {
  Result<RoundPlan> plan = Decode<RoundPlan>(EncodeMessage(Shutdown{"bye"}, kRound, kSender));
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), Status::Code::kCorruption);
  EXPECT_EQ(plan.status().message(),
            "expected a RoundPlan frame (type 1) but got Shutdown (type 5) from rank 3, round 7");
}

// Every proper prefix of `frame`'s payload, framed again, fails to decode as
// an M with a Corruption error containing `context`.
template <typename M>
void ExpectEveryTruncationRejected(const std::vector<uint8_t>& frame, const std::string& context) {
  const std::span<const uint8_t> payload(frame.data() + kFrameHeaderSize,
                                         frame.size() - kFrameHeaderSize);
  for (size_t n = 0; n < payload.size(); ++n) {
    const std::vector<uint8_t> truncated = EncodeFrame(M::kType, kRound, kSender, payload.first(n));
    Result<M> cut = Decode<M>(truncated);
    ASSERT_FALSE(cut.ok()) << "prefix of " << n << " bytes decoded";
    EXPECT_EQ(cut.status().code(), Status::Code::kCorruption) << n;
    EXPECT_CONTAINS(cut.status().message(), context);
  }
}

TEST(Messages, RejectsEveryTruncationOfAModelUpdate) {
  Rng rng(7);
  const std::vector<uint8_t> frame = EncodeMessage(RandomModelUpdate(rng), kRound, kSender);
  ASSERT_GT(frame.size(), kFrameHeaderSize + 100);
  ExpectEveryTruncationRejected<ModelUpdate>(frame, "payload of ModelUpdate from rank 3, round 7");
}

TEST(Messages, MaskedInputViewReadsTheInputInPlaceAndRejectsEveryTruncation) {
  SecAggMasked masked;
  masked.round = kRound;
  masked.site = 4;
  masked.ring_bits = 32;
  for (int i = 0; i < 64; ++i) masked.data.push_back(static_cast<uint8_t>(i * 7));
  const std::vector<uint8_t> frame = EncodeMessage(masked, kRound, kSender);
  Result<FrameView> view_frame = DecodeFrame(frame);
  ASSERT_TRUE(view_frame.ok());
  Result<SecAggMaskedView> view = DecodeMessage<SecAggMaskedView>(*view_frame);
  ASSERT_TRUE(view.ok()) << view.status().ToString();
  EXPECT_EQ(view->round, masked.round);
  EXPECT_EQ(view->site, masked.site);
  EXPECT_EQ(view->ring_bits, masked.ring_bits);
  EXPECT_TRUE(
      std::equal(view->data.begin(), view->data.end(), masked.data.begin(), masked.data.end()));
  // The bytes are the frame's own, not a copy.
  EXPECT_GE(view->data.data(), frame.data());
  EXPECT_LE(view->data.data() + view->data.size(), frame.data() + frame.size());

  ExpectEveryTruncationRejected<SecAggMaskedView>(frame, "payload of SecAggMasked from rank 3");
}

TEST(Messages, MaskedFrameWrittenInPlaceIsTheEncodedMessage) {
  for (const size_t bytes : {size_t{0}, size_t{40}}) {
    SecAggMasked masked;
    masked.round = kRound;
    masked.site = 9;
    masked.ring_bits = 64;
    for (size_t i = 0; i < bytes; ++i) masked.data.push_back(static_cast<uint8_t>(i * 13 + 1));
    MaskedFrame out = EncodeMaskedFrame(masked, masked.data.size(), kRound, kSender);
    ASSERT_EQ(out.input.size(), masked.data.size());
    EXPECT_TRUE(std::all_of(out.input.begin(), out.input.end(), [](uint8_t b) { return b == 0; }));
    EXPECT_GE(out.input.data(), out.frame.data());
    EXPECT_LE(out.input.data() + out.input.size(), out.frame.data() + out.frame.size());
    std::copy(masked.data.begin(), masked.data.end(), out.input.begin());
    StampFrame(out.frame);  // what the transport does once the input is written
    EXPECT_EQ(out.frame, EncodeMessage(masked, kRound, kSender)) << bytes << " bytes";
    Result<SecAggMasked> decoded = Decode<SecAggMasked>(out.frame);
    ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
    EXPECT_EQ(*decoded, masked);
  }
}

TEST(Messages, TruncationErrorSaysWhatFailedToDecode) {
  const std::vector<uint8_t> frame = EncodeMessage(SiteError{5, "disk full"}, kRound, kSender);
  const std::vector<uint8_t> truncated =
      EncodeFrame(MessageType::kSiteError, kRound, kSender,
                  std::span<const uint8_t>(frame.data() + kFrameHeaderSize,
                                           frame.size() - kFrameHeaderSize - 2));
  Result<SiteError> e = Decode<SiteError>(truncated);
  ASSERT_FALSE(e.ok());
  EXPECT_CONTAINS(e.status().message(),
                  "payload of SiteError from rank 3, round 7 does not decode: ");
  EXPECT_CONTAINS(e.status().message(), "site error message claims 9 characters");
}

TEST(Messages, RejectsTrailingBytesInsidePayload) {
  const std::vector<uint8_t> frame = EncodeMessage(SiteError{5, "x"}, kRound, kSender);
  std::vector<uint8_t> payload(frame.begin() + kFrameHeaderSize, frame.end());
  payload.push_back(0xaa);
  payload.push_back(0xbb);
  Result<SiteError> e =
      Decode<SiteError>(EncodeFrame(MessageType::kSiteError, kRound, kSender, payload));
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), Status::Code::kCorruption);
  EXPECT_EQ(e.status().message(),
            "payload of SiteError from rank 3, round 7 has 2 trailing bytes: the message ends at "
            "byte " +
                std::to_string(payload.size() - 2) + " of " + std::to_string(payload.size()));
}

TEST(Messages, RejectsBigEndianOrGarbageByteOrderFlag) {
  for (uint8_t flag : {uint8_t{0}, uint8_t{2}, uint8_t{0xff}}) {
    std::vector<uint8_t> payload = RoundPlanPayload(3, 3);
    payload[0] = flag;
    Result<RoundPlan> plan =
        Decode<RoundPlan>(EncodeFrame(MessageType::kRoundPlan, kRound, kSender, payload));
    ASSERT_FALSE(plan.ok());
    EXPECT_EQ(plan.status().code(), Status::Code::kCorruption);
    EXPECT_CONTAINS(plan.status().message(),
                    "starts with byte order flag " + std::to_string(flag) + ", expected 1");
  }
}

TEST(Messages, RejectsHugeClaimedVectorLengthWithoutAllocating) {
  const std::vector<uint8_t> frame =
      EncodeFrame(MessageType::kRoundPlan, kRound, kSender, RoundPlanPayload(uint64_t{1} << 60, 2));
  g_largest_allocation = 0;
  g_track_allocations = true;
  Result<RoundPlan> plan = Decode<RoundPlan>(frame);
  g_track_allocations = false;
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), Status::Code::kCorruption);
  EXPECT_CONTAINS(plan.status().message(),
                  "data of block 'a' claims 1152921504606846976 float32 values (at least 4 bytes "
                  "each) but only " +
                      std::to_string(8 + kPlainAggregationBytes) + " payload bytes remain");
  EXPECT_LT(g_largest_allocation.load(), size_t{1} << 16);
}

TEST(Messages, RejectsCountsThatWouldOverflowWhenMultiplied) {
  // 2^62 uint32 rows: count * 4 wraps to 0 in 64 bits.
  Bytes b;
  b.Put<uint8_t>(1).Put<uint32_t>(kRound).Put<uint64_t>(1).Put<uint64_t>(1).Put<double>(0.0);
  b.Put<uint64_t>(1).Put<uint64_t>(1);  // train_count, one block
  b.Str("u").Put<uint32_t>(2).Put<uint64_t>(uint64_t{1} << 62);
  for (int i = 0; i < 8; ++i) b.Put<uint64_t>(0);  // enough bytes for one block's minimum
  const std::vector<uint8_t> frame =
      EncodeFrame(MessageType::kModelUpdate, kRound, kSender, b.bytes());
  g_largest_allocation = 0;
  g_track_allocations = true;
  Result<ModelUpdate> update = Decode<ModelUpdate>(frame);
  g_track_allocations = false;
  ASSERT_FALSE(update.ok());
  EXPECT_EQ(update.status().code(), Status::Code::kCorruption);
  EXPECT_CONTAINS(update.status().message(), "rows of update block 'u' claims 4611686018427387904");
  EXPECT_LT(g_largest_allocation.load(), size_t{1} << 16);
}

TEST(Messages, RejectsHugeBlockAndStringCountsWithoutAllocating) {
  // A block list claiming 2^60 blocks.
  Bytes list;
  list.Put<uint8_t>(1).Put<uint32_t>(kRound).Put<uint64_t>(1).Put<uint8_t>(1);
  list.Put<uint64_t>(uint64_t{1} << 60);
  // A shutdown reason claiming 2^63 characters.
  Bytes reason;
  reason.Put<uint8_t>(1).Put<uint64_t>(uint64_t{1} << 63).Put<uint32_t>(0);

  g_largest_allocation = 0;
  g_track_allocations = true;
  Result<EvalRequest> request =
      Decode<EvalRequest>(EncodeFrame(MessageType::kEvalRequest, kRound, kSender, list.bytes()));
  Result<Shutdown> shutdown =
      Decode<Shutdown>(EncodeFrame(MessageType::kShutdown, kRound, kSender, reason.bytes()));
  g_track_allocations = false;

  ASSERT_FALSE(request.ok());
  EXPECT_CONTAINS(request.status().message(),
                  "model block list claims 1152921504606846976 elements");
  ASSERT_FALSE(shutdown.ok());
  EXPECT_CONTAINS(shutdown.status().message(),
                  "shutdown reason claims 9223372036854775808 characters");
  EXPECT_LT(g_largest_allocation.load(), size_t{1} << 16);
}

TEST(Messages, RejectsBlockCountJustAboveWhatTheBytesCanHold) {
  // 2 blocks announced, bytes for one empty block only.
  Bytes b;
  b.Put<uint8_t>(1).Put<uint32_t>(kRound).Put<uint64_t>(1).Put<uint8_t>(1).Put<uint64_t>(2);
  b.Str("").Put<uint8_t>(0).Put<uint32_t>(0).Put<uint32_t>(0).Put<uint64_t>(0);
  Result<EvalRequest> request =
      Decode<EvalRequest>(EncodeFrame(MessageType::kEvalRequest, kRound, kSender, b.bytes()));
  ASSERT_FALSE(request.ok());
  EXPECT_CONTAINS(request.status().message(), "model block list claims 2 elements");
}

TEST(Messages, SurvivesRandomByteFlips) {
  // Random corruptions must decode cleanly or fail cleanly. Whatever decodes
  // must re-encode to exactly the corrupted bytes (the encoding is canonical,
  // so nothing was silently misread).
  Rng rng(99);
  int decoded = 0, rejected = 0;
  for (int i = 0; i < 4000; ++i) {
    const bool plan = i % 2 == 0;
    std::vector<uint8_t> frame = plan ? EncodeMessage(RandomRoundPlan(rng), kRound, kSender)
                                      : EncodeMessage(RandomModelUpdate(rng), kRound, kSender);
    const int flips = 1 + static_cast<int>(rng.Below(4));
    for (int f = 0; f < flips; ++f) {
      // Mostly the payload, sometimes the header.
      const size_t pos = rng.Below(8) == 0
                             ? rng.Below(kFrameHeaderSize)
                             : kFrameHeaderSize + rng.Below(frame.size() - kFrameHeaderSize);
      frame[pos] ^= static_cast<uint8_t>(1 + rng.Below(255));
    }
    // A peer that stamps its own garbage: the checksum passes, so the
    // decoders must cope with what follows.
    StampFrame(frame);
    Result<FrameView> view = DecodeFrame(frame);
    if (!view.ok()) {
      ++rejected;
      continue;
    }
    if (plan) {
      Result<RoundPlan> m = DecodeMessage<RoundPlan>(*view);
      if (m.ok()) {
        ++decoded;
        EXPECT_EQ(EncodeMessage(*m, view->header.round, view->header.sender), frame) << i;
      } else {
        ++rejected;
        EXPECT_FALSE(m.status().message().empty());
      }
    } else {
      Result<ModelUpdate> m = DecodeMessage<ModelUpdate>(*view);
      if (m.ok()) {
        ++decoded;
        EXPECT_EQ(EncodeMessage(*m, view->header.round, view->header.sender), frame) << i;
      } else {
        ++rejected;
        EXPECT_FALSE(m.status().message().empty());
      }
    }
  }
  EXPECT_EQ(decoded + rejected, 4000);
  EXPECT_GT(decoded, 100);   // flips in float data decode
  EXPECT_GT(rejected, 100);  // flips in counts and flags do not
}

// ---------------------------------------------------------------------------
// Structural invariants

ModelUpdate ValidUpdate() {
  ModelUpdate m;
  m.round = kRound;
  BlockUpdate u;
  u.name = "item";
  u.cols = 2;
  u.rows = {1, 4, 9};
  u.weights = {1.0f, 2.0f, 3.0f};
  u.values = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f};
  m.blocks.push_back(u);
  return m;
}

Status DecodeUpdateStatus(const ModelUpdate& m) {
  return Decode<ModelUpdate>(EncodeMessage(m, kRound, kSender)).status();
}

TEST(Messages, ValidUpdateDecodes) { EXPECT_TRUE(DecodeUpdateStatus(ValidUpdate()).ok()); }

TEST(Messages, RejectsUpdateRowsNotAscending) {
  ModelUpdate m = ValidUpdate();
  m.blocks[0].rows = {1, 9, 4};
  const Status s = DecodeUpdateStatus(m);
  EXPECT_EQ(s.code(), Status::Code::kCorruption);
  EXPECT_CONTAINS(s.message(),
                  "update block 0 'item': row indices must be strictly ascending, "
                  "but entry 2 is row 4 after row 9");
}

TEST(Messages, RejectsDuplicateUpdateRows) {
  ModelUpdate m = ValidUpdate();
  m.blocks[0].rows = {1, 4, 4};
  const Status s = DecodeUpdateStatus(m);
  EXPECT_EQ(s.code(), Status::Code::kCorruption);
  EXPECT_CONTAINS(s.message(), "entry 2 is row 4 after row 4");
}

TEST(Messages, RejectsWeightCountMismatch) {
  ModelUpdate m = ValidUpdate();
  m.blocks[0].weights.pop_back();
  const Status s = DecodeUpdateStatus(m);
  EXPECT_EQ(s.code(), Status::Code::kCorruption);
  EXPECT_CONTAINS(s.message(), "has 3 rows but 2 weights");
}

TEST(Messages, RejectsValueCountMismatch) {
  ModelUpdate m = ValidUpdate();
  m.blocks[0].values.push_back(1.0f);
  const Status s = DecodeUpdateStatus(m);
  EXPECT_EQ(s.code(), Status::Code::kCorruption);
  EXPECT_CONTAINS(s.message(), "has 3 rows of 2 columns (6 values) but carries 7 values");
}

TEST(Messages, RejectsNonFiniteUpdateValues) {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    ModelUpdate m = ValidUpdate();
    m.blocks[0].values[3] = bad;
    const Status s = DecodeUpdateStatus(m);
    EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
    EXPECT_CONTAINS(s.message(), "value of row 4, column 1 is");
  }
}

TEST(Messages, RejectsNonFiniteOrNonPositiveWeights) {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    0.0f, -1.0f}) {
    ModelUpdate m = ValidUpdate();
    m.blocks[0].weights[1] = bad;
    const Status s = DecodeUpdateStatus(m);
    EXPECT_EQ(s.code(), Status::Code::kInvalidArgument) << bad;
    EXPECT_CONTAINS(s.message(), "weight of row 4 is");
  }
}

TEST(Messages, RejectsParamBlockWhoseDataDoesNotMatchItsShape) {
  RoundPlan plan;
  plan.model.emplace_back("item", Scope::kGlobal, 3, 2);
  plan.model[0].data.pop_back();
  Result<RoundPlan> p = Decode<RoundPlan>(EncodeMessage(plan, kRound, kSender));
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), Status::Code::kCorruption);
  EXPECT_EQ(p.status().message(),
            "payload of RoundPlan from rank 3, round 7: model block 0 'item' is 3x2 (6 values) but "
            "carries 5 values");
}

TEST(Messages, RejectsInvalidScopeAndBoolBytes) {
  std::vector<uint8_t> payload = RoundPlanPayload(1, 1);
  // Offsets: flag 1, round 4, version 8, epochs 4, offset 8, lr 4 -> includes_model at 29;
  // block count 8, name 8 + 1 -> scope at 47.
  ASSERT_EQ(payload[29], 1);
  ASSERT_EQ(payload[47], 0);
  std::vector<uint8_t> bad_bool = payload;
  bad_bool[29] = 2;
  Result<RoundPlan> p =
      Decode<RoundPlan>(EncodeFrame(MessageType::kRoundPlan, kRound, kSender, bad_bool));
  ASSERT_FALSE(p.ok());
  EXPECT_CONTAINS(p.status().message(), "includes_model is a bool but its byte is 2");

  std::vector<uint8_t> bad_scope = payload;
  bad_scope[47] = 7;
  p = Decode<RoundPlan>(EncodeFrame(MessageType::kRoundPlan, kRound, kSender, bad_scope));
  ASSERT_FALSE(p.ok());
  EXPECT_CONTAINS(p.status().message(),
                  "block 'a' has scope 7, expected 0 (global), 1 (local) or 2 (global average)");
}

TEST(Messages, RejectsEvalReportsWithUnequalHistogramsOrOneGroup) {
  EvalReport report;
  report.tasks.resize(1);
  report.tasks[0].positives = {1, 2, 3};
  report.tasks[0].negatives = {4, 5};
  Result<EvalReport> decoded = Decode<EvalReport>(EncodeMessage(report, kRound, kSender));
  ASSERT_FALSE(decoded.ok());
  EXPECT_CONTAINS(decoded.status().message(),
                  "task 0: AUC histograms of 3 positive and 2 negative bins, expected equal sizes");
  report.tasks[0].negatives.push_back(6);
  ASSERT_TRUE(Decode<EvalReport>(EncodeMessage(report, kRound, kSender)).ok());
  report.groups.resize(1);
  decoded = Decode<EvalReport>(EncodeMessage(report, kRound, kSender));
  ASSERT_FALSE(decoded.ok());
  EXPECT_CONTAINS(decoded.status().message(), "1 user groups, expected none or 2 (warm, cold)");
  report.groups.resize(2);
  decoded = Decode<EvalReport>(EncodeMessage(report, kRound, kSender));
  ASSERT_FALSE(decoded.ok());  // the groups have no tasks, all users have one
  EXPECT_CONTAINS(decoded.status().message(), "warm users: 0 tasks, expected 1");
  report.tasks[0].log_loss = std::nan("");
  report.groups.clear();
  decoded = Decode<EvalReport>(EncodeMessage(report, kRound, kSender));
  ASSERT_FALSE(decoded.ok());
  EXPECT_CONTAINS(decoded.status().message(), "expected a finite value >= 0");
}

}  // namespace
}  // namespace fedrec
