// Helpers shared by the format readers and writers (internal).
#ifndef NIBBLE_SRC_IO_IO_COMMON_H_
#define NIBBLE_SRC_IO_IO_COMMON_H_

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <string>
#include <string_view>

#include "nibble/status.h"

namespace nibble {
namespace io {
namespace internal {

// A name or key made printable for a one-line message: control bytes and
// quotes escaped, cut to `max_bytes` with "..." appended.
std::string Printable(std::string_view s, size_t max_bytes = 200);

// kBadFormat "<file>: <what> (byte <offset>)" with WithOffset(offset).
Status BadFormat(const std::string& file, const std::string& what,
                 int64_t offset);

// "<what>: <strerror(err)>" as kIoError.
Status IoError(const std::string& what, int err);

// True when `s` is well-formed UTF-8 (no overlong forms, no surrogates).
bool IsValidUtf8(std::string_view s);

// Appends `s` as a JSON string literal (quotes included). Non-ASCII bytes are
// copied as they are (the caller has checked UTF-8); control characters are
// escaped.
void AppendJsonString(std::string_view s, std::string* out);

// An input iterator over bytes that publishes how far nlohmann's lexer has
// read: after each increment *cursor points one past the last byte consumed.
// This is how the JSON readers learn byte offsets that the SAX interface does
// not report.
class TrackingIterator {
 public:
  using iterator_category = std::input_iterator_tag;
  using value_type = char;
  using difference_type = std::ptrdiff_t;
  using pointer = const char*;
  using reference = const char&;

  TrackingIterator(const char* p, const char** cursor)
      : p_(p), cursor_(cursor) {}
  reference operator*() const { return *p_; }
  TrackingIterator& operator++() {
    ++p_;
    *cursor_ = p_;
    return *this;
  }
  TrackingIterator operator++(int) {
    TrackingIterator old = *this;
    ++*this;
    return old;
  }
  bool operator==(const TrackingIterator& o) const { return p_ == o.p_; }
  bool operator!=(const TrackingIterator& o) const { return p_ != o.p_; }

 private:
  const char* p_;
  const char** cursor_;
};

// Given `end` just past the closing quote of a JSON string inside
// [begin, end), returns a pointer to its opening quote (or `end` when the
// bytes do not look like a string).
const char* FindStringStart(const char* begin, const char* end);

}  // namespace internal
}  // namespace io
}  // namespace nibble

#endif  // NIBBLE_SRC_IO_IO_COMMON_H_
