#include "synth.h"

#include <cmath>
#include <cstring>
#include <vector>

namespace nibble::tool {
namespace {

uint64_t SplitMix64(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// xoshiro256**: small, fast, and the same sequence on every platform (the
// standard <random> distributions are not specified bit for bit).
class Rng {
 public:
  Rng(uint64_t seed, uint64_t stream) {
    uint64_t sm = seed ^ (0x6a09e667f3bcc909ull * (stream + 1));
    for (uint64_t& w : s_) w = SplitMix64(&sm);
  }
  uint64_t Next() {
    const uint64_t result = Rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = Rotl(s_[3], 45);
    return result;
  }
  // Uniform on [-1, 1) in steps of 2^-52; the polar methods reject the
  // points they cannot use.
  double Symmetric() {
    return static_cast<double>(Next() >> 11) * 0x1.0p-52 - 1.0;
  }
  // Uniform integer in [0, n).
  uint64_t Below(uint64_t n) { return Next() % n; }

 private:
  static uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

// Marsaglia's polar method: two independent N(0, 1) per accepted pair.
class Gaussian {
 public:
  double operator()(Rng& rng) {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    double u, v, s;
    do {
      u = rng.Symmetric();
      v = rng.Symmetric();
      s = u * u + v * v;
    } while (s >= 1.0 || s == 0.0);
    const double f = std::sqrt(-2.0 * std::log(s) / s);
    spare_ = v * f;
    has_spare_ = true;
    return u * f;
  }

 private:
  double spare_ = 0;
  bool has_spare_ = false;
};

// Bailey's polar method for Student's t with nu degrees of freedom.
double StudentT(Rng& rng, double nu) {
  double u, v, w;
  do {
    u = rng.Symmetric();
    v = rng.Symmetric();
    w = u * u + v * v;
  } while (w > 1.0 || w == 0.0);
  return u * std::sqrt(nu * (std::pow(w, -2.0 / nu) - 1.0) / w);
}

constexpr double kNu = 5.0;
constexpr double kOutlierScale = 10.0;

void StoreRow(const std::vector<float>& values, DType dtype, void* dst) {
  const size_t n = values.size();
  switch (dtype) {
    case DType::kF32:
      std::memcpy(dst, values.data(), n * sizeof(float));
      break;
    case DType::kF16: {
      auto* p = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < n; ++i) p[i] = FloatToHalf(values[i]);
      break;
    }
    case DType::kBF16: {
      auto* p = static_cast<uint16_t*>(dst);
      for (size_t i = 0; i < n; ++i) p[i] = FloatToBf16(values[i]);
      break;
    }
  }
}

}  // namespace

const char* DistributionName(Distribution d) {
  return d == Distribution::kGaussian ? "gaussian" : "heavy";
}

bool ParseDistribution(const std::string& name, Distribution* d) {
  if (name == "gaussian") {
    *d = Distribution::kGaussian;
    return true;
  }
  if (name == "heavy") {
    *d = Distribution::kHeavy;
    return true;
  }
  return false;
}

void GenerateMatrix(const SynthOptions& o, std::vector<uint8_t>* out) {
  const size_t esize = DTypeSize(o.dtype);
  const size_t row_bytes = static_cast<size_t>(o.cols) * esize;
  out->assign(static_cast<size_t>(o.rows) * row_bytes, 0);

  // Per-column multipliers: the outlier input features.
  std::vector<double> column_scale(static_cast<size_t>(o.cols), o.std);
  if (o.distribution == Distribution::kHeavy && o.cols > 0) {
    const double t_std = std::sqrt(kNu / (kNu - 2.0));
    for (double& c : column_scale) c = o.std / t_std;
    const int64_t outliers = o.cols / 1024 > 0 ? o.cols / 1024 : 1;
    Rng rng(o.seed, ~uint64_t{0});
    for (int64_t k = 0; k < outliers; ++k) {
      size_t col;
      do {
        col = static_cast<size_t>(rng.Below(static_cast<uint64_t>(o.cols)));
      } while (column_scale[col] != o.std / t_std);
      column_scale[col] *= kOutlierScale;
    }
  }

  const int64_t rows = o.rows;
  uint8_t* base = out->data();
#pragma omp parallel num_threads(o.threads > 0 ? o.threads : 1)
  {
    std::vector<float> values(static_cast<size_t>(o.cols));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      Rng rng(o.seed, static_cast<uint64_t>(r));
      if (o.distribution == Distribution::kGaussian) {
        Gaussian gauss;
        for (size_t c = 0; c < values.size(); ++c)
          values[c] = static_cast<float>(column_scale[c] * gauss(rng));
      } else {
        for (size_t c = 0; c < values.size(); ++c)
          values[c] = static_cast<float>(column_scale[c] * StudentT(rng, kNu));
      }
      StoreRow(values, o.dtype, base + static_cast<size_t>(r) * row_bytes);
    }
  }
}

}  // namespace nibble::tool
