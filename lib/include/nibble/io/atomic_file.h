// AtomicFile: write a file under a temporary name, then rename it into place.
//
// Protocol (docs/bad-inputs.md, "Writing output safely"):
//  1. Create() makes `.<final>.nibble-tmp-<pid>-<random>` in the final name's
//     directory with O_CREAT|O_EXCL|O_WRONLY|O_CLOEXEC (never follows or
//     reuses an existing name), mode 0666 & ~umask.
//  2. Write() checks every write (short writes are continued, EINTR retried).
//  3. Commit() fsyncs and closes the file (both checked), renames it to the
//     final name and fsyncs the directory. Without `overwrite` an existing
//     final name is refused atomically (renameat2 RENAME_NOREPLACE, or
//     link + unlink where that flag is unsupported).
//  4. Abort() or the destructor of an uncommitted file removes the temporary.
// A failed fsync is reported, never retried. Any failure leaves nothing under
// the final name (with `overwrite`, the previous file stays until the rename).
//
// Live temporaries are kept in a process-wide registry of fixed size so that
// RemoveTemporariesOnSignal() can unlink them from a SIGINT/SIGTERM handler.
// One AtomicFile must not be used from two threads at once; distinct objects
// may be used concurrently.
#ifndef NIBBLE_IO_ATOMIC_FILE_H_
#define NIBBLE_IO_ATOMIC_FILE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "nibble/status.h"

namespace nibble {
namespace io {

class AtomicFile {
 public:
  // Errors: kInvalidArgument when the final name exists and `overwrite` is
  // false, or when the final name is empty, ends in '/', or names a
  // directory; kIoError when the directory is missing or not writable (the
  // message carries strerror); kInternal when more than kMaxLiveTemporaries
  // temporaries are alive at once.
  static Status Create(const std::string& final_path, bool overwrite,
                       std::unique_ptr<AtomicFile>* out);

  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  // Appends `size` bytes. After a failure every later call (and Commit)
  // returns the same failure; the temporary is still removed by Abort/dtor.
  Status Write(const void* data, size_t size);

  // fsync, close, rename to the final name, fsync the directory. After a
  // failed Commit the temporary has been removed. Calling it twice is
  // kInvalidArgument.
  Status Commit();

  // Closes and unlinks the temporary (no-op after Commit or a second Abort).
  void Abort();

  const std::string& final_path() const { return final_path_; }
  const std::string& temp_path() const { return temp_path_; }
  uint64_t bytes_written() const { return bytes_written_; }
  bool committed() const { return committed_; }

 private:
  AtomicFile() = default;
  void Unregister();

  std::string final_path_;
  std::string temp_path_;
  std::string dir_path_;
  int fd_ = -1;
  int slot_ = -1;
  bool overwrite_ = false;
  bool committed_ = false;
  bool finished_ = false;  // committed or aborted
  uint64_t bytes_written_ = 0;
  Status error_;
};

// How many AtomicFile temporaries may be alive at the same time.
constexpr int kMaxLiveTemporaries = 64;

// Unlinks every live temporary of this process. Async-signal-safe (it only
// reads lock-free atomics and fixed buffers and calls unlink), for use in a
// SIGINT/SIGTERM handler that then exits; the AtomicFile objects must not be
// used afterwards except to destroy them (their unlink then fails harmlessly).
void RemoveTemporariesOnSignal();

}  // namespace io
}  // namespace nibble

#endif  // NIBBLE_IO_ATOMIC_FILE_H_
