#include "protocol/identity.h"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

namespace fedrec {

namespace {

struct PkeyDeleter {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct BioDeleter {
  void operator()(BIO* p) const { BIO_free(p); }
};

// Writes `contents` to a new file with `mode`; refuses an existing file
// unless `overwrite`.
Status WriteNewFile(const std::string& path, const std::string& contents, mode_t mode,
                    bool overwrite) {
  if (!overwrite && std::filesystem::exists(path)) {
    return Status::InvalidArgument(path +
                                   " exists; refusing to overwrite a key file (pass --force)");
  }
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return Status::IoError("cannot create " + path + ": " + std::strerror(errno));
  // An existing file keeps its old mode through O_CREAT; set it explicitly.
  bool ok = ::fchmod(fd, mode) == 0;
  size_t written = 0;
  while (ok && written < contents.size()) {
    const ssize_t n = ::write(fd, contents.data() + written, contents.size() - written);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) written += static_cast<size_t>(n);
  }
  ok = ::close(fd) == 0 && ok;
  if (!ok) return Status::IoError("cannot write " + path + ": " + std::strerror(errno));
  return Status::Ok();
}

}  // namespace

Result<crypto::SigningKey> GenerateIdentityFiles(const std::string& prefix, bool overwrite) {
  FEDREC_ASSIGN_OR_RETURN(crypto::SigningKey key, crypto::GenerateSigningKey());
  std::unique_ptr<EVP_PKEY, PkeyDeleter> pkey(EVP_PKEY_new_raw_private_key(
      EVP_PKEY_ED25519, nullptr, key.private_key.data(), key.private_key.size()));
  std::unique_ptr<BIO, BioDeleter> bio(BIO_new(BIO_s_mem()));
  if (!pkey || !bio ||
      PEM_write_bio_PrivateKey(bio.get(), pkey.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1)
    return Status::Internal("encoding the private key as PEM failed");
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio.get(), &data);
  std::string pem(data, static_cast<size_t>(size));
  Status wrote = WriteNewFile(prefix + ".key", pem, 0600, overwrite);
  crypto::Cleanse(std::span(reinterpret_cast<uint8_t*>(pem.data()), pem.size()));
  FEDREC_RETURN_IF_ERROR(wrote);
  FEDREC_RETURN_IF_ERROR(
      WriteNewFile(prefix + ".pub", crypto::ToHex(key.public_key) + "\n", 0644, overwrite));
  return key;
}

Result<crypto::SigningKey> LoadIdentity(const std::string& key_path) {
  std::ifstream in(key_path, std::ios::binary);
  if (!in) return Status::NotFound("cannot read identity key file " + key_path);
  std::stringstream text;
  text << in.rdbuf();
  const std::string pem = text.str();
  std::unique_ptr<BIO, BioDeleter> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  std::unique_ptr<EVP_PKEY, PkeyDeleter> pkey(
      bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  ERR_clear_error();
  if (!pkey) {
    return Status::InvalidArgument(key_path +
                                   ": expected a PEM private key (written by fedrec keygen), found "
                                   "no readable PEM key");
  }
  if (EVP_PKEY_get_id(pkey.get()) != EVP_PKEY_ED25519) {
    return Status::InvalidArgument(key_path + ": expected an Ed25519 key, found a " +
                                   EVP_PKEY_get0_type_name(pkey.get()) + " key");
  }
  crypto::Key32 seed;
  size_t length = seed.size();
  if (EVP_PKEY_get_raw_private_key(pkey.get(), seed.data(), &length) != 1 || length != seed.size())
    return Status::InvalidArgument(key_path + ": the Ed25519 private key does not export");
  Result<crypto::SigningKey> key = crypto::SigningKeyFromPrivate(seed);
  crypto::Cleanse(seed);
  return key;
}

Result<crypto::Key32> ParsePublicKey(std::string_view text, std::string_view where) {
  const auto first = text.find_first_not_of(" \t\r\n");
  const auto last = text.find_last_not_of(" \t\r\n");
  const std::string_view hex =
      first == std::string_view::npos ? std::string_view() : text.substr(first, last - first + 1);
  return crypto::Key32FromHex(hex, where);
}

Result<crypto::Key32> LoadPublicKeyFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::NotFound("cannot read public key file " + path);
  std::stringstream text;
  text << in.rdbuf();
  return ParsePublicKey(text.str(), path);
}

}  // namespace fedrec
