// The same bytes and metric bits at every thread count, on every path.
//
// A matrix of 300 rows is split by the driver into blocks of ~16K elements
// (10 or 19 blocks here), so 2, 3, 7 and 8 threads all divide the work
// unevenly. Results at each thread count are compared with one thread on the
// same path and with the scalar path at one thread.
#include <gtest/gtest.h>

#include <string>
#include <tuple>
#include <vector>

#include "nibble/nibble.h"
#include "test_util.h"

namespace nibble::test {
namespace {

constexpr int kThreadCounts[] = {1, 2, 3, 7, 8};
constexpr int64_t kRows = 300;

using Param = std::tuple<Isa, int>;  // path, index in EquivalenceSchemes()

std::string ParamName(const ::testing::TestParamInfo<Param>& info) {
  return std::string(IsaName(std::get<0>(info.param))) + "_" +
         Identifier(SchemeName(EquivalenceSchemes()[static_cast<size_t>(
             std::get<1>(info.param))]));
}

class ThreadsTest : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    if (!IsaSupported(isa())) GTEST_SKIP() << IsaSkipMessage(isa());
  }
  Isa isa() const { return std::get<0>(GetParam()); }
  QuantScheme scheme() const {
    return EquivalenceSchemes()[static_cast<size_t>(std::get<1>(GetParam()))];
  }
};

TEST_P(ThreadsTest, SameBytesAndMetricsAtEveryThreadCount) {
  NIBBLE_TRACE_SEED();
  Rng rng = MakeRng();
  QuantScheme s = scheme();
  // Whole-row INT4 gets an odd width (pad nibble); every width crosses the
  // 256-column metric flush.
  const int64_t cols = s.group_size == 0 ? (s.bits == 4 ? 999 : 1000) : 512;
  // Each input dtype with a different scale dtype, to keep the run short.
  const std::pair<DType, DType> dtypes[] = {{DType::kF32, DType::kF16},
                                            {DType::kF16, DType::kBF16},
                                            {DType::kBF16, DType::kF32}};
  for (const auto& [in_dtype, scale_dtype] : dtypes) {
    if (!IsGgml(s)) s.scale_dtype = scale_dtype;  // GGML: F16 only
    const InputMatrix in(Generate(DataKind::kGaussian, kRows, cols, s, rng),
                         in_dtype, kRows, cols, Layout::kPadded);
    const QuantResult scalar = RunQuantize(in, s, Layout::kPadded, 0x11, true,
                                           ExecOptions{1, Isa::kScalar});
    ASSERT_TRUE(scalar.status.ok()) << scalar.status.ToString();
    const DequantInput dq(scalar, Layout::kPadded);
    const DequantResult dscalar =
        RunDequantize(dq.view(), s, kRows, cols, DType::kBF16, Layout::kPadded,
                      0x11, ExecOptions{1, Isa::kScalar});
    ASSERT_TRUE(dscalar.status.ok()) << dscalar.status.ToString();
    // Without metrics the kernels are separate instantiations: check those
    // bytes too.
    const QuantResult scalar_plain = RunQuantize(
        in, s, Layout::kPadded, 0x11, false, ExecOptions{1, Isa::kScalar});
    for (int threads : kThreadCounts) {
      SCOPED_TRACE(Describe(s, in_dtype, kRows, cols, Layout::kPadded,
                            DataKind::kGaussian, true) +
                   " path=" + IsaName(isa()) +
                   " threads=" + std::to_string(threads));
      const ExecOptions options{threads, isa()};
      const QuantResult got =
          RunQuantize(in, s, Layout::kPadded, 0xee, true, options);
      ASSERT_TRUE(SameQuantized(scalar, got));
      const QuantResult plain =
          RunQuantize(in, s, Layout::kPadded, 0x77, false, options);
      ASSERT_TRUE(SameQuantized(scalar_plain, plain));
      const DequantResult dgot =
          RunDequantize(dq.view(), s, kRows, cols, DType::kBF16,
                        Layout::kPadded, 0xee, options);
      ASSERT_TRUE(SameDequantized(dscalar, dgot));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllPaths, ThreadsTest,
    ::testing::Combine(
        ::testing::ValuesIn(ConcreteIsas()),
        ::testing::Range(0, static_cast<int>(EquivalenceSchemes().size()))),
    ParamName);

// The library takes its thread count from the caller only: a call with more
// threads than rows, or than row blocks, still gives the same result.
TEST(ThreadsEdgeTest, MoreThreadsThanRows) {
  NIBBLE_TRACE_SEED();
  Rng rng = MakeRng();
  const QuantScheme s{4, true, 32, DType::kF16};
  for (int64_t rows : {1, 2, 5}) {
    const InputMatrix in(Generate(DataKind::kGaussian, rows, 64, s, rng),
                         DType::kF32, rows, 64, Layout::kDense);
    const QuantResult ref = RunQuantize(in, s, Layout::kDense, 1, true,
                                        ExecOptions{1, Isa::kScalar});
    for (Isa isa : SupportedIsas()) {
      SCOPED_TRACE(std::string(IsaName(isa)) + " rows=" + std::to_string(rows));
      const QuantResult got =
          RunQuantize(in, s, Layout::kDense, 2, true, ExecOptions{8, isa});
      ASSERT_TRUE(SameQuantized(ref, got));
    }
  }
}

// Zero rows: nothing to do, on every path and thread count; metrics count 0.
TEST(ThreadsEdgeTest, ZeroRows) {
  for (const QuantScheme& s : EquivalenceSchemes()) {
    const InputMatrix in({}, DType::kF16, 0, 256, Layout::kDense);
    for (Isa isa : SupportedIsas()) {
      for (int threads : {1, 8}) {
        SCOPED_TRACE(SchemeName(s) + " " + IsaName(isa) +
                     " threads=" + std::to_string(threads));
        const QuantResult q = RunQuantize(in, s, Layout::kPadded, 3, true,
                                          ExecOptions{threads, isa});
        ASSERT_TRUE(q.status.ok()) << q.status.ToString();
        EXPECT_EQ(q.sums.count, 0);
        EXPECT_EQ(q.sums.sum_sq_error, 0.0);
        ASSERT_TRUE(SameQuantized(q, q));  // canaries
        const DequantResult d =
            RunDequantize(q.const_view(), s, 0, 256, DType::kF32,
                          Layout::kPadded, 3, ExecOptions{threads, isa});
        ASSERT_TRUE(d.status.ok()) << d.status.ToString();
        ASSERT_TRUE(SameDequantized(d, d));
      }
    }
  }
}

}  // namespace
}  // namespace nibble::test
