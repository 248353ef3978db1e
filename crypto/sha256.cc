#include "crypto/sha256.h"

#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>

namespace fedrec {
namespace {

// OpenSSL failing to hash is an invariant broken inside a dependency (out of
// memory, a broken provider); there is no sensible way to go on.
void CheckOpenSsl(int ok, const char* what) {
  if (ok != 1) {
    std::fprintf(stderr, "fedrec: OpenSSL %s failed\n", what);
    std::abort();
  }
}

// ModelSha256 below handles little- and big-endian hosts; nothing else.
static_assert(std::endian::native == std::endian::little || std::endian::native == std::endian::big,
              "mixed-endian hosts are not supported");

EVP_MD_CTX* Ctx(void* p) { return static_cast<EVP_MD_CTX*>(p); }

}  // namespace

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  if (ctx_ == nullptr) CheckOpenSsl(0, "EVP_MD_CTX_new");
  CheckOpenSsl(EVP_DigestInit_ex(Ctx(ctx_), EVP_sha256(), nullptr), "EVP_DigestInit_ex(sha256)");
}

Sha256::~Sha256() { EVP_MD_CTX_free(Ctx(ctx_)); }

void Sha256::Update(std::span<const std::byte> bytes) {
  if (bytes.empty()) return;
  CheckOpenSsl(EVP_DigestUpdate(Ctx(ctx_), bytes.data(), bytes.size()), "EVP_DigestUpdate");
}

std::string Sha256::HexDigest() {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  CheckOpenSsl(EVP_DigestFinal_ex(Ctx(ctx_), digest, &length), "EVP_DigestFinal_ex");
  static const char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(2 * length);
  for (unsigned int i = 0; i < length; ++i) {
    hex += kHex[digest[i] >> 4];
    hex += kHex[digest[i] & 0xf];
  }
  return hex;
}

std::string ModelSha256(const std::vector<ParamBlock>& blocks) {
  static_assert(std::numeric_limits<float>::is_iec559 && sizeof(float) == 4,
                "model digests are defined over IEEE-754 binary32 values");
  Sha256 sha;
  for (const ParamBlock& block : blocks) {
    if constexpr (std::endian::native == std::endian::little) {
      // The in-memory bytes already are little-endian float32.
      sha.Update(block.Bytes());
    } else {
      // Big-endian host: hash the little-endian representation so every host
      // reports the same digest for the same model. Swapped in chunks.
      std::array<std::byte, 4096> buf;
      const std::span<const std::byte> src = block.Bytes();
      for (size_t off = 0; off < src.size(); off += buf.size()) {
        const size_t n = std::min(buf.size(), src.size() - off);
        for (size_t i = 0; i < n; i += 4) {
          for (size_t j = 0; j < 4; ++j) buf[i + j] = src[off + i + 3 - j];
        }
        sha.Update(std::span<const std::byte>(buf.data(), n));
      }
    }
  }
  return sha.HexDigest();
}

}  // namespace fedrec
