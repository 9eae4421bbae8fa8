// Measuring one tensor as convert would write it: see measure.h.
#include "measure.h"

#include <string>

#include "cast.h"
#include "nibble/io/compressed_tensors.h"
#include "output_dir.h"
#include "target.h"

namespace nibble::tool {

ErrorMetrics MeasureCast(const uint8_t* src, DType from, DType to,
                         int64_t count, const std::string& what) {
  const CastResult r = CastElements(src, from, to, count, nullptr);
  if (r.overflow_index >= 0)
    throw ToolError(2, what + ": element " + std::to_string(r.overflow_index) +
                           " (" + std::to_string(r.overflow_value) +
                           ") overflows " + DTypeName(to));
  return r.metrics;
}

LayerRow MeasureRow(const TensorPlan& t, const io::TensorInfo& src,
                    const io::SafetensorsFile& file, const uint8_t* data,
                    const ExecOptions& exec, double* sse, bool* cast_overflow) {
  if (cast_overflow != nullptr) *cast_overflow = false;
  const std::string where = file.path() + ": tensor '" + t.name + "'";
  LayerRow row;
  row.name = t.name;
  row.shape = t.shape;
  row.params = t.params;
  row.bytes_in = static_cast<int64_t>(src.byte_size());
  row.scheme = TargetName(t.target);
  DType model_dtype;
  const bool is_float = io::StDtypeToKernel(src.dtype, &model_dtype);
  if (t.target.kind == TargetKind::kCast) {
    if (!is_float)
      throw ToolError(4, "tensor '" + t.name + "': cast of a non-float tensor");
    if (cast_overflow != nullptr) {
      const CastResult r = CastElements(data, model_dtype, t.target.cast_dtype,
                                        t.params, nullptr);
      *cast_overflow = r.overflow_index >= 0;
      row.m = r.metrics;
    } else {
      row.m =
          MeasureCast(data, model_dtype, t.target.cast_dtype, t.params, where);
    }
    row.bits_per_weight =
        8.0 * static_cast<double>(DTypeSize(t.target.cast_dtype));
    row.bytes_out =
        t.params * static_cast<int64_t>(DTypeSize(t.target.cast_dtype));
    if (sse != nullptr) *sse = row.m.mse * static_cast<double>(row.m.count);
    return row;
  }
  if (!is_float || t.shape.size() != 2)
    throw ToolError(4, "tensor '" + t.name +
                           "': planned for quantization but not a 2-D float "
                           "matrix");
  const QuantScheme& scheme = t.target.scheme;  // scale dtype from the plan
  io::CtLayout layout;
  Check(io::CtLayoutFor(scheme, t.shape[0], t.shape[1], scheme.scale_dtype,
                        &layout),
        "tensor '" + t.name + "'");
  const ConstMatrixView view{data, model_dtype, layout.out, layout.in,
                             layout.in};
  ErrorSums sums;
  {
    QuantizedBuffers buf;
    Check(buf.Allocate(scheme, layout.out, layout.in),
          "tensor '" + t.name + "'");
    Check(Quantize(view, scheme, buf.view(), &sums, exec),
          where + " (data at byte " +
              std::to_string(file.data_offset() + src.begin) + ")");
  }
  row.bytes_out = static_cast<int64_t>(
      layout.weight_packed_bytes + layout.weight_scale_bytes +
      layout.weight_zero_point_bytes + io::CtLayout::kWeightShapeBytes);
  row.bits_per_weight = t.params > 0
                            ? 8.0 * static_cast<double>(row.bytes_out) /
                                  static_cast<double>(t.params)
                            : 0;
  row.quantized = true;
  row.m = Summarize(sums);
  if (sse != nullptr) *sse = sums.sum_sq_error;
  return row;
}

}  // namespace nibble::tool
