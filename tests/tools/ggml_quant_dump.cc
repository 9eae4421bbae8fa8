// A small test program: raw matrices in, ggml block bytes out (and back), so
// that tests/python/test_ggml_blocks.py can compare nibble's Q8_0 / Q4_0 /
// Q4_1 with gguf-py's numpy implementation.
//
//   ggml_quant_dump quantize   SCHEME DTYPE ROWS COLS IN OUT [ISA [THREADS]]
//       IN: ROWS x COLS little-endian DTYPE (f32, f16, bf16) values, dense;
//       OUT: the ggml blocks (GgmlMatrixBytes bytes).
//   ggml_quant_dump dequantize SCHEME DTYPE ROWS COLS IN OUT [ISA [THREADS]]
//       IN: ggml blocks; OUT: ROWS x COLS values of DTYPE.
// SCHEME is q8_0, q4_0 or q4_1; ISA scalar, avx2, avx512 or auto (default).
// Exit status: 0 done, 1 usage, 2 rejected input (message on stderr: the
// status, e.g. "non-finite input: NaN at row 3, column 17"), 3 I/O error.
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "nibble/ggml_blocks.h"
#include "nibble/nibble.h"

namespace {

int Usage(const char* why) {
  std::fprintf(
      stderr,
      "ggml_quant_dump: %s\nusage: ggml_quant_dump quantize|dequantize "
      "q8_0|q4_0|q4_1 f32|f16|bf16 ROWS COLS IN OUT "
      "[scalar|avx2|avx512|auto [THREADS]]\n",
      why);
  return 1;
}

bool ParseInt(const char* text, int64_t* out) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v < 0) return false;
  *out = v;
  return true;
}

bool ReadFile(const char* path, std::vector<uint8_t>* data) {
  std::FILE* f = std::fopen(path, "rb");
  if (f == nullptr) return false;
  data->clear();
  uint8_t buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0)
    data->insert(data->end(), buf, buf + n);
  const bool ok = std::ferror(f) == 0;
  std::fclose(f);
  return ok;
}

bool WriteFile(const char* path, const std::vector<uint8_t>& data) {
  std::FILE* f = std::fopen(path, "wb");
  if (f == nullptr) return false;
  const bool ok = std::fwrite(data.data(), 1, data.size(), f) == data.size();
  return std::fclose(f) == 0 && ok;
}

int Rejected(const nibble::Status& st) {
  std::fprintf(stderr, "ggml_quant_dump: %s\n", st.ToString().c_str());
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 8 || argc > 10) return Usage("wrong number of arguments");
  const std::string op = argv[1];
  if (op != "quantize" && op != "dequantize") return Usage("unknown operation");
  nibble::QuantScheme scheme;
  if (nibble::Status st = nibble::ParseScheme(argv[2], &scheme);
      !st.ok() || !nibble::IsGgml(scheme))
    return Usage("SCHEME must be q8_0, q4_0 or q4_1");
  nibble::DType dtype;
  if (!nibble::ParseDType(argv[3], &dtype)) return Usage("unknown DTYPE");
  int64_t rows = 0, cols = 0, threads = 1;
  if (!ParseInt(argv[4], &rows) || !ParseInt(argv[5], &cols))
    return Usage("ROWS and COLS must be non-negative integers");
  nibble::ExecOptions options;
  if (argc >= 9 && !nibble::ParseIsa(argv[8], &options.isa))
    return Usage("unknown ISA");
  if (argc == 10 &&
      (!ParseInt(argv[9], &threads) || threads < 1 || threads > 1024))
    return Usage("THREADS must be 1..1024");
  options.threads = static_cast<int>(threads);

  int64_t block_bytes = 0;
  if (nibble::Status st =
          nibble::GgmlMatrixBytes(scheme, rows, cols, &block_bytes);
      !st.ok())
    return Rejected(st);
  const size_t matrix_bytes =
      static_cast<size_t>(rows * cols) * nibble::DTypeSize(dtype);
  std::vector<uint8_t> in;
  if (!ReadFile(argv[6], &in)) {
    std::fprintf(stderr, "ggml_quant_dump: cannot read %s\n", argv[6]);
    return 3;
  }
  const size_t want =
      op == "quantize" ? matrix_bytes : static_cast<size_t>(block_bytes);
  if (in.size() != want) {
    std::fprintf(stderr, "ggml_quant_dump: %s holds %zu bytes, expected %zu\n",
                 argv[6], in.size(), want);
    return 2;
  }
  std::vector<uint8_t> out;
  if (op == "quantize") {
    out.resize(static_cast<size_t>(block_bytes));
    const nibble::ConstMatrixView view{in.data(), dtype, rows, cols, cols};
    if (nibble::Status st = nibble::QuantizeToGgmlBlocks(
            view, scheme, out.data(), out.size(), nullptr, options);
        !st.ok())
      return Rejected(st);
  } else {
    out.resize(matrix_bytes);
    const nibble::MatrixView view{out.data(), dtype, rows, cols, cols};
    if (nibble::Status st = nibble::DequantizeGgmlBlocks(in.data(), in.size(),
                                                         scheme, view, options);
        !st.ok())
      return Rejected(st);
  }
  if (!WriteFile(argv[7], out)) {
    std::fprintf(stderr, "ggml_quant_dump: cannot write %s\n", argv[7]);
    return 3;
  }
  return 0;
}
