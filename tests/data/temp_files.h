// Files the data tests write: under $FEDREC_TEST_TMPDIR (set by CTest for
// each test binary) or GoogleTest's temp dir, in a folder per test file.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace fedrec::testing {

// A fresh file `name` in `folder` holding `contents`; its path.
inline std::string WriteTempFile(const std::string& folder, const std::string& name,
                                 const std::string& contents) {
  namespace fs = std::filesystem;
  const char* env = std::getenv("FEDREC_TEST_TMPDIR");
  fs::path dir = env != nullptr && *env != '\0' ? fs::path(env) : fs::path(::testing::TempDir());
  dir /= folder;
  fs::create_directories(dir);
  const fs::path path = dir / name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << contents;
  out.close();
  EXPECT_TRUE(out.good()) << "cannot write " << path;
  return path.string();
}

}  // namespace fedrec::testing
