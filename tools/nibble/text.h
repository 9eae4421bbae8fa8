// Text from hostile files, made safe to print on a terminal.
#ifndef NIBBLE_TOOLS_NIBBLE_TEXT_H_
#define NIBBLE_TOOLS_NIBBLE_TEXT_H_

#include <string>
#include <string_view>

namespace nibble::tool {

// `s` with every byte that is not part of printable, well-formed UTF-8
// written as \xNN: invalid or overlong sequences, surrogates, C0 controls
// (ESC included) except newline and tab, DEL and the C1 controls. A
// backslash stays as it is. With `ascii_only`, every non-ASCII byte is
// escaped too, so the result can be cut at any byte.
std::string EscapeForTerminal(std::string_view s, bool ascii_only = false);

}  // namespace nibble::tool

#endif  // NIBBLE_TOOLS_NIBBLE_TEXT_H_
