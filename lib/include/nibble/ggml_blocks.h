// GGML's block layouts for the schemes q8_0, q4_0 and q4_1
// (SchemeFamily::kGgml; the quantization rules are in nibble/scheme.h).
//
// Quantize() writes these schemes in nibble's layout (codes, F16 scales and,
// for Q4_1, F16 offsets in separate arrays); the functions below convert
// between that and the bytes of a GGUF tensor of ggml type Q8_0 (8), Q4_0 (2)
// or Q4_1 (3). One block per group of 32 columns, little-endian:
//
//   block_q8_0  34 bytes  d (F16), qs[32] (int8)           w = qs[j] * d
//   block_q4_0  18 bytes  d (F16), qs[16]                  w = (nib - 8) * d
//   block_q4_1  20 bytes  d (F16), m (F16), qs[16]         w = nib * d + m
//
// In qs[16], byte j holds element j of the block in its low nibble and
// element j + 16 in its high nibble (nibble's own INT4 layout puts elements
// 2k and 2k + 1 in byte k: the conversion is a shuffle within each block). A
// row of `cols` columns is cols / 32 consecutive blocks and rows follow each
// other without padding, as in a GGUF tensor with ne = [cols, rows].
//
// The functions allocate nothing unless stated, run `threads` OpenMP
// threads over rows (the bytes do not depend on it), and are thread-safe for
// distinct outputs.
#ifndef NIBBLE_GGML_BLOCKS_H_
#define NIBBLE_GGML_BLOCKS_H_

#include <cstddef>
#include <cstdint>

#include "nibble/metrics.h"
#include "nibble/quantize.h"
#include "nibble/scheme.h"
#include "nibble/status.h"
#include "nibble/types.h"

namespace nibble {

// Bytes of one block: 34 (q8_0), 18 (q4_0), 20 (q4_1); 0 for any other
// scheme.
int64_t GgmlBlockBytes(const QuantScheme& scheme);

// Bytes of the whole [rows, cols] matrix as ggml blocks. Fails
// (kInvalidArgument) when the scheme is not a valid GGML scheme for cols,
// rows is negative, or the size overflows.
Status GgmlMatrixBytes(const QuantScheme& scheme, int64_t rows, int64_t cols,
                       int64_t* bytes);

// Writes the quantized [rows, cols] matrix `in` (nibble's layout, as
// Quantize() wrote it for `scheme`) as ggml blocks to out[0, out_size);
// out_size must equal GgmlMatrixBytes. `in` and `out` must not overlap.
Status WriteGgmlBlocks(const ConstQuantizedView& in, const QuantScheme& scheme,
                       int64_t rows, int64_t cols, uint8_t* out,
                       size_t out_size, int threads = 1);

// The reverse: ggml blocks (any bytes: every F16 pattern is a scale) into
// nibble's layout, ready for Dequantize(). in_size must equal
// GgmlMatrixBytes.
Status ReadGgmlBlocks(const uint8_t* in, size_t in_size,
                      const QuantScheme& scheme, int64_t rows, int64_t cols,
                      const QuantizedView& out, int threads = 1);

// Quantize() then WriteGgmlBlocks(), through temporary buffers it allocates
// (about the output's size: one call, so the metrics are bit for bit those
// of Quantize()). Errors and metrics as Quantize().
Status QuantizeToGgmlBlocks(const ConstMatrixView& in,
                            const QuantScheme& scheme, uint8_t* out,
                            size_t out_size, ErrorSums* metrics,
                            const ExecOptions& options = {});

// ReadGgmlBlocks() then Dequantize() into `out` (its rows and cols give the
// shape), through temporary buffers it allocates.
Status DequantizeGgmlBlocks(const uint8_t* in, size_t in_size,
                            const QuantScheme& scheme, const MatrixView& out,
                            const ExecOptions& options = {});

}  // namespace nibble

#endif  // NIBBLE_GGML_BLOCKS_H_
