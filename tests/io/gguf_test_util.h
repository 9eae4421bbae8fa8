// GGUF files built byte by byte for the io tests, independent of nibble's
// reader and writer: the expected layout is spelled out here a second time.
#ifndef NIBBLE_TESTS_IO_GGUF_TEST_UTIL_H_
#define NIBBLE_TESTS_IO_GGUF_TEST_UTIL_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace nibble::test {

inline std::string Le(uint64_t v, size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(v >> (8 * i));
  return s;
}
inline std::string Le32(uint64_t v) { return Le(v, 4); }
inline std::string Le64(uint64_t v) { return Le(v, 8); }
// u64 length + bytes.
inline std::string GStr(const std::string& s) { return Le64(s.size()) + s; }

// Value type ids.
enum : uint32_t {
  kTU8 = 0,
  kTI8 = 1,
  kTU16 = 2,
  kTI16 = 3,
  kTU32 = 4,
  kTI32 = 5,
  kTF32 = 6,
  kTBool = 7,
  kTString = 8,
  kTArray = 9,
  kTU64 = 10,
  kTI64 = 11,
  kTF64 = 12,
};

// One pair: `value` is the bytes after the type field.
struct GKv {
  std::string key;
  uint32_t type;
  std::string value;
};
inline GKv KvU32(const std::string& k, uint32_t v) {
  return {k, kTU32, Le32(v)};
}
inline GKv KvStr(const std::string& k, const std::string& v) {
  return {k, kTString, GStr(v)};
}
// Array value: element type, count, then `elements` as given.
inline std::string ArrV(uint32_t element_type, uint64_t count,
                        const std::string& elements) {
  return Le32(element_type) + Le64(count) + elements;
}

constexpr uint64_t kAutoOffset = ~uint64_t{0};

// One tensor info; `bytes` is its data size (filled with a pattern);
// `offset` kAutoOffset = the running sum of padded sizes.
struct GTi {
  std::string name;
  std::vector<uint64_t> ne;
  uint32_t type;
  uint64_t bytes;
  uint64_t offset = kAutoOffset;
};

struct GFile {
  std::string bytes;
  std::vector<int64_t> kv_at;      // start of each pair (key length)
  std::vector<int64_t> ti_at;      // start of each tensor info
  std::vector<int64_t> offset_at;  // each tensor info's offset field
  std::vector<uint64_t> offsets;   // each tensor's data offset (relative)
  int64_t header_end = 0;
  int64_t data_at = 0;
};

inline uint64_t PadTo(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

// magic, version, counts, pairs, infos, zero padding to `alignment`, data
// (each tensor's bytes = (index + 1) repeated, padded with zeros to the
// alignment, the last one too).
inline GFile BuildGguf(const std::vector<GKv>& kvs, const std::vector<GTi>& tis,
                       uint64_t alignment = 32, uint32_t version = 3) {
  GFile f;
  std::string& b = f.bytes;
  b = "GGUF" + Le32(version) + Le64(tis.size()) + Le64(kvs.size());
  for (const GKv& kv : kvs) {
    f.kv_at.push_back(static_cast<int64_t>(b.size()));
    b += GStr(kv.key) + Le32(kv.type) + kv.value;
  }
  uint64_t running = 0;
  for (const GTi& t : tis) {
    f.ti_at.push_back(static_cast<int64_t>(b.size()));
    b += GStr(t.name) + Le32(t.ne.size());
    for (uint64_t d : t.ne) b += Le64(d);
    b += Le32(t.type);
    f.offset_at.push_back(static_cast<int64_t>(b.size()));
    const uint64_t off = t.offset == kAutoOffset ? running : t.offset;
    b += Le64(off);
    f.offsets.push_back(off);
    running = PadTo(off + t.bytes, alignment);
  }
  f.header_end = static_cast<int64_t>(b.size());
  b.append(PadTo(b.size(), alignment) - b.size(), '\0');
  f.data_at = static_cast<int64_t>(b.size());
  uint64_t data_len = 0;
  for (size_t i = 0; i < tis.size(); ++i) {
    data_len =
        std::max(data_len, PadTo(f.offsets[i] + tis[i].bytes, alignment));
  }
  std::string data(data_len, '\0');
  for (size_t i = 0; i < tis.size(); ++i) {
    std::memset(&data[f.offsets[i]], static_cast<int>(i + 1), tis[i].bytes);
  }
  b += data;
  return f;
}

}  // namespace nibble::test

#endif  // NIBBLE_TESTS_IO_GGUF_TEST_UTIL_H_
