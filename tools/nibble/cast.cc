// Float tensor casts with their error: see cast.h.
#include "cast.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace nibble::tool {

float LoadElement(const uint8_t* p, DType d) {
  if (d == DType::kF32) {
    float f;
    std::memcpy(&f, p, 4);
    return f;
  }
  const uint16_t h = static_cast<uint16_t>(p[0] | (p[1] << 8));
  return d == DType::kF16 ? HalfToFloat(h) : Bf16ToFloat(h);
}

void StoreElement(float f, DType d, uint8_t* p) {
  if (d == DType::kF32) {
    std::memcpy(p, &f, 4);
    return;
  }
  const uint16_t h = d == DType::kF16 ? FloatToHalf(f) : FloatToBf16(f);
  p[0] = static_cast<uint8_t>(h & 0xff);
  p[1] = static_cast<uint8_t>(h >> 8);
}

CastResult CastElements(const uint8_t* src, DType from, DType to,
                        int64_t count, std::vector<uint8_t>* out) {
  const size_t in_size = DTypeSize(from), out_size = DTypeSize(to);
  if (out != nullptr) out->resize(static_cast<size_t>(count) * out_size);
  uint8_t scratch[4];
  CastResult r;
  double sx2 = 0, sd2 = 0, se2 = 0, sxd = 0, max_abs = 0;
  for (int64_t k = 0; k < count; ++k) {
    const float x = LoadElement(src + static_cast<size_t>(k) * in_size, from);
    uint8_t* dst = out != nullptr
                       ? out->data() + static_cast<size_t>(k) * out_size
                       : scratch;
    StoreElement(x, to, dst);
    const float d = LoadElement(dst, to);
    if (std::isfinite(x) && !std::isfinite(d)) {
      r.overflow_index = k;
      r.overflow_value = x;
      return r;
    }
    if (!std::isfinite(x)) continue;
    const double e = static_cast<double>(d) - static_cast<double>(x);
    sx2 += static_cast<double>(x) * x;
    sd2 += static_cast<double>(d) * d;
    sxd += static_cast<double>(x) * d;
    se2 += e * e;
    max_abs = std::max(max_abs, std::fabs(e));
  }
  ErrorMetrics& m = r.metrics;
  m.count = count;
  m.mse = count > 0 ? se2 / static_cast<double>(count) : 0;
  m.rmse = std::sqrt(m.mse);
  m.max_abs_error = max_abs;
  m.snr_db = se2 > 0 ? 10 * std::log10(sx2 / se2)
                     : std::numeric_limits<double>::infinity();
  m.cosine = sx2 > 0 && sd2 > 0 ? sxd / std::sqrt(sx2 * sd2) : 1;
  m.rel_frobenius = sx2 > 0 ? std::sqrt(se2 / sx2) : 0;
  return r;
}

}  // namespace nibble::tool
