#include "nibble/status.h"

namespace nibble {

const char* StatusCodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return "ok";
    case StatusCode::kInvalidArgument: return "invalid argument";
    case StatusCode::kNonFinite: return "non-finite input";
    case StatusCode::kScaleOverflow: return "scale overflow";
    case StatusCode::kUnsupported: return "unsupported";
    case StatusCode::kBadFormat: return "bad format";
    case StatusCode::kIoError: return "I/O error";
    case StatusCode::kInternal: return "internal error";
  }
  return "unknown";
}

std::string Status::ToString() const {
  if (ok()) return "ok";
  return std::string(StatusCodeName(code_)) + ": " + message_;
}

}  // namespace nibble
