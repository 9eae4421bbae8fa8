// Helpers shared by `nibble convert` and `nibble dequant`: exit-coded
// errors, --max-shard-size parsing, whole-file I/O, the OUT path checks, the
// temporary output directory next to OUT, copying of side files and moving
// the result into place (replacing OUT under --force).
#ifndef NIBBLE_TOOLS_NIBBLE_OUTPUT_DIR_H_
#define NIBBLE_TOOLS_NIBBLE_OUTPUT_DIR_H_

#include <cstdint>
#include <filesystem>
#include <new>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

#include "nibble/io/checkpoint.h"
#include "nibble/nibble.h"
#include "nibble/status.h"

namespace nibble::tool {

// A failure carrying its exit code (1 usage, 2 bad input, 3 I/O, 4 internal).
struct ToolError : std::runtime_error {
  ToolError(int c, const std::string& m) : std::runtime_error(m), code(c) {}
  int code;
};

// The exit code for a library status.
int ExitFor(StatusCode code);
// Runs a subcommand body and maps what it throws to an exit code and a
// one-line message: ToolError -> its code, bad_alloc -> 4, filesystem errors
// -> 3, JSON errors -> 2.
template <typename Fn>
int RunReportingErrors(Fn&& body, std::string* error) {
  try {
    return body();
  } catch (const ToolError& e) {
    *error = e.what();
    return e.code;
  } catch (const std::bad_alloc&) {
    *error = "out of memory";
    return 4;
  } catch (const std::filesystem::filesystem_error& e) {
    *error = e.what();
    return 3;
  } catch (const nlohmann::json::exception& e) {
    *error = std::string("JSON: ") + e.what();
    return 2;
  }
}

// Throws a ToolError for a failed status, prefixed with `context` if any.
void Check(const Status& s, const std::string& context);
[[noreturn]] void UsageError(const std::string& m);  // exit 1
[[noreturn]] void IoError(const std::string& m);     // exit 3

// The kernels' options from --threads (0: not given, all cores; else 1 to
// 1024) and --isa (`isa`, or `global_isa` when empty; a path the CPU lacks
// is an error).
ExecOptions ResolveExecOptions(int threads, const std::string& isa,
                               const std::string& global_isa);

// "5GB", "100MB", "64MiB", "123" (bytes), for --max-shard-size.
uint64_t ParseSize(const std::string& text);

// Removes a directory tree when it goes out of scope (unless released).
class TempDir {
 public:
  explicit TempDir(std::filesystem::path p) : path_(std::move(p)) {}
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  void Release() { path_.clear(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

void FsyncDir(const std::filesystem::path& p);
void WriteWholeFile(const std::filesystem::path& path,
                    const std::string& bytes);
std::string ReadWholeFile(const std::filesystem::path& path);

// Lexically normalised absolute path, symlinks of existing parts resolved.
std::filesystem::path Canon(const std::filesystem::path& p);
// Whether `child` is `parent` or below it (both canonical).
bool IsInside(const std::filesystem::path& child,
              const std::filesystem::path& parent);

// The checked output directory.
struct OutputDir {
  std::filesystem::path path;  // canonical, without a trailing separator
  bool exists = false;         // OUT exists (only allowed with --force)
};

// Checks OUT (`output`) against the input `input` read as `ckpt`: usable
// name, not the input, inside it or containing it, and not existing unless
// `force`.
OutputDir CheckOutputDir(const std::string& output, const std::string& input,
                         const io::Checkpoint& ckpt, bool force);

// Creates the temporary directory ".NAME.nibble-tmp-PID-RANDOM" next to `out`,
// installing the interrupt handlers for it (InstallInterruptHandlers)
// before the directory exists, so that no signal can leave it behind.
std::filesystem::path CreateTempDirFor(const std::filesystem::path& out);

// Copies the checkpoint's side files (except config.json) and
// subdirectories from `in_root` into `dir`, and warns about unused
// safetensors files.
void CopySideFiles(const io::Checkpoint& ckpt,
                   const std::filesystem::path& in_root,
                   const std::filesystem::path& dir);

// Renames `tmp` (the directory held by `guard`) to `out.path`; an existing
// OUT is moved aside first and removed afterwards. `output` is OUT as the
// user gave it, for messages.
void MoveIntoPlace(TempDir* guard, const OutputDir& out,
                   const std::string& output);

// SIGINT/SIGTERM while writing `temp_dir`: the first signal is noted and
// CheckInterrupted() (called between tensors) then throws, so the run
// unwinds and removes its temporaries; a second signal removes `temp_dir`
// from the handler itself (async-signal-safe system calls only) and exits
// at once with 128 + the signal (harmless if it does not exist yet).
// CreateTempDirFor calls it.
void InstallInterruptHandlers(const std::filesystem::path& temp_dir);
// Throws ToolError(128 + signal) if a signal arrived.
void CheckInterrupted();

// SIGBUS while reading a memory-mapped input (the file was truncated or its
// storage failed under the mapping, bad-inputs #18): the handler prints one
// line naming the input set by SetCurrentInput, removes the temporary
// directory registered by InstallInterruptHandlers (if any) and exits with
// 2, instead of dying on the signal. InstallInterruptHandlers also installs
// it.
void InstallFaultHandler();
// The file and tensor being read, for that message (long names are cut).
void SetCurrentInput(const std::string& file, const std::string& tensor);

// Drops the pages of a tensor that was read from a mapping, so the resident
// set stays near one tensor (the file stays mapped; a later read faults the
// pages in again from the page cache).
void ReleasePages(const uint8_t* data, uint64_t size);

}  // namespace nibble::tool

#endif  // NIBBLE_TOOLS_NIBBLE_OUTPUT_DIR_H_
