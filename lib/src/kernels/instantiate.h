// Run-time arguments -> template arguments, once per call, for every ISA
// path. An ISA file defines
//   struct Kernels {
//     template <DType kIn, int kBits, bool kSym, bool kMetrics>
//     static void Quantize(const QuantizeArgs&, int64_t, int64_t, RowOutcome*);
//     template <DType kOut, int kBits, bool kSym>
//     static void Dequantize(const DequantizeArgs&, int64_t, int64_t);
//     // GGML schemes (Q8_0 and Q4_0 dequantize as symmetric INT8 / INT4).
//     template <DType kIn, GgmlType kType, bool kMetrics>
//     static void QuantizeGgml(const QuantizeArgs&, int64_t, int64_t,
//                              RowOutcome*);
//     template <DType kOut>
//     static void DequantizeQ4_1(const DequantizeArgs&, int64_t, int64_t);
//   };
// in its anonymous namespace; the instantiations below then have internal
// linkage too, so no path can lend its code to another.
#ifndef NIBBLE_KERNELS_INSTANTIATE_H_
#define NIBBLE_KERNELS_INSTANTIATE_H_

#include <cstdint>

#include "kernels/table.h"

namespace nibble::kernels {

template <class K, DType kIn, int kBits, bool kSym>
void QuantizeForMetrics(const QuantizeArgs& a, int64_t r0, int64_t r1,
                        RowOutcome* o) {
  if (a.metrics) {
    K::template Quantize<kIn, kBits, kSym, true>(a, r0, r1, o);
  } else {
    K::template Quantize<kIn, kBits, kSym, false>(a, r0, r1, o);
  }
}

template <class K, DType kIn, GgmlType kType>
void QuantizeGgmlForMetrics(const QuantizeArgs& a, int64_t r0, int64_t r1,
                            RowOutcome* o) {
  if (a.metrics) {
    K::template QuantizeGgml<kIn, kType, true>(a, r0, r1, o);
  } else {
    K::template QuantizeGgml<kIn, kType, false>(a, r0, r1, o);
  }
}

template <class K, DType kIn>
void QuantizeForScheme(const QuantizeArgs& a, int64_t r0, int64_t r1,
                       RowOutcome* o) {
  switch (a.ggml) {
    case GgmlType::kQ8_0:
      QuantizeGgmlForMetrics<K, kIn, GgmlType::kQ8_0>(a, r0, r1, o);
      return;
    case GgmlType::kQ4_0:
      QuantizeGgmlForMetrics<K, kIn, GgmlType::kQ4_0>(a, r0, r1, o);
      return;
    case GgmlType::kQ4_1:
      QuantizeGgmlForMetrics<K, kIn, GgmlType::kQ4_1>(a, r0, r1, o);
      return;
    case GgmlType::kNone:
      break;
  }
  if (a.bits == 8) {
    a.symmetric ? QuantizeForMetrics<K, kIn, 8, true>(a, r0, r1, o)
                : QuantizeForMetrics<K, kIn, 8, false>(a, r0, r1, o);
  } else {
    a.symmetric ? QuantizeForMetrics<K, kIn, 4, true>(a, r0, r1, o)
                : QuantizeForMetrics<K, kIn, 4, false>(a, r0, r1, o);
  }
}

template <class K>
void DispatchQuantize(const QuantizeArgs& a, int64_t r0, int64_t r1,
                      RowOutcome* o) {
  switch (a.in_dtype) {
    case DType::kF32: QuantizeForScheme<K, DType::kF32>(a, r0, r1, o); break;
    case DType::kF16: QuantizeForScheme<K, DType::kF16>(a, r0, r1, o); break;
    case DType::kBF16: QuantizeForScheme<K, DType::kBF16>(a, r0, r1, o); break;
  }
}

// Q8_0 and Q4_0 arrive with bits 8 / 4 and symmetric set: their
// dequantization, (code - 8) * d and q * d in float, is symmetric INT4 / INT8.
template <class K, DType kOut>
void DequantizeForScheme(const DequantizeArgs& a, int64_t r0, int64_t r1) {
  if (a.ggml == GgmlType::kQ4_1) {
    K::template DequantizeQ4_1<kOut>(a, r0, r1);
    return;
  }
  if (a.bits == 8) {
    a.symmetric ? K::template Dequantize<kOut, 8, true>(a, r0, r1)
                : K::template Dequantize<kOut, 8, false>(a, r0, r1);
  } else {
    a.symmetric ? K::template Dequantize<kOut, 4, true>(a, r0, r1)
                : K::template Dequantize<kOut, 4, false>(a, r0, r1);
  }
}

template <class K>
void DispatchDequantize(const DequantizeArgs& a, int64_t r0, int64_t r1) {
  switch (a.out_dtype) {
    case DType::kF32: DequantizeForScheme<K, DType::kF32>(a, r0, r1); break;
    case DType::kF16: DequantizeForScheme<K, DType::kF16>(a, r0, r1); break;
    case DType::kBF16: DequantizeForScheme<K, DType::kBF16>(a, r0, r1); break;
  }
}

}  // namespace nibble::kernels

#endif  // NIBBLE_KERNELS_INSTANTIATE_H_
