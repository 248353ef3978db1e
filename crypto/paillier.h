// Paillier additively homomorphic encryption (OpenSSL BIGNUM underneath) with
// packing of many fixed-point values into one plaintext.
//
// Roles in fedrec (crypto/paillier_round.h): no party holds the private key
// in normal operation. A dealer site generates the key once, deals t-of-n
// shares of the decryption exponent (PaillierKeyShare::Deal) and wipes the
// factors; each site encrypts with the public key; each decrypting site
// multiplies the round's ciphertexts itself and returns a partial decryption;
// the coordinator combines t of them (CombinePartialDecryptions).
// PaillierPrivateKey remains for the dealer, tests and benchmarks.
//
// Scheme: n = p q with p, q random primes of equal size and
// gcd(n, (p-1)(q-1)) = 1, g = n + 1, so g^m = 1 + m n (mod n^2).
//   Enc(m) = (1 + m n) r^n mod n^2,  r uniform in Z*_n
//   Add(c1, c2) = c1 c2 mod n^2      decrypts to m1 + m2 mod n
//   Dec(c) by CRT: L_p(c^(p-1) mod p^2) hp mod p and the same mod q.
// Holders of the private key encrypt with a CRT fast path whose ciphertexts have
// exactly the same distribution as textbook encryption (see paillier.cc).
//
// Byte formats (all integers big-endian):
//   plaintext   an integer in [0, n) as plaintext_size() = bytes(n) bytes
//               (single-value calls accept any length, leading zeros allowed)
//   ciphertext  an integer in [1, n^2) as exactly ciphertext_size() =
//               bytes(n^2) bytes; a vector of ciphertexts is their
//               concatenation, one flat std::vector<uint8_t>
//   public key  "FPK1" | u16 len(n) | n
//   private key "FSK1" | u16 len(p) | p | u16 len(q) | q   (secret!)
// Parsing a key checks its structure and its arithmetic (sizes, primality of p
// and q, gcd(n, (p-1)(q-1)) = 1) and returns Corruption naming what is wrong.
// Ciphertexts are checked to lie in [1, n^2); a ciphertext that is in range but
// not a unit mod n^2 (only a malicious sender can produce one) decrypts to an
// arbitrary value instead of an error.
//
// Thread-safety: PaillierPublicKey, PaillierPrivateKey and PaillierPacker are
// immutable after construction; copies share the key material, and every const
// method may be called from many threads at once (each call uses its own
// BN_CTX and temporaries; randomness comes from OpenSSL's per-thread private
// DRBG, seeded by the OS). To parallelise the encryption of a long vector, split
// the plaintexts into chunks and call EncryptManyInto on disjoint slices of one
// output buffer. A PaillierAccumulator is not thread-safe: use one per thread
// (e.g. per range of ciphertext indices) or synchronise externally.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "base/status.h"

namespace fedrec {

// Modulus sizes accepted by Generate and FromBytes. Anything below 2048 bits is
// for tests only: it gives well under 112-bit security, and sites refuse it
// (kPaillierSiteMinModulusBits).
constexpr int kPaillierDefaultModulusBits = 2048;
constexpr int kPaillierSiteMinModulusBits = 2048;
constexpr int kPaillierMinModulusBits = 256;
constexpr int kPaillierMaxModulusBits = 8192;

class PaillierKeyShare;

class PaillierPublicKey {
 public:
  // Parses the public-key format above; Corruption on a wrong magic, a
  // truncated or oversized field, trailing bytes, an even modulus or a modulus
  // size outside [kPaillierMinModulusBits, kPaillierMaxModulusBits].
  static Result<PaillierPublicKey> FromBytes(std::span<const uint8_t> bytes);
  std::vector<uint8_t> ToBytes() const;

  int modulus_bits() const;        // bits(n)
  size_t plaintext_size() const;   // bytes(n)
  size_t ciphertext_size() const;  // bytes(n^2)
  // n as plaintext_size() big-endian bytes (e.g. to fingerprint the key).
  std::vector<uint8_t> Modulus() const;

  // Textbook encryption of one big-endian plaintext (any length, value < n).
  // InvalidArgument when the value is >= n.
  Result<std::vector<uint8_t>> Encrypt(std::span<const uint8_t> plaintext) const;
  // Encrypts plaintexts.size() / plaintext_size() fixed-width plaintexts into
  // `out`, which must hold exactly as many ciphertexts. InvalidArgument when a
  // size does not fit or a plaintext is >= n (naming its index); `out` is then
  // partially written and must be discarded.
  Status EncryptManyInto(std::span<const uint8_t> plaintexts, std::span<uint8_t> out) const;
  Result<std::vector<uint8_t>> EncryptMany(std::span<const uint8_t> plaintexts) const;

  // The homomorphic sum of two ciphertexts. Corruption when either is not
  // ciphertext_size() bytes or not in [1, n^2).
  Result<std::vector<uint8_t>> Add(std::span<const uint8_t> a, std::span<const uint8_t> b) const;

  // True when both keys have the same modulus.
  bool operator==(const PaillierPublicKey& other) const;

 private:
  friend class PaillierPrivateKey;
  friend class PaillierAccumulator;
  friend class PaillierKeyShare;
  friend Result<std::vector<uint8_t>> CombinePartialDecryptions(
      const PaillierPublicKey&, uint32_t, uint32_t, std::span<const uint32_t>,
      std::span<const std::span<const uint8_t>>);
  struct Impl;
  explicit PaillierPublicKey(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

class PaillierPrivateKey {
 public:
  // A fresh key pair whose modulus has exactly `modulus_bits` bits (even, in
  // [kPaillierMinModulusBits, kPaillierMaxModulusBits]; InvalidArgument
  // otherwise). About 0.1-1 s for 2048 bits; primes come from the OS CSPRNG.
  static Result<PaillierPrivateKey> Generate(int modulus_bits = kPaillierDefaultModulusBits);
  // Parses the private-key format above (see the checks in the file comment).
  static Result<PaillierPrivateKey> FromBytes(std::span<const uint8_t> bytes);
  // Secret: send only over an authenticated, encrypted channel.
  std::vector<uint8_t> ToBytes() const;

  const PaillierPublicKey& public_key() const;

  // Encryption through the CRT fast path (3.5-4x faster than the textbook
  // PaillierPublicKey::Encrypt at 2048 bits, same ciphertext distribution).
  // Same contracts as the PaillierPublicKey methods of the same names.
  Result<std::vector<uint8_t>> Encrypt(std::span<const uint8_t> plaintext) const;
  Status EncryptManyInto(std::span<const uint8_t> plaintexts, std::span<uint8_t> out) const;
  Result<std::vector<uint8_t>> EncryptMany(std::span<const uint8_t> plaintexts) const;

  // CRT decryption to a plaintext_size() big-endian plaintext. Corruption when
  // the ciphertext is not ciphertext_size() bytes or not in [1, n^2).
  Result<std::vector<uint8_t>> Decrypt(std::span<const uint8_t> ciphertext) const;
  // Decrypts ciphertexts.size() / ciphertext_size() ciphertexts into `out`
  // (that many plaintext_size() plaintexts). Errors name the ciphertext index.
  Status DecryptManyInto(std::span<const uint8_t> ciphertexts, std::span<uint8_t> out) const;
  Result<std::vector<uint8_t>> DecryptMany(std::span<const uint8_t> ciphertexts) const;

 private:
  friend class PaillierKeyShare;
  struct Impl;
  explicit PaillierPrivateKey(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

// --- Threshold decryption (Shoup 2000 / Damgard-Jurik 2001 with s = 1) ---
//
// The dealer picks n = p q, lambda = lcm(p - 1, q - 1) and the decryption
// exponent d with d = 0 mod lambda and d = 1 mod n, so c^d = 1 + m n mod n^2
// for any encryption c of m. It shares Delta d, Delta = parties!, with a random
// integer polynomial f of degree threshold - 1 (Shamir over the integers: no
// party, not even the dealer after dealing, needs the group order): party i
// (1-based) gets s_i = f(i). The coefficients are uniform below
// 2^(2 bits(n) + bits(Delta) + (threshold - 1) bits(parties + 1) + 128), which
// makes any threshold - 1 shares statistically independent of d (distance at
// most threshold 2^-128: shifting f by an integer polynomial that vanishes at
// their points moves each coefficient by less than 2^-128 of its range).
//
// Partial decryption by party i: c_i = c^(2 Delta s_i) mod n^2 (constant
// time in the secret exponent). Any `threshold` partials combine with the
// integer Lagrange coefficients mu_j = Delta prod_{k != j} k / (k - j) into
// prod c_j^(2 mu_j) = c^(4 Delta^3 d) = 1 + 4 Delta^3 m n, hence m. Fewer
// partials give nothing (they are powers of c by exponents independent of d).
// A combined value that is not 1 mod n proves a wrong partial; a partial
// shifted by a multiple of n shifts the result undetected (no proofs of
// correct decryption yet), which the packed decoding catches unless crafted.
//
// Byte format of a share (secret!): "FTS1" | u16 len(n) | n | u32 index |
// u32 parties | u32 threshold | u16 len(s) | s, integers big-endian.
class PaillierKeyShare {
 public:
  // Largest `parties` Deal accepts (Delta = parties! enters the exponents).
  static constexpr uint32_t kMaxParties = 1000;

  // Generates a fresh key of `modulus_bits` (as PaillierPrivateKey::Generate)
  // and deals shares for parties 1..parties, returned in that order. p, q,
  // lambda, d and the polynomial are wiped before returning: the dealer keeps
  // only shares. InvalidArgument when threshold is not in [1, parties] or
  // parties exceeds kMaxParties.
  static Result<std::vector<PaillierKeyShare>> Deal(int modulus_bits, uint32_t parties,
                                                    uint32_t threshold);
  // Shares `key`'s decryption exponent (tests: compare with the plain key).
  static Result<std::vector<PaillierKeyShare>> DealFrom(const PaillierPrivateKey& key,
                                                        uint32_t parties, uint32_t threshold);

  // Parses the format above; Corruption naming the field that is wrong.
  static Result<PaillierKeyShare> FromBytes(std::span<const uint8_t> bytes);
  // Secret: send only sealed to its party; wipe the bytes after use.
  std::vector<uint8_t> ToBytes() const;

  const PaillierPublicKey& public_key() const;
  uint32_t index() const;  // the party's x-coordinate, 1-based
  uint32_t parties() const;
  uint32_t threshold() const;

  // c^(2 Delta s_i) mod n^2 of each of ciphertexts.size() / ciphertext_size()
  // ciphertexts, concatenated (each ciphertext_size() bytes). Corruption
  // naming the index when a ciphertext is not in [1, n^2).
  Result<std::vector<uint8_t>> PartialDecryptMany(std::span<const uint8_t> ciphertexts) const;

 private:
  struct Impl;
  explicit PaillierKeyShare(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

// Combines the partial decryptions of the same ciphertexts by the parties at
// `indices` (distinct, in [1, parties]; the first `threshold` are used when
// more are given) into the plaintexts, each
// plaintext_size() bytes, concatenated. InvalidArgument when there are fewer
// than `threshold` partials, indices repeat or lie outside [1, parties], or
// the vectors differ in size; Corruption naming the ciphertext index when the
// combination is not 1 mod n (a wrong partial decryption).
Result<std::vector<uint8_t>> CombinePartialDecryptions(
    const PaillierPublicKey& key, uint32_t parties, uint32_t threshold,
    std::span<const uint32_t> indices, std::span<const std::span<const uint8_t>> partials);

// Sums vectors of ciphertexts homomorphically: the coordinator's hot path.
// Adding one ciphertext costs one Montgomery multiplication mod n^2 (no
// division, no conversion); Sums() pays one more per element.
class PaillierAccumulator {
 public:
  // `count` running sums, each starting at the ciphertext 1 (an encryption of
  // zero with r = 1, the identity of the homomorphic addition).
  // Allocation is deferred to the first Add. A moved-from accumulator may
  // only be destroyed or assigned to.
  PaillierAccumulator(PaillierPublicKey key, size_t count);
  ~PaillierAccumulator();
  PaillierAccumulator(PaillierAccumulator&&) noexcept;
  PaillierAccumulator& operator=(PaillierAccumulator&&) noexcept;
  PaillierAccumulator(const PaillierAccumulator&) = delete;
  PaillierAccumulator& operator=(const PaillierAccumulator&) = delete;

  // Adds `ciphertexts` (exactly count() flat ciphertexts) element-wise into the
  // running sums. All-or-nothing: Corruption (naming the index) when the size
  // is wrong or a ciphertext is not in [1, n^2), and then nothing was added.
  Status Add(std::span<const uint8_t> ciphertexts);

  size_t count() const;
  // How many successful Add calls have been made.
  int additions() const;
  // The current sums as count() flat ciphertexts (Internal only when OpenSSL
  // cannot allocate).
  Result<std::vector<uint8_t>> Sums() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// --- Packing of signed fixed-point values ---

// Values are integers in [-2^(value_bits-1), 2^(value_bits-1)); up to
// max_additions packed ciphertexts may be summed before decoding.
struct PackingParams {
  int value_bits = 0;     // b, in [1, 62]
  int max_additions = 0;  // >= 1
};

// Encodes values into plaintexts: slot i of a plaintext holds
// value + 2^(b-1) (in [0, 2^b)) at bit offset i * slot_bits, where
// slot_bits = b + headroom and headroom = ceil(log2(max_additions + 1)), so the
// sum of up to max_additions plaintexts never carries from one slot into the
// next. slots_per_plaintext = floor((modulus_bits - 1) / slot_bits) keeps every
// plaintext and every such sum below 2^(modulus_bits-1) < n.
class PaillierPacker {
 public:
  // InvalidArgument when value_bits is not in [1, 62], max_additions < 1,
  // slot_bits > 63 (sums must fit an int64) or modulus_bits < slot_bits + 1.
  static Result<PaillierPacker> Create(const PackingParams& params, int modulus_bits);

  const PackingParams& params() const { return params_; }
  int headroom_bits() const { return headroom_bits_; }
  int slot_bits() const { return slot_bits_; }
  size_t slots_per_plaintext() const { return slots_; }
  size_t plaintext_size() const { return plaintext_size_; }
  // ceil(num_values / slots_per_plaintext()).
  size_t NumPlaintexts(size_t num_values) const;

  // NumPlaintexts(values.size()) flat plaintexts; the unused slots of the last
  // one are zero. InvalidArgument naming the index and the value when a value
  // is out of range.
  Result<std::vector<uint8_t>> Encode(std::span<const int64_t> values) const;
  // The `num_values` signed sums packed in the decrypted sum of `additions`
  // packed ciphertexts (`additions` = 0 decodes the empty sum, all zeros).
  // InvalidArgument when additions is not in [0, max_additions] or the bytes
  // are not NumPlaintexts(num_values) plaintexts; Corruption when a slot holds
  // more than `additions` encodings can, or a slot past num_values or a bit
  // above the slots is set (wrong key, parameters, count or num_values).
  Result<std::vector<int64_t>> Decode(std::span<const uint8_t> plaintexts, size_t num_values,
                                      int additions) const;

 private:
  PaillierPacker() = default;
  PackingParams params_;
  int headroom_bits_ = 0;
  int slot_bits_ = 0;
  size_t slots_ = 0;
  size_t plaintext_size_ = 0;
};

// Packs `values` and encrypts them: NumPlaintexts(values.size()) flat
// ciphertexts. The private-key overload uses the CRT fast path.
Result<std::vector<uint8_t>> EncryptPacked(const PaillierPrivateKey& key,
                                           std::span<const int64_t> values,
                                           const PackingParams& params);
Result<std::vector<uint8_t>> EncryptPacked(const PaillierPublicKey& key,
                                           std::span<const int64_t> values,
                                           const PackingParams& params);
// Decrypts the sum of `additions` packed ciphertext vectors and returns the
// `num_values` exact signed sums (errors as in Decrypt and Decode).
Result<std::vector<int64_t>> DecryptPacked(const PaillierPrivateKey& key,
                                           std::span<const uint8_t> ciphertexts, size_t num_values,
                                           int additions, const PackingParams& params);

}  // namespace fedrec
