// Placeholder until the avx512 kernels land: the path reports itself absent.
#include "kernels/table.h"

namespace nibble::kernels {
const Table* Avx512Table() { return nullptr; }
}  // namespace nibble::kernels
