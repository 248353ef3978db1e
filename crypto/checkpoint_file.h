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

#include <string>
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

}  // namespace fedrec
