#include "base/memory.h"

#include <sys/resource.h>

#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>

namespace fedrec {

uint64_t PeakRssBytes() {
  rusage usage{};
  if (getrusage(RUSAGE_SELF, &usage) != 0 || usage.ru_maxrss < 0) return 0;
  return static_cast<uint64_t>(usage.ru_maxrss) * 1024;  // Linux: ru_maxrss is in KiB
}

Result<uint64_t> ParseByteSize(std::string_view text) {
  auto fail = [&] {
    return Status::InvalidArgument(
        "expected a byte count such as 536870912, 512MiB, 1.5GiB or 800MB (units B, KB, MB, GB, "
        "KiB, MiB, GiB, TiB), found \"" +
        std::string(text) + "\"");
  };
  size_t at = 0;
  while (at < text.size() &&
         (std::isdigit(static_cast<unsigned char>(text[at])) || text[at] == '.'))
    ++at;
  if (at == 0) return fail();
  double number = 0.0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + at, number);
  if (ec != std::errc() || end != text.data() + at || !std::isfinite(number)) return fail();
  std::string unit;
  for (size_t i = at; i < text.size(); ++i) {
    if (text[i] == ' ' && unit.empty()) continue;
    unit += static_cast<char>(std::tolower(static_cast<unsigned char>(text[i])));
  }
  double scale = 0.0;
  if (unit.empty() || unit == "b")
    scale = 1.0;
  else if (unit == "kb")
    scale = 1e3;
  else if (unit == "mb")
    scale = 1e6;
  else if (unit == "gb")
    scale = 1e9;
  else if (unit == "kib")
    scale = 1024.0;
  else if (unit == "mib")
    scale = 1024.0 * 1024.0;
  else if (unit == "gib")
    scale = 1024.0 * 1024.0 * 1024.0;
  else if (unit == "tib")
    scale = 1024.0 * 1024.0 * 1024.0 * 1024.0;
  else
    return fail();
  if (scale == 1.0 && number != std::floor(number)) return fail();  // a fraction of a byte
  const double bytes = std::round(number * scale);
  if (bytes >= 1.8e19) return fail();
  return static_cast<uint64_t>(bytes);
}

std::string FormatBytes(uint64_t bytes) {
  char out[64];
  std::snprintf(out, sizeof out, "%.1f MB (%.1f MiB)", static_cast<double>(bytes) / 1e6,
                static_cast<double>(bytes) / (1024.0 * 1024.0));
  return out;
}

}  // namespace fedrec
