#include "data/text.h"

#include <cstdio>

namespace fedrec::text {
namespace {

constexpr size_t kMaxShownBytes = 160;  // of a line quoted in a message

}  // namespace

std::string Quote(std::string_view s) {
  std::string q = "\"";
  const size_t n = s.size() < kMaxShownBytes ? s.size() : kMaxShownBytes;
  for (size_t i = 0; i < n; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    switch (c) {
      case '\t':
        q += "\\t";
        break;
      case '\r':
        q += "\\r";
        break;
      case '\n':
        q += "\\n";
        break;
      case '\\':
        q += "\\\\";
        break;
      case '"':
        q += "\\\"";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\x%02x", c);
          q += buf;
        } else {
          q += static_cast<char>(c);
        }
    }
  }
  q += '"';
  if (n < s.size()) q += "... (" + std::to_string(s.size()) + " bytes)";
  return q;
}

std::string FormatFloat(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

std::string Where(const std::string& path, uint64_t line) {
  return path + ":" + std::to_string(line);
}

}  // namespace fedrec::text
