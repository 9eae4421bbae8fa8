// EscapeForTerminal: what an error line may quote from a hostile file.
#include "text.h"

#include <gtest/gtest.h>

#include <string>

namespace nibble::tool {
namespace {

TEST(EscapeForTerminal, KeepsPrintableAsciiAndWellFormedUtf8) {
  EXPECT_EQ(EscapeForTerminal("model.layers.0.q_proj.weight"),
            "model.layers.0.q_proj.weight");
  EXPECT_EQ(EscapeForTerminal("a\\b"), "a\\b");
  EXPECT_EQ(EscapeForTerminal("tab\there\nnext"), "tab\there\nnext");
  // é (2 bytes), € (3 bytes), 😀 (4 bytes).
  const std::string utf8 = "\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80";
  EXPECT_EQ(EscapeForTerminal(utf8), utf8);
}

TEST(EscapeForTerminal, EscapesControlCharacters) {
  EXPECT_EQ(EscapeForTerminal("\x1b[2Jx"), "\\x1b[2Jx");
  EXPECT_EQ(EscapeForTerminal(std::string("a\0b", 3)), "a\\x00b");
  EXPECT_EQ(EscapeForTerminal("\r\x7f"), "\\x0d\\x7f");
  // C1 control U+009B (CSI) written as UTF-8.
  EXPECT_EQ(EscapeForTerminal("\xc2\x9b"), "\\xc2\\x9b");
}

TEST(EscapeForTerminal, EscapesMalformedUtf8ByteByByte) {
  EXPECT_EQ(EscapeForTerminal("w\xff.weight"), "w\\xff.weight");
  EXPECT_EQ(EscapeForTerminal("v\xc3"), "v\\xc3");            // truncated
  EXPECT_EQ(EscapeForTerminal("\xc0\xaf"), "\\xc0\\xaf");     // overlong '/'
  EXPECT_EQ(EscapeForTerminal("\xe0\x80\xaf"), "\\xe0\\x80\\xaf");
  EXPECT_EQ(EscapeForTerminal("\xed\xa0\x80"), "\\xed\\xa0\\x80");  // surrogate
  EXPECT_EQ(EscapeForTerminal("\xf4\x90\x80\x80"),  // above U+10FFFF
            "\\xf4\\x90\\x80\\x80");
  EXPECT_EQ(EscapeForTerminal("\x80x"), "\\x80x");  // lone continuation
  // A bad lead byte does not swallow the valid text after it.
  EXPECT_EQ(EscapeForTerminal("\xe2\x82x\xc3\xa9"), "\\xe2\\x82x\xc3\xa9");
}

TEST(EscapeForTerminal, AsciiOnlyEscapesEveryHighByte) {
  EXPECT_EQ(EscapeForTerminal("\xc3\xa9", true), "\\xc3\\xa9");
  EXPECT_EQ(EscapeForTerminal("plain", true), "plain");
}

}  // namespace
}  // namespace nibble::tool
