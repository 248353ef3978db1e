// Checkpoint files: named sections written atomically with a SHA-256 over
// everything before it, so a reader either gets every section as written or
// a refusal, never a partial state.
//
// Format (binary-safe):
//   "fedrec-checkpoint v1\n"
//   per section: "section <name> <bytes>\n" <bytes> "\n"
//   "sha256 <64 hex digits of everything above>\n"
//
// Writes go to "<path>.tmp", are fsync'ed, renamed over `path` and the folder
// is fsync'ed: a crash or a failed write leaves the previous file intact.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/status.h"

namespace fedrec {

// Named sections, in file order; names have no whitespace.
using CheckpointSections = std::vector<std::pair<std::string, std::string>>;

// Writes `sections` to `path` atomically (temp file, fsync, rename, fsync of
// the folder). On error `path` is unchanged and the error names the file.
Status WriteCheckpointFile(const std::string& path, const CheckpointSections& sections);

// Reads a file WriteCheckpointFile wrote. Corruption naming the file when it
// is truncated, its checksum does not match or its layout is broken.
Result<CheckpointSections> ReadCheckpointFile(const std::string& path);

// The section `name` of `sections`; NotFound naming `where` and the section.
Result<std::string> FindSection(const CheckpointSections& sections, const std::string& name,
                                const std::string& where);

// Numbered checkpoint files of one role in one folder, "<prefix><n>.ckpt"
// with n as six or more digits (a site's "round-000007.ckpt", a shard
// server's "epoch-000003.ckpt"): the path of number n, and the numbers of
// the files present, ascending (a missing folder has none).
std::string NumberedCheckpointPath(const std::string& dir, std::string_view prefix, uint32_t n);
std::vector<uint32_t> NumberedCheckpoints(const std::string& dir, std::string_view prefix);
// Removes the numbered files whose number `drop` says to drop.
template <typename Drop>
void RemoveNumberedCheckpoints(const std::string& dir, std::string_view prefix, Drop drop);

// Compares a file's "key value" lines with what this run expects, line by
// line, skipping lines that start with `skip` (when not empty): OK, or
// InvalidArgument naming `what`, the first line that differs and that
// nothing was loaded.
Status CheckMetaLines(const std::string& what, const std::string& expected,
                      const std::string& found, std::string_view skip = {});

}  // namespace fedrec

#include <filesystem>

namespace fedrec {

template <typename Drop>
void RemoveNumberedCheckpoints(const std::string& dir, std::string_view prefix, Drop drop) {
  for (uint32_t n : NumberedCheckpoints(dir, prefix)) {
    std::error_code ec;  // a file already gone is what was wanted
    if (drop(n)) std::filesystem::remove(NumberedCheckpointPath(dir, prefix, n), ec);
  }
}

}  // namespace fedrec
