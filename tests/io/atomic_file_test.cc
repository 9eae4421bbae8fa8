// AtomicFile: nothing under the final name before Commit, temporaries removed
// on Abort, destruction and "signal", refusal to replace without overwrite.
#include "nibble/io/atomic_file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "io_test_util.h"

namespace nibble::test {
namespace {

using io::AtomicFile;
using ::testing::HasSubstr;
using ::testing::StartsWith;

std::string Basename(const std::string& p) {
  return p.substr(p.rfind('/') + 1);
}

TEST(AtomicFile, CommitPublishesOnlyAtTheEnd) {
  ScratchDir dir;
  const std::string final_path = dir / "out.bin";
  std::unique_ptr<AtomicFile> f;
  ASSERT_TRUE(AtomicFile::Create(final_path, false, &f).ok());
  EXPECT_THAT(Basename(f->temp_path()), StartsWith(".out.bin.nibble-tmp-"));
  EXPECT_EQ(f->temp_path().substr(0, dir.path().size()), dir.path());
  EXPECT_TRUE(Exists(f->temp_path()));
  ASSERT_TRUE(f->Write("hello ", 6).ok());
  ASSERT_TRUE(f->Write("world", 5).ok());
  EXPECT_FALSE(Exists(final_path));
  EXPECT_EQ(f->bytes_written(), 11u);
  const std::string temp = f->temp_path();
  ASSERT_TRUE(f->Commit().ok());
  EXPECT_TRUE(f->committed());
  EXPECT_EQ(ReadBytes(final_path), "hello world");
  EXPECT_FALSE(Exists(temp));
  f.reset();  // the destructor must not remove the committed file
  EXPECT_EQ(ReadBytes(final_path), "hello world");
  EXPECT_EQ(f, nullptr);
}

TEST(AtomicFile, AbortAndDestructorRemoveTheTemporary) {
  ScratchDir dir;
  std::unique_ptr<AtomicFile> f;
  ASSERT_TRUE(AtomicFile::Create(dir / "a", false, &f).ok());
  std::string temp = f->temp_path();
  ASSERT_TRUE(f->Write("x", 1).ok());
  f->Abort();
  EXPECT_FALSE(Exists(temp));
  EXPECT_FALSE(Exists(dir / "a"));
  EXPECT_FALSE(f->Write("x", 1).ok());
  EXPECT_FALSE(f->Commit().ok());

  ASSERT_TRUE(AtomicFile::Create(dir / "a", false, &f).ok());
  temp = f->temp_path();
  f.reset();
  EXPECT_FALSE(Exists(temp));
  EXPECT_FALSE(Exists(dir / "a"));
}

TEST(AtomicFile, ExistingFinalNameNeedsOverwrite) {
  ScratchDir dir;
  const std::string final_path = dir / "out";
  WriteBytes(final_path, "old");
  std::unique_ptr<AtomicFile> f;
  Status s = AtomicFile::Create(final_path, false, &f);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("already exists"));
  EXPECT_EQ(ReadBytes(final_path), "old");

  // A file that appears under the final name after Create is not replaced
  // either (RENAME_NOREPLACE), and the temporary goes away.
  ASSERT_TRUE(AtomicFile::Create(dir / "late", false, &f).ok());
  ASSERT_TRUE(f->Write("new", 3).ok());
  WriteBytes(dir / "late", "other");
  std::string temp = f->temp_path();
  s = f->Commit();
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadBytes(dir / "late"), "other");
  EXPECT_FALSE(Exists(temp));

  ASSERT_TRUE(AtomicFile::Create(final_path, true, &f).ok());
  ASSERT_TRUE(f->Write("new", 3).ok());
  EXPECT_EQ(ReadBytes(final_path), "old");
  ASSERT_TRUE(f->Commit().ok());
  EXPECT_EQ(ReadBytes(final_path), "new");

  // A directory is never a file name to replace.
  ASSERT_EQ(mkdir((dir / "d").c_str(), 0755), 0);
  EXPECT_EQ(AtomicFile::Create(dir / "d", true, &f).code(),
            StatusCode::kInvalidArgument);
}

TEST(AtomicFile, UnwritableDirectoryIsIoError) {
  ScratchDir dir;
  std::unique_ptr<AtomicFile> f;
  Status s = AtomicFile::Create(dir / "missing/out", false, &f);
  EXPECT_EQ(s.code(), StatusCode::kIoError) << s.ToString();
  EXPECT_EQ(f, nullptr);
  // /proc refuses new files even to root.
  s = AtomicFile::Create("/proc/nibble-io-test-out", false, &f);
  EXPECT_EQ(s.code(), StatusCode::kIoError) << s.ToString();
  if (geteuid() != 0) {
    ASSERT_EQ(mkdir((dir / "ro").c_str(), 0555), 0);
    s = AtomicFile::Create(dir / "ro/out", false, &f);
    EXPECT_EQ(s.code(), StatusCode::kIoError) << s.ToString();
    EXPECT_THAT(s.message(), HasSubstr("Permission denied"));
  }
}

TEST(AtomicFile, SignalCleanupRemovesLiveTemporaries) {
  ScratchDir dir;
  std::unique_ptr<AtomicFile> a, b, done;
  ASSERT_TRUE(AtomicFile::Create(dir / "a", false, &a).ok());
  ASSERT_TRUE(AtomicFile::Create(dir / "b", false, &b).ok());
  ASSERT_TRUE(AtomicFile::Create(dir / "c", false, &done).ok());
  ASSERT_TRUE(done->Commit().ok());
  EXPECT_TRUE(Exists(a->temp_path()));
  io::RemoveTemporariesOnSignal();
  EXPECT_FALSE(Exists(a->temp_path()));
  EXPECT_FALSE(Exists(b->temp_path()));
  EXPECT_TRUE(Exists(dir / "c"));  // committed files are not touched
}

TEST(AtomicFile, ManyAtOnceAndLongNames) {
  ScratchDir dir;
  std::vector<std::unique_ptr<AtomicFile>> files(io::kMaxLiveTemporaries);
  for (size_t i = 0; i < files.size(); ++i) {
    ASSERT_TRUE(
        AtomicFile::Create(dir / std::to_string(i), false, &files[i]).ok());
  }
  std::unique_ptr<AtomicFile> extra;
  EXPECT_EQ(AtomicFile::Create(dir / "x", false, &extra).code(),
            StatusCode::kInternal);
  files.clear();
  // A final name of 250 bytes still gets a temporary name within NAME_MAX.
  std::string name(250, 'n');
  ASSERT_TRUE(AtomicFile::Create(dir / name, false, &extra).ok());
  ASSERT_TRUE(extra->Commit().ok());
  EXPECT_TRUE(Exists(dir / name));
}

}  // namespace
}  // namespace nibble::test
