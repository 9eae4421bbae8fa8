// SafetensorsWriter round trips through SafetensorsFile, the header layout,
// misuse, and the shard plan / index.
#include "nibble/io/safetensors_writer.h"

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "io_test_util.h"
#include "nibble/io/safetensors.h"
#include "test_util.h"

namespace nibble::test {
namespace {

using io::SafetensorsFile;
using io::SafetensorsWriter;
using io::StDtype;
using io::TensorSpec;
using ::testing::HasSubstr;

TensorSpec Spec(const std::string& name, StDtype d,
                std::vector<int64_t> shape) {
  TensorSpec t{name, d, std::move(shape), 0};
  int64_t el;
  EXPECT_TRUE(io::StTensorByteSize(d, t.shape, &el, &t.byte_size));
  return t;
}

std::string RandomBytes(Rng& rng, uint64_t n) {
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

TEST(SafetensorsWriter, RoundTrip) {
  NIBBLE_TRACE_SEED();
  Rng rng = MakeRng();
  ScratchDir dir;
  std::vector<TensorSpec> specs = {
      Spec("model.embed_tokens.weight", StDtype::kBF16, {7, 5}),
      Spec("model.layers.0.self_attn.q_proj.weight", StDtype::kF16, {5, 5}),
      Spec("model.layers.0.self_attn.q_proj.bias", StDtype::kF32, {5}),
      Spec("scalar", StDtype::kI64, {}),
      Spec("empty", StDtype::kF16, {0, 3}),
      Spec("fp8", StDtype::kF8E4M3, {3}),
      Spec("f6", StDtype::kF6E3M2, {2, 4}),
      Spec("quote\"and\\back\nslash \xc3\xa9", StDtype::kU8, {1}),
  };
  std::vector<std::string> data;
  for (const TensorSpec& t : specs)
    data.push_back(RandomBytes(rng, t.byte_size));
  io::Metadata meta = {{"format", "pt"}, {"note", "line\nbreak"}};
  const std::string path = dir / "out.safetensors";
  std::unique_ptr<SafetensorsWriter> w;
  Status s = SafetensorsWriter::Create(path, specs, meta, false, &w);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(w->header_size() % 8, 0u);
  for (size_t i = 0; i < specs.size(); ++i) {
    // Nothing under the final name until Finish().
    EXPECT_FALSE(Exists(path));
    if (i == 1) {
      // In pieces.
      ASSERT_TRUE(w->BeginTensor(specs[i].name).ok());
      ASSERT_TRUE(w->Append(data[i].data(), 3).ok());
      ASSERT_TRUE(w->Append(data[i].data() + 3, data[i].size() - 3).ok());
      ASSERT_TRUE(w->EndTensor().ok());
    } else {
      s = w->WriteTensor(specs[i].name, data[i].data(), data[i].size());
      ASSERT_TRUE(s.ok()) << s.ToString();
    }
  }
  const uint64_t expected_size = w->file_size();
  ASSERT_TRUE(w->Finish().ok());
  std::string bytes = ReadBytes(path);
  EXPECT_EQ(bytes.size(), expected_size);
  // Compact header, metadata first, padded with spaces.
  const std::string start = "{\"__metadata__\":{\"format\":\"pt\"";
  EXPECT_EQ(bytes.compare(8, start.size(), start), 0);
  std::unique_ptr<SafetensorsFile> f;
  s = SafetensorsFile::Open(path, &f);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(f->data_offset() % 8, 0u);
  EXPECT_EQ(f->metadata(), meta);
  ASSERT_EQ(f->tensors().size(), specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    const io::TensorInfo& t = f->tensors()[i];
    EXPECT_EQ(t.name, specs[i].name);
    EXPECT_EQ(t.dtype, specs[i].dtype);
    EXPECT_EQ(t.shape, specs[i].shape);
    ASSERT_EQ(t.byte_size(), data[i].size());
    if (!data[i].empty()) {
      EXPECT_EQ(std::memcmp(f->data(t), data[i].data(), data[i].size()), 0)
          << t.name;
    }
  }
}

TEST(SafetensorsWriter, MisuseIsRefusedAndLeavesNothing) {
  ScratchDir dir;
  const std::string path = dir / "x.safetensors";
  std::vector<TensorSpec> specs = {Spec("a", StDtype::kF32, {2}),
                                   Spec("b", StDtype::kF32, {2})};
  const char bytes[8] = {};
  std::unique_ptr<SafetensorsWriter> w;
  // Wrong name.
  ASSERT_TRUE(SafetensorsWriter::Create(path, specs, {}, false, &w).ok());
  Status s = w->WriteTensor("b", bytes, 8);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("expected tensor 'a'"));
  EXPECT_FALSE(w->Finish().ok());
  EXPECT_FALSE(Exists(path));
  // Wrong size.
  ASSERT_TRUE(SafetensorsWriter::Create(path, specs, {}, false, &w).ok());
  s = w->WriteTensor("a", bytes, 4);
  EXPECT_THAT(s.message(), HasSubstr("given 4 bytes but holds 8"));
  // Too many bytes by Append.
  ASSERT_TRUE(SafetensorsWriter::Create(path, specs, {}, false, &w).ok());
  ASSERT_TRUE(w->BeginTensor("a").ok());
  EXPECT_FALSE(w->Append(bytes, 9).ok());
  // Missing tensor at Finish.
  ASSERT_TRUE(SafetensorsWriter::Create(path, specs, {}, false, &w).ok());
  ASSERT_TRUE(w->WriteTensor("a", bytes, 8).ok());
  s = w->Finish();
  EXPECT_THAT(s.message(), HasSubstr("tensor 'b' was not written"));
  w.reset();
  EXPECT_FALSE(Exists(path));
  // Nothing else was left in the directory either (temporaries removed).
  EXPECT_EQ(std::system(("test -z \"$(ls -A '" + dir.path() + "')\"").c_str()),
            0);

  // Invalid lists.
  auto bad = [&](std::vector<TensorSpec> list, io::Metadata meta,
                 const char* fragment) {
    Status st = SafetensorsWriter::Create(path, std::move(list),
                                          std::move(meta), false, &w);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << fragment;
    EXPECT_THAT(st.message(), HasSubstr(fragment));
    EXPECT_FALSE(Exists(path));
  };
  bad({specs[0], specs[0]}, {}, "duplicate tensor name 'a'");
  TensorSpec wrong = specs[0];
  wrong.byte_size = 7;
  bad({wrong}, {}, "byte size 7 but shape [2] of F32 needs 8");
  bad({Spec("__metadata__", StDtype::kU8, {1})}, {}, "__metadata__");
  bad({Spec("", StDtype::kU8, {1})}, {}, "empty tensor name");
  bad({Spec("bad\xff", StDtype::kU8, {1})}, {}, "not valid UTF-8");
  bad({Spec("a", StDtype::kU8, {1, 1, 1, 1, 1, 1, 1, 1, 1})}, {},
      "more than 8");
  bad({}, {{"k", "1"}, {"k", "2"}}, "duplicate metadata key 'k'");
}

TEST(SafetensorsWriter, ExistingFileNeedsOverwrite) {
  ScratchDir dir;
  const std::string path = dir / "x.safetensors";
  WriteBytes(path, "old");
  std::unique_ptr<SafetensorsWriter> w;
  Status s = SafetensorsWriter::Create(path, {}, {}, false, &w);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadBytes(path), "old");
  ASSERT_TRUE(SafetensorsWriter::Create(path, {}, {}, true, &w).ok());
  ASSERT_TRUE(w->Finish().ok());
  std::unique_ptr<SafetensorsFile> f;
  ASSERT_TRUE(SafetensorsFile::Open(path, &f).ok());
  EXPECT_TRUE(f->tensors().empty());
}

TEST(ShardPlan, SplitsLikeHuggingFace) {
  std::vector<TensorSpec> t = {
      Spec("a", StDtype::kU8, {40}), Spec("b", StDtype::kU8, {50}),
      Spec("c", StDtype::kU8, {20}), Spec("d", StDtype::kU8, {150}),
      Spec("e", StDtype::kU8, {10})};
  io::ShardPlan plan;
  ASSERT_TRUE(io::PlanShards(t, 100, &plan).ok());
  ASSERT_EQ(plan.file_names.size(), 4u);
  EXPECT_EQ(plan.file_names[0], "model-00001-of-00004.safetensors");
  EXPECT_EQ(plan.file_names[3], "model-00004-of-00004.safetensors");
  EXPECT_EQ(plan.tensors,
            (std::vector<std::vector<size_t>>{{0, 1}, {2}, {3}, {4}}));
  EXPECT_EQ(plan.total_size, 270u);
  std::string json;
  ASSERT_TRUE(io::ShardIndexJson(t, plan, &json).ok());
  EXPECT_EQ(json,
            "{\n"
            "  \"metadata\": {\n"
            "    \"total_size\": 270\n"
            "  },\n"
            "  \"weight_map\": {\n"
            "    \"a\": \"model-00001-of-00004.safetensors\",\n"
            "    \"b\": \"model-00001-of-00004.safetensors\",\n"
            "    \"c\": \"model-00002-of-00004.safetensors\",\n"
            "    \"d\": \"model-00003-of-00004.safetensors\",\n"
            "    \"e\": \"model-00004-of-00004.safetensors\"\n"
            "  }\n"
            "}\n");
  ASSERT_TRUE(io::PlanShards(t, 1000, &plan).ok());
  EXPECT_EQ(plan.file_names, (std::vector<std::string>{"model.safetensors"}));
  EXPECT_EQ(io::PlanShards(t, 0, &plan).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(io::PlanShards({}, 10, &plan).ok());
  EXPECT_EQ(plan.file_names.size(), 1u);
}

}  // namespace
}  // namespace nibble::test
