// Synthetic weight matrices for the `quantize` subcommand (and anything else
// that needs a reproducible, LLM-shaped input without a checkpoint).
#ifndef NIBBLE_TOOLS_SYNTH_H_
#define NIBBLE_TOOLS_SYNTH_H_

#include <cstdint>
#include <string>
#include <vector>

#include "nibble/types.h"

namespace nibble::tool {

enum class Distribution {
  // i.i.d. N(0, std^2).
  kGaussian,
  // Shaped like a transformer projection: Student-t (nu = 5) entries scaled to
  // standard deviation `std`, so the body is close to Gaussian and the tails
  // are heavy, plus about one column in 1024 (at least one) whose entries are
  // 10x larger, like the outlier input features of real LLM weights.
  kHeavy,
};

const char* DistributionName(Distribution d);
bool ParseDistribution(const std::string& name, Distribution* d);

struct SynthOptions {
  int64_t rows = 4096;
  int64_t cols = 11008;
  DType dtype = DType::kF16;
  uint64_t seed = 42;
  Distribution distribution = Distribution::kHeavy;
  double std = 0.02;
  int threads = 1;  // OpenMP threads; the values do not depend on it
};

// Fills `out` with rows * cols elements of opts.dtype, row-major, dense
// (row_stride == cols). Every row draws from its own generator seeded from
// (seed, row), so the bytes depend only on the options, never on the thread
// count. Values are computed in double, rounded to float, then converted to
// the element type with nibble's round-to-nearest-even conversions (values
// beyond the F16 range become +-Inf, which Quantize rejects).
// Throws std::bad_alloc when the buffer cannot be allocated.
void GenerateMatrix(const SynthOptions& opts, std::vector<uint8_t>* out);

}  // namespace nibble::tool

#endif  // NIBBLE_TOOLS_SYNTH_H_
