#include "crypto/secagg.h"

#include <openssl/err.h>
#include <openssl/evp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "base/little_endian.h"
#include "base/log_gamma.h"
#include "base/parallel.h"
#include "crypto/secagg_prg.h"
#include "crypto/shamir.h"

namespace fedrec::secagg {

namespace {

using crypto::Key32;

// Domain separation: each derived key or signature names its use.
constexpr std::string_view kKeysLabel = "fedrec secagg keys v2";
constexpr std::string_view kSurvivorsLabel = "fedrec secagg survivors v2";
constexpr std::string_view kRingLabel = "fedrec secagg ring v2";
constexpr std::string_view kShareKeyInfo = "fedrec secagg share key";
constexpr std::string_view kPairwiseInfo = "fedrec secagg pairwise mask";
constexpr std::string_view kSelfInfo = "fedrec secagg self mask";
constexpr std::string_view kFollowOnInfo = "fedrec secagg follow-on mask";

// A sealed share: the holder's Shamir share of the sender's mask key, then of
// its self-mask seed, then the GCM tag.
constexpr size_t kSharePlaintextSize = 2 * shamir::kShareSize;
constexpr size_t kSealedShareSize = kSharePlaintextSize + crypto::kGcmTagSize;

// Bounds that keep every size computation far from overflow.
constexpr uint64_t kMaxLength = uint64_t{1} << 36;
constexpr size_t kMaxSites = size_t{1} << 20;

std::string Str(uint64_t v) { return std::to_string(v); }

// "{1, 4, 7}", shortened after a dozen entries.
std::string SiteList(std::span<const uint32_t> sites) {
  std::string out = "{";
  for (size_t i = 0; i < sites.size() && i < 12; ++i) out += (i ? ", " : "") + Str(sites[i]);
  if (sites.size() > 12) out += ", ... (" + Str(sites.size()) + " sites)";
  return out + "}";
}

// Little-endian ring words, one uint64_t per element.
std::vector<uint64_t> RingWords(std::span<const uint8_t> words, uint32_t ring_bits) {
  const size_t width = ring_bits / 8;
  std::vector<uint64_t> out(words.size() / width);
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] =
        width == 4 ? GetLe<uint32_t>(words.data() + 4 * i) : GetLe<uint64_t>(words.data() + 8 * i);
  }
  return out;
}

// round || a || b, little-endian: the HKDF salt of a mask key.
std::array<uint8_t, 12> Context(uint32_t round, uint32_t a, uint32_t b) {
  std::array<uint8_t, 12> out;
  const uint32_t values[3] = {round, a, b};
  for (int k = 0; k < 3; ++k) PutLe<uint32_t>(out.data() + 4 * k, values[k]);
  return out;
}

using JobId = std::array<uint8_t, 32>;

// job || round || from || to: the HKDF salt and GCM AAD of a share.
std::array<uint8_t, 44> ShareContext(const JobId& job, uint32_t round, uint32_t from, uint32_t to) {
  std::array<uint8_t, 44> out;
  std::copy(job.begin(), job.end(), out.begin());
  const auto rest = Context(round, from, to);
  std::copy(rest.begin(), rest.end(), out.begin() + 32);
  return out;
}

// The one-time key that seals the shares `from` sends `to`. Directional, so
// the two shares a pair exchanges are sealed under different keys.
Result<Key32> ShareKey(const Key32& dh_secret, const JobId& job, uint32_t round, uint32_t from,
                       uint32_t to) {
  const auto salt = ShareContext(job, round, from, to);
  Key32 key;
  FEDREC_RETURN_IF_ERROR(crypto::Hkdf(dh_secret, salt, kShareKeyInfo, key));
  return key;
}

// The PRG key of the pairwise mask of sites a and b (symmetric in a, b);
// `info` kPairwiseInfo for the round's own sum, kFollowOnInfo for its
// follow-on.
Result<PrgKey> PairwiseKey(const Key32& dh_secret, uint32_t round, uint32_t a, uint32_t b,
                           std::string_view info = kPairwiseInfo) {
  const auto salt = Context(round, std::min(a, b), std::max(a, b));
  PrgKey key;
  FEDREC_RETURN_IF_ERROR(crypto::Hkdf(dh_secret, salt, info, key));
  return key;
}

// The PRG key of `site`'s self mask.
Result<PrgKey> SelfMaskKey(const shamir::Secret& seed, uint32_t round, uint32_t site) {
  const auto context = Context(round, site, 0);
  PrgKey key;
  FEDREC_RETURN_IF_ERROR(crypto::Hkdf(seed, std::span(context).first(8), kSelfInfo, key));
  return key;
}

using crypto::X25519Key;
using crypto::X25519Public;

std::optional<uint32_t> PositionOf(const Params& params, uint32_t site) {
  auto it = std::lower_bound(params.sites.begin(), params.sites.end(), site);
  if (it == params.sites.end() || *it != site) return std::nullopt;
  return static_cast<uint32_t>(it - params.sites.begin());
}

struct CipherCtxFree {
  void operator()(EVP_CIPHER_CTX* p) const { EVP_CIPHER_CTX_free(p); }
};

// A pseudo-random permutation of 0..n-1 keyed by a 32-byte seed: a 4-round
// balanced Feistel network over the smallest domain of 2^(2h) >= n values
// (h >= 1), round function AES-128 (key = the seed's first 16 bytes) of the
// round number and the half block, with cycle walking into 0..n-1. Each
// evaluation, forward or inverse, walks fewer than 4 steps on average.
// Not thread-safe (one cipher context).
class RingPermutation {
 public:
  RingPermutation(std::span<const uint8_t> seed, uint32_t n) : n_(n) {
    uint32_t bits = 2;
    while ((uint64_t{1} << bits) < n) bits += 2;
    half_ = bits / 2;
    mask_ = (uint32_t{1} << half_) - 1;
    ctx_.reset(EVP_CIPHER_CTX_new());
    // Fails only on allocation; F then reads zeros, still a permutation.
    if (ctx_ == nullptr || seed.size() < 16 ||
        EVP_EncryptInit_ex(ctx_.get(), EVP_aes_128_ecb(), nullptr, seed.data(), nullptr) != 1) {
      ERR_clear_error();
      ctx_.reset();
    } else {
      EVP_CIPHER_CTX_set_padding(ctx_.get(), 0);
    }
  }

  // The position at ring place `place`, and the inverse.
  uint32_t Forward(uint32_t place) const {
    uint32_t x = place;
    do x = Feistel(x, false);
    while (x >= n_);
    return x;
  }
  uint32_t Inverse(uint32_t pos) const {
    uint32_t x = pos;
    do x = Feistel(x, true);
    while (x >= n_);
    return x;
  }

 private:
  uint32_t F(uint32_t round, uint32_t half) const {
    uint8_t block[16] = {}, out[32] = {};
    PutLe<uint32_t>(block, round);
    PutLe<uint32_t>(block + 4, half);
    int length = 0;
    if (ctx_ != nullptr) EVP_EncryptUpdate(ctx_.get(), out, &length, block, sizeof(block));
    return GetLe<uint32_t>(out) & mask_;
  }

  uint32_t Feistel(uint32_t x, bool inverse) const {
    uint32_t left = x >> half_, right = x & mask_;
    if (!inverse) {
      for (uint32_t r = 0; r < 4; ++r) {
        const uint32_t next = left ^ F(r, right);
        left = right;
        right = next;
      }
    } else {
      for (uint32_t r = 4; r-- > 0;) {
        const uint32_t previous = right ^ F(r, left);
        right = left;
        left = previous;
      }
    }
    return (left << half_) | right;
  }

  uint32_t n_, half_ = 1, mask_ = 1;
  std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree> ctx_;
};

// The neighbour graph on positions in Params::sites. REQUIRES: Validate(params)
// and, with SecAgg+, the ring seed fixed. With `precompute` the ring is
// tabulated once (O(n) memory and permutation evaluations, the
// coordinator); without, each query evaluates the permutation O(degree)
// times and nothing of size n is held (a site).
class Topology {
 public:
  Topology(const Params& params, bool precompute)
      : n_(static_cast<uint32_t>(params.sites.size())),
        half_(params.degree / 2),
        complete_(params.degree + 1 == params.sites.size()) {
    if (complete_) return;
    permutation_.emplace(params.ring_seed, n_);
    if (!precompute) return;
    ring_place_.resize(n_);
    ring_.resize(n_);
    for (uint32_t place = 0; place < n_; ++place) {
      const uint32_t pos = permutation_->Forward(place);
      ring_place_[pos] = place;
      ring_[place] = pos;
    }
  }

  // Positions adjacent to `pos`, ascending.
  std::vector<uint32_t> Neighbours(uint32_t pos) const {
    std::vector<uint32_t> out;
    if (complete_) {
      out.reserve(n_ - 1);
      for (uint32_t q = 0; q < n_; ++q)
        if (q != pos) out.push_back(q);
      return out;
    }
    const uint32_t place = PlaceOf(pos);
    out.reserve(2 * half_);
    for (uint32_t k = 1; k <= half_; ++k) {
      out.push_back(At((place + k) % n_));
      out.push_back(At((place + n_ - k) % n_));
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  bool Adjacent(uint32_t a, uint32_t b) const {
    if (a == b) return false;
    if (complete_) return true;
    const uint32_t place_a = PlaceOf(a), place_b = PlaceOf(b);
    const uint32_t d = place_a > place_b ? place_a - place_b : place_b - place_a;
    return std::min(d, n_ - d) <= half_;
  }

 private:
  uint32_t PlaceOf(uint32_t pos) const {
    return ring_place_.empty() ? permutation_->Inverse(pos) : ring_place_[pos];
  }
  uint32_t At(uint32_t place) const {
    return ring_.empty() ? permutation_->Forward(place) : ring_[place];
  }

  uint32_t n_, half_;
  bool complete_;
  std::optional<RingPermutation> permutation_;
  std::vector<uint32_t> ring_place_;  // position -> ring place (precomputed)
  std::vector<uint32_t> ring_;        // ring place -> position (precomputed)
};

using Digest = std::array<uint8_t, 32>;

Digest Sha256(std::span<const uint8_t> data) { return crypto::Sha256(data); }

// Merkle hashes, domain-separated: a leaf starts with byte 0, a node with 1.
Digest LeafHash(const SecAggKeys& keys) {
  std::array<uint8_t, 1 + 4 + 3 * 32 + 64> in;
  in[0] = 0;
  PutLe<uint32_t>(in.data() + 1, keys.site);
  uint8_t* p = in.data() + 5;
  for (const Key32* key : {&keys.identity_key, &keys.cipher_key, &keys.mask_key}) {
    std::copy(key->begin(), key->end(), p);
    p += 32;
  }
  std::copy(keys.signature.begin(), keys.signature.end(), p);
  return Sha256(in);
}

Digest NodeHash(const Digest& left, const Digest& right) {
  std::array<uint8_t, 1 + 64> in;
  in[0] = 1;
  std::copy(left.begin(), left.end(), in.begin() + 1);
  std::copy(right.begin(), right.end(), in.begin() + 33);
  return Sha256(in);
}

// The Merkle tree over a key list's leaves: level 0 the leaves; each next
// level hashes pairs, an odd last node moving up unchanged.
std::vector<std::vector<Digest>> MerkleLevels(std::vector<Digest> leaves) {
  std::vector<std::vector<Digest>> levels;
  levels.push_back(std::move(leaves));
  while (levels.back().size() > 1) {
    const std::vector<Digest>& below = levels.back();
    std::vector<Digest> up((below.size() + 1) / 2);
    for (size_t i = 0; i < up.size(); ++i)
      up[i] = 2 * i + 1 < below.size() ? NodeHash(below[2 * i], below[2 * i + 1]) : below[2 * i];
    levels.push_back(std::move(up));
  }
  return levels;
}

// The root binds the number of leaves, so a proof fits one tree size only.
Digest SizedRoot(const Digest& top, uint64_t leaves) {
  std::array<uint8_t, 1 + 8 + 32> in;
  in[0] = 2;
  PutLe<uint64_t>(in.data() + 1, leaves);
  std::copy(top.begin(), top.end(), in.begin() + 9);
  return Sha256(in);
}

MerkleProof ProofOf(const std::vector<std::vector<Digest>>& levels, size_t index) {
  MerkleProof proof;
  for (size_t level = 0; level + 1 < levels.size(); ++level, index /= 2) {
    const size_t sibling = index ^ 1;
    if (sibling < levels[level].size()) proof.siblings.push_back(levels[level][sibling]);
  }
  return proof;
}

// Positions marked in a membership bitmap, and the rank of a position (the
// marked positions before it).
bool Marked(std::span<const uint8_t> bitmap, uint32_t pos) {
  return (bitmap[pos / 8] >> (pos % 8)) & 1;
}
uint32_t RankOf(std::span<const uint8_t> bitmap, uint32_t pos) {
  uint32_t rank = 0;
  for (uint32_t byte = 0; byte < pos / 8; ++byte) rank += std::popcount(bitmap[byte]);
  const uint8_t below = static_cast<uint8_t>((1u << (pos % 8)) - 1);
  return rank + static_cast<uint32_t>(std::popcount(static_cast<uint8_t>(bitmap[pos / 8] & below)));
}

bool Contains(std::span<const uint32_t> sorted, uint32_t value) {
  return std::binary_search(sorted.begin(), sorted.end(), value);
}

void Wipe(std::span<uint8_t> bytes) { crypto::Cleanse(bytes); }
template <typename T>
void WipeValue(T& value) {
  crypto::Cleanse(std::span(reinterpret_cast<uint8_t*>(&value), sizeof(T)));
}

}  // namespace

// AgreementMemo: shards of (unordered public key pair -> secret) keyed by
// the pair in ascending byte order, so both holders find the same entry.
struct AgreementMemo::Shard {
  struct PairHash {
    size_t operator()(const std::array<uint8_t, 64>& pair) const {
      uint64_t a = 0, b = 0;  // public keys are uniformly random bytes
      std::memcpy(&a, pair.data() + 8, 8);
      std::memcpy(&b, pair.data() + 40, 8);
      return static_cast<size_t>(a ^ (b * 0x9e3779b97f4a7c15ULL));
    }
  };
  mutable std::mutex mu;
  std::unordered_map<std::array<uint8_t, 64>, Key32, PairHash> waiting;
  uint64_t stored = 0, taken = 0;
};

namespace {
constexpr size_t kMemoShards = 64;

std::array<uint8_t, 64> PairOf(const Key32& x, const Key32& y) {
  const bool ordered = std::lexicographical_compare(x.begin(), x.end(), y.begin(), y.end());
  const Key32& low = ordered ? x : y;
  const Key32& high = ordered ? y : x;
  std::array<uint8_t, 64> pair;
  std::copy(low.begin(), low.end(), pair.begin());
  std::copy(high.begin(), high.end(), pair.begin() + 32);
  return pair;
}
}  // namespace

AgreementMemo::AgreementMemo(size_t capacity)
    : shards_(std::make_unique<Shard[]>(kMemoShards)),
      capacity_per_shard_(std::max<size_t>(1, capacity / kMemoShards)) {}

AgreementMemo::~AgreementMemo() {
  for (size_t i = 0; i < kMemoShards; ++i)
    for (auto& [pair, secret] : shards_[i].waiting) WipeValue(secret);
}

std::optional<Key32> AgreementMemo::Take(const Key32& own_public, const Key32& peer_public) {
  const auto pair = PairOf(own_public, peer_public);
  Shard& shard = shards_[Shard::PairHash{}(pair) % kMemoShards];
  std::lock_guard lock(shard.mu);
  auto it = shard.waiting.find(pair);
  if (it == shard.waiting.end()) return std::nullopt;
  const Key32 secret = it->second;
  WipeValue(it->second);
  shard.waiting.erase(it);
  ++shard.taken;
  return secret;
}

void AgreementMemo::Put(const Key32& own_public, const Key32& peer_public, const Key32& secret) {
  const auto pair = PairOf(own_public, peer_public);
  Shard& shard = shards_[Shard::PairHash{}(pair) % kMemoShards];
  std::lock_guard lock(shard.mu);
  if (shard.waiting.size() >= capacity_per_shard_) return;
  if (shard.waiting.try_emplace(pair, secret).second) ++shard.stored;
}

AgreementMemo::Counts AgreementMemo::counts() const {
  Counts out;
  for (size_t i = 0; i < kMemoShards; ++i) {
    std::lock_guard lock(shards_[i].mu);
    out.stored += shards_[i].stored;
    out.taken += shards_[i].taken;
    out.waiting += shards_[i].waiting.size();
  }
  return out;
}

std::vector<Key32> LowOrderX25519Points() {
  // The encodings, bit 255 ignored as X25519 ignores it, of the points of
  // order 1, 2, 4 and 8 on the curve and its twist: 0, 1, the two points of
  // order 8, p - 1, p and p + 1 (the list libsodium and RFC 7748 implementations
  // check). A clamped scalar is a multiple of 8, so these and only these give
  // the all-zero secret with every private key.
  // The two points of order 8 (the rest follow from p = 2^255 - 19).
  static constexpr uint8_t kOrder8[2][32] = {
      {0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3,
       0xfa, 0xf1, 0x9f, 0xc4, 0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32,
       0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00},
      {0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1,
       0x55, 0x9c, 0x83, 0xef, 0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c,
       0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f, 0x11, 0x57},
  };
  std::vector<Key32> out(2);
  out[1][0] = 1;  // out[0] is 0
  for (const auto& point : kOrder8) std::copy(point, point + 32, out.emplace_back().begin());
  // p - 1, p and p + 1: little-endian 0xec/0xed/0xee, then 0xff..., 0x7f.
  for (uint8_t low : {uint8_t{0xec}, uint8_t{0xed}, uint8_t{0xee}}) {
    Key32& near_p = out.emplace_back();
    near_p.fill(0xff);
    near_p[0] = low;
    near_p[31] = 0x7f;
  }
  return out;
}

bool IsLowOrderX25519(const Key32& key) {
  static const std::vector<Key32> kPoints = LowOrderX25519Points();
  Key32 masked = key;
  masked[31] &= 0x7f;
  return std::find(kPoints.begin(), kPoints.end(), masked) != kPoints.end();
}

std::vector<uint8_t> KeysSignedMessage(const JobId& job, uint32_t round, uint32_t site,
                                       const Key32& cipher_key, const Key32& mask_key) {
  std::vector<uint8_t> out(kKeysLabel.begin(), kKeysLabel.end());
  out.push_back(0);
  out.insert(out.end(), job.begin(), job.end());
  AppendLe<uint32_t>(&out, round);
  AppendLe<uint32_t>(&out, site);
  out.insert(out.end(), cipher_key.begin(), cipher_key.end());
  out.insert(out.end(), mask_key.begin(), mask_key.end());
  return out;
}

std::vector<uint8_t> SurvivorsSignedMessage(const JobId& job, uint32_t round, const Key32& key_root,
                                            std::span<const uint32_t> survivors) {
  std::vector<uint8_t> out(kSurvivorsLabel.begin(), kSurvivorsLabel.end());
  out.push_back(0);
  out.insert(out.end(), job.begin(), job.end());
  AppendLe<uint32_t>(&out, round);
  out.insert(out.end(), key_root.begin(), key_root.end());
  AppendLe<uint32_t>(&out, static_cast<uint32_t>(survivors.size()));
  for (uint32_t site : survivors) AppendLe<uint32_t>(&out, site);
  return out;
}

Key32 KeyListRoot(std::span<const SecAggKeys> advertised) {
  if (advertised.empty()) return Key32{};
  std::vector<Digest> leaves;
  leaves.reserve(advertised.size());
  for (const SecAggKeys& keys : advertised) leaves.push_back(LeafHash(keys));
  return SizedRoot(MerkleLevels(std::move(leaves)).back()[0], advertised.size());
}

MerkleProof KeyListProof(std::span<const SecAggKeys> advertised, size_t index) {
  std::vector<Digest> leaves;
  for (const SecAggKeys& keys : advertised) leaves.push_back(LeafHash(keys));
  return ProofOf(MerkleLevels(std::move(leaves)), index);
}

bool VerifyKeyProof(const SecAggKeys& entry, uint64_t index, uint64_t leaves,
                    const MerkleProof& proof, const Key32& root) {
  if (index >= leaves) return false;
  Digest hash = LeafHash(entry);
  size_t used = 0;
  for (uint64_t width = leaves; width > 1; width = (width + 1) / 2, index /= 2) {
    if ((index ^ 1) >= width) continue;  // the odd last node moves up as it is
    if (used == proof.siblings.size()) return false;
    const Digest& sibling = proof.siblings[used++];
    hash = index % 2 == 1 ? NodeHash(sibling, hash) : NodeHash(hash, sibling);
  }
  return used == proof.siblings.size() && SizedRoot(hash, leaves) == root;
}

std::vector<uint8_t> RingSeed(const Params& params, uint32_t members, const Key32& key_root) {
  std::vector<uint8_t> in(kRingLabel.begin(), kRingLabel.end());
  in.insert(in.end(), params.job_id.begin(), params.job_id.end());
  AppendLe<uint32_t>(&in, params.round);
  AppendLe<uint32_t>(&in, members);
  in.insert(in.end(), key_root.begin(), key_root.end());
  const Digest seed = Sha256(in);
  return {seed.begin(), seed.end()};
}

// ---------------------------------------------------------------------------
// Parameters

Status Validate(const Params& params) {
  const auto fail = [&](const std::string& what) {
    return Status::InvalidArgument("secagg round " + Str(params.round) + " parameters: " + what);
  };
  const size_t n = params.sites.size();
  if (n < 2 || n > kMaxSites)
    return fail("expected 2 to " + Str(kMaxSites) + " participants, found " + Str(n));
  for (size_t i = 1; i < n; ++i) {
    if (params.sites[i] <= params.sites[i - 1]) {
      return fail("sites must be strictly ascending, found " + Str(params.sites[i]) + " after " +
                  Str(params.sites[i - 1]));
    }
  }
  if (params.degree < 1 || params.degree > n - 1)
    return fail("degree " + Str(params.degree) + ", expected 1 to " + Str(n - 1));
  if (params.degree == n - 1) {
    if (!params.ring_seed.empty()) {
      return fail("a ring seed of " + Str(params.ring_seed.size()) +
                  " bytes, expected none with the complete graph");
    }
  } else {
    if (params.degree % 2 != 0 || params.degree < 2)
      return fail("SecAgg+ degree " + Str(params.degree) + ", expected an even number >= 2");
    if (!params.ring_seed.empty() && params.ring_seed.size() != 32)
      return fail("a ring seed of " + Str(params.ring_seed.size()) + " bytes, expected 32");
  }
  if (params.threshold < 2 || params.threshold > params.degree + 1) {
    return fail("threshold " + Str(params.threshold) +
                ", expected 2 to degree + 1 = " + Str(params.degree + 1));
  }
  if (params.colluders >= n || params.dropouts >= n) {
    return fail(Str(params.colluders) + " colluders and " + Str(params.dropouts) +
                " dropouts, expected each fewer than the " + Str(n) + " participants");
  }
  if (params.ring_bits != 32 && params.ring_bits != 64)
    return fail("ring_bits " + Str(params.ring_bits) + ", expected 32 or 64");
  if (params.length > kMaxLength)
    return fail("length " + Str(params.length) + ", expected at most " + Str(kMaxLength));
  return Status::Ok();
}

uint32_t Quorum(const Params& params) {
  const uint64_t n = params.sites.size();
  return std::max<uint32_t>(params.threshold,
                            static_cast<uint32_t>((n + params.colluders) / 2 + 1));
}

std::vector<uint32_t> Neighbours(const Params& params, uint32_t site) {
  const std::optional<uint32_t> pos = PositionOf(params, site);
  if (!pos || !Validate(params).ok()) return {};
  if (params.degree + 1 != params.sites.size() && params.ring_seed.empty()) return {};
  std::vector<uint32_t> out = Topology(params, /*precompute=*/false).Neighbours(*pos);
  for (uint32_t& q : out) q = params.sites[q];
  return out;
}

namespace {

// Sites of n that a rate covers, rounded up (a positive rate is at least one site).
uint32_t SitesAt(double rate, uint32_t n) {
  return static_cast<uint32_t>(std::ceil(rate * n - 1e-9));
}

double LogChoose(double n, double k) {
  return LogGamma(n + 1) - LogGamma(k + 1) - LogGamma(n - k + 1);
}

// The distribution of how many of `draws` sites taken without replacement from
// `population` are among `marked` of them: pmf[j] for j = 0..draws.
std::vector<double> Hypergeometric(uint32_t population, uint32_t marked, uint32_t draws) {
  std::vector<double> pmf(draws + 1, 0.0);
  const uint32_t unmarked = population - marked;
  // LogChoose's terms that do not depend on j, computed once (every site
  // sizes its graph: this runs at each site of each secure sum); the same
  // values in the same order of operations, so the same bits.
  const double all = LogChoose(population, draws);
  const double marked_all = LogGamma(marked + 1.0), unmarked_all = LogGamma(unmarked + 1.0);
  for (uint32_t j = 0; j <= draws; ++j) {
    if (j > marked || draws - j > unmarked) continue;
    const double from_marked = marked_all - LogGamma(j + 1.0) - LogGamma(marked - j + 1.0);
    const double from_unmarked =
        unmarked_all - LogGamma(draws - j + 1.0) - LogGamma(unmarked - (draws - j) + 1.0);
    pmf[j] = std::exp(from_marked + from_unmarked - all);
  }
  return pmf;
}

}  // namespace

Result<std::optional<GraphSize>> SparseGraphSize(uint32_t n, const ThreatModel& threat) {
  const double a = threat.adversarial_rate;
  const double d = threat.dropout_rate;
  if (!(a >= 0.0 && a < 1.0 && d >= 0.0 && d < 1.0 && a + d <= 0.9)) {
    return Status::InvalidArgument("secagg+ threat model: adversarial rate " + std::to_string(a) +
                                   " and dropout rate " + std::to_string(d) +
                                   ", expected each in [0, 1) and together at most 0.9");
  }
  if (n < 4 || n > kMaxSites) return std::optional<GraphSize>();
  const uint32_t colluders = SitesAt(a, n);
  const uint32_t dropouts = SitesAt(d, n);
  const uint32_t bad = std::min(colluders + dropouts, n);
  const double log_security = -41.0 * std::log(2.0);  // 2^-40 split over two events
  const double per_site_security = std::exp(log_security) / n;
  const double per_site_failure = std::pow(2.0, -20.0) / n;
  for (uint32_t k = 2; k < n - 1; k += 2) {
    // Cutting the ring takes k/2 consecutive bad sites at two places: at most
    // n (n - k - 1) / 2 such pairs, each bad with probability
    // bad! (n - k)! / ((bad - k)! n!) when the bad sites fall at random.
    if (k <= bad) {
      const double log_cut = std::log(n) + std::log(n - k - 1.0) - std::log(2.0) +
                             LogGamma(bad + 1.0) + LogGamma(n - k + 1.0) - LogGamma(n + 1.0) -
                             LogGamma(bad - k + 1.0);
      if (log_cut >= log_security) continue;
    }
    // The smallest t whose tail P[colluding neighbours >= t] is small enough.
    const std::vector<double> colluding = Hypergeometric(n - 1, std::min(colluders, n - 1), k);
    std::optional<uint32_t> threshold;
    double tail = 0.0;  // P[colluding neighbours >= t], summed from the top
    for (uint32_t t = k + 1; t >= 2; --t) {
      if (t <= k) tail += colluding[t];
      if (tail > per_site_security) break;
      threshold = t;
    }
    if (!threshold) continue;
    const std::vector<double> surviving =
        Hypergeometric(n - 1, n - 1 - std::min(dropouts, n - 1), k);
    double below = 0.0;  // P[surviving neighbours < t]
    for (uint32_t j = 0; j < *threshold; ++j) below += surviving[j];
    if (below <= per_site_failure) return std::optional<GraphSize>(GraphSize{k, *threshold});
  }
  return std::optional<GraphSize>();
}

const char* GraphName(Graph graph) {
  switch (graph) {
    case Graph::kAuto:
      return "auto";
    case Graph::kComplete:
      return "complete";
    case Graph::kSparse:
      return "sparse";
  }
  return "?";
}

Result<Params> MakeParams(const JobId& job_id, uint32_t round, std::vector<uint32_t> sites,
                          const Policy& policy, uint32_t ring_bits, uint64_t length) {
  const double fraction = policy.threshold_fraction;
  if (!(fraction > 0.0 && fraction <= 1.0)) {
    return Status::InvalidArgument("secagg round " + Str(round) + ": threshold fraction " +
                                   std::to_string(fraction) + ", expected (0, 1]");
  }
  Params params;
  params.job_id = job_id;
  params.round = round;
  params.sites = std::move(sites);
  params.ring_bits = ring_bits;
  params.length = length;
  const size_t n = params.sites.size();
  params.degree = n >= 2 ? static_cast<uint32_t>(n - 1) : 1;
  params.colluders = SitesAt(policy.threat.adversarial_rate, static_cast<uint32_t>(n));
  std::optional<GraphSize> sparse;
  if (policy.graph != Graph::kComplete && n <= kMaxSites) {
    Result<std::optional<GraphSize>> size =
        SparseGraphSize(static_cast<uint32_t>(n), policy.threat);
    if (!size.ok()) {
      // A threat model no sparse graph can meet: auto falls back to the
      // complete graph, which needs no graph search.
      if (policy.graph == Graph::kSparse) {
        return Status::InvalidArgument("secagg round " + Str(round) + ": " +
                                       size.status().message());
      }
    } else {
      sparse = *size;
      // Auto takes the sparse graph only when it at least halves the work.
      if (sparse && policy.graph == Graph::kAuto && 2 * uint64_t{sparse->degree} > n - 1)
        sparse.reset();
    }
  }
  if (sparse) {
    params.degree = sparse->degree;
    params.threshold = sparse->threshold;
    params.dropouts = SitesAt(policy.threat.dropout_rate, static_cast<uint32_t>(n));
  } else {
    // The small slack keeps e.g. 0.6 * 10 from rounding up to 7.
    const double wanted = std::ceil(fraction * n - 1e-9);
    // More than half of the holders plus the colluders: with fewer, the
    // colluders and one honest site's shares could rebuild both secrets of a
    // site, and the survivors could be the colluders and one honest site.
    const uint64_t floor = n / 2 + uint64_t{params.colluders} + 1;
    if (floor > n) {
      return Status::InvalidArgument(
          "secagg round " + Str(round) + ": " + Str(n) + " sites cannot outnumber the " +
          Str(params.colluders) + " that may collude with the coordinator (adversarial rate " +
          std::to_string(policy.threat.adversarial_rate) +
          "): the threshold must exceed half of the sites plus the colluders, " + Str(floor) +
          "; select more sites per round or lower security.adversarial_rate");
    }
    params.threshold = std::max<uint32_t>(static_cast<uint32_t>(std::max<double>(wanted, 2.0)),
                                          static_cast<uint32_t>(floor));
    params.threshold = std::min<uint32_t>(params.threshold, static_cast<uint32_t>(n));
  }
  FEDREC_RETURN_IF_ERROR(Validate(params));
  return params;
}

Status CheckParams(const Params& plan, const Policy& policy) {
  const std::string where = "secagg round " + Str(plan.round) + " plan";
  FEDREC_RETURN_IF_ERROR(Validate(plan).WithContext(where));
  Result<Params> own =
      MakeParams(plan.job_id, plan.round, plan.sites, policy, plan.ring_bits, plan.length);
  if (!own.ok()) return own.status().WithContext(where);
  const auto differs = [&](const char* field, uint64_t found, uint64_t derived) {
    return Status::InvalidArgument(
        where + ": " + field + " " + Str(found) + " differs from the " + Str(derived) +
        " this site derives for " + Str(plan.sites.size()) +
        " participants from the job's own security parameters (graph " + GraphName(policy.graph) +
        ", threshold " + std::to_string(policy.threshold_fraction) + ", adversarial rate " +
        std::to_string(policy.threat.adversarial_rate) + ", dropout rate " +
        std::to_string(policy.threat.dropout_rate) + "); refusing the round");
  };
  if (plan.threshold != own->threshold) return differs("threshold", plan.threshold, own->threshold);
  if (plan.degree != own->degree) return differs("degree", plan.degree, own->degree);
  if (plan.colluders != own->colluders) return differs("colluders", plan.colluders, own->colluders);
  if (plan.dropouts != own->dropouts) return differs("dropouts", plan.dropouts, own->dropouts);
  if (!plan.ring_seed.empty()) {
    return Status::InvalidArgument(where + ": a ring seed of " + Str(plan.ring_seed.size()) +
                                   " bytes, expected none: sites derive it from the round keys");
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------
// Client

namespace {

enum class ClientStep { kAdvertise, kShare, kMask, kSign, kUnmask, kDone };

const char* ClientStepName(ClientStep step) {
  switch (step) {
    case ClientStep::kAdvertise:
      return "AdvertiseKeys";
    case ClientStep::kShare:
      return "ShareKeys";
    case ClientStep::kMask:
      return "MaskInput";
    case ClientStep::kSign:
      return "SignSurvivors";
    case ClientStep::kUnmask:
      return "Unmask";
    case ClientStep::kDone:
      return "nothing (the round is over for this site)";
  }
  return "?";
}

}  // namespace

namespace {

// The error of a step's outcome, whether it returns a value or only a Status.
const Status& StatusOf(const Status& status) { return status; }
template <typename T>
const Status& StatusOf(const Result<T>& result) {
  return result.status();
}

}  // namespace

struct Client::State {
  // A neighbour whose keys were in the key list.
  struct Peer {
    uint32_t site = 0;
    Key32 mask_key{};  // its s_pk
    Key32 open_key{};  // opens the share it seals for this site
    bool shared = false;
    shamir::ShareValue key_share{};   // of its s_sk
    shamir::ShareValue seed_share{};  // of its b
  };

  Params params;
  uint32_t site = 0;
  crypto::SigningKey identity;
  std::map<uint32_t, crypto::Key32> roster;  // empty: no roster (see Client)
  std::vector<uint32_t> neighbours;          // site ids, ascending; fixed with the key list
  std::vector<uint32_t> signed_survivors;    // the list this site signed (step 4)
  Key32 key_root{};                          // the Merkle root over U1 it shared against
  std::string where;
  ClientStep step = ClientStep::kAdvertise;
  Status failure;  // the first error; later steps are refused

  crypto::DhKeyPair cipher, mask;
  // The same keys loaded for agreement once, at Advertise; each is released
  // (and cleared by OpenSSL) with the last step that uses it.
  std::optional<X25519Key> cipher_agreement, mask_agreement;
  std::shared_ptr<AgreementMemo> memo;  // may be null
  SecAggKeys own_keys;
  std::vector<Peer> peers;  // ascending by site
  shamir::Secret seed{};    // b
  shamir::ShareValue own_key_share{}, own_seed_share{};
  // Step 3: the follow-on mask key of each neighbour that shared (by site);
  // step 5 keeps those of the survivors in `follow_on`.
  std::vector<std::pair<uint32_t, SignedPrgKey>> follow_on_keys;
  std::unique_ptr<FollowOn> follow_on;

  ~State() { WipeSecrets(); }

  void WipeSecrets() {
    Wipe(std::span(reinterpret_cast<uint8_t*>(follow_on_keys.data()),
                   follow_on_keys.size() * sizeof(follow_on_keys[0])));
    follow_on_keys.clear();
    cipher_agreement.reset();
    mask_agreement.reset();
    WipeValue(cipher.private_key);
    WipeValue(mask.private_key);
    WipeValue(seed);
    WipeValue(own_key_share);
    WipeValue(own_seed_share);
    WipeValue(identity.private_key);
    for (Peer& peer : peers) {
      WipeValue(peer.open_key);
      WipeValue(peer.key_share);
      WipeValue(peer.seed_share);
    }
  }

  bool IsNeighbour(uint32_t other) const { return Contains(neighbours, other); }

  // `key`'s secret with `peer`, from the memo when the peer's holder put it
  // there, else computed (and put there for the peer).
  Result<Key32> Agree(X25519Key& key, const Key32& peer) {
    if (memo) {
      if (std::optional<Key32> secret = memo->Take(key.public_key(), peer)) return *secret;
    }
    FEDREC_ASSIGN_OR_RETURN(Key32 secret, key.Agree(peer));
    if (memo) memo->Put(key.public_key(), peer, secret);
    return secret;
  }

  Peer* FindPeer(uint32_t other) {
    auto it = std::lower_bound(peers.begin(), peers.end(), other,
                               [](const Peer& p, uint32_t s) { return p.site < s; });
    return it != peers.end() && it->site == other ? &*it : nullptr;
  }

  // Runs the step `body` if it is `expected` next and no earlier step failed;
  // any failure is remembered, the secrets wiped, and later steps refused.
  template <typename F>
  auto Run(ClientStep expected, F&& body) -> decltype(body()) {
    const std::string context = where + ", " + ClientStepName(expected);
    if (!failure.ok()) {
      return Status::Aborted(context + ": refused, an earlier step failed (" + failure.message() +
                             ")");
    }
    if (step != expected) {
      failure = Status::InvalidArgument(context + ": step out of order, expected " +
                                        ClientStepName(step) + " next");
      WipeSecrets();
      return failure;
    }
    auto result = body();
    if (!result.ok()) {
      failure = StatusOf(result).WithContext(context);
      WipeSecrets();
      return failure;
    }
    step = static_cast<ClientStep>(static_cast<int>(step) + 1);
    return result;
  }

  Result<SecAggKeys> Advertise();
  Result<SecAggShares> Share(const SecAggKeyList& list);
  Status CheckSparseList(const SecAggKeyList& list);
  // `pieces` are consecutive slices of the input, in order, covering it.
  Status Mask(std::span<const std::span<uint8_t>> pieces, const SecAggRoutedShares& routed,
              const PieceWriter& write);
  Result<SecAggMasked> Mask(std::vector<uint8_t> words, const SecAggRoutedShares& routed);
  Result<SecAggSurvivorSignature> Sign(const SecAggUnmaskRequest& request);
  Result<SecAggUnmaskShares> Reveal(const SecAggUnmaskRequest& request);
  Status CheckQuorum(const SecAggUnmaskRequest& request) const;
};

Client::Client(Params params, uint32_t site, crypto::SigningKey identity,
               std::map<uint32_t, crypto::Key32> roster, std::optional<Policy> policy,
               std::shared_ptr<AgreementMemo> memo)
    : state_(std::make_unique<State>()) {
  State& s = *state_;
  s.memo = std::move(memo);
  s.site = site;
  s.identity = identity;
  s.roster = std::move(roster);
  s.where = "secagg round " + Str(params.round) + ", site " + Str(site);
  // Documented as a precondition; a violation still only makes every step fail.
  if (Status valid = Validate(params); !valid.ok()) {
    s.failure = valid.WithContext(s.where);
  } else if (!PositionOf(params, site)) {
    s.failure = Status::InvalidArgument(s.where + ": this site is not a participant " +
                                        SiteList(params.sites));
  } else if (Status checked = policy ? CheckParams(params, *policy) : Status::Ok(); !checked.ok()) {
    s.failure = checked.WithContext(s.where);
  } else {
    s.neighbours = Neighbours(params, site);
  }
  s.params = std::move(params);
}

Client::~Client() = default;

Result<SecAggKeys> Client::AdvertiseKeys() {
  return state_->Run(ClientStep::kAdvertise, [&] { return state_->Advertise(); });
}

Result<SecAggShares> Client::ShareKeys(const SecAggKeyList& list) {
  return state_->Run(ClientStep::kShare, [&] { return state_->Share(list); });
}

Result<SecAggMasked> Client::MaskInput(std::span<const uint64_t> input,
                                       const SecAggRoutedShares& routed) {
  return state_->Run(ClientStep::kMask, [&]() -> Result<SecAggMasked> {
    const uint32_t ring_bits = state_->params.ring_bits;
    const size_t width = ring_bits / 8;
    std::vector<uint8_t> words(input.size() * width);
    for (size_t i = 0; i < input.size(); ++i) {
      if (ring_bits == 32) {
        PutLe<uint32_t>(words.data() + 4 * i, static_cast<uint32_t>(input[i]));
      } else {
        PutLe<uint64_t>(words.data() + 8 * i, input[i]);
      }
    }
    return state_->Mask(std::move(words), routed);
  });
}

Result<SecAggMasked> Client::MaskInputWords(std::vector<uint8_t> words,
                                            const SecAggRoutedShares& routed) {
  return state_->Run(ClientStep::kMask, [&] { return state_->Mask(std::move(words), routed); });
}

Status Client::MaskInputInPlace(std::span<uint8_t> words, const PieceWriter& write,
                                const SecAggRoutedShares& routed) {
  return MaskInputPiecesInPlace(std::span(&words, 1), write, routed);
}

Status Client::MaskInputPiecesInPlace(std::span<const std::span<uint8_t>> pieces,
                                      const PieceWriter& write, const SecAggRoutedShares& routed) {
  return state_->Run(ClientStep::kMask, [&] { return state_->Mask(pieces, routed, write); });
}

Result<SecAggSurvivorSignature> Client::SignSurvivors(const SecAggUnmaskRequest& request) {
  return state_->Run(ClientStep::kSign, [&] { return state_->Sign(request); });
}

Result<SecAggUnmaskShares> Client::Unmask(const SecAggUnmaskRequest& request) {
  return state_->Run(ClientStep::kUnmask, [&] { return state_->Reveal(request); });
}

std::unique_ptr<FollowOn> Client::TakeFollowOn() {
  if (state_->step != ClientStep::kDone || !state_->failure.ok()) return nullptr;
  return std::move(state_->follow_on);
}

FollowOn::~FollowOn() {
  Wipe(std::span(reinterpret_cast<uint8_t*>(masks_.data()), masks_.size() * sizeof(masks_[0])));
}

Result<SecAggMasked> FollowOn::MaskInput(std::span<const uint64_t> input, uint32_t ring_bits,
                                         uint32_t label) {
  const std::string where = "secagg round " + Str(round_) + ", site " + Str(site_) + ", follow-on";
  if (used_) {
    return Status::Aborted(where +
                           ": masked once already; a second input under the same "
                           "masks would reveal the difference of the two");
  }
  if (ring_bits != 32 && ring_bits != 64) {
    return Status::InvalidArgument(where + ": a ring of " + Str(ring_bits) +
                                   " bits, expected 32 or 64");
  }
  used_ = true;
  SecAggMasked out;
  out.round = label;
  out.site = site_;
  out.ring_bits = ring_bits;
  out.data = MaskVector(input, ring_bits, masks_);
  Wipe(std::span(reinterpret_cast<uint8_t*>(masks_.data()), masks_.size() * sizeof(masks_[0])));
  masks_.clear();
  return out;
}

FollowOnSum::FollowOnSum(uint32_t round, uint32_t label, std::vector<uint32_t> survivors,
                         uint32_t ring_bits, uint64_t length)
    : round_(round),
      label_(label),
      survivors_(std::move(survivors)),
      ring_bits_(ring_bits),
      length_(length),
      sum_(length * (ring_bits / 8)),
      added_(survivors_.size()) {}

Status FollowOnSum::Add(uint32_t site, const SecAggMaskedView& masked) {
  const std::string from =
      "follow-on sum of round " + Str(round_) + ": input from site " + Str(site);
  const auto it = std::lower_bound(survivors_.begin(), survivors_.end(), site);
  if (it == survivors_.end() || *it != site)
    return Status::InvalidArgument(from + ", which is not among the round's survivors");
  uint8_t& added = added_[static_cast<size_t>(it - survivors_.begin())];
  if (added) return Status::InvalidArgument(from + ": a second input");
  if (masked.round != label_ || masked.site != site) {
    return Status::InvalidArgument(from + " is labelled " + Str(masked.round) + ", site " +
                                   Str(masked.site) + "; expected " + Str(label_) + ", site " +
                                   Str(site));
  }
  if (masked.ring_bits != ring_bits_ || masked.data.size() != sum_.size()) {
    return Status::InvalidArgument(from + ": " + Str(masked.data.size()) + " bytes in a ring of " +
                                   Str(masked.ring_bits) + " bits, expected " + Str(length_) +
                                   " elements in a ring of " + Str(ring_bits_) + " bits");
  }
  AddWordsInPlace(sum_, masked.data, ring_bits_);
  added = 1;
  return Status::Ok();
}

Result<std::vector<uint64_t>> FollowOnSum::Finish() const {
  std::vector<uint32_t> missing;
  for (size_t i = 0; i < survivors_.size(); ++i)
    if (!added_[i]) missing.push_back(survivors_[i]);
  if (!missing.empty()) {
    return Status::Aborted("follow-on sum of round " + Str(round_) + ": no input from " +
                           Str(missing.size()) + " of the " + Str(survivors_.size()) +
                           " survivors " + SiteList(missing) +
                           "; without every survivor's input the masks do not cancel");
  }
  return RingWords(sum_, ring_bits_);
}

Result<SecAggKeys> Client::State::Advertise() {
  for (auto [pair, agreement] : {std::pair{&cipher, &cipher_agreement}, {&mask, &mask_agreement}}) {
    FEDREC_ASSIGN_OR_RETURN(pair->private_key, crypto::RandomKey());
    FEDREC_ASSIGN_OR_RETURN(X25519Key loaded, X25519Key::Load(pair->private_key));
    pair->public_key = loaded.public_key();
    agreement->emplace(std::move(loaded));
  }
  SecAggKeys keys;
  keys.round = params.round;
  keys.site = site;
  keys.identity_key = identity.public_key;
  keys.cipher_key = cipher.public_key;
  keys.mask_key = mask.public_key;
  FEDREC_ASSIGN_OR_RETURN(
      keys.signature,
      crypto::Sign(identity, KeysSignedMessage(params.job_id, params.round, site, cipher.public_key,
                                               mask.public_key)));
  own_keys = keys;
  return keys;
}

Result<SecAggShares> Client::State::Share(const SecAggKeyList& list) {
  const uint32_t round = params.round;
  const size_t n = params.sites.size();
  const bool sparse = params.degree + 1 != n;
  if (list.round != round) {
    return Status::InvalidArgument("key list for round " + Str(list.round) + ", expected round " +
                                   Str(round));
  }
  if (list.keys.size() > n) {
    return Status::InvalidArgument("key list of " + Str(list.keys.size()) +
                                   " entries, expected at most the " + Str(n) + " participants");
  }
  // Shape first, then the costly signature checks.
  size_t own_index = list.keys.size();
  for (size_t i = 0; i < list.keys.size(); ++i) {
    const SecAggKeys& entry = list.keys[i];
    if (i > 0 && entry.site <= list.keys[i - 1].site) {
      return Status::InvalidArgument("key list is not strictly ascending by site: site " +
                                     Str(entry.site) + " after site " + Str(list.keys[i - 1].site));
    }
    if (entry.round != round) {
      return Status::InvalidArgument("the keys of site " + Str(entry.site) + " are for round " +
                                     Str(entry.round) + ", expected round " + Str(round));
    }
    if (!PositionOf(params, entry.site)) {
      return Status::InvalidArgument("key list holds keys of site " + Str(entry.site) +
                                     ", which is not a participant of the round");
    }
    if (entry.site == site) own_index = i;
  }
  if (own_index == list.keys.size())
    return Status::InvalidArgument("key list lacks this site's own keys");
  if (list.keys[own_index] != own_keys) {
    return Status::InvalidArgument(
        "this site's keys in the key list differ from the ones it advertised (altered in transit)");
  }
  std::vector<std::pair<Key32, uint32_t>> advertised;  // every cipher and mask key, with its site
  for (const SecAggKeys& entry : list.keys) {
    advertised.emplace_back(entry.cipher_key, entry.site);
    advertised.emplace_back(entry.mask_key, entry.site);
  }
  std::sort(advertised.begin(), advertised.end());
  for (size_t i = 1; i < advertised.size(); ++i) {
    if (advertised[i].first == advertised[i - 1].first) {
      const uint32_t a = advertised[i - 1].second, b = advertised[i].second;
      return Status::InvalidArgument(a == b ? "site " + Str(a) + " advertises the same key twice"
                                            : "sites " + Str(std::min(a, b)) + " and " +
                                                  Str(std::max(a, b)) + " advertise the same key");
    }
  }
  if (!sparse) {
    if (!list.members.empty() || !list.proofs.empty()) {
      return Status::InvalidArgument(
          "a SecAgg+ key list (membership bitmap, Merkle proofs) for a complete-graph round");
    }
    if (list.keys.size() < params.threshold) {
      return Status::Aborted("key list holds " + Str(list.keys.size()) +
                             " sites (this one included), fewer than the threshold " +
                             Str(params.threshold));
    }
    key_root = KeyListRoot(list.keys);
  } else {
    FEDREC_RETURN_IF_ERROR(CheckSparseList(list));
  }
  for (size_t i = 0; i < list.keys.size(); ++i) {
    const SecAggKeys& entry = list.keys[i];
    if (i == own_index || roster.empty()) continue;
    const auto known = roster.find(entry.site);
    if (known == roster.end()) {
      return Status::InvalidArgument("the key list names site " + Str(entry.site) +
                                     ", which is not in this site's roster of identity keys");
    }
    if (known->second != entry.identity_key) {
      return Status::Corruption("the keys of site " + Str(entry.site) + " come with identity key " +
                                crypto::ToHex(entry.identity_key).substr(0, 16) +
                                "..., not the site's key in this site's roster (" +
                                crypto::ToHex(known->second).substr(0, 16) +
                                "...): substituted in the relay");
    }
    if (!crypto::Verify(
            entry.identity_key,
            KeysSignedMessage(params.job_id, round, entry.site, entry.cipher_key, entry.mask_key),
            entry.signature)) {
      return Status::InvalidArgument("the keys of site " + Str(entry.site) +
                                     " carry a bad signature for identity key " +
                                     crypto::ToHex(entry.identity_key).substr(0, 16) +
                                     "... (forged, or from another job or round)");
    }
  }
  // This site and its neighbours that advertised: the holders of its shares.
  std::vector<const SecAggKeys*> holders;
  size_t own_holder = 0;
  for (size_t i = 0; i < list.keys.size(); ++i) {
    if (i != own_index && !IsNeighbour(list.keys[i].site)) continue;
    if (i == own_index) own_holder = holders.size();
    holders.push_back(&list.keys[i]);
  }
  own_index = own_holder;
  if (holders.size() < params.threshold) {
    return Status::Aborted(Str(holders.size() - 1) +
                           " neighbours advertised keys; with this site that is fewer than the "
                           "threshold " +
                           Str(params.threshold));
  }

  // Shamir-share s_sk and b among the sites in the list (x = position + 1).
  FEDREC_RETURN_IF_ERROR(crypto::RandomBytes(seed));
  std::vector<uint32_t> xs;
  for (const SecAggKeys* entry : holders) xs.push_back(*PositionOf(params, entry->site) + 1);
  FEDREC_ASSIGN_OR_RETURN(std::vector<shamir::ShareValue> key_shares,
                          shamir::Split(mask.private_key, params.threshold, xs));
  FEDREC_ASSIGN_OR_RETURN(std::vector<shamir::ShareValue> seed_shares,
                          shamir::Split(seed, params.threshold, xs));
  own_key_share = key_shares[own_index];
  own_seed_share = seed_shares[own_index];

  X25519Key& cipher_key = *cipher_agreement;
  SecAggShares out;
  out.round = round;
  out.site = site;
  std::array<uint8_t, kSharePlaintextSize> plaintext;
  for (size_t i = 0; i < holders.size(); ++i) {
    if (i == own_index) continue;
    const uint32_t other = holders[i]->site;
    Result<Key32> secret = Agree(cipher_key, holders[i]->cipher_key);
    if (!secret.ok()) return secret.status().WithContext("cipher key of site " + Str(other));
    Result<Key32> seal_key = ShareKey(*secret, params.job_id, round, site, other);
    Result<Key32> open_key = ShareKey(*secret, params.job_id, round, other, site);
    WipeValue(*secret);
    if (!seal_key.ok()) return seal_key.status();
    if (!open_key.ok()) return open_key.status();
    const auto key_bytes = shamir::Serialize(key_shares[i]);
    const auto seed_bytes = shamir::Serialize(seed_shares[i]);
    std::copy(key_bytes.begin(), key_bytes.end(), plaintext.begin());
    std::copy(seed_bytes.begin(), seed_bytes.end(), plaintext.begin() + shamir::kShareSize);
    Result<std::vector<uint8_t>> sealed =
        crypto::SealOnce(*seal_key, ShareContext(params.job_id, round, site, other), plaintext);
    WipeValue(*seal_key);
    if (!sealed.ok()) return sealed.status();
    out.shares.push_back(EncryptedShare{other, std::move(sealed).value()});
    Peer peer;
    peer.site = other;
    peer.mask_key = holders[i]->mask_key;
    peer.open_key = *open_key;
    WipeValue(*open_key);
    peers.push_back(peer);
  }
  WipeValue(plaintext);
  Wipe(std::span(reinterpret_cast<uint8_t*>(key_shares.data()),
                 key_shares.size() * sizeof(shamir::ShareValue)));
  Wipe(std::span(reinterpret_cast<uint8_t*>(seed_shares.data()),
                 seed_shares.size() * sizeof(shamir::ShareValue)));
  WipeValue(cipher.private_key);  // its only use was sealing these shares
  cipher_agreement.reset();
  return out;
}

// The SecAgg+ key list: U1 as a bitmap, the root of the Merkle tree over
// U1's entries, and this site's entry and its ring neighbours' with their
// inclusion proofs. Fixes the ring seed and this site's neighbours.
Status Client::State::CheckSparseList(const SecAggKeyList& list) {
  const uint32_t n = static_cast<uint32_t>(params.sites.size());
  if (list.members.size() != (n + 7) / 8) {
    return Status::InvalidArgument("membership bitmap of " + Str(list.members.size()) +
                                   " bytes, expected " + Str((n + 7) / 8) + " for " + Str(n) +
                                   " participants");
  }
  if (n % 8 != 0 && (list.members.back() >> (n % 8)) != 0)
    return Status::InvalidArgument("membership bitmap marks positions beyond the participants");
  if (list.proofs.size() != list.keys.size()) {
    return Status::InvalidArgument("key list of " + Str(list.keys.size()) + " entries carries " +
                                   Str(list.proofs.size()) + " Merkle proofs, expected one each");
  }
  uint32_t members = 0;
  for (uint8_t byte : list.members) members += static_cast<uint32_t>(std::popcount(byte));
  if (members < params.threshold) {
    return Status::Aborted("key list marks " + Str(members) +
                           " sites as advertised, fewer than the threshold " +
                           Str(params.threshold));
  }
  // Leaving many sites out would let the coordinator choose among rings.
  if (members + params.dropouts < n) {
    return Status::Aborted("key list holds " + Str(members) + " of " + Str(n) +
                           " participants, fewer than the " + Str(n - params.dropouts) +
                           " the threat model's dropouts leave");
  }
  if (!Marked(list.members, *PositionOf(params, site))) {
    return Status::InvalidArgument(
        "the membership bitmap leaves out this site, whose keys the list carries");
  }
  params.ring_seed = RingSeed(params, members, list.root);
  key_root = list.root;
  neighbours = secagg::Neighbours(params, site);
  // Exactly this site and its neighbours marked in U1, each proven in the root.
  std::vector<uint32_t> expected;
  for (uint32_t other : neighbours)
    if (Marked(list.members, *PositionOf(params, other))) expected.push_back(other);
  expected.insert(std::upper_bound(expected.begin(), expected.end(), site), site);
  size_t e = 0;
  for (size_t i = 0; i < list.keys.size(); ++i, ++e) {
    const uint32_t listed = list.keys[i].site;
    if (e < expected.size() && expected[e] < listed) {
      return Status::InvalidArgument("the membership bitmap marks neighbour site " +
                                     Str(expected[e]) +
                                     " as advertised, but the key list omits its keys");
    }
    if (e == expected.size() || expected[e] != listed) {
      return Status::InvalidArgument("the key list holds keys of site " + Str(listed) +
                                     ", which is not a neighbour of this site marked in the "
                                     "membership bitmap");
    }
    const uint32_t index = RankOf(list.members, *PositionOf(params, listed));
    if (!VerifyKeyProof(list.keys[i], index, members, list.proofs[i], list.root)) {
      return Status::Corruption("the keys of site " + Str(listed) +
                                " are not in the key list's Merkle root at leaf " + Str(index) +
                                " of " + Str(members) +
                                " (a bad inclusion proof: keys substituted, or another list)");
    }
  }
  if (e < expected.size()) {
    return Status::InvalidArgument("the membership bitmap marks neighbour site " +
                                   Str(expected[e]) +
                                   " as advertised, but the key list omits its keys");
  }
  return Status::Ok();
}

Result<SecAggMasked> Client::State::Mask(std::vector<uint8_t> words,
                                         const SecAggRoutedShares& routed) {
  const std::span<uint8_t> whole(words);
  FEDREC_RETURN_IF_ERROR(Mask(std::span(&whole, 1), routed, nullptr));
  SecAggMasked out;
  out.round = params.round;
  out.site = site;
  out.ring_bits = params.ring_bits;
  out.data = std::move(words);
  return out;
}

Status Client::State::Mask(std::span<const std::span<uint8_t>> pieces,
                           const SecAggRoutedShares& routed, const PieceWriter& write) {
  const uint32_t round = params.round;
  const size_t width = params.ring_bits / 8;
  size_t bytes = 0;
  for (const std::span<uint8_t> piece : pieces) bytes += piece.size();
  if (bytes != params.length * width) {
    return Status::InvalidArgument("input of " + Str(bytes) + " bytes, expected " +
                                   Str(params.length) + " elements of " + Str(width) + " bytes");
  }
  bytes = 0;
  for (const std::span<uint8_t> piece : pieces) {
    if (piece.size() % width != 0 || (bytes / width) % kMaskPieceAlign != 0) {
      return Status::InvalidArgument(
          "an input piece of " + Str(piece.size()) + " bytes at element " + Str(bytes / width) +
          ": expected whole elements of " + Str(width) +
          " bytes, each piece starting at a multiple of " + Str(kMaskPieceAlign) + " elements");
    }
    bytes += piece.size();
  }
  if (routed.round != round) {
    return Status::InvalidArgument("routed shares for round " + Str(routed.round) +
                                   ", expected round " + Str(round));
  }
  if (routed.shares.size() > peers.size()) {
    return Status::InvalidArgument(Str(routed.shares.size()) + " routed shares, expected at most " +
                                   Str(peers.size()) + " (the neighbours in this site's key list)");
  }
  std::vector<uint8_t> plain;
  for (const EncryptedShare& share : routed.shares) {
    Peer* peer = FindPeer(share.site);
    if (peer == nullptr) {
      return Status::InvalidArgument("a share from site " + Str(share.site) +
                                     ", which is not a neighbour in this site's key list");
    }
    if (peer->shared) return Status::InvalidArgument("a second share from site " + Str(share.site));
    if (share.sealed.size() != kSealedShareSize) {
      return Status::InvalidArgument("the share from site " + Str(share.site) + " has " +
                                     Str(share.sealed.size()) + " bytes, expected " +
                                     Str(kSealedShareSize));
    }
    Result<std::vector<uint8_t>> opened = crypto::OpenOnce(
        peer->open_key, ShareContext(params.job_id, round, share.site, site), share.sealed);
    if (!opened.ok()) {
      return Status::Corruption("the share from site " + Str(share.site) +
                                " does not authenticate (altered, or sealed for another site or "
                                "round): " +
                                opened.status().message());
    }
    plain = std::move(opened).value();
    Result<shamir::ShareValue> key_share =
        shamir::Parse(std::span(plain).first(shamir::kShareSize));
    Result<shamir::ShareValue> seed_share =
        shamir::Parse(std::span(plain).subspan(shamir::kShareSize));
    Wipe(plain);
    if (!key_share.ok())
      return key_share.status().WithContext("share from site " + Str(share.site));
    if (!seed_share.ok())
      return seed_share.status().WithContext("share from site " + Str(share.site));
    peer->key_share = *key_share;
    peer->seed_share = *seed_share;
    peer->shared = true;
  }
  // Below the threshold too few pairwise masks would hide this site's input
  // (and its seed could not be reconstructed anyway).
  if (routed.shares.size() + 1 < params.threshold) {
    return Status::Aborted("shares arrived from " + Str(routed.shares.size()) +
                           " neighbours; with this site that is fewer than the threshold " +
                           Str(params.threshold));
  }

  std::vector<SignedPrgKey> masks;
  masks.reserve(routed.shares.size() + 1);
  FEDREC_ASSIGN_OR_RETURN(masks.emplace_back().key, SelfMaskKey(seed, round, site));
  X25519Key& mask_key = *mask_agreement;
  for (const Peer& peer : peers) {
    if (!peer.shared) continue;
    Result<Key32> secret = Agree(mask_key, peer.mask_key);
    if (!secret.ok()) return secret.status().WithContext("mask key of site " + Str(peer.site));
    Result<PrgKey> key = PairwiseKey(*secret, round, site, peer.site);
    Result<PrgKey> follow_on_key = PairwiseKey(*secret, round, site, peer.site, kFollowOnInfo);
    WipeValue(*secret);
    if (!key.ok()) return key.status();
    if (!follow_on_key.ok()) return follow_on_key.status();
    // +PRG(s_uv) when this site is the smaller one, -PRG(s_uv) otherwise.
    masks.push_back(SignedPrgKey{*key, site > peer.site});
    follow_on_keys.emplace_back(peer.site, SignedPrgKey{*follow_on_key, site > peer.site});
    WipeValue(*key);
    WipeValue(*follow_on_key);
  }
  uint64_t first = 0;
  for (const std::span<uint8_t> piece : pieces) {
    MaskInPlace(piece, params.ring_bits, masks, 1, write, first);
    first += piece.size() / width;
  }
  Wipe(std::span(reinterpret_cast<uint8_t*>(masks.data()), masks.size() * sizeof(SignedPrgKey)));
  WipeValue(mask.private_key);  // only its shares are revealed from now on
  mask_agreement.reset();
  WipeValue(seed);
  return Status::Ok();
}

Result<SecAggSurvivorSignature> Client::State::Sign(const SecAggUnmaskRequest& request) {
  const uint32_t round = params.round;
  if (request.round != round) {
    return Status::InvalidArgument("survivor list for round " + Str(request.round) +
                                   ", expected round " + Str(round));
  }
  if (request.unmask || !request.signatures.empty()) {
    return Status::InvalidArgument("the survivor list to sign is an unmask request with " +
                                   Str(request.signatures.size()) +
                                   " signatures, expected the plain list of step 4");
  }
  const std::vector<uint32_t>& list = request.survivors;
  if (list.size() > params.sites.size()) {
    return Status::InvalidArgument("survivor list of " + Str(list.size()) +
                                   " sites, more than the " + Str(params.sites.size()) +
                                   " participants");
  }
  // Both lists ascend: one merged pass checks every entry is a participant
  // (O(n) per site, not O(n log n): at 10,000 sites this check is per site).
  auto participant = params.sites.begin();
  for (size_t i = 0; i < list.size(); ++i) {
    if (i > 0 && list[i] <= list[i - 1]) {
      return Status::InvalidArgument("survivor list is not strictly ascending: site " +
                                     Str(list[i]) + " after site " + Str(list[i - 1]));
    }
    while (participant != params.sites.end() && *participant < list[i]) ++participant;
    if (participant == params.sites.end() || *participant != list[i]) {
      return Status::InvalidArgument("survivor list names site " + Str(list[i]) +
                                     ", which is not a participant");
    }
  }
  if (!Contains(list, site)) {
    return Status::InvalidArgument(
        "this site is not listed among the survivors, but it sent its masked input");
  }
  if (list.size() < params.threshold) {
    return Status::Aborted(Str(list.size()) + " survivors, fewer than the threshold " +
                           Str(params.threshold));
  }
  // Every listed neighbour shared with this site: O(degree log n).
  for (uint32_t other : neighbours) {
    if (!Contains(list, other)) continue;
    const Peer* peer = FindPeer(other);
    if (peer == nullptr || !peer->shared) {
      return Status::InvalidArgument("site " + Str(other) +
                                     " is listed as a survivor but did not send this site shares");
    }
  }
  SecAggSurvivorSignature out;
  out.round = round;
  out.site = site;
  FEDREC_ASSIGN_OR_RETURN(
      out.signature,
      crypto::Sign(identity, SurvivorsSignedMessage(params.job_id, round, key_root, list)));
  signed_survivors = list;
  return out;
}

// Valid roster signatures of at least Quorum(params) distinct listed sites on
// (job, round, key_root, signed_survivors). REQUIRES: a roster.
Status Client::State::CheckQuorum(const SecAggUnmaskRequest& request) const {
  const std::vector<uint8_t> message =
      SurvivorsSignedMessage(params.job_id, params.round, key_root, signed_survivors);
  const uint32_t quorum = Quorum(params);
  uint32_t valid = 0;
  for (size_t i = 0; i < request.signatures.size(); ++i) {
    const SurvivorSignature& signature = request.signatures[i];
    if (i > 0 && signature.site <= request.signatures[i - 1].site) {
      return Status::InvalidArgument(
          "consistency check: signatures not strictly ascending by site: site " +
          Str(signature.site) + " after site " + Str(request.signatures[i - 1].site));
    }
    if (!Contains(signed_survivors, signature.site)) {
      return Status::InvalidArgument("consistency check: a signature of site " +
                                     Str(signature.site) + ", which is not a listed survivor");
    }
    if (valid == quorum) continue;  // a quorum is all a site needs
    const auto key = roster.find(signature.site);
    if (key == roster.end()) {
      return Status::InvalidArgument("consistency check: a signature of site " +
                                     Str(signature.site) +
                                     ", which is not in this site's roster of identity keys");
    }
    if (!crypto::Verify(key->second, message, signature.signature)) {
      return Status::InvalidArgument(
          "consistency check: the signature of site " + Str(signature.site) +
          " on the survivor list does not verify under its identity key (forged, or signed on "
          "another list, key list, job or round)");
    }
    ++valid;
  }
  if (valid < quorum) {
    return Status::InvalidArgument("consistency check: " + Str(valid) +
                                   " valid signatures on the survivor list, expected at least " +
                                   Str(quorum) + " (the quorum of " + Str(params.sites.size()) +
                                   " participants)");
  }
  return Status::Ok();
}

Result<SecAggUnmaskShares> Client::State::Reveal(const SecAggUnmaskRequest& request) {
  const uint32_t round = params.round;
  if (request.round != round) {
    return Status::InvalidArgument("unmask request for round " + Str(request.round) +
                                   ", expected round " + Str(round));
  }
  if (!request.unmask) {
    return Status::InvalidArgument(
        "the unmask request is the survivor list of step 4, expected the request of step 5");
  }
  // One list per round: revealing against two would hand out both secrets
  // of a site that one list calls dropped and the other a survivor.
  if (request.survivors != signed_survivors) {
    return Status::InvalidArgument(
        "consistency check: the unmask request lists survivors " + SiteList(request.survivors) +
        ", not the list " + SiteList(signed_survivors) +
        " this site signed; refusing to reveal shares against another list");
  }
  // Without a roster the identity keys are the coordinator's relay, under
  // which a signature proves nothing (see Client): the coordinator sends
  // none, and the site relies on the list being the one it signed. With a
  // roster a quorum of the listed sites must have signed this very list
  // against this very key-list root; this is O(n) bytes and up to Quorum
  // verifications per site, the cost of the actively secure check at scale.
  if (!roster.empty()) FEDREC_RETURN_IF_ERROR(CheckQuorum(request));

  SecAggUnmaskShares out;
  out.round = round;
  out.site = site;
  for (uint32_t other : signed_survivors) {
    if (other == site) {
      const auto bytes = shamir::Serialize(own_seed_share);
      out.self_mask_shares.push_back(RevealedShare{site, {bytes.begin(), bytes.end()}});
      continue;
    }
    if (!IsNeighbour(other)) continue;  // holds nothing of it
    const auto bytes = shamir::Serialize(FindPeer(other)->seed_share);
    out.self_mask_shares.push_back(RevealedShare{other, {bytes.begin(), bytes.end()}});
  }
  // The dropped: neighbours that shared with this site but are not listed.
  for (const Peer& peer : peers) {
    if (!peer.shared || Contains(signed_survivors, peer.site)) continue;
    const auto bytes = shamir::Serialize(peer.key_share);
    out.mask_key_shares.push_back(RevealedShare{peer.site, {bytes.begin(), bytes.end()}});
  }
  // The follow-on masks with the survivors among the neighbours, when they
  // are enough to hide a follow-on input (as step 3 requires of its own).
  std::unique_ptr<FollowOn> next(new FollowOn);
  next->round_ = round;
  next->site_ = site;
  for (const auto& [other, key] : follow_on_keys)
    if (Contains(signed_survivors, other)) next->masks_.push_back(key);
  if (next->masks_.size() + 1 >= params.threshold) follow_on = std::move(next);
  WipeSecrets();  // the round is over for this site
  return out;
}

// ---------------------------------------------------------------------------
// Server

namespace {

enum class ServerStep { kKeys, kShares, kMasked, kSign, kUnmask, kDone, kAborted };

}  // namespace

struct Server::State {
  // A message from `site` must carry this round and that site; `from` names it.
  Status CheckLabel(const std::string& from, uint32_t round, uint32_t labelled_site,
                    uint32_t site) const {
    if (round == params.round && labelled_site == site) return Status::Ok();
    return Status::InvalidArgument(from + " is labelled round " + Str(round) + ", site " +
                                   Str(labelled_site) + "; expected round " + Str(params.round) +
                                   ", site " + Str(site));
  }

  // A revealed share: the holder's x-coordinate and its value.
  struct Held {
    uint32_t x = 0;
    shamir::ShareValue value{};
  };

  Params params;
  unsigned threads = 1;  // for unmasking
  // The masked inputs are summed by shard servers (each a slice): step 3
  // gets only notices without data, and step 6 gives the masks to remove.
  bool sum_elsewhere = false;
  Status invalid;  // the parameters' problem, if any: every call fails with it
  std::string where;
  size_t n = 0;
  // The graph; neighbour lists are computed when needed, since the complete
  // graph's would take n^2 memory.
  std::optional<Topology> topology;
  ServerStep step = ServerStep::kKeys;

  std::vector<std::optional<SecAggKeys>> keys;  // by position
  // The commitment to U1 (FinishKeys): the Merkle root over its entries,
  // and with SecAgg+ the tree, each member's leaf index and U1 as a bitmap.
  Key32 key_root{};
  std::vector<std::vector<Digest>> merkle;
  std::vector<uint32_t> leaf_of;  // by position
  std::vector<uint8_t> members_bitmap;
  std::map<Key32, uint32_t> key_owners;  // detects reused keys
  // What survivors sign (SurvivorsSignedMessage), made once per round.
  std::vector<uint8_t> survivors_message;
  std::vector<uint8_t> heard;  // by position: sent a message in the current step
  std::vector<uint8_t> in_u1, in_u2, in_u3, in_u4, in_u5;
  std::vector<uint32_t> advertised, shared, survivors, signers, dropped;  // site ids, ascending
  std::vector<SurvivorSignature> signatures;                              // ascending by site
  std::vector<std::vector<EncryptedShare>> inbox;  // by addressee position; site = sender
  std::vector<uint8_t> sum;  // running sum of masked inputs, little-endian ring words
  std::vector<std::vector<Held>> seed_shares, key_shares;  // by owner position

  uint32_t Count(const std::vector<uint8_t>& flags) const {
    return static_cast<uint32_t>(std::count(flags.begin(), flags.end(), 1));
  }

  std::vector<uint32_t> Members(const std::vector<uint8_t>& flags) const {
    std::vector<uint32_t> out;
    for (size_t pos = 0; pos < n; ++pos)
      if (flags[pos]) out.push_back(params.sites[pos]);
    return out;
  }

  // OK when `name` may run now, i.e. `step` is the current step.
  Status Expect(ServerStep expected, const char* name) const {
    if (!invalid.ok()) return invalid;
    if (step == expected) return Status::Ok();
    if (step == ServerStep::kAborted)
      return Status::Aborted(where + ": " + name + " after the round aborted");
    if (step == ServerStep::kDone)
      return Status::InvalidArgument(where + ": " + name + " after the round finished");
    return Status::InvalidArgument(where + ": " + name + " called out of order (step " +
                                   Str(static_cast<int>(step) + 1) + " of 6 is open, " + name +
                                   " belongs to step " + Str(static_cast<int>(expected) + 1) + ")");
  }

  // The position of `site` that sent a message of this step; InvalidArgument
  // when it is not a participant, lacks `member_flags` (the previous step), or
  // already sent one.
  Result<uint32_t> Sender(uint32_t site, const char* what, const std::vector<uint8_t>* member_flags,
                          const char* member_of) {
    const std::optional<uint32_t> pos = PositionOf(params, site);
    if (!pos) {
      return Status::InvalidArgument(where + ": " + what + " from site " + Str(site) +
                                     ", which is not a participant");
    }
    if (member_flags != nullptr && !(*member_flags)[*pos]) {
      return Status::InvalidArgument(where + ": " + what + " from site " + Str(site) + ", which " +
                                     member_of);
    }
    if (heard[*pos]) {
      return Status::InvalidArgument(where + ": a second " + what + " message from site " +
                                     Str(site));
    }
    heard[*pos] = 1;
    return *pos;
  }

  // Closes a step: Aborted (and the round with it) below the threshold.
  Status Close(uint32_t count, const char* what, ServerStep next) {
    std::fill(heard.begin(), heard.end(), 0);
    if (count < params.threshold) {
      step = ServerStep::kAborted;
      return Status::Aborted(where + ": " + Str(count) + " sites " + what +
                             ", fewer than the threshold " + Str(params.threshold));
    }
    step = next;
    return Status::Ok();
  }

  // Step 6 up to the sum: the masks to take from the survivors' sum.
  Result<std::vector<SignedPrgKey>> Masks();
  // Wipes and drops every revealed share (the round is over).
  void WipeShares();
  Result<std::vector<uint64_t>> Unmask();
};

Server::Server(Params params, unsigned threads, bool sum_elsewhere)
    : state_(std::make_unique<State>()) {
  State& s = *state_;
  s.threads = std::max(threads, 1u);
  s.sum_elsewhere = sum_elsewhere;
  s.where = "secagg round " + Str(params.round) + ", coordinator";
  s.invalid = Validate(params);
  s.params = std::move(params);
  if (!s.invalid.ok()) return;
  s.n = s.params.sites.size();
  // SecAgg+: the ring is drawn from the round keys (FinishKeys).
  if (!IsSparse(s.params)) s.topology.emplace(s.params, /*precompute=*/true);
  s.keys.resize(s.n);
  s.heard.assign(s.n, 0);
  s.in_u1.assign(s.n, 0);
  s.in_u2.assign(s.n, 0);
  s.in_u3.assign(s.n, 0);
  s.in_u4.assign(s.n, 0);
  s.in_u5.assign(s.n, 0);
  s.inbox.resize(s.n);
  if (!s.sum_elsewhere) s.sum.assign(s.params.length * (s.params.ring_bits / 8), 0);
  s.seed_shares.resize(s.n);
  s.key_shares.resize(s.n);
}

Server::~Server() = default;

const Params& Server::params() const { return state_->params; }
const std::vector<uint32_t>& Server::advertised() const { return state_->advertised; }
const std::vector<uint32_t>& Server::shared() const { return state_->shared; }
const std::vector<uint32_t>& Server::survivors() const { return state_->survivors; }
const std::vector<uint32_t>& Server::signers() const { return state_->signers; }
std::vector<uint64_t> Server::masked_sum() const {
  const State& s = *state_;
  return RingWords(s.sum, s.params.ring_bits);
}

namespace {

// Runs check(i) for i in [0, n) on up to `threads` threads; whether each passed.
template <typename Check>
std::vector<uint8_t> CheckAll(size_t n, unsigned threads, Check check) {
  std::vector<uint8_t> passed(n);
  ParallelRanges(n, 16, threads, [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) passed[i] = check(i) ? 1 : 0;
  });
  return passed;
}

}  // namespace

Status Server::AddKeys(uint32_t site, const SecAggKeys& keys, const crypto::Key32& identity_key) {
  return AddKeys(site, keys, identity_key,
                 crypto::Verify(identity_key,
                                KeysSignedMessage(state_->params.job_id, keys.round, keys.site,
                                                  keys.cipher_key, keys.mask_key),
                                keys.signature));
}

std::vector<Status> Server::AddKeys(std::span<const KeysFrom> batch) {
  const std::vector<uint8_t> verified = CheckAll(batch.size(), state_->threads, [&](size_t i) {
    const SecAggKeys& keys = batch[i].keys;
    return crypto::Verify(batch[i].identity_key,
                          KeysSignedMessage(state_->params.job_id, keys.round, keys.site,
                                            keys.cipher_key, keys.mask_key),
                          keys.signature);
  });
  std::vector<Status> added;
  for (size_t i = 0; i < batch.size(); ++i)
    added.push_back(AddKeys(batch[i].site, batch[i].keys, batch[i].identity_key, verified[i]));
  return added;
}

Status Server::AddKeys(uint32_t site, const SecAggKeys& keys, const crypto::Key32& identity_key,
                       bool signature_verifies) {
  State& s = *state_;
  FEDREC_RETURN_IF_ERROR(s.Expect(ServerStep::kKeys, "AddKeys"));
  FEDREC_ASSIGN_OR_RETURN(const uint32_t pos, s.Sender(site, "keys", nullptr, ""));
  const std::string from = s.where + ": keys from site " + Str(site);
  FEDREC_RETURN_IF_ERROR(s.CheckLabel(from, keys.round, keys.site, site));
  if (!signature_verifies) {
    return Status::InvalidArgument(from + " carry a bad signature for the site's identity key " +
                                   crypto::ToHex(identity_key).substr(0, 16) + "...");
  }
  if (keys.cipher_key == keys.mask_key)
    return Status::InvalidArgument(from + ": the same key advertised twice");
  for (const Key32* key : {&keys.cipher_key, &keys.mask_key}) {
    const auto it = s.key_owners.find(*key);
    if (it != s.key_owners.end()) {
      return Status::InvalidArgument(from + ": a key that site " + Str(it->second) +
                                     " advertised already");
    }
  }
  // The low-order points would zero every mask and share key agreed with them.
  for (const Key32* key : {&keys.cipher_key, &keys.mask_key}) {
    if (IsLowOrderX25519(*key)) {
      return Status::InvalidArgument(from + ": " + (key == &keys.cipher_key ? "cipher" : "mask") +
                                     " key is a low-order X25519 point");
    }
  }
  for (const Key32* key : {&keys.cipher_key, &keys.mask_key}) s.key_owners.emplace(*key, site);
  SecAggKeys relayed = keys;
  relayed.identity_key = identity_key;
  s.keys[pos] = relayed;
  s.in_u1[pos] = 1;
  return Status::Ok();
}

Status Server::FinishKeys() {
  State& s = *state_;
  FEDREC_RETURN_IF_ERROR(s.Expect(ServerStep::kKeys, "FinishKeys"));
  s.advertised = s.Members(s.in_u1);
  FEDREC_RETURN_IF_ERROR(s.Close(s.Count(s.in_u1), "advertised keys", ServerStep::kShares));
  const bool sparse = IsSparse(s.params);
  if (sparse && s.advertised.size() + s.params.dropouts < s.n) {
    s.step = ServerStep::kAborted;
    return Status::Aborted(s.where + ": " + Str(s.advertised.size()) + " of " + Str(s.n) +
                           " sites advertised keys, fewer than the " +
                           Str(s.n - s.params.dropouts) + " the threat model's dropouts leave");
  }
  std::vector<Digest> leaves;
  leaves.reserve(s.advertised.size());
  if (sparse) {
    s.leaf_of.assign(s.n, 0);
    s.members_bitmap.assign((s.n + 7) / 8, 0);
  }
  for (uint32_t pos = 0; pos < s.n; ++pos) {
    if (!s.in_u1[pos]) continue;
    if (sparse) {
      s.leaf_of[pos] = static_cast<uint32_t>(leaves.size());
      s.members_bitmap[pos / 8] |= static_cast<uint8_t>(1u << (pos % 8));
    }
    leaves.push_back(LeafHash(*s.keys[pos]));
  }
  std::vector<std::vector<Digest>> levels = MerkleLevels(std::move(leaves));
  s.key_root = SizedRoot(levels.back()[0], s.advertised.size());
  if (sparse) {  // the ring every site derives from the same commitment
    s.merkle = std::move(levels);
    s.params.ring_seed = RingSeed(s.params, static_cast<uint32_t>(s.advertised.size()), s.key_root);
    s.topology.emplace(s.params, /*precompute=*/true);
  }
  return Status::Ok();
}

Result<SecAggKeyList> Server::KeyListFor(uint32_t site) const {
  const State& s = *state_;
  if (!s.invalid.ok()) return s.invalid;
  if (s.step == ServerStep::kKeys || s.step == ServerStep::kAborted)
    return Status::InvalidArgument(s.where + ": KeyListFor before FinishKeys succeeded");
  const std::optional<uint32_t> pos = PositionOf(s.params, site);
  if (!pos || !s.in_u1[*pos]) {
    return Status::InvalidArgument(s.where + ": KeyListFor site " + Str(site) +
                                   ", which did not advertise keys");
  }
  SecAggKeyList list;
  list.round = s.params.round;
  if (!IsSparse(s.params)) {  // every key of U1 is a neighbour's
    list.keys.reserve(s.advertised.size());
    for (size_t q = 0; q < s.n; ++q)
      if (s.in_u1[q]) list.keys.push_back(*s.keys[q]);
    return list;
  }
  // SecAgg+: U1 as a bitmap, and the site's and its neighbours' entries,
  // each with its proof against the root.
  list.members = s.members_bitmap;
  list.root = s.key_root;
  std::vector<uint32_t> shown = s.topology->Neighbours(*pos);
  shown.insert(std::upper_bound(shown.begin(), shown.end(), *pos), *pos);
  for (uint32_t q : shown) {
    if (!s.in_u1[q]) continue;
    list.keys.push_back(*s.keys[q]);
    list.proofs.push_back(ProofOf(s.merkle, s.leaf_of[q]));
  }
  return list;
}

Status Server::AddShares(uint32_t site, SecAggShares shares) {
  State& s = *state_;
  FEDREC_RETURN_IF_ERROR(s.Expect(ServerStep::kShares, "AddShares"));
  FEDREC_ASSIGN_OR_RETURN(const uint32_t pos,
                          s.Sender(site, "shares", &s.in_u1, "did not advertise keys"));
  const std::string from = s.where + ": shares from site " + Str(site);
  FEDREC_RETURN_IF_ERROR(s.CheckLabel(from, shares.round, shares.site, site));
  // Exactly one share per neighbour that advertised: those were in its key list.
  std::vector<uint32_t> expected;
  for (uint32_t q : s.topology->Neighbours(pos))
    if (s.in_u1[q]) expected.push_back(q);
  if (shares.shares.size() != expected.size()) {
    return Status::InvalidArgument(from + ": expected " + Str(expected.size()) +
                                   " sealed shares (one per neighbour that advertised keys), "
                                   "found " +
                                   Str(shares.shares.size()));
  }
  std::vector<uint32_t> addressees;
  for (const EncryptedShare& share : shares.shares) {
    const std::optional<uint32_t> to = PositionOf(s.params, share.site);
    if (!to || !std::binary_search(expected.begin(), expected.end(), *to)) {
      return Status::InvalidArgument(from + ": a share addressed to site " + Str(share.site) +
                                     ", which is not a neighbour that advertised keys");
    }
    if (share.sealed.size() != kSealedShareSize) {
      return Status::InvalidArgument(from + ": the share for site " + Str(share.site) + " has " +
                                     Str(share.sealed.size()) + " bytes, expected " +
                                     Str(kSealedShareSize));
    }
    addressees.push_back(*to);
  }
  std::sort(addressees.begin(), addressees.end());
  if (auto twice = std::adjacent_find(addressees.begin(), addressees.end());
      twice != addressees.end()) {
    return Status::InvalidArgument(from + ": two shares addressed to site " +
                                   Str(s.params.sites[*twice]));
  }
  for (EncryptedShare& share : shares.shares) {
    const uint32_t to = *PositionOf(s.params, share.site);
    s.inbox[to].push_back(EncryptedShare{site, std::move(share.sealed)});
  }
  s.in_u2[pos] = 1;
  return Status::Ok();
}

Status Server::FinishShares() {
  State& s = *state_;
  FEDREC_RETURN_IF_ERROR(s.Expect(ServerStep::kShares, "FinishShares"));
  s.shared = s.Members(s.in_u2);
  for (auto& box : s.inbox) {
    std::sort(box.begin(), box.end(),
              [](const EncryptedShare& a, const EncryptedShare& b) { return a.site < b.site; });
  }
  return s.Close(s.Count(s.in_u2), "shared keys", ServerStep::kMasked);
}

Result<SecAggRoutedShares> Server::SharesFor(uint32_t site) const {
  const State& s = *state_;
  if (!s.invalid.ok()) return s.invalid;
  if (s.step < ServerStep::kMasked || s.step == ServerStep::kAborted)
    return Status::InvalidArgument(s.where + ": SharesFor before FinishShares succeeded");
  const std::optional<uint32_t> pos = PositionOf(s.params, site);
  if (!pos || !s.in_u2[*pos]) {
    return Status::InvalidArgument(s.where + ": SharesFor site " + Str(site) +
                                   ", which did not share keys");
  }
  SecAggRoutedShares routed;
  routed.round = s.params.round;
  routed.shares = s.inbox[*pos];
  return routed;
}

Status Server::AddMasked(uint32_t site, const SecAggMasked& masked) {
  return AddMasked(site,
                   SecAggMaskedView{masked.round, masked.site, masked.ring_bits, masked.data});
}

Status Server::AddMasked(uint32_t site, const SecAggMaskedView& masked) {
  State& s = *state_;
  FEDREC_RETURN_IF_ERROR(s.Expect(ServerStep::kMasked, "AddMasked"));
  FEDREC_ASSIGN_OR_RETURN(const uint32_t pos,
                          s.Sender(site, "masked input", &s.in_u2, "did not share keys"));
  const std::string from = s.where + ": masked input from site " + Str(site);
  FEDREC_RETURN_IF_ERROR(s.CheckLabel(from, masked.round, masked.site, site));
  if (masked.ring_bits != s.params.ring_bits) {
    return Status::InvalidArgument(from + " is in a ring of " + Str(masked.ring_bits) +
                                   " bits, expected " + Str(s.params.ring_bits));
  }
  const size_t width = s.params.ring_bits / 8;
  if (s.sum_elsewhere) {
    if (!masked.data.empty()) {
      return Status::InvalidArgument(from + " carries " + Str(masked.data.size()) +
                                     " bytes of input, expected none: the shard servers sum "
                                     "the inputs this round");
    }
    s.in_u3[pos] = 1;
    return Status::Ok();
  }
  if (masked.data.size() != s.params.length * width) {
    return Status::InvalidArgument(from + " has " + Str(masked.data.size()) + " bytes, expected " +
                                   Str(s.params.length) + " elements of " + Str(width) +
                                   " bytes = " + Str(s.params.length * width));
  }
  AddWordsInPlace(s.sum, masked.data, s.params.ring_bits);
  s.in_u3[pos] = 1;
  return Status::Ok();
}

Status Server::FinishMasked() {
  State& s = *state_;
  FEDREC_RETURN_IF_ERROR(s.Expect(ServerStep::kMasked, "FinishMasked"));
  s.survivors = s.Members(s.in_u3);
  s.survivors_message =
      SurvivorsSignedMessage(s.params.job_id, s.params.round, s.key_root, s.survivors);
  s.dropped.clear();
  for (size_t pos = 0; pos < s.n; ++pos)
    if (s.in_u2[pos] && !s.in_u3[pos]) s.dropped.push_back(s.params.sites[pos]);
  return s.Close(s.Count(s.in_u3), "sent masked inputs", ServerStep::kSign);
}

SecAggUnmaskRequest Server::SurvivorList() const {
  SecAggUnmaskRequest request;
  request.round = state_->params.round;
  request.survivors = state_->survivors;
  return request;
}

// The survivors' message is made once (it is O(n) bytes); a signature from a
// site that is not a survivor is refused before it matters.
bool Server::SurvivorSignatureVerifies(uint32_t site,
                                       const SecAggSurvivorSignature& signature) const {
  const State& s = *state_;
  const std::optional<uint32_t> pos = PositionOf(s.params, site);
  if (!pos || !s.keys[*pos]) return false;
  return crypto::Verify(s.keys[*pos]->identity_key, s.survivors_message, signature.signature);
}

Status Server::AddSurvivorSignature(uint32_t site, const SecAggSurvivorSignature& signature) {
  return AddSurvivorSignature(site, signature, SurvivorSignatureVerifies(site, signature));
}

std::vector<Status> Server::AddSurvivorSignatures(std::span<const SignatureFrom> batch) {
  const std::vector<uint8_t> verified = CheckAll(batch.size(), state_->threads, [&](size_t i) {
    return SurvivorSignatureVerifies(batch[i].site, batch[i].signature);
  });
  std::vector<Status> added;
  for (size_t i = 0; i < batch.size(); ++i)
    added.push_back(AddSurvivorSignature(batch[i].site, batch[i].signature, verified[i]));
  return added;
}

Status Server::AddSurvivorSignature(uint32_t site, const SecAggSurvivorSignature& signature,
                                    bool verifies) {
  State& s = *state_;
  FEDREC_RETURN_IF_ERROR(s.Expect(ServerStep::kSign, "AddSurvivorSignature"));
  FEDREC_ASSIGN_OR_RETURN(const uint32_t pos,
                          s.Sender(site, "survivor signature", &s.in_u3, "is not a survivor"));
  const std::string from = s.where + ": survivor signature from site " + Str(site);
  FEDREC_RETURN_IF_ERROR(s.CheckLabel(from, signature.round, signature.site, site));
  const Key32& identity_key = s.keys[pos]->identity_key;
  if (!verifies) {
    return Status::InvalidArgument(from + " does not verify under the site's identity key " +
                                   crypto::ToHex(identity_key).substr(0, 16) + "...");
  }
  s.signatures.push_back(SurvivorSignature{site, signature.signature});
  s.in_u4[pos] = 1;
  return Status::Ok();
}

Status Server::FinishSignatures() {
  State& s = *state_;
  FEDREC_RETURN_IF_ERROR(s.Expect(ServerStep::kSign, "FinishSignatures"));
  s.signers = s.Members(s.in_u4);
  std::sort(s.signatures.begin(), s.signatures.end(),
            [](const SurvivorSignature& a, const SurvivorSignature& b) { return a.site < b.site; });
  FEDREC_RETURN_IF_ERROR(
      s.Close(s.Count(s.in_u4), "signed the survivor list", ServerStep::kUnmask));
  if (s.signers.size() < Quorum(s.params)) {
    s.step = ServerStep::kAborted;
    return Status::Aborted(s.where + ": " + Str(s.signers.size()) +
                           " sites signed the survivor list, fewer than the quorum " +
                           Str(Quorum(s.params)) + " sites need before they reveal shares");
  }
  return Status::Ok();
}

SecAggUnmaskRequest Server::UnmaskRequest(bool with_signatures) const {
  SecAggUnmaskRequest request = SurvivorList();
  request.unmask = true;
  if (with_signatures) request.signatures = state_->signatures;
  return request;
}

Status Server::AddUnmaskShares(uint32_t site, const SecAggUnmaskShares& shares) {
  State& s = *state_;
  FEDREC_RETURN_IF_ERROR(s.Expect(ServerStep::kUnmask, "AddUnmaskShares"));
  FEDREC_ASSIGN_OR_RETURN(const uint32_t pos, s.Sender(site, "unmask shares", &s.in_u4,
                                                       "did not sign the survivor list"));
  const std::string from = s.where + ": unmask shares from site " + Str(site);
  FEDREC_RETURN_IF_ERROR(s.CheckLabel(from, shares.round, shares.site, site));
  // The holder reveals exactly: its shares of b for the survivors among it
  // and its neighbours, of s_sk for its dropped neighbours.
  std::vector<uint32_t> expected_seeds, expected_keys;
  std::vector<uint32_t> members = s.topology->Neighbours(pos);
  members.insert(std::upper_bound(members.begin(), members.end(), pos), pos);
  for (uint32_t q : members) {
    if (s.in_u3[q]) expected_seeds.push_back(q);
    if (q != pos && s.in_u2[q] && !s.in_u3[q]) expected_keys.push_back(q);
  }
  std::vector<std::pair<uint32_t, shamir::ShareValue>> seeds, mask_keys;
  const auto take = [&](const std::vector<RevealedShare>& revealed,
                        const std::vector<uint32_t>& expected, const char* what,
                        std::vector<std::pair<uint32_t, shamir::ShareValue>>* out) -> Status {
    std::vector<uint32_t> found;
    for (const RevealedShare& r : revealed) found.push_back(r.site);
    std::vector<uint32_t> wanted;
    for (uint32_t q : expected) wanted.push_back(s.params.sites[q]);
    if (found != wanted) {
      return Status::InvalidArgument(from + ": expected " + what + " shares of sites " +
                                     SiteList(wanted) + ", found shares of " + SiteList(found));
    }
    for (size_t i = 0; i < revealed.size(); ++i) {
      Result<shamir::ShareValue> value = shamir::Parse(revealed[i].share);
      if (!value.ok()) {
        return value.status().WithContext(from + ": the " + what + " share of site " +
                                          Str(revealed[i].site));
      }
      out->emplace_back(expected[i], *value);
    }
    return Status::Ok();
  };
  FEDREC_RETURN_IF_ERROR(take(shares.self_mask_shares, expected_seeds, "self-mask", &seeds));
  FEDREC_RETURN_IF_ERROR(take(shares.mask_key_shares, expected_keys, "mask-key", &mask_keys));
  for (const auto& [owner, value] : seeds) s.seed_shares[owner].push_back({pos + 1, value});
  for (const auto& [owner, value] : mask_keys) s.key_shares[owner].push_back({pos + 1, value});
  s.in_u5[pos] = 1;
  return Status::Ok();
}

Result<std::vector<uint64_t>> Server::Finish() {
  State& s = *state_;
  FEDREC_RETURN_IF_ERROR(s.Expect(ServerStep::kUnmask, "Finish"));
  if (s.sum_elsewhere)
    return Status::InvalidArgument(s.where + ": Finish, but the shard servers hold the sum");
  Result<std::vector<uint64_t>> result = s.Unmask();
  s.step = result.ok() ? ServerStep::kDone : ServerStep::kAborted;
  s.WipeShares();
  return result;
}

Result<std::vector<SignedPrgKey>> Server::FinishMasks() {
  State& s = *state_;
  FEDREC_RETURN_IF_ERROR(s.Expect(ServerStep::kUnmask, "FinishMasks"));
  Result<std::vector<SignedPrgKey>> result = s.Masks();
  s.step = result.ok() ? ServerStep::kDone : ServerStep::kAborted;
  s.WipeShares();
  return result;
}

void Server::State::WipeShares() {
  State& s = *this;
  for (auto* shares : {&s.seed_shares, &s.key_shares}) {
    for (std::vector<State::Held>& held : *shares) {
      for (State::Held& h : held) WipeValue(h.value);
      held.clear();
    }
  }
}

namespace {

// The masks to take from the running sum: the self masks of the survivors,
// and for each dropped site u and surviving neighbour v the mask v added for u.
// The key agreements for the dropped sites are split over `threads` threads
// (each dropped site's key is used by one thread only).
Result<std::vector<SignedPrgKey>> MasksToRemove(
    uint32_t round, std::span<const uint32_t> sites,
    const std::vector<std::pair<uint32_t, shamir::Secret>>& seeds,
    std::vector<std::pair<uint32_t, X25519Key>>& dropped_keys,
    const std::vector<std::vector<uint32_t>>& survivor_neighbours,
    const std::vector<std::optional<X25519Public>>& mask_keys, unsigned threads) {
  std::vector<SignedPrgKey> masks;
  for (const auto& [pos, seed] : seeds) {
    FEDREC_ASSIGN_OR_RETURN(PrgKey key, SelfMaskKey(seed, round, sites[pos]));
    masks.push_back(SignedPrgKey{key, /*subtract=*/true});
    WipeValue(key);
  }
  std::vector<std::vector<SignedPrgKey>> pairwise(dropped_keys.size());
  std::vector<Status> failures(dropped_keys.size());
  ParallelRanges(dropped_keys.size(), 1, threads, [&](size_t begin, size_t end) {
    for (size_t d = begin; d < end; ++d) {
      const uint32_t u = sites[dropped_keys[d].first];
      for (uint32_t pos_v : survivor_neighbours[d]) {
        const uint32_t v = sites[pos_v];
        Result<Key32> secret = dropped_keys[d].second.Agree(*mask_keys[pos_v]);
        if (!secret.ok()) {
          failures[d] =
              secret.status().WithContext("mask keys of sites " + Str(u) + " and " + Str(v));
          break;
        }
        Result<PrgKey> key = PairwiseKey(*secret, round, u, v);
        WipeValue(*secret);
        if (!key.ok()) {
          failures[d] = key.status();
          break;
        }
        // v added +PRG when v < u: take it away.
        pairwise[d].push_back(SignedPrgKey{*key, /*subtract=*/v < u});
        WipeValue(*key);
      }
    }
  });
  for (size_t d = 0; d < pairwise.size(); ++d) {
    masks.insert(masks.end(), pairwise[d].begin(), pairwise[d].end());
    Wipe(std::span(reinterpret_cast<uint8_t*>(pairwise[d].data()),
                   pairwise[d].size() * sizeof(SignedPrgKey)));
  }
  for (const Status& failure : failures) {
    if (failure.ok()) continue;
    Wipe(std::span(reinterpret_cast<uint8_t*>(masks.data()), masks.size() * sizeof(SignedPrgKey)));
    return failure;
  }
  return masks;
}

}  // namespace

Result<std::vector<uint64_t>> Server::State::Unmask() {
  FEDREC_ASSIGN_OR_RETURN(std::vector<SignedPrgKey> masks, Masks());
  std::vector<uint8_t> work = sum;
  MaskInPlace(work, params.ring_bits, masks, threads);
  Wipe(std::span(reinterpret_cast<uint8_t*>(masks.data()), masks.size() * sizeof(SignedPrgKey)));
  return RingWords(work, params.ring_bits);
}

Result<std::vector<SignedPrgKey>> Server::State::Masks() {
  const uint32_t t = params.threshold;
  if (Count(in_u5) < t) {
    return Status::Aborted(where + ": " + Str(Count(in_u5)) +
                           " survivors revealed shares, fewer than the threshold " + Str(t));
  }
  // Every secret needs t shares; check them all before the costly work.
  const auto enough = [&](const std::vector<uint32_t>& sites, const auto& shares_by_pos,
                          const std::string& secret) {
    for (uint32_t site : sites) {
      const size_t held = shares_by_pos[*PositionOf(params, site)].size();
      if (held < t) {
        return Status::Aborted(where + ": the " + secret + Str(site) + " has " + Str(held) +
                               " revealed shares, fewer than the threshold " + Str(t));
      }
    }
    return Status::Ok();
  };
  FEDREC_RETURN_IF_ERROR(enough(survivors, seed_shares, "self-mask seed of site "));
  FEDREC_RETURN_IF_ERROR(enough(dropped, key_shares, "mask key of dropped site "));

  // Reconstruction from the t lowest holders; the Lagrange coefficients are
  // computed once per holder set (with the complete graph there are few).
  // With a (t + 1)-th share the secret is also rebuilt from the last t of
  // those t + 1: both agree exactly when all t + 1 shares lie on one
  // polynomial of degree t - 1, so a bad share among them is detected.
  std::map<std::vector<uint32_t>, shamir::Interpolator> interpolators;
  const auto interpolate = [&](std::span<const Held> use) -> Result<shamir::Secret> {
    std::vector<uint32_t> xs(use.size());
    std::vector<shamir::ShareValue> ys(use.size());
    for (size_t i = 0; i < use.size(); ++i) {
      xs[i] = use[i].x;
      ys[i] = use[i].value;
    }
    auto it = interpolators.find(xs);
    if (it == interpolators.end()) {
      FEDREC_ASSIGN_OR_RETURN(shamir::Interpolator interpolator, shamir::Interpolator::Create(xs));
      it = interpolators.emplace(std::move(xs), std::move(interpolator)).first;
    }
    Result<shamir::Secret> secret = it->second.Reconstruct(ys);
    Wipe(std::span(reinterpret_cast<uint8_t*>(ys.data()), ys.size() * sizeof(shamir::ShareValue)));
    return secret;
  };
  // Whether `use` (t + 1 shares) lies on one polynomial.
  const auto consistent = [&](std::span<const Held> use) {
    Result<shamir::Secret> first = interpolate(use.first(t));
    Result<shamir::Secret> last = interpolate(use.last(t));
    const bool same = first.ok() && last.ok() && *first == *last;
    if (first.ok()) WipeValue(*first);
    if (last.ok()) WipeValue(*last);
    return same;
  };
  const auto reconstruct = [&](std::vector<Held>& held) -> Result<shamir::Secret> {
    std::sort(held.begin(), held.end(), [](const Held& a, const Held& b) { return a.x < b.x; });
    const std::span<const Held> all(held);
    if (held.size() > t && !consistent(all.first(t + 1))) {
      // Name the holder whose removal leaves t + 1 consistent shares.
      std::vector<uint32_t> suspects;
      for (size_t i = 0; i <= t && held.size() > t + 1; ++i) {
        std::vector<Held> rest(all.begin(), all.begin() + t + 2);
        rest.erase(rest.begin() + static_cast<std::ptrdiff_t>(i));
        if (consistent(rest)) suspects.push_back(params.sites[held[i].x - 1]);
        for (Held& h : rest) WipeValue(h.value);
      }
      if (suspects.size() == 1) {
        return Status::Corruption("the revealed share of site " + Str(suspects[0]) +
                                  " is inconsistent with the other holders' shares: a bad share");
      }
      std::vector<uint32_t> holders;
      for (size_t i = 0; i <= t; ++i) holders.push_back(params.sites[held[i].x - 1]);
      return Status::Corruption("the revealed shares of sites " + SiteList(holders) +
                                " are inconsistent (a bad share among them)");
    }
    return interpolate(all.first(t));
  };

  std::vector<std::pair<uint32_t, shamir::Secret>> seeds;
  for (uint32_t site : survivors) {
    const uint32_t pos = *PositionOf(params, site);
    Result<shamir::Secret> seed = reconstruct(seed_shares[pos]);
    if (!seed.ok()) {
      return seed.status().WithContext(where + ": reconstructing the self-mask seed of site " +
                                       Str(site));
    }
    seeds.emplace_back(pos, *seed);
  }
  // The survivors' mask keys, loaded once for all the dropped sites.
  std::vector<std::optional<X25519Public>> survivor_keys(n);
  for (size_t pos = 0; pos < n; ++pos) {
    if (!in_u3[pos]) continue;
    FEDREC_ASSIGN_OR_RETURN(survivor_keys[pos], X25519Public::Load(keys[pos]->mask_key));
  }
  std::vector<std::pair<uint32_t, X25519Key>> dropped_keys;
  std::vector<std::vector<uint32_t>> survivor_neighbours;
  for (uint32_t site : dropped) {
    const uint32_t pos = *PositionOf(params, site);
    Result<shamir::Secret> private_key = reconstruct(key_shares[pos]);
    if (!private_key.ok()) {
      return private_key.status().WithContext(where + ": reconstructing the mask key of site " +
                                              Str(site));
    }
    Result<X25519Key> key = X25519Key::Load(*private_key);
    WipeValue(*private_key);
    if (!key.ok()) return key.status();
    // A bad share (from a faulty or malicious holder) yields another key.
    if (key->public_key() != keys[pos]->mask_key) {
      std::vector<uint32_t> holders;  // reconstruct() used the first t, sorted
      for (uint32_t i = 0; i < t; ++i) holders.push_back(params.sites[key_shares[pos][i].x - 1]);
      return Status::Corruption(where + ": the mask key of dropped site " + Str(site) +
                                " reconstructed from the shares of sites " + SiteList(holders) +
                                " does not match the key it advertised: a revealed share is bad");
    }
    std::vector<uint32_t> neighbours;
    for (uint32_t q : topology->Neighbours(pos))
      if (in_u3[q]) neighbours.push_back(q);
    dropped_keys.emplace_back(pos, std::move(key).value());
    survivor_neighbours.push_back(std::move(neighbours));
  }

  Result<std::vector<SignedPrgKey>> masks = MasksToRemove(
      params.round, params.sites, seeds, dropped_keys, survivor_neighbours, survivor_keys, threads);
  for (auto& [pos, seed] : seeds) WipeValue(seed);
  if (!masks.ok()) return masks.status().WithContext(where + ": unmasking");
  return masks;
}

}  // namespace fedrec::secagg
