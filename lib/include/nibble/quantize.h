// Quantize and dequantize matrices.
//
// Layouts are documented in nibble/scheme.h. All buffers are owned by the
// caller; the functions allocate only a small per-row bookkeeping array. They
// are thread-safe for distinct outputs and run `threads` OpenMP threads over
// rows; the output bytes and the metrics do not depend on the thread count or
// on the ISA path.
#ifndef NIBBLE_QUANTIZE_H_
#define NIBBLE_QUANTIZE_H_

#include <cstdint>
#include <vector>

#include "nibble/isa.h"
#include "nibble/metrics.h"
#include "nibble/scheme.h"
#include "nibble/status.h"
#include "nibble/types.h"

namespace nibble {

// Where a quantized matrix lives. Strides: codes in bytes per row (at least
// CodeBytesPerRow), scales, zero points and offsets in elements per row (at
// least GroupsPerRow). zero_points is used only by nibble's asymmetric
// schemes (HasZeroPoints), offsets only by Q4_1 (HasOffsets): one F16 value
// per group, the block minimum M that dequantization adds (nibble/scheme.h).
struct QuantizedView {
  uint8_t* codes = nullptr;
  int64_t codes_stride = 0;
  void* scales = nullptr;
  int64_t scales_stride = 0;
  uint8_t* zero_points = nullptr;
  int64_t zero_points_stride = 0;
  void* offsets = nullptr;  // F16 bits (uint16_t), little-endian
  int64_t offsets_stride = 0;
};

struct ConstQuantizedView {
  const uint8_t* codes = nullptr;
  int64_t codes_stride = 0;
  const void* scales = nullptr;
  int64_t scales_stride = 0;
  const uint8_t* zero_points = nullptr;
  int64_t zero_points_stride = 0;
  const void* offsets = nullptr;
  int64_t offsets_stride = 0;

  ConstQuantizedView() = default;
  ConstQuantizedView(const uint8_t* c, int64_t cs, const void* s, int64_t ss,
                     const uint8_t* z, int64_t zs, const void* o = nullptr,
                     int64_t os = 0)
      : codes(c),
        codes_stride(cs),
        scales(s),
        scales_stride(ss),
        zero_points(z),
        zero_points_stride(zs),
        offsets(o),
        offsets_stride(os) {}
  // A writable view reads as well.
  ConstQuantizedView(const QuantizedView& v)  // NOLINT(runtime/explicit)
      : ConstQuantizedView(v.codes, v.codes_stride, v.scales, v.scales_stride,
                           v.zero_points, v.zero_points_stride, v.offsets,
                           v.offsets_stride) {}
};

// Owning storage, densely packed, for tools and tests.
struct QuantizedBuffers {
  QuantScheme scheme;
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<uint8_t> codes;
  std::vector<uint8_t> scales;       // raw bytes of scale_dtype values
  std::vector<uint8_t> zero_points;  // empty unless HasZeroPoints(scheme)
  std::vector<uint8_t> offsets;      // F16 bytes; empty unless HasOffsets

  // Sizes the vectors for [rows, cols]. Fails on an invalid scheme or when
  // the byte counts overflow.
  Status Allocate(const QuantScheme& scheme, int64_t rows, int64_t cols);
  QuantizedView view();
  ConstQuantizedView view() const;
};

struct ExecOptions {
  int threads = 1;        // >= 1
  Isa isa = Isa::kAuto;   // force a path (tests, benchmarks, --isa)
};

// Quantizes `in` into `out`. When `metrics` is not null the error of the
// result is measured in the same pass and written there.
// Errors: kInvalidArgument (shape, stride, scheme, threads), kUnsupported
// (ISA), kNonFinite (first NaN/Inf in row-major order; row and col set),
// kScaleOverflow (row and first column of the group set; for Q4_1 also when
// the offset does not fit F16). On error the contents of `out` are
// unspecified.
Status Quantize(const ConstMatrixView& in, const QuantScheme& scheme,
                const QuantizedView& out, ErrorSums* metrics,
                const ExecOptions& options = {});

// Reconstructs [out.rows, out.cols] in out.dtype from a quantized matrix.
// Values are rounded to nearest-even and saturated to the finite range of
// out.dtype.
Status Dequantize(const ConstQuantizedView& in, const QuantScheme& scheme,
                  const MatrixView& out, const ExecOptions& options = {});

}  // namespace nibble

#endif  // NIBBLE_QUANTIZE_H_
