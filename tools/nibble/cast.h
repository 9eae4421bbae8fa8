// Casting float tensors between F32, F16 and BF16 with the error it
// introduces, shared by `convert` (which stores the result) and `report`
// (which only measures it), so the two report the same figures.
#ifndef NIBBLE_TOOLS_NIBBLE_CAST_H_
#define NIBBLE_TOOLS_NIBBLE_CAST_H_

#include <cstdint>
#include <vector>

#include "nibble/nibble.h"

namespace nibble::tool {

// One little-endian element of dtype `d` at `p`, as float.
float LoadElement(const uint8_t* p, DType d);

// Stores `f` at `p` in dtype `d` (round to nearest even), little-endian.
void StoreElement(float f, DType d, uint8_t* p);

// The result of CastElements.
struct CastResult {
  ErrorMetrics metrics;
  // Index of the first finite element that overflows the target dtype
  // (becomes +-Inf), or -1. When set, the metrics and *out are incomplete.
  int64_t overflow_index = -1;
  float overflow_value = 0;
};

// Casts `count` elements of `from` at `src` to `to` (round to nearest even)
// and measures the error over the finite inputs. With `out` non-null, the
// cast bytes are stored there (resized); with null, only measured. Stops at
// the first finite element that overflows `to`.
CastResult CastElements(const uint8_t* src, DType from, DType to,
                        int64_t count, std::vector<uint8_t>* out);

}  // namespace nibble::tool

#endif  // NIBBLE_TOOLS_NIBBLE_CAST_H_
