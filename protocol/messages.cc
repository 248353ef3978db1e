// Wire encoding of the round messages: cereal portable binary (little-endian on
// the wire), written straight into the frame buffer and read straight from the
// received frame.
//
// Layout produced by the serialize functions below (identical to what cereal's
// own std::string / std::vector support would produce, so any cereal
// portable-binary reader can decode it):
//   - one byte: 1 (the archive's "little-endian" flag; anything else is rejected)
//   - arithmetic fields as little-endian bytes, bool/enum fields as one byte
//   - strings and vectors: uint64 element count, then the elements (arithmetic
//     vectors as one contiguous binary block).
//
// Decoding never trusts a count: every count is compared with the bytes left in
// the payload before anything is allocated, so a forged "2^60 floats" prefix is
// rejected without allocating.
#include "protocol/messages.h"

#include <algorithm>
#include <bit>
#include <cereal/archives/portable_binary.hpp>
#include <cereal/cereal.hpp>
#include <cmath>
#include <cstring>
#include <istream>
#include <iterator>
#include <limits>
#include <ostream>
#include <stdexcept>
#include <streambuf>
#include <string>
#include <type_traits>

#include "base/little_endian.h"

namespace fedrec {
namespace {

static_assert(std::numeric_limits<float>::is_iec559 && sizeof(float) == 4,
              "the wire format carries IEEE-754 binary32 floats");

// ---------------------------------------------------------------------------
// Stream buffers

// Appends everything written to a std::vector<uint8_t> (no intermediate
// ostringstream, no copy at the end). With the vector's capacity reserved up
// front every write is a single memcpy.
class VectorSink : public std::streambuf {
 public:
  explicit VectorSink(std::vector<uint8_t>* out) : out_(out) {}

 protected:
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    const auto* b = reinterpret_cast<const uint8_t*>(s);
    out_->insert(out_->end(), b, b + n);
    return n;
  }
  int_type overflow(int_type c) override {
    if (!traits_type::eq_int_type(c, traits_type::eof()))
      out_->push_back(static_cast<uint8_t>(traits_type::to_char_type(c)));
    return traits_type::not_eof(c);
  }

 private:
  std::vector<uint8_t>* out_;
};

// Counts the bytes written (sizing pass, so the frame is allocated once).
class CountingSink : public std::streambuf {
 public:
  uint64_t count() const { return count_; }

 protected:
  std::streamsize xsputn(const char*, std::streamsize n) override {
    count_ += static_cast<uint64_t>(n);
    return n;
  }
  int_type overflow(int_type c) override {
    if (!traits_type::eq_int_type(c, traits_type::eof())) ++count_;
    return traits_type::not_eof(c);
  }

 private:
  uint64_t count_ = 0;
};

// Reads from a span without copying it; the get area is the span itself, so
// sgetn of n bytes is one memcpy.
class SpanSource : public std::streambuf {
 public:
  explicit SpanSource(std::span<const uint8_t> bytes) {
    // The get area is never written through: std::streambuf just wants char*.
    char* b = const_cast<char*>(reinterpret_cast<const char*>(bytes.data()));
    setg(b, b, b + bytes.size());
  }
  uint64_t remaining() const { return static_cast<uint64_t>(egptr() - gptr()); }
  uint64_t consumed() const { return static_cast<uint64_t>(gptr() - eback()); }
  const uint8_t* Take(uint64_t n) {
    char* p = gptr();
    setg(eback(), p + n, egptr());
    return reinterpret_cast<const uint8_t*>(p);
  }
};

// The input archive used for every message: a portable binary archive that also
// knows how many payload bytes remain, so count prefixes can be checked before
// they are used to allocate.
class PayloadArchive : public cereal::PortableBinaryInputArchive {
 public:
  PayloadArchive(std::istream& stream, SpanSource& source)
      : cereal::PortableBinaryInputArchive(stream), source_(source) {}
  uint64_t remaining() const { return source_.remaining(); }
  // Consumes `n` bytes (REQUIRES: n <= remaining()) and returns where they start.
  const uint8_t* Take(uint64_t n) { return source_.Take(n); }

 private:
  SpanSource& source_;
};

class PayloadError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The payload being loaded. cereal hands serialize functions the archive as its
// CRTP base type, hence the (checked) downcast.
template <class Archive>
PayloadArchive& PayloadOf(Archive& ar) {
  auto* payload = dynamic_cast<PayloadArchive*>(&ar);
  if (payload == nullptr)
    throw PayloadError("internal: message loaded through an archive without a byte budget");
  return *payload;
}

// Reads a count prefix and checks that `count` elements of at least
// `min_element_bytes` each fit in what remains of the payload.
template <class Archive, class Describe>
uint64_t LoadCount(Archive& ar, uint64_t min_element_bytes, const char* unit,
                   const Describe& describe) {
  cereal::size_type count = 0;
  ar(cereal::make_size_tag(count));
  const uint64_t remaining = PayloadOf(ar).remaining();
  if (count > remaining / min_element_bytes) {
    throw PayloadError(describe() + " claims " + std::to_string(count) + " " + unit +
                       " (at least " + std::to_string(min_element_bytes) +
                       " bytes each) but only " + std::to_string(remaining) +
                       " payload bytes remain");
  }
  return count;
}

// Reads T values from possibly unaligned bytes (memcpy per element, which the
// compiler turns into plain vector loads). Random access, so vector::assign
// sizes its buffer once.
template <class T>
class UnalignedIterator {
 public:
  using iterator_category = std::random_access_iterator_tag;
  using value_type = T;
  using difference_type = std::ptrdiff_t;
  using pointer = const T*;
  using reference = T;

  UnalignedIterator() = default;
  explicit UnalignedIterator(const uint8_t* p) : p_(p) {}

  T operator*() const {
    T v;
    std::memcpy(&v, p_, sizeof(T));
    return v;
  }
  T operator[](difference_type i) const { return *(*this + i); }
  UnalignedIterator& operator++() {
    p_ += sizeof(T);
    return *this;
  }
  UnalignedIterator operator++(int) {
    UnalignedIterator old = *this;
    ++*this;
    return old;
  }
  UnalignedIterator& operator--() {
    p_ -= sizeof(T);
    return *this;
  }
  UnalignedIterator operator--(int) {
    UnalignedIterator old = *this;
    --*this;
    return old;
  }
  UnalignedIterator& operator+=(difference_type n) {
    p_ += n * static_cast<difference_type>(sizeof(T));
    return *this;
  }
  UnalignedIterator& operator-=(difference_type n) { return *this += -n; }
  friend UnalignedIterator operator+(UnalignedIterator it, difference_type n) { return it += n; }
  friend UnalignedIterator operator+(difference_type n, UnalignedIterator it) { return it += n; }
  friend UnalignedIterator operator-(UnalignedIterator it, difference_type n) { return it -= n; }
  friend difference_type operator-(UnalignedIterator a, UnalignedIterator b) {
    return (a.p_ - b.p_) / static_cast<difference_type>(sizeof(T));
  }
  friend auto operator<=>(UnalignedIterator, UnalignedIterator) = default;

 private:
  const uint8_t* p_ = nullptr;
};

// ---------------------------------------------------------------------------
// Field helpers: one function for saving and loading, like cereal's serialize.

template <class T>
const char* UnitName() {
  if constexpr (std::is_same_v<T, float>) return "float32 values";
  if constexpr (std::is_same_v<T, uint32_t>) return "uint32 values";
  if constexpr (std::is_same_v<T, char>) return "characters";
  if constexpr (std::is_same_v<T, uint8_t>) return "bytes";
  if constexpr (std::is_same_v<T, double>) return "float64 values";
  if constexpr (std::is_same_v<T, int64_t>) return "int64 values";
  if constexpr (std::is_same_v<T, uint64_t>) return "uint64 values";
  return "values";
}

// std::vector of an arithmetic type, or std::string: count, then one binary
// block. Saving goes through cereal's binary_data path, which for the portable
// archive on a little-endian host is one sputn = one memcpy into the frame.
// Loading checks the count against the remaining payload first, then copies the
// block out of the payload in one pass (see below).
template <class Archive, class Container, class Describe>
void Contiguous(Archive& ar, Container& c, const Describe& describe) {
  using T = typename Container::value_type;
  static_assert(std::is_arithmetic_v<T>);
  if constexpr (Archive::is_saving::value) {
    ar(cereal::make_size_tag(static_cast<cereal::size_type>(c.size())));
    ar(cereal::binary_data(c.data(), c.size() * sizeof(T)));
  } else {
    const uint64_t n = LoadCount(ar, sizeof(T), UnitName<T>(), describe);
    const size_t bytes = static_cast<size_t>(n) * sizeof(T);
    if constexpr (std::endian::native == std::endian::little) {
      // The wire is little-endian (flag checked in DecodeMessage), so the
      // elements are copied straight out of the payload: one pass, no
      // zero-filling resize first (that pass costs as much as the copy).
      const uint8_t* p = PayloadOf(ar).Take(bytes);
      c.assign(UnalignedIterator<T>(p), UnalignedIterator<T>(p + bytes));
    } else {
      c.resize(static_cast<size_t>(n));
      ar(cereal::binary_data(c.data(), bytes));  // cereal swaps the bytes
    }
  }
}

// std::vector of a struct with its own serialize function. `min_element_bytes`
// is the smallest encoding of one element (bounds the count before resizing).
template <class Archive, class T, class Describe>
void Structs(Archive& ar, std::vector<T>& v, uint64_t min_element_bytes, const Describe& describe) {
  if constexpr (Archive::is_saving::value) {
    ar(cereal::make_size_tag(static_cast<cereal::size_type>(v.size())));
  } else {
    const uint64_t n = LoadCount(ar, min_element_bytes, "elements", describe);
    v.clear();
    v.resize(static_cast<size_t>(n));
  }
  for (auto& element : v) ar(element);
}

// bool as one byte 0/1 (loading arbitrary bytes into a bool would be undefined).
template <class Archive, class Describe>
void Bool(Archive& ar, bool& b, const Describe& describe) {
  uint8_t byte = b ? 1 : 0;
  ar(byte);
  if constexpr (Archive::is_loading::value) {
    if (byte > 1)
      throw PayloadError(describe() + " is a bool but its byte is " + std::to_string(byte));
    b = byte == 1;
  }
}

// Smallest encodings, used to bound element counts (see Structs).
// ParamBlock: name count (8) + scope (1) + rows (4) + cols (4) + data count (8).
constexpr uint64_t kMinParamBlockBytes = 8 + 1 + 4 + 4 + 8;
// BlockUpdate: name count (8) + cols (4) + rows, weights, values counts (3 * 8).
constexpr uint64_t kMinBlockUpdateBytes = 8 + 4 + 3 * 8;
// TaskEvalSums: three reals and a count (4 * 8) + two histogram counts (2 * 8).
constexpr uint64_t kMinTaskEvalSumsBytes = 4 * 8 + 2 * 8;
// GroupEvalSums: eight reals, two counts (10 * 8) + task count (8).
constexpr uint64_t kMinGroupEvalSumsBytes = 10 * 8 + 8;
// SecAggKeys: round, site (2 * 4) + three keys (3 * 32) + signature (64).
constexpr uint64_t kSecAggKeysBytes = 8 + 3 * 32 + 64;
// A membership bitmap over at most 2^20 participants.
constexpr uint64_t kMaxMembershipBytes = (uint64_t{1} << 20) / 8;
// EncryptedShare / RevealedShare: site (4) + byte count (8).
constexpr uint64_t kMinShareBytes = 4 + 8;

auto Label(const char* text) {
  return [text] { return std::string(text); };
}

}  // namespace

// ---------------------------------------------------------------------------
// cereal serialize functions (non-intrusive; found by ADL).

template <class Archive>
void serialize(Archive& ar, ParamBlock& b) {
  Contiguous(ar, b.name, Label("block name"));
  uint8_t scope = static_cast<uint8_t>(b.scope);
  ar(scope);
  if constexpr (Archive::is_loading::value) {
    if (scope > static_cast<uint8_t>(Scope::kGlobalAverage)) {
      throw PayloadError("block '" + b.name + "' has scope " + std::to_string(scope) +
                         ", expected 0 (global), 1 (local) or 2 (global average)");
    }
    b.scope = static_cast<Scope>(scope);
  }
  ar(b.rows, b.cols);
  Contiguous(ar, b.data, [&b] { return "data of block '" + b.name + "'"; });
}

template <class Archive>
void serialize(Archive& ar, BlockUpdate& u) {
  Contiguous(ar, u.name, Label("update block name"));
  ar(u.cols);
  Contiguous(ar, u.rows, [&u] { return "rows of update block '" + u.name + "'"; });
  Contiguous(ar, u.weights, [&u] { return "weights of update block '" + u.name + "'"; });
  Contiguous(ar, u.values, [&u] { return "values of update block '" + u.name + "'"; });
}

// Fixed-size byte arrays (keys, signatures): the bytes, no count.
template <class Archive, size_t N>
void Fixed(Archive& ar, std::array<uint8_t, N>& a) {
  ar(cereal::binary_data(a.data(), N));
}

template <class Archive>
void AggregationField(Archive& ar, Aggregation& field) {
  uint8_t aggregation = static_cast<uint8_t>(field);
  ar(aggregation);
  if constexpr (Archive::is_loading::value) {
    if (aggregation > static_cast<uint8_t>(Aggregation::kPaillier)) {
      throw PayloadError("aggregation scheme " + std::to_string(aggregation) +
                         ", expected 0 (none), 1 (secagg) or 2 (paillier)");
    }
    field = static_cast<Aggregation>(aggregation);
  }
}

template <class Archive>
void serialize(Archive& ar, RoundPlan& m) {
  ar(m.round, m.model_version, m.local_epochs, m.epoch_offset, m.lr);
  Bool(ar, m.includes_model, Label("includes_model"));
  Structs(ar, m.model, kMinParamBlockBytes, Label("model block list"));
  AggregationField(ar, m.aggregation);
  Contiguous(ar, m.participants, Label("participant list"));
  ar(m.threshold, m.degree, m.colluders, m.dropouts);
  Contiguous(ar, m.ring_seed, Label("ring seed"));
  ar(m.ring_bits, m.frac_bits, m.clip, m.max_weight);
  Fixed(ar, m.job_id);
  Bool(ar, m.evaluate, Label("evaluate"));
  ar(m.proximal_mu);
  Structs(ar, m.control, kMinParamBlockBytes, Label("control variate block list"));
  ar(m.steps_unit);
  Contiguous(ar, m.shard_ranks, Label("shard rank list"));
  ar(m.dp_mode, m.dp_unit, m.dp_clip, m.dp_noise_stddev, m.dp_count_stddev, m.dp_user_fraction);
}

template <class Archive>
void serialize(Archive& ar, ModelUpdate& m) {
  ar(m.round, m.model_version, m.num_examples, m.train_squared_error, m.train_count);
  Structs(ar, m.blocks, kMinBlockUpdateBytes, Label("update block list"));
}

template <class Archive>
void serialize(Archive& ar, EvalRequest& m) {
  ar(m.round, m.model_version);
  Bool(ar, m.includes_model, Label("includes_model"));
  Structs(ar, m.model, kMinParamBlockBytes, Label("model block list"));
  AggregationField(ar, m.aggregation);
  Contiguous(ar, m.participants, Label("participant list"));
  ar(m.threshold, m.degree, m.colluders, m.dropouts);
  Fixed(ar, m.job_id);
  Bool(ar, m.follow_on, Label("follow_on"));
}

template <class Archive>
void serialize(Archive& ar, TaskEvalSums& m) {
  ar(m.squared_error, m.absolute_error, m.log_loss, m.count);
  Contiguous(ar, m.positives, Label("AUC histogram of positives"));
  Contiguous(ar, m.negatives, Label("AUC histogram of negatives"));
}

template <class Archive>
void serialize(Archive& ar, GroupEvalSums& m) {
  ar(m.squared_error, m.absolute_error, m.count, m.precision, m.recall, m.ndcg, m.hit_rate, m.f1,
     m.map, m.ranked_users);
  Structs(ar, m.tasks, kMinTaskEvalSumsBytes, Label("task evaluation sums"));
}

template <class Archive>
void serialize(Archive& ar, EvalReport& m) {
  ar(m.round, m.squared_error, m.absolute_error, m.count, m.precision, m.recall, m.ndcg, m.hit_rate,
     m.f1, m.map, m.ranked_users);
  Contiguous(ar, m.recommended, Label("per-item recommendation counts"));
  Structs(ar, m.tasks, kMinTaskEvalSumsBytes, Label("task evaluation sums"));
  Structs(ar, m.groups, kMinGroupEvalSumsBytes, Label("warm/cold evaluation groups"));
}

template <class Archive>
void serialize(Archive& ar, Shutdown& m) {
  Contiguous(ar, m.reason, Label("shutdown reason"));
  Bool(ar, m.failed, Label("shutdown failed flag"));
}

template <class Archive>
void serialize(Archive& ar, SiteError& m) {
  ar(m.round);
  Contiguous(ar, m.message, Label("site error message"));
}

template <class Archive>
void serialize(Archive& ar, SiteHello& m) {
  ar(m.site);
  Contiguous(ar, m.error, Label("site hello error"));
  ar(m.items);
  Contiguous(ar, m.item_ids, Label("site item IDs"));
  ar(m.train_ratings, m.test_ratings);
}

template <class Archive>
void serialize(Archive& ar, Catalogue& m) {
  ar(m.items);
  Contiguous(ar, m.item_ids, Label("catalogue item IDs"));
  Contiguous(ar, m.run_dir, Label("run directory"));
  Fixed(ar, m.job_id);
}

template <class Archive>
void serialize(Archive& ar, SecAggKeys& m) {
  ar(m.round, m.site);
  Fixed(ar, m.identity_key);
  Fixed(ar, m.cipher_key);
  Fixed(ar, m.mask_key);
  Fixed(ar, m.signature);
}

template <class Archive>
void serialize(Archive& ar, MerkleProof& m) {
  if constexpr (Archive::is_saving::value) {
    ar(cereal::make_size_tag(static_cast<cereal::size_type>(m.siblings.size())));
  } else {
    const uint64_t n = LoadCount(ar, 32, "hashes", Label("Merkle proof"));
    if (n > kMaxMerkleDepth) {
      throw PayloadError("Merkle proof of " + std::to_string(n) + " hashes, expected at most " +
                         std::to_string(kMaxMerkleDepth));
    }
    m.siblings.resize(static_cast<size_t>(n));
  }
  for (Key32Bytes& sibling : m.siblings) Fixed(ar, sibling);
}

template <class Archive>
void serialize(Archive& ar, SecAggKeyList& m) {
  ar(m.round);
  Structs(ar, m.keys, kSecAggKeysBytes, Label("key list"));
  Contiguous(ar, m.members, Label("key list membership bitmap"));
  Fixed(ar, m.root);
  Structs(ar, m.proofs, 8, Label("key list Merkle proofs"));
  if constexpr (Archive::is_loading::value) {
    if (m.members.size() > kMaxMembershipBytes) {
      throw PayloadError("key list membership bitmap of " + std::to_string(m.members.size()) +
                         " bytes, expected at most " + std::to_string(kMaxMembershipBytes));
    }
    if (!m.proofs.empty() && m.proofs.size() != m.keys.size()) {
      throw PayloadError("key list of " + std::to_string(m.keys.size()) + " entries carries " +
                         std::to_string(m.proofs.size()) +
                         " Merkle proofs, expected none or one per entry");
    }
  }
}

template <class Archive>
void serialize(Archive& ar, EncryptedShare& m) {
  ar(m.site);
  Contiguous(ar, m.sealed, Label("sealed share"));
}

template <class Archive>
void serialize(Archive& ar, SecAggShares& m) {
  ar(m.round, m.site);
  Structs(ar, m.shares, kMinShareBytes, Label("share list"));
}

template <class Archive>
void serialize(Archive& ar, SecAggRoutedShares& m) {
  ar(m.round);
  Structs(ar, m.shares, kMinShareBytes, Label("routed share list"));
}

template <class Archive>
void serialize(Archive& ar, SecAggMasked& m) {
  ar(m.round, m.site, m.ring_bits);
  Contiguous(ar, m.data, Label("masked input"));
}

// The same layout as SecAggMasked, with the input left in the payload.
template <class Archive>
void serialize(Archive& ar, SecAggMaskedView& m) {
  static_assert(Archive::is_loading::value, "a SecAggMaskedView is only decoded");
  ar(m.round, m.site, m.ring_bits);
  const uint64_t n = LoadCount(ar, 1, UnitName<uint8_t>(), Label("masked input"));
  m.data =
      std::span<const uint8_t>(PayloadOf(ar).Take(static_cast<size_t>(n)), static_cast<size_t>(n));
}

template <class Archive>
void serialize(Archive& ar, SurvivorSignature& m) {
  ar(m.site);
  Fixed(ar, m.signature);
}

template <class Archive>
void serialize(Archive& ar, SecAggUnmaskRequest& m) {
  ar(m.round);
  Bool(ar, m.unmask, Label("unmask flag"));
  Contiguous(ar, m.survivors, Label("survivor list"));
  Structs(ar, m.signatures, 4 + 64, Label("survivor signature list"));
}

template <class Archive>
void serialize(Archive& ar, ShardBlock& m) {
  Contiguous(ar, m.name, Label("block name"));
  ar(m.rows, m.cols);
}

template <class Archive>
void serialize(Archive& ar, ShardRound& m) {
  ar(m.round);
  AggregationField(ar, m.aggregation);
  ar(m.shard, m.shards, m.model_version);
  Contiguous(ar, m.sites, Label("site list"));
  Contiguous(ar, m.site_ranks, Label("site rank list"));
  Structs(ar, m.blocks, 8 + 4 + 4, Label("block list"));
  ar(m.ring_bits, m.length, m.values, m.unit_bytes);
}

template <class Archive>
void serialize(Archive& ar, ShardClose& m) {
  ar(m.round);
  Bool(ar, m.cut, Label("cut flag"));
  Contiguous(ar, m.sites, Label("site list"));
  Contiguous(ar, m.masks, Label("mask list"));
  Contiguous(ar, m.forward_to, Label("decryptor list"));
}

template <class Archive>
void serialize(Archive& ar, ShardSums& m) {
  ar(m.round, m.shard);
  Contiguous(ar, m.error, Label("shard error"));
  Contiguous(ar, m.sites, Label("site list"));
  Contiguous(ar, m.row_weight, Label("row weights"));
  Contiguous(ar, m.weighted_sum, Label("weighted sums"));
  Contiguous(ar, m.words, Label("ring words"));
}

template <class Archive>
void serialize(Archive& ar, SecAggSurvivorSignature& m) {
  ar(m.round, m.site);
  Fixed(ar, m.signature);
}

template <class Archive>
void serialize(Archive& ar, RevealedShare& m) {
  ar(m.site);
  Contiguous(ar, m.share, Label("revealed share"));
}

template <class Archive>
void serialize(Archive& ar, SecAggUnmaskShares& m) {
  ar(m.round, m.site);
  Structs(ar, m.self_mask_shares, kMinShareBytes, Label("self-mask share list"));
  Structs(ar, m.mask_key_shares, kMinShareBytes, Label("mask-key share list"));
}

template <class Archive>
void serialize(Archive& ar, PaillierKey& m) {
  ar(m.round, m.holder, m.modulus_bits, m.holder_keys);
  Contiguous(ar, m.public_key, Label("Paillier public key"));
  Structs(ar, m.sealed_private, kMinShareBytes, Label("sealed key share list"));
  ar(m.threshold, m.parties);
  Fixed(ar, m.job_id);
}

template <class Archive>
void serialize(Archive& ar, PaillierUpdate& m) {
  ar(m.round, m.site, m.values);
  Contiguous(ar, m.ciphertexts, Label("Paillier ciphertexts"));
  Fixed(ar, m.signature);
}

// PaillierUpdate: round, site, values, ciphertext count, signature.
constexpr uint64_t kMinPaillierUpdateBytes = 4 + 4 + 8 + 8 + 64;

template <class Archive>
void serialize(Archive& ar, PaillierSum& m) {
  ar(m.round, m.values);
  Structs(ar, m.updates, kMinPaillierUpdateBytes, Label("Paillier update list"));
}

template <class Archive>
void serialize(Archive& ar, PaillierDecrypted& m) {
  ar(m.round, m.site);
  Contiguous(ar, m.partials, Label("partial decryptions"));
}

// ---------------------------------------------------------------------------
// Structural checks after decoding.

namespace {

Status CheckBlocks(const std::vector<ParamBlock>& blocks) {
  for (size_t i = 0; i < blocks.size(); ++i) {
    const ParamBlock& b = blocks[i];
    const uint64_t expected = static_cast<uint64_t>(b.rows) * b.cols;
    if (b.data.size() != expected) {
      return Status::Corruption("model block " + std::to_string(i) + " '" + b.name + "' is " +
                                std::to_string(b.rows) + "x" + std::to_string(b.cols) + " (" +
                                std::to_string(expected) + " values) but carries " +
                                std::to_string(b.data.size()) + " values");
    }
  }
  return Status::Ok();
}

// Index of the first i in [begin, n) with bad(i), or n. Scans in chunks with a
// branch-free OR so the common all-good case vectorizes.
template <class Bad>
size_t FirstBad(size_t begin, size_t n, const Bad& bad) {
  constexpr size_t kChunk = 1024;
  for (size_t start = begin; start < n; start += kChunk) {
    const size_t end = std::min(n, start + kChunk);
    unsigned any = 0;  // unsigned, not bool: GCC vectorizes this reduction only then
    for (size_t i = start; i < end; ++i) any |= static_cast<unsigned>(bad(i));
    if (any) {
      for (size_t i = start; i < end; ++i)
        if (bad(i)) return i;
    }
  }
  return n;
}

bool NonFinite(float f) {
  return (std::bit_cast<uint32_t>(f) & 0x7f800000u) == 0x7f800000u;  // exponent all ones
}

Status CheckUpdates(const std::vector<BlockUpdate>& blocks) {
  for (size_t i = 0; i < blocks.size(); ++i) {
    const BlockUpdate& u = blocks[i];
    const auto where = [&] { return "update block " + std::to_string(i) + " '" + u.name + "'"; };
    if (u.weights.size() != u.rows.size()) {
      return Status::Corruption(where() + " has " + std::to_string(u.rows.size()) + " rows but " +
                                std::to_string(u.weights.size()) + " weights");
    }
    const uint64_t expected = static_cast<uint64_t>(u.rows.size()) * u.cols;
    if (u.values.size() != expected) {
      return Status::Corruption(where() + " has " + std::to_string(u.rows.size()) + " rows of " +
                                std::to_string(u.cols) + " columns (" + std::to_string(expected) +
                                " values) but carries " + std::to_string(u.values.size()) +
                                " values");
    }
    const uint32_t* rows = u.rows.data();
    const size_t r =
        FirstBad(1, u.rows.size(), [rows](size_t k) { return rows[k] <= rows[k - 1]; });
    if (r < u.rows.size()) {
      return Status::Corruption(where() + ": row indices must be strictly ascending, but entry " +
                                std::to_string(r) + " is row " + std::to_string(u.rows[r]) +
                                " after row " + std::to_string(u.rows[r - 1]));
    }
    const float* weights = u.weights.data();
    const size_t w = FirstBad(0, u.weights.size(), [weights](size_t k) {
      // False for NaN too; the max bound rejects +inf.
      return !((weights[k] > 0.0f) & (weights[k] <= std::numeric_limits<float>::max()));
    });
    if (w < u.weights.size()) {
      return Status::InvalidArgument(where() + ": weight of row " + std::to_string(u.rows[w]) +
                                     " is " + std::to_string(u.weights[w]) +
                                     ", expected a finite value > 0");
    }
    const float* values = u.values.data();
    const size_t v =
        FirstBad(0, u.values.size(), [values](size_t k) { return NonFinite(values[k]); });
    if (v < u.values.size()) {
      const size_t row = v / u.cols;  // cols > 0 here: values is non-empty
      return Status::InvalidArgument(where() + ": value of row " + std::to_string(u.rows[row]) +
                                     ", column " + std::to_string(v % u.cols) + " is " +
                                     std::to_string(u.values[v]) + ", expected a finite value");
    }
  }
  return Status::Ok();
}

Status Check(const RoundPlan& m) { return CheckBlocks(m.model); }
Status Check(const EvalRequest& m) { return CheckBlocks(m.model); }
Status Check(const ModelUpdate& m) { return CheckUpdates(m.blocks); }
// The tasks of one group: histograms of equal size, finite log loss and errors.
Status CheckTaskSums(const std::vector<TaskEvalSums>& tasks, const std::string& where) {
  for (size_t t = 0; t < tasks.size(); ++t) {
    const TaskEvalSums& k = tasks[t];
    const std::string task = where + "task " + std::to_string(t);
    if (k.positives.size() != k.negatives.size()) {
      return Status::InvalidArgument(
          task + ": AUC histograms of " + std::to_string(k.positives.size()) + " positive and " +
          std::to_string(k.negatives.size()) + " negative bins, expected equal sizes");
    }
    for (const double v : {k.squared_error, k.absolute_error, k.log_loss}) {
      if (!std::isfinite(v) || v < 0.0)
        return Status::InvalidArgument(task + ": a sum of " + std::to_string(v) +
                                       ", expected a finite value >= 0");
    }
  }
  return Status::Ok();
}

Status Check(const EvalReport& m) {
  FEDREC_RETURN_IF_ERROR(CheckTaskSums(m.tasks, "evaluation report: "));
  if (!m.groups.empty() && m.groups.size() != 2) {
    return Status::InvalidArgument("evaluation report: " + std::to_string(m.groups.size()) +
                                   " user groups, expected none or 2 (warm, cold)");
  }
  for (size_t g = 0; g < m.groups.size(); ++g) {
    const std::string where =
        std::string("evaluation report, ") + (g == 0 ? "warm" : "cold") + " users: ";
    if (m.groups[g].tasks.size() != m.tasks.size()) {
      return Status::InvalidArgument(where + std::to_string(m.groups[g].tasks.size()) +
                                     " tasks, expected " + std::to_string(m.tasks.size()) +
                                     " as for all users");
    }
    FEDREC_RETURN_IF_ERROR(CheckTaskSums(m.groups[g].tasks, where));
  }
  return Status::Ok();
}
Status Check(const Shutdown&) { return Status::Ok(); }
Status Check(const SiteError&) { return Status::Ok(); }
Status Check(const SiteHello&) { return Status::Ok(); }
Status Check(const Catalogue&) { return Status::Ok(); }
// The secure-aggregation messages are validated by the protocol state machines
// (crypto/secagg.h, crypto/paillier_round.h), which know the round's shape.
template <class M>
Status Check(const M&) {
  return Status::Ok();
}

// The wire is little-endian whatever the host.
cereal::PortableBinaryOutputArchive::Options WireOptions() {
  return cereal::PortableBinaryOutputArchive::Options::LittleEndian();
}

}  // namespace

// ---------------------------------------------------------------------------

Slice ShardSlice(uint64_t total, uint32_t shard, uint32_t shards, uint64_t align) {
  const auto bound = [&](uint32_t s) -> uint64_t {
    if (s >= shards) return total;
    const uint64_t at = static_cast<uint64_t>(static_cast<unsigned __int128>(total) * s /
                                              std::max<uint32_t>(shards, 1));
    return at / align * align;
  };
  return Slice{bound(shard), bound(shard + 1)};
}

const char* AggregationName(Aggregation aggregation) {
  switch (aggregation) {
    case Aggregation::kNone:
      return "none";
    case Aggregation::kSecAgg:
      return "secagg";
    case Aggregation::kPaillier:
      return "paillier";
  }
  return "unknown";
}

template <typename M>
std::vector<uint8_t> EncodeMessage(const M& message, uint32_t round, uint32_t sender) {
  // Sizing pass: no bytes are copied, it only sums the sizes cereal writes.
  CountingSink counter;
  {
    std::ostream os(&counter);
    cereal::PortableBinaryOutputArchive ar(os, WireOptions());
    ar(message);
  }

  std::vector<uint8_t> frame;
  frame.reserve(kFrameHeaderSize + counter.count() + kFrameSealingRoom);
  frame.resize(kFrameHeaderSize);  // header filled in below, once the length is known
  {
    VectorSink sink(&frame);
    std::ostream os(&sink);
    cereal::PortableBinaryOutputArchive ar(os, WireOptions());
    ar(message);
  }

  FrameHeader header;
  header.type = M::kType;
  header.round = round;
  header.sender = sender;
  header.payload_length = frame.size() - kFrameHeaderSize;
  EncodeFrameHeader(header, std::span<uint8_t, kFrameHeaderSize>(frame.data(), kFrameHeaderSize));
  StampFrame(frame);
  return frame;
}

template <typename M>
Result<M> DecodeMessage(const FrameView& frame) {
  const FrameHeader& h = frame.header;
  // Error text is only built on the error paths (this runs once per message).
  const auto where = [&h] {
    return "from rank " + std::to_string(h.sender) + ", round " + std::to_string(h.round);
  };
  const auto ctx = [&where] {
    return "payload of " + std::string(MessageTypeName(M::kType)) + " " + where();
  };
  if (h.type != M::kType) {
    return Status::Corruption("expected a " + std::string(MessageTypeName(M::kType)) +
                              " frame (type " + std::to_string(static_cast<int>(M::kType)) +
                              ") but got " + MessageTypeName(h.type) + " (type " +
                              std::to_string(static_cast<int>(h.type)) + ") " + where());
  }

  // fedrec always writes little-endian archives; a payload announcing another
  // byte order (or a garbage flag, which cereal would read as "swap") is not
  // ours, and the loaders above rely on the payload being little-endian.
  if (!frame.payload.empty() && frame.payload[0] != 1) {
    return Status::Corruption(ctx() + " starts with byte order flag " +
                              std::to_string(frame.payload[0]) +
                              ", expected 1 (little-endian portable binary)");
  }

  M message;
  try {
    SpanSource source(frame.payload);
    std::istream is(&source);
    PayloadArchive ar(is, source);
    ar(message);
    if (source.remaining() != 0) {
      return Status::Corruption(ctx() + " has " + std::to_string(source.remaining()) +
                                " trailing bytes: the message ends at byte " +
                                std::to_string(source.consumed()) + " of " +
                                std::to_string(frame.payload.size()));
    }
  } catch (const std::exception& e) {
    return Status::Corruption(ctx() + " does not decode: " + e.what());
  }
  if (Status s = Check(message); !s.ok()) return s.WithContext(ctx());
  return message;
}

MaskedFrame EncodeMaskedFrame(const SecAggMasked& fields, size_t input_bytes, uint32_t round,
                              uint32_t sender) {
  SecAggMasked shell;  // every field but the input, which is spliced in below
  shell.round = fields.round;
  shell.site = fields.site;
  shell.ring_bits = fields.ring_bits;
  const std::vector<uint8_t> encoded = EncodeMessage(shell, round, sender);
  // The payload's byte order flag, then serialize(SecAggMasked)'s round, site
  // and ring_bits, then the input as a 64-bit count and its bytes.
  constexpr size_t kCountAt = kFrameHeaderSize + 1 + 3 * sizeof(uint32_t);
  MaskedFrame out;
  out.frame.reserve(encoded.size() + input_bytes + kFrameSealingRoom);
  out.frame.assign(encoded.begin(), encoded.begin() + kCountAt);
  AppendLe<uint64_t>(&out.frame, input_bytes);
  out.frame.resize(out.frame.size() + input_bytes);
  out.frame.insert(out.frame.end(), encoded.begin() + kCountAt + sizeof(uint64_t), encoded.end());
  FrameHeader header;
  header.type = MessageType::kSecAggMasked;
  header.round = round;
  header.sender = sender;
  header.payload_length = out.frame.size() - kFrameHeaderSize;
  EncodeFrameHeader(header,
                    std::span<uint8_t, kFrameHeaderSize>(out.frame.data(), kFrameHeaderSize));
  out.input = std::span(out.frame).subspan(kCountAt + sizeof(uint64_t), input_bytes);
  return out;
}

#define FEDREC_DEFINE_MESSAGE(M)                                                \
  template std::vector<uint8_t> EncodeMessage<M>(const M&, uint32_t, uint32_t); \
  template Result<M> DecodeMessage<M>(const FrameView&);
FEDREC_DEFINE_MESSAGE(RoundPlan)
FEDREC_DEFINE_MESSAGE(ModelUpdate)
FEDREC_DEFINE_MESSAGE(EvalRequest)
FEDREC_DEFINE_MESSAGE(EvalReport)
FEDREC_DEFINE_MESSAGE(Shutdown)
FEDREC_DEFINE_MESSAGE(SiteError)
FEDREC_DEFINE_MESSAGE(SiteHello)
FEDREC_DEFINE_MESSAGE(Catalogue)
FEDREC_DEFINE_MESSAGE(SecAggKeys)
FEDREC_DEFINE_MESSAGE(SecAggKeyList)
FEDREC_DEFINE_MESSAGE(SecAggShares)
FEDREC_DEFINE_MESSAGE(SecAggRoutedShares)
FEDREC_DEFINE_MESSAGE(SecAggMasked)
FEDREC_DEFINE_MESSAGE(SecAggUnmaskRequest)
FEDREC_DEFINE_MESSAGE(SecAggUnmaskShares)
FEDREC_DEFINE_MESSAGE(SecAggSurvivorSignature)
FEDREC_DEFINE_MESSAGE(PaillierKey)
FEDREC_DEFINE_MESSAGE(PaillierUpdate)
FEDREC_DEFINE_MESSAGE(PaillierSum)
FEDREC_DEFINE_MESSAGE(PaillierDecrypted)
FEDREC_DEFINE_MESSAGE(ShardRound)
FEDREC_DEFINE_MESSAGE(ShardClose)
FEDREC_DEFINE_MESSAGE(ShardSums)
#undef FEDREC_DEFINE_MESSAGE
template Result<SecAggMaskedView> DecodeMessage<SecAggMaskedView>(const FrameView&);

}  // namespace fedrec
