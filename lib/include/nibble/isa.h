// Instruction-set paths and run-time dispatch.
//
// Every path produces byte-identical codes, scales, zero points and metrics;
// the scalar path is the specification the others are tested against. The
// best path the CPU supports is chosen once, at first use; the environment
// variable NIBBLE_ISA=scalar|avx2|avx512 overrides that choice.
#ifndef NIBBLE_ISA_H_
#define NIBBLE_ISA_H_

#include <string>
#include <vector>

#include "nibble/status.h"

namespace nibble {

enum class Isa : int {
  kAuto = 0,  // NIBBLE_ISA if set, else the best path this CPU supports
  kScalar,    // portable C++, the reference
  kAvx2,      // AVX2 + FMA + F16C
  kAvx512,    // AVX-512 F/BW/VL/DQ (+BF16 conversions when present)
};

// "auto", "scalar", "avx2", "avx512".
const char* IsaName(Isa isa);
// Parses the names above; false when unknown.
bool ParseIsa(const std::string& name, Isa* isa);
// True when this binary has the path and the CPU can run it (kAuto: true).
bool IsaSupported(Isa isa);
// The best concrete path the CPU supports.
Isa BestIsa();
// Every concrete path this CPU supports, scalar first.
std::vector<Isa> SupportedIsas();
// Resolves kAuto through NIBBLE_ISA and the CPU. Fails with kUnsupported when
// the request (or NIBBLE_ISA) names a path the CPU lacks, and with
// kInvalidArgument when NIBBLE_ISA is not a path name.
Status ResolveIsa(Isa requested, Isa* resolved);
// A one-line description of the CPU features seen ("avx2 fma f16c avx512f
// avx512bw avx512vl avx512dq avx512bf16").
std::string CpuFeatureString();

}  // namespace nibble

#endif  // NIBBLE_ISA_H_
