// Conversion of libnibble's quantized layout (nibble/scheme.h) to the
// compressed-tensors "pack-quantized" tensors of one linear layer, and the
// `quantization_config` JSON that describes them. Pure and in memory: the
// caller owns every buffer and writes the bytes wherever it likes (see
// docs/formats.md, section "compressed-tensors").
//
// Tensors of a layer P with weight [out, in] = [rows, cols]:
//   P.weight_packed      I32 [out, ceil(in*bits/32)]
//   P.weight_scale       model dtype [out, groups] (group) or [out, 1]
//                        (channel = group_size 0)
//   P.weight_zero_point  I32 [ceil(out/P), groups], P = 32/bits, asym only
//   P.weight_shape       I64 [2] = [out, in]
// All bytes are written little-endian, whatever the host.
//
// Codes. compressed-tensors' codes are signed (INT4 q in [-8, 7], INT8 in
// [-128, 127]) and stored offset to unsigned, q + 2^(bits-1); asymmetric zero
// points are signed too and stored the same way, zp + 2^(bits-1), with
// w = (q - zp) * scale. Ours map onto them without changing a stored value:
//   INT4 symmetric   our nibble q+8 (q in -7..7)     -> stored as is
//   INT4 asymmetric  our nibble u in 0..15, zp_u     -> stored u and zp_u
//                    (their q = u - 8, zp = zp_u - 8: same q - zp)
//   INT8 symmetric   our int8 q in -127..127         -> stored q + 128
//   INT8 asymmetric  our uint8 u, zp_u               -> stored u and zp_u
// So (q - zp) * scale computed from the packed tensors equals our Dequantize
// (to F32) exactly, element for element.
//
// weight_packed: element 8j+i (4-bit) or 4j+i (8-bit) of a row sits at bits
// bits*i of word j, lowest bits first. For 4-bit this is our nibble order
// read as little-endian words; the last word of a row is padded with zero
// bits when in is not a multiple of 8 (4-bit) or 4 (8-bit) (our odd-column
// pad nibble, the code of 0.0, is cleared).
//
// weight_zero_point: packed along dim 0 (rows): word (r / P, g) holds the
// stored zero point of row r, group g at bits bits*(r % P); bits of rows past
// `out` are 0.
//
// weight_scale: our scales are stored in scheme.scale_dtype; the tensor is in
// the model dtype (F16, BF16 or F32). The same dtype copies the bits; another
// converts each scale exactly, and kScaleOverflow (row and first column of
// the group set) reports a scale the target dtype cannot represent exactly.
// Quantize with scale_dtype equal to the model dtype to never see it (F16 ->
// F32 and BF16 -> F32 are always exact).
//
// API: CtLayoutFor() computes the shapes and byte sizes; the Ct*() fill
// functions write one tensor each into a caller buffer of exactly (at least)
// that many bytes. No allocation; kInvalidArgument for a bad scheme, shape,
// view stride, null pointer or short buffer.
#ifndef NIBBLE_IO_COMPRESSED_TENSORS_H_
#define NIBBLE_IO_COMPRESSED_TENSORS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "nibble/quantize.h"
#include "nibble/scheme.h"
#include "nibble/status.h"
#include "nibble/types.h"

namespace nibble {
namespace io {

// Shapes and byte sizes of the compressed-tensors tensors of one layer.
struct CtLayout {
  int64_t out = 0;                 // rows
  int64_t in = 0;                  // cols
  int bits = 0;                    // 4 or 8
  bool symmetric = true;
  int64_t groups = 0;              // scale/zero-point columns (1 for channel)
  int64_t packed_cols = 0;         // ceil(in * bits / 32)
  int64_t zero_point_rows = 0;     // ceil(out * bits / 32); 0 when symmetric
  DType model_dtype = DType::kF16; // dtype of weight_scale
  std::vector<int64_t> weight_packed_shape;      // [out, packed_cols]
  std::vector<int64_t> weight_scale_shape;       // [out, groups]
  std::vector<int64_t> weight_zero_point_shape;  // [zp rows, groups]; empty
                                                 // when symmetric
  uint64_t weight_packed_bytes = 0;
  uint64_t weight_scale_bytes = 0;
  uint64_t weight_zero_point_bytes = 0;  // 0 when symmetric
  static constexpr uint64_t kWeightShapeBytes = 16;  // I64 [2]
};

// Fills `layout` for a [rows, cols] matrix quantized with `scheme` and
// written with scales in `model_dtype`. kInvalidArgument for an invalid
// scheme (ValidateScheme), rows < 1, or sizes that overflow.
Status CtLayoutFor(const QuantScheme& scheme, int64_t rows, int64_t cols,
                   DType model_dtype, CtLayout* layout);

// weight_packed from the codes of `in` (a matrix quantized with the scheme of
// `layout`). `dst_size` must be at least layout.weight_packed_bytes.
Status CtPackWeight(const CtLayout& layout, const ConstQuantizedView& in,
                    void* dst, uint64_t dst_size);

// weight_scale in layout.model_dtype from the scales of `in`, stored in
// `scale_dtype` (the scheme's). kScaleOverflow when a scale is not exactly
// representable in the model dtype (see above).
Status CtPackScales(const CtLayout& layout, const ConstQuantizedView& in,
                    DType scale_dtype, void* dst, uint64_t dst_size);

// weight_zero_point (asymmetric only; kInvalidArgument for a symmetric
// layout). Also checks that each zero point fits in `bits` bits.
Status CtPackZeroPoints(const CtLayout& layout, const ConstQuantizedView& in,
                        void* dst, uint64_t dst_size);

// weight_shape: 16 bytes, I64 [out, in].
Status CtWeightShape(const CtLayout& layout, void* dst, uint64_t dst_size);

// One config group of quantization_config: the modules quantized with one
// scheme. `targets` are module names (no ".weight" suffix) or "re:" patterns.
// A default group is written with targets ["Linear"] (the class name, which
// matches every linear layer not matched by name elsewhere); its `targets`
// are then not written, as Linear already covers them. At most one group may
// be the default.
struct CtConfigGroup {
  QuantScheme scheme;  // scale_dtype is not part of the config
  std::vector<std::string> targets;
  bool is_default = false;
};

// The quantization_config object as JSON text (2-space indent), exactly:
//   {"quant_method": "compressed-tensors", "format": "pack-quantized",
//    "quantization_status": "compressed",
//    "config_groups": {"group_<i>": {"targets": [...],
//        "weights": {"num_bits", "type": "int", "symmetric",
//                    "strategy": "group" | "channel",
//                    "group_size": n | null, "dynamic": false,
//                    "actorder": null},
//        "input_activations": null, "output_activations": null}, ...},
//    "ignore": [...]}
// with group_<i> numbered in the order given. kInvalidArgument for no
// groups, an invalid scheme, a non-default group without targets, an empty
// name, a name listed in two groups or in a group and in `ignore`, or more
// than one default group.
Status BuildCtQuantizationConfig(const std::vector<CtConfigGroup>& groups,
                                 const std::vector<std::string>& ignore,
                                 std::string* json);

}  // namespace io
}  // namespace nibble

#endif  // NIBBLE_IO_COMPRESSED_TENSORS_H_
