// Helpers for the io tests: scratch directories and safetensors files built
// byte by byte (independent of nibble's writer).
#ifndef NIBBLE_TESTS_IO_IO_TEST_UTIL_H_
#define NIBBLE_TESTS_IO_IO_TEST_UTIL_H_

#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace nibble::test {

// A fresh directory under TMPDIR (or /tmp), removed with its contents.
class ScratchDir {
 public:
  ScratchDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl =
        std::string(base && *base ? base : "/tmp") + "/nibble-io-test-XXXXXX";
    char* p = mkdtemp(&tmpl[0]);
    if (p == nullptr) std::abort();
    path_ = p;
  }
  ~ScratchDir() {
    std::string cmd =
        "chmod -R u+rwx '" + path_ + "' 2>/dev/null; rm -rf '" + path_ + "'";
    if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "cleanup failed\n");
  }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const {
    return path_ + "/" + name;
  }

 private:
  std::string path_;
};

inline void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(f.good()) << path;
}

inline std::string ReadBytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f),
                     std::istreambuf_iterator<char>());
}

inline bool Exists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

inline std::string U64Le(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(v >> (8 * i));
  return s;
}

// 8-byte length + header + data, exactly as given (no padding, no checks).
inline std::string SafetensorsBytes(const std::string& header,
                                    const std::string& data) {
  return U64Le(header.size()) + header + data;
}

// File offset of the first occurrence of `needle` in `header` (which starts
// at byte 8 of the file).
inline int64_t HeaderOffset(const std::string& header,
                            const std::string& needle) {
  size_t p = header.find(needle);
  EXPECT_NE(p, std::string::npos) << needle;
  return 8 + static_cast<int64_t>(p);
}

}  // namespace nibble::test

#endif  // NIBBLE_TESTS_IO_IO_TEST_UTIL_H_
