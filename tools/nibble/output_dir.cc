// See output_dir.h.
#include "output_dir.h"

#include <dirent.h>
#include <fcntl.h>
#include <omp.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <system_error>

#include "nibble/io/atomic_file.h"
#include "nibble/nibble.h"
#include "text.h"

namespace nibble::tool {

namespace fs = std::filesystem;

int ExitFor(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return 0;
    case StatusCode::kInvalidArgument:
    case StatusCode::kUnsupported:
      return 1;
    case StatusCode::kNonFinite:
    case StatusCode::kScaleOverflow:
    case StatusCode::kBadFormat:
      return 2;
    case StatusCode::kIoError:
      return 3;
    case StatusCode::kInternal:
      return 4;
  }
  return 4;
}

void Check(const Status& s, const std::string& context) {
  if (s.ok()) return;
  throw ToolError(ExitFor(s.code()), context.empty()
                                         ? s.ToString()
                                         : context + ": " + s.ToString());
}

void UsageError(const std::string& m) { throw ToolError(1, m); }
void IoError(const std::string& m) { throw ToolError(3, m); }

ExecOptions ResolveExecOptions(int threads, const std::string& isa,
                               const std::string& global_isa) {
  if (threads < 0 || threads > 1024)
    UsageError("--threads must be between 1 and 1024");
  ExecOptions exec;
  exec.threads = threads > 0 ? threads : omp_get_max_threads();
  Isa requested = Isa::kAuto;
  const std::string name = isa.empty() ? global_isa : isa;
  if (!ParseIsa(name, &requested))
    UsageError("--isa: unknown path '" + name + "'");
  Check(ResolveIsa(requested, &exec.isa), "--isa " + name);
  return exec;
}

uint64_t ParseSize(const std::string& text) {
  size_t i = 0;
  while (i < text.size() &&
         (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.'))
    ++i;
  if (i == 0) UsageError("--max-shard-size: '" + text + "' is not a size");
  double value = 0;
  try {
    value = std::stod(text.substr(0, i));
  } catch (const std::exception&) {
    UsageError("--max-shard-size: '" + text + "' is not a size");
  }
  std::string unit = text.substr(i);
  for (char& c : unit)
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  double mult = 0;
  if (unit.empty() || unit == "B")
    mult = 1;
  else if (unit == "KB")
    mult = 1e3;
  else if (unit == "MB")
    mult = 1e6;
  else if (unit == "GB")
    mult = 1e9;
  else if (unit == "TB")
    mult = 1e12;
  else if (unit == "KIB")
    mult = 1024.0;
  else if (unit == "MIB")
    mult = 1024.0 * 1024;
  else if (unit == "GIB")
    mult = 1024.0 * 1024 * 1024;
  else
    UsageError("--max-shard-size: unknown unit in '" + text +
               "' (B, KB, MB, GB, TB, KiB, MiB, GiB)");
  const double bytes = value * mult;
  if (!(bytes >= 1) || bytes > 9e18)
    UsageError("--max-shard-size: '" + text + "' is out of range");
  return static_cast<uint64_t>(bytes);
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  std::error_code ec;
  fs::remove_all(path_, ec);
}

void FsyncDir(const fs::path& p) {
  const int fd = ::open(p.c_str(), O_DIRECTORY | O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    IoError("cannot open '" + p.string() + "': " + std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) IoError("fsync '" + p.string() + "': " + std::strerror(err));
}

void WriteWholeFile(const fs::path& path, const std::string& bytes) {
  std::unique_ptr<io::AtomicFile> f;
  Check(io::AtomicFile::Create(path.string(), false, &f), path.string());
  Check(f->Write(bytes.data(), bytes.size()), path.string());
  Check(f->Commit(), path.string());
}

std::string ReadWholeFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    IoError("cannot read '" + path.string() + "': " + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) IoError("cannot read '" + path.string() + "'");
  return ss.str();
}

fs::path Canon(const fs::path& p) {
  std::error_code ec;
  fs::path c = fs::weakly_canonical(fs::absolute(p), ec);
  if (ec) IoError("cannot resolve '" + p.string() + "': " + ec.message());
  return c.lexically_normal();
}

bool IsInside(const fs::path& child, const fs::path& parent) {
  auto c = child.begin();
  for (auto it = parent.begin(); it != parent.end(); ++it, ++c) {
    if (it->empty()) continue;  // trailing separator
    if (c == child.end() || *c != *it) return false;
  }
  return true;
}

OutputDir CheckOutputDir(const std::string& output, const std::string& input,
                         const io::Checkpoint& ckpt, bool force) {
  if (output.empty()) UsageError("OUT is empty");
  OutputDir out;
  out.path = Canon(output);
  if (!out.path.has_filename()) out.path = out.path.parent_path();  // "out/"
  if (!out.path.has_filename() || out.path == out.path.root_path())
    UsageError("OUT '" + output + "' is not a usable directory name");
  const fs::path in_path = Canon(input);
  const fs::path in_dir = ckpt.layout() == io::Checkpoint::Layout::kFile
                              ? in_path
                              : Canon(ckpt.directory());
  if (out.path == in_path || IsInside(out.path, in_dir) ||
      IsInside(in_path, out.path))
    UsageError("OUT '" + output + "' is the input, inside it, or contains it");
  std::error_code ec;
  out.exists =
      fs::symlink_status(out.path, ec).type() != fs::file_type::not_found;
  if (out.exists && !force)
    UsageError("OUT '" + output + "' exists (use --force to replace it)");
  if (!out.exists && ec && ec != std::errc::no_such_file_or_directory)
    IoError("cannot stat '" + output + "': " + ec.message());
  return out;
}

fs::path CreateTempDirFor(const fs::path& out) {
  // ".NAME.nibble-tmp-PID-<16 hex digits>": the random part keeps a
  // directory left by a killed run (SIGKILL, OOM) of a process that had the
  // same PID, as in containers, from blocking this one. A name that exists
  // is never reused: another random part is drawn.
  std::random_device rd;
  std::error_code ec;
  for (int attempt = 0; attempt < 16; ++attempt) {
    const uint64_t r = (static_cast<uint64_t>(rd()) << 32) ^ rd();
    char suffix[17];
    std::snprintf(suffix, sizeof suffix, "%016llx",
                  static_cast<unsigned long long>(r));
    const fs::path tmp_path =
        out.parent_path() / ("." + out.filename().string() + ".nibble-tmp-" +
                             std::to_string(::getpid()) + "-" + suffix);
    // Handlers first: a signal from here on removes the directory (or,
    // before it exists, stops the run at its next check), so none is left
    // behind.
    InstallInterruptHandlers(tmp_path);
    if (fs::create_directory(tmp_path, ec) && !ec) return tmp_path;
    if (ec) IoError("cannot create '" + tmp_path.string() + "': " + ec.message());
  }
  IoError("cannot create a temporary directory next to '" + out.string() +
          "': 16 names taken");
}

void CopySideFiles(const io::Checkpoint& ckpt, const fs::path& in_root,
                   const fs::path& dir) {
  for (const std::string& name : ckpt.other_files()) {
    if (name == "config.json") continue;
    WriteWholeFile(dir / name, ReadWholeFile(in_root / name));
  }
  std::error_code ec;
  for (const std::string& name : ckpt.subdirectories()) {
    fs::copy(in_root / name, dir / name,
             fs::copy_options::recursive | fs::copy_options::copy_symlinks, ec);
    if (ec)
      IoError("cannot copy '" + (in_root / name).string() +
              "': " + ec.message());
  }
  for (const std::string& name : ckpt.unused_safetensors())
    spdlog::warn("not copied: {} (not part of the checkpoint)", name);
}

void MoveIntoPlace(TempDir* guard, const OutputDir& out,
                   const std::string& output) {
  const fs::path tmp_path = guard->path();
  const fs::path parent = out.path.parent_path();
  std::error_code ec;
  fs::path old;
  if (out.exists) {
    old = parent / ("." + out.path.filename().string() + ".nibble-old-" +
                    std::to_string(::getpid()));
    fs::rename(out.path, old, ec);
    if (ec)
      IoError("cannot move the existing '" + output +
              "' aside: " + ec.message());
  }
  fs::rename(tmp_path, out.path, ec);
  if (ec) {
    std::error_code ec2;
    if (!old.empty()) fs::rename(old, out.path, ec2);
    IoError("cannot rename '" + tmp_path.string() + "' to '" + output +
            "': " + ec.message());
  }
  guard->Release();
  if (!old.empty()) fs::remove_all(old, ec);
  FsyncDir(parent);
}

namespace {

std::atomic<int> g_signal{0};
// The temporary directory to remove on a second signal (NUL-terminated).
char g_temp_dir[4096];
std::atomic<bool> g_temp_dir_set{false};

// Layout of the records getdents64 returns (as in the kernel's ABI).
struct LinuxDirent64 {
  uint64_t d_ino;
  int64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[1];
};

// Removes everything inside the directory `fd` and closes it: open,
// getdents64, unlinkat and close only, so it may run in a signal handler.
// Depth-limited; a directory nested deeper is left behind.
void RemoveContentsSignalSafe(int fd, int depth) {
  alignas(8) char buf[4096];
  for (;;) {
    const long n = ::syscall(SYS_getdents64, fd, buf, sizeof buf);
    if (n <= 0) break;
    bool removed_any = false;
    for (long off = 0; off < n;) {
      const auto* d = reinterpret_cast<const LinuxDirent64*>(buf + off);
      off += d->d_reclen;
      const char* name = d->d_name;
      if (name[0] == '.' && (name[1] == 0 || (name[1] == '.' && name[2] == 0)))
        continue;
      if (::unlinkat(fd, name, 0) == 0) {
        removed_any = true;
        continue;
      }
      if (depth < 16) {
        const int sub = ::openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
        if (sub >= 0) RemoveContentsSignalSafe(sub, depth + 1);
      }
      if (::unlinkat(fd, name, AT_REMOVEDIR) == 0) removed_any = true;
    }
    // Entries were removed under the directory stream: read it from the
    // start again until a pass removes nothing.
    if (removed_any) ::lseek(fd, 0, SEEK_SET);
  }
  ::close(fd);
}

// What SetCurrentInput recorded, NUL-terminated.
char g_input_file[2048];
char g_input_tensor[512];

void CopyCut(const std::string& from, char* to, size_t size) {
  const size_t n = std::min(from.size(), size - 1);
  std::memcpy(to, from.data(), n);
  to[n] = 0;
}

void WriteAll(const char* s) {
  size_t left = std::strlen(s);
  while (left > 0) {
    const ssize_t w = ::write(STDERR_FILENO, s, left);
    if (w <= 0) return;
    s += w;
    left -= static_cast<size_t>(w);
  }
}

void RemoveTempDirSignalSafe() {
  io::RemoveTemporariesOnSignal();
  if (!g_temp_dir_set.load()) return;
  const int fd = ::open(g_temp_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  if (fd >= 0) {
    RemoveContentsSignalSafe(fd, 0);
    ::rmdir(g_temp_dir);
  }
}

extern "C" void OnBusError(int) {
  WriteAll("nibble: error: ");
  if (g_input_file[0] != 0) {
    WriteAll(g_input_file);
    WriteAll(": ");
  }
  if (g_input_tensor[0] != 0) {
    WriteAll("tensor '");
    WriteAll(g_input_tensor);
    WriteAll("': ");
  }
  WriteAll(
      "the input changed while it was being read (SIGBUS: the file was "
      "truncated or its storage failed): nothing written\n");
  RemoveTempDirSignalSafe();
  ::_exit(2);
}

extern "C" void OnInterrupt(int sig) {
  if (g_signal.exchange(sig) == 0) return;
  RemoveTempDirSignalSafe();
  ::_exit(128 + sig);
}

}  // namespace

void InstallInterruptHandlers(const fs::path& temp_dir) {
  const std::string p = temp_dir.string();
  if (p.size() < sizeof g_temp_dir) {
    std::memcpy(g_temp_dir, p.c_str(), p.size() + 1);
    g_temp_dir_set.store(true);
  }
  std::signal(SIGINT, OnInterrupt);
  std::signal(SIGTERM, OnInterrupt);
  // Past a file size limit (ulimit -f) a write fails with EFBIG, reported
  // and cleaned up like any write error, instead of killing the process
  // and leaving the temporary behind.
  std::signal(SIGXFSZ, SIG_IGN);
  InstallFaultHandler();
}

void InstallFaultHandler() { std::signal(SIGBUS, OnBusError); }

void SetCurrentInput(const std::string& file, const std::string& tensor) {
  // Escaped here, not in the handler: it may only copy bytes.
  CopyCut(EscapeForTerminal(file, true), g_input_file, sizeof g_input_file);
  CopyCut(EscapeForTerminal(tensor, true), g_input_tensor,
          sizeof g_input_tensor);
}

void CheckInterrupted() {
  const int sig = g_signal.load();
  if (sig != 0) {
    const std::string name = sig == SIGINT    ? "SIGINT"
                             : sig == SIGTERM ? "SIGTERM"
                                              : "signal " + std::to_string(sig);
    throw ToolError(128 + sig, "interrupted by " + name + ": nothing written");
  }
}

void ReleasePages(const uint8_t* data, uint64_t size) {
  if (size == 0) return;
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(data) & ~(page - 1);
  const uintptr_t end = reinterpret_cast<uintptr_t>(data) + size;
  ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

}  // namespace nibble::tool
