// SafetensorsFile on files built byte by byte: valid layouts and every
// safetensors case of docs/bad-inputs.md (rows 1-15, 18).
#include <sys/types.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "io_test_util.h"
#include "nibble/io/safetensors.h"

namespace nibble::test {
namespace {

using io::SafetensorsFile;
using io::StDtype;
using ::testing::HasSubstr;

std::unique_ptr<SafetensorsFile> OpenOk(const std::string& path) {
  std::unique_ptr<SafetensorsFile> f;
  Status s = SafetensorsFile::Open(path, &f);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return f;
}

TEST(SafetensorsReader, ReadsHandBuiltFile) {
  ScratchDir dir;
  // Header order differs from data order; whitespace around everything.
  const std::string header =
      " \n{ \"__metadata__\" : {\"format\": \"pt\", \"k\": \"v\"},\n"
      "  \"b\": {\"dtype\": \"F16\", \"shape\": [2, 2], "
      "\"data_offsets\": [8, 16]},\n"
      "  \"a\": {\"data_offsets\": [0, 8], \"shape\": [], \"dtype\": \"I64\"}"
      "}   ";
  std::string data;
  for (int i = 0; i < 16; ++i) data += static_cast<char>(i);
  WriteBytes(dir / "m.safetensors", SafetensorsBytes(header, data));
  auto f = OpenOk(dir / "m.safetensors");
  ASSERT_TRUE(f);
  EXPECT_EQ(f->file_size(), 8 + header.size() + 16);
  EXPECT_EQ(f->header_size(), header.size());
  EXPECT_EQ(f->data_offset(), 8 + header.size());
  EXPECT_EQ(f->data_size(), 16u);
  ASSERT_EQ(f->tensors().size(), 2u);
  const io::TensorInfo& b = f->tensors()[0];
  EXPECT_EQ(b.name, "b");
  EXPECT_EQ(b.dtype, StDtype::kF16);
  EXPECT_EQ(b.shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(b.num_elements, 4);
  EXPECT_EQ(b.begin, 8u);
  EXPECT_EQ(b.end, 16u);
  EXPECT_EQ(b.header_offset, HeaderOffset(header, "\"b\""));
  const io::TensorInfo& a = f->tensors()[1];
  EXPECT_EQ(a.name, "a");
  EXPECT_TRUE(a.shape.empty());
  EXPECT_EQ(a.num_elements, 1);
  EXPECT_EQ(f->data_order(), (std::vector<size_t>{1, 0}));
  ASSERT_TRUE(f->has_metadata());
  EXPECT_EQ(f->metadata(), (io::Metadata{{"format", "pt"}, {"k", "v"}}));
  const uint8_t* p = f->data(b);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(std::memcmp(p, data.data() + 8, 8), 0);
  EXPECT_EQ(std::memcmp(f->data(a), data.data(), 8), 0);
  EXPECT_EQ(f->Find("a"), &a);
  EXPECT_EQ(f->Find("c"), nullptr);
}

TEST(SafetensorsReader, ZeroElementScalarAndEmptyFile) {
  ScratchDir dir;
  // Row 14 and 15: [0, 4] and [4, 0] hold 0 bytes; scalar; 1-D.
  const std::string header =
      "{\"z\":{\"dtype\":\"F32\",\"shape\":[0,4],\"data_offsets\":[0,0]},"
      "\"s\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[0,2]},"
      "\"z2\":{\"dtype\":\"F16\",\"shape\":[4,0],\"data_offsets\":[2,2]},"
      "\"v\":{\"dtype\":\"F8_E4M3\",\"shape\":[3],\"data_offsets\":[2,5]},"
      "\"q\":{\"dtype\":\"F4\",\"shape\":[2,3],\"data_offsets\":[5,8]}}";
  WriteBytes(dir / "a.safetensors", SafetensorsBytes(header, "01234567"));
  auto f = OpenOk(dir / "a.safetensors");
  ASSERT_TRUE(f);
  ASSERT_EQ(f->tensors().size(), 5u);
  EXPECT_EQ(f->tensors()[0].num_elements, 0);
  EXPECT_EQ(f->tensors()[0].byte_size(), 0u);
  EXPECT_NE(f->data(f->tensors()[0]), nullptr);
  EXPECT_EQ(f->tensors()[1].num_elements, 1);
  EXPECT_EQ(f->tensors()[4].byte_size(), 3u);
  EXPECT_FALSE(f->has_metadata());

  // No tensors at all: "{}" and an empty data section.
  WriteBytes(dir / "e.safetensors", SafetensorsBytes("{}      ", ""));
  auto e = OpenOk(dir / "e.safetensors");
  ASSERT_TRUE(e);
  EXPECT_TRUE(e->tensors().empty());
}

TEST(SafetensorsReader, EveryDtypeName) {
  const char* names[] = {
      "F64",         "F32", "F16",     "BF16",    "I64",     "I32",
      "I16",         "I8",  "U64",     "U32",     "U16",     "U8",
      "BOOL",        "C64", "F8_E4M3", "F8_E5M2", "F8_E8M0", "F8_E4M3FNUZ",
      "F8_E5M2FNUZ", "F4",  "F6_E2M3", "F6_E3M2"};
  for (const char* n : names) {
    StDtype d;
    ASSERT_TRUE(io::ParseStDtype(n, &d)) << n;
    EXPECT_STREQ(io::StDtypeName(d), n);
  }
  StDtype d;
  EXPECT_FALSE(io::ParseStDtype("f16", &d));
  EXPECT_FALSE(io::ParseStDtype("F8", &d));
  int64_t el;
  uint64_t bytes;
  ASSERT_TRUE(io::StTensorByteSize(StDtype::kF6E2M3, {4}, &el, &bytes));
  EXPECT_EQ(bytes, 3u);
  EXPECT_FALSE(io::StTensorByteSize(StDtype::kF6E2M3, {3}, &el, &bytes));
  EXPECT_FALSE(
      io::StTensorByteSize(StDtype::kF32, {1LL << 40, 1LL << 40}, &el, &bytes));
}

// ---------------------------------------------------------------------------
// Hostile inputs. Each case: the file's bytes, a fragment the message must
// contain (tensor/field/key), and the expected offset (-2: any >= 0).

struct BadCase {
  const char* label;
  std::string bytes;
  std::vector<std::string> fragments;
  int64_t offset;
};

std::string Entry(const std::string& name, const std::string& body) {
  return "\"" + name + "\":{" + body + "}";
}
std::string Ok(const std::string& name, uint64_t b, uint64_t e) {
  return Entry(name, "\"dtype\":\"U8\",\"shape\":[" + std::to_string(e - b) +
                         "],\"data_offsets\":[" + std::to_string(b) + "," +
                         std::to_string(e) + "]");
}
// A file whose header is `h` and whose data section has `n` bytes.
std::string File(const std::string& h, size_t n) {
  return SafetensorsBytes(h, std::string(n, 'x'));
}
BadCase Case(const char* label, const std::string& header, size_t data,
             std::vector<std::string> fragments, const std::string& at) {
  return {label, File(header, data), std::move(fragments),
          at.empty() ? -2 : HeaderOffset(header, at)};
}

std::vector<BadCase> BadCases() {
  std::vector<BadCase> c;
  const std::string t_ok = Ok("w", 0, 4);
  // 1. too short.
  c.push_back({"empty", "", {"too short to be safetensors"}, 0});
  c.push_back({"seven", "1234567", {"too short to be safetensors"}, 0});
  // 2. header length.
  c.push_back({"len_past_file",
               U64Le(100) + "{}",
               {"header length 100", "exceeds the file"},
               0});
  c.push_back({"len_100MB",
               U64Le(100000000) + "{}",
               {"header length 100000000", "limit"},
               0});
  c.push_back({"len_2p63",
               U64Le(1ULL << 63) + "{}",
               {"header length 9223372036854775808"},
               0});
  c.push_back({"len_max", U64Le(~0ULL) + "{}", {"header length"}, 0});
  // 3. not UTF-8 / not JSON / not an object.
  c.push_back({"not_utf8", File("{\"w\xff\":1}", 0), {"not valid JSON"}, -2});
  c.push_back({"bad_utf8_overlong",
               File("{\"\xc0\xaf\":1}", 0),
               {"not valid JSON"},
               -2});
  c.push_back({"not_json", File("{\"w\": @}", 0), {"not valid JSON"}, 14});
  c.push_back({"truncated_json", File("{\"w\":", 0), {"not valid JSON"}, -2});
  c.push_back({"array", File("[1,2]", 0), {"not a JSON object"}, 8});
  c.push_back({"number", File("42", 0), {"not a JSON object"}, 8});
  c.push_back({"empty_header", File("", 0), {"not valid JSON"}, -2});
  c.push_back({"bom", File("\xef\xbb\xbf{}", 0), {"byte order mark"}, 8});
  c.push_back(
      {"nul_in_header", File(std::string("{}\0", 3), 0), {"NUL byte"}, 10});
  c.push_back({"comment", File("{/* x */}", 0), {"not valid JSON"}, -2});
  c.push_back({"deep_nesting",
               File(std::string(100000, '['), 0),
               {"not a JSON object"},
               8});
  // 4. duplicates.
  {
    std::string h = "{" + t_ok + "," + Ok("w", 4, 8) + "}";
    size_t second = h.find("\"w\"", 2);
    c.push_back({"duplicate_tensor",
                 File(h, 8),
                 {"duplicate tensor name 'w'"},
                 8 + static_cast<int64_t>(second)});
  }
  c.push_back(Case("duplicate_metadata_key",
                   "{\"__metadata__\":{\"a\":\"1\",\"a\":\"2\"}}", 0,
                   {"duplicate __metadata__ key 'a'"}, ""));
  c.push_back(Case("duplicate_field",
                   "{\"w\":{\"dtype\":\"U8\",\"dtype\":\"U8\",\"shape\":[4],"
                   "\"data_offsets\":[0,4]}}",
                   4, {"'w'", "field 'dtype' given twice"}, "\"w\""));
  // 5. fields.
  c.push_back(
      Case("missing_dtype",
           "{" + Entry("w", "\"shape\":[4],\"data_offsets\":[0,4]") + "}", 4,
           {"tensor 'w'", "missing field 'dtype'"}, "\"w\""));
  c.push_back(
      Case("missing_shape",
           "{" + Entry("w", "\"dtype\":\"U8\",\"data_offsets\":[0,4]") + "}", 4,
           {"tensor 'w'", "missing field 'shape'"}, "\"w\""));
  c.push_back(Case(
      "missing_offsets",
      "{" + t_ok + "," + Entry("v", "\"dtype\":\"U8\",\"shape\":[0]") + "}", 4,
      {"tensor 'v'", "missing field 'data_offsets'"}, "\"v\""));
  c.push_back(Case("extra_field",
                   "{" +
                       Entry("w",
                             "\"dtype\":\"U8\",\"shape\":[4],"
                             "\"data_offsets\":[0,4],\"bias\":1") +
                       "}",
                   4, {"tensor 'w'", "unexpected field 'bias'"}, "\"w\""));
  c.push_back(Case("dtype_not_string",
                   "{" +
                       Entry("w",
                             "\"dtype\":16,\"shape\":[4],"
                             "\"data_offsets\":[0,4]") +
                       "}",
                   4, {"tensor 'w'", "field 'dtype' must be a string"},
                   "\"w\""));
  c.push_back(Case("shape_not_array",
                   "{" +
                       Entry("w",
                             "\"dtype\":\"U8\",\"shape\":4,"
                             "\"data_offsets\":[0,4]") +
                       "}",
                   4, {"tensor 'w'", "field 'shape' must be an array"},
                   "\"w\""));
  c.push_back(Case("offsets_object",
                   "{" +
                       Entry("w",
                             "\"dtype\":\"U8\",\"shape\":[4],"
                             "\"data_offsets\":{\"a\":0}") +
                       "}",
                   4, {"tensor 'w'", "field 'data_offsets' must be an array"},
                   "\"w\""));
  c.push_back(Case("entry_not_object", "{\"w\":[1]}", 0,
                   {"tensor 'w'", "entry must be a JSON object"}, "\"w\""));
  // 6. dtype.
  c.push_back(Case("unknown_dtype",
                   "{" +
                       Entry("w",
                             "\"dtype\":\"F17\",\"shape\":[4],"
                             "\"data_offsets\":[0,4]") +
                       "}",
                   4, {"tensor 'w'", "unknown dtype 'F17'"}, "\"w\""));
  // 7. shape entries.
  for (const char* bad : {"-1", "1.5", "\"4\"", "null", "4e0", "[4]"}) {
    c.push_back(
        Case("bad_shape_entry",
             "{" + t_ok + "," +
                 Entry("v", std::string("\"dtype\":\"U8\",\"shape\":[") + bad +
                                "],\"data_offsets\":[4,4]") +
                 "}",
             4, {"tensor 'v'", "field 'shape'"}, "\"v\""));
  }
  c.push_back(Case("nine_dims",
                   "{" +
                       Entry("w",
                             "\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,"
                             "1,1,4],\"data_offsets\":[0,4]") +
                       "}",
                   4, {"tensor 'w'", "more than 8 dimensions"}, "\"w\""));
  c.push_back(Case("dim_2p64",
                   "{" +
                       Entry("w",
                             "\"dtype\":\"U8\",\"shape\":["
                             "18446744073709551616],"
                             "\"data_offsets\":[0,4]") +
                       "}",
                   4, {"tensor 'w'", "field 'shape'"}, "\"w\""));
  // 8. overflow.
  c.push_back(Case("overflow",
                   "{" +
                       Entry("w",
                             "\"dtype\":\"F32\",\"shape\":["
                             "4294967296,4294967296],"
                             "\"data_offsets\":[0,4]") +
                       "}",
                   4, {"tensor 'w'", "overflows 64 bits"}, "\"w\""));
  c.push_back(Case("overflow_by_size",
                   "{" +
                       Entry("w",
                             "\"dtype\":\"F64\",\"shape\":["
                             "4611686018427387904],"
                             "\"data_offsets\":[0,4]") +
                       "}",
                   4, {"tensor 'w'", "overflows 64 bits"}, "\"w\""));
  c.push_back(Case("sub_byte",
                   "{" +
                       Entry("w",
                             "\"dtype\":\"F4\",\"shape\":[3],"
                             "\"data_offsets\":[0,2]") +
                       "}",
                   2, {"tensor 'w'", "not a whole number of bytes"}, "\"w\""));
  // 9. data_offsets.
  c.push_back(Case("reversed",
                   "{" +
                       Entry("w",
                             "\"dtype\":\"U8\",\"shape\":[4],"
                             "\"data_offsets\":[4,0]") +
                       "}",
                   4, {"tensor 'w'", "reversed"}, "\"w\""));
  c.push_back(Case("three_offsets",
                   "{" +
                       Entry("w",
                             "\"dtype\":\"U8\",\"shape\":[4],"
                             "\"data_offsets\":[0,4,8]") +
                       "}",
                   4, {"tensor 'w'", "exactly two integers"}, "\"w\""));
  c.push_back(Case("one_offset",
                   "{" +
                       Entry("w",
                             "\"dtype\":\"U8\",\"shape\":[4],"
                             "\"data_offsets\":[4]") +
                       "}",
                   4, {"tensor 'w'", "exactly two integers"}, "\"w\""));
  c.push_back(Case("negative_offset",
                   "{" +
                       Entry("w",
                             "\"dtype\":\"U8\",\"shape\":[4],"
                             "\"data_offsets\":[-4,0]") +
                       "}",
                   4, {"tensor 'w'", "field 'data_offsets'", "negative"},
                   "\"w\""));
  c.push_back(Case("string_offset",
                   "{" +
                       Entry("w",
                             "\"dtype\":\"U8\",\"shape\":[4],"
                             "\"data_offsets\":[\"0\",4]") +
                       "}",
                   4, {"tensor 'w'", "field 'data_offsets'"}, "\"w\""));
  // 10. size mismatch, both numbers.
  c.push_back(Case("size_mismatch",
                   "{\"model.layers.0.mlp.up_proj.weight\":{\"dtype\":\"F16\","
                   "\"shape\":[8,8],\"data_offsets\":[0,100]}}",
                   100,
                   {"tensor 'model.layers.0.mlp.up_proj.weight'",
                    "data_offsets [0, 100] hold 100 bytes but shape [8, 8] "
                    "of F16 needs 128"},
                   "\"model.layers"));
  // 11. past the end of the file.
  c.push_back(Case("past_end", "{" + Ok("w", 0, 4) + "," + Ok("v", 4, 12) + "}",
                   8, {"tensor 'v'", "past the end of the file"}, "\"v\""));
  // 12. overlap, hole, trailing bytes.
  c.push_back(Case("overlap", "{" + Ok("w", 0, 4) + "," + Ok("v", 2, 6) + "}",
                   6, {"tensor 'v'", "overlap tensor 'w'"}, "\"v\""));
  c.push_back(Case("same_range",
                   "{" + Ok("w", 0, 4) + "," + Ok("v", 0, 4) + "}", 4,
                   {"overlap"}, ""));
  c.push_back(Case("hole", "{" + Ok("w", 0, 4) + "," + Ok("v", 6, 8) + "}", 8,
                   {"tensor 'v'", "hole", "[4, 6)"}, "\"v\""));
  c.push_back(Case("hole_at_start", "{" + Ok("w", 2, 4) + "}", 4,
                   {"tensor 'w'", "hole"}, "\"w\""));
  {
    std::string h = "{" + Ok("w", 0, 4) + "}";
    c.push_back({"trailing",
                 File(h, 5),
                 {"1 bytes after the last tensor"},
                 8 + static_cast<int64_t>(h.size()) + 4});
  }
  // 13. __metadata__.
  c.push_back(Case("metadata_array", "{\"__metadata__\":[\"a\"]}", 0,
                   {"__metadata__ must be an object of strings"},
                   "\"__metadata__\""));
  c.push_back(Case("metadata_number_value",
                   "{\"__metadata__\":{\"format\":\"pt\",\"n\":1}}", 0,
                   {"__metadata__ key 'n'", "must be a string"}, "\"n\""));
  c.push_back(Case("metadata_nested",
                   "{\"__metadata__\":{\"o\":{\"a\":\"b\"}}}", 0,
                   {"__metadata__ key 'o'", "must be a string"}, "\"o\""));
  c.push_back(Case("metadata_twice",
                   "{\"__metadata__\":{},\"__metadata__\":{}}", 0,
                   {"duplicate key '__metadata__'"}, ""));
  // A NUL in a tensor name (escaped in the JSON).
  c.push_back(Case("nul_name",
                   "{\"a\\u0000b\":{\"dtype\":\"U8\",\"shape\":[0],"
                   "\"data_offsets\":[0,0]}}",
                   0, {"NUL"}, "\"a"));
  return c;
}

TEST(SafetensorsReader, RejectsHostileInputs) {
  ScratchDir dir;
  for (const BadCase& bc : BadCases()) {
    SCOPED_TRACE(bc.label);
    const std::string path = dir / (std::string(bc.label) + ".safetensors");
    WriteBytes(path, bc.bytes);
    std::unique_ptr<SafetensorsFile> f;
    Status s = SafetensorsFile::Open(path, &f);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.code(), StatusCode::kBadFormat) << s.ToString();
    EXPECT_EQ(f, nullptr);
    EXPECT_THAT(s.message(), HasSubstr(path + ": "));
    for (const std::string& frag : bc.fragments) {
      EXPECT_THAT(s.message(), HasSubstr(frag));
    }
    if (bc.offset == -2) {
      EXPECT_GE(s.offset(), 0) << s.message();
    } else {
      EXPECT_EQ(s.offset(), bc.offset) << s.message();
    }
    EXPECT_THAT(s.message(),
                HasSubstr("(byte " + std::to_string(s.offset()) + ")"));
  }
}

TEST(SafetensorsReader, ParseErrorOffsetPointsAtTheBadByte) {
  ScratchDir dir;
  // The lexer stops at the 'o': "no" cannot start any literal but null.
  const std::string header = "{\"w\": nope}";
  WriteBytes(dir / "x.safetensors", File(header, 0));
  std::unique_ptr<SafetensorsFile> f;
  Status s = SafetensorsFile::Open(dir / "x.safetensors", &f);
  ASSERT_EQ(s.code(), StatusCode::kBadFormat);
  EXPECT_EQ(s.offset(), HeaderOffset(header, "ope"));
}

TEST(SafetensorsReader, MissingFileIsIoError) {
  ScratchDir dir;
  std::unique_ptr<SafetensorsFile> f;
  Status s = SafetensorsFile::Open(dir / "nothing.safetensors", &f);
  EXPECT_EQ(s.code(), StatusCode::kIoError);
  s = SafetensorsFile::Open(dir.path(), &f);
  EXPECT_EQ(s.code(), StatusCode::kIoError);
}

// Row 18: the file shrinks while mapped; the size is re-checked before any
// pointer is handed out.
TEST(SafetensorsReader, TruncatedWhileMapped) {
  ScratchDir dir;
  const std::string header =
      "{" + Ok("w", 0, 4096) + "," + Ok("v", 4096, 8192) + "}";
  WriteBytes(dir / "t.safetensors", File(header, 8192));
  auto f = OpenOk(dir / "t.safetensors");
  ASSERT_TRUE(f);
  ASSERT_NE(f->data(f->tensors()[0]), nullptr);
  ASSERT_EQ(truncate((dir / "t.safetensors").c_str(), 100), 0);
  EXPECT_EQ(f->data(f->tensors()[1]), nullptr);
  const uint8_t* p = nullptr;
  Status s = f->TensorData(f->tensors()[1], &p);
  EXPECT_EQ(s.code(), StatusCode::kIoError);
  EXPECT_THAT(s.message(), HasSubstr("shrank"));
  EXPECT_EQ(p, nullptr);
}

TEST(SafetensorsReader, ForeignTensorInfoRefused) {
  ScratchDir dir;
  WriteBytes(dir / "a.safetensors", File("{" + Ok("w", 0, 4) + "}", 4));
  auto f = OpenOk(dir / "a.safetensors");
  ASSERT_TRUE(f);
  io::TensorInfo other = f->tensors()[0];
  other.name = "zzz";
  const uint8_t* p = nullptr;
  EXPECT_EQ(f->TensorData(other, &p).code(), StatusCode::kInvalidArgument);
  io::TensorInfo copy = f->tensors()[0];
  EXPECT_NE(f->data(copy), nullptr);
}

}  // namespace
}  // namespace nibble::test
