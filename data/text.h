// Pieces of the data readers' error messages: a quoted input excerpt, a
// number and a file:line place, written alike by every reader.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace fedrec::text {

// `s` quoted and C-escaped for an error message, truncated when long.
std::string Quote(std::string_view s);
// `v` as printf's %g writes it.
std::string FormatFloat(double v);
// "path:line".
std::string Where(const std::string& path, uint64_t line);

}  // namespace fedrec::text
