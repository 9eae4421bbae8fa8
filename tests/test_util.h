// Shared helpers for the libnibble test suites: seeds, data generators,
// canary-guarded buffers, matrix layouts, and byte-exact comparison of
// quantize / dequantize results.
//
// Every test that draws random data takes its seed from
// --gtest_random_seed (testing::UnitTest::random_seed(); GoogleTest picks one
// from the clock when the flag is absent) mixed with the test's full name, and
// prints it through SCOPED_TRACE so that a failure can be replayed with
// --gtest_random_seed=N --gtest_filter=<test>.
#ifndef NIBBLE_TESTS_TEST_UTIL_H_
#define NIBBLE_TESTS_TEST_UTIL_H_

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "nibble/nibble.h"

namespace nibble {
// Readable parameter values in GoogleTest messages.
inline void PrintTo(Isa isa, std::ostream* os) { *os << IsaName(isa); }
inline void PrintTo(DType dtype, std::ostream* os) { *os << DTypeName(dtype); }
}  // namespace nibble

namespace nibble::test {

using Rng = std::mt19937_64;

// --gtest_random_seed as GoogleTest resolved it (never 0).
uint32_t BaseSeed();
// A generator for the running test: BaseSeed() mixed with the test's full
// name and `salt`, so parameterized instances draw different data.
Rng MakeRng(uint64_t salt = 0);
// "random seed N (replay with --gtest_random_seed=N)".
std::string SeedMessage();
#define NIBBLE_TRACE_SEED() SCOPED_TRACE(::nibble::test::SeedMessage())

// ---------------------------------------------------------------------------
// Schemes, dtypes, ISAs.

// The twelve schemes: int8 per channel sym/asym, int8-g32 sym/asym,
// int4-g32/g64/g128/g256 sym/asym, int4-row sym/asym.
std::vector<QuantScheme> AllSchemes(DType scale_dtype = DType::kF16);
// The three GGML schemes: q8_0, q4_0, q4_1 (F16 scales, group 32).
std::vector<QuantScheme> GgmlSchemes();
// AllSchemes() (F16 scales) followed by GgmlSchemes(): what the equivalence
// and thread suites are instantiated over.
std::vector<QuantScheme> EquivalenceSchemes();
// The scale dtypes a scheme takes: all three, or F16 for GGML schemes.
std::vector<DType> ScaleDTypesFor(const QuantScheme& scheme);
const std::vector<DType>& AllDTypes();
// The concrete SIMD paths the equivalence suites are instantiated over.
const std::vector<Isa>& SimdIsas();
// Scalar + SimdIsas().
const std::vector<Isa>& ConcreteIsas();
// Skip message for a path this binary/CPU cannot run.
std::string IsaSkipMessage(Isa isa);
// Name-safe string for parameter names ("int4_g128_asym").
std::string Identifier(const std::string& text);
// Largest code magnitude: 127 / 255 / 7 / 15 for nibble's schemes; for
// GGML 127 (Q8_0), 8 (Q4_0: levels -8..7), 15 (Q4_1).
int QMax(const QuantScheme& scheme);

// ---------------------------------------------------------------------------
// Data.

enum class DataKind {
  kGaussian,      // N(0,1) times a per-row magnitude 2^-6..2^6
  kHeavyTailed,   // Student-t(3) plus three outlier columns 10x larger
  kConstant,      // one value per row (random sign and size)
  kZero,          // +0 everywhere
  kF16Subnormal,  // k * 2^-24, |k| < 1024: the FP16 subnormal grid
  kF16Extremes,   // +-65504 mixed with large values and ordinary ones
  kTies,          // per group: scale a power of two, x * inv exactly k + 0.5
  kSignedZeros,   // +0 and -0 mixed with ordinary values; some rows only +-0
  kTiny,          // +-2^-149..2^-120: F32 subnormals (BF16 subnormals, F16 0)
  // Per group one of: +a and -a both present (the first of largest
  // magnitude decides Q4_0's sign), several copies of +-a, non-negative
  // values with zeros of both signs (Q4_1's minimum is the first zero), or
  // zeros of random signs only. Not in AllDataKinds(); see
  // EquivalenceDataKinds().
  kMaxAbsTies,
};
const std::vector<DataKind>& AllDataKinds();
// AllDataKinds() and kMaxAbsTies.
const std::vector<DataKind>& EquivalenceDataKinds();
const char* DataKindName(DataKind kind);

// rows x cols values (row-major, dense), finite and within +-65504 so that
// every input dtype can hold them. `scheme` tells kTies the group length and
// the grid (for GGML schemes: x * id = k + 0.5 exactly, which Q8_0 rounds
// away from zero and Q4_0 / Q4_1 turn into exact integers before truncating).
std::vector<float> Generate(DataKind kind, int64_t rows, int64_t cols,
                            const QuantScheme& scheme, Rng& rng);

// One element of a dtype at `index` of a buffer (stored with
// FloatToHalf/FloatToBf16, loaded exactly).
void StoreElement(void* base, DType dtype, int64_t index, float value);
float LoadElement(const void* base, DType dtype, int64_t index);
// Round `value` through `dtype` (what the kernel will actually see).
float RoundToDType(float value, DType dtype);

// ---------------------------------------------------------------------------
// Memory.

// Heap bytes with 64 canary bytes on each side. The payload starts `misalign`
// bytes past a 64-byte boundary and is filled with `fill`.
class GuardedBytes {
 public:
  static constexpr size_t kCanary = 64;
  static constexpr uint8_t kCanaryByte = 0xA5;

  GuardedBytes(size_t size, size_t misalign, uint8_t fill);
  uint8_t* data() { return payload_; }
  const uint8_t* data() const { return payload_; }
  size_t size() const { return size_; }
  uint8_t fill() const { return fill_; }

  // Success when both canaries are intact and every payload byte outside the
  // rows [r * stride_bytes, r * stride_bytes + row_bytes) still holds fill().
  ::testing::AssertionResult Untouched(const char* what, int64_t rows,
                                       int64_t stride_bytes,
                                       int64_t row_bytes) const;

 private:
  std::vector<uint8_t> storage_;
  uint8_t* payload_ = nullptr;
  size_t size_ = 0;
  uint8_t fill_ = 0;
};

// Bytes that end exactly where an inaccessible (PROT_NONE) page begins, so
// that reading one byte past the end crashes the test.
class PageEndBytes {
 public:
  explicit PageEndBytes(size_t size);
  ~PageEndBytes();
  PageEndBytes(const PageEndBytes&) = delete;
  PageEndBytes& operator=(const PageEndBytes&) = delete;
  uint8_t* data() { return payload_; }
  const uint8_t* data() const { return payload_; }
  size_t size() const { return size_; }

 private:
  void* map_ = nullptr;
  size_t map_size_ = 0;
  uint8_t* payload_ = nullptr;
  size_t size_ = 0;
};

// ---------------------------------------------------------------------------
// Layouts of inputs and outputs.

enum class Layout {
  kDense,       // 64-byte aligned, strides equal to the row lengths
  kPadded,      // padded strides (input padding holds NaN, so reading it
                // fails the call); inputs end at an inaccessible page
  kMisaligned,  // input/scales/outputs one element past 64-byte alignment,
                // codes and zero points at odd addresses
  kPageEnd,     // dense, inputs end at an inaccessible page
};
const std::vector<Layout>& AllLayouts();
const char* LayoutName(Layout layout);

// An input matrix of a dtype placed in memory as `layout` says.
class InputMatrix {
 public:
  InputMatrix(const std::vector<float>& values, DType dtype, int64_t rows,
              int64_t cols, Layout layout);
  ConstMatrixView view() const;
  // The value the kernel sees (after rounding to the dtype).
  float value(int64_t r, int64_t c) const {
    return values_[static_cast<size_t>(r * cols_ + c)];
  }
  // Overwrites one element's raw bits (for NaN/Inf/sign tests).
  void SetBits(int64_t r, int64_t c, uint32_t bits);
  void Negate();  // flips every element's sign bit
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  DType dtype() const { return dtype_; }

 private:
  DType dtype_;
  int64_t rows_, cols_, stride_;
  std::vector<float> values_;
  std::unique_ptr<GuardedBytes> heap_;
  std::unique_ptr<PageEndBytes> page_;
  uint8_t* data_ = nullptr;
};

// Output strides and placement for a layout.
struct OutputShape {
  int64_t codes_stride, scales_stride, zp_stride;
  size_t codes_misalign, scales_misalign, zp_misalign;
  int64_t offsets_stride = 0;  // F16 elements (Q4_1)
  size_t offsets_misalign = 0;
};
OutputShape OutputShapeFor(const QuantScheme& scheme, int64_t cols,
                           Layout layout);

struct QuantResult {
  QuantScheme scheme;
  int64_t rows = 0, cols = 0;
  OutputShape shape{};
  std::unique_ptr<GuardedBytes> codes, scales, zps;
  std::unique_ptr<GuardedBytes> offsets;  // HasOffsets(scheme) only
  Status status;
  ErrorSums sums;
  bool metrics = false;

  QuantizedView view();
  ConstQuantizedView const_view() const;
  // Decoded scale / zero point of group g of row r.
  float scale(int64_t r, int64_t g) const;
  uint32_t scale_bits(int64_t r, int64_t g) const;
  int zero_point(int64_t r, int64_t g) const;
  // F16 bits of Q4_1's offset of group g of row r.
  uint16_t offset_bits(int64_t r, int64_t g) const;
  // Signed code of element (r, c): INT8 sym int8_t value, INT8 asym uint8_t,
  // INT4 sym nibble - 8, INT4 asym nibble.
  int code(int64_t r, int64_t c) const;
  // Raw nibble (INT4) or byte (INT8) of element (r, c).
  int raw_code(int64_t r, int64_t c) const;
};

// Quantizes `in` into fresh buffers laid out as `layout` (payload filled with
// `fill`, so that bytes a kernel forgets to write are visible).
QuantResult RunQuantize(const InputMatrix& in, const QuantScheme& scheme,
                        Layout layout, uint8_t fill, bool metrics,
                        const ExecOptions& options);

// Success when both calls returned the same status (code, row, col) and, on
// success, the same code/scale/zero-point bytes and bit-identical sums, with
// every canary and padding byte of both untouched.
::testing::AssertionResult SameQuantized(const QuantResult& ref,
                                         const QuantResult& got);
// Bit-identical ErrorSums.
::testing::AssertionResult SameSums(const ErrorSums& a, const ErrorSums& b);

// Inputs to Dequantize placed per `layout` (kPadded / kPageEnd copy the
// buffers so that they end at an inaccessible page).
class DequantInput {
 public:
  DequantInput(const QuantResult& q, Layout layout);
  ConstQuantizedView view() const { return view_; }

 private:
  std::unique_ptr<PageEndBytes> codes_, scales_, zps_, offsets_;
  ConstQuantizedView view_;
};

struct DequantResult {
  DType dtype = DType::kF32;
  int64_t rows = 0, cols = 0, stride = 0;
  std::unique_ptr<GuardedBytes> out;
  Status status;
  float value(int64_t r, int64_t c) const {
    return LoadElement(out->data(), dtype, r * stride + c);
  }
};
DequantResult RunDequantize(const ConstQuantizedView& in,
                            const QuantScheme& scheme, int64_t rows,
                            int64_t cols, DType dtype, Layout layout,
                            uint8_t fill, const ExecOptions& options);
::testing::AssertionResult SameDequantized(const DequantResult& ref,
                                           const DequantResult& got);

// Description of one configuration for SCOPED_TRACE.
std::string Describe(const QuantScheme& scheme, DType in_dtype, int64_t rows,
                     int64_t cols, Layout layout, DataKind kind, bool metrics);

}  // namespace nibble::test

#endif  // NIBBLE_TESTS_TEST_UTIL_H_
