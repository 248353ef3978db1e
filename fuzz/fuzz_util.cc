#include "fuzz/fuzz_util.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

namespace fedrec::fuzz {

void Require(bool ok, std::string_view what) {
  if (ok) return;
  std::fprintf(stderr, "fuzz property failed: %.*s\n", static_cast<int>(what.size()), what.data());
  std::abort();
}

InputFile::InputFile(std::string_view name) {
  const char* dir = std::getenv("TMPDIR");
  path_ = std::string(dir != nullptr && *dir != '\0' ? dir : "/tmp") + "/fedrec-fuzz-" +
          std::to_string(getpid()) + "-" + std::string(name);
}

InputFile::~InputFile() {
  std::error_code ignored;
  std::filesystem::remove(path_, ignored);
}

void InputFile::Write(const uint8_t* data, size_t size) {
  std::FILE* f = std::fopen(path_.c_str(), "wb");
  Require(f != nullptr, "cannot create the input file " + path_);
  const size_t written = size == 0 ? 0 : std::fwrite(data, 1, size, f);
  Require(std::fclose(f) == 0 && written == size, "cannot write the input file " + path_);
}

}  // namespace fedrec::fuzz
