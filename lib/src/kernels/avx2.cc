// Placeholder until the avx2 kernels land: the path reports itself absent.
#include "kernels/table.h"

namespace nibble::kernels {
const Table* Avx2Table() { return nullptr; }
}  // namespace nibble::kernels
