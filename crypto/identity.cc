#include "crypto/identity.h"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <memory>

namespace fedrec {

namespace {

struct PkeyDeleter {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct BioDeleter {
  void operator()(BIO* p) const { BIO_free(p); }
};

std::string ErrnoText(int error) { return std::strerror(error); }

bool Exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

// Writes `contents` to `path` with exactly `mode`. Without `overwrite` the
// file is created with O_EXCL, so an existing file (or one created meanwhile)
// is never replaced. Symlinks are not followed: a key must not land wherever
// a planted link points.
Status WriteFile(const std::string& path, std::string_view contents, mode_t mode, bool overwrite) {
  const int flags = O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW | (overwrite ? O_TRUNC : O_EXCL);
  const int fd = ::open(path.c_str(), flags, mode);
  if (fd < 0) {
    const int error = errno;
    if (error == EEXIST) {
      return Status::InvalidArgument(path +
                                     " exists; refusing to overwrite a key file (pass --force)");
    }
    return Status::IoError("cannot create " + path + ": " + ErrnoText(error));
  }
  // The umask may have narrowed the mode, and an existing file keeps its old
  // one through O_CREAT; set it before the key is written.
  int error = ::fchmod(fd, mode) == 0 ? 0 : errno;
  size_t written = 0;
  while (error == 0 && written < contents.size()) {
    const ssize_t n = ::write(fd, contents.data() + written, contents.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      error = n < 0 ? errno : EIO;
    } else {
      written += static_cast<size_t>(n);
    }
  }
  if (::close(fd) != 0 && error == 0) error = errno;
  if (error != 0) return Status::IoError("cannot write " + path + ": " + ErrnoText(error));
  return Status::Ok();
}

// The whole file, or NotFound / IoError naming it as `what`.
Result<std::string> ReadFile(const std::string& path, const std::string& what) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int error = errno;
    if (error == ENOENT) return Status::NotFound(what + " " + path + " does not exist");
    return Status::IoError("cannot read " + what + " " + path + ": " + ErrnoText(error));
  }
  std::string text;
  char buffer[4096];
  int error = 0;
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) error = errno;
    if (n <= 0) break;
    text.append(buffer, static_cast<size_t>(n));
    // Key files are tiny; anything this large is not one.
    if (text.size() > (size_t{1} << 20)) {
      ::close(fd);
      return Status::InvalidArgument(what + " " + path +
                                     ": expected a small key file, found over " + "1 MiB");
    }
  }
  ::close(fd);
  crypto::Cleanse(std::span(reinterpret_cast<uint8_t*>(buffer), sizeof(buffer)));
  if (error != 0)
    return Status::IoError("cannot read " + what + " " + path + ": " + ErrnoText(error));
  return text;
}

// Refuses to ask for a passphrase: keygen never encrypts keys, and a job must
// not stop to prompt on a terminal.
int NoPassphrase(char*, int, int, void*) { return -1; }

}  // namespace

Result<crypto::SigningKey> GenerateIdentityFiles(const std::string& prefix, bool overwrite) {
  const std::string key_path = prefix + ".key";
  const std::string pub_path = prefix + ".pub";
  if (!overwrite) {
    // Both checked first, so a refusal leaves no half-written identity.
    for (const std::string* path : {&key_path, &pub_path}) {
      if (Exists(*path)) {
        return Status::InvalidArgument(*path +
                                       " exists; refusing to overwrite a key file (pass --force)");
      }
    }
  }
  FEDREC_ASSIGN_OR_RETURN(crypto::SigningKey key, crypto::GenerateSigningKey());
  std::unique_ptr<EVP_PKEY, PkeyDeleter> pkey(EVP_PKEY_new_raw_private_key(
      EVP_PKEY_ED25519, nullptr, key.private_key.data(), key.private_key.size()));
  // Secure-heap memory BIO: the PEM text is cleansed when the BIO is freed.
  std::unique_ptr<BIO, BioDeleter> bio(BIO_new(BIO_s_secmem()));
  if (!pkey || !bio ||
      PEM_write_bio_PrivateKey(bio.get(), pkey.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    ERR_clear_error();
    return Status::Internal("encoding the Ed25519 private key as PKCS#8 PEM failed");
  }
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio.get(), &data);
  if (data == nullptr || size <= 0) return Status::Internal("encoding the private key: empty PEM");
  FEDREC_RETURN_IF_ERROR(
      WriteFile(key_path, std::string_view(data, static_cast<size_t>(size)), 0600, overwrite));
  FEDREC_RETURN_IF_ERROR(
      WriteFile(pub_path, crypto::ToHex(key.public_key) + "\n", 0644, overwrite));
  return key;
}

Result<crypto::SigningKey> LoadIdentity(const std::string& key_path) {
  FEDREC_ASSIGN_OR_RETURN(std::string pem, ReadFile(key_path, "identity key file"));
  auto cleanse = [&pem] {
    crypto::Cleanse(std::span(reinterpret_cast<uint8_t*>(pem.data()), pem.size()));
  };
  if (pem.find("-----BEGIN ") == std::string::npos) {
    cleanse();
    return Status::InvalidArgument(key_path +
                                   ": expected a PEM private key (\"-----BEGIN PRIVATE KEY-----\", "
                                   "as fedrec keygen writes it), found no PEM block");
  }
  const bool encrypted = pem.find("ENCRYPTED") != std::string::npos;
  std::unique_ptr<BIO, BioDeleter> bio(
      BIO_new_mem_buf(pem.data(), static_cast<int>(std::min<size_t>(pem.size(), INT_MAX))));
  std::unique_ptr<EVP_PKEY, PkeyDeleter> pkey(
      bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassphrase, nullptr) : nullptr);
  ERR_clear_error();
  bio.reset();
  cleanse();
  if (!pkey) {
    return Status::InvalidArgument(
        key_path + ": expected an unencrypted PEM private key, found " +
        (encrypted ? std::string("an encrypted key (fedrec reads keys without a passphrase)")
                   : std::string("a PEM block that is not a readable private key")));
  }
  if (EVP_PKEY_get_id(pkey.get()) != EVP_PKEY_ED25519) {
    const char* type = EVP_PKEY_get0_type_name(pkey.get());
    return Status::InvalidArgument(key_path + ": expected an Ed25519 key, found a " +
                                   (type != nullptr ? type : "different") + " key");
  }
  // A private key others can read is no longer private: refuse it (keygen
  // writes 0600), after the content checks so their errors come first.
  struct stat st {};
  if (::stat(key_path.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return Status::InvalidArgument(key_path + ": expected a private key only its owner can read " +
                                   "(mode 0600), found mode " + mode + "; run chmod 600 " +
                                   key_path);
  }
  crypto::Key32 seed;
  size_t length = seed.size();
  if (EVP_PKEY_get_raw_private_key(pkey.get(), seed.data(), &length) != 1 ||
      length != seed.size()) {
    ERR_clear_error();
    return Status::InvalidArgument(key_path + ": the Ed25519 private key does not export");
  }
  Result<crypto::SigningKey> key = crypto::SigningKeyFromPrivate(seed);
  crypto::Cleanse(seed);
  if (!key.ok()) return key.status().WithContext(key_path);
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
  FEDREC_ASSIGN_OR_RETURN(std::string text, ReadFile(path, "public key file"));
  return ParsePublicKey(text, path);
}

}  // namespace fedrec
