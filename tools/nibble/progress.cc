// Progress on stderr: see progress.h.
#include "progress.h"

#include <spdlog/spdlog.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>

#include "layer_report.h"
#include "text.h"

namespace nibble::tool {
namespace {

using Clock = std::chrono::steady_clock;

// Redraw the bar at most this often; log lines at most every 10 s.
constexpr double kBarInterval = 0.1;
constexpr double kLogInterval = 10;

int TerminalWidth(std::FILE* stream) {
  winsize ws{};
  if (::ioctl(::fileno(stream), TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20)
    return ws.ws_col;
  return 80;
}

std::string Clock_(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--:--";
  const long long s = std::llround(seconds);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", s / 3600,
                  (s / 60) % 60, s % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%lld:%02lld", s / 60, s % 60);
  }
  return buf;
}

}  // namespace

Progress::Progress(const char* verb, int64_t total_items, int64_t total_bytes,
                   bool enabled)
    : Progress(verb, total_items, total_bytes,
               !enabled                  ? Mode::kOff
               : ::isatty(STDERR_FILENO) ? Mode::kBar
                                         : Mode::kLog,
               stderr, 0) {}

Progress::Progress(const char* verb, int64_t total_items, int64_t total_bytes,
                   Mode mode, std::FILE* stream, int width)
    : verb_(verb),
      total_items_(total_items),
      total_bytes_(total_bytes),
      mode_(mode),
      stream_(stream),
      width_(width),
      start_(Clock::now()),
      last_(start_) {}

Progress::~Progress() { Clear(); }

std::string Progress::Line(int64_t index, int64_t total_items,
                           int64_t bytes_done, int64_t total_bytes,
                           double seconds, const std::string& name, int width) {
  const int digits = static_cast<int>(std::to_string(total_items).size());
  const double fraction = total_bytes > 0
                              ? std::clamp(static_cast<double>(bytes_done) /
                                               static_cast<double>(total_bytes),
                                           0.0, 1.0)
                              : 0.0;
  // Speed and ETA once there is something to go by.
  std::string speed = "", eta = "--:--";
  if (seconds > 0.2 && bytes_done > 0) {
    const double rate = static_cast<double>(bytes_done) / seconds;
    speed = "  " + HumanBytes(rate) + "/s";
    eta = Clock_(static_cast<double>(total_bytes - bytes_done) / rate);
  }
  char head[256];
  std::snprintf(head, sizeof head, "[%*lld/%lld] %3d%%  %s / %s%s  ETA %s  ",
                digits, static_cast<long long>(index + 1),
                static_cast<long long>(total_items),
                static_cast<int>(fraction * 100),
                HumanBytes(static_cast<double>(bytes_done)).c_str(),
                HumanBytes(static_cast<double>(total_bytes)).c_str(),
                speed.c_str(), eta.c_str());
  std::string line = head;
  // The name fills what is left, cut from the left ("...layers.3.mlp").
  const int room = width - 1 - static_cast<int>(line.size());
  if (room >= 8) {
    if (static_cast<int>(name.size()) <= room) {
      line += name;
    } else {
      line += "..." + name.substr(name.size() - static_cast<size_t>(room - 3));
    }
  }
  if (static_cast<int>(line.size()) > width - 1)
    line.resize(static_cast<size_t>(std::max(width - 1, 0)));
  return line;
}

void Progress::Start(int64_t index, int64_t bytes_done,
                     const std::string& name) {
  if (mode_ == Mode::kOff) return;
  const Clock::time_point now = Clock::now();
  const double since_last = std::chrono::duration<double>(now - last_).count();
  if (mode_ == Mode::kBar) {
    if (shown_ && since_last < kBarInterval) return;
    last_ = now;
    Draw(index, bytes_done, name);
    return;
  }
  if (since_last < kLogInterval) return;
  last_ = now;
  const double seconds = std::chrono::duration<double>(now - start_).count();
  const double rate =
      seconds > 0 ? static_cast<double>(bytes_done) / seconds : 0;
  spdlog::info(
      "{} {}/{} tensors ({} of {}, ETA {})", verb_, index, total_items_,
      HumanBytes(static_cast<double>(bytes_done)),
      HumanBytes(static_cast<double>(total_bytes_)),
      rate > 0 ? Clock_(static_cast<double>(total_bytes_ - bytes_done) / rate)
               : "--:--");
}

void Progress::Draw(int64_t index, int64_t bytes_done,
                    const std::string& name) {
  const double seconds =
      std::chrono::duration<double>(Clock::now() - start_).count();
  const int width = width_ > 0 ? width_ : TerminalWidth(stream_);
  const std::string line = Line(index, total_items_, bytes_done, total_bytes_,
                                seconds, EscapeForTerminal(name, true), width);
  // \r, the line, then erase to the end of the line.
  std::fprintf(stream_, "\r%s\x1b[K", line.c_str());
  std::fflush(stream_);
  shown_ = true;
}

void Progress::Clear() {
  if (!shown_) return;
  std::fputs("\r\x1b[K", stream_);
  std::fflush(stream_);
  shown_ = false;
}

}  // namespace nibble::tool
