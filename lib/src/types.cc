#include <algorithm>
#include <cctype>
#include <string>

#include "kernels/common.h"
#include "nibble/types.h"

namespace nibble {

size_t DTypeSize(DType dtype) { return dtype == DType::kF32 ? 4 : 2; }

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "f32";
    case DType::kF16: return "f16";
    case DType::kBF16: return "bf16";
  }
  return "?";
}

bool ParseDType(const std::string& name, DType* dtype) {
  std::string n = name;
  std::transform(n.begin(), n.end(), n.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  if (n == "f32" || n == "fp32" || n == "float32") {
    *dtype = DType::kF32;
  } else if (n == "f16" || n == "fp16" || n == "float16" || n == "half") {
    *dtype = DType::kF16;
  } else if (n == "bf16" || n == "bfloat16") {
    *dtype = DType::kBF16;
  } else {
    return false;
  }
  return true;
}

float HalfToFloat(uint16_t h) { return kernels::HalfBitsToFloat(h); }
uint16_t FloatToHalf(float f) { return kernels::FloatToHalfBits(f); }
float Bf16ToFloat(uint16_t b) { return kernels::Bf16BitsToFloat(b); }
uint16_t FloatToBf16(float f) { return kernels::FloatToBf16Bits(f); }

}  // namespace nibble
