// CPU detection (once) and the choice of kernel table.
#include <atomic>
#include <cstdlib>
#include <string>
#include <vector>

#include "kernels/table.h"
#include "nibble/isa.h"
#include "dispatch.h"

namespace nibble {
namespace {

struct CpuFeatures {
  bool avx2 = false;     // avx2 + fma + f16c
  bool avx512 = false;   // avx512f + bw + vl + dq
  bool avx512bf16 = false;
  std::string text;
};

const CpuFeatures& Features() {
  static const CpuFeatures features = [] {
    CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2");
    const bool fma = __builtin_cpu_supports("fma");
    // F16C straight from CPUID leaf 1 (ECX bit 29).
    unsigned eax = 1, ebx = 0, ecx = 0, edx = 0;
    __asm__("cpuid" : "+a"(eax), "=b"(ebx), "+c"(ecx), "=d"(edx));
    const bool f16c = (ecx >> 29) & 1u;
    const bool f512 = __builtin_cpu_supports("avx512f");
    const bool bw = __builtin_cpu_supports("avx512bw");
    const bool vl = __builtin_cpu_supports("avx512vl");
    const bool dq = __builtin_cpu_supports("avx512dq");
    const bool bf16 = __builtin_cpu_supports("avx512bf16");
    f.avx2 = avx2 && fma && f16c;
    f.avx512 = f.avx2 && f512 && bw && vl && dq;
    f.avx512bf16 = f.avx512 && bf16;
    const std::pair<const char*, bool> names[] = {
        {"avx2", avx2},       {"fma", fma},           {"f16c", f16c},
        {"avx512f", f512},       {"avx512bw", bw},       {"avx512vl", vl},
        {"avx512dq", dq},     {"avx512bf16", bf16}};
    for (const auto& [name, has] : names) {
      if (!has) continue;
      if (!f.text.empty()) f.text += ' ';
      f.text += name;
    }
#endif
    if (f.text.empty()) f.text = "(none of avx2/avx512)";
    return f;
  }();
  return features;
}

const kernels::Table* TableFor(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return kernels::ScalarTable();
    case Isa::kAvx2: return Features().avx2 ? kernels::Avx2Table() : nullptr;
    case Isa::kAvx512:
      return Features().avx512 ? kernels::Avx512Table() : nullptr;
    case Isa::kAuto: break;
  }
  return nullptr;
}

}  // namespace

const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::kAuto: return "auto";
    case Isa::kScalar: return "scalar";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
  }
  return "?";
}

bool ParseIsa(const std::string& name, Isa* isa) {
  for (Isa i : {Isa::kAuto, Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
    if (name == IsaName(i)) {
      *isa = i;
      return true;
    }
  }
  return false;
}

bool IsaSupported(Isa isa) {
  return isa == Isa::kAuto || TableFor(isa) != nullptr;
}

Isa BestIsa() {
  if (TableFor(Isa::kAvx512)) return Isa::kAvx512;
  if (TableFor(Isa::kAvx2)) return Isa::kAvx2;
  return Isa::kScalar;
}

std::vector<Isa> SupportedIsas() {
  std::vector<Isa> out;
  for (Isa i : {Isa::kScalar, Isa::kAvx2, Isa::kAvx512})
    if (TableFor(i)) out.push_back(i);
  return out;
}

std::string CpuFeatureString() { return Features().text; }

namespace {
std::atomic<bool> g_avx512bf16_enabled{true};
}  // namespace

bool CpuHasAvx512Bf16() {
  return Features().avx512bf16 &&
         g_avx512bf16_enabled.load(std::memory_order_relaxed);
}

Status ResolveIsa(Isa requested, Isa* resolved) {
  Isa isa = requested;
  const char* source = "requested";
  if (isa == Isa::kAuto) {
    const char* env = std::getenv("NIBBLE_ISA");
    if (env == nullptr || *env == '\0' || std::string(env) == "auto") {
      *resolved = BestIsa();
      return Status::Ok();
    }
    if (!ParseIsa(env, &isa)) {
      return Status(StatusCode::kInvalidArgument,
                    std::string("NIBBLE_ISA=") + env +
                        " is not one of scalar, avx2, avx512, auto");
    }
    source = "NIBBLE_ISA";
  }
  if (!IsaSupported(isa)) {
    const bool cpu_has = isa == Isa::kAvx2 ? Features().avx2 : Features().avx512;
    return Status(StatusCode::kUnsupported,
                  std::string(source) + " ISA path '" + IsaName(isa) + "' " +
                      (cpu_has ? "was not built into this binary"
                               : "is not supported by this CPU") +
                      " (CPU features: " + CpuFeatureString() + ")");
  }
  *resolved = isa;
  return Status::Ok();
}

namespace internal {
const kernels::Table* KernelTable(Isa resolved) { return TableFor(resolved); }
bool SetAvx512Bf16Enabled(bool enabled) {
  return g_avx512bf16_enabled.exchange(enabled);
}
}  // namespace internal

}  // namespace nibble
