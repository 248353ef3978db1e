// Helpers shared by the fuzz targets (fuzz/*_fuzz.cc).
//
// Every target defines LLVMFuzzerTestOneInput. Built with clang and
// -DFEDREC_FUZZ=ON it links libFuzzer; otherwise it links replay_main.cc,
// which runs a corpus and deterministic mutations of it (CTest's
// Fuzz.<target>.Replay). A target checks properties beyond "does not crash"
// with Require: a broken property aborts, which both drivers report as a crash.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace fedrec::fuzz {

// Aborts with `what` on stderr unless `ok`.
void Require(bool ok, std::string_view what);

// A file holding the current input, for readers that only take a path. One
// per target and process (the pid is in the name), rewritten for each input,
// removed when the process exits.
class InputFile {
 public:
  explicit InputFile(std::string_view name);
  ~InputFile();
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;

  const std::string& path() const { return path_; }
  void Write(const uint8_t* data, size_t size);

 private:
  std::string path_;
};

}  // namespace fedrec::fuzz
