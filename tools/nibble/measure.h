// Measuring what `nibble convert` would write for one tensor without writing
// it: shared by `nibble report` (several schemes side by side) and `nibble
// plan` (every candidate scheme of every tensor), so that both give, for a
// tensor and a target, exactly the figures convert's --report gives (the
// same kernels, the same fused metrics, the same cast function).
#ifndef NIBBLE_TOOLS_NIBBLE_MEASURE_H_
#define NIBBLE_TOOLS_NIBBLE_MEASURE_H_

#include <cstdint>
#include <string>

#include "layer_report.h"
#include "nibble/io/safetensors.h"
#include "nibble/nibble.h"
#include "plan.h"

namespace nibble::tool {

// The error of casting `count` elements from `from` to `to`, measured as
// `nibble convert` measures its casts (the same function); nothing is
// stored. A finite value that overflows `to` is an error (ToolError, exit 2)
// naming the element, prefixed with `what`.
ErrorMetrics MeasureCast(const uint8_t* src, DType from, DType to,
                         int64_t count, const std::string& what);

// The row `nibble convert` reports for tensor `t` (target cast or quantize)
// read from `data` (the tensor's bytes in `file`, described by `src`).
// Quantized: scales in the plan's scale dtype; bytes and bits of the
// compressed-tensors tensors (weight_packed, weight_scale,
// weight_zero_point, weight_shape). The quantized buffers are allocated here
// and freed on return. With `sse` non-null, *sse is the sum of squared
// errors of the tensor: the kernels' own double sum for a quantized tensor,
// mse x count for a cast (the cast function reports only its metrics).
// Errors (NaN/Inf, overflow) are ToolErrors naming the file, tensor and byte
// offset, as convert's; except that with `cast_overflow` non-null, a cast
// that overflows its dtype sets *cast_overflow and returns a row whose
// metrics are incomplete (else *cast_overflow is set false). Thread-safety:
// as Quantize (threads from `exec`).
LayerRow MeasureRow(const TensorPlan& t, const io::TensorInfo& src,
                    const io::SafetensorsFile& file, const uint8_t* data,
                    const ExecOptions& exec, double* sse = nullptr,
                    bool* cast_overflow = nullptr);

}  // namespace nibble::tool

#endif  // NIBBLE_TOOLS_NIBBLE_MEASURE_H_
