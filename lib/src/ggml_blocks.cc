// Conversion between nibble's quantized layout and ggml's blocks.
#include "nibble/ggml_blocks.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <algorithm>
#include <cstring>
#include <limits>
#include <string>

namespace nibble {
namespace {

Status Invalid(const std::string& message) {
  return Status(StatusCode::kInvalidArgument, message);
}

bool MulOverflows(int64_t a, int64_t b) {
  return a != 0 && b > std::numeric_limits<int64_t>::max() / a;
}

uint16_t LoadU16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

void StoreU16(uint16_t v, uint8_t* p) { std::memcpy(p, &v, 2); }

// Host order to and from little-endian (the F16 arrays of a view are host
// uint16_t; a GGUF file is little-endian).
void PutLe16(uint16_t v, uint8_t* p) {
  p[0] = static_cast<uint8_t>(v & 0xff);
  p[1] = static_cast<uint8_t>(v >> 8);
}
uint16_t GetLe16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] | (p[1] << 8));
}

// nibble's 16 bytes of a block (element 2k low, 2k + 1 high in byte k) to
// ggml's qs (element j low, j + 16 high in byte j), and back. SSE2 (x86-64's
// baseline) where available; the portable loops give the same bytes.
#if defined(__SSE2__)
void NibblesToGgml(const uint8_t* src, uint8_t* qs) {
  const __m128i mask = _mm_set1_epi8(0x0f);
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src));
  const __m128i even = _mm_and_si128(b, mask);                    // e0, e2..
  const __m128i odd = _mm_and_si128(_mm_srli_epi16(b, 4), mask);  // e1, e3..
  const __m128i first = _mm_unpacklo_epi8(even, odd);             // e0..e15
  const __m128i second = _mm_unpackhi_epi8(even, odd);            // e16..e31
  // Every byte is at most 15: the 16-bit shift moves no bit across bytes.
  _mm_storeu_si128(reinterpret_cast<__m128i*>(qs),
                   _mm_or_si128(first, _mm_slli_epi16(second, 4)));
}
void GgmlToNibbles(const uint8_t* qs, uint8_t* dst) {
  const __m128i mask = _mm_set1_epi8(0x0f);
  const __m128i low = _mm_set1_epi16(0x00ff);
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i first = _mm_and_si128(b, mask);                      // e0..e15
  const __m128i second = _mm_and_si128(_mm_srli_epi16(b, 4), mask);  // e16..
  const __m128i even =
      _mm_packus_epi16(_mm_and_si128(first, low), _mm_and_si128(second, low));
  const __m128i odd =
      _mm_packus_epi16(_mm_srli_epi16(first, 8), _mm_srli_epi16(second, 8));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(dst),
                   _mm_or_si128(even, _mm_slli_epi16(odd, 4)));
}
#else
void NibblesToGgml(const uint8_t* src, uint8_t* qs) {
  uint8_t e[32];
  for (int k = 0; k < 16; ++k) {
    e[2 * k] = src[k] & 0x0f;
    e[2 * k + 1] = src[k] >> 4;
  }
  for (int j = 0; j < 16; ++j)
    qs[j] = static_cast<uint8_t>(e[j] | (e[j + 16] << 4));
}
void GgmlToNibbles(const uint8_t* qs, uint8_t* dst) {
  uint8_t e[32];
  for (int j = 0; j < 16; ++j) {
    e[j] = qs[j] & 0x0f;
    e[j + 16] = qs[j] >> 4;
  }
  for (int k = 0; k < 16; ++k)
    dst[k] = static_cast<uint8_t>(e[2 * k] | (e[2 * k + 1] << 4));
}
#endif

// Strides and pointers of a view for [rows, cols] of a GGML scheme.
Status CheckView(const QuantScheme& s, int64_t rows, int64_t cols,
                 const void* codes, int64_t codes_stride, const void* scales,
                 int64_t scales_stride, const void* offsets,
                 int64_t offsets_stride) {
  if (rows == 0) return Status::Ok();
  const int64_t groups = GroupsPerRow(s, cols);
  if (codes == nullptr || scales == nullptr)
    return Invalid("codes and scales must not be null");
  if (codes_stride < CodeBytesPerRow(s, cols))
    return Invalid("codes stride " + std::to_string(codes_stride) +
                   " is below the row's " +
                   std::to_string(CodeBytesPerRow(s, cols)) + " bytes");
  if (scales_stride < groups)
    return Invalid("scales stride " + std::to_string(scales_stride) +
                   " is below the row's " + std::to_string(groups) + " groups");
  if (HasOffsets(s)) {
    if (offsets == nullptr) return Invalid(SchemeName(s) + " needs offsets");
    if (offsets_stride < groups)
      return Invalid("offset stride " + std::to_string(offsets_stride) +
                     " is below the row's " + std::to_string(groups) +
                     " groups");
  }
  if (MulOverflows(rows, std::max(codes_stride, scales_stride * 2)) ||
      (HasOffsets(s) && MulOverflows(rows, offsets_stride * 2)))
    return Invalid("quantized buffer size overflows");
  return Status::Ok();
}

Status CheckSize(const QuantScheme& s, int64_t rows, int64_t cols, size_t size,
                 const void* data, const char* what) {
  int64_t bytes = 0;
  if (Status st = GgmlMatrixBytes(s, rows, cols, &bytes); !st.ok()) return st;
  if (static_cast<uint64_t>(bytes) != static_cast<uint64_t>(size))
    return Invalid(std::string(what) + " holds " + std::to_string(size) +
                   " bytes; " + SchemeName(s) + " [" + std::to_string(rows) +
                   " x " + std::to_string(cols) + "] takes " +
                   std::to_string(bytes));
  if (bytes > 0 && data == nullptr)
    return Invalid(std::string(what) + " must not be null");
  return Status::Ok();
}

}  // namespace

int64_t GgmlBlockBytes(const QuantScheme& s) {
  if (!IsGgml(s) || s.group_size != 32 || s.scale_dtype != DType::kF16)
    return 0;
  if (s.bits == 8) return s.symmetric ? 34 : 0;
  if (s.bits == 4) return s.symmetric ? 18 : 20;
  return 0;
}

Status GgmlMatrixBytes(const QuantScheme& s, int64_t rows, int64_t cols,
                       int64_t* bytes) {
  if (!IsGgml(s))
    return Invalid(SchemeName(s) +
                   " has no ggml block layout (q8_0, q4_0 and q4_1 have)");
  if (Status st = ValidateScheme(s, cols); !st.ok()) return st;
  if (rows < 0) return Invalid("row count must not be negative");
  const int64_t row_bytes = cols / 32 * GgmlBlockBytes(s);
  if (MulOverflows(rows, row_bytes)) return Invalid("block size overflows");
  *bytes = rows * row_bytes;
  return Status::Ok();
}

Status WriteGgmlBlocks(const ConstQuantizedView& in, const QuantScheme& s,
                       int64_t rows, int64_t cols, uint8_t* out,
                       size_t out_size, int threads) {
  if (Status st = CheckSize(s, rows, cols, out_size, out, "the block buffer");
      !st.ok())
    return st;
  if (Status st = CheckView(s, rows, cols, in.codes, in.codes_stride, in.scales,
                            in.scales_stride, in.offsets, in.offsets_stride);
      !st.ok())
    return st;
  if (threads < 1) return Invalid("thread count must be at least 1");
  const int64_t block = GgmlBlockBytes(s);
  const int64_t groups = cols / 32;
  const bool q8 = s.bits == 8;
  const bool offsets = HasOffsets(s);
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* codes = in.codes + r * in.codes_stride;
    const uint8_t* scales =
        static_cast<const uint8_t*>(in.scales) + r * in.scales_stride * 2;
    const uint8_t* offs = offsets ? static_cast<const uint8_t*>(in.offsets) +
                                        r * in.offsets_stride * 2
                                  : nullptr;
    uint8_t* dst = out + r * groups * block;
    for (int64_t g = 0; g < groups; ++g, dst += block) {
      PutLe16(LoadU16(scales + 2 * g), dst);
      if (q8) {
        std::memcpy(dst + 2, codes + 32 * g, 32);
      } else if (offsets) {
        PutLe16(LoadU16(offs + 2 * g), dst + 2);
        NibblesToGgml(codes + 16 * g, dst + 4);
      } else {
        NibblesToGgml(codes + 16 * g, dst + 2);
      }
    }
  }
  return Status::Ok();
}

Status ReadGgmlBlocks(const uint8_t* in, size_t in_size, const QuantScheme& s,
                      int64_t rows, int64_t cols, const QuantizedView& out,
                      int threads) {
  if (Status st = CheckSize(s, rows, cols, in_size, in, "the block buffer");
      !st.ok())
    return st;
  if (Status st =
          CheckView(s, rows, cols, out.codes, out.codes_stride, out.scales,
                    out.scales_stride, out.offsets, out.offsets_stride);
      !st.ok())
    return st;
  if (threads < 1) return Invalid("thread count must be at least 1");
  const int64_t block = GgmlBlockBytes(s);
  const int64_t groups = cols / 32;
  const bool q8 = s.bits == 8;
  const bool offsets = HasOffsets(s);
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* codes = out.codes + r * out.codes_stride;
    uint8_t* scales =
        static_cast<uint8_t*>(out.scales) + r * out.scales_stride * 2;
    uint8_t* offs = offsets ? static_cast<uint8_t*>(out.offsets) +
                                  r * out.offsets_stride * 2
                            : nullptr;
    const uint8_t* src = in + r * groups * block;
    for (int64_t g = 0; g < groups; ++g, src += block) {
      StoreU16(GetLe16(src), scales + 2 * g);
      if (q8) {
        std::memcpy(codes + 32 * g, src + 2, 32);
      } else if (offsets) {
        StoreU16(GetLe16(src + 2), offs + 2 * g);
        GgmlToNibbles(src + 4, codes + 16 * g);
      } else {
        GgmlToNibbles(src + 2, codes + 16 * g);
      }
    }
  }
  return Status::Ok();
}

Status QuantizeToGgmlBlocks(const ConstMatrixView& in, const QuantScheme& s,
                            uint8_t* out, size_t out_size, ErrorSums* metrics,
                            const ExecOptions& options) {
  if (Status st =
          CheckSize(s, in.rows, in.cols, out_size, out, "the block buffer");
      !st.ok())
    return st;
  QuantizedBuffers buf;
  if (Status st = buf.Allocate(s, in.rows, in.cols); !st.ok()) return st;
  if (Status st = Quantize(in, s, buf.view(), metrics, options); !st.ok())
    return st;
  return WriteGgmlBlocks(static_cast<const QuantizedBuffers&>(buf).view(), s,
                         in.rows, in.cols, out, out_size, options.threads);
}

Status DequantizeGgmlBlocks(const uint8_t* in, size_t in_size,
                            const QuantScheme& s, const MatrixView& out,
                            const ExecOptions& options) {
  if (Status st =
          CheckSize(s, out.rows, out.cols, in_size, in, "the block buffer");
      !st.ok())
    return st;
  QuantizedBuffers buf;
  if (Status st = buf.Allocate(s, out.rows, out.cols); !st.ok()) return st;
  if (Status st = ReadGgmlBlocks(in, in_size, s, out.rows, out.cols, buf.view(),
                                 options.threads);
      !st.ok())
    return st;
  return Dequantize(static_cast<const QuantizedBuffers&>(buf).view(), s, out,
                    options);
}

}  // namespace nibble
