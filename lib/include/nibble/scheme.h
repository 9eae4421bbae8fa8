// Quantization schemes and the packed layouts they produce.
//
// A scheme quantizes each row (output channel) of a [rows, cols] matrix in
// groups of `group_size` consecutive columns; group_size 0 means one group per
// row ("per channel"). Every group gets one scale (and, when asymmetric, one
// zero point).
//
// Codes
//   INT8 symmetric   q = clamp(round(x * inv), -127, 127), stored as int8_t.
//   INT8 asymmetric  q = clamp(round(x * inv) + zp, 0, 255), stored as uint8_t.
//   INT4 symmetric   q = clamp(round(x * inv), -7, 7), stored as the unsigned
//                    nibble q + 8 (1..15; 0 is never produced, so the grid is
//                    symmetric and quantize(-x) == -quantize(x)).
//   INT4 asymmetric  q = clamp(round(x * inv) + zp, 0, 15), stored as is.
//   round() is round-half-to-even; inv = 1 / scale computed once per group in
//   float; the clamp happens in float before conversion to an integer.
//
// Dequantize: symmetric w = q * scale; asymmetric w = (q - zp) * scale, both in
// float, then rounded to the output dtype and saturated to its finite range.
//
// INT4 nibble order: element 2k of a row sits in the low nibble of byte k and
// element 2k+1 in the high nibble. Read as little-endian 32-bit words this is
// exactly compressed-tensors' pack-quantized layout (element 8j+i at bits 4i of
// word j), so that format is a reinterpretation, not a re-quantization. GGUF
// Q4_0 (low nibble = element j, high = element j+16 of a 32-block) is a byte
// shuffle of the same codes. A row with an odd column count ends in a byte
// whose high nibble holds the code of 0.0 (8 symmetric, zp asymmetric).
//
// Scales: one per group, row-major [rows, groups_per_row], stored in
// `scale_dtype` (F16, BF16 or F32). The scale is chosen as
//   symmetric:  absmax / qmax            (qmax = 7 or 127)
//   asymmetric: (hi - lo) / qmax         (qmax = 15 or 255), lo = min(min, 0),
//                                        hi = max(max, 0), zp = round(-lo *
//                                        inv)
// and then rounded UP to the nearest value of scale_dtype, so that the largest
// element never needs clamping and |dequant(quant(x)) - x| <= scale / 2
// (asymmetric: <= scale, the extra half step being the zero point's rounding).
// A positive scale is at least the smallest positive F16 (2^-24) or 2^-126
// (BF16, F32), so that 1/scale stays finite. An all-zero group gets scale +0,
// zero point 0 and codes of 0.
//
// Scale cap: every code q the format can hold must decode to a finite value
// in scale_dtype, |(q - zp) * scale| <= its largest finite value, because
// compressed-tensors / vLLM dequantize in the scale's dtype. A group whose
// rounded-up scale breaks that (a range of about 65504 or more with F16
// scales, about BF16's or F32's maximum with theirs) gets the largest scale
// that keeps it (asymmetric: with the zero point, among all, whose extremes
// decode closest); its largest elements then clamp to the last code and
// decode to within one step (<= scale) of themselves, or of +-the dtype's
// largest value for a value beyond it. A group holding a value more than one
// step beyond the dtype's largest (F32 or BF16 input above 65504 + scale,
// about 65760 to 74856 depending on the scheme, with F16 scales), or whose
// scale overflows scale_dtype, is an error (kScaleOverflow). Ordinary data
// is unaffected: the cap changes no group whose range is well below the
// dtype's maximum.
// Rule, derivation and rationale: lib/src/kernels/common.h ("The scale cap").
//
// Zero points (asymmetric only): uint8_t per group, row-major
// [rows, groups_per_row], values 0..15 (INT4) or 0..255 (INT8).
//
// GGML family (SchemeFamily::kGgml): llama.cpp's Q8_0, Q4_0 and Q4_1, byte
// for byte as its reference quantizers (quantize_row_q8_0_ref, _q4_0_ref,
// _q4_1_ref in ggml-quants.c, which llama-quantize uses) and gguf-py's numpy
// port (gguf.quants) compute them. Groups of 32 columns, F16 scales. Per
// group, in float32, each operation rounded on its own (never fused):
//   Q8_0 (bits 8, symmetric)   amax = max |x|, d = amax / 127,
//        q = roundf(x * id) (half away from zero), stored as int8_t;
//        w = q * D.
//   Q4_0 (bits 4, symmetric)   m = the element of largest |x|, sign kept (the
//        first one on ties; +0.0 when every |x| is 0), d = m / -8,
//        code = min(15, trunc(x * id + 8.5)), stored as the nibble code;
//        w = (code - 8) * D.
//   Q4_1 (bits 4, asymmetric)  lo = min x, hi = max x (each the first
//        element of its value, so -0.0 vs +0.0 is the first zero's sign),
//        d = (hi - lo) / 15, code = min(15, trunc((x - lo) * id + 0.5));
//        w = code * D + M.
// where id = d != 0 ? 1 / d : 0 and D = FP16(d) (round to nearest even) is
// the stored scale: the codes use the unrounded float d, exactly as ggml
// does. M = FP16(lo) is stored per group in `offsets` (quantize.h), not in
// zero points (Q4_1 has none). A d below 2^-128 (subnormal input far below
// any F16) makes id = +-Inf and x * id non-finite; such codes are 0, which is
// what ggml's compiled float-to-int8 conversion (CVTTSS2SI's 0x80000000,
// low byte) and numpy give on x86; D is 0 there anyway. Codes use the layout
// above (INT8 one byte per element; INT4 element 2k in the low nibble of byte
// k); nibble/ggml_blocks.h converts to and from ggml's 18/20/34-byte blocks.
// Unlike ggml, which stores Inf, a D or M beyond the F16 range is
// kScaleOverflow, and NaN/Inf input is kNonFinite, as for every scheme.
#ifndef NIBBLE_SCHEME_H_
#define NIBBLE_SCHEME_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "nibble/status.h"
#include "nibble/types.h"

namespace nibble {

// Which rules derive the per-group parameters and the codes.
enum class SchemeFamily : uint8_t {
  kNibble = 0,  // nibble's int8 / int4 schemes (scales rounded up, RNE codes)
  kGgml = 1,    // llama.cpp's Q8_0, Q4_0, Q4_1 (see above)
};

struct QuantScheme {
  int bits = 8;             // 4 or 8
  bool symmetric = true;    // false: unsigned codes with a zero point
  int64_t group_size = 0;   // 0: one group per row; else 32, 64, 128 or 256
  DType scale_dtype = DType::kF16;
  // kGgml: (bits, symmetric) = (8, true) Q8_0, (4, true) Q4_0, (4, false)
  // Q4_1; group_size 32 and F16 scales only.
  SchemeFamily family = SchemeFamily::kNibble;
};

// The three GGML schemes (group 32, F16 scales).
QuantScheme GgmlQ8_0();
QuantScheme GgmlQ4_0();
QuantScheme GgmlQ4_1();
bool IsGgml(const QuantScheme& scheme);
// Whether quantized data carries a zero point per group (nibble's asymmetric
// schemes) or an F16 offset per group (Q4_1).
bool HasZeroPoints(const QuantScheme& scheme);
bool HasOffsets(const QuantScheme& scheme);

// Checks bits, group size and that cols is a positive multiple of the group
// size (or any positive count for per-row groups). The message names the
// column count and the group size. GGML schemes also need group size 32 and
// F16 scales.
Status ValidateScheme(const QuantScheme& scheme, int64_t cols);

// Group length actually used for a row of `cols` columns.
int64_t GroupLength(const QuantScheme& scheme, int64_t cols);
int64_t GroupsPerRow(const QuantScheme& scheme, int64_t cols);
// Bytes of codes per row: cols (INT8) or ceil(cols / 2) (INT4).
int64_t CodeBytesPerRow(const QuantScheme& scheme, int64_t cols);
// Storage in bits per weight including scales, zero points and offsets
// (Q8_0 8.5, Q4_0 4.5, Q4_1 5.0: the size of their ggml blocks).
double BitsPerWeight(const QuantScheme& scheme, int64_t cols);

// Canonical name: "int8" (per channel, symmetric), "int8-asym", "int8-g32",
// "int4-g128", "int4-g128-asym", "int4-row"..., and "q8_0", "q4_0", "q4_1"
// for the GGML family. The scale dtype is not part of the name.
std::string SchemeName(const QuantScheme& scheme);
// Parses the names above; "int4" alone means int4-g128 symmetric. The int
// names keep scheme->scale_dtype; the q names set F16. Returns a
// kInvalidArgument status naming the text when it is not a scheme.
Status ParseScheme(const std::string& name, QuantScheme* scheme);

}  // namespace nibble

#endif  // NIBBLE_SCHEME_H_
