// Element types and matrix views.
#ifndef NIBBLE_TYPES_H_
#define NIBBLE_TYPES_H_

#include <cstddef>
#include <cstdint>
#include <string>

namespace nibble {

// Floating-point element types the kernels read and write. FP16 is IEEE
// binary16, BF16 is the upper half of an IEEE binary32; both are stored as
// little-endian uint16_t.
enum class DType : uint8_t { kF32 = 0, kF16 = 1, kBF16 = 2 };

// Bytes per element: 4, 2, 2.
size_t DTypeSize(DType dtype);
// "f32", "f16", "bf16".
const char* DTypeName(DType dtype);
// Accepts the names above and "fp32", "fp16", "float32", "float16", "bfloat16"
// (case-insensitive). Returns false when the name is unknown.
bool ParseDType(const std::string& name, DType* dtype);

// Read-only view of a row-major matrix [rows, cols]. Rows are output channels.
// row_stride is in elements (not bytes) and must be >= cols. The view does not
// own its memory.
struct ConstMatrixView {
  const void* data = nullptr;
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t row_stride = 0;
};

// Writable view with the same conventions.
struct MatrixView {
  void* data = nullptr;
  DType dtype = DType::kF32;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t row_stride = 0;
};

// Scalar conversions, IEEE round-to-nearest-even, identical to what every ISA
// path does (F16C's VCVTPS2PH with imm8 = 0; BF16 by rounding the upper half).
// NaN stays NaN (quieted); overflow gives +-Inf. Exposed for tests and tools.
float HalfToFloat(uint16_t h);
uint16_t FloatToHalf(float f);
float Bf16ToFloat(uint16_t b);
uint16_t FloatToBf16(float f);

}  // namespace nibble

#endif  // NIBBLE_TYPES_H_
