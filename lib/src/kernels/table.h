// The kernel table: one struct of function pointers per ISA path.
//
// Each ISA file (scalar.cc, avx2.cc, avx512.cc) defines its kernels with
// internal linkage and exports one function returning a pointer to its table.
// dispatch.cc picks a table once per call; kernels never dispatch per element.
#ifndef NIBBLE_KERNELS_TABLE_H_
#define NIBBLE_KERNELS_TABLE_H_

#include <cstdint>

#include "nibble/isa.h"
#include "nibble/scheme.h"
#include "nibble/types.h"

namespace nibble::kernels {

// kNone: nibble's rules (bits, symmetric); otherwise ggml's Q8_0 / Q4_0 /
// Q4_1 (nibble/scheme.h), with group 32 and F16 scales.
enum class GgmlType : uint8_t { kNone = 0, kQ8_0, kQ4_0, kQ4_1 };

static inline GgmlType GgmlTypeOf(const QuantScheme& s) {
  if (s.family != SchemeFamily::kGgml) return GgmlType::kNone;
  if (s.bits == 8) return GgmlType::kQ8_0;
  return s.symmetric ? GgmlType::kQ4_0 : GgmlType::kQ4_1;
}

// Everything a quantize kernel needs, validated by the caller.
struct QuantizeArgs {
  const void* in = nullptr;
  DType in_dtype = DType::kF32;
  int64_t cols = 0;
  int64_t in_stride = 0;        // elements
  int bits = 8;                 // 4 or 8
  bool symmetric = true;
  int64_t group = 0;            // actual group length (> 0)
  DType scale_dtype = DType::kF16;
  uint8_t* codes = nullptr;
  int64_t codes_stride = 0;     // bytes
  void* scales = nullptr;
  int64_t scales_stride = 0;    // elements
  uint8_t* zero_points = nullptr;
  int64_t zero_points_stride = 0;
  // GGML schemes: bits and symmetric are set as in QuantScheme, group is 32,
  // scale_dtype F16; Q4_1 writes its F16 block minimum to offsets.
  GgmlType ggml = GgmlType::kNone;
  void* offsets = nullptr;
  int64_t offsets_stride = 0;  // elements
  bool metrics = false;
};

enum RowStatus : int32_t {
  kRowOk = 0,
  kRowNonFinite = 1,     // bad_col = first NaN/Inf column of the row
  kRowScaleOverflow = 2  // bad_col = first column of the group
};

// Per-row result. The sums are already reduced over the row's 16 lanes.
struct RowOutcome {
  double sum_sq_error;
  double sum_sq_ref;
  double sum_ref_error;
  float max_abs_error;
  int32_t status;
  int64_t bad_col;
};

struct DequantizeArgs {
  const uint8_t* codes = nullptr;
  int64_t codes_stride = 0;
  const void* scales = nullptr;
  int64_t scales_stride = 0;
  const uint8_t* zero_points = nullptr;
  int64_t zero_points_stride = 0;
  // Q4_1 only (w = code * scale + offset); Q8_0 and Q4_0 dequantize exactly
  // like nibble's symmetric INT8 / INT4.
  GgmlType ggml = GgmlType::kNone;
  const void* offsets = nullptr;
  int64_t offsets_stride = 0;  // elements
  int bits = 8;
  bool symmetric = true;
  int64_t group = 0;
  DType scale_dtype = DType::kF16;
  int64_t cols = 0;
  void* out = nullptr;
  DType out_dtype = DType::kF32;
  int64_t out_stride = 0;  // elements
};

struct Table {
  Isa isa;
  // Quantizes rows [row_begin, row_end); writes outcomes[r - row_begin].
  void (*quantize_rows)(const QuantizeArgs& args, int64_t row_begin,
                        int64_t row_end, RowOutcome* outcomes);
  void (*dequantize_rows)(const DequantizeArgs& args, int64_t row_begin,
                          int64_t row_end);
};

const Table* ScalarTable();
// Null when the binary was built without the path.
const Table* Avx2Table();
const Table* Avx512Table();

}  // namespace nibble::kernels

#endif  // NIBBLE_KERNELS_TABLE_H_
