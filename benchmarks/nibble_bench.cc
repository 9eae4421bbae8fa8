// nibble-bench: quantize and dequantize throughput per scheme x input dtype x
// ISA path x thread count, next to a memcpy of the same bytes.
//
// Names: quantize/<scheme>/<dtype>/<isa>/threads:<n>    (no metrics)
//        quantize_metrics/<scheme>/<dtype>/<isa>/threads:<n> (fused metrics)
//        dequantize/<scheme>/<dtype>/<isa>/threads:<n>  (codes -> dtype)
//        memcpy/<dtype>/threads:<n>                     (the baseline)
// `bytes` is the floating-point matrix in <dtype> (read by quantize, written
// by dequantize, copied by memcpy), so bytes_per_second is directly
// comparable across a row of the table. <n> is the OpenMP thread count given
// to the library, not a Google Benchmark thread count; times are wall-clock.
//
// Extra flags (before or after the --benchmark_* flags):
//   --rows=N --cols=N   matrix shape (default 4096 x 11008)
#include <benchmark/benchmark.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "nibble/nibble.h"

namespace {

using nibble::DType;
using nibble::Isa;
using nibble::QuantScheme;

int64_t g_rows = 4096;
int64_t g_cols = 11008;

struct BenchScheme {
  const char* bench_name;   // in the benchmark name
  const char* nibble_name;  // for nibble::ParseScheme
};
constexpr BenchScheme kSchemes[] = {
    {"int8_channel", "int8"},
    {"int8_g32", "int8-g32"},
    {"int4_g32_sym", "int4-g32"},
    {"int4_g128_sym", "int4-g128"},
    {"int4_g128_asym", "int4-g128-asym"},
    {"q8_0", "q8_0"},
    {"q4_0", "q4_0"},
    {"q4_1", "q4_1"},  // GGML blocks
};
constexpr DType kDTypes[] = {DType::kF16, DType::kBF16, DType::kF32};

int64_t Elements() { return g_rows * g_cols; }
int64_t Bytes(DType d) {
  return Elements() * static_cast<int64_t>(nibble::DTypeSize(d));
}

// Seeded N(0, 0.02^2) values with a few 10x outlier columns, like LLM
// weights; the same for every run of the program.
const std::vector<float>& BaseValues() {
  static const std::vector<float> values = [] {
    std::vector<float> v(static_cast<size_t>(Elements()));
    uint64_t state = 0x5eed5eed12345678ull;
    auto next = [&state] {
      uint64_t z = (state += 0x9e3779b97f4a7c15ull);
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      return static_cast<double>((z ^ (z >> 31)) >> 11) * 0x1.0p-53;
    };
    for (size_t i = 0; i + 1 < v.size(); i += 2) {
      const double r = std::sqrt(-2.0 * std::log(1.0 - next()));
      const double t = 6.283185307179586 * next();
      v[i] = static_cast<float>(0.02 * r * std::cos(t));
      v[i + 1] = static_cast<float>(0.02 * r * std::sin(t));
    }
    if (v.size() % 2) v.back() = 0.01f;
    for (int64_t c = 7; c < g_cols; c += 1031)
      for (int64_t r = 0; r < g_rows; ++r)
        v[static_cast<size_t>(r * g_cols + c)] *= 10.0f;
    return v;
  }();
  return values;
}

const std::vector<uint8_t>& Input(DType dtype) {
  static std::map<DType, std::vector<uint8_t>> cache;
  auto it = cache.find(dtype);
  if (it != cache.end()) return it->second;
  const std::vector<float>& base = BaseValues();
  std::vector<uint8_t> bytes(static_cast<size_t>(Bytes(dtype)));
  if (dtype == DType::kF32) {
    std::memcpy(bytes.data(), base.data(), bytes.size());
  } else {
    auto* p = reinterpret_cast<uint16_t*>(bytes.data());
    for (size_t i = 0; i < base.size(); ++i)
      p[i] = dtype == DType::kF16 ? nibble::FloatToHalf(base[i])
                                  : nibble::FloatToBf16(base[i]);
  }
  return cache.emplace(dtype, std::move(bytes)).first->second;
}

nibble::ConstMatrixView InputView(DType dtype) {
  return nibble::ConstMatrixView{Input(dtype).data(), dtype, g_rows, g_cols,
                                 g_cols};
}

// Codes of the FP16 input for each scheme, made once, for dequantize.
const nibble::QuantizedBuffers* Quantized(const QuantScheme& scheme,
                                          std::string* error) {
  static std::map<std::string, std::unique_ptr<nibble::QuantizedBuffers>> cache;
  const std::string key = nibble::SchemeName(scheme);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second.get();
  auto q = std::make_unique<nibble::QuantizedBuffers>();
  nibble::Status s = q->Allocate(scheme, g_rows, g_cols);
  nibble::ExecOptions exec;
  exec.threads = omp_get_max_threads();
  if (s.ok()) s = nibble::Quantize(InputView(DType::kF16), scheme, q->view(),
                                   nullptr, exec);
  if (!s.ok()) {
    *error = s.ToString();
    return nullptr;
  }
  return cache.emplace(key, std::move(q)).first->second.get();
}

// Allocated and touched once, so no benchmark pays for page faults.
std::vector<uint8_t>& Scratch(DType dtype) {
  static std::map<DType, std::vector<uint8_t>> cache;
  auto it = cache.find(dtype);
  if (it == cache.end())
    it = cache.emplace(dtype, std::vector<uint8_t>(
                                  static_cast<size_t>(Bytes(dtype)), 1))
             .first;
  return it->second;
}

void SetRates(benchmark::State& state, DType dtype) {
  state.SetBytesProcessed(state.iterations() * Bytes(dtype));
  state.SetItemsProcessed(state.iterations() * Elements());
}

// memcpy in one contiguous slice per thread, cut on cache lines.
void CopySlices(uint8_t* dst, const uint8_t* src, size_t n, int threads) {
  if (threads <= 1) {
    std::memcpy(dst, src, n);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const size_t t = static_cast<size_t>(omp_get_thread_num());
    const size_t nt = static_cast<size_t>(omp_get_num_threads());
    const size_t chunk = ((n + nt - 1) / nt + 63) / 64 * 64;
    const size_t begin = std::min(n, t * chunk);
    const size_t end = std::min(n, begin + chunk);
    std::memcpy(dst + begin, src + begin, end - begin);
  }
}

void BM_Memcpy(benchmark::State& state, DType dtype, int threads) {
  const std::vector<uint8_t>& src = Input(dtype);
  std::vector<uint8_t>& dst = Scratch(dtype);
  // Untimed: the first parallel region of the process starts the threads.
  CopySlices(dst.data(), src.data(), src.size(), threads);
  for (auto _ : state) {
    CopySlices(dst.data(), src.data(), src.size(), threads);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  SetRates(state, dtype);
}

void BM_Quantize(benchmark::State& state, QuantScheme scheme, DType dtype,
                 Isa isa, int threads, bool metrics) {
  const nibble::ConstMatrixView in = InputView(dtype);
  nibble::QuantizedBuffers out;
  if (nibble::Status s = out.Allocate(scheme, g_rows, g_cols); !s.ok()) {
    state.SkipWithError(s.ToString().c_str());
    return;
  }
  nibble::ExecOptions exec;
  exec.threads = threads;
  exec.isa = isa;
  nibble::ErrorSums sums;
  for (auto _ : state) {
    const nibble::Status s = nibble::Quantize(in, scheme, out.view(),
                                              metrics ? &sums : nullptr, exec);
    if (!s.ok()) {
      state.SkipWithError(s.ToString().c_str());
      break;
    }
    benchmark::DoNotOptimize(out.codes.data());
    benchmark::ClobberMemory();
  }
  if (metrics) {
    state.counters["snr_db"] = nibble::Summarize(sums).snr_db;
  }
  SetRates(state, dtype);
}

void BM_Dequantize(benchmark::State& state, QuantScheme scheme, DType dtype,
                   Isa isa, int threads) {
  std::string error;
  const nibble::QuantizedBuffers* q = Quantized(scheme, &error);
  if (q == nullptr) {
    state.SkipWithError(error.c_str());
    return;
  }
  std::vector<uint8_t>& dst = Scratch(dtype);
  const nibble::MatrixView out{dst.data(), dtype, g_rows, g_cols, g_cols};
  nibble::ExecOptions exec;
  exec.threads = threads;
  exec.isa = isa;
  for (auto _ : state) {
    const nibble::Status s = nibble::Dequantize(q->view(), scheme, out, exec);
    if (!s.ok()) {
      state.SkipWithError(s.ToString().c_str());
      break;
    }
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  SetRates(state, dtype);
}

std::vector<int> ThreadCounts() {
  const int all = std::max(1, omp_get_max_threads());
  std::vector<int> counts = {1};
  if (all >= 2) counts.push_back(2);
  if (all > 2) counts.push_back(all);
  return counts;
}

void Configure(benchmark::internal::Benchmark* b) {
  b->UseRealTime()->Unit(benchmark::kMillisecond);
}

void RegisterAll() {
  const std::vector<int> threads = ThreadCounts();
  const std::vector<Isa> isas = nibble::SupportedIsas();
  auto suffix = [](DType d, Isa isa, int t) {
    return std::string("/") + nibble::DTypeName(d) + "/" + nibble::IsaName(isa) +
           "/threads:" + std::to_string(t);
  };
  for (DType d : kDTypes)
    for (int t : threads)
      Configure(benchmark::RegisterBenchmark(
          (std::string("memcpy/") + nibble::DTypeName(d) + "/threads:" +
           std::to_string(t)).c_str(),
          BM_Memcpy, d, t));
  struct Op {
    const char* name;
    int kind;  // 0 quantize, 1 quantize + metrics, 2 dequantize
  };
  for (const Op op : {Op{"quantize", 0}, Op{"quantize_metrics", 1},
                      Op{"dequantize", 2}}) {
    for (const BenchScheme& bs : kSchemes) {
      QuantScheme scheme;
      if (!nibble::ParseScheme(bs.nibble_name, &scheme).ok()) std::abort();
      scheme.scale_dtype = DType::kF16;
      for (DType d : kDTypes)
        for (Isa isa : isas)
          for (int t : threads) {
            const std::string name =
                std::string(op.name) + "/" + bs.bench_name + suffix(d, isa, t);
            if (op.kind == 2) {
              Configure(benchmark::RegisterBenchmark(
                  name.c_str(), BM_Dequantize, scheme, d, isa, t));
            } else {
              Configure(benchmark::RegisterBenchmark(
                  name.c_str(), BM_Quantize, scheme, d, isa, t, op.kind == 1));
            }
          }
    }
  }
}

// Removes --rows=N / --cols=N from argv; exits on a bad value.
void ParseOwnFlags(int* argc, char** argv) {
  int out = 1;
  for (int i = 1; i < *argc; ++i) {
    const char* arg = argv[i];
    int64_t* target = nullptr;
    const char* value = nullptr;
    if (std::strncmp(arg, "--rows=", 7) == 0) {
      target = &g_rows;
      value = arg + 7;
    } else if (std::strncmp(arg, "--cols=", 7) == 0) {
      target = &g_cols;
      value = arg + 7;
    }
    if (target == nullptr) {
      argv[out++] = argv[i];
      continue;
    }
    char* end = nullptr;
    const long long v = std::strtoll(value, &end, 10);
    if (end == value || *end != '\0' || v < 1 || v > (int64_t{1} << 20)) {
      std::fprintf(stderr, "nibble-bench: bad value in '%s' (1..1048576)\n",
                   arg);
      std::exit(1);
    }
    *target = v;
  }
  *argc = out;
  argv[out] = nullptr;
}

}  // namespace

int main(int argc, char** argv) {
  ParseOwnFlags(&argc, argv);
  if (g_cols % 128 != 0) {
    // Every group size above must divide a row (int4_g128 the largest).
    std::fprintf(stderr, "nibble-bench: --cols must be a multiple of 128\n");
    return 1;
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  std::string isas;
  for (Isa isa : nibble::SupportedIsas())
    isas += std::string(isas.empty() ? "" : " ") + nibble::IsaName(isa);
  benchmark::AddCustomContext("nibble_version", NIBBLE_VERSION_STRING);
  benchmark::AddCustomContext(
      "matrix", std::to_string(g_rows) + "x" + std::to_string(g_cols));
  benchmark::AddCustomContext("nibble_isas", isas);
  benchmark::AddCustomContext("cpu_features", nibble::CpuFeatureString());
  benchmark::AddCustomContext("omp_max_threads",
                              std::to_string(omp_get_max_threads()));
  RegisterAll();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
