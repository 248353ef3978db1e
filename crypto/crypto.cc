#include "crypto/crypto.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <cstring>

namespace fedrec::crypto {

namespace {

struct PkeyDeleter {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct PkeyCtxDeleter {
  void operator()(EVP_PKEY_CTX* p) const { EVP_PKEY_CTX_free(p); }
};
struct MdCtxDeleter {
  void operator()(EVP_MD_CTX* p) const { EVP_MD_CTX_free(p); }
};
struct CipherCtxDeleter {
  void operator()(EVP_CIPHER_CTX* p) const { EVP_CIPHER_CTX_free(p); }
};
struct KdfCtxDeleter {
  void operator()(EVP_KDF_CTX* p) const { EVP_KDF_CTX_free(p); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyDeleter>;
using PkeyCtx = std::unique_ptr<EVP_PKEY_CTX, PkeyCtxDeleter>;
using MdCtx = std::unique_ptr<EVP_MD_CTX, MdCtxDeleter>;
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxDeleter>;
using KdfCtx = std::unique_ptr<EVP_KDF_CTX, KdfCtxDeleter>;

// The OpenSSL error queue as text, emptied.
std::string OpenSslError(const char* what) {
  std::string message = std::string(what) + " failed";
  unsigned long code;
  while ((code = ERR_get_error()) != 0) {
    char buffer[256];
    ERR_error_string_n(code, buffer, sizeof(buffer));
    message += std::string(": ") + buffer;
  }
  return message;
}

Pkey RawPrivate(int type, const Key32& key) {
  return Pkey(EVP_PKEY_new_raw_private_key(type, nullptr, key.data(), key.size()));
}

Pkey RawPublic(int type, const Key32& key) {
  return Pkey(EVP_PKEY_new_raw_public_key(type, nullptr, key.data(), key.size()));
}

Result<Key32> PublicOf(const EVP_PKEY* pkey, const char* what) {
  Key32 out;
  size_t length = out.size();
  if (EVP_PKEY_get_raw_public_key(pkey, out.data(), &length) != 1 || length != out.size())
    return Status::Internal(OpenSslError(what));
  return out;
}

// Processes `in` (which may alias `out`) in pieces below INT_MAX bytes.
bool CipherUpdate(EVP_CIPHER_CTX* ctx, uint8_t* out, const uint8_t* in, size_t size, bool encrypt) {
  constexpr size_t kPiece = size_t{1} << 30;
  while (size > 0) {
    const int piece = static_cast<int>(std::min(size, kPiece));
    int written = 0;
    const int ok = encrypt ? EVP_EncryptUpdate(ctx, out, &written, in, piece)
                           : EVP_DecryptUpdate(ctx, out, &written, in, piece);
    if (ok != 1 || written != piece) return false;
    out += piece;
    in += piece;
    size -= static_cast<size_t>(piece);
  }
  return true;
}

bool AadUpdate(EVP_CIPHER_CTX* ctx, std::span<const uint8_t> aad, bool encrypt) {
  if (aad.empty()) return true;
  int written = 0;
  const int ok =
      encrypt ? EVP_EncryptUpdate(ctx, nullptr, &written, aad.data(), static_cast<int>(aad.size()))
              : EVP_DecryptUpdate(ctx, nullptr, &written, aad.data(), static_cast<int>(aad.size()));
  return ok == 1;
}

}  // namespace

Status RandomBytes(std::span<uint8_t> out) {
  while (!out.empty()) {
    const size_t piece = std::min<size_t>(out.size(), INT_MAX);
    if (RAND_bytes(out.data(), static_cast<int>(piece)) != 1)
      return Status::Internal(OpenSslError("RAND_bytes (OS CSPRNG)"));
    out = out.subspan(piece);
  }
  return Status::Ok();
}

Result<Key32> RandomKey() {
  Key32 key;
  FEDREC_RETURN_IF_ERROR(RandomBytes(key));
  return key;
}

void Cleanse(std::span<uint8_t> bytes) { OPENSSL_cleanse(bytes.data(), bytes.size()); }

Result<SigningKey> GenerateSigningKey() {
  FEDREC_ASSIGN_OR_RETURN(Key32 seed, RandomKey());
  Result<SigningKey> key = SigningKeyFromPrivate(seed);
  Cleanse(seed);
  return key;
}

struct LoadedSigningKey {
  Key32 private_key{};  // what `pkey` was loaded from
  Key32 public_key{};   // what OpenSSL derived from it
  Pkey pkey;            // OpenSSL clears the key when it frees it
  ~LoadedSigningKey() { Cleanse(private_key); }
};

Result<SigningKey> SigningKeyFromPrivate(const Key32& private_key) {
  auto loaded = std::make_shared<LoadedSigningKey>();
  loaded->private_key = private_key;
  loaded->pkey = RawPrivate(EVP_PKEY_ED25519, private_key);
  if (!loaded->pkey) return Status::InvalidArgument(OpenSslError("loading an Ed25519 private key"));
  SigningKey key;
  key.private_key = private_key;
  FEDREC_ASSIGN_OR_RETURN(key.public_key, PublicOf(loaded->pkey.get(), "Ed25519 public key"));
  loaded->public_key = key.public_key;
  key.loaded = std::move(loaded);
  return key;
}

bool PublicKeyMatches(const SigningKey& key) {
  if (key.loaded && CRYPTO_memcmp(key.loaded->private_key.data(), key.private_key.data(),
                                  key.private_key.size()) == 0) {
    return key.loaded->public_key == key.public_key;
  }
  Result<SigningKey> derived = SigningKeyFromPrivate(key.private_key);
  return derived.ok() && derived->public_key == key.public_key;
}

Result<Signature> Sign(const SigningKey& key, std::span<const uint8_t> message) {
  // EVP_PKEY is safe to sign with from several threads at once.
  const bool use_loaded =
      key.loaded && CRYPTO_memcmp(key.loaded->private_key.data(), key.private_key.data(),
                                  key.private_key.size()) == 0;
  Pkey own;
  if (!use_loaded) own = RawPrivate(EVP_PKEY_ED25519, key.private_key);
  EVP_PKEY* pkey = use_loaded ? key.loaded->pkey.get() : own.get();
  MdCtx ctx(EVP_MD_CTX_new());
  if (!pkey || !ctx || EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, pkey) != 1)
    return Status::Internal(OpenSslError("Ed25519 sign init"));
  Signature signature;
  size_t length = signature.size();
  if (EVP_DigestSign(ctx.get(), signature.data(), &length, message.data(), message.size()) != 1 ||
      length != signature.size())
    return Status::Internal(OpenSslError("Ed25519 sign"));
  return signature;
}

bool Verify(const Key32& public_key, std::span<const uint8_t> message, const Signature& signature) {
  Pkey pkey = RawPublic(EVP_PKEY_ED25519, public_key);
  MdCtx ctx(EVP_MD_CTX_new());
  if (!pkey || !ctx ||
      EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, pkey.get()) != 1) {
    ERR_clear_error();
    return false;
  }
  const bool ok = EVP_DigestVerify(ctx.get(), signature.data(), signature.size(), message.data(),
                                   message.size()) == 1;
  ERR_clear_error();
  return ok;
}

struct X25519Public::Impl {
  Pkey pkey;
};
X25519Public::X25519Public() : impl_(std::make_unique<Impl>()) {}
X25519Public::X25519Public(X25519Public&&) noexcept = default;
X25519Public& X25519Public::operator=(X25519Public&&) noexcept = default;
X25519Public::~X25519Public() = default;

Result<X25519Public> X25519Public::Load(const Key32& public_key) {
  X25519Public key;
  key.impl_->pkey = RawPublic(EVP_PKEY_X25519, public_key);
  if (!key.impl_->pkey)
    return Status::InvalidArgument(OpenSslError("loading an X25519 public key"));
  return key;
}

struct X25519Key::Impl {
  Pkey pkey;  // OpenSSL clears the private key when it frees it
  PkeyCtx ctx;
  Key32 public_key{};
};
X25519Key::X25519Key() : impl_(std::make_unique<Impl>()) {}
X25519Key::X25519Key(X25519Key&&) noexcept = default;
X25519Key& X25519Key::operator=(X25519Key&&) noexcept = default;
X25519Key::~X25519Key() = default;

Result<X25519Key> X25519Key::Load(const Key32& private_key) {
  X25519Key key;
  Impl& k = *key.impl_;
  k.pkey = RawPrivate(EVP_PKEY_X25519, private_key);
  if (!k.pkey) return Status::InvalidArgument(OpenSslError("loading an X25519 private key"));
  FEDREC_ASSIGN_OR_RETURN(k.public_key, PublicOf(k.pkey.get(), "X25519 public key"));
  k.ctx.reset(EVP_PKEY_CTX_new(k.pkey.get(), nullptr));
  if (!k.ctx || EVP_PKEY_derive_init(k.ctx.get()) != 1)
    return Status::Internal(OpenSslError("X25519 agreement set-up"));
  return key;
}

Result<X25519Key> X25519Key::Generate() {
  FEDREC_ASSIGN_OR_RETURN(Key32 private_key, RandomKey());
  Result<X25519Key> key = Load(private_key);
  Cleanse(private_key);
  return key;
}

const Key32& X25519Key::public_key() const { return impl_->public_key; }

Result<Key32> X25519Key::Agree(const Key32& peer_public_key) {
  FEDREC_ASSIGN_OR_RETURN(const X25519Public peer, X25519Public::Load(peer_public_key));
  return Agree(peer);
}

Result<Key32> X25519Key::Agree(const X25519Public& peer) {
  Key32 secret;
  size_t length = secret.size();
  // Peer validation is skipped: any 32 bytes are an X25519 key, and the one
  // bad case, a low-order point, shows as the all-zero secret below.
  if (EVP_PKEY_derive_set_peer_ex(impl_->ctx.get(), peer.impl_->pkey.get(),
                                  /*validate_peer=*/0) != 1 ||
      EVP_PKEY_derive(impl_->ctx.get(), secret.data(), &length) != 1 || length != secret.size()) {
    return Status::InvalidArgument(
        OpenSslError("X25519 key agreement (a low-order or malformed peer key)"));
  }
  uint8_t any = 0;
  for (uint8_t b : secret) any |= b;
  if (any == 0) return Status::InvalidArgument("X25519 key agreement gave the all-zero secret");
  return secret;
}

Result<DhKeyPair> GenerateDhKey() {
  DhKeyPair pair;
  FEDREC_ASSIGN_OR_RETURN(pair.private_key, RandomKey());
  FEDREC_ASSIGN_OR_RETURN(pair.public_key, DhPublicKey(pair.private_key));
  return pair;
}

Result<Key32> DhPublicKey(const Key32& private_key) {
  FEDREC_ASSIGN_OR_RETURN(const X25519Key key, X25519Key::Load(private_key));
  return key.public_key();
}

Result<Key32> DhSharedSecret(const Key32& private_key, const Key32& peer_public_key) {
  FEDREC_ASSIGN_OR_RETURN(X25519Key key, X25519Key::Load(private_key));
  return key.Agree(peer_public_key);
}

namespace {

// Fetched once: immutable, thread-safe algorithm handles. Passing them to
// the EVP calls skips OpenSSL's per-call implicit lookup (a locked table
// search that otherwise costs more than hashing a short message).
const EVP_MD* Sha256Md() {
  static EVP_MD* const md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  if (md == nullptr) std::abort();  // the default provider is missing
  return md;
}

const EVP_CIPHER* Aes256GcmCipher() {
  static EVP_CIPHER* const cipher = EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr);
  if (cipher == nullptr) std::abort();
  return cipher;
}

const EVP_CIPHER* Aes128CtrCipher() {
  static EVP_CIPHER* const cipher = EVP_CIPHER_fetch(nullptr, "AES-128-CTR", nullptr);
  if (cipher == nullptr) std::abort();
  return cipher;
}

constexpr size_t kShaBlock = 64;

// HMAC-SHA256 (RFC 2104) of the concatenation of `message`.
Key32 HmacSha256(std::span<const uint8_t> key, std::span<const std::span<const uint8_t>> message) {
  std::array<uint8_t, kShaBlock> block{};
  if (key.size() > kShaBlock) {
    const Key32 hashed = Sha256(key);
    std::copy(hashed.begin(), hashed.end(), block.begin());
  } else {
    std::copy(key.begin(), key.end(), block.begin());
  }
  std::array<uint8_t, kShaBlock> pad;
  for (size_t i = 0; i < kShaBlock; ++i) pad[i] = block[i] ^ 0x36;
  std::vector<std::span<const uint8_t>> inner = {pad};
  inner.insert(inner.end(), message.begin(), message.end());
  const Key32 inner_hash = Sha256(inner);
  for (size_t i = 0; i < kShaBlock; ++i) pad[i] = block[i] ^ 0x5c;
  const std::span<const uint8_t> outer[] = {pad, inner_hash};
  const Key32 mac = Sha256(outer);
  Cleanse(block);
  Cleanse(pad);
  return mac;
}

}  // namespace

Key32 Sha256(std::span<const std::span<const uint8_t>> parts) {
  struct Ctx {
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    ~Ctx() { EVP_MD_CTX_free(ctx); }
  };
  thread_local Ctx local;
  Key32 digest{};
  unsigned int length = 0;
  // Failure here is allocation failure inside OpenSSL: nothing can go on.
  if (local.ctx == nullptr || EVP_DigestInit_ex2(local.ctx, Sha256Md(), nullptr) != 1) std::abort();
  for (const auto& part : parts) {
    if (!part.empty() && EVP_DigestUpdate(local.ctx, part.data(), part.size()) != 1) std::abort();
  }
  if (EVP_DigestFinal_ex(local.ctx, digest.data(), &length) != 1) std::abort();
  return digest;
}

Status Hkdf(std::span<const uint8_t> secret, std::span<const uint8_t> salt, std::string_view info,
            std::span<uint8_t> out) {
  // RFC 5869 with SHA-256; an empty salt is HashLen zero bytes.
  if (out.size() > 255 * 32) return Status::InvalidArgument("HKDF-SHA256: output too long");
  static const std::array<uint8_t, 32> kZeroSalt{};
  const std::span<const uint8_t> ikm[] = {secret};
  Key32 prk = HmacSha256(salt.empty() ? std::span<const uint8_t>(kZeroSalt) : salt, ikm);
  const std::span<const uint8_t> info_bytes(reinterpret_cast<const uint8_t*>(info.data()),
                                            info.size());
  Key32 t{};
  size_t done = 0;
  for (uint8_t i = 1; done < out.size(); ++i) {
    const uint8_t counter[1] = {i};
    const std::span<const uint8_t> previous(t.data(), i == 1 ? 0 : t.size());
    const std::span<const uint8_t> message[] = {previous, info_bytes, counter};
    t = HmacSha256(prk, message);
    const size_t n = std::min(t.size(), out.size() - done);
    std::copy_n(t.begin(), n, out.begin() + static_cast<ptrdiff_t>(done));
    done += n;
  }
  Cleanse(prk);
  Cleanse(t);
  return Status::Ok();
}

Result<Key32> AgreeKey(const Key32& private_key, const Key32& peer_public_key,
                       std::span<const uint8_t> salt, std::string_view info) {
  FEDREC_ASSIGN_OR_RETURN(Key32 secret, DhSharedSecret(private_key, peer_public_key));
  Key32 key;
  Status derived = Hkdf(secret, salt, info, key);
  Cleanse(secret);
  if (!derived.ok()) return derived;
  return key;
}

struct Aes256Gcm::Impl {
  Key32 key;
  CipherCtx seal, open;
};

Aes256Gcm::Aes256Gcm(const Key32& key) : impl_(std::make_unique<Impl>()) { impl_->key = key; }

Aes256Gcm::~Aes256Gcm() { Cleanse(impl_->key); }

Status Aes256Gcm::Seal(std::span<const uint8_t, kGcmNonceSize> nonce, std::span<const uint8_t> aad,
                       std::span<uint8_t> data, std::span<uint8_t, kGcmTagSize> tag) {
  if (!impl_->seal) {  // the key schedule is computed once per direction
    impl_->seal.reset(EVP_CIPHER_CTX_new());
    if (!impl_->seal || EVP_EncryptInit_ex(impl_->seal.get(), Aes256GcmCipher(), nullptr,
                                           impl_->key.data(), nullptr) != 1) {
      impl_->seal.reset();
      return Status::Internal(OpenSslError("AES-256-GCM init"));
    }
  }
  EVP_CIPHER_CTX* ctx = impl_->seal.get();
  int final_length = 0;
  if (EVP_EncryptInit_ex(ctx, nullptr, nullptr, nullptr, nonce.data()) != 1 ||
      !AadUpdate(ctx, aad, true) ||
      !CipherUpdate(ctx, data.data(), data.data(), data.size(), true) ||
      EVP_EncryptFinal_ex(ctx, nullptr, &final_length) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, static_cast<int>(tag.size()), tag.data()) != 1)
    return Status::Internal(OpenSslError("AES-256-GCM seal"));
  return Status::Ok();
}

Status Aes256Gcm::Open(std::span<const uint8_t, kGcmNonceSize> nonce, std::span<const uint8_t> aad,
                       std::span<uint8_t> data, std::span<const uint8_t, kGcmTagSize> tag) {
  if (!impl_->open) {
    impl_->open.reset(EVP_CIPHER_CTX_new());
    if (!impl_->open || EVP_DecryptInit_ex(impl_->open.get(), Aes256GcmCipher(), nullptr,
                                           impl_->key.data(), nullptr) != 1) {
      impl_->open.reset();
      return Status::Internal(OpenSslError("AES-256-GCM init"));
    }
  }
  EVP_CIPHER_CTX* ctx = impl_->open.get();
  int final_length = 0;
  if (EVP_DecryptInit_ex(ctx, nullptr, nullptr, nullptr, nonce.data()) != 1 ||
      !AadUpdate(ctx, aad, false) ||
      !CipherUpdate(ctx, data.data(), data.data(), data.size(), false) ||
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, static_cast<int>(tag.size()),
                          const_cast<uint8_t*>(tag.data())) != 1)
    return Status::Internal(OpenSslError("AES-256-GCM open"));
  if (EVP_DecryptFinal_ex(ctx, nullptr, &final_length) != 1) {
    ERR_clear_error();
    return Status::Corruption("authentication tag mismatch (the bytes were altered)");
  }
  return Status::Ok();
}

Result<std::vector<uint8_t>> SealOnce(const Key32& key, std::span<const uint8_t> aad,
                                      std::span<const uint8_t> plaintext) {
  std::vector<uint8_t> sealed(plaintext.size() + kGcmTagSize);
  std::copy(plaintext.begin(), plaintext.end(), sealed.begin());
  const std::array<uint8_t, kGcmNonceSize> nonce{};
  Aes256Gcm cipher(key);
  FEDREC_RETURN_IF_ERROR(
      cipher.Seal(nonce, aad, std::span(sealed.data(), plaintext.size()),
                  std::span<uint8_t, kGcmTagSize>(sealed.data() + plaintext.size(), kGcmTagSize)));
  return sealed;
}

Result<std::vector<uint8_t>> OpenOnce(const Key32& key, std::span<const uint8_t> aad,
                                      std::span<const uint8_t> sealed) {
  if (sealed.size() < kGcmTagSize) {
    return Status::Corruption("sealed message of " + std::to_string(sealed.size()) +
                              " bytes, shorter than its " + std::to_string(kGcmTagSize) +
                              "-byte tag");
  }
  const size_t size = sealed.size() - kGcmTagSize;
  std::vector<uint8_t> plain(sealed.begin(), sealed.begin() + static_cast<ptrdiff_t>(size));
  const std::array<uint8_t, kGcmNonceSize> nonce{};
  Aes256Gcm cipher(key);
  FEDREC_RETURN_IF_ERROR(cipher.Open(
      nonce, aad, plain, std::span<const uint8_t, kGcmTagSize>(sealed.data() + size, kGcmTagSize)));
  return plain;
}

struct Keystream::Impl {
  CipherCtx ctx;
};

Keystream::Keystream(std::span<const uint8_t, 16> key, uint64_t first_block)
    : impl_(std::make_unique<Impl>()) {
  // The initial counter block, a 128-bit big-endian integer.
  std::array<uint8_t, 16> iv{};
  for (int i = 0; i < 8; ++i) iv[15 - i] = static_cast<uint8_t>(first_block >> (8 * i));
  impl_->ctx.reset(EVP_CIPHER_CTX_new());
  // Allocation failure of a cipher context is not recoverable here.
  if (!impl_->ctx ||
      EVP_EncryptInit_ex(impl_->ctx.get(), Aes128CtrCipher(), nullptr, key.data(), iv.data()) != 1)
    std::abort();
}

Keystream::~Keystream() = default;

void Keystream::Generate(std::span<uint8_t> out) {
  if (out.empty()) return;  // data() may be null, which memset may not be given
  std::memset(out.data(), 0, out.size());
  if (!CipherUpdate(impl_->ctx.get(), out.data(), out.data(), out.size(), true)) std::abort();
}

std::string ToHex(std::span<const uint8_t> bytes) {
  static const char kDigits[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(bytes.size() * 2);
  for (uint8_t b : bytes) {
    hex.push_back(kDigits[b >> 4]);
    hex.push_back(kDigits[b & 15]);
  }
  return hex;
}

Result<Key32> Key32FromHex(std::string_view hex, std::string_view what) {
  auto fail = [&](const std::string& found) {
    return Status::InvalidArgument(std::string(what) +
                                   ": expected 64 hex digits (a 32-byte key), " + found);
  };
  if (hex.size() != 64) return fail("found " + std::to_string(hex.size()) + " characters");
  Key32 key;
  for (size_t i = 0; i < 32; ++i) {
    uint8_t value = 0;
    for (size_t j = 0; j < 2; ++j) {
      const char c = hex[2 * i + j];
      uint8_t digit;
      if (c >= '0' && c <= '9') {
        digit = static_cast<uint8_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        digit = static_cast<uint8_t>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        digit = static_cast<uint8_t>(c - 'A' + 10);
      } else {
        return fail(std::string("found '") + c + "' at position " + std::to_string(2 * i + j + 1));
      }
      value = static_cast<uint8_t>(value * 16 + digit);
    }
    key[i] = value;
  }
  return key;
}

}  // namespace fedrec::crypto
