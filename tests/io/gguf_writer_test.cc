// GgufWriter: round trips through GgufFile for every value type, alignment
// and tensor type, byte-exact layout against files built by hand, copying a
// file through unchanged, the metadata setters, misuse and atomicity.
#include "nibble/io/gguf_writer.h"

#include <dirent.h>

#include <cmath>
#include <cstring>
#include <functional>
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
using io::GgufMetadata;
using io::GgufTensorSpec;
using io::GgufType;
using io::GgufWriteOptions;
using io::GgufWriter;
using ::testing::HasSubstr;

GgufTensorSpec Spec(const std::string& name, GgmlType type,
                    std::vector<int64_t> ne) {
  GgufTensorSpec t;
  Status s = io::MakeGgufTensorSpec(name, type, std::move(ne), &t);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return t;
}

std::string RandomBytes(Rng& rng, uint64_t n) {
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

std::vector<std::string> DirEntries(const std::string& path) {
  std::vector<std::string> names;
  DIR* d = opendir(path.c_str());
  if (d == nullptr) return names;
  while (dirent* e = readdir(d)) {
    const std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(n);
  }
  closedir(d);
  return names;
}

template <typename T>
GgufKv NumArray(const std::string& key, GgufType type,
                const std::vector<T>& v) {
  GgufKv kv;
  Status s = GgufKv::Array(key, type, v.data(), v.size(), &kv);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return kv;
}

// Every value type, arrays of every element type, extremes, empty arrays.
GgufMetadata EveryType() {
  GgufMetadata m;
  m.Append(GgufKv::String("general.architecture", "llama"));
  m.Append(GgufKv::U8("u8", 255));
  m.Append(GgufKv::I8("i8", -128));
  m.Append(GgufKv::U16("u16", 65535));
  m.Append(GgufKv::I16("i16", -32768));
  m.Append(GgufKv::U32("general.file_type", 7));
  m.Append(GgufKv::I32("i32", std::numeric_limits<int32_t>::min()));
  m.Append(GgufKv::F32("f32", -0.0f));
  m.Append(GgufKv::F32("f32_nan", std::nanf("")));
  m.Append(GgufKv::Bool("bool_true", true));
  m.Append(GgufKv::Bool("bool_false", false));
  m.Append(GgufKv::U64("u64", std::numeric_limits<uint64_t>::max()));
  m.Append(GgufKv::I64("i64", std::numeric_limits<int64_t>::min()));
  m.Append(GgufKv::F64("f64", 1e300));
  m.Append(GgufKv::String("empty_string", ""));
  m.Append(GgufKv::String("nul_inside", std::string("a\0b", 3)));
  m.Append(GgufKv::String("utf8", "\xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80"));
  m.Append(GgufKv::StringArray(
      "tokenizer.ggml.tokens",
      {"<unk>", "<s>", "</s>", "", "\xe2\x96\x81the", "<0x0A>"}));
  m.Append(NumArray<uint8_t>("a_u8", GgufType::kU8, {0, 1, 255}));
  m.Append(NumArray<int8_t>("a_i8", GgufType::kI8, {-128, 127}));
  m.Append(NumArray<uint16_t>("a_u16", GgufType::kU16, {1, 65535}));
  m.Append(NumArray<int16_t>("a_i16", GgufType::kI16, {-1, 2}));
  m.Append(NumArray<uint32_t>("a_u32", GgufType::kU32, {4000000000u}));
  m.Append(NumArray<int32_t>("tokenizer.ggml.token_type", GgufType::kI32,
                             {2, 3, 3, 1, 1, 6}));
  m.Append(NumArray<float>("tokenizer.ggml.scores", GgufType::kF32,
                           {0.0f, -1.5f, std::numeric_limits<float>::infinity(),
                            -1000.25f, 3.0f, -0.0f}));
  m.Append(NumArray<uint8_t>("a_bool", GgufType::kBool, {1, 0, 1}));
  m.Append(NumArray<uint64_t>("a_u64", GgufType::kU64,
                              {0, std::numeric_limits<uint64_t>::max()}));
  m.Append(NumArray<int64_t>("a_i64", GgufType::kI64,
                             {std::numeric_limits<int64_t>::min(), 5}));
  m.Append(NumArray<double>("a_f64", GgufType::kF64, {0.1, -2.5e-300}));
  m.Append(NumArray<uint32_t>("empty_u32", GgufType::kU32, {}));
  m.Append(GgufKv::StringArray("empty_strings", {}));
  return m;
}

struct Written {
  std::vector<GgufTensorSpec> specs;
  std::vector<std::string> data;
};

Written SomeTensors(Rng& rng) {
  Written w;
  w.specs = {
      Spec("token_embd.weight", GgmlType::kF16, {16, 5}),
      Spec("blk.0.attn_norm.weight", GgmlType::kF32, {16}),   // 1-D
      Spec("blk.0.attn_q.weight", GgmlType::kQ8_0, {64, 3}),  // copied through
      Spec("blk.0.ffn_up.weight", GgmlType::kBF16, {8, 3, 2}),
      Spec("blk.0.ffn_gate.weight", GgmlType::kQ4_K, {256, 1}),
      Spec("ids", GgmlType::kI64, {1, 1, 1, 3}),
  };
  for (const GgufTensorSpec& t : w.specs) {
    w.data.push_back(RandomBytes(rng, t.byte_size));
  }
  return w;
}

Status WriteAll(const std::string& path, const GgufMetadata& m,
                const Written& w, const GgufWriteOptions& options) {
  std::unique_ptr<GgufWriter> writer;
  Status s = GgufWriter::Create(path, m, w.specs, options, &writer);
  if (!s.ok()) return s;
  for (size_t i = 0; i < w.specs.size(); ++i) {
    s = writer->WriteTensor(w.specs[i].name, w.data[i].data(),
                            w.data[i].size());
    if (!s.ok()) return s;
  }
  return writer->Finish();
}

void ExpectSameMetadata(const GgufMetadata& a, const GgufMetadata& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    SCOPED_TRACE(a[i].key());
    EXPECT_EQ(a[i].key(), b[i].key());
    EXPECT_EQ(a[i].type(), b[i].type());
    EXPECT_EQ(a[i].element_type(), b[i].element_type());
    EXPECT_EQ(a[i].count(), b[i].count());
    EXPECT_EQ(a[i].raw(), b[i].raw());
  }
}

TEST(GgufWriter, RoundTripEveryValueTypeAlignmentAndVersion) {
  NIBBLE_TRACE_SEED();
  Rng rng = MakeRng();
  ScratchDir dir;
  const Written w = SomeTensors(rng);
  for (uint32_t version : {3u, 2u}) {
    for (uint32_t a : {32u, 64u, 1u, 4096u}) {
      SCOPED_TRACE("v" + std::to_string(version) + " a" + std::to_string(a));
      GgufMetadata m = EveryType();
      if (a != 32) m.SetU32(io::kGgufKeyAlignment, a);
      const std::string path = dir / "rt.gguf";
      GgufWriteOptions options;
      options.version = version;
      options.alignment = a;
      options.overwrite = true;
      Status s = WriteAll(path, m, w, options);
      ASSERT_TRUE(s.ok()) << s.ToString();
      std::unique_ptr<GgufFile> f;
      s = GgufFile::Open(path, &f);
      ASSERT_TRUE(s.ok()) << s.ToString();
      EXPECT_EQ(f->version(), version);
      EXPECT_EQ(f->alignment(), a);
      EXPECT_EQ(f->data_offset() % a, 0u);
      ExpectSameMetadata(f->metadata(), m);
      ASSERT_EQ(f->tensors().size(), w.specs.size());
      const std::string bytes = ReadBytes(path);
      uint64_t expected_offset = 0;
      for (size_t i = 0; i < w.specs.size(); ++i) {
        const io::GgufTensorInfo& t = f->tensors()[i];
        SCOPED_TRACE(t.name);
        EXPECT_EQ(t.name, w.specs[i].name);
        EXPECT_EQ(t.type, w.specs[i].type);
        EXPECT_EQ(t.ne, w.specs[i].ne);
        EXPECT_EQ(t.byte_size, w.specs[i].byte_size);
        EXPECT_EQ(t.offset, expected_offset);
        const uint8_t* p = f->data(t);
        ASSERT_NE(p, nullptr);
        EXPECT_EQ(std::memcmp(p, w.data[i].data(), t.byte_size), 0);
        // Zero padding up to the next tensor (and after the last one).
        const uint64_t end = t.data_offset + t.byte_size;
        const uint64_t padded = PadTo(end, a);
        EXPECT_EQ(bytes.substr(end, padded - end),
                  std::string(padded - end, '\0'));
        expected_offset = PadTo(t.offset + t.byte_size, a);
      }
      EXPECT_EQ(bytes.size(), f->data_offset() + expected_offset);
      // The header padding is zero too.
      EXPECT_EQ(
          bytes.substr(f->header_size(), f->data_offset() - f->header_size()),
          std::string(f->data_offset() - f->header_size(), '\0'));
    }
  }
}

// The writer's bytes equal a file spelled out byte by byte.
TEST(GgufWriter, MatchesHandBuiltBytes) {
  ScratchDir dir;
  for (uint64_t a : {32u, 64u}) {
    SCOPED_TRACE(a);
    std::vector<GKv> kvs = {
        KvStr("general.architecture", "llama"),
        {"tokenizer.ggml.tokens", kTArray,
         ArrV(kTString, 2, GStr("a") + GStr("bc"))},
        {"x", kTF64, Le64(0x3ff0000000000000ull)},
    };
    if (a != 32) kvs.push_back(KvU32("general.alignment", 64));
    const std::vector<GTi> tis = {{"w", {32, 2}, 8, 68},  // Q8_0
                                  {"n", {3}, 0, 12}};
    const GFile g = BuildGguf(kvs, tis, a);

    GgufMetadata m;
    for (const GKv& kv : kvs) {
      GgufKv parsed;
      ASSERT_TRUE(GgufKv::FromRaw(kv.key, static_cast<GgufType>(kv.type),
                                  kv.value, &parsed)
                      .ok());
      m.Append(parsed);
    }
    Written w;
    w.specs = {Spec("w", GgmlType::kQ8_0, {32, 2}),
               Spec("n", GgmlType::kF32, {3})};
    w.data = {std::string(68, '\1'), std::string(12, '\2')};
    ASSERT_TRUE(WriteAll(dir / "h.gguf", m, w, {3, 0, true}).ok());
    EXPECT_EQ(ReadBytes(dir / "h.gguf"), g.bytes);
  }
}

// Reader -> writer copies every pair and tensor byte for byte.
TEST(GgufWriter, CopyThroughIsByteExact) {
  ScratchDir dir;
  const GFile g = BuildGguf(
      {KvStr("general.architecture", "llama"),
       KvU32("general.alignment", 64),
       {"general.file_type", kTU32, Le32(1)},
       {"tokenizer.ggml.tokens", kTArray,
        ArrV(kTString, 3, GStr("<s>") + GStr("") + GStr("\xe2\x96\x81"))},
       {"tokenizer.ggml.scores", kTArray, ArrV(kTF32, 1, Le32(0x7fc00001))},
       {"flags", kTArray, ArrV(kTBool, 0, "")}},
      {{"token_embd.weight", {64, 2}, 8, 136},
       {"output_norm.weight", {64}, 0, 256},
       {"blk.0.ffn_down.weight", {256}, 14, 210}},
      64, 2);
  WriteBytes(dir / "in.gguf", g.bytes);
  std::unique_ptr<GgufFile> in;
  ASSERT_TRUE(GgufFile::Open(dir / "in.gguf", &in).ok());
  std::vector<GgufTensorSpec> specs;
  for (const auto& t : in->tensors()) {
    specs.push_back(GgufTensorSpec::FromInfo(t));
  }
  GgufWriteOptions options;
  options.version = in->version();
  std::unique_ptr<GgufWriter> w;
  ASSERT_TRUE(
      GgufWriter::Create(dir / "out.gguf", in->metadata(), specs, options, &w)
          .ok());
  EXPECT_EQ(w->alignment(), 64u);
  for (const auto& t : in->tensors()) {
    // In two pieces, to cover Begin/Append/End.
    const uint8_t* p = in->data(t);
    ASSERT_TRUE(w->BeginTensor(t.name).ok());
    ASSERT_TRUE(w->Append(p, 5).ok());
    ASSERT_TRUE(w->Append(p + 5, t.byte_size - 5).ok());
    ASSERT_TRUE(w->EndTensor().ok());
  }
  ASSERT_TRUE(w->Finish().ok());
  EXPECT_EQ(ReadBytes(dir / "out.gguf"), g.bytes);
}

TEST(GgufWriter, SetU32ReplacesInPlaceOrAppends) {
  ScratchDir dir;
  const GFile g = BuildGguf({KvStr("general.architecture", "llama"),
                             {"general.file_type", kTI32, Le32(1)},
                             KvStr("general.name", "m")},
                            {{"w", {4}, 0, 16}});
  WriteBytes(dir / "in.gguf", g.bytes);
  std::unique_ptr<GgufFile> in;
  ASSERT_TRUE(GgufFile::Open(dir / "in.gguf", &in).ok());
  GgufMetadata m = in->metadata();
  m.SetU32(io::kGgufKeyFileType, 7);
  m.SetU32(io::kGgufKeyQuantizationVersion, 2);
  ASSERT_EQ(m.size(), 4u);
  EXPECT_EQ(m[1].key(), "general.file_type");
  EXPECT_EQ(m[1].type(), GgufType::kU32);
  EXPECT_EQ(m[3].key(), "general.quantization_version");
  EXPECT_TRUE(m.Remove("general.name"));
  EXPECT_FALSE(m.Remove("general.name"));
  m.Set(GgufKv::String("general.name", "m-q8_0"));
  Written w;
  w.specs = {GgufTensorSpec::FromInfo(in->tensors()[0])};
  w.data = {std::string(16, '\7')};
  ASSERT_TRUE(WriteAll(dir / "out.gguf", m, w, {}).ok());
  std::unique_ptr<GgufFile> out;
  ASSERT_TRUE(GgufFile::Open(dir / "out.gguf", &out).ok());
  const GgufMetadata& om = out->metadata();
  ASSERT_EQ(om.size(), 4u);
  const char* keys[] = {"general.architecture", "general.file_type",
                        "general.quantization_version", "general.name"};
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(om[i].key(), keys[i]);
  uint64_t v = 0;
  EXPECT_TRUE(om[1].GetUint(&v));
  EXPECT_EQ(v, 7u);
  EXPECT_EQ(om[1].raw(), Le32(7));
  EXPECT_TRUE(om[2].GetUint(&v));
  EXPECT_EQ(v, 2u);
  std::string_view sv;
  EXPECT_TRUE(om[3].GetString(&sv));
  EXPECT_EQ(sv, "m-q8_0");
  // Untouched pairs are byte-identical.
  EXPECT_EQ(om[0].raw(), in->metadata()[0].raw());
}

TEST(GgufWriter, ZeroTensorsAndEveryGgmlType) {
  NIBBLE_TRACE_SEED();
  Rng rng = MakeRng();
  ScratchDir dir;
  GgufMetadata m;
  m.Append(GgufKv::String("general.architecture", "none"));
  ASSERT_TRUE(WriteAll(dir / "empty.gguf", m, {}, {}).ok());
  const std::string bytes = ReadBytes(dir / "empty.gguf");
  EXPECT_EQ(bytes.size() % 32, 0u);
  std::unique_ptr<GgufFile> f;
  ASSERT_TRUE(GgufFile::Open(dir / "empty.gguf", &f).ok());
  EXPECT_TRUE(f->tensors().empty());
  EXPECT_EQ(f->data_offset(), bytes.size());

  // No metadata either: the bare 24-byte header, padded.
  ASSERT_TRUE(WriteAll(dir / "bare.gguf", {}, {}, {}).ok());
  EXPECT_EQ(ReadBytes(dir / "bare.gguf"),
            "GGUF" + Le32(3) + Le64(0) + Le64(0) + std::string(8, '\0'));

  Written w;
  for (GgmlType t : io::AllGgmlTypes()) {
    const io::GgmlTypeInfo& row = io::GgmlTypeTraits(t);
    w.specs.push_back(Spec(std::string("t.") + row.name, t,
                           {static_cast<int64_t>(row.block_size), 3}));
    w.data.push_back(RandomBytes(rng, w.specs.back().byte_size));
    EXPECT_EQ(w.specs.back().byte_size, 3u * row.type_size);
  }
  ASSERT_TRUE(WriteAll(dir / "all.gguf", m, w, {}).ok());
  ASSERT_TRUE(GgufFile::Open(dir / "all.gguf", &f).ok());
  ASSERT_EQ(f->tensors().size(), w.specs.size());
  for (size_t i = 0; i < w.specs.size(); ++i) {
    EXPECT_EQ(f->tensors()[i].type, w.specs[i].type);
    EXPECT_EQ(std::memcmp(f->data(f->tensors()[i]), w.data[i].data(),
                          w.data[i].size()),
              0);
  }
}

TEST(GgufWriter, RefusesInvalidInputBeforeCreatingAnything) {
  ScratchDir dir;
  const std::string path = dir / "x.gguf";
  GgufMetadata ok_meta;
  ok_meta.Append(GgufKv::String("general.architecture", "llama"));
  const GgufTensorSpec ok = Spec("w", GgmlType::kF32, {4});
  struct Bad {
    const char* label;
    GgufMetadata meta;
    std::vector<GgufTensorSpec> specs;
    GgufWriteOptions options;
    std::vector<std::string> fragments;
  };
  std::vector<Bad> cases;
  auto with_kv = [&](GgufKv kv) {
    GgufMetadata m = ok_meta;
    m.Append(std::move(kv));
    return m;
  };
  auto spec = [](std::string name, GgmlType t, std::vector<int64_t> ne,
                 uint64_t bytes) {
    return GgufTensorSpec{std::move(name), t, std::move(ne), bytes};
  };
  cases.push_back({"name_64",
                   ok_meta,
                   {spec(std::string(64, 'n'), GgmlType::kF32, {1}, 4)},
                   {},
                   {"name of 64 bytes is too long"}});
  cases.push_back({"dup_name",
                   ok_meta,
                   {ok, ok},
                   {},
                   {"tensor 'w'", "duplicate tensor name"}});
  cases.push_back({"nul_name",
                   ok_meta,
                   {spec(std::string("a\0b", 3), GgmlType::kF32, {1}, 4)},
                   {},
                   {"NUL"}});
  cases.push_back({"empty_name",
                   ok_meta,
                   {spec("", GgmlType::kF32, {1}, 4)},
                   {},
                   {"empty tensor name"}});
  cases.push_back({"no_dims",
                   ok_meta,
                   {spec("w", GgmlType::kF32, {}, 4)},
                   {},
                   {"tensor 'w'", "no valid byte size"}});
  cases.push_back({"dim_0",
                   ok_meta,
                   {spec("w", GgmlType::kF32, {0}, 0)},
                   {},
                   {"tensor 'w'", "no valid byte size"}});
  cases.push_back({"five_dims",
                   ok_meta,
                   {spec("w", GgmlType::kF32, {1, 1, 1, 1, 1}, 4)},
                   {},
                   {"no valid byte size"}});
  cases.push_back({"q8_0_row_33",
                   ok_meta,
                   {spec("w", GgmlType::kQ8_0, {33}, 34)},
                   {},
                   {"tensor 'w'", "ne [33] of Q8_0"}});
  cases.push_back({"size_mismatch",
                   ok_meta,
                   {spec("w", GgmlType::kF16, {8, 8}, 100)},
                   {},
                   {"tensor 'w'", "byte size 100", "needs 128"}});
  cases.push_back({"unknown_type",
                   ok_meta,
                   {spec("w", static_cast<GgmlType>(4), {32}, 32)},
                   {},
                   {"tensor 'w'", "unknown ggml type 4"}});
  cases.push_back(
      {"empty_key", with_kv(GgufKv::U8("", 1)), {}, {}, {"empty key"}});
  cases.push_back({"nul_key",
                   with_kv(GgufKv::U8(std::string("a\0b", 3), 1)),
                   {},
                   {},
                   {"key contains a NUL byte"}});
  cases.push_back({"dup_key",
                   with_kv(GgufKv::String("general.architecture", "x")),
                   {},
                   {},
                   {"key 'general.architecture'", "duplicate key"}});
  cases.push_back({"default_kv", with_kv(GgufKv()), {}, {}, {"empty key"}});
  {
    GgufKv bad;
    // A value whose raw bytes do not parse: a u32 built from three bytes.
    ASSERT_FALSE(GgufKv::FromRaw("k", GgufType::kU32, "abc", &bad).ok());
  }
  cases.push_back({"alignment_48",
                   with_kv(GgufKv::U32("general.alignment", 48)),
                   {},
                   {},
                   {"general.alignment", "power of two"}});
  cases.push_back({"alignment_u64",
                   with_kv(GgufKv::U64("general.alignment", 64)),
                   {},
                   {},
                   {"general.alignment", "u32"}});
  cases.push_back({"option_without_key",
                   ok_meta,
                   {ok},
                   {3, 64, false},
                   {"alignment 64 disagrees with the default of 32"}});
  cases.push_back({"option_vs_key",
                   with_kv(GgufKv::U32("general.alignment", 64)),
                   {ok},
                   {3, 128, false},
                   {"alignment 128 disagrees with the metadata's "
                    "general.alignment = 64"}});
  cases.push_back({"option_not_pow2",
                   ok_meta,
                   {ok},
                   {3, 24, false},
                   {"alignment 24 is not a power of two"}});
  cases.push_back({"version_1",
                   ok_meta,
                   {ok},
                   {1, 0, false},
                   {"GGUF version 1 cannot be written"}});
  cases.push_back({"version_4",
                   ok_meta,
                   {ok},
                   {4, 0, false},
                   {"GGUF version 4 cannot be written"}});
  for (const Bad& bc : cases) {
    SCOPED_TRACE(bc.label);
    std::unique_ptr<GgufWriter> w;
    Status s = GgufWriter::Create(path, bc.meta, bc.specs, bc.options, &w);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
    EXPECT_EQ(w, nullptr);
    EXPECT_THAT(s.message(), HasSubstr(path + ": "));
    for (const std::string& frag : bc.fragments) {
      EXPECT_THAT(s.message(), HasSubstr(frag));
    }
    EXPECT_TRUE(DirEntries(dir.path()).empty());
  }
}

TEST(GgufWriter, MisuseLeavesNothingBehind) {
  ScratchDir dir;
  const std::string path = dir / "m.gguf";
  GgufMetadata m;
  m.Append(GgufKv::String("general.architecture", "llama"));
  const std::vector<GgufTensorSpec> specs = {Spec("a", GgmlType::kF32, {4}),
                                             Spec("b", GgmlType::kF16, {4})};
  const std::string data(16, 'x');
  struct Step {
    const char* label;
    std::function<Status(GgufWriter*)> run;
    const char* fragment;
  };
  const std::vector<Step> steps = {
      {"wrong_order",
       [&](GgufWriter* w) { return w->WriteTensor("b", data.data(), 8); },
       "expected tensor 'a' (number 0), got 'b'"},
      {"wrong_size",
       [&](GgufWriter* w) { return w->WriteTensor("a", data.data(), 15); },
       "tensor 'a' given 15 bytes but holds 16"},
      {"too_much",
       [&](GgufWriter* w) {
         Status s = w->BeginTensor("a");
         if (s.ok()) s = w->Append(data.data(), 10);
         if (s.ok()) s = w->Append(data.data(), 10);
         return s;
       },
       "gets 20 bytes or more but holds 16"},
      {"too_little",
       [&](GgufWriter* w) {
         Status s = w->BeginTensor("a");
         if (s.ok()) s = w->Append(data.data(), 10);
         if (s.ok()) s = w->EndTensor();
         return s;
       },
       "tensor 'a' got 10 bytes but holds 16"},
      {"missing",
       [&](GgufWriter* w) {
         Status s = w->WriteTensor("a", data.data(), 16);
         if (s.ok()) s = w->Finish();
         return s;
       },
       "tensor 'b' was not written (1 of 2 complete)"},
      {"extra",
       [&](GgufWriter* w) {
         Status s = w->WriteTensor("a", data.data(), 16);
         if (s.ok()) s = w->WriteTensor("b", data.data(), 8);
         if (s.ok()) s = w->WriteTensor("c", data.data(), 8);
         return s;
       },
       "tensor 'c' is not in the list"},
      {"append_outside",
       [&](GgufWriter* w) { return w->Append(data.data(), 1); },
       "Append outside a tensor"},
  };
  for (const Step& step : steps) {
    SCOPED_TRACE(step.label);
    std::unique_ptr<GgufWriter> w;
    ASSERT_TRUE(GgufWriter::Create(path, m, specs, {}, &w).ok());
    Status s = step.run(w.get());
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(s.message(), HasSubstr(step.fragment));
    // The failure sticks and nothing is left on disk, even before the
    // writer is destroyed.
    EXPECT_EQ(w->Finish().message(), s.message());
    EXPECT_TRUE(DirEntries(dir.path()).empty());
  }
  // Destroyed without Finish: the temporary goes away too.
  {
    std::unique_ptr<GgufWriter> w;
    ASSERT_TRUE(GgufWriter::Create(path, m, specs, {}, &w).ok());
    ASSERT_TRUE(w->WriteTensor("a", data.data(), 16).ok());
    EXPECT_EQ(DirEntries(dir.path()).size(), 1u);  // the temporary
    EXPECT_FALSE(Exists(path));
  }
  EXPECT_TRUE(DirEntries(dir.path()).empty());
}

TEST(GgufWriter, ExistingFileNeedsOverwrite) {
  ScratchDir dir;
  const std::string path = dir / "o.gguf";
  WriteBytes(path, "previous");
  GgufMetadata m;
  std::unique_ptr<GgufWriter> w;
  Status s = GgufWriter::Create(path, m, {}, {}, &w);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadBytes(path), "previous");
  GgufWriteOptions options;
  options.overwrite = true;
  ASSERT_TRUE(GgufWriter::Create(path, m, {}, options, &w).ok());
  // Until Finish the old file stays.
  EXPECT_EQ(ReadBytes(path), "previous");
  ASSERT_TRUE(w->Finish().ok());
  EXPECT_EQ(ReadBytes(path).substr(0, 4), "GGUF");
  EXPECT_EQ(DirEntries(dir.path()).size(), 1u);
}

TEST(GgufKvTest, BuildersAccessorsAndFromRaw) {
  GgufKv kv = GgufKv::U32("general.quantization_version", 2);
  EXPECT_EQ(kv.raw(), Le32(2));
  EXPECT_EQ(kv.offset(), -1);
  EXPECT_EQ(kv.type_offset(), -1);
  EXPECT_FALSE(kv.is_array());
  EXPECT_EQ(kv.count(), 1u);
  int64_t i = 0;
  EXPECT_TRUE(kv.GetInt(&i));
  EXPECT_EQ(i, 2);
  double d = 0;
  EXPECT_FALSE(kv.GetFloat(&d));
  std::string_view sv;
  EXPECT_FALSE(kv.GetString(&sv));
  EXPECT_EQ(GgufKv::F32("f", 1.0f).raw(), Le32(0x3f800000));
  EXPECT_EQ(GgufKv::I16("i", -2).raw(), Le(0xfffe, 2));
  EXPECT_EQ(GgufKv::Bool("b", true).raw(), std::string("\1", 1));
  EXPECT_EQ(GgufKv::String("s", "hi").raw(), GStr("hi"));
  EXPECT_EQ(GgufKv::StringArray("t", {"a", ""}).raw(),
            ArrV(kTString, 2, GStr("a") + GStr("")));
  const GgufKv f = GgufKv::F64("d", 0.25);
  EXPECT_TRUE(f.GetFloat(&d));
  EXPECT_EQ(d, 0.25);
  EXPECT_EQ(f.ElementBytes(0).size(), 8u);
  EXPECT_TRUE(f.ElementBytes(1).empty());

  // FromRaw validates exactly as the reader does.
  GgufKv out;
  EXPECT_TRUE(GgufKv::FromRaw("k", GgufType::kArray,
                              ArrV(kTU16, 2, Le(1, 2) + Le(2, 2)), &out)
                  .ok());
  EXPECT_EQ(out.count(), 2u);
  EXPECT_EQ(out.element_type(), GgufType::kU16);
  Status s = GgufKv::FromRaw("k", GgufType::kU32, Le32(1) + "x", &out);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("1 bytes after the end of the value"));
  s = GgufKv::FromRaw("k", GgufType::kBool, "\2", &out);
  EXPECT_THAT(s.message(), HasSubstr("key 'k': bool value is 2"));
  s = GgufKv::FromRaw("k", GgufType::kArray, ArrV(kTArray, 0, ""), &out);
  EXPECT_THAT(s.message(), HasSubstr("nested arrays"));
  s = GgufKv::FromRaw("k", GgufType::kString, Le64(5) + "abc", &out);
  EXPECT_THAT(s.message(), HasSubstr("string length 5 exceeds the 3 bytes"));
  s = GgufKv::FromRaw("k", static_cast<GgufType>(13), "", &out);
  EXPECT_THAT(s.message(), HasSubstr("unknown value type 13"));

  const uint8_t bools[] = {0, 1, 2};
  s = GgufKv::Array("b", GgufType::kBool, bools, 3, &out);
  EXPECT_THAT(s.message(), HasSubstr("bool element 2 is 2"));
  s = GgufKv::Array("s", GgufType::kString, bools, 1, &out);
  EXPECT_THAT(s.message(), HasSubstr("fixed-size elements, not string"));
  s = GgufKv::Array("s", GgufType::kU8, bools, uint64_t{1} << 31, &out);
  EXPECT_THAT(s.message(), HasSubstr("exceeds the limit"));
}

}  // namespace
}  // namespace nibble::test
