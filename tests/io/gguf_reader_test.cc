// GgufFile on files built byte by byte: valid layouts, the ggml type table,
// and every GGUF case of docs/bad-inputs.md (rows 24-33, 32a).
#include <sys/types.h>
#include <unistd.h>

#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "gguf_test_util.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "io_test_util.h"
#include "nibble/io/gguf.h"
#include "test_util.h"

namespace nibble::test {
namespace {

using io::GgmlType;
using io::GgufFile;
using io::GgufKv;
using io::GgufTensorInfo;
using io::GgufType;
using ::testing::HasSubstr;

std::unique_ptr<GgufFile> OpenOk(const std::string& path) {
  std::unique_ptr<GgufFile> f;
  Status s = GgufFile::Open(path, &f);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return f;
}

// Offsets inside a pair / tensor info of a GFile.
int64_t TypeAt(const GFile& f, size_t kv, const std::string& key) {
  return f.kv_at[kv] + 8 + static_cast<int64_t>(key.size());
}
int64_t ValueAt(const GFile& f, size_t kv, const std::string& key) {
  return TypeAt(f, kv, key) + 4;
}
int64_t DimsAt(const GFile& f, size_t t, const std::string& name) {
  return f.ti_at[t] + 8 + static_cast<int64_t>(name.size());
}
int64_t DimAt(const GFile& f, size_t t, const std::string& name, int j) {
  return DimsAt(f, t, name) + 4 + 8 * j;
}
int64_t GgmlTypeAt(const GFile& f, size_t t, const std::string& name,
                   int n_dims) {
  return DimsAt(f, t, name) + 4 + 8 * n_dims;
}

std::string F32Bits(float v) {
  uint32_t b;
  std::memcpy(&b, &v, 4);
  return Le32(b);
}
std::string F64Bits(double v) {
  uint64_t b;
  std::memcpy(&b, &v, 8);
  return Le64(b);
}

TEST(GgufReader, ReadsHandBuiltFile) {
  ScratchDir dir;
  const std::vector<GKv> kvs = {
      KvStr("general.architecture", "llama"),
      {"u8", kTU8, Le(200, 1)},
      {"i8", kTI8, Le(static_cast<uint8_t>(-5), 1)},
      {"u16", kTU16, Le(65535, 2)},
      {"i16", kTI16, Le(static_cast<uint16_t>(-300), 2)},
      KvU32("general.file_type", 1),
      {"i32", kTI32, Le32(static_cast<uint32_t>(-70000))},
      {"f32", kTF32, F32Bits(0.5f)},
      {"bool", kTBool, Le(1, 1)},
      {"u64", kTU64, Le64(~uint64_t{0})},
      {"i64", kTI64, Le64(static_cast<uint64_t>(INT64_MIN))},
      {"f64", kTF64, F64Bits(-2.25)},
      {"tokens", kTArray,
       ArrV(kTString, 3, GStr("<s>") + GStr("") + GStr("\xe2\x96\x81the"))},
      {"ints", kTArray, ArrV(kTI32, 2, Le32(7) + Le32(0xffffffffu))},
      {"bools", kTArray, ArrV(kTBool, 2, std::string("\x00\x01", 2))},
      {"empty", kTArray, ArrV(kTU8, 0, "")},
      {"empty_strings", kTArray, ArrV(kTString, 0, "")},
      KvStr("empty_string", ""),
  };
  const std::vector<GTi> tis = {
      {"a", {3, 2}, 0, 24},        // F32 [2 rows of 3]
      {"b", {5}, 1, 10},           // F16, 1-D
      {"q", {64, 2}, 8, 4 * 34},   // Q8_0: 2 blocks per row
      {"c", {7, 1, 1, 1}, 24, 7},  // I8, 4-D
  };
  const GFile g = BuildGguf(kvs, tis);
  WriteBytes(dir / "m.gguf", g.bytes);
  auto f = OpenOk(dir / "m.gguf");
  ASSERT_TRUE(f);
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->alignment(), 32u);
  EXPECT_EQ(f->file_size(), g.bytes.size());
  EXPECT_EQ(f->header_size(), static_cast<uint64_t>(g.header_end));
  EXPECT_EQ(f->data_offset(), static_cast<uint64_t>(g.data_at));
  EXPECT_EQ(f->data_offset() % 32, 0u);

  // Metadata: file order, raw bytes exactly as in the file.
  const auto& m = f->metadata();
  ASSERT_EQ(m.size(), kvs.size());
  for (size_t i = 0; i < kvs.size(); ++i) {
    SCOPED_TRACE(kvs[i].key);
    EXPECT_EQ(m[i].key(), kvs[i].key);
    EXPECT_EQ(static_cast<uint32_t>(m[i].type()), kvs[i].type);
    EXPECT_EQ(m[i].raw(), kvs[i].value);
    EXPECT_EQ(m[i].offset(), g.kv_at[i]);
    EXPECT_EQ(m[i].type_offset(), TypeAt(g, i, kvs[i].key));
    EXPECT_EQ(m[i].value_offset(), ValueAt(g, i, kvs[i].key));
  }
  std::string_view sv;
  ASSERT_TRUE(m.Find("general.architecture")->GetString(&sv));
  EXPECT_EQ(sv, "llama");
  uint64_t u = 0;
  int64_t i64 = 0;
  double d = 0;
  bool b = false;
  EXPECT_TRUE(m.Find("u8")->GetUint(&u));
  EXPECT_EQ(u, 200u);
  EXPECT_TRUE(m.Find("i8")->GetInt(&i64));
  EXPECT_EQ(i64, -5);
  EXPECT_FALSE(m.Find("i8")->GetUint(&u));  // negative
  EXPECT_TRUE(m.Find("u16")->GetUint(&u));
  EXPECT_EQ(u, 65535u);
  EXPECT_TRUE(m.Find("i16")->GetInt(&i64));
  EXPECT_EQ(i64, -300);
  EXPECT_TRUE(m.Find("general.file_type")->GetUint(&u));
  EXPECT_EQ(u, 1u);
  EXPECT_TRUE(m.Find("i32")->GetInt(&i64));
  EXPECT_EQ(i64, -70000);
  EXPECT_TRUE(m.Find("f32")->GetFloat(&d));
  EXPECT_EQ(d, 0.5);
  EXPECT_FALSE(m.Find("f32")->GetInt(&i64));
  EXPECT_TRUE(m.Find("bool")->GetBool(&b));
  EXPECT_TRUE(b);
  EXPECT_TRUE(m.Find("u64")->GetUint(&u));
  EXPECT_EQ(u, ~uint64_t{0});
  EXPECT_FALSE(m.Find("u64")->GetInt(&i64));  // > INT64_MAX
  EXPECT_TRUE(m.Find("i64")->GetInt(&i64));
  EXPECT_EQ(i64, INT64_MIN);
  EXPECT_TRUE(m.Find("f64")->GetFloat(&d));
  EXPECT_EQ(d, -2.25);
  const GgufKv* tokens = m.Find("tokens");
  ASSERT_TRUE(tokens->is_array());
  EXPECT_EQ(tokens->element_type(), GgufType::kString);
  EXPECT_EQ(tokens->count(), 3u);
  ASSERT_TRUE(tokens->GetString(&sv, 0));
  EXPECT_EQ(sv, "<s>");
  ASSERT_TRUE(tokens->GetString(&sv, 1));
  EXPECT_EQ(sv, "");
  ASSERT_TRUE(tokens->GetString(&sv, 2));
  EXPECT_EQ(sv, "\xe2\x96\x81the");
  EXPECT_FALSE(tokens->GetString(&sv, 3));
  const GgufKv* ints = m.Find("ints");
  EXPECT_EQ(ints->element_type(), GgufType::kI32);
  EXPECT_TRUE(ints->GetInt(&i64, 1));
  EXPECT_EQ(i64, -1);
  EXPECT_FALSE(ints->GetInt(&i64, 2));
  EXPECT_TRUE(m.Find("bools")->GetBool(&b, 0));
  EXPECT_FALSE(b);
  EXPECT_EQ(m.Find("empty")->count(), 0u);
  EXPECT_FALSE(m.Find("empty")->GetUint(&u, 0));
  EXPECT_EQ(m.Find("empty_strings")->count(), 0u);
  ASSERT_TRUE(m.Find("empty_string")->GetString(&sv));
  EXPECT_EQ(sv, "");
  EXPECT_EQ(m.Find("nope"), nullptr);

  // Tensors.
  ASSERT_EQ(f->tensors().size(), tis.size());
  for (size_t i = 0; i < tis.size(); ++i) {
    const GgufTensorInfo& t = f->tensors()[i];
    SCOPED_TRACE(t.name);
    EXPECT_EQ(t.name, tis[i].name);
    EXPECT_EQ(static_cast<uint32_t>(t.type), tis[i].type);
    ASSERT_EQ(t.ne.size(), tis[i].ne.size());
    for (size_t j = 0; j < t.ne.size(); ++j) {
      EXPECT_EQ(static_cast<uint64_t>(t.ne[j]), tis[i].ne[j]);
    }
    EXPECT_EQ(t.byte_size, tis[i].bytes);
    EXPECT_EQ(t.offset, g.offsets[i]);
    EXPECT_EQ(t.data_offset, g.data_at + g.offsets[i]);
    EXPECT_EQ(t.info_offset, g.ti_at[i]);
    EXPECT_EQ(t.index, i);
    EXPECT_EQ(f->Find(t.name), &t);
    const uint8_t* p = f->data(t);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(std::memcmp(p, g.bytes.data() + t.data_offset, t.byte_size), 0);
    EXPECT_EQ(p[0], i + 1);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 32, 0u);
  }
  EXPECT_EQ(f->tensors()[0].n_elements, 6);
  EXPECT_EQ(f->tensors()[0].shape(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(f->tensors()[2].n_elements, 128);
  EXPECT_EQ(f->Find("zzz"), nullptr);

  // The in-memory parser sees the same header.
  io::GgufHeader h;
  Status s =
      io::ParseGgufHeader(reinterpret_cast<const uint8_t*>(g.bytes.data()),
                          g.bytes.size(), "mem", &h);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(h.data_offset, f->data_offset());
  ASSERT_EQ(h.metadata.size(), m.size());
  for (size_t i = 0; i < m.size(); ++i) {
    EXPECT_EQ(h.metadata[i].raw(), m[i].raw());
  }
  ASSERT_EQ(h.tensors.size(), f->tensors().size());
}

TEST(GgufReader, VersionTwoAndCustomAlignments) {
  ScratchDir dir;
  for (uint32_t version : {2u, 3u}) {
    for (uint32_t a : {1u, 8u, 32u, 64u, 4096u}) {
      SCOPED_TRACE("v" + std::to_string(version) + " a" + std::to_string(a));
      std::vector<GKv> kvs = {KvStr("general.name", "x")};
      if (a != 32) kvs.push_back(KvU32("general.alignment", a));
      const GFile g = BuildGguf(
          kvs, {{"w", {3}, 0, 12}, {"v", {5}, 1, 10}, {"u", {2, 2}, 0, 16}}, a,
          version);
      const std::string path = dir / "a.gguf";
      WriteBytes(path, g.bytes);
      auto f = OpenOk(path);
      ASSERT_TRUE(f);
      EXPECT_EQ(f->version(), version);
      EXPECT_EQ(f->alignment(), a);
      EXPECT_EQ(f->data_offset(), static_cast<uint64_t>(g.data_at));
      EXPECT_EQ(f->data_offset() % a, 0u);
      for (size_t i = 0; i < 3; ++i) {
        EXPECT_EQ(f->tensors()[i].offset % a, 0u);
        EXPECT_EQ(f->tensors()[i].offset, g.offsets[i]);
      }
    }
  }
}

TEST(GgufReader, NoTensorsNoPairs) {
  ScratchDir dir;
  const GFile g = BuildGguf({}, {});
  ASSERT_EQ(g.bytes.size(), 32u);  // 24-byte header padded to 32
  // Padded, unpadded (ggml's reader does not seek without tensors) and cut
  // inside the padding: all accepted.
  for (size_t n : {24u, 28u, 32u}) {
    WriteBytes(dir / "e.gguf", g.bytes.substr(0, n));
    auto f = OpenOk(dir / "e.gguf");
    ASSERT_TRUE(f);
    EXPECT_TRUE(f->tensors().empty());
    EXPECT_TRUE(f->metadata().empty());
    EXPECT_EQ(f->header_size(), 24u);
    EXPECT_EQ(f->data_offset(), 32u);
  }
}

TEST(GgufReader, LastTensorPaddingMayBeAbsent) {
  ScratchDir dir;
  const GFile g = BuildGguf({}, {{"w", {1}, 0, 4}});
  const size_t end = static_cast<size_t>(g.data_at) + 4;
  for (size_t n = end; n <= g.bytes.size(); ++n) {
    WriteBytes(dir / "p.gguf", g.bytes.substr(0, n));
    EXPECT_TRUE(OpenOk(dir / "p.gguf")) << n;
  }
}

TEST(GgufReader, EveryGgmlTypeReads) {
  ScratchDir dir;
  std::vector<GTi> tis;
  for (GgmlType t : io::AllGgmlTypes()) {
    const io::GgmlTypeInfo& row = io::GgmlTypeTraits(t);
    tis.push_back({std::string("t.") + row.name,
                   {row.block_size, 2},
                   static_cast<uint32_t>(t),
                   2ull * row.type_size});
  }
  const GFile g = BuildGguf({KvU32("general.alignment", 64)}, tis, 64);
  WriteBytes(dir / "all.gguf", g.bytes);
  auto f = OpenOk(dir / "all.gguf");
  ASSERT_TRUE(f);
  ASSERT_EQ(f->tensors().size(), tis.size());
  for (size_t i = 0; i < tis.size(); ++i) {
    EXPECT_EQ(f->tensors()[i].byte_size, tis[i].bytes) << tis[i].name;
  }
}

TEST(GgufReader, TypeTable) {
  struct Row {
    uint32_t id;
    const char* name;
    uint32_t block, size;
  };
  // ggml.h ids, ggml-common.h block structs.
  const Row rows[] = {
      {0, "F32", 1, 4},         {1, "F16", 1, 2},
      {2, "Q4_0", 32, 18},      {3, "Q4_1", 32, 20},
      {6, "Q5_0", 32, 22},      {7, "Q5_1", 32, 24},
      {8, "Q8_0", 32, 34},      {9, "Q8_1", 32, 36},
      {10, "Q2_K", 256, 84},    {11, "Q3_K", 256, 110},
      {12, "Q4_K", 256, 144},   {13, "Q5_K", 256, 176},
      {14, "Q6_K", 256, 210},   {15, "Q8_K", 256, 292},
      {16, "IQ2_XXS", 256, 66}, {17, "IQ2_XS", 256, 74},
      {18, "IQ3_XXS", 256, 98}, {19, "IQ1_S", 256, 50},
      {20, "IQ4_NL", 32, 18},   {21, "IQ3_S", 256, 110},
      {22, "IQ2_S", 256, 82},   {23, "IQ4_XS", 256, 136},
      {24, "I8", 1, 1},         {25, "I16", 1, 2},
      {26, "I32", 1, 4},        {27, "I64", 1, 8},
      {28, "F64", 1, 8},        {29, "IQ1_M", 256, 56},
      {30, "BF16", 1, 2},       {34, "TQ1_0", 256, 54},
      {35, "TQ2_0", 256, 66},   {39, "MXFP4", 32, 17},
      {40, "NVFP4", 64, 36},    {41, "Q1_0", 128, 18},
  };
  ASSERT_EQ(io::AllGgmlTypes().size(), sizeof(rows) / sizeof(rows[0]));
  for (const Row& r : rows) {
    const io::GgmlTypeInfo* info = io::FindGgmlType(r.id);
    ASSERT_NE(info, nullptr) << r.name;
    EXPECT_STREQ(info->name, r.name);
    EXPECT_EQ(info->block_size, r.block) << r.name;
    EXPECT_EQ(info->type_size, r.size) << r.name;
  }
  for (uint32_t removed : {4u, 5u, 31u, 32u, 33u, 36u, 37u, 38u, 42u, 1000u}) {
    EXPECT_EQ(io::FindGgmlType(removed), nullptr) << removed;
  }
  DType k;
  ASSERT_TRUE(io::GgmlTypeToKernel(GgmlType::kBF16, &k));
  EXPECT_EQ(k, DType::kBF16);
  EXPECT_FALSE(io::GgmlTypeToKernel(GgmlType::kQ8_0, &k));
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
    ASSERT_TRUE(io::GgmlTypeToKernel(io::KernelToGgmlType(dt), &k));
    EXPECT_EQ(k, dt);
  }
  int64_t el;
  uint64_t bytes;
  ASSERT_TRUE(io::GgmlTensorByteSize(GgmlType::kQ8_0, {64, 3}, &el, &bytes));
  EXPECT_EQ(el, 192);
  EXPECT_EQ(bytes, 6u * 34);
  EXPECT_FALSE(io::GgmlTensorByteSize(GgmlType::kQ8_0, {33}, &el, &bytes));
  EXPECT_FALSE(io::GgmlTensorByteSize(GgmlType::kF32, {}, &el, &bytes));
  EXPECT_FALSE(
      io::GgmlTensorByteSize(GgmlType::kF32, {1, 1, 1, 1, 1}, &el, &bytes));
  EXPECT_FALSE(io::GgmlTensorByteSize(GgmlType::kF32, {4, 0}, &el, &bytes));
  EXPECT_FALSE(io::GgmlTensorByteSize(
      GgmlType::kF32, {int64_t{1} << 32, int64_t{1} << 32}, &el, &bytes));
  // 2^62 elements of F32: the element count fits, the byte size does not.
  EXPECT_FALSE(
      io::GgmlTensorByteSize(GgmlType::kF32, {int64_t{1} << 62}, &el, &bytes));
}

// ---------------------------------------------------------------------------
// Hostile inputs: the file's bytes, fragments the message must contain, and
// the expected offset.

struct BadCase {
  std::string label;
  std::string bytes;
  std::vector<std::string> fragments;
  int64_t offset;
};

std::string Head(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
  return "GGUF" + Le32(version) + Le64(n_tensors) + Le64(n_kv);
}

std::vector<BadCase> BadCases() {
  std::vector<BadCase> c;
  const std::string pad(64, '\0');
  // --- 24: magic, version, endianness, short files.
  c.push_back({"empty", "", {"too short to be GGUF (0 bytes)"}, 0});
  c.push_back({"three_bytes", "GGU", {"too short to be GGUF (3 bytes)"}, 0});
  c.push_back({"magic",
               "GGUX" + Head(0, 0).substr(4),
               {"not a GGUF file", "47 47 55 58"},
               0});
  c.push_back({"safetensors_magic",
               Le64(2) + "{}",
               {"not a GGUF file", "02 00 00 00"},
               0});
  c.push_back(
      {"version_1", Head(0, 0, 1), {"GGUF version 1 is not supported"}, 4});
  c.push_back(
      {"version_4", Head(0, 0, 4), {"GGUF version 4 is not supported"}, 4});
  c.push_back(
      {"version_0", Head(0, 0, 0), {"GGUF version 0 is not supported"}, 4});
  c.push_back({"big_endian",
               "GGUF" + std::string("\0\0\0\3", 4) + std::string(16, '\0'),
               {"reads 0x03000000", "version 3 byte-swapped", "big-endian"},
               4});
  c.push_back({"big_endian_v2",
               "GGUF" + std::string("\0\0\0\2", 4) + std::string(16, '\0'),
               {"version 2 byte-swapped", "big-endian"},
               4});
  c.push_back({"header_cut",
               Head(0, 0).substr(0, 18),
               {"file ends inside the GGUF header (n_kv)", "2 left"},
               16});
  c.push_back({"version_cut",
               std::string("GGUF\3\0", 6),
               {"file ends inside the GGUF header (version)"},
               4});
  // --- 25: counts bounded by the bytes left, before any allocation.
  c.push_back({"n_tensors_2p62",
               Head(uint64_t{1} << 62, 0) + pad,
               {"n_tensors 4611686018427387904 cannot fit", "64 bytes"},
               8});
  c.push_back({"n_kv_2p62",
               Head(0, uint64_t{1} << 62) + pad,
               {"n_kv 4611686018427387904 cannot fit"},
               16});
  c.push_back({"n_kv_max",
               Head(0, ~uint64_t{0}) + pad,
               {"n_kv 18446744073709551615 cannot fit"},
               16});
  c.push_back({"counts_together",
               Head(1, 3) + std::string(70, '\0'),
               {"n_tensors 1 and n_kv 3 cannot both fit", "70 bytes"},
               8});
  // --- 26: lengths beyond the limit or the bytes left.
  {
    const std::string b = Head(0, 1) + Le64(uint64_t{1} << 60) + pad;
    c.push_back({"key_len_2p60",
                 b,
                 {"key-value pair 0: key length 1152921504606846976 exceeds "
                  "the limit of 1073741824 bytes"},
                 24});
    c.push_back({"key_len_past_end",
                 Head(0, 1) + Le64(100) + std::string(20, 'k'),
                 {"key length 100 exceeds the 20 bytes left in the file"},
                 24});
  }
  {
    GFile g =
        BuildGguf({{"general.name", kTString, Le64(uint64_t{1} << 60)}}, {});
    c.push_back({"string_len_2p60",
                 g.bytes,
                 {"key 'general.name'",
                  "string length 1152921504606846976 "
                  "exceeds the limit"},
                 ValueAt(g, 0, "general.name")});
    g = BuildGguf({{"general.name", kTString, Le64(1000) + "abc"}}, {});
    c.push_back({"string_len_past_end",
                 g.bytes,
                 {"key 'general.name'", "string length 1000 exceeds the",
                  "bytes left in the file"},
                 ValueAt(g, 0, "general.name")});
    g = BuildGguf({{"tokenizer.ggml.tokens", kTArray,
                    ArrV(kTString, uint64_t{1} << 60, "")}},
                  {});
    c.push_back({"array_count_2p60",
                 g.bytes,
                 {"key 'tokenizer.ggml.tokens'",
                  "array of 1152921504606846976 elements exceeds the limit of "
                  "1073741824"},
                 ValueAt(g, 0, "tokenizer.ggml.tokens") + 4});
    g = BuildGguf({{"scores", kTArray, ArrV(kTU64, 1000, Le64(1))}}, {});
    c.push_back({"array_past_end",
                 g.bytes,
                 {"key 'scores'",
                  "array of 1000 u64 elements needs at least "
                  "8000 bytes"},
                 ValueAt(g, 0, "scores") + 4});
    g = BuildGguf({{"tokens", kTArray,
                    ArrV(kTString, 3, GStr("a") + Le64(uint64_t{1} << 60))}},
                  {});
    c.push_back({"string_element_len",
                 g.bytes,
                 {"key 'tokens'",
                  "string element 1 length "
                  "1152921504606846976 exceeds the limit"},
                 ValueAt(g, 0, "tokens") + 12 + 9});
    g = BuildGguf({{"x", kTU64, "\1\2"}}, {});
    c.push_back({"value_cut",
                 g.bytes.substr(0, static_cast<size_t>(ValueAt(g, 0, "x")) + 2),
                 {"key 'x'",
                  "file ends inside the u64 value: needs 8 bytes, 2 "
                  "left"},
                 ValueAt(g, 0, "x")});
    c.push_back({"tensor_name_len_2p60",
                 Head(1, 0) + Le64(uint64_t{1} << 60) + pad,
                 {"tensor info 0: tensor name length 1152921504606846976 "
                  "exceeds the limit"},
                 24});
  }
  // --- 27: value types.
  {
    GFile g = BuildGguf({{"x", 13, Le32(0)}}, {});
    c.push_back({"unknown_value_type",
                 g.bytes,
                 {"key 'x'", "unknown value type 13"},
                 TypeAt(g, 0, "x")});
    g = BuildGguf({{"x", 0xffffffffu, Le32(0)}}, {});
    c.push_back({"value_type_max",
                 g.bytes,
                 {"key 'x'", "unknown value type 4294967295"},
                 TypeAt(g, 0, "x")});
    g = BuildGguf({{"x", kTArray, ArrV(13, 1, Le32(0))}}, {});
    c.push_back({"array_of_unknown",
                 g.bytes,
                 {"key 'x'", "array of unknown value type 13"},
                 ValueAt(g, 0, "x")});
    g = BuildGguf({{"x", kTArray, ArrV(kTArray, 1, ArrV(kTU8, 1, "\1"))}}, {});
    c.push_back({"nested_array",
                 g.bytes,
                 {"key 'x'", "nested arrays"},
                 ValueAt(g, 0, "x")});
    g = BuildGguf({{"flag", kTBool, "\2"}}, {});
    c.push_back({"bool_2",
                 g.bytes,
                 {"key 'flag'", "bool value is 2, not 0 or 1"},
                 ValueAt(g, 0, "flag")});
    g = BuildGguf(
        {{"flags", kTArray, ArrV(kTBool, 3, std::string("\1\377\0", 3))}}, {});
    c.push_back({"bool_array_255",
                 g.bytes,
                 {"key 'flags'", "bool element 1 is 255"},
                 ValueAt(g, 0, "flags") + 12 + 1});
    g = BuildGguf({{"", kTU8, "\1"}, KvU32("a", 1)}, {});
    c.push_back({"empty_key", g.bytes, {"key-value pair 0: empty key"}, 24});
    g = BuildGguf({KvU32("a", 1), {std::string("gen\0eral", 8), kTU8, "\1"}},
                  {});
    c.push_back({"nul_in_key",
                 g.bytes,
                 {"key 'gen\\x00eral'", "key contains a NUL byte"},
                 g.kv_at[1]});
  }
  // --- 28: duplicates, names.
  {
    GFile g = BuildGguf({KvU32("a", 1), KvU32("b", 2), KvU32("a", 3)}, {});
    c.push_back(
        {"duplicate_key", g.bytes, {"key 'a'", "duplicate key"}, g.kv_at[2]});
    g = BuildGguf({}, {{"w", {1}, 0, 4}, {"w", {1}, 0, 4}});
    c.push_back({"duplicate_tensor",
                 g.bytes,
                 {"tensor 'w'", "duplicate tensor name"},
                 g.ti_at[1]});
    const std::string n64(64, 'n');
    g = BuildGguf({}, {{n64, {1}, 0, 4}});
    c.push_back(
        {"name_64",
         g.bytes,
         {"tensor '" + n64 + "'", "name of 64 bytes is too long", "at most 63"},
         g.ti_at[0]});
    g = BuildGguf({}, {{"ok", {1}, 0, 4}, {std::string("a\0b", 3), {1}, 0, 4}});
    c.push_back({"nul_in_name",
                 g.bytes,
                 {"tensor 'a\\x00b'", "name contains a NUL byte"},
                 g.ti_at[1]});
    g = BuildGguf({}, {{"", {1}, 0, 4}});
    c.push_back({"empty_name",
                 g.bytes,
                 {"tensor info 0: empty tensor name"},
                 g.ti_at[0]});
  }
  // --- 29: dimensions.
  {
    GFile g = BuildGguf({}, {{"w", {}, 0, 4}});
    c.push_back({"n_dims_0",
                 g.bytes,
                 {"tensor 'w'", "n_dims is 0, not in 1..4"},
                 DimsAt(g, 0, "w")});
    g = BuildGguf({}, {{"w", {1, 1, 1, 1, 1}, 0, 4}});
    c.push_back({"n_dims_5",
                 g.bytes,
                 {"tensor 'w'", "n_dims is 5"},
                 DimsAt(g, 0, "w")});
    g = BuildGguf({}, {{"w", {4, 0}, 0, 16}});
    c.push_back(
        {"dim_0", g.bytes, {"tensor 'w'", "ne[1] is 0"}, DimAt(g, 0, "w", 1)});
    g = BuildGguf({}, {{"w", {uint64_t{1} << 63}, 0, 4}});
    c.push_back(
        {"dim_2p63",
         g.bytes,
         {"tensor 'w'", "ne[0] = 9223372036854775808 exceeds INT64_MAX"},
         DimAt(g, 0, "w", 0)});
    // 32a: [2^32, 2^32] has 2^64 elements, which wraps to 0 in 64 bits.
    g = BuildGguf({}, {{"w", {uint64_t{1} << 32, uint64_t{1} << 32}, 0, 4}});
    c.push_back({"dims_wrap_to_zero",
                 g.bytes,
                 {"tensor 'w'",
                  "element count of ne [4294967296, 4294967296] overflows"},
                 DimAt(g, 0, "w", 1)});
    g = BuildGguf({}, {{"w", {uint64_t{1} << 62, 2, 1}, 0, 4}});
    c.push_back({"dims_above_int64",
                 g.bytes,
                 {"tensor 'w'", "overflows (more than INT64_MAX elements)"},
                 DimAt(g, 0, "w", 1)});
  }
  // --- 30: ggml type ids.
  for (uint32_t id : {4u, 31u, 42u, 0xffffffffu}) {
    GFile g = BuildGguf({}, {{"blk.0.attn_q.weight", {32}, id, 32}});
    c.push_back({"ggml_type_" + std::to_string(id),
                 g.bytes,
                 {"tensor 'blk.0.attn_q.weight'",
                  "unknown ggml type " + std::to_string(id)},
                 GgmlTypeAt(g, 0, "blk.0.attn_q.weight", 1)});
  }
  // --- 31: general.alignment.
  for (uint32_t a : {0u, 48u, 3u}) {
    GFile g = BuildGguf(
        {KvStr("general.name", "m"), KvU32("general.alignment", a)}, {});
    c.push_back(
        {"alignment_" + std::to_string(a),
         g.bytes,
         {"key 'general.alignment'",
          "alignment " + std::to_string(a) + " is not a non-zero power of two"},
         ValueAt(g, 1, "general.alignment")});
  }
  {
    GFile g = BuildGguf({{"general.alignment", kTU64, Le64(32)}}, {});
    c.push_back({"alignment_u64",
                 g.bytes,
                 {"key 'general.alignment'", "must be a u32, not u64"},
                 TypeAt(g, 0, "general.alignment")});
    g = BuildGguf({{"general.alignment", kTI32, Le32(32)}}, {});
    c.push_back({"alignment_i32",
                 g.bytes,
                 {"must be a u32, not i32"},
                 TypeAt(g, 0, "general.alignment")});
    g = BuildGguf({{"general.alignment", kTArray, ArrV(kTU32, 1, Le32(32))}},
                  {});
    c.push_back({"alignment_array",
                 g.bytes,
                 {"must be a u32, not array of u32"},
                 TypeAt(g, 0, "general.alignment")});
  }
  // --- 32: offsets.
  {
    GFile g = BuildGguf({}, {{"a", {1}, 0, 4}, {"b", {1}, 0, 4, 4}});
    c.push_back(
        {"offset_unaligned",
         g.bytes,
         {"tensor 'b'", "data offset 4 is not a multiple of the alignment 32"},
         g.offset_at[1]});
    // c is stored before b although its info comes after b's.
    g = BuildGguf(
        {},
        {{"a", {8}, 0, 32, 0}, {"b", {8}, 0, 32, 32}, {"c", {8}, 0, 32, 0}});
    c.push_back({"out_of_order",
                 g.bytes,
                 {"tensor 'c'", "data offset 0 lies before tensor 'b' at 32",
                  "order of their infos"},
                 g.offset_at[2]});
    g = BuildGguf({}, {{"a", {16}, 0, 64, 0}, {"b", {8}, 0, 32, 32}});
    c.push_back(
        {"overlap",
         g.bytes,
         {"tensor 'b'", "data offset 32 overlaps tensor 'a'", "[0, 64)"},
         g.offset_at[1]});
    g = BuildGguf({}, {{"a", {8}, 0, 32, 0}, {"b", {8}, 0, 32, 64}});
    c.push_back({"hole",
                 g.bytes,
                 {"tensor 'b'", "leaves a hole", "[32, 64)"},
                 g.offset_at[1]});
    g = BuildGguf({}, {{"a", {8}, 0, 32, 32}});
    c.push_back({"hole_at_start",
                 g.bytes,
                 {"tensor 'a'", "leaves a hole", "[0, 32)"},
                 g.offset_at[0]});
    g = BuildGguf({}, {{"a", {8}, 0, 32}, {"b", {8}, 0, 32}});
    c.push_back({"past_end",
                 g.bytes.substr(0, g.bytes.size() - 1),
                 {"tensor 'b'", "lie past its end"},
                 g.offset_at[1]});
    c.push_back({"trailing_byte",
                 g.bytes + "x",
                 {"1 bytes after the last tensor 'b'"},
                 static_cast<int64_t>(g.bytes.size())});
    g = BuildGguf({}, {{"a", {1}, 0, 4}});
    c.push_back({"trailing_after_padding",
                 g.bytes + std::string(7, '\0'),
                 {"7 bytes after the last tensor 'a'",
                  "ends at byte " + std::to_string(g.data_at + 4)},
                 static_cast<int64_t>(g.bytes.size())});
    g = BuildGguf({KvStr("general.name", "m")}, {});
    c.push_back({"trailing_without_tensors",
                 g.bytes + "junk",
                 {"4 bytes after the header of a file without tensors"},
                 static_cast<int64_t>(g.bytes.size())});
  }
  // --- 32a: a byte size of 2^64 - 4 in a 96-byte file.
  {
    GFile g = BuildGguf({}, {{"w", {(uint64_t{1} << 62) - 1}, 0, 32}});
    EXPECT_EQ(g.bytes.size(), 96u);
    c.push_back({"size_2p64_minus_4",
                 g.bytes,
                 {"tensor 'w'", "18446744073709551612 bytes",
                  "extend past the end of the file (96 bytes)"},
                 g.offset_at[0]});
    g = BuildGguf({}, {{"w", {uint64_t{1} << 61}, 0, 32}});
    c.push_back({"size_2p63",
                 g.bytes,
                 {"tensor 'w'", "9223372036854775808 bytes",
                  "past the end of the file"},
                 g.offset_at[0]});
  }
  // --- 33: row length not a multiple of the block size.
  {
    GFile g = BuildGguf({}, {{"blk.0.ffn_down.weight", {33, 2}, 8, 68}});
    c.push_back({"q8_0_row_33",
                 g.bytes,
                 {"tensor 'blk.0.ffn_down.weight'",
                  "row length ne[0] = 33 is not a multiple of the block size "
                  "32 of Q8_0"},
                 GgmlTypeAt(g, 0, "blk.0.ffn_down.weight", 2)});
    g = BuildGguf({}, {{"k", {32}, 12, 144}});
    c.push_back({"q4_k_row_32",
                 g.bytes,
                 {"tensor 'k'", "block size 256 of Q4_K"},
                 GgmlTypeAt(g, 0, "k", 1)});
  }
  return c;
}

TEST(GgufReader, RejectsHostileInputs) {
  ScratchDir dir;
  const std::vector<BadCase> cases = BadCases();
  EXPECT_GE(cases.size(), 60u);
  for (const BadCase& bc : cases) {
    SCOPED_TRACE(bc.label);
    const std::string path = dir / (bc.label + ".gguf");
    WriteBytes(path, bc.bytes);
    std::unique_ptr<GgufFile> f;
    Status s = GgufFile::Open(path, &f);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.code(), StatusCode::kBadFormat) << s.ToString();
    EXPECT_EQ(f, nullptr);
    EXPECT_THAT(s.message(), HasSubstr(path + ": "));
    for (const std::string& frag : bc.fragments) {
      EXPECT_THAT(s.message(), HasSubstr(frag));
    }
    EXPECT_EQ(s.offset(), bc.offset) << s.message();
    EXPECT_THAT(s.message(),
                HasSubstr("(byte " + std::to_string(s.offset()) + ")"));
    // The in-memory parser agrees.
    io::GgufHeader h;
    Status m =
        io::ParseGgufHeader(reinterpret_cast<const uint8_t*>(bc.bytes.data()),
                            bc.bytes.size(), path, &h);
    EXPECT_EQ(m.code(), StatusCode::kBadFormat);
    EXPECT_EQ(m.message(), s.message());
  }
}

TEST(GgufReader, NameOf63BytesIsAccepted) {
  ScratchDir dir;
  const std::string n63(63, 'n');
  WriteBytes(dir / "n.gguf", BuildGguf({}, {{n63, {1}, 0, 4}}).bytes);
  auto f = OpenOk(dir / "n.gguf");
  ASSERT_TRUE(f);
  EXPECT_EQ(f->tensors()[0].name, n63);
}

// Every prefix of a valid file that cuts into a tensor is refused cleanly;
// every single-byte corruption of the header either parses or is refused
// with kBadFormat (never a crash, an overflow or a huge allocation).
TEST(GgufReader, TruncationsAndCorruptions) {
  NIBBLE_TRACE_SEED();
  const GFile g =
      BuildGguf({KvStr("general.architecture", "llama"),
                 KvU32("general.alignment", 64),
                 {"tokens", kTArray, ArrV(kTString, 2, GStr("a") + GStr("bc"))},
                 {"scores", kTArray, ArrV(kTF32, 2, F32Bits(1) + F32Bits(2))}},
                {{"w", {32, 2}, 8, 68}, {"v", {3}, 0, 12}}, 64);
  const uint8_t* p = reinterpret_cast<const uint8_t*>(g.bytes.data());
  const size_t end_of_data = static_cast<size_t>(g.data_at + g.offsets[1]) + 12;
  ASSERT_EQ(g.offsets[1], 128u);  // 68 bytes of Q8_0 padded to 64
  for (size_t n = 0; n < end_of_data; ++n) {
    io::GgufHeader h;
    Status s = io::ParseGgufHeader(p, n, "cut", &h);
    ASSERT_EQ(s.code(), StatusCode::kBadFormat) << n;
    ASSERT_GE(s.offset(), 0);
    ASSERT_LE(s.offset(), static_cast<int64_t>(n)) << s.message();
  }
  Rng rng = MakeRng();
  std::string mutated;
  int ok = 0, bad = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    mutated = g.bytes;
    const int flips = 1 + static_cast<int>(rng() % 3);
    for (int k = 0; k < flips; ++k) {
      const size_t at = rng() % static_cast<size_t>(g.data_at);
      mutated[at] = static_cast<char>(rng() & 0xff);
    }
    io::GgufHeader h;
    Status s =
        io::ParseGgufHeader(reinterpret_cast<const uint8_t*>(mutated.data()),
                            mutated.size(), "mut", &h);
    if (s.ok()) {
      ++ok;
      for (const GgufTensorInfo& t : h.tensors) {
        ASSERT_LE(t.data_offset + t.byte_size, mutated.size());
      }
    } else {
      ++bad;
      ASSERT_EQ(s.code(), StatusCode::kBadFormat) << s.message();
      ASSERT_GE(s.offset(), 0);
    }
  }
  EXPECT_GT(bad, 0);
  EXPECT_GT(ok, 0);
}

TEST(GgufReader, MissingFileIsIoError) {
  ScratchDir dir;
  std::unique_ptr<GgufFile> f;
  EXPECT_EQ(GgufFile::Open(dir / "nothing.gguf", &f).code(),
            StatusCode::kIoError);
  EXPECT_EQ(GgufFile::Open(dir.path(), &f).code(), StatusCode::kIoError);
}

TEST(GgufReader, TruncatedWhileMapped) {
  ScratchDir dir;
  const GFile g =
      BuildGguf({}, {{"w", {1024}, 0, 4096}, {"v", {1024}, 0, 4096}});
  WriteBytes(dir / "t.gguf", g.bytes);
  auto f = OpenOk(dir / "t.gguf");
  ASSERT_TRUE(f);
  ASSERT_NE(f->data(f->tensors()[0]), nullptr);
  ASSERT_EQ(truncate((dir / "t.gguf").c_str(), 100), 0);
  const uint8_t* p = nullptr;
  Status s = f->TensorData(f->tensors()[1], &p);
  EXPECT_EQ(s.code(), StatusCode::kIoError);
  EXPECT_THAT(s.message(), HasSubstr("shrank"));
  EXPECT_EQ(p, nullptr);
}

TEST(GgufReader, ForeignTensorInfoRefused) {
  ScratchDir dir;
  WriteBytes(dir / "a.gguf", BuildGguf({}, {{"w", {1}, 0, 4}}).bytes);
  auto f = OpenOk(dir / "a.gguf");
  ASSERT_TRUE(f);
  GgufTensorInfo other = f->tensors()[0];
  other.name = "zzz";
  const uint8_t* p = nullptr;
  EXPECT_EQ(f->TensorData(other, &p).code(), StatusCode::kInvalidArgument);
  other = f->tensors()[0];
  other.index = 5;
  EXPECT_EQ(f->TensorData(other, &p).code(), StatusCode::kInvalidArgument);
  GgufTensorInfo copy = f->tensors()[0];
  EXPECT_NE(f->data(copy), nullptr);
}

}  // namespace
}  // namespace nibble::test
