// Process memory: the peak resident set size, and byte counts as people
// write them (cluster.memory_limit = "512MiB").
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "base/status.h"

namespace fedrec {

// This process's peak resident set size so far, in bytes (getrusage's
// ru_maxrss); 0 when the system does not say. Threads of one process share it.
uint64_t PeakRssBytes();

// Parses a byte count: a whole number optionally followed by a unit, B, KB,
// MB, GB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024), case
// insensitive, spaces allowed before the unit ("512MiB", "1.5 GiB",
// "800000000"). Fractions are allowed with a unit. Errors say what was
// expected and found.
Result<uint64_t> ParseByteSize(std::string_view text);

// "792.0 MB (755.3 MiB)": a byte count for messages, in both units.
std::string FormatBytes(uint64_t bytes);

}  // namespace fedrec
