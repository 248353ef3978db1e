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
#include "crypto/crypto.h"

namespace fedrec {

// Creates a fresh identity and writes both files: `<prefix>.key` with mode
// 0600, `<prefix>.pub` with mode 0644. Without `overwrite`, InvalidArgument
// ("refusing to overwrite") when either file exists, and nothing is written;
// with it, both are replaced (the key file's mode reset to 0600). IoError
// naming the file when the system refuses. Symlinks are not followed.
Result<crypto::SigningKey> GenerateIdentityFiles(const std::string& prefix, bool overwrite);

// Reads a private key file written by GenerateIdentityFiles (or any
// unencrypted PKCS#8 PEM Ed25519 key, e.g. from `openssl genpkey -algorithm
// ed25519`). The error names the file and what was wrong: NotFound when it
// does not exist, IoError when it cannot be read, InvalidArgument when it is
// not PEM, is encrypted, or holds another kind of key. Never prompts.
Result<crypto::SigningKey> LoadIdentity(const std::string& key_path);

// Parses 64 hex digits (surrounding whitespace allowed); errors name `where`
// (a file, a config key) and what was found.
Result<crypto::Key32> ParsePublicKey(std::string_view text, std::string_view where);

// Reads a .pub file; errors as LoadIdentity's for the file, then as
// ParsePublicKey's naming the file.
Result<crypto::Key32> LoadPublicKeyFile(const std::string& path);

}  // namespace fedrec
