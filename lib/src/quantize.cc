// Argument checking, OpenMP partitioning over rows, and the in-order
// reduction of per-row results.
#include "nibble/quantize.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "dispatch.h"
#include "kernels/common.h"
#include "kernels/table.h"

namespace nibble {
namespace {

// Rows per OpenMP work item: about 16K elements, so small matrices still split
// and each call into a kernel amortizes its setup.
int64_t RowBlock(int64_t cols) {
  return std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(cols, 1));
}

Status Invalid(const std::string& message) {
  return Status(StatusCode::kInvalidArgument, message);
}

bool MulOverflows(int64_t a, int64_t b) {
  return a != 0 && b > std::numeric_limits<int64_t>::max() / a;
}

Status CheckCommon(int64_t rows, int64_t cols, const QuantScheme& scheme,
                   const ExecOptions& options, const kernels::Table** table) {
  if (rows < 0) return Invalid("row count must not be negative");
  if (Status s = ValidateScheme(scheme, cols); !s.ok()) return s;
  if (options.threads < 1) {
    return Invalid("thread count must be at least 1, got " +
                   std::to_string(options.threads));
  }
  Isa isa;
  if (Status s = ResolveIsa(options.isa, &isa); !s.ok()) return s;
  *table = internal::KernelTable(isa);
  if (*table == nullptr) return Status(StatusCode::kInternal, "no kernel table");
  return Status::Ok();
}

Status CheckQuantizedView(int64_t rows, int64_t cols, const QuantScheme& scheme,
                          const void* codes, int64_t codes_stride,
                          const void* scales, int64_t scales_stride,
                          const void* zps, int64_t zps_stride,
                          const void* offsets, int64_t offsets_stride) {
  if (rows == 0) return Status::Ok();
  const int64_t groups = GroupsPerRow(scheme, cols);
  if (codes == nullptr || scales == nullptr)
    return Invalid("codes and scales must not be null");
  if (codes_stride < CodeBytesPerRow(scheme, cols))
    return Invalid("codes stride " + std::to_string(codes_stride) +
                   " is below the row's " +
                   std::to_string(CodeBytesPerRow(scheme, cols)) + " bytes");
  if (scales_stride < groups)
    return Invalid("scales stride " + std::to_string(scales_stride) +
                   " is below the row's " + std::to_string(groups) + " groups");
  if (HasZeroPoints(scheme)) {
    if (zps == nullptr) return Invalid("asymmetric schemes need zero points");
    if (zps_stride < groups)
      return Invalid("zero point stride " + std::to_string(zps_stride) +
                     " is below the row's " + std::to_string(groups) +
                     " groups");
  }
  if (HasOffsets(scheme)) {
    if (offsets == nullptr)
      return Invalid(SchemeName(scheme) + " needs offsets");
    if (offsets_stride < groups)
      return Invalid("offset stride " + std::to_string(offsets_stride) +
                     " is below the row's " + std::to_string(groups) +
                     " groups");
  }
  // The offset stride counts only where offsets are used (older callers
  // leave it unset).
  const int64_t os = HasOffsets(scheme) ? offsets_stride * 2 : 0;
  if (MulOverflows(rows,
                   std::max({codes_stride, scales_stride * 4, zps_stride, os})))
    return Invalid("quantized buffer size overflows");
  return Status::Ok();
}

template <typename Fn>
void ForRowBlocks(int64_t rows, int64_t cols, int threads, Fn&& fn) {
  const int64_t block = RowBlock(cols);
  const int64_t nblocks = (rows + block - 1) / block;
  if (threads <= 1 || nblocks <= 1) {
    for (int64_t b = 0; b < nblocks; ++b)
      fn(b * block, std::min(rows, (b + 1) * block));
    return;
  }
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t b = 0; b < nblocks; ++b)
    fn(b * block, std::min(rows, (b + 1) * block));
}

}  // namespace

Status QuantizedBuffers::Allocate(const QuantScheme& s, int64_t r, int64_t c) {
  if (Status st = ValidateScheme(s, c); !st.ok()) return st;
  if (r < 0) return Invalid("row count must not be negative");
  const int64_t cb = CodeBytesPerRow(s, c);
  const int64_t groups = GroupsPerRow(s, c);
  if (MulOverflows(r, cb) || MulOverflows(r, groups * 4))
    return Invalid("quantized buffer size overflows");
  scheme = s;
  rows = r;
  cols = c;
  codes.assign(static_cast<size_t>(r * cb), 0);
  scales.assign(static_cast<size_t>(r * groups) * DTypeSize(s.scale_dtype), 0);
  zero_points.assign(HasZeroPoints(s) ? static_cast<size_t>(r * groups) : 0, 0);
  offsets.assign(HasOffsets(s) ? static_cast<size_t>(r * groups) * 2 : 0, 0);
  return Status::Ok();
}

QuantizedView QuantizedBuffers::view() {
  const int64_t groups = GroupsPerRow(scheme, cols);
  return QuantizedView{codes.data(),
                       CodeBytesPerRow(scheme, cols),
                       scales.data(),
                       groups,
                       zero_points.empty() ? nullptr : zero_points.data(),
                       groups,
                       offsets.empty() ? nullptr : offsets.data(),
                       groups};
}

ConstQuantizedView QuantizedBuffers::view() const {
  const int64_t groups = GroupsPerRow(scheme, cols);
  return ConstQuantizedView{codes.data(),
                            CodeBytesPerRow(scheme, cols),
                            scales.data(),
                            groups,
                            zero_points.empty() ? nullptr : zero_points.data(),
                            groups,
                            offsets.empty() ? nullptr : offsets.data(),
                            groups};
}

Status Quantize(const ConstMatrixView& in, const QuantScheme& scheme,
                const QuantizedView& out, ErrorSums* metrics,
                const ExecOptions& options) {
  const kernels::Table* table = nullptr;
  if (Status s = CheckCommon(in.rows, in.cols, scheme, options, &table); !s.ok())
    return s;
  if (in.row_stride < in.cols)
    return Invalid("input row stride " + std::to_string(in.row_stride) +
                   " is below the column count " + std::to_string(in.cols));
  if (in.rows > 0 && in.data == nullptr) return Invalid("input must not be null");
  if (MulOverflows(in.rows, in.row_stride * 4))
    return Invalid("input size overflows");
  if (Status s = CheckQuantizedView(
          in.rows, in.cols, scheme, out.codes, out.codes_stride, out.scales,
          out.scales_stride, out.zero_points, out.zero_points_stride,
          out.offsets, out.offsets_stride);
      !s.ok())
    return s;

  kernels::QuantizeArgs a;
  a.in = in.data;
  a.in_dtype = in.dtype;
  a.cols = in.cols;
  a.in_stride = in.row_stride;
  a.bits = scheme.bits;
  a.symmetric = scheme.symmetric;
  a.group = GroupLength(scheme, in.cols);
  a.scale_dtype = scheme.scale_dtype;
  a.codes = out.codes;
  a.codes_stride = out.codes_stride;
  a.scales = out.scales;
  a.scales_stride = out.scales_stride;
  a.zero_points = out.zero_points;
  a.zero_points_stride = out.zero_points_stride;
  a.ggml = kernels::GgmlTypeOf(scheme);
  a.offsets = out.offsets;
  a.offsets_stride = out.offsets_stride;
  a.metrics = metrics != nullptr;

  std::vector<kernels::RowOutcome> outcomes(static_cast<size_t>(in.rows));
  ForRowBlocks(in.rows, in.cols, options.threads, [&](int64_t r0, int64_t r1) {
    table->quantize_rows(a, r0, r1, outcomes.data() + r0);
  });

  ErrorSums sums;
  for (int64_t r = 0; r < in.rows; ++r) {
    const kernels::RowOutcome& o = outcomes[static_cast<size_t>(r)];
    if (o.status == kernels::kRowNonFinite) {
      const size_t esize = DTypeSize(in.dtype);
      const void* row = static_cast<const uint8_t*>(in.data) +
                        static_cast<size_t>(r) * in.row_stride * esize;
      float v = 0;
      if (in.dtype == DType::kF32) {
        v = static_cast<const float*>(row)[o.bad_col];
      } else {
        const uint16_t h = static_cast<const uint16_t*>(row)[o.bad_col];
        v = in.dtype == DType::kF16 ? HalfToFloat(h) : Bf16ToFloat(h);
      }
      Status s(StatusCode::kNonFinite,
               std::string(v != v ? "NaN" : (v > 0 ? "+Inf" : "-Inf")) +
                   " at row " + std::to_string(r) + ", column " +
                   std::to_string(o.bad_col));
      s.WithPosition(r, o.bad_col);
      return s;
    }
    if (o.status == kernels::kRowScaleOverflow) {
      const std::string where = " of the group at row " + std::to_string(r) +
                                ", columns " + std::to_string(o.bad_col) +
                                ".." + std::to_string(o.bad_col + a.group - 1);
      Status s(
          StatusCode::kScaleOverflow,
          IsGgml(scheme)
              ? "the scale" +
                    std::string(HasOffsets(scheme) ? " or the minimum" : "") +
                    where + " does not fit in " + SchemeName(scheme) +
                    "'s f16 (ggml would store Inf; use an int scheme "
                    "with f32 scales)"
              : "the scale" + where + " does not fit in " +
                    DTypeName(scheme.scale_dtype) +
                    " (a value is more than one step beyond what (q - zp) * "
                    "scale reaches in " +
                    DTypeName(scheme.scale_dtype) + "; use f32 scales)");
      s.WithPosition(r, o.bad_col);
      return s;
    }
    sums.sum_sq_error += o.sum_sq_error;
    sums.sum_sq_ref += o.sum_sq_ref;
    sums.sum_ref_error += o.sum_ref_error;
    if (o.max_abs_error > sums.max_abs_error) sums.max_abs_error = o.max_abs_error;
  }
  if (metrics != nullptr) {
    sums.count = in.rows * in.cols;
    *metrics = sums;
  }
  return Status::Ok();
}

Status Dequantize(const ConstQuantizedView& in, const QuantScheme& scheme,
                  const MatrixView& out, const ExecOptions& options) {
  const kernels::Table* table = nullptr;
  if (Status s = CheckCommon(out.rows, out.cols, scheme, options, &table);
      !s.ok())
    return s;
  if (out.row_stride < out.cols)
    return Invalid("output row stride " + std::to_string(out.row_stride) +
                   " is below the column count " + std::to_string(out.cols));
  if (out.rows > 0 && out.data == nullptr)
    return Invalid("output must not be null");
  if (MulOverflows(out.rows, out.row_stride * 4))
    return Invalid("output size overflows");
  if (Status s = CheckQuantizedView(
          out.rows, out.cols, scheme, in.codes, in.codes_stride, in.scales,
          in.scales_stride, in.zero_points, in.zero_points_stride, in.offsets,
          in.offsets_stride);
      !s.ok())
    return s;
  kernels::DequantizeArgs a;
  a.codes = in.codes;
  a.codes_stride = in.codes_stride;
  a.scales = in.scales;
  a.scales_stride = in.scales_stride;
  a.zero_points = in.zero_points;
  a.zero_points_stride = in.zero_points_stride;
  a.ggml = kernels::GgmlTypeOf(scheme);
  a.offsets = in.offsets;
  a.offsets_stride = in.offsets_stride;
  a.bits = scheme.bits;
  a.symmetric = scheme.symmetric;
  a.group = GroupLength(scheme, out.cols);
  a.scale_dtype = scheme.scale_dtype;
  a.cols = out.cols;
  a.out = out.data;
  a.out_dtype = out.dtype;
  a.out_stride = out.row_stride;
  ForRowBlocks(out.rows, out.cols, options.threads,
               [&](int64_t r0, int64_t r1) { table->dequantize_rows(a, r0, r1); });
  return Status::Ok();
}

}  // namespace nibble
