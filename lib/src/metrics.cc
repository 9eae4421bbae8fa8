#include "nibble/metrics.h"

#include <cmath>
#include <limits>

namespace nibble {

void ErrorSums::Merge(const ErrorSums& o) {
  count += o.count;
  sum_sq_error += o.sum_sq_error;
  sum_sq_ref += o.sum_sq_ref;
  sum_ref_error += o.sum_ref_error;
  if (o.max_abs_error > max_abs_error) max_abs_error = o.max_abs_error;
}

ErrorMetrics Summarize(const ErrorSums& s) {
  ErrorMetrics m;
  m.count = s.count;
  if (s.count == 0) return m;
  const double inf = std::numeric_limits<double>::infinity();
  m.mse = s.sum_sq_error / static_cast<double>(s.count);
  m.rmse = std::sqrt(m.mse);
  m.max_abs_error = s.max_abs_error;
  m.snr_db = s.sum_sq_error == 0 ? inf
             : s.sum_sq_ref == 0 ? -inf
                                 : 10.0 * std::log10(s.sum_sq_ref / s.sum_sq_error);
  m.rel_frobenius = s.sum_sq_ref == 0 ? (s.sum_sq_error == 0 ? 0.0 : inf)
                                      : std::sqrt(s.sum_sq_error / s.sum_sq_ref);
  // <x, d> = sum x^2 + sum x e;  |d|^2 = sum x^2 + 2 sum x e + sum e^2.
  const double xd = s.sum_sq_ref + s.sum_ref_error;
  const double dd = s.sum_sq_ref + 2.0 * s.sum_ref_error + s.sum_sq_error;
  if (s.sum_sq_ref == 0 && dd <= 0) {
    m.cosine = 1.0;
  } else if (s.sum_sq_ref == 0 || dd <= 0) {
    m.cosine = 0.0;
  } else {
    m.cosine = xd / std::sqrt(s.sum_sq_ref * dd);
    if (m.cosine > 1.0) m.cosine = 1.0;
  }
  return m;
}

}  // namespace nibble
