// Status: the error type of every fallible libnibble call.
//
// The library never throws across its boundary. A call returns a Status whose
// code says what kind of failure it was and whose message is one line meant
// for a person. Kernel failures also carry the row and column of the element
// that caused them; the format readers (nibble/io) carry the byte offset in
// the file of what they rejected.
#ifndef NIBBLE_STATUS_H_
#define NIBBLE_STATUS_H_

#include <cstdint>
#include <string>
#include <utility>

namespace nibble {

enum class StatusCode : int {
  kOk = 0,
  kInvalidArgument,  // a shape, stride, scheme or option the call cannot take
  kNonFinite,        // NaN or +-Inf in an input to quantize
  kScaleOverflow,    // a group's values are beyond what the scale dtype decodes
  kUnsupported,      // an ISA path this CPU lacks, or a feature not built
  kBadFormat,        // malformed file contents (used by the readers)
  kIoError,          // the operating system refused a read or write
  kInternal,         // a broken invariant: a bug in nibble
};

const char* StatusCodeName(StatusCode code);

class Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message)
      : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // Position of the offending element for kernel errors; -1 when not set.
  int64_t row() const { return row_; }
  int64_t col() const { return col_; }
  Status& WithPosition(int64_t row, int64_t col) {
    row_ = row;
    col_ = col;
    return *this;
  }

  // Byte offset in the file (from its first byte) of the rejected element for
  // the format readers; -1 when not set.
  int64_t offset() const { return offset_; }
  Status& WithOffset(int64_t offset) {
    offset_ = offset;
    return *this;
  }

  // "code: message" (what the tool prints).
  std::string ToString() const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
  int64_t row_ = -1;
  int64_t col_ = -1;
  int64_t offset_ = -1;
};

}  // namespace nibble

#endif  // NIBBLE_STATUS_H_
