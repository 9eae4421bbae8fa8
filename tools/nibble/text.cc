// Escaping for terminal output: see text.h.
#include "text.h"

#include <cstdint>

namespace nibble::tool {
namespace {

void AppendHex(unsigned char c, std::string* out) {
  static const char kDigits[] = "0123456789abcdef";
  *out += "\\x";
  *out += kDigits[c >> 4];
  *out += kDigits[c & 0xf];
}

// Length of the well-formed UTF-8 sequence at s[i] (2 to 4), or 0.
size_t Utf8SequenceLength(std::string_view s, size_t i, uint32_t* code) {
  const unsigned char c = static_cast<unsigned char>(s[i]);
  size_t n;
  uint32_t cp, min;
  if (c >= 0xc2 && c <= 0xdf) {
    n = 2, cp = c & 0x1fu, min = 0x80;
  } else if (c >= 0xe0 && c <= 0xef) {
    n = 3, cp = c & 0x0fu, min = 0x800;
  } else if (c >= 0xf0 && c <= 0xf4) {
    n = 4, cp = c & 0x07u, min = 0x10000;
  } else {
    return 0;
  }
  if (s.size() - i < n) return 0;
  for (size_t k = 1; k < n; ++k) {
    const unsigned char t = static_cast<unsigned char>(s[i + k]);
    if ((t & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (t & 0x3fu);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  *code = cp;
  return n;
}

}  // namespace

std::string EscapeForTerminal(std::string_view s, bool ascii_only) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      if ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7f)
        AppendHex(c, &out);
      else
        out += static_cast<char>(c);
      ++i;
      continue;
    }
    uint32_t cp = 0;
    const size_t n = ascii_only ? 0 : Utf8SequenceLength(s, i, &cp);
    if (n == 0 || (cp >= 0x80 && cp <= 0x9f)) {
      const size_t bad = n == 0 ? 1 : n;
      for (size_t k = 0; k < bad; ++k)
        AppendHex(static_cast<unsigned char>(s[i + k]), &out);
      i += bad;
      continue;
    }
    out.append(s.substr(i, n));
    i += n;
  }
  return out;
}

}  // namespace nibble::tool
