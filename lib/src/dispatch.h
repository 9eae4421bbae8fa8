// Internal: from a resolved ISA to its kernel table.
#ifndef NIBBLE_SRC_DISPATCH_H_
#define NIBBLE_SRC_DISPATCH_H_

#include "kernels/table.h"
#include "nibble/isa.h"

namespace nibble {

bool CpuHasAvx512Bf16();

namespace internal {
// Non-null for every ISA accepted by ResolveIsa.
const kernels::Table* KernelTable(Isa resolved);
// Test hook: when false, CpuHasAvx512Bf16() answers false even on a CPU with
// AVX512_BF16, so the AVX-512 path's integer BF16 conversion (the one used on
// CPUs without the instruction) can be tested here. Returns the old value.
bool SetAvx512Bf16Enabled(bool enabled);
}  // namespace internal

}  // namespace nibble

#endif  // NIBBLE_SRC_DISPATCH_H_
