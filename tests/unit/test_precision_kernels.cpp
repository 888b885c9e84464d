// tests/unit/test_precision_kernels.cpp — bf16/fp16 conversions against ATen, stochastic rounding,
// bf16+remainder split/merge, mixed-precision AdamW/SGD/Lion against Storage::F32, torch::optim and an ATen Lion.
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "tessera/kernels/optim.h"
#include "tessera/kernels/update.h"
#include "tessera/kernels/precision.h"

#include "lion_reference.hpp"
#include "optimizer_cases.hpp"

namespace k = tessera::kernels;
using tessera::test::adamw_args;
using tessera::test::AdamWCase;
using tessera::test::sgd_args;
using tessera::test::SgdCase;

namespace {

constexpr int64_t kN = 1003;  // not a multiple of 4, 8 or 16: exercises every vector tail

uint32_t bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}
float from_bits(uint32_t u) {
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}
std::string hex(uint32_t u) {
  std::ostringstream o;
  o << "0x" << std::hex << u;
  return o.str();
}

std::vector<float> to_vec(const at::Tensor& t) {
  at::Tensor c = t.detach().to(at::kFloat).contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}
at::Tensor to_tensor(const std::vector<float>& v) {
  return at::from_blob(const_cast<float*>(v.data()), {static_cast<int64_t>(v.size())}, at::kFloat).clone();
}

// ATen's conversions, as bit patterns.
std::vector<uint16_t> aten_to_bf16(const std::vector<float>& v) {
  at::Tensor t = to_tensor(v).to(at::kBFloat16).contiguous();
  const at::BFloat16* p = t.data_ptr<at::BFloat16>();
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = p[i].x;
  return out;
}
std::vector<uint16_t> aten_to_f16(const std::vector<float>& v) {
  at::Tensor t = to_tensor(v).to(at::kHalf).contiguous();
  const at::Half* p = t.data_ptr<at::Half>();
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = p[i].x;
  return out;
}
std::vector<float> aten_widen(const std::vector<uint16_t>& h, at::ScalarType type) {
  at::Tensor t = at::empty({static_cast<int64_t>(h.size())}, type);
  std::memcpy(t.data_ptr(), h.data(), h.size() * sizeof(uint16_t));
  return to_vec(t);
}

std::vector<float> widen_bf16(const std::vector<uint16_t>& h) {
  std::vector<float> out(h.size());
  k::convert_bf16_to_f32(h.data(), out.data(), static_cast<int64_t>(h.size()));
  return out;
}
std::vector<float> widen_f16(const std::vector<uint16_t>& h) {
  std::vector<float> out(h.size());
  k::convert_f16_to_f32(h.data(), out.data(), static_cast<int64_t>(h.size()));
  return out;
}
std::vector<uint16_t> narrow_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  k::convert_f32_to_bf16(v.data(), out.data(), static_cast<int64_t>(v.size()));
  return out;
}
std::vector<uint16_t> narrow_f16(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  k::convert_f32_to_f16(v.data(), out.data(), static_cast<int64_t>(v.size()));
  return out;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Edge fp32 values for every conversion test (NaNs are added separately where wanted).
std::vector<float> edge_values() {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> v = {0.0f, -0.0f, inf, -inf, 1.0f, -1.0f, 0.5f, 2.0f, 3.0f, 65504.0f, -65504.0f,
                          65519.99f, 65520.0f, -65520.0f, 65536.0f, 1e5f, 1e-8f, 6.1035156e-5f /*2^-14*/,
                          5.9604645e-8f /*2^-24*/, 2.9802322e-8f /*2^-25*/, 2.9802326e-8f, 8.9406967e-8f,
                          std::numeric_limits<float>::max(), -std::numeric_limits<float>::max(),
                          std::numeric_limits<float>::min(), -std::numeric_limits<float>::min(),
                          std::numeric_limits<float>::denorm_min(), -std::numeric_limits<float>::denorm_min(),
                          3.3895314e38f /*largest finite bf16*/, 3.3961776e38f /*its midpoint: RNE -> Inf*/,
                          0.1f, -0.1f, 1.0f / 3.0f, 1e30f, -1e-30f, 1e-40f, -1e-45f};
  // Every interesting low-half pattern (bf16 ties, fp16 ties and their neighbours) for several
  // upper halves with even and odd last bits, in normal, subnormal and near-max ranges.
  const uint32_t uppers[] = {0x3F80, 0x3F81, 0x0000, 0x0001, 0x0080, 0x007F, 0x7F7E, 0x7F7F,
                             0x4700, 0x477F, 0x3380, 0x3381, 0x3300, 0x38FF, 0xBF80, 0xBF81, 0x8000, 0xFF7F};
  const uint32_t lows[] = {0x0000, 0x0001, 0x0FFF, 0x1000, 0x1001, 0x2000, 0x3000, 0x7FFF, 0x8000,
                           0x8001, 0x9000, 0xA000, 0xE000, 0xEFFF, 0xF000, 0xFFFF};
  for (uint32_t hi : uppers)
    for (uint32_t lo : lows) v.push_back(from_bits((hi << 16) | lo));
  // fp16 ties in the normal and subnormal ranges: x = (k + 0.5) ulp.
  for (int e = -24; e <= 15; ++e)
    for (float m : {1.0f, 1.5f, 1.25f, 1.0009765625f, 1.00146484375f, 1.99951171875f, 1.999755859375f})
      for (float s : {1.0f, -1.0f}) v.push_back(s * std::ldexp(m, e));
  return v;
}

// Random fp32 bit patterns (NaNs replaced by a randn-like value) plus ordinary values.
std::vector<float> random_values(size_t n, uint64_t seed, bool allow_nan) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> v;
  v.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    float x;
    if (i % 2 == 0) {
      x = from_bits(static_cast<uint32_t>(rng()));
      if (std::isnan(x) && !allow_nan) x = normal(rng);
    } else {
      x = normal(rng) * std::ldexp(1.0f, static_cast<int>(rng() % 60) - 30);
    }
    v.push_back(x);
  }
  return v;
}

// Worst |a-b| / max(1,|b|) with b the reference; NaN on one side only counts as infinite.
double worst_rel(const std::vector<float>& got, const std::vector<float>& want, int64_t* where = nullptr) {
  double worst = 0.0;
  EXPECT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size() && i < want.size(); ++i) {
    const double a = got[i], b = want[i];
    double rel = std::abs(a - b) / std::max(1.0, std::abs(b));
    if (std::isnan(a) != std::isnan(b)) rel = std::numeric_limits<double>::infinity();
    if (rel > worst) {
      worst = rel;
      if (where) *where = static_cast<int64_t>(i);
    }
  }
  return worst;
}

// The tie that split_f32_to_bf16_remainder must round away from zero where RNE rounds down.
bool is_even_tie(float x) {
  const uint32_t u = bits(x);
  return (u & 0xFFFFu) == 0x8000u && ((u >> 16) & 1u) == 0 && !std::isnan(x);
}

// The master backends' compute-copy rounding (f32_to_bf16_ties_away), from ATen's RNE: one ulp
// further from zero exactly on the even ties.
std::vector<uint16_t> aten_to_bf16_ties_away(const std::vector<float>& x);

}  // namespace

// ---- conversions ---------------------------------------------------------------------------

TEST(PrecisionKernels, Bf16FromF32MatchesATen) {
  std::vector<float> v = edge_values();
  const std::vector<float> r = random_values(1 << 20, 1, /*allow_nan=*/false);
  v.insert(v.end(), r.begin(), r.end());
  const std::vector<uint16_t> want = aten_to_bf16(v);
  const std::vector<uint16_t> got = narrow_bf16(v);
  int64_t bad = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    if (got[i] != want[i] && ++bad <= 10)
      ADD_FAILURE() << "f32 " << hex(bits(v[i])) << ": kernel " << hex(got[i]) << ", ATen " << hex(want[i]);
    if (i < 4096) ASSERT_EQ(k::f32_to_bf16(v[i]), got[i]) << "scalar and bulk differ at " << i;
  }
  EXPECT_EQ(bad, 0);
  // Spot checks of the rounding rule itself.
  EXPECT_EQ(k::f32_to_bf16(from_bits(0x3F808000)), 0x3F80);  // tie, even stays
  EXPECT_EQ(k::f32_to_bf16(from_bits(0x3F818000)), 0x3F82);  // tie, odd goes up
  EXPECT_EQ(k::f32_to_bf16(from_bits(0x3F808001)), 0x3F81);
  EXPECT_EQ(k::f32_to_bf16(from_bits(0x7F7FFFFF)), 0x7F80);  // overflow to Inf
  EXPECT_EQ(k::f32_to_bf16(-0.0f), 0x8000);
  EXPECT_EQ(k::f32_to_bf16(-std::numeric_limits<float>::infinity()), 0xFF80);
}

TEST(PrecisionKernels, Bf16NaNStaysNaN) {
  for (uint32_t u : {0x7FC00000u, 0x7F800001u, 0x7FFFFFFFu, 0xFFC00000u, 0xFF800001u, 0x7F80FFFFu, 0xFFFFFFFFu}) {
    const float x = from_bits(u);
    ASSERT_TRUE(std::isnan(x));
    const uint16_t h = k::f32_to_bf16(x);
    EXPECT_TRUE(std::isnan(k::bf16_to_f32(h))) << hex(u) << " -> " << hex(h);
    EXPECT_EQ(h >> 15, u >> 31) << "sign of " << hex(u);
    EXPECT_TRUE(std::isnan(k::bf16_to_f32(aten_to_bf16({x})[0])));
  }
}

TEST(PrecisionKernels, Bf16ToF32IsExactForEveryPattern) {
  std::vector<uint16_t> all(65536);
  for (uint32_t i = 0; i < 65536; ++i) all[i] = static_cast<uint16_t>(i);
  const std::vector<float> got = widen_bf16(all), want = aten_widen(all, at::kBFloat16);
  for (uint32_t i = 0; i < 65536; ++i) {
    ASSERT_EQ(bits(got[i]), i << 16) << hex(i);
    ASSERT_EQ(bits(k::bf16_to_f32(static_cast<uint16_t>(i))), i << 16);
    if (std::isnan(want[i]))
      ASSERT_TRUE(std::isnan(got[i])) << hex(i);
    else
      ASSERT_EQ(bits(got[i]), bits(want[i])) << hex(i);
  }
}

TEST(PrecisionKernels, F16FromF32MatchesATen) {
  std::vector<float> v = edge_values();
  const std::vector<float> r = random_values(1 << 20, 2, /*allow_nan=*/false);
  v.insert(v.end(), r.begin(), r.end());
  // Dense coverage of the fp16 range, subnormals included.
  std::mt19937_64 rng(3);
  for (int i = 0; i < (1 << 18); ++i) {
    const float mag = std::ldexp(static_cast<float>(rng() % (1u << 24)) / (1u << 24), static_cast<int>(rng() % 45) - 28);
    v.push_back(i % 2 ? mag : -mag);
  }
  const std::vector<uint16_t> want = aten_to_f16(v);
  const std::vector<uint16_t> got = narrow_f16(v);
  int64_t bad = 0;
  for (size_t i = 0; i < v.size(); ++i) {
    if (got[i] != want[i] && ++bad <= 10)
      ADD_FAILURE() << "f32 " << hex(bits(v[i])) << " (" << v[i] << "): kernel " << hex(got[i]) << ", ATen "
                    << hex(want[i]);
    if (i < 4096) ASSERT_EQ(k::f32_to_f16(v[i]), got[i]) << "scalar and bulk differ at " << i;
  }
  EXPECT_EQ(bad, 0);
  // The rules, spelled out.
  EXPECT_EQ(k::f32_to_f16(65504.0f), 0x7BFF);
  EXPECT_EQ(k::f32_to_f16(65519.99f), 0x7BFF);
  EXPECT_EQ(k::f32_to_f16(65520.0f), 0x7C00);  // the midpoint rounds (to even) to Inf
  EXPECT_EQ(k::f32_to_f16(-1e9f), 0xFC00);
  EXPECT_EQ(k::f32_to_f16(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(k::f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);  // tie with 0: to even
  EXPECT_EQ(k::f32_to_f16(std::ldexp(1.5f, -24)), 0x0002);  // 1.5 ulp: tie, to even (2)
  EXPECT_EQ(k::f32_to_f16(std::ldexp(2.5f, -24)), 0x0002);  // 2.5 ulp: tie, to even (2)
  EXPECT_EQ(k::f32_to_f16(std::ldexp(1.0f, -14) - std::ldexp(1.0f, -26)), 0x0400);  // rounds up to min normal
  EXPECT_EQ(k::f32_to_f16(-0.0f), 0x8000);
  EXPECT_EQ(k::f32_to_f16(std::numeric_limits<float>::infinity()), 0x7C00);
}

TEST(PrecisionKernels, F16NaNStaysNaN) {
  for (uint32_t u : {0x7FC00000u, 0x7F800001u, 0x7FFFFFFFu, 0xFFC00000u, 0xFF800001u}) {
    const uint16_t h = k::f32_to_f16(from_bits(u));
    EXPECT_TRUE(std::isnan(k::f16_to_f32(h))) << hex(u) << " -> " << hex(h);
    EXPECT_EQ(h >> 15, u >> 31) << "sign of " << hex(u);
  }
}

TEST(PrecisionKernels, F16ToF32IsExactForEveryPattern) {
  std::vector<uint16_t> all(65536);
  for (uint32_t i = 0; i < 65536; ++i) all[i] = static_cast<uint16_t>(i);
  const std::vector<float> got = widen_f16(all), want = aten_widen(all, at::kHalf);
  for (uint32_t i = 0; i < 65536; ++i) {
    ASSERT_EQ(bits(k::f16_to_f32(static_cast<uint16_t>(i))), bits(got[i]));
    if (std::isnan(want[i])) {
      ASSERT_TRUE(std::isnan(got[i])) << hex(i);
      continue;
    }
    ASSERT_EQ(bits(got[i]), bits(want[i])) << hex(i);
    // And back: every non-NaN half survives the round trip.
    ASSERT_EQ(k::f32_to_f16(got[i]), i) << hex(i);
  }
  EXPECT_EQ(k::f16_to_f32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(k::f16_to_f32(0x03FF), std::ldexp(1023.0f, -24));
  EXPECT_EQ(k::f16_to_f32(0x7BFF), 65504.0f);
  EXPECT_EQ(k::f16_to_f32(0xFC00), -std::numeric_limits<float>::infinity());
}

// ---- stochastic rounding -------------------------------------------------------------------

TEST(PrecisionKernels, StochasticRoundingGivesANeighbour) {
  std::vector<float> v = edge_values();
  const std::vector<float> r = random_values(1 << 16, 4, /*allow_nan=*/false);
  v.insert(v.end(), r.begin(), r.end());
  for (size_t i = 0; i < v.size(); ++i) {
    const uint32_t u = bits(v[i]);
    const uint32_t toward_zero = u >> 16, away = toward_zero + 1;
    for (uint64_t c = 0; c < 8; ++c) {
      const uint16_t h = k::f32_to_bf16_stochastic(v[i], 77, i * 8 + c);
      if ((u & 0xFFFFu) == 0)
        ASSERT_EQ(h, toward_zero) << "a bf16 value must stay put: " << hex(u);
      else
        ASSERT_TRUE(h == toward_zero || h == away) << hex(u) << " -> " << hex(h);
    }
  }
  const float inf = std::numeric_limits<float>::infinity();
  for (uint64_t c = 0; c < 1000; ++c) {
    ASSERT_EQ(k::f32_to_bf16_stochastic(inf, 5, c), 0x7F80);
    ASSERT_EQ(k::f32_to_bf16_stochastic(-inf, 5, c), 0xFF80);
    ASSERT_EQ(k::f32_to_bf16_stochastic(0.0f, 5, c), 0x0000);
    ASSERT_EQ(k::f32_to_bf16_stochastic(-0.0f, 5, c), 0x8000);
    for (uint32_t nan : {0x7FC00000u, 0x7F800001u, 0xFF80FFFFu})
      ASSERT_TRUE(std::isnan(k::bf16_to_f32(k::f32_to_bf16_stochastic(from_bits(nan), 5, c)))) << hex(nan);
  }
}

TEST(PrecisionKernels, StochasticRoundingIsUnbiased) {
  constexpr int kCount = 200000;
  // Fractions of a bf16 ulp from tiny to nearly one, positive and negative, normal and subnormal.
  const float xs[] = {from_bits(0x3F800000u + 0x4CCD),  // 1 + 0.3 ulp
                      from_bits(0x3F800000u + 0x0100),  // 1 + 1/256 ulp
                      from_bits(0xBF8A0000u + 0xF000),  // -(1.08 + 0.94 ulp)
                      0.1f, -3.7e-3f, 12345.678f, 1e-39f /* subnormal */, -2.5e-42f,
                      from_bits(0x3F7F0000u + 0x8000) /* tie just below 1 */};
  for (float x : xs) {
    const uint32_t u = bits(x);
    const double lo = k::bf16_to_f32(static_cast<uint16_t>(u >> 16));
    const double hi = k::bf16_to_f32(static_cast<uint16_t>((u >> 16) + 1));
    const double q = (u & 0xFFFFu) / 65536.0;  // probability of rounding away from zero
    std::vector<float> src(kCount, x);
    std::vector<uint16_t> dst(kCount);
    k::convert_f32_to_bf16_stochastic(src.data(), dst.data(), kCount, 2024, 1000000);
    double sum = 0.0;
    int64_t up = 0;
    for (int i = 0; i < kCount; ++i) {
      ASSERT_EQ(dst[i], k::f32_to_bf16_stochastic(x, 2024, 1000000 + i)) << "bulk and scalar differ at " << i;
      sum += k::bf16_to_f32(dst[i]);
      up += dst[i] != (u >> 16);
    }
    const double mean = sum / kCount;
    const double se = std::abs(hi - lo) * std::sqrt(q * (1 - q) / kCount);
    EXPECT_NEAR(mean, static_cast<double>(x), 4.0 * se + 1e-12 * std::abs(x))
        << "x = " << x << ", q = " << q << ", standard error " << se;
    EXPECT_NEAR(static_cast<double>(up) / kCount, q, 4.0 * std::sqrt(q * (1 - q) / kCount) + 1e-9) << "x = " << x;
    // Not a degenerate generator: both neighbours occur when q is not tiny.
    if (q > 0.01) {
      EXPECT_GT(up, 0);
      EXPECT_LT(up, kCount);
    }
  }
}

TEST(PrecisionKernels, StochasticRoundingIsReproducibleAndSeedDependent) {
  const float x = from_bits(0x3F808000u);  // exactly half way: each draw is a fair coin
  constexpr int kCount = 20000;
  std::vector<uint16_t> a(kCount), b(kCount);
  std::vector<float> src(kCount, x);
  for (int rep = 0; rep < 2; ++rep) {
    k::convert_f32_to_bf16_stochastic(src.data(), (rep ? b : a).data(), kCount, 42, 7);
  }
  EXPECT_EQ(a, b) << "same (seed, counter) must give the same bits";
  for (int i = 0; i < kCount; i += 97) ASSERT_EQ(a[i], k::f32_to_bf16_stochastic(x, 42, 7 + i));

  for (uint64_t other_seed : {43ull, 0ull, 1ull << 40}) {
    k::convert_f32_to_bf16_stochastic(src.data(), b.data(), kCount, other_seed, 7);
    int64_t differ = 0;
    for (int i = 0; i < kCount; ++i) differ += a[i] != b[i];
    // Independent fair coins disagree half the time.
    EXPECT_NEAR(static_cast<double>(differ) / kCount, 0.5, 0.03) << "seed " << other_seed;
  }
  // Shifted counters are not the same stream either (no trivial counter/seed aliasing).
  k::convert_f32_to_bf16_stochastic(src.data(), b.data(), kCount, 42, 8);
  for (int i = 0; i + 1 < kCount; ++i) ASSERT_EQ(a[i + 1], b[i]);  // same counters: equal
  int64_t differ = 0;
  for (int i = 0; i < kCount; ++i) differ += a[i] != b[i];
  EXPECT_NEAR(static_cast<double>(differ) / kCount, 0.5, 0.03);
}

// ---- split / merge -------------------------------------------------------------------------

TEST(PrecisionKernels, SplitMergeRoundTripsExactly) {
  std::vector<float> v = edge_values();
  const std::vector<float> r = random_values(1 << 20, 5, /*allow_nan=*/false);
  v.insert(v.end(), r.begin(), r.end());
  // Every low half for a few upper halves: even, odd, zero, largest finite, negative.
  for (uint32_t hi : {0x3F80u, 0x3F81u, 0x0000u, 0x8000u, 0x7F7Fu, 0xFF7Fu, 0x7F7Eu, 0x0001u})
    for (uint32_t lo = 0; lo < 65536; ++lo) v.push_back(from_bits((hi << 16) | lo));
  const int64_t n = static_cast<int64_t>(v.size());
  std::vector<uint16_t> hi(n);
  std::vector<int16_t> rem(n);
  std::vector<float> back(n);
  k::split_f32_to_bf16_remainder(v.data(), hi.data(), rem.data(), n);
  k::merge_bf16_remainder_to_f32(hi.data(), rem.data(), back.data(), n);
  const std::vector<uint16_t> rne = aten_to_bf16(v);
  int64_t ties = 0;
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(bits(back[i]), bits(v[i])) << "round trip of " << hex(bits(v[i]));
    // The remainder is the exact difference of the bit patterns.
    ASSERT_EQ(static_cast<int64_t>(bits(v[i])) - (static_cast<int64_t>(hi[i]) << 16), rem[i]) << hex(bits(v[i]));
    if (is_even_tie(v[i])) {
      // RNE would round down and leave +32768; the split rounds away from zero instead.
      ++ties;
      ASSERT_EQ(hi[i], rne[i] + 1) << hex(bits(v[i]));
      ASSERT_EQ(rem[i], -32768);
    } else {
      ASSERT_EQ(hi[i], rne[i]) << "the bf16 half must be the RNE rounding: " << hex(bits(v[i]));
    }
  }
  EXPECT_GT(ties, 8);  // the edge values include such ties
  // The largest finite fp32 values have an Inf bf16 half (as RNE) and still come back.
  uint16_t h;
  int16_t rm;
  float back1;
  const float mx = std::numeric_limits<float>::max();
  k::split_f32_to_bf16_remainder(&mx, &h, &rm, 1);
  EXPECT_EQ(h, 0x7F80);
  k::merge_bf16_remainder_to_f32(&h, &rm, &back1, 1);
  EXPECT_EQ(back1, mx);
}

TEST(PrecisionKernels, SplitMergeOfNaNIsNaN) {
  const std::vector<float> nans = {from_bits(0x7FC00000u), from_bits(0x7F800001u), from_bits(0x7FFFFFFFu),
                                   from_bits(0xFFC00000u), from_bits(0xFF80FFFFu), from_bits(0x7FBF8000u)};
  const int64_t n = static_cast<int64_t>(nans.size());
  std::vector<uint16_t> hi(n);
  std::vector<int16_t> rem(n);
  std::vector<float> back(n);
  k::split_f32_to_bf16_remainder(nans.data(), hi.data(), rem.data(), n);
  k::merge_bf16_remainder_to_f32(hi.data(), rem.data(), back.data(), n);
  for (int64_t i = 0; i < n; ++i) {
    EXPECT_TRUE(std::isnan(k::bf16_to_f32(hi[i]))) << hex(bits(nans[i]));
    EXPECT_TRUE(std::isnan(back[i])) << hex(bits(nans[i]));
    EXPECT_EQ(std::signbit(back[i]), std::signbit(nans[i])) << hex(bits(nans[i]));
  }
}

// ---- AdamW ---------------------------------------------------------------------------------

namespace {

const AdamWCase kAdamWCases[] = {
    {"defaults", 1e-3, 0.9, 0.999, 1e-8, 0.0, 1.0},
    {"weight decay 0.1", 1e-3, 0.9, 0.999, 1e-8, 0.1, 1.0},
    {"lr 1e-2, betas (0.8, 0.99), eps 1e-6, weight decay 0.01", 1e-2, 0.8, 0.99, 1e-6, 0.01, 1.0},
    {"grad_scale 1/1024 (loss-scale unscaling)", 1e-3, 0.9, 0.999, 1e-8, 0.05, 1.0 / 1024.0},
    {"grad_scale 0.3 (clipping), lr 0.05", 5e-2, 0.9, 0.999, 1e-8, 0.0, 0.3},
};

// Random fp32 start values and per-step 16-bit gradients (pre-multiplied by 1/grad_scale, as a
// loss-scaled backward would give them).
struct Problem16 {
  std::vector<float> master;
  std::vector<std::vector<uint16_t>> grads;
};

Problem16 make_problem16(uint64_t seed, int steps, double grad_magnitude, bool half, int64_t n = kN) {
  at::manual_seed(seed);
  Problem16 p;
  p.master = to_vec(at::randn({n}, at::kFloat));
  for (int s = 0; s < steps; ++s) {
    const std::vector<float> g = to_vec(at::randn({n}, at::kFloat) * grad_magnitude);
    p.grads.push_back(half ? narrow_f16(g) : narrow_bf16(g));
  }
  return p;
}

// torch::optim::AdamW on fp32 parameters, fed the widened gradients times grad_scale.
std::vector<float> torch_adamw(const std::vector<float>& start, const std::vector<std::vector<float>>& grads,
                               const AdamWCase& c) {
  at::Tensor p = to_tensor(start).requires_grad_(true);
  torch::optim::AdamW opt(std::vector<at::Tensor>{p}, torch::optim::AdamWOptions(c.lr)
                                                            .betas({c.beta1, c.beta2})
                                                            .eps(c.eps)
                                                            .weight_decay(c.weight_decay));
  for (const auto& g : grads) {
    p.mutable_grad() = to_tensor(g) * c.grad_scale;
    opt.step();
  }
  return to_vec(p);
}

}  // namespace

TEST(PrecisionKernels, AdamWBf16MasterEqualsAdamWF32OnTheMasterBitwise) {
  constexpr int kSteps = 5;
  uint64_t seed = 10;
  for (const auto& c : kAdamWCases) {
    SCOPED_TRACE(c.name);
    const Problem16 pb = make_problem16(seed++, kSteps, 1.0 / c.grad_scale, /*half=*/false);
    std::vector<float> master = pb.master, m(kN, 0.0f), v(kN, 0.0f);
    std::vector<uint16_t> param(kN, 0xFFFF);
    std::vector<float> ref = pb.master, ref_m(kN, 0.0f), ref_v(kN, 0.0f);
    std::vector<std::vector<float>> widened;
    for (int s = 0; s < kSteps; ++s) {
      const k::AdamWArgs a = adamw_args(c, s + 1);
      k::apply_update(k::Storage::Bf16MasterF32, a, tessera::test::master_buffers(param.data(), pb.grads[s].data(), master.data(), m.data(), v.data(), kN));
      widened.push_back(widen_bf16(pb.grads[s]));
      k::apply_update(k::Storage::F32, a, tessera::test::f32_buffers(ref.data(), widened.back().data(), ref_m.data(), ref_v.data(), kN));
      ASSERT_TRUE(same_bits(master, ref)) << "master after step " << s + 1;
      ASSERT_TRUE(same_bits(m, ref_m)) << "exp_avg after step " << s + 1;
      ASSERT_TRUE(same_bits(v, ref_v)) << "exp_avg_sq after step " << s + 1;
      ASSERT_EQ(param, aten_to_bf16_ties_away(master)) << "param must be the ties-away rounding of the master, step " << s + 1;
    }
    // And against LibTorch's own optimizer on fp32.
    int64_t at_i = -1;
    const double w = worst_rel(master, torch_adamw(pb.master, widened, c), &at_i);
    EXPECT_LE(w, 1e-6) << "vs torch::optim::AdamW, worst at element " << at_i;
    EXPECT_GT(worst_rel(master, pb.master), 0.5 * c.lr) << "the parameters did not move";
  }
}

TEST(PrecisionKernels, AdamWBf16RemainderEqualsBf16MasterOverTwentySteps) {
  constexpr int kSteps = 20;
  uint64_t seed = 20;
  int64_t ties_seen = 0;
  for (const auto& c : kAdamWCases) {
    SCOPED_TRACE(c.name);
    const Problem16 pb = make_problem16(seed++, kSteps, 1.0 / c.grad_scale, /*half=*/false);
    // Reference: fp32 master.
    std::vector<float> master = pb.master, m(kN, 0.0f), v(kN, 0.0f);
    std::vector<uint16_t> param(kN);
    // Under test: bf16 + remainder, initialised from the same master.
    std::vector<uint16_t> rparam(kN);
    std::vector<int16_t> rem(kN);
    std::vector<float> rm(kN, 0.0f), rv(kN, 0.0f), merged(kN);
    k::split_f32_to_bf16_remainder(pb.master.data(), rparam.data(), rem.data(), kN);
    for (int s = 0; s < kSteps; ++s) {
      const k::AdamWArgs a = adamw_args(c, s + 1);
      k::apply_update(k::Storage::Bf16MasterF32, a, tessera::test::master_buffers(param.data(), pb.grads[s].data(), master.data(), m.data(), v.data(), kN));
      k::apply_update(k::Storage::Bf16Remainder, a, tessera::test::remainder_buffers(rparam.data(), rem.data(), pb.grads[s].data(), rm.data(), rv.data(), kN));
      k::merge_bf16_remainder_to_f32(rparam.data(), rem.data(), merged.data(), kN);
      ASSERT_TRUE(same_bits(merged, master)) << "merged master after step " << s + 1;
      ASSERT_TRUE(same_bits(rm, m)) << "exp_avg after step " << s + 1;
      ASSERT_TRUE(same_bits(rv, v)) << "exp_avg_sq after step " << s + 1;
      for (int64_t i = 0; i < kN; ++i) {
        if (is_even_tie(master[i])) ++ties_seen;  // where RNE would have differed
        ASSERT_EQ(rparam[i], param[i]) << "step " << s + 1 << " element " << i << " master " << hex(bits(master[i]));
      }
    }
  }
  RecordProperty("even_ties_seen", static_cast<int>(ties_seen));
}

TEST(PrecisionKernels, AdamWF16MasterEqualsAdamWF32OnTheMasterBitwise) {
  constexpr int kSteps = 5;
  uint64_t seed = 30;
  for (const auto& c : kAdamWCases) {
    SCOPED_TRACE(c.name);
    // fp16 gradients: keep the scaled magnitudes inside fp16's range (1024 * randn < 65504).
    const Problem16 pb = make_problem16(seed++, kSteps, 1.0 / c.grad_scale, /*half=*/true);
    for (const auto& g : pb.grads) ASSERT_TRUE(k::all_finite_f16(g.data(), kN));
    std::vector<float> master = pb.master, m(kN, 0.0f), v(kN, 0.0f);
    std::vector<uint16_t> param(kN);
    std::vector<float> ref = pb.master, ref_m(kN, 0.0f), ref_v(kN, 0.0f);
    std::vector<std::vector<float>> widened;
    for (int s = 0; s < kSteps; ++s) {
      const k::AdamWArgs a = adamw_args(c, s + 1);
      k::apply_update(k::Storage::F16MasterF32, a, tessera::test::master_buffers(param.data(), pb.grads[s].data(), master.data(), m.data(), v.data(), kN));
      widened.push_back(widen_f16(pb.grads[s]));
      k::apply_update(k::Storage::F32, a, tessera::test::f32_buffers(ref.data(), widened.back().data(), ref_m.data(), ref_v.data(), kN));
      ASSERT_TRUE(same_bits(master, ref)) << "master after step " << s + 1;
      ASSERT_TRUE(same_bits(m, ref_m)) << "exp_avg after step " << s + 1;
      ASSERT_TRUE(same_bits(v, ref_v)) << "exp_avg_sq after step " << s + 1;
      ASSERT_EQ(param, aten_to_f16(master)) << "param must be the RNE rounding of the master, step " << s + 1;
    }
    int64_t at_i = -1;
    const double w = worst_rel(master, torch_adamw(pb.master, widened, c), &at_i);
    EXPECT_LE(w, 1e-6) << "vs torch::optim::AdamW, worst at element " << at_i;
    EXPECT_GT(worst_rel(master, pb.master), 0.5 * c.lr);
  }
}

// Pure bf16 without stochastic rounding is AdamW on Storage::F32 on the widened values, rounded RNE; with
// it, the parameter is f32_to_bf16_stochastic of that same fp32 value at counter_base + i.
TEST(PrecisionKernels, AdamWBf16PureIsWidenedAdamWF32ThenRounded) {
  constexpr int kSteps = 5;
  uint64_t seed = 40;
  for (bool sr : {false, true}) {
    for (const auto& c : kAdamWCases) {
      SCOPED_TRACE(std::string(c.name) + (sr ? ", stochastic" : ", RNE"));
      const Problem16 pb = make_problem16(seed++, kSteps, 1.0 / c.grad_scale, /*half=*/false);
      std::vector<uint16_t> p = narrow_bf16(pb.master), m(kN, 0), v(kN, 0);
      const std::vector<uint16_t> p0 = p;
      for (int s = 0; s < kSteps; ++s) {
        const k::AdamWArgs a = adamw_args(c, s + 1);
        std::vector<float> fp = widen_bf16(p), fm = widen_bf16(m), fv = widen_bf16(v);
        const std::vector<float> g = widen_bf16(pb.grads[s]);
        k::apply_update(k::Storage::F32, a, tessera::test::f32_buffers(fp.data(), g.data(), fm.data(), fv.data(), kN));
        const uint64_t base = 1000 + static_cast<uint64_t>(s) * kN;
        k::apply_update(k::Storage::Bf16Pure, a, tessera::test::pure_buffers(p.data(), pb.grads[s].data(), m.data(), v.data(), kN, sr, 99, base));
        ASSERT_EQ(m, aten_to_bf16(fm)) << "exp_avg, step " << s + 1;
        ASSERT_EQ(v, aten_to_bf16(fv)) << "exp_avg_sq, step " << s + 1;
        if (!sr) {
          ASSERT_EQ(p, aten_to_bf16(fp)) << "param, step " << s + 1;
        } else {
          for (int64_t i = 0; i < kN; ++i) {
            ASSERT_EQ(p[i], k::f32_to_bf16_stochastic(fp[i], 99, base + i)) << "step " << s + 1 << " element " << i;
            const uint16_t tz = static_cast<uint16_t>(bits(fp[i]) >> 16);
            ASSERT_TRUE(p[i] == tz || p[i] == tz + 1);
          }
        }
      }
      EXPECT_NE(p, p0) << "the parameters did not move";
    }
  }
}

// The behaviour stochastic rounding is for: lr 1e-5 on parameters near 1, where every update is
// far below half a bf16 ulp (2^-9 .. 2^-8). RNE never moves a parameter; stochastic rounding
// moves them so that their mean follows the fp32 run.
TEST(PrecisionKernels, AdamWBf16PureStochasticRoundingTracksFp32AtTinyLearningRate) {
  constexpr int64_t n = 1 << 16;
  constexpr int kSteps = 300;
  const AdamWCase c{"lr 1e-5", 1e-5, 0.9, 0.999, 1e-8, 0.0, 1.0};
  at::manual_seed(50);
  // Parameters in [1, 1.5), exactly representable in bf16; gradients mostly positive so the
  // parameters drift down by about lr per step.
  const std::vector<uint16_t> start = narrow_bf16(to_vec(1.0 + 0.5 * at::rand({n}, at::kFloat)));
  std::vector<uint16_t> p_rne = start, m_rne(n, 0), v_rne(n, 0);
  std::vector<uint16_t> p_sr = start, m_sr(n, 0), v_sr(n, 0);
  std::vector<float> p32 = widen_bf16(start), m32(n, 0.0f), v32(n, 0.0f);
  for (int s = 0; s < kSteps; ++s) {
    const std::vector<uint16_t> g = narrow_bf16(to_vec(1.0 + 0.5 * at::randn({n}, at::kFloat)));
    const std::vector<float> g32 = widen_bf16(g);
    const k::AdamWArgs a = adamw_args(c, s + 1);
    k::apply_update(k::Storage::Bf16Pure, a, tessera::test::pure_buffers(p_rne.data(), g.data(), m_rne.data(), v_rne.data(), n, false, 0, 0));
    k::apply_update(k::Storage::Bf16Pure, a, tessera::test::pure_buffers(p_sr.data(), g.data(), m_sr.data(), v_sr.data(), n, true, 1234, static_cast<uint64_t>(s) * n));
    k::apply_update(k::Storage::F32, a, tessera::test::f32_buffers(p32.data(), g32.data(), m32.data(), v32.data(), n));
  }
  EXPECT_EQ(p_rne, start) << "round-to-nearest must lose every update at this learning rate";

  auto mean = [](const std::vector<float>& x) {
    double s = 0.0;
    for (float f : x) s += f;
    return s / static_cast<double>(x.size());
  };
  const double m0 = mean(widen_bf16(start)), m_fp32 = mean(p32), m_sr_mean = mean(widen_bf16(p_sr));
  const double drift = m_fp32 - m0;
  ASSERT_LT(drift, -0.5 * c.lr * kSteps) << "the fp32 reference should drift by ~lr per step";
  // SR noise: per element variance ~ lr * ulp per step -> std of the mean ~ 2e-5 here.
  EXPECT_NEAR(m_sr_mean, m_fp32, 0.05 * std::abs(drift))
      << "start " << m0 << ", fp32 mean " << m_fp32 << ", stochastic bf16 mean " << m_sr_mean;
  // Individual parameters did move (by whole bf16 ulps).
  int64_t moved = 0;
  for (int64_t i = 0; i < n; ++i) moved += p_sr[i] != start[i];
  EXPECT_GT(moved, n / 10);
}

TEST(PrecisionKernels, AdamWBf16PureStochasticIsReproducible) {
  const Problem16 pb = make_problem16(60, 3, 1.0, /*half=*/false);
  const AdamWCase c{"tiny lr", 1e-4, 0.9, 0.999, 1e-8, 0.01, 1.0};
  auto run = [&](uint64_t seed) {
    std::vector<uint16_t> p = narrow_bf16(pb.master), m(kN, 0), v(kN, 0);
    for (int s = 0; s < 3; ++s)
      k::apply_update(k::Storage::Bf16Pure, adamw_args(c, s + 1), tessera::test::pure_buffers(p.data(), pb.grads[s].data(), m.data(), v.data(), kN, true, seed, static_cast<uint64_t>(s) * kN));
    return p;
  };
  const std::vector<uint16_t> a = run(7), b = run(7), other = run(8);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, other);
}

// ---- SGD -----------------------------------------------------------------------------------

namespace {

const SgdCase kSgdCases[] = {
    {"momentum 0.9", 1e-2, 0.9, 0.0, false, 1.0},
    {"momentum 0.9, weight decay 1e-2", 1e-2, 0.9, 1e-2, false, 1.0},
    {"nesterov, weight decay 5e-4", 5e-2, 0.8, 5e-4, true, 1.0},
    {"momentum 0, weight decay 0.1", 1e-1, 0.0, 0.1, false, 1.0},
    {"grad_scale 1/512, nesterov, weight decay", 1e-2, 0.9, 1e-3, true, 1.0 / 512.0},
};

}  // namespace

TEST(PrecisionKernels, SgdMixedPrecisionEqualsSgdF32OnTheMasterBitwise) {
  constexpr int kSteps = 5;
  uint64_t seed = 70;
  for (bool half : {false, true}) {
    for (const auto& c : kSgdCases) {
      SCOPED_TRACE(std::string(c.name) + (half ? ", f16" : ", bf16"));
      const Problem16 pb = make_problem16(seed++, kSteps, 1.0 / c.grad_scale, half);
      std::vector<float> master = pb.master, buf(kN, 42.0f);
      std::vector<uint16_t> param(kN);
      std::vector<float> ref = pb.master, ref_buf(kN, 42.0f);
      // The remainder variant (bf16 only) runs alongside.
      std::vector<uint16_t> rparam(kN);
      std::vector<int16_t> rem(kN);
      std::vector<float> rbuf(kN, 42.0f), merged(kN);
      k::split_f32_to_bf16_remainder(pb.master.data(), rparam.data(), rem.data(), kN);
      std::vector<std::vector<float>> widened;
      for (int s = 0; s < kSteps; ++s) {
        const k::SgdArgs a = sgd_args(c, s == 0);
        widened.push_back(half ? widen_f16(pb.grads[s]) : widen_bf16(pb.grads[s]));
        k::apply_update(k::Storage::F32, a, tessera::test::f32_buffers(ref.data(), widened.back().data(), ref_buf.data(), nullptr, kN));
        if (half) {
          k::apply_update(k::Storage::F16MasterF32, a, tessera::test::master_buffers(param.data(), pb.grads[s].data(), master.data(), buf.data(), nullptr, kN));
          ASSERT_EQ(param, aten_to_f16(master)) << "step " << s + 1;
        } else {
          k::apply_update(k::Storage::Bf16MasterF32, a, tessera::test::master_buffers(param.data(), pb.grads[s].data(), master.data(), buf.data(), nullptr, kN));
          ASSERT_EQ(param, aten_to_bf16_ties_away(master)) << "step " << s + 1;
          k::apply_update(k::Storage::Bf16Remainder, a, tessera::test::remainder_buffers(rparam.data(), rem.data(), pb.grads[s].data(), rbuf.data(), nullptr, kN));
          k::merge_bf16_remainder_to_f32(rparam.data(), rem.data(), merged.data(), kN);
          ASSERT_TRUE(same_bits(merged, master)) << "remainder master, step " << s + 1;
          ASSERT_TRUE(same_bits(rbuf, buf)) << "remainder momentum, step " << s + 1;
          for (int64_t i = 0; i < kN; ++i)
            ASSERT_EQ(rparam[i], param[i]) << "element " << i;
        }
        ASSERT_TRUE(same_bits(master, ref)) << "master after step " << s + 1;
        ASSERT_TRUE(same_bits(buf, ref_buf)) << "momentum buffer after step " << s + 1;
      }
      if (c.momentum == 0.0)
        for (float b : buf) ASSERT_EQ(b, 42.0f) << "momentum 0 must leave the buffer alone";
      // And against torch::optim::SGD on fp32.
      at::Tensor p = to_tensor(pb.master).requires_grad_(true);
      torch::optim::SGD opt(std::vector<at::Tensor>{p}, torch::optim::SGDOptions(c.lr)
                                                            .momentum(c.momentum)
                                                            .dampening(0.0)
                                                            .weight_decay(c.weight_decay)
                                                            .nesterov(c.nesterov));
      for (const auto& g : widened) {
        p.mutable_grad() = to_tensor(g) * c.grad_scale;
        opt.step();
      }
      int64_t at_i = -1;
      EXPECT_LE(worst_rel(master, to_vec(p), &at_i), 1e-6) << "vs torch::optim::SGD, worst at " << at_i;
      EXPECT_GT(worst_rel(master, pb.master), 1e-4) << "the parameters did not move";
    }
  }
}

// ---- overflow checks and reductions --------------------------------------------------------

TEST(PrecisionKernels, AllFiniteBf16AndF16) {
  // Every single pattern on its own.
  for (uint32_t i = 0; i < 65536; ++i) {
    const uint16_t h = static_cast<uint16_t>(i);
    ASSERT_EQ(k::all_finite_bf16(&h, 1), std::isfinite(k::bf16_to_f32(h))) << hex(i);
    ASSERT_EQ(k::all_finite_f16(&h, 1), std::isfinite(k::f16_to_f32(h))) << hex(i);
  }
  // Long arrays of finite extremes, with one bad element at positions across chunk boundaries.
  const int64_t n = 3001;
  std::vector<uint16_t> b(n), f(n);
  const uint16_t bf_finite[] = {0x7F7F, 0xFF7F, 0x0001, 0x8000, 0x3F80, 0x0080};
  const uint16_t f_finite[] = {0x7BFF, 0xFBFF, 0x0001, 0x8000, 0x3C00, 0x0400};
  for (int64_t i = 0; i < n; ++i) {
    b[i] = bf_finite[i % 6];
    f[i] = f_finite[i % 6];
  }
  EXPECT_TRUE(k::all_finite_bf16(b.data(), n));
  EXPECT_TRUE(k::all_finite_f16(f.data(), n));
  EXPECT_TRUE(k::all_finite_bf16(b.data(), 0));
  EXPECT_TRUE(k::all_finite_f16(f.data(), 0));
  const uint16_t bf_bad[] = {0x7F80, 0xFF80, 0x7FC0, 0xFF81};  // +Inf, -Inf, NaN, -NaN
  const uint16_t f_bad[] = {0x7C00, 0xFC00, 0x7E00, 0xFC01};
  for (int j = 0; j < 4; ++j) {
    for (int64_t pos : {int64_t{0}, int64_t{1023}, int64_t{1024}, int64_t{2500}, n - 1}) {
      std::vector<uint16_t> bb = b, ff = f;
      bb[pos] = bf_bad[j];
      ff[pos] = f_bad[j];
      EXPECT_FALSE(k::all_finite_bf16(bb.data(), n)) << hex(bf_bad[j]) << " at " << pos;
      EXPECT_FALSE(k::all_finite_f16(ff.data(), n)) << hex(f_bad[j]) << " at " << pos;
      EXPECT_TRUE(k::all_finite_bf16(bb.data(), pos)) << "element " << pos << " is outside the range";
      EXPECT_TRUE(k::all_finite_f16(ff.data(), pos));
    }
  }
}

TEST(PrecisionKernels, SumSquaresBf16AndF16) {
  at::manual_seed(80);
  for (int64_t n : {0, 1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 1003, 100000}) {
    SCOPED_TRACE("n = " + std::to_string(n));
    const std::vector<float> x = to_vec(at::randn({n}, at::kFloat) * 300.0);
    const std::vector<uint16_t> b = narrow_bf16(x), f = narrow_f16(x);
    const std::vector<float> bw = aten_widen(b, at::kBFloat16), fw = aten_widen(f, at::kHalf);
    // Bitwise the same as sum_squares_f32 over the widened values (same order).
    const double sb = k::sum_squares_bf16(b.data(), n), sf = k::sum_squares_f16(f.data(), n);
    const double rb = k::sum_squares_f32(bw.data(), n), rf = k::sum_squares_f32(fw.data(), n);
    EXPECT_EQ(std::memcmp(&sb, &rb, sizeof sb), 0) << sb << " vs " << rb;
    EXPECT_EQ(std::memcmp(&sf, &rf, sizeof sf), 0) << sf << " vs " << rf;
    long double lb = 0.0L, lf = 0.0L;
    for (int64_t i = 0; i < n; ++i) {
      lb += static_cast<long double>(bw[i]) * bw[i];
      lf += static_cast<long double>(fw[i]) * fw[i];
    }
    if (n == 0) {
      EXPECT_EQ(sb, 0.0);
      EXPECT_EQ(sf, 0.0);
    } else {
      EXPECT_NEAR(sb, static_cast<double>(lb), 1e-13 * static_cast<double>(lb));
      EXPECT_NEAR(sf, static_cast<double>(lf), 1e-13 * static_cast<double>(lf));
    }
  }
  // Squares that overflow fp16/bf16 (and fp32 for bf16) are fine in double; subnormals count.
  const uint16_t fbig[2] = {0x7BFF, 0xFBFF};  // ±65504
  EXPECT_EQ(k::sum_squares_f16(fbig, 2), 2.0 * 65504.0 * 65504.0);
  const uint16_t fsub = 0x0001;  // 2^-24
  EXPECT_EQ(k::sum_squares_f16(&fsub, 1), std::ldexp(1.0, -48));
  const uint16_t bbig[2] = {0x7F7F, 0xFF7F};  // ±3.3895e38
  const double m = k::bf16_to_f32(0x7F7F);
  EXPECT_EQ(k::sum_squares_bf16(bbig, 2), 2.0 * m * m);
  EXPECT_TRUE(std::isfinite(k::sum_squares_bf16(bbig, 2)));
}

namespace {
std::vector<uint16_t> aten_to_bf16_ties_away(const std::vector<float>& x) {
  std::vector<uint16_t> out = aten_to_bf16(x);
  for (size_t i = 0; i < x.size(); ++i)
    if (is_even_tie(x[i])) out[i] = static_cast<uint16_t>(out[i] + 1);
  return out;
}
}  // namespace

TEST(PrecisionKernels, TiesAwayDiffersFromRneOnlyOnEvenTies) {
  EXPECT_EQ(k::f32_to_bf16_ties_away(from_bits(0x3F808000)), 0x3F81);  // even tie: away (RNE keeps 0x3F80)
  EXPECT_EQ(k::f32_to_bf16_ties_away(from_bits(0xBF808000)), 0xBF81);  // negative: away from zero too
  EXPECT_EQ(k::f32_to_bf16_ties_away(from_bits(0x3F818000)), 0x3F82);  // odd tie: same as RNE
  EXPECT_EQ(k::f32_to_bf16_ties_away(from_bits(0x3F807FFF)), 0x3F80);
  EXPECT_EQ(k::f32_to_bf16_ties_away(from_bits(0x3F808001)), 0x3F81);
  int16_t rem = 0;
  uint16_t hi = 0;
  for (uint32_t low = 0; low < 0x10000u; ++low) {
    const float x = from_bits(0x40000000u | low);
    k::split_f32_to_bf16_remainder(&x, &hi, &rem, 1);
    ASSERT_EQ(hi, k::f32_to_bf16_ties_away(x)) << hex(bits(x));
    if (!is_even_tie(x)) ASSERT_EQ(hi, k::f32_to_bf16(x)) << hex(bits(x));
  }
}

// Pure bf16 SGD is Storage::F32 SGD on the widened parameter and momentum, both stored back in bf16
// (the momentum RNE; the parameter RNE or stochastically at counter_base + i).
TEST(PrecisionKernels, SgdBf16PureIsWidenedSgdF32ThenRounded) {
  constexpr int kSteps = 5;
  uint64_t seed = 90;
  for (bool sr : {false, true}) {
    for (const auto& c : kSgdCases) {
      SCOPED_TRACE(std::string(c.name) + (sr ? ", stochastic" : ", RNE"));
      const Problem16 pb = make_problem16(seed++, kSteps, 1.0 / c.grad_scale, /*half=*/false);
      std::vector<uint16_t> p = narrow_bf16(pb.master), buf(kN, 0);
      const std::vector<uint16_t> p0 = p;
      for (int s = 0; s < kSteps; ++s) {
        const k::SgdArgs a = sgd_args(c, s == 0);
        std::vector<float> fp = widen_bf16(p), fbuf = widen_bf16(buf);
        const std::vector<float> g = widen_bf16(pb.grads[s]);
        k::apply_update(k::Storage::F32, a, tessera::test::f32_buffers(fp.data(), g.data(), fbuf.data(), nullptr, kN));
        const uint64_t base = 5000 + static_cast<uint64_t>(s) * kN;
        k::apply_update(k::Storage::Bf16Pure, a, tessera::test::pure_buffers(p.data(), pb.grads[s].data(), buf.data(), nullptr, kN, sr, 7, base));
        if (c.momentum != 0.0) ASSERT_EQ(buf, aten_to_bf16(fbuf)) << "momentum, step " << s + 1;
        if (!sr) {
          ASSERT_EQ(p, aten_to_bf16(fp)) << "param, step " << s + 1;
        } else {
          for (int64_t i = 0; i < kN; ++i)
            ASSERT_EQ(p[i], k::f32_to_bf16_stochastic(fp[i], 7, base + i)) << "step " << s + 1 << " element " << i;
        }
      }
      if (c.momentum == 0.0)
        for (uint16_t b : buf) ASSERT_EQ(b, 0) << "momentum 0 must leave the buffer alone";
      EXPECT_NE(p, p0) << "the parameters did not move";
    }
  }
}

// ---- Lion on every storage against the plain-ATen reference (lion_reference.hpp) ------------

namespace {
const tessera::test::LionCase kLionCases[] = {
    {"defaults", 1e-4, 0.9, 0.99, 0.0, 1.0},
    {"decay, unscale", 3e-4, 0.95, 0.98, 0.1, 1.0 / 1024},
    {"large lr", 0.05, 0.8, 0.999, 1.0, 0.5},
};
}  // namespace

// Five steps on each storage; the reference runs on the fp32 master (for Bf16Pure on the bf16
// values, rounded to nearest after every step, or stochastically for the parameter as the
// kernel's documented counters say). Some gradients are zero at step 1, where sign(c) = 0.
TEST(PrecisionKernels, LionOnEveryStorageMatchesTheAtenReference) {
  const k::Storage storages[] = {k::Storage::F32, k::Storage::Bf16MasterF32, k::Storage::F16MasterF32,
                                 k::Storage::Bf16Remainder, k::Storage::Bf16Pure};
  for (const auto& c : kLionCases)
    for (k::Storage st : storages)
      for (bool sr : {false, true}) {
        if (sr && st != k::Storage::Bf16Pure) continue;
        SCOPED_TRACE(std::string(c.name) + ", storage " + std::to_string(static_cast<int>(st)) +
                     (sr ? ", stochastic" : ""));
        const bool half = st == k::Storage::F16MasterF32, pure = st == k::Storage::Bf16Pure;
        const k::LionArgs a = tessera::test::lion_args(c);
        ASSERT_EQ(k::num_states(a), 1);
        Problem16 pb = make_problem16(41, 5, 1.0 / c.grad_scale, half);
        for (int64_t i = 0; i < 16; ++i) pb.grads[0][i] = 0;
        if (pure) pb.master = widen_bf16(narrow_bf16(pb.master));
        // The kernel's buffers: (kN,) each; param16 is the 16-bit parameter of the 16-bit storages.
        std::vector<float> pf = pb.master, master = pb.master, m32(kN, 0.0f);
        std::vector<uint16_t> param16 = half ? narrow_f16(pb.master) : narrow_bf16(pb.master), m16(kN, 0);
        std::vector<int16_t> rem(kN);
        if (st == k::Storage::Bf16Remainder) k::split_f32_to_bf16_remainder(master.data(), param16.data(), rem.data(), kN);
        k::UpdateBuffers b;
        b.param = st == k::Storage::F32 ? static_cast<void*>(pf.data()) : param16.data();
        b.master = master.data();
        b.remainder = rem.data();
        b.state[0] = pure ? static_cast<void*>(m16.data()) : m32.data();
        b.n = kN;
        b.stochastic = sr;
        b.seed = 17;
        at::Tensor p_ref = to_tensor(pb.master), m_ref = at::zeros({kN});
        std::vector<uint16_t> sr_param;  // the stochastic reference parameter of the last step
        for (int s = 0; s < 5; ++s) {
          const std::vector<float> g = half ? widen_f16(pb.grads[s]) : widen_bf16(pb.grads[s]);
          b.grad = st == k::Storage::F32 ? static_cast<const void*>(g.data()) : pb.grads[s].data();
          b.counter_base = static_cast<uint64_t>(s + 1) << 40;
          k::apply_update(st, a, b);
          tessera::test::lion_reference(p_ref, m_ref, to_tensor(g), a);
          if (pure) {
            m_ref = m_ref.to(at::kBFloat16).to(at::kFloat);
            if (sr) {
              const std::vector<float> p = to_vec(p_ref);
              sr_param.resize(kN);
              for (int64_t i = 0; i < kN; ++i)
                sr_param[i] = k::f32_to_bf16_stochastic(p[i], b.seed, b.counter_base + static_cast<uint64_t>(i));
              p_ref = to_tensor(widen_bf16(sr_param));
            } else {
              p_ref = p_ref.to(at::kBFloat16).to(at::kFloat);
            }
          }
        }
        const std::vector<float> want = to_vec(p_ref);
        std::vector<float> got(kN);
        k::export_master(st, b, got.data());
        EXPECT_TRUE(same_bits(got, want)) << "master, worst rel " << worst_rel(got, want);
        const std::vector<float> m_got = pure ? widen_bf16(m16) : m32;
        EXPECT_TRUE(same_bits(m_got, to_vec(m_ref))) << "momentum, worst rel " << worst_rel(m_got, to_vec(m_ref));
        if (st == k::Storage::F32) continue;
        const std::vector<uint16_t> want16 = half   ? aten_to_f16(want)
                                             : pure ? aten_to_bf16(want)
                                                    : aten_to_bf16_ties_away(want);
        EXPECT_EQ(param16, want16) << "stored parameter";
        EXPECT_GT(worst_rel(want, pb.master), 1e-5) << "the parameters moved";
      }
}
