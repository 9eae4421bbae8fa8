// libnibble: per-channel INT8 and group-wise INT4 quantization kernels.
#ifndef NIBBLE_NIBBLE_H_
#define NIBBLE_NIBBLE_H_

#include "nibble/isa.h"
#include "nibble/metrics.h"
#include "nibble/quantize.h"
#include "nibble/scheme.h"
#include "nibble/status.h"
#include "nibble/types.h"
#include "nibble/version.h"

#endif  // NIBBLE_NIBBLE_H_
