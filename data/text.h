// Pieces every data reader shares: the UTF-8 byte-order mark a file's first
// line may start with, and the parts of error messages (a quoted input
// excerpt, a number and a file:line place) written alike by every reader.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace fedrec::text {

// The UTF-8 byte-order mark (EF BB BF) some editors and spreadsheet exports
// write at the start of a text file.
inline constexpr std::string_view kUtf8Bom = "\xEF\xBB\xBF";

// `first_line` without a leading byte-order mark. Every reader passes its
// file's first line through this, so the mark never becomes part of the
// first ID (an extra user) or hides a header.
inline std::string_view StripUtf8Bom(std::string_view first_line) {
  if (first_line.starts_with(kUtf8Bom)) first_line.remove_prefix(kUtf8Bom.size());
  return first_line;
}

// `s` quoted and C-escaped for an error message, truncated when long.
std::string Quote(std::string_view s);
// `v` as printf's %g writes it.
std::string FormatFloat(double v);
// "path:line".
std::string Where(const std::string& path, uint64_t line);

}  // namespace fedrec::text
