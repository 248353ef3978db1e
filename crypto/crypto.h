// Cryptographic primitives of fedrec, all through OpenSSL 3 EVP:
// Ed25519 identities, X25519 key agreement, HKDF-SHA256, AES-256-GCM sealing
// and AES-128-CTR keystreams, and the OS CSPRNG.
//
// Every key, mask seed and secret-sharing coefficient comes from RandomBytes
// (OpenSSL RAND, seeded by the OS), never from the run seed: only training and
// stochastic rounding use the seeded streams of base/random.h.
//
// Thread-safety: free functions are thread-safe. Aes256Gcm and Keystream
// objects are not; use one per thread.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace fedrec::crypto {

using Key32 = std::array<uint8_t, 32>;
using Signature = std::array<uint8_t, 64>;
constexpr size_t kGcmNonceSize = 12;
constexpr size_t kGcmTagSize = 16;

// Fills `out` from the OS CSPRNG. Internal error only when OpenSSL's generator
// cannot be seeded.
Status RandomBytes(std::span<uint8_t> out);
Result<Key32> RandomKey();

// Overwrites `bytes` in a way the compiler cannot elide.
void Cleanse(std::span<uint8_t> bytes);

// --- Ed25519 identities ---
struct LoadedSigningKey;  // OpenSSL's form of the key (crypto.cc)
struct SigningKey {
  Key32 private_key{};  // the 32-byte seed
  Key32 public_key{};
  // The key as OpenSSL loaded it (GenerateSigningKey, SigningKeyFromPrivate):
  // Sign then skips loading it again, which costs a scalar multiplication as
  // large as the signature's. Used only while it holds private_key; shared by
  // copies.
  std::shared_ptr<const LoadedSigningKey> loaded;
};
Result<SigningKey> GenerateSigningKey();
Result<SigningKey> SigningKeyFromPrivate(const Key32& private_key);
// Whether key.public_key is the public key of key.private_key. A key that
// carries its loaded form (and still holds the private key it was loaded
// from) is checked against the public key derived then, without deriving it
// again (a scalar multiplication).
bool PublicKeyMatches(const SigningKey& key);
Result<Signature> Sign(const SigningKey& key, std::span<const uint8_t> message);
// False for a bad signature or a malformed public key.
bool Verify(const Key32& public_key, std::span<const uint8_t> message, const Signature& signature);

// --- X25519 ---
struct DhKeyPair {
  Key32 private_key{};
  Key32 public_key{};
};

// An X25519 public key loaded once, for agreements with many private keys.
class X25519Public {
 public:
  static Result<X25519Public> Load(const Key32& public_key);
  X25519Public(X25519Public&&) noexcept;
  X25519Public& operator=(X25519Public&&) noexcept;
  ~X25519Public();

 private:
  friend class X25519Key;
  X25519Public();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// An X25519 private key loaded once for any number of agreements. Loading
// derives the public key (a scalar multiplication as large as an
// agreement's), so a key loaded once and kept costs one multiplication per
// agreement where DhSharedSecret costs two. OpenSSL clears the private key
// when the object goes. Not thread-safe: one context serves every peer.
class X25519Key {
 public:
  // A fresh key from the OS CSPRNG.
  static Result<X25519Key> Generate();
  static Result<X25519Key> Load(const Key32& private_key);
  X25519Key(X25519Key&&) noexcept;
  X25519Key& operator=(X25519Key&&) noexcept;
  ~X25519Key();

  const Key32& public_key() const;
  // The raw shared secret; InvalidArgument for a low-order peer key (the
  // all-zero secret).
  Result<Key32> Agree(const Key32& peer_public_key);
  Result<Key32> Agree(const X25519Public& peer);

 private:
  X25519Key();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};
Result<DhKeyPair> GenerateDhKey();
Result<Key32> DhPublicKey(const Key32& private_key);
// The shared secret; InvalidArgument for a low-order peer key (all-zero secret).
Result<Key32> DhSharedSecret(const Key32& private_key, const Key32& peer_public_key);

// --- SHA-256 ---
// SHA-256 of the concatenation of `parts`. Uses a digest fetched once and a
// per-thread context, so hashing many small messages (Merkle proofs,
// transcripts) costs the hash, not an algorithm lookup per call.
Key32 Sha256(std::span<const std::span<const uint8_t>> parts);
inline Key32 Sha256(std::span<const uint8_t> data) {
  const std::span<const uint8_t> parts[] = {data};
  return Sha256(parts);
}

// --- HKDF-SHA256 (RFC 5869): extract with `salt`, expand with `info` ---
Status Hkdf(std::span<const uint8_t> secret, std::span<const uint8_t> salt, std::string_view info,
            std::span<uint8_t> out);

// The key two parties agree on: HKDF-SHA256 of their X25519 secret with
// `salt` and `info` binding it to its use. The secret is cleansed.
Result<Key32> AgreeKey(const Key32& private_key, const Key32& peer_public_key,
                       std::span<const uint8_t> salt, std::string_view info);

// --- AES-256-GCM with a 96-bit nonce and a 128-bit tag ---
class Aes256Gcm {
 public:
  explicit Aes256Gcm(const Key32& key);
  ~Aes256Gcm();
  Aes256Gcm(const Aes256Gcm&) = delete;
  Aes256Gcm& operator=(const Aes256Gcm&) = delete;

  // Encrypts `data` in place and writes the tag.
  Status Seal(std::span<const uint8_t, kGcmNonceSize> nonce, std::span<const uint8_t> aad,
              std::span<uint8_t> data, std::span<uint8_t, kGcmTagSize> tag);
  // Decrypts `data` in place; Corruption when the tag does not verify (then
  // `data` holds garbage and must be discarded).
  Status Open(std::span<const uint8_t, kGcmNonceSize> nonce, std::span<const uint8_t> aad,
              std::span<uint8_t> data, std::span<const uint8_t, kGcmTagSize> tag);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Seals `plaintext` under a one-time key (nonce zero is safe because each key
// seals one message): returns ciphertext || tag. Used for the Shamir shares and
// keys that sites send each other through the coordinator.
Result<std::vector<uint8_t>> SealOnce(const Key32& key, std::span<const uint8_t> aad,
                                      std::span<const uint8_t> plaintext);
Result<std::vector<uint8_t>> OpenOnce(const Key32& key, std::span<const uint8_t> aad,
                                      std::span<const uint8_t> sealed);

// --- AES-128-CTR keystream: the PRG that expands mask seeds ---
// X25519 gives about 128-bit security, so a 128-bit cipher key loses nothing
// and is the fastest AES. The stream for a key starts at counter zero; one
// built with `first_block` starts at byte 16 * first_block of that stream.
class Keystream {
 public:
  explicit Keystream(std::span<const uint8_t, 16> key, uint64_t first_block = 0);
  ~Keystream();
  Keystream(const Keystream&) = delete;
  Keystream& operator=(const Keystream&) = delete;

  // The next out.size() bytes of the stream.
  void Generate(std::span<uint8_t> out);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Hex helpers for keys in configs and key files.
std::string ToHex(std::span<const uint8_t> bytes);
// InvalidArgument naming `what` when `hex` is not exactly 64 hex digits.
Result<Key32> Key32FromHex(std::string_view hex, std::string_view what);

}  // namespace fedrec::crypto
