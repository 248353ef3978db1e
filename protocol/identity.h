// Identity key files: a site's (or the coordinator's) long-term Ed25519 key
// pair, as `fedrec keygen` writes it.
//
//   <prefix>.key  the private key, PKCS#8 PEM (`openssl pkey -in x.key -text`
//                 reads it), created with mode 0600
//   <prefix>.pub  one line: the raw 32-byte public key as 64 hex digits, what
//                 configs list and peers check
#pragma once

#include <string>
#include <string_view>

#include "base/status.h"
#include "protocol/crypto.h"

namespace fedrec {

// Creates a fresh identity and writes both files. InvalidArgument when a file
// exists and `overwrite` is false; IoError naming the file otherwise.
Result<crypto::SigningKey> GenerateIdentityFiles(const std::string& prefix, bool overwrite);

// Reads a private key file; the error names the file and what was wrong
// (missing, not PEM, not an Ed25519 key).
Result<crypto::SigningKey> LoadIdentity(const std::string& key_path);

// Parses 64 hex digits (surrounding whitespace allowed); errors name `where`.
Result<crypto::Key32> ParsePublicKey(std::string_view text, std::string_view where);

// Reads a .pub file.
Result<crypto::Key32> LoadPublicKeyFile(const std::string& path);

}  // namespace fedrec
