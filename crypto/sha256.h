// SHA-256 through OpenSSL EVP.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "base/param_block.h"

namespace fedrec {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(std::span<const std::byte> bytes);
  // Lower-case hex digest; the object is spent afterwards.
  std::string HexDigest();

 private:
  void* ctx_;  // EVP_MD_CTX*
};

// SHA-256 of the parameter bytes (little-endian float32) of `blocks`, in order.
// This is the `model_sha256` every run reports.
std::string ModelSha256(const std::vector<ParamBlock>& blocks);

}  // namespace fedrec
