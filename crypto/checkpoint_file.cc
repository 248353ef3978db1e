#include "crypto/checkpoint_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "crypto/sha256.h"

namespace fedrec {
namespace {

constexpr std::string_view kMagic = "fedrec-checkpoint v1\n";
constexpr std::string_view kTrailer = "sha256 ";
constexpr size_t kTrailerSize = 7 + 64 + 1;  // "sha256 " + hex + "\n"

std::string Digest(std::string_view bytes) {
  Sha256 sha;
  sha.Update(std::as_bytes(std::span(bytes.data(), bytes.size())));
  return sha.HexDigest();
}

Status Errno(const std::string& what, const std::string& path) {
  return Status::IoError("checkpoint " + path + ": " + what + ": " + std::strerror(errno));
}

// Writes all of `bytes` to `fd`.
bool WriteAll(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

}  // namespace

Status WriteCheckpointFile(const std::string& path, const CheckpointSections& sections) {
  std::string body(kMagic);
  for (const auto& [name, bytes] : sections) {
    if (name.empty() || name.find_first_of(" \n\t") != std::string::npos)
      return Status::InvalidArgument("checkpoint " + path + ": section name '" + name +
                                     "' must be non-empty without whitespace");
    body += "section " + name + " " + std::to_string(bytes.size()) + "\n";
    body += bytes;
    body += '\n';
  }
  body += std::string(kTrailer) + Digest(body) + "\n";

  const std::filesystem::path target(path);
  const std::filesystem::path folder =
      target.has_parent_path() ? target.parent_path() : std::filesystem::path(".");
  std::error_code ec;
  std::filesystem::create_directories(folder, ec);
  if (ec)
    return Status::IoError("checkpoint " + path + ": cannot create its folder: " + ec.message());
  const std::string temp = path + ".tmp";
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("cannot open " + temp, path);
  if (!WriteAll(fd, body) || ::fsync(fd) != 0) {
    const Status status = Errno("cannot write " + temp, path);
    ::close(fd);
    ::unlink(temp.c_str());
    return status;
  }
  if (::close(fd) != 0) {
    const Status status = Errno("cannot close " + temp, path);
    ::unlink(temp.c_str());
    return status;
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    const Status status = Errno("cannot rename " + temp + " over it", path);
    ::unlink(temp.c_str());
    return status;
  }
  // The rename is durable once the folder is.
  const int dir = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
  return Status::Ok();
}

Result<CheckpointSections> ReadCheckpointFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::NotFound("checkpoint " + path + ": cannot open it");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  const std::string bytes = buffer.str();
  const auto corrupt = [&](const std::string& what) {
    return Status::Corruption("checkpoint " + path + " is corrupt or truncated (" + what +
                              "); it was not loaded");
  };
  if (!bytes.starts_with(kMagic))
    return corrupt("expected it to start with '" + std::string(kMagic.substr(0, 20)) + "'");
  if (bytes.size() < kMagic.size() + kTrailerSize)
    return corrupt("found " + std::to_string(bytes.size()) + " bytes, too few for the checksum");
  const size_t body_size = bytes.size() - kTrailerSize;
  const std::string_view trailer = std::string_view(bytes).substr(body_size);
  if (!trailer.starts_with(kTrailer) || trailer.back() != '\n')
    return corrupt("no 'sha256' line at its end");
  const std::string expected(trailer.substr(kTrailer.size(), 64));
  const std::string found = Digest(std::string_view(bytes).substr(0, body_size));
  if (expected != found)
    return corrupt("SHA-256 of its contents is " + found + ", the file records " + expected);

  CheckpointSections sections;
  size_t pos = kMagic.size();
  while (pos < body_size) {
    const size_t eol = bytes.find('\n', pos);
    if (eol == std::string::npos || eol >= body_size) return corrupt("section header unterminated");
    std::istringstream header(bytes.substr(pos, eol - pos));
    std::string word, name;
    size_t size = 0;
    if (!(header >> word >> name >> size) || word != "section")
      return corrupt("bad section header at byte " + std::to_string(pos));
    pos = eol + 1;
    if (size > body_size - pos || pos + size >= body_size || bytes[pos + size] != '\n')
      return corrupt("section '" + name + "' runs past the end");
    sections.emplace_back(name, bytes.substr(pos, size));
    pos += size + 1;
  }
  return sections;
}

Result<std::string> FindSection(const CheckpointSections& sections, const std::string& name,
                                const std::string& where) {
  for (const auto& [n, bytes] : sections)
    if (n == name) return bytes;
  return Status::NotFound("checkpoint " + where + " has no section '" + name + "'");
}

std::string NumberedCheckpointPath(const std::string& dir, std::string_view prefix, uint32_t n) {
  char digits[16];
  std::snprintf(digits, sizeof(digits), "%06u", n);
  return (std::filesystem::path(dir) / (std::string(prefix) + digits + ".ckpt")).string();
}

std::vector<uint32_t> NumberedCheckpoints(const std::string& dir, std::string_view prefix) {
  constexpr std::string_view kSuffix = ".ckpt";
  std::vector<uint32_t> numbers;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (!name.starts_with(prefix) || !name.ends_with(kSuffix)) continue;
    const std::string digits =
        name.substr(prefix.size(), name.size() - prefix.size() - kSuffix.size());
    if (digits.empty() || digits.size() > 9 ||
        !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
      continue;
    numbers.push_back(static_cast<uint32_t>(std::stoul(digits)));
  }
  std::sort(numbers.begin(), numbers.end());
  return numbers;
}

Status CheckMetaLines(const std::string& what, const std::string& expected,
                      const std::string& found, std::string_view skip) {
  std::istringstream want(expected), got(found);
  std::string a, b;
  while (std::getline(want, a)) {
    if (!std::getline(got, b)) b = "(nothing)";
    if (!skip.empty() && a.starts_with(skip) && b.starts_with(skip)) continue;
    if (a == b) continue;
    return Status::InvalidArgument(what + " does not match this run: expected '" + a +
                                   "', found '" + b +
                                   "' (the configuration hash covers every key but checkpoint.* "
                                   "and output.*); it was not loaded");
  }
  return Status::Ok();
}

}  // namespace fedrec
