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
}  // namespace internal

}  // namespace nibble

#endif  // NIBBLE_SRC_DISPATCH_H_
