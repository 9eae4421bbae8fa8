#include "nibble/io/atomic_file.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "io/io_common.h"

namespace nibble {
namespace io {

using internal::IoError;

namespace {

// Registry slots: state 0 free, 1 being written or cleared, 2 live. The
// signal handler reads only slots in state 2, whose path is complete.
struct Slot {
  std::atomic<int> state{0};
  char path[PATH_MAX];
};
static_assert(std::atomic<int>::is_always_lock_free,
              "the signal handler needs lock-free atomics");
Slot g_slots[kMaxLiveTemporaries];

int RegisterTemporary(const std::string& path) {
  if (path.size() >= PATH_MAX) return -1;
  for (int i = 0; i < kMaxLiveTemporaries; ++i) {
    int expected = 0;
    if (g_slots[i].state.compare_exchange_strong(expected, 1)) {
      std::memcpy(g_slots[i].path, path.c_str(), path.size() + 1);
      g_slots[i].state.store(2, std::memory_order_release);
      return i;
    }
  }
  return -1;
}

void UnregisterTemporary(int slot) {
  if (slot < 0) return;
  g_slots[slot].state.store(1, std::memory_order_release);
  g_slots[slot].path[0] = '\0';
  g_slots[slot].state.store(0, std::memory_order_release);
}

uint64_t RandomBits() {
  uint64_t r = 0;
  if (getrandom(&r, sizeof(r), GRND_NONBLOCK) == sizeof(r)) return r;
  // No entropy available yet: the name only has to be unlikely to collide,
  // O_EXCL makes a collision safe.
  static std::atomic<uint64_t> counter{0};
  uint64_t t = static_cast<uint64_t>(
      std::chrono::steady_clock::now().time_since_epoch().count());
  return (t * 0x9e3779b97f4a7c15ull) ^ counter.fetch_add(1);
}

void SplitPath(const std::string& path, std::string* dir, std::string* base) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) {
    *dir = ".";
    *base = path;
  } else {
    *dir = slash == 0 ? "/" : path.substr(0, slash);
    *base = path.substr(slash + 1);
  }
}

Status FsyncDirectory(const std::string& dir) {
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return IoError("cannot open directory " + dir, errno);
  int rc = fsync(fd);
  int err = errno;
  close(fd);
  // EINVAL: the filesystem cannot sync directories (the rename is as durable
  // as it can be made there); anything else is a real failure.
  if (rc != 0 && err != EINVAL) {
    return IoError("cannot fsync directory " + dir, err);
  }
  return Status::Ok();
}

Status Exists(const std::string& path) {
  return Status(StatusCode::kInvalidArgument,
                path + ": already exists (refusing to replace it)");
}

}  // namespace

void RemoveTemporariesOnSignal() {
  for (int i = 0; i < kMaxLiveTemporaries; ++i) {
    if (g_slots[i].state.load(std::memory_order_acquire) == 2) {
      unlink(g_slots[i].path);
    }
  }
}

Status AtomicFile::Create(const std::string& final_path, bool overwrite,
                          std::unique_ptr<AtomicFile>* out) {
  out->reset();
  std::string dir, base;
  SplitPath(final_path, &dir, &base);
  if (base.empty() || base == "." || base == "..") {
    return Status(StatusCode::kInvalidArgument,
                  "'" + final_path + "' is not a file name");
  }
  struct stat st;
  if (lstat(final_path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) {
      return Status(StatusCode::kInvalidArgument,
                    final_path + ": is a directory");
    }
    if (!overwrite) return Exists(final_path);
  } else if (errno != ENOENT) {
    return IoError("cannot stat " + final_path, errno);
  }

  std::unique_ptr<AtomicFile> f(new AtomicFile());
  f->final_path_ = final_path;
  f->dir_path_ = dir;
  f->overwrite_ = overwrite;
  // Keep the temporary's name within NAME_MAX (255) whatever the final name.
  std::string stem = base.size() > 180 ? base.substr(0, 180) : base;
  std::string prefix = (dir == "." && final_path.find('/') == std::string::npos
                            ? std::string()
                            : (dir == "/" ? dir : dir + "/")) +
                       "." + stem + ".nibble-tmp-" +
                       std::to_string(static_cast<long>(getpid())) + "-";
  for (int attempt = 0; attempt < 16; ++attempt) {
    char rnd[17];
    std::snprintf(rnd, sizeof(rnd), "%016llx",
                  static_cast<unsigned long long>(RandomBits()));
    std::string temp = prefix + rnd;
    // Register before creating: a signal between open and registration
    // would otherwise leave the file behind.
    int slot = RegisterTemporary(temp);
    if (slot < 0) {
      return Status(StatusCode::kInternal,
                    temp.size() >= PATH_MAX
                        ? final_path + ": path too long"
                        : "too many temporary files open at once");
    }
    int fd = open(temp.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0666);
    if (fd >= 0) {
      f->temp_path_ = temp;
      f->fd_ = fd;
      f->slot_ = slot;
      *out = std::move(f);
      return Status::Ok();
    }
    int err = errno;
    UnregisterTemporary(slot);
    if (err != EEXIST) {
      return IoError("cannot create a temporary file in " + dir, err);
    }
  }
  return Status(StatusCode::kIoError, "cannot create a temporary file in " +
                                          dir + ": every name tried exists");
}

AtomicFile::~AtomicFile() { Abort(); }

void AtomicFile::Unregister() {
  UnregisterTemporary(slot_);
  slot_ = -1;
}

Status AtomicFile::Write(const void* data, size_t size) {
  if (!error_.ok()) return error_;
  if (finished_ || fd_ < 0) {
    return Status(StatusCode::kInvalidArgument,
                  final_path_ + ": write after commit or abort");
  }
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    // Linux writes at most ~2 GiB per call.
    size_t chunk = size < (size_t{1} << 30) ? size : (size_t{1} << 30);
    ssize_t w = write(fd_, p, chunk);
    if (w < 0) {
      if (errno == EINTR) continue;
      error_ = IoError("cannot write " + temp_path_, errno);
      return error_;
    }
    if (w == 0) {
      error_ = IoError("cannot write " + temp_path_, EIO);
      return error_;
    }
    p += w;
    size -= static_cast<size_t>(w);
    bytes_written_ += static_cast<uint64_t>(w);
  }
  return Status::Ok();
}

Status AtomicFile::Commit() {
  if (finished_) {
    return Status(StatusCode::kInvalidArgument,
                  final_path_ + ": commit after commit or abort");
  }
  if (!error_.ok()) {
    Status e = error_;
    Abort();
    return e;
  }
  if (fsync(fd_) != 0) {
    Status e = IoError("cannot fsync " + temp_path_, errno);
    Abort();
    return e;
  }
  int rc = close(fd_);
  fd_ = -1;
  if (rc != 0) {
    Status e = IoError("cannot close " + temp_path_, errno);
    Abort();
    return e;
  }
  if (overwrite_) {
    if (rename(temp_path_.c_str(), final_path_.c_str()) != 0) {
      Status e =
          IoError("cannot rename " + temp_path_ + " to " + final_path_, errno);
      Abort();
      return e;
    }
  } else {
    rc = renameat2(AT_FDCWD, temp_path_.c_str(), AT_FDCWD, final_path_.c_str(),
                   RENAME_NOREPLACE);
    if (rc != 0 && (errno == EINVAL || errno == ENOSYS)) {
      // No RENAME_NOREPLACE on this filesystem: link() also refuses an
      // existing name atomically.
      rc = link(temp_path_.c_str(), final_path_.c_str());
      if (rc == 0) unlink(temp_path_.c_str());
    }
    if (rc != 0) {
      int err = errno;
      Abort();
      if (err == EEXIST) return Exists(final_path_);
      return IoError("cannot rename " + temp_path_ + " to " + final_path_, err);
    }
  }
  committed_ = true;
  finished_ = true;
  Unregister();
  return FsyncDirectory(dir_path_);
}

void AtomicFile::Abort() {
  if (finished_) return;
  finished_ = true;
  if (fd_ >= 0) {
    close(fd_);
    fd_ = -1;
  }
  if (!temp_path_.empty()) unlink(temp_path_.c_str());
  Unregister();
}

}  // namespace io
}  // namespace nibble
