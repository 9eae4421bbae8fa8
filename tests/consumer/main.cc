// Uses only the installed public headers and nibble::nibble: quantizes a small
// matrix to INT4 (groups of 32) with fused metrics, dequantizes it and checks
// the documented error bound. Prints "consumer ok" on success.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

#include <nibble/nibble.h>

int main() {
  const int64_t rows = 8, cols = 64;
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (size_t i = 0; i < w.size(); ++i)
    w[i] = 0.02f * std::sin(0.37f * static_cast<float>(i)) +
           (i % 61 == 0 ? 0.2f : 0.0f);

  nibble::QuantScheme scheme;
  if (nibble::Status s = nibble::ParseScheme("int4-g32", &scheme); !s.ok()) {
    std::fprintf(stderr, "%s\n", s.ToString().c_str());
    return 1;
  }
  scheme.scale_dtype = nibble::DType::kF32;
  nibble::QuantizedBuffers q;
  if (nibble::Status s = q.Allocate(scheme, rows, cols); !s.ok()) {
    std::fprintf(stderr, "%s\n", s.ToString().c_str());
    return 1;
  }
  const nibble::ConstMatrixView in{w.data(), nibble::DType::kF32, rows, cols,
                                   cols};
  nibble::ErrorSums sums;
  nibble::ExecOptions exec;
  exec.threads = 2;
  if (nibble::Status s = nibble::Quantize(in, scheme, q.view(), &sums, exec);
      !s.ok()) {
    std::fprintf(stderr, "quantize: %s\n", s.ToString().c_str());
    return 1;
  }
  std::vector<float> back(w.size());
  const nibble::MatrixView out{back.data(), nibble::DType::kF32, rows, cols,
                               cols};
  const nibble::QuantizedBuffers& codes = q;  // const view for reading
  if (nibble::Status s = nibble::Dequantize(codes.view(), scheme, out, exec);
      !s.ok()) {
    std::fprintf(stderr, "dequantize: %s\n", s.ToString().c_str());
    return 1;
  }
  // |dequant(quant(x)) - x| <= scale / 2 for symmetric schemes.
  const auto* scales = reinterpret_cast<const float*>(q.scales.data());
  double max_err = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const size_t i = static_cast<size_t>(r * cols + c);
      const double err = std::fabs(static_cast<double>(back[i]) - w[i]);
      const float scale = scales[r * (cols / 32) + c / 32];
      if (err > 0.5 * scale * (1 + 1e-6)) {
        std::fprintf(stderr, "error %g above half the scale %g at %lld,%lld\n",
                     err, static_cast<double>(scale),
                     static_cast<long long>(r), static_cast<long long>(c));
        return 1;
      }
      if (err > max_err) max_err = err;
    }
  const nibble::ErrorMetrics m = nibble::Summarize(sums);
  if (m.count != rows * cols || std::fabs(m.max_abs_error - max_err) > 1e-7 ||
      !(m.snr_db > 10)) {
    std::fprintf(stderr, "unexpected metrics: count %lld, max %g vs %g, snr %g\n",
                 static_cast<long long>(m.count), m.max_abs_error, max_err,
                 m.snr_db);
    return 1;
  }
  std::printf("consumer ok: nibble %s, %s, isa %s, SNR %.2f dB\n",
              NIBBLE_VERSION_STRING, nibble::SchemeName(scheme).c_str(),
              nibble::IsaName(nibble::BestIsa()), m.snr_db);
  return 0;
}
