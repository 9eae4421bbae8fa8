// Progress of a long run on stderr: a one-line bar redrawn in place
// ("[ 12/104]  43%  1.21 GB / 2.80 GB  310 MB/s  ETA 0:05  name") when stderr
// is a terminal, else an info log line at most every 10 seconds. Nothing at
// all when disabled (--quiet). Not thread-safe: call from one thread.
#ifndef NIBBLE_TOOLS_NIBBLE_PROGRESS_H_
#define NIBBLE_TOOLS_NIBBLE_PROGRESS_H_

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace nibble::tool {

class Progress {
 public:
  enum class Mode { kOff, kBar, kLog };

  // `verb` names the work in log lines ("converted"); `total_items` and
  // `total_bytes` are the input tensors and their bytes. Mode kBar when
  // `enabled` and stderr is a terminal, kLog when only `enabled`.
  Progress(const char* verb, int64_t total_items, int64_t total_bytes,
           bool enabled);
  // For tests: an explicit mode and stream, and a fixed terminal width.
  Progress(const char* verb, int64_t total_items, int64_t total_bytes,
           Mode mode, std::FILE* stream, int width);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // Item `index` (0-based) named `name` is about to be processed; the items
  // before it hold `bytes_done` bytes.
  void Start(int64_t index, int64_t bytes_done, const std::string& name);
  // Removes the bar (before printing anything else to the terminal, and at
  // the end). Harmless when nothing is shown.
  void Clear();

  Mode mode() const { return mode_; }
  // The bar text for the given state (exposed for tests); fits `width`.
  static std::string Line(int64_t index, int64_t total_items,
                          int64_t bytes_done, int64_t total_bytes,
                          double seconds, const std::string& name, int width);

 private:
  void Draw(int64_t index, int64_t bytes_done, const std::string& name);

  const char* verb_;
  int64_t total_items_;
  int64_t total_bytes_;
  Mode mode_;
  std::FILE* stream_;
  int width_;  // 0: ask the terminal each time
  bool shown_ = false;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_;
};

}  // namespace nibble::tool

#endif  // NIBBLE_TOOLS_NIBBLE_PROGRESS_H_
