// Checkpoint: single files, model directories, sharded directories (rows
// 19-23 and 42 of docs/bad-inputs.md). Shards are built byte by byte.
#include "nibble/io/checkpoint.h"

#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "io_test_util.h"

namespace nibble::test {
namespace {

using io::Checkpoint;
using ::testing::HasSubstr;

// A shard holding U8 tensors of 4 bytes each, named as given.
std::string Shard(const std::vector<std::string>& names) {
  std::string h = "{";
  for (size_t i = 0; i < names.size(); ++i) {
    if (i) h += ",";
    h += "\"" + names[i] +
         "\":{\"dtype\":\"U8\",\"shape\":[4],"
         "\"data_offsets\":[" +
         std::to_string(4 * i) + "," + std::to_string(4 * i + 4) + "]}";
  }
  h += "}";
  return SafetensorsBytes(h, std::string(4 * names.size(), 'd'));
}

std::string Index(const std::string& weight_map) {
  return "{\"metadata\": {\"total_size\": 16}, \"weight_map\": {" + weight_map +
         "}}";
}

const char* kShard1 = "model-00001-of-00002.safetensors";
const char* kShard2 = "model-00002-of-00002.safetensors";

// A valid two-shard directory; shard 2 is a symlink into a blobs directory,
// as in the Hugging Face cache.
void MakeSharded(const ScratchDir& root, const std::string& index) {
  ASSERT_EQ(mkdir((root / "model").c_str(), 0755), 0);
  ASSERT_EQ(mkdir((root / "blobs").c_str(), 0755), 0);
  WriteBytes(root / ("model/" + std::string(kShard1)), Shard({"b", "a"}));
  WriteBytes(root / "blobs/abc123", Shard({"c", "d"}));
  ASSERT_EQ(symlink("../blobs/abc123",
                    (root / ("model/" + std::string(kShard2))).c_str()),
            0);
  WriteBytes(root / "model/model.safetensors.index.json", index);
  WriteBytes(root / "model/config.json", "{}");
  WriteBytes(root / "model/tokenizer.json", "{}");
}

std::string GoodIndex() {
  return Index(std::string("\"a\": \"") + kShard1 + "\", \"b\": \"" + kShard1 +
               "\", \"c\": \"" + kShard2 + "\", \"d\": \"" + kShard2 + "\"");
}

TEST(Checkpoint, SingleFileAndDirectory) {
  ScratchDir dir;
  WriteBytes(dir / "w.safetensors", Shard({"x", "y"}));
  std::unique_ptr<Checkpoint> c;
  Status s = Checkpoint::Open(dir / "w.safetensors", &c);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(c->layout(), Checkpoint::Layout::kFile);
  ASSERT_EQ(c->tensors().size(), 2u);
  EXPECT_EQ(c->tensors()[0].info->name, "x");
  EXPECT_TRUE(c->other_files().empty());

  ASSERT_EQ(mkdir((dir / "m").c_str(), 0755), 0);
  ASSERT_EQ(mkdir((dir / "m/1_Pooling").c_str(), 0755), 0);
  WriteBytes(dir / "m/model.safetensors", Shard({"x"}));
  WriteBytes(dir / "m/config.json", "{}");
  WriteBytes(dir / "m/vocab.txt", "a");
  WriteBytes(dir / "m/other.safetensors", Shard({"z"}));
  s = Checkpoint::Open(dir / "m", &c);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(c->layout(), Checkpoint::Layout::kDirectory);
  EXPECT_EQ(c->other_files(),
            (std::vector<std::string>{"config.json", "vocab.txt"}));
  EXPECT_EQ(c->unused_safetensors(),
            (std::vector<std::string>{"other.safetensors"}));
  EXPECT_EQ(c->subdirectories(), (std::vector<std::string>{"1_Pooling"}));
  ASSERT_NE(c->Find("x"), nullptr);
}

TEST(Checkpoint, ShardedWithSymlinkedShard) {
  ScratchDir root;
  MakeSharded(root, GoodIndex());
  std::unique_ptr<Checkpoint> c;
  Status s = Checkpoint::Open(root / "model", &c);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(c->layout(), Checkpoint::Layout::kShardedDirectory);
  EXPECT_EQ(c->shard_names(), (std::vector<std::string>{kShard1, kShard2}));
  EXPECT_EQ(c->index_total_size(), 16);
  std::vector<std::string> names;
  for (const auto& t : c->tensors()) names.push_back(t.info->name);
  // Shard order, then data order.
  EXPECT_EQ(names, (std::vector<std::string>{"b", "a", "c", "d"}));
  EXPECT_EQ(c->Find("c")->shard, 1u);
  EXPECT_EQ(c->other_files(),
            (std::vector<std::string>{"config.json", "tokenizer.json"}));
  const uint8_t* p = nullptr;
  ASSERT_TRUE(c->shards()[1]->TensorData(*c->Find("d")->info, &p).ok());
  EXPECT_EQ(p[0], 'd');
}

struct IndexCase {
  const char* label;
  std::string index;
  std::vector<std::string> fragments;
  std::string at;  // text whose position in the index is the offset ("" any)
};

TEST(Checkpoint, RejectsBadIndexes) {
  const std::string s1 = kShard1, s2 = kShard2;
  const std::string rest =
      "\"b\": \"" + s1 + "\", \"c\": \"" + s2 + "\", \"d\": \"" + s2 + "\"";
  std::vector<IndexCase> cases = {
      // 19.
      {"not_json", "{\"weight_map\": ", {"index is not valid JSON"}, ""},
      {"not_object", "[]", {"not a JSON object"}, ""},
      {"no_weight_map", "{\"metadata\": {}}", {"no 'weight_map'"}, ""},
      {"weight_map_array", "{\"weight_map\": []}", {"'weight_map' is not"}, ""},
      {"value_not_string",
       Index("\"a\": 1, " + rest),
       {"weight_map entry 'a'", "not a string"},
       "\"a\""},
      {"total_size_string",
       "{\"metadata\": {\"total_size\": \"16\"}, \"weight_map\": {}}",
       {"total_size"},
       ""},
      {"duplicate_key",
       Index("\"a\": \"" + s1 + "\", " + rest + ", \"a\": \"" + s1 + "\""),
       {"duplicate key 'a'"},
       "\"a\": \"" + s1 + "\"}"},
      {"nul_byte", std::string("{\"weight_map\": {}}\0", 19), {"NUL"}, ""},
      // 20.
      {"dotdot",
       Index("\"a\": \"../model-00001-of-00002.safetensors\", " + rest),
       {"tensor 'a'", "shard name '../model", "contains a '/'"},
       "\"a\""},
      {"dotdot_alone",
       Index("\"a\": \"..\", " + rest),
       {"tensor 'a'", "is '..'"},
       "\"a\""},
      {"absolute",
       Index("\"a\": \"/etc/passwd\", " + rest),
       {"tensor 'a'", "absolute path"},
       "\"a\""},
      {"separator",
       Index("\"a\": \"sub/x.safetensors\", " + rest),
       {"contains a '/'"},
       "\"a\""},
      {"backslash",
       Index("\"a\": \"sub\\\\x.safetensors\", " + rest),
       {"contains a '\\'"},
       "\"a\""},
      {"nul_in_name",
       Index("\"a\": \"x\\u0000.safetensors\", " + rest),
       {"NUL"},
       "\"a\""},
      {"empty_name", Index("\"a\": \"\", " + rest), {"is empty"}, "\"a\""},
      // 21.
      {"missing_shard",
       Index("\"a\": \"model-00009.safetensors\", " + rest),
       {"shard 'model-00009.safetensors' does not exist"},
       "\"a\""},
      // 22.
      {"absent_from_shard",
       Index("\"a\": \"" + s1 + "\", \"zz\": \"" + s1 + "\", " + rest),
       {"tensor 'zz'", "absent from it"},
       "\"zz\""},
      {"in_wrong_shard",
       Index("\"a\": \"" + s2 + "\", " + rest),
       {"tensor 'a'", "absent from it", "it is in '" + s1 + "'"},
       "\"a\""},
      // 23.
      {"unlisted",
       Index("\"a\": \"" + s1 + "\", \"b\": \"" + s1 + "\", \"c\": \"" + s2 +
             "\""),
       {"tensor 'd' is not listed"},
       ""},
  };
  for (const IndexCase& ic : cases) {
    SCOPED_TRACE(ic.label);
    ScratchDir root;
    MakeSharded(root, ic.index);
    std::unique_ptr<Checkpoint> c;
    Status s = Checkpoint::Open(root / "model", &c);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.code(), StatusCode::kBadFormat) << s.ToString();
    for (const std::string& f : ic.fragments) {
      EXPECT_THAT(s.message(), HasSubstr(f));
    }
    EXPECT_GE(s.offset(), 0) << s.message();
    if (!ic.at.empty()) {
      EXPECT_EQ(s.offset(), static_cast<int64_t>(ic.index.find(ic.at)))
          << s.message();
    }
    EXPECT_EQ(c, nullptr);
  }
}

TEST(Checkpoint, TensorInTwoShards) {
  ScratchDir root;
  MakeSharded(root, GoodIndex());
  WriteBytes(root / "blobs/abc123", Shard({"c", "d", "a"}));
  std::unique_ptr<Checkpoint> c;
  Status s = Checkpoint::Open(root / "model", &c);
  EXPECT_EQ(s.code(), StatusCode::kBadFormat);
  EXPECT_THAT(s.message(), HasSubstr("tensor 'a' is present in two shards"));
  EXPECT_GE(s.offset(), 8);
}

TEST(Checkpoint, BadShardContentsNameTheShard) {
  ScratchDir root;
  MakeSharded(root, GoodIndex());
  WriteBytes(root / "blobs/abc123", "short");
  std::unique_ptr<Checkpoint> c;
  Status s = Checkpoint::Open(root / "model", &c);
  EXPECT_EQ(s.code(), StatusCode::kBadFormat);
  EXPECT_THAT(s.message(), HasSubstr(kShard2));
  EXPECT_THAT(s.message(), HasSubstr("too short to be safetensors"));
}

TEST(Checkpoint, NotACheckpoint) {
  ScratchDir dir;
  std::unique_ptr<Checkpoint> c;
  Status s = Checkpoint::Open(dir.path(), &c);
  EXPECT_EQ(s.code(), StatusCode::kBadFormat);
  EXPECT_THAT(s.message(), HasSubstr("not a safetensors or GGUF checkpoint"));
  WriteBytes(dir / "readme.txt", "hello, this is text and not a model");
  s = Checkpoint::Open(dir / "readme.txt", &c);
  EXPECT_EQ(s.code(), StatusCode::kBadFormat);
  EXPECT_THAT(s.message(), HasSubstr("not a safetensors or GGUF checkpoint"));
  WriteBytes(dir / "m.gguf", std::string("GGUF\3\0\0\0", 8) + "rest");
  s = Checkpoint::Open(dir / "m.gguf", &c);
  EXPECT_EQ(s.code(), StatusCode::kUnsupported);
  EXPECT_THAT(s.message(), HasSubstr("GGUF"));
  s = Checkpoint::Open(dir / "nothing", &c);
  EXPECT_EQ(s.code(), StatusCode::kIoError);
  // A safetensors file under another name is recognised by its contents.
  WriteBytes(dir / "weights.bin", Shard({"x"}));
  s = Checkpoint::Open(dir / "weights.bin", &c);
  EXPECT_TRUE(s.ok()) << s.ToString();
}

}  // namespace
}  // namespace nibble::test
