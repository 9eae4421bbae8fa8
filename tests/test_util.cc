#include "test_util.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <sstream>

namespace nibble::test {
namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t Fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

std::string Hex(const void* p, size_t n) {
  std::string out;
  char buf[4];
  for (size_t i = 0; i < n; ++i) {
    std::snprintf(buf, sizeof(buf), "%02x", static_cast<const uint8_t*>(p)[i]);
    out += buf;
  }
  return out;
}

std::string HexFloat(double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.17g (%a)", v, v);
  return buf;
}

// First differing byte of two row sets, or success.
::testing::AssertionResult SameRows(const char* what, const uint8_t* a,
                                    const uint8_t* b, int64_t rows,
                                    int64_t stride_bytes, int64_t row_bytes) {
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* ra = a + r * stride_bytes;
    const uint8_t* rb = b + r * stride_bytes;
    if (std::memcmp(ra, rb, static_cast<size_t>(row_bytes)) == 0) continue;
    int64_t k = 0;
    while (ra[k] == rb[k]) ++k;
    // Show a few bytes around the first difference.
    const int64_t from = std::max<int64_t>(0, k - 4);
    const int64_t n = std::min<int64_t>(row_bytes - from, 12);
    return ::testing::AssertionFailure()
           << what << " differ at row " << r << ", byte " << k << " of "
           << row_bytes << ": reference 0x" << Hex(ra + k, 1) << " vs 0x"
           << Hex(rb + k, 1) << " (bytes " << from << ".. reference "
           << Hex(ra + from, static_cast<size_t>(n)) << ", got "
           << Hex(rb + from, static_cast<size_t>(n)) << ")";
  }
  return ::testing::AssertionSuccess();
}

uint32_t NanBits(DType dt) {
  switch (dt) {
    case DType::kF16:
      return 0x7e00u;
    case DType::kBF16:
      return 0x7fc0u;
    case DType::kF32:
      break;
  }
  return 0x7fc00000u;
}

size_t PageSize() { return static_cast<size_t>(sysconf(_SC_PAGESIZE)); }

}  // namespace

uint32_t BaseSeed() {
  return static_cast<uint32_t>(
      ::testing::UnitTest::GetInstance()->random_seed());
}

Rng MakeRng(uint64_t salt) {
  const ::testing::TestInfo* info =
      ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = "(no test)";
  if (info != nullptr)
    name = std::string(info->test_suite_name()) + "." + info->name();
  return Rng(SplitMix64(SplitMix64(BaseSeed()) ^ Fnv1a(name) ^
                        SplitMix64(salt + 0x51ed)));
}

std::string SeedMessage() {
  const uint32_t s = BaseSeed();
  return "random seed " + std::to_string(s) +
         " (replay with --gtest_random_seed=" + std::to_string(s) + ")";
}

// ---------------------------------------------------------------------------

std::vector<QuantScheme> AllSchemes(DType scale_dtype) {
  std::vector<QuantScheme> out;
  for (bool sym : {true, false}) out.push_back({8, sym, 0, scale_dtype});
  for (bool sym : {true, false}) out.push_back({8, sym, 32, scale_dtype});
  for (int64_t g : {32, 64, 128, 256})
    for (bool sym : {true, false}) out.push_back({4, sym, g, scale_dtype});
  for (bool sym : {true, false}) out.push_back({4, sym, 0, scale_dtype});
  return out;
}

std::vector<QuantScheme> GgmlSchemes() {
  return {GgmlQ8_0(), GgmlQ4_0(), GgmlQ4_1()};
}

std::vector<QuantScheme> EquivalenceSchemes() {
  std::vector<QuantScheme> out = AllSchemes(DType::kF16);
  for (const QuantScheme& s : GgmlSchemes()) out.push_back(s);
  return out;
}

std::vector<DType> ScaleDTypesFor(const QuantScheme& s) {
  if (IsGgml(s)) return {DType::kF16};
  return AllDTypes();
}

const std::vector<DType>& AllDTypes() {
  static const std::vector<DType> v = {DType::kF32, DType::kF16, DType::kBF16};
  return v;
}

const std::vector<Isa>& SimdIsas() {
  static const std::vector<Isa> v = {Isa::kAvx2, Isa::kAvx512};
  return v;
}

const std::vector<Isa>& ConcreteIsas() {
  static const std::vector<Isa> v = {Isa::kScalar, Isa::kAvx2, Isa::kAvx512};
  return v;
}

std::string IsaSkipMessage(Isa isa) {
  return std::string("ISA path '") + IsaName(isa) +
         "' is not available: either this build has no kernels for it or the "
         "CPU lacks the instructions (CPU features: " +
         CpuFeatureString() + ")";
}

std::string Identifier(const std::string& text) {
  std::string out = text;
  for (char& c : out)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return out;
}

int QMax(const QuantScheme& s) {
  if (IsGgml(s)) return s.bits == 8 ? 127 : (s.symmetric ? 8 : 15);
  if (s.bits == 8) return s.symmetric ? 127 : 255;
  return s.symmetric ? 7 : 15;
}

// ---------------------------------------------------------------------------

const std::vector<DataKind>& AllDataKinds() {
  static const std::vector<DataKind> v = {
      DataKind::kGaussian, DataKind::kHeavyTailed,  DataKind::kConstant,
      DataKind::kZero,     DataKind::kF16Subnormal, DataKind::kF16Extremes,
      DataKind::kTies,     DataKind::kSignedZeros,  DataKind::kTiny};
  return v;
}

const std::vector<DataKind>& EquivalenceDataKinds() {
  static const std::vector<DataKind> v = [] {
    std::vector<DataKind> k = AllDataKinds();
    k.push_back(DataKind::kMaxAbsTies);
    return k;
  }();
  return v;
}

const char* DataKindName(DataKind kind) {
  switch (kind) {
    case DataKind::kGaussian:
      return "gaussian";
    case DataKind::kHeavyTailed:
      return "heavy-tailed";
    case DataKind::kConstant:
      return "constant";
    case DataKind::kZero:
      return "zero";
    case DataKind::kF16Subnormal:
      return "f16-subnormal";
    case DataKind::kF16Extremes:
      return "f16-extremes";
    case DataKind::kTies:
      return "ties";
    case DataKind::kSignedZeros:
      return "signed-zeros";
    case DataKind::kTiny:
      return "tiny";
    case DataKind::kMaxAbsTies:
      return "max-abs-ties";
  }
  return "?";
}

std::vector<float> Generate(DataKind kind, int64_t rows, int64_t cols,
                            const QuantScheme& scheme, Rng& rng) {
  std::vector<float> v(static_cast<size_t>(rows * cols), 0.0f);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  auto row_magnitude = [&]() {
    std::uniform_int_distribution<int> e(-6, 6);
    return std::ldexp(0.5f + 1.5f * unit(rng), e(rng));
  };
  auto at = [&](int64_t r, int64_t c) -> float& {
    return v[static_cast<size_t>(r * cols + c)];
  };
  switch (kind) {
    case DataKind::kGaussian:
      for (int64_t r = 0; r < rows; ++r) {
        const float m = row_magnitude();
        for (int64_t c = 0; c < cols; ++c) at(r, c) = m * normal(rng);
      }
      break;
    case DataKind::kHeavyTailed: {
      std::student_t_distribution<float> t3(3.0f);
      std::uniform_int_distribution<int64_t> col(0, cols - 1);
      const int64_t outliers[3] = {col(rng), col(rng), col(rng)};
      for (int64_t r = 0; r < rows; ++r) {
        const float m = row_magnitude();
        for (int64_t c = 0; c < cols; ++c) at(r, c) = m * t3(rng);
        for (int64_t c : outliers) at(r, c) *= 10.0f;
      }
      break;
    }
    case DataKind::kConstant:
      for (int64_t r = 0; r < rows; ++r) {
        const float c0 = (unit(rng) < 0.5f ? -1.0f : 1.0f) * row_magnitude() *
                         (1.0f + unit(rng));
        for (int64_t c = 0; c < cols; ++c) at(r, c) = c0;
      }
      break;
    case DataKind::kZero:
      break;
    case DataKind::kF16Subnormal: {
      std::uniform_int_distribution<int> k(-1023, 1023);
      for (auto& x : v) {
        const float p = unit(rng);
        const int n = p < 0.05f ? 0 : p < 0.15f ? (p < 0.1f ? 1 : -1) : k(rng);
        x = static_cast<float>(n) * 5.9604644775390625e-8f;  // n * 2^-24
      }
      break;
    }
    case DataKind::kF16Extremes:
      for (auto& x : v) {
        const float p = unit(rng);
        const float sign = unit(rng) < 0.5f ? -1.0f : 1.0f;
        if (p < 0.3f) {
          x = sign * 65504.0f;
        } else if (p < 0.5f) {
          x = sign * (60000.0f + 5504.0f * unit(rng));
        } else {
          x = 1000.0f * normal(rng);
        }
      }
      break;
    case DataKind::kTies: {
      // Per group a power-of-two scale s and a range that makes the derived
      // scale exactly s; every other element sits at (k + 0.5) * s.
      const int64_t group = GroupLength(scheme, cols);
      const int qmax = QMax(scheme);
      std::uniform_int_distribution<int> exp(-8, 4);
      std::uniform_int_distribution<int64_t> pos(0, group - 1);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t g0 = 0; g0 < cols; g0 += group) {
          const float s = std::ldexp(1.0f, exp(rng));
          int lo_k, hi_k;  // ties at (k + 0.5) * s for k in [lo_k, hi_k]
          if (scheme.symmetric) {
            lo_k = -qmax;
            hi_k = qmax - 1;
          } else {
            const int a = std::uniform_int_distribution<int>(0, qmax)(rng);
            lo_k = -a;
            hi_k = qmax - a - 1;
            if (hi_k < lo_k) hi_k = lo_k;
          }
          std::uniform_int_distribution<int> k(lo_k, hi_k);
          for (int64_t c = g0; c < g0 + group; ++c)
            at(r, c) = (static_cast<float>(k(rng)) + 0.5f) * s;
          if (scheme.symmetric) {
            at(r, g0 + pos(rng)) = (unit(rng) < 0.5f ? -1.0f : 1.0f) *
                                   static_cast<float>(qmax) * s;
          } else {
            at(r, g0 + pos(rng)) = static_cast<float>(lo_k) * s;
            at(r, g0 + pos(rng)) = static_cast<float>(lo_k + qmax) * s;
          }
        }
      }
      break;
    }
    case DataKind::kSignedZeros:
      for (int64_t r = 0; r < rows; ++r) {
        const bool only_zeros = r % 3 == 1;
        const float m = row_magnitude();
        for (int64_t c = 0; c < cols; ++c) {
          const float p = unit(rng);
          if (only_zeros) {
            at(r, c) = p < 0.5f ? 0.0f : -0.0f;
          } else {
            at(r, c) = p < 0.35f ? 0.0f : p < 0.7f ? -0.0f : m * normal(rng);
          }
        }
      }
      break;
    case DataKind::kTiny: {
      std::uniform_int_distribution<int> e(-149, -120);
      for (auto& x : v)
        x = (unit(rng) < 0.5f ? -1.0f : 1.0f) *
            std::ldexp(1.0f + unit(rng), e(rng));
      break;
    }
    case DataKind::kMaxAbsTies: {
      const int64_t group = GroupLength(scheme, cols);
      std::uniform_int_distribution<int64_t> pos(0, group - 1);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t g0 = 0; g0 < cols; g0 += group) {
          const float a = row_magnitude();
          const int variant = static_cast<int>(rng() % 4);
          for (int64_t c = g0; c < g0 + group; ++c) {
            const float u = unit(rng);
            switch (variant) {
              case 0:
              case 1:
                at(r, c) = a * 0.99f * (2.0f * u - 1.0f);
                break;
              case 2:  // non-negative, zeros of both signs
                at(r, c) = u < 0.2f ? 0.0f : u < 0.4f ? -0.0f : a * u;
                break;
              default:  // zeros only
                at(r, c) = u < 0.5f ? 0.0f : -0.0f;
                break;
            }
          }
          if (variant <= 1) {
            // +a and -a, in a random order; variant 1 repeats them.
            const int copies = variant == 0 ? 1 : 3;
            for (int k = 0; k < copies; ++k) {
              at(r, g0 + pos(rng)) = a;
              at(r, g0 + pos(rng)) = -a;
            }
          }
        }
      }
      break;
    }
  }
  for (auto& x : v) x = std::max(-65504.0f, std::min(65504.0f, x));
  return v;
}

void StoreElement(void* base, DType dtype, int64_t index, float value) {
  switch (dtype) {
    case DType::kF32: {
      std::memcpy(static_cast<uint8_t*>(base) + index * 4, &value, 4);
      return;
    }
    case DType::kF16: {
      const uint16_t h = FloatToHalf(value);
      std::memcpy(static_cast<uint8_t*>(base) + index * 2, &h, 2);
      return;
    }
    case DType::kBF16: {
      const uint16_t b = FloatToBf16(value);
      std::memcpy(static_cast<uint8_t*>(base) + index * 2, &b, 2);
      return;
    }
  }
}

float LoadElement(const void* base, DType dtype, int64_t index) {
  if (dtype == DType::kF32) {
    float f;
    std::memcpy(&f, static_cast<const uint8_t*>(base) + index * 4, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, static_cast<const uint8_t*>(base) + index * 2, 2);
  return dtype == DType::kF16 ? HalfToFloat(h) : Bf16ToFloat(h);
}

float RoundToDType(float value, DType dtype) {
  switch (dtype) {
    case DType::kF16:
      return HalfToFloat(FloatToHalf(value));
    case DType::kBF16:
      return Bf16ToFloat(FloatToBf16(value));
    case DType::kF32:
      break;
  }
  return value;
}

// ---------------------------------------------------------------------------

GuardedBytes::GuardedBytes(size_t size, size_t misalign, uint8_t fill)
    : storage_(kCanary + 64 + misalign + size + kCanary, kCanaryByte),
      size_(size),
      fill_(fill) {
  const uintptr_t first =
      reinterpret_cast<uintptr_t>(storage_.data()) + kCanary;
  const uintptr_t aligned = (first + 63) & ~uintptr_t{63};
  payload_ = storage_.data() +
             (aligned - reinterpret_cast<uintptr_t>(storage_.data())) +
             misalign;
  std::memset(payload_, fill, size);
}

::testing::AssertionResult GuardedBytes::Untouched(const char* what,
                                                   int64_t rows,
                                                   int64_t stride_bytes,
                                                   int64_t row_bytes) const {
  const uint8_t* begin = storage_.data();
  const uint8_t* end = begin + storage_.size();
  for (const uint8_t* p = begin; p < payload_; ++p) {
    if (*p != kCanaryByte)
      return ::testing::AssertionFailure()
             << what << ": canary byte " << (payload_ - p)
             << " bytes before the buffer was overwritten (0x" << Hex(p, 1)
             << ")";
  }
  for (const uint8_t* p = payload_ + size_; p < end; ++p) {
    if (*p != kCanaryByte)
      return ::testing::AssertionFailure()
             << what << ": canary byte " << (p - payload_ - size_)
             << " bytes past the end of the buffer was overwritten (0x"
             << Hex(p, 1) << ")";
  }
  // The gaps between rows, and anything after the last row, must hold fill_.
  const int64_t size = static_cast<int64_t>(size_);
  for (int64_t r = 0; r <= rows; ++r) {
    const int64_t from =
        r < rows ? r * stride_bytes + row_bytes : rows * stride_bytes;
    const int64_t to = r < rows ? std::min(size, (r + 1) * stride_bytes) : size;
    for (int64_t i = from; i < to; ++i) {
      if (payload_[i] != fill_)
        return ::testing::AssertionFailure()
               << what << ": byte " << i << " (padding after row "
               << i / std::max<int64_t>(stride_bytes, 1) << "; row length "
               << row_bytes << ", stride " << stride_bytes
               << ") was overwritten (0x" << Hex(payload_ + i, 1) << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

PageEndBytes::PageEndBytes(size_t size) : size_(size) {
  const size_t page = PageSize();
  const size_t data_pages = (size + page - 1) / page;
  map_size_ = (data_pages + 1) * page;
  map_ = mmap(nullptr, map_size_, PROT_READ | PROT_WRITE,
              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    ADD_FAILURE() << "mmap of " << map_size_ << " bytes failed";
    return;
  }
  uint8_t* base = static_cast<uint8_t*>(map_);
  if (mprotect(base + data_pages * page, page, PROT_NONE) != 0)
    ADD_FAILURE() << "mprotect failed";
  payload_ = base + data_pages * page - size;
}

PageEndBytes::~PageEndBytes() {
  if (map_ != nullptr) munmap(map_, map_size_);
}

// ---------------------------------------------------------------------------

const std::vector<Layout>& AllLayouts() {
  static const std::vector<Layout> v = {Layout::kDense, Layout::kPadded,
                                        Layout::kMisaligned, Layout::kPageEnd};
  return v;
}

const char* LayoutName(Layout layout) {
  switch (layout) {
    case Layout::kDense:
      return "dense";
    case Layout::kPadded:
      return "padded";
    case Layout::kMisaligned:
      return "misaligned";
    case Layout::kPageEnd:
      return "page-end";
  }
  return "?";
}

InputMatrix::InputMatrix(const std::vector<float>& values, DType dtype,
                         int64_t rows, int64_t cols, Layout layout)
    : dtype_(dtype),
      rows_(rows),
      cols_(cols),
      stride_(layout == Layout::kPadded ? cols + 5 : cols),
      values_(values) {
  const size_t esize = DTypeSize(dtype);
  const size_t elems =
      rows == 0 ? 0 : static_cast<size_t>((rows - 1) * stride_ + cols);
  if (layout == Layout::kPadded || layout == Layout::kPageEnd) {
    page_ = std::make_unique<PageEndBytes>(elems * esize);
    data_ = page_->data();
  } else {
    // 0xff bytes read as NaN in every dtype.
    heap_ = std::make_unique<GuardedBytes>(
        elems * esize, layout == Layout::kMisaligned ? esize : 0, 0xff);
    data_ = heap_->data();
  }
  for (size_t i = 0; i < elems; ++i) {
    const uint32_t nan = NanBits(dtype);
    if (dtype == DType::kF32) {
      std::memcpy(data_ + i * 4, &nan, 4);
    } else {
      const uint16_t n16 = static_cast<uint16_t>(nan);
      std::memcpy(data_ + i * 2, &n16, 2);
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      StoreElement(data_, dtype, r * stride_ + c, value(r, c));
      values_[static_cast<size_t>(r * cols + c)] =
          LoadElement(data_, dtype, r * stride_ + c);
    }
  }
}

ConstMatrixView InputMatrix::view() const {
  return ConstMatrixView{data_, dtype_, rows_, cols_, stride_};
}

void InputMatrix::SetBits(int64_t r, int64_t c, uint32_t bits) {
  const int64_t i = r * stride_ + c;
  if (dtype_ == DType::kF32) {
    std::memcpy(data_ + i * 4, &bits, 4);
  } else {
    const uint16_t b = static_cast<uint16_t>(bits);
    std::memcpy(data_ + i * 2, &b, 2);
  }
  values_[static_cast<size_t>(r * cols_ + c)] = LoadElement(data_, dtype_, i);
}

void InputMatrix::Negate() {
  for (int64_t r = 0; r < rows_; ++r) {
    for (int64_t c = 0; c < cols_; ++c) {
      const int64_t i = r * stride_ + c;
      if (dtype_ == DType::kF32) {
        data_[i * 4 + 3] ^= 0x80;
      } else {
        data_[i * 2 + 1] ^= 0x80;
      }
      values_[static_cast<size_t>(r * cols_ + c)] =
          LoadElement(data_, dtype_, i);
    }
  }
}

OutputShape OutputShapeFor(const QuantScheme& scheme, int64_t cols,
                           Layout layout) {
  const int64_t cb = CodeBytesPerRow(scheme, cols);
  const int64_t groups = GroupsPerRow(scheme, cols);
  OutputShape s{cb, groups, groups, 0, 0, 0};
  s.offsets_stride = groups;
  if (layout == Layout::kPadded) {
    s.codes_stride += 3;
    s.scales_stride += 1;
    s.zp_stride += 2;
    s.offsets_stride += 3;
  } else if (layout == Layout::kMisaligned) {
    s.codes_misalign = 1;
    s.scales_misalign = DTypeSize(scheme.scale_dtype);
    s.zp_misalign = 1;
    s.offsets_misalign = 2;
  }
  return s;
}

QuantizedView QuantResult::view() {
  return QuantizedView{codes->data(),
                       shape.codes_stride,
                       scales->data(),
                       shape.scales_stride,
                       zps ? zps->data() : nullptr,
                       zps ? shape.zp_stride : 0,
                       offsets ? offsets->data() : nullptr,
                       offsets ? shape.offsets_stride : 0};
}

ConstQuantizedView QuantResult::const_view() const {
  return ConstQuantizedView{codes->data(),
                            shape.codes_stride,
                            scales->data(),
                            shape.scales_stride,
                            zps ? zps->data() : nullptr,
                            zps ? shape.zp_stride : 0,
                            offsets ? offsets->data() : nullptr,
                            offsets ? shape.offsets_stride : 0};
}

float QuantResult::scale(int64_t r, int64_t g) const {
  return LoadElement(scales->data(), scheme.scale_dtype,
                     r * shape.scales_stride + g);
}

uint32_t QuantResult::scale_bits(int64_t r, int64_t g) const {
  const size_t ss = DTypeSize(scheme.scale_dtype);
  uint32_t bits = 0;
  std::memcpy(&bits, scales->data() + (r * shape.scales_stride + g) * ss, ss);
  return bits;
}

int QuantResult::zero_point(int64_t r, int64_t g) const {
  if (!HasZeroPoints(scheme)) return 0;
  return zps->data()[r * shape.zp_stride + g];
}

uint16_t QuantResult::offset_bits(int64_t r, int64_t g) const {
  uint16_t bits = 0;
  std::memcpy(&bits, offsets->data() + (r * shape.offsets_stride + g) * 2, 2);
  return bits;
}

int QuantResult::raw_code(int64_t r, int64_t c) const {
  const uint8_t* row = codes->data() + r * shape.codes_stride;
  if (scheme.bits == 8) return row[c];
  return (row[c >> 1] >> ((c & 1) * 4)) & 0xf;
}

int QuantResult::code(int64_t r, int64_t c) const {
  const int raw = raw_code(r, c);
  if (scheme.bits == 8)
    return scheme.symmetric ? static_cast<int>(static_cast<int8_t>(raw)) : raw;
  return scheme.symmetric ? raw - 8 : raw;
}

QuantResult RunQuantize(const InputMatrix& in, const QuantScheme& scheme,
                        Layout layout, uint8_t fill, bool metrics,
                        const ExecOptions& options) {
  QuantResult q;
  q.scheme = scheme;
  q.rows = in.rows();
  q.cols = in.cols();
  q.metrics = metrics;
  q.shape = OutputShapeFor(scheme, in.cols(), layout);
  const int64_t rows = in.rows();
  auto span = [&](int64_t stride, int64_t row) -> size_t {
    return rows == 0 ? 0 : static_cast<size_t>((rows - 1) * stride + row);
  };
  const int64_t groups = GroupsPerRow(scheme, in.cols());
  const size_t ss = DTypeSize(scheme.scale_dtype);
  q.codes = std::make_unique<GuardedBytes>(
      span(q.shape.codes_stride, CodeBytesPerRow(scheme, in.cols())),
      q.shape.codes_misalign, fill);
  q.scales = std::make_unique<GuardedBytes>(
      span(q.shape.scales_stride, groups) * ss, q.shape.scales_misalign, fill);
  if (HasZeroPoints(scheme))
    q.zps = std::make_unique<GuardedBytes>(span(q.shape.zp_stride, groups),
                                           q.shape.zp_misalign, fill);
  if (HasOffsets(scheme))
    q.offsets =
        std::make_unique<GuardedBytes>(span(q.shape.offsets_stride, groups) * 2,
                                       q.shape.offsets_misalign, fill);
  q.status = Quantize(in.view(), scheme, q.view(), metrics ? &q.sums : nullptr,
                      options);
  return q;
}

::testing::AssertionResult SameSums(const ErrorSums& a, const ErrorSums& b) {
  const std::pair<const char*, std::pair<double, double>> fields[] = {
      {"sum_sq_error", {a.sum_sq_error, b.sum_sq_error}},
      {"sum_sq_ref", {a.sum_sq_ref, b.sum_sq_ref}},
      {"sum_ref_error", {a.sum_ref_error, b.sum_ref_error}},
      {"max_abs_error", {a.max_abs_error, b.max_abs_error}}};
  if (a.count != b.count)
    return ::testing::AssertionFailure()
           << "ErrorSums.count " << a.count << " vs " << b.count;
  for (const auto& [name, v] : fields) {
    if (std::memcmp(&v.first, &v.second, sizeof(double)) != 0)
      return ::testing::AssertionFailure()
             << "ErrorSums." << name << " differs: reference "
             << HexFloat(v.first) << " vs " << HexFloat(v.second);
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult SameQuantized(const QuantResult& ref,
                                         const QuantResult& got) {
  if (ref.status.code() != got.status.code() ||
      ref.status.row() != got.status.row() ||
      ref.status.col() != got.status.col())
    return ::testing::AssertionFailure()
           << "status differs: reference '" << ref.status.ToString() << "' ("
           << ref.status.row() << ", " << ref.status.col() << ") vs '"
           << got.status.ToString() << "' (" << got.status.row() << ", "
           << got.status.col() << ")";
  const QuantScheme& s = ref.scheme;
  const int64_t cb = CodeBytesPerRow(s, ref.cols);
  const int64_t groups = GroupsPerRow(s, ref.cols);
  const int64_t ss = static_cast<int64_t>(DTypeSize(s.scale_dtype));
  const std::pair<const char*, const QuantResult*> both[] = {
      {"reference", &ref}, {"tested", &got}};
  for (const auto& [who, q] : both) {
    auto r = q->codes->Untouched("codes", q->rows, q->shape.codes_stride, cb);
    if (r)
      r = q->scales->Untouched("scales", q->rows, q->shape.scales_stride * ss,
                               groups * ss);
    if (r && q->zps)
      r = q->zps->Untouched("zero points", q->rows, q->shape.zp_stride, groups);
    if (r && q->offsets)
      r = q->offsets->Untouched("offsets", q->rows, q->shape.offsets_stride * 2,
                                groups * 2);
    if (!r) return r << " (" << who << " path)";
  }
  if (!ref.status.ok()) return ::testing::AssertionSuccess();
  auto r = SameRows("codes", ref.codes->data(), got.codes->data(), ref.rows,
                    ref.shape.codes_stride, cb);
  if (r)
    r = SameRows("scales", ref.scales->data(), got.scales->data(), ref.rows,
                 ref.shape.scales_stride * ss, groups * ss);
  if (r && ref.zps)
    r = SameRows("zero points", ref.zps->data(), got.zps->data(), ref.rows,
                 ref.shape.zp_stride, groups);
  if (r && ref.offsets)
    r = SameRows("offsets", ref.offsets->data(), got.offsets->data(), ref.rows,
                 ref.shape.offsets_stride * 2, groups * 2);
  if (r && ref.metrics) r = SameSums(ref.sums, got.sums);
  return r;
}

DequantInput::DequantInput(const QuantResult& q, Layout layout) {
  view_ = q.const_view();
  if (layout != Layout::kPadded && layout != Layout::kPageEnd) return;
  auto copy = [](const GuardedBytes& b) {
    auto p = std::make_unique<PageEndBytes>(b.size());
    if (b.size() > 0) std::memcpy(p->data(), b.data(), b.size());
    return p;
  };
  codes_ = copy(*q.codes);
  scales_ = copy(*q.scales);
  view_.codes = codes_->data();
  view_.scales = scales_->data();
  if (q.zps) {
    zps_ = copy(*q.zps);
    view_.zero_points = zps_->data();
  }
  if (q.offsets) {
    offsets_ = copy(*q.offsets);
    view_.offsets = offsets_->data();
  }
}

DequantResult RunDequantize(const ConstQuantizedView& in,
                            const QuantScheme& scheme, int64_t rows,
                            int64_t cols, DType dtype, Layout layout,
                            uint8_t fill, const ExecOptions& options) {
  DequantResult d;
  d.dtype = dtype;
  d.rows = rows;
  d.cols = cols;
  d.stride = layout == Layout::kPadded ? cols + 3 : cols;
  const size_t esize = DTypeSize(dtype);
  const size_t elems =
      rows == 0 ? 0 : static_cast<size_t>((rows - 1) * d.stride + cols);
  d.out = std::make_unique<GuardedBytes>(
      elems * esize, layout == Layout::kMisaligned ? esize : 0, fill);
  d.status = Dequantize(in, scheme,
                        MatrixView{d.out->data(), dtype, rows, cols, d.stride},
                        options);
  return d;
}

::testing::AssertionResult SameDequantized(const DequantResult& ref,
                                           const DequantResult& got) {
  if (ref.status.code() != got.status.code())
    return ::testing::AssertionFailure()
           << "status differs: reference '" << ref.status.ToString() << "' vs '"
           << got.status.ToString() << "'";
  const int64_t esize = static_cast<int64_t>(DTypeSize(ref.dtype));
  for (const DequantResult* d : {&ref, &got}) {
    auto r = d->out->Untouched("dequantized output", d->rows, d->stride * esize,
                               d->cols * esize);
    if (!r) return r << (d == &ref ? " (reference path)" : " (tested path)");
  }
  return SameRows("dequantized values", ref.out->data(), got.out->data(),
                  ref.rows, ref.stride * esize, ref.cols * esize);
}

std::string Describe(const QuantScheme& scheme, DType in_dtype, int64_t rows,
                     int64_t cols, Layout layout, DataKind kind, bool metrics) {
  std::ostringstream os;
  os << SchemeName(scheme) << " scales=" << DTypeName(scheme.scale_dtype)
     << " input=" << DTypeName(in_dtype) << " [" << rows << " x " << cols
     << "] layout=" << LayoutName(layout) << " data=" << DataKindName(kind)
     << " metrics=" << (metrics ? "on" : "off");
  return os.str();
}

}  // namespace nibble::test
