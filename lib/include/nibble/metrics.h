// Quantization error metrics.
//
// The kernels measure the error of what they write in the same pass that
// writes it: for every element x and its dequantized value d (computed in
// float exactly as Dequantize to F32 would), e = d - x. They accumulate
// e*e, x*x and x*e with fused multiply-adds in float, in 16 lanes (column
// index mod 16), flush the lanes into double every 256 columns and at the end
// of each row, add the 16 double lanes in a fixed order, and finally add the
// rows in row order. That shape is the same on every ISA path and at every
// thread count, so the sums are bit-identical everywhere.
#ifndef NIBBLE_METRICS_H_
#define NIBBLE_METRICS_H_

#include <cstdint>

namespace nibble {

// Raw sums; mergeable across tensors with Merge (in a fixed order if the
// result must be reproducible).
struct ErrorSums {
  int64_t count = 0;            // elements measured
  double sum_sq_error = 0;      // sum e^2
  double sum_sq_ref = 0;        // sum x^2
  double sum_ref_error = 0;     // sum x*e
  double max_abs_error = 0;     // max |e|

  void Merge(const ErrorSums& other);
};

// Derived figures. For a perfect reconstruction snr_db is +inf and the
// relative error 0; for an all-zero reference cosine is 1 when the
// reconstruction is zero too, and snr_db is +inf.
struct ErrorMetrics {
  int64_t count = 0;
  double mse = 0;             // mean e^2
  double rmse = 0;            // sqrt(mse)
  double max_abs_error = 0;   // max |e|
  double snr_db = 0;          // 10 log10(sum x^2 / sum e^2)
  double cosine = 1;          // <x, d> / (|x| |d|)
  double rel_frobenius = 0;   // |e| / |x| (Frobenius norms)
};

ErrorMetrics Summarize(const ErrorSums& sums);

}  // namespace nibble

#endif  // NIBBLE_METRICS_H_
