// tests/unit/test_update_equivalence.cpp — TEMPORARY: the composed apply_update against the ten
// per-combination functions it replaces, bit for bit; deleted together with those functions.
#include <gtest/gtest.h>

#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "tessera/kernels/precision.h"
#include "tessera/kernels/update.h"

namespace k = tessera::kernels;

namespace {

constexpr int64_t kN = 4099;

// Random fp32 values of several magnitudes plus special values (±0, subnormals, ±Inf, NaN, huge).
std::vector<float> random_f32(uint32_t seed, bool specials) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> expo(-20, 4);
  std::vector<float> x(kN);
  for (auto& v : x) v = normal(rng) * std::ldexp(1.0f, expo(rng));
  if (specials) {
    const float s[] = {0.0f, -0.0f, 1e-40f, -1e-40f, std::numeric_limits<float>::infinity(),
                       -std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN(), 3.3e38f,
                       -3.3e38f, 65504.0f, 70000.0f, 1.00390625f};
    for (size_t i = 0; i < std::size(s); ++i) x[i * 37 % kN] = s[i];
  }
  return x;
}
std::vector<uint16_t> to16(const std::vector<float>& x, bool f16) {
  std::vector<uint16_t> o(x.size());
  for (size_t i = 0; i < x.size(); ++i) o[i] = f16 ? k::f32_to_f16(x[i]) : k::f32_to_bf16(x[i]);
  return o;
}
template <class T>
bool same(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

std::vector<k::RuleArgs> rules(int64_t step) {
  std::vector<k::RuleArgs> r;
  k::AdamWArgs a;
  a.lr = 3e-3;
  a.weight_decay = 0.05;
  a.step = step;
  a.grad_scale = 0.37;
  r.push_back(a);
  for (double mom : {0.0, 0.9})
    for (bool nesterov : {false, true}) {
      k::SgdArgs s;
      s.lr = 0.07;
      s.momentum = mom;
      s.weight_decay = 1e-3;
      s.nesterov = nesterov;
      s.first_step = step == 1;
      s.grad_scale = 1.7;
      r.push_back(s);
    }
  return r;
}

// The old function for (storage, rule) on the given buffers.
void old_update(k::Storage st, const k::RuleArgs& r, void* p, const void* g, float* master, int16_t* rem, void* s0,
                void* s1, bool sr, uint64_t seed, uint64_t base) {
  auto* p16 = static_cast<uint16_t*>(p);
  auto* g16 = static_cast<const uint16_t*>(g);
  const bool adam = r.rule == k::Rule::AdamW;
  switch (st) {
    case k::Storage::F32:
      if (adam) k::adamw_f32(static_cast<float*>(p), static_cast<const float*>(g), static_cast<float*>(s0), static_cast<float*>(s1), kN, r.adamw);
      else k::sgd_f32(static_cast<float*>(p), static_cast<const float*>(g), static_cast<float*>(s0), kN, r.sgd);
      return;
    case k::Storage::Bf16MasterF32:
      if (adam) k::adamw_bf16_master_f32(p16, g16, master, static_cast<float*>(s0), static_cast<float*>(s1), kN, r.adamw);
      else k::sgd_bf16_master_f32(p16, g16, master, static_cast<float*>(s0), kN, r.sgd);
      return;
    case k::Storage::F16MasterF32:
      if (adam) k::adamw_f16_master_f32(p16, g16, master, static_cast<float*>(s0), static_cast<float*>(s1), kN, r.adamw);
      else k::sgd_f16_master_f32(p16, g16, master, static_cast<float*>(s0), kN, r.sgd);
      return;
    case k::Storage::Bf16Remainder:
      if (adam) k::adamw_bf16_remainder(p16, rem, g16, static_cast<float*>(s0), static_cast<float*>(s1), kN, r.adamw);
      else k::sgd_bf16_remainder(p16, rem, g16, static_cast<float*>(s0), kN, r.sgd);
      return;
    case k::Storage::Bf16Pure:
      if (adam)
        k::adamw_bf16_pure(p16, g16, static_cast<uint16_t*>(s0), static_cast<uint16_t*>(s1), kN, r.adamw, sr, seed, base);
      else k::sgd_bf16_pure(p16, g16, static_cast<uint16_t*>(s0), kN, r.sgd, sr, seed, base);
      return;
  }
}

// All buffers of one storage, in two copies (old, new) that must stay equal.
struct Bufs {
  std::vector<float> pf, m0, m1, master;   // fp32 param (F32), fp32 states, master
  std::vector<uint16_t> p16, s0, s1;       // 16-bit param, bf16 states (Bf16Pure)
  std::vector<int16_t> rem;
  bool operator==(const Bufs& o) const {
    return same(pf, o.pf) && same(m0, o.m0) && same(m1, o.m1) && same(master, o.master) && same(p16, o.p16) &&
           same(s0, o.s0) && same(s1, o.s1) && same(rem, o.rem);
  }
};

}  // namespace

TEST(UpdateEquivalence, ComposedEqualsTheOldFunctionsBitwise) {
  const k::Storage storages[] = {k::Storage::F32, k::Storage::Bf16MasterF32, k::Storage::F16MasterF32,
                                 k::Storage::Bf16Remainder, k::Storage::Bf16Pure};
  int checked = 0;
  for (k::Storage st : storages)
    for (size_t ri = 0; ri < rules(1).size(); ++ri)
      for (bool sr : {false, true}) {
        if (sr && st != k::Storage::Bf16Pure) continue;
        for (bool specials : {false, true}) {
          const bool f16 = st == k::Storage::F16MasterF32;
          Bufs a;
          const std::vector<float> init = random_f32(1 + ri, specials);
          a.pf = init;
          a.master = init;
          a.p16 = to16(init, f16);
          if (st == k::Storage::Bf16Remainder) {
            a.rem.resize(kN);
            k::split_f32_to_bf16_remainder(init.data(), a.p16.data(), a.rem.data(), kN);
          }
          // Non-zero states to start with, as after some steps (|v| for AdamW's second moment).
          a.m0 = random_f32(100 + ri, false);
          a.m1 = random_f32(200 + ri, false);
          for (auto& v : a.m1) v = std::abs(v);
          a.s0 = to16(a.m0, false);
          a.s1 = to16(a.m1, false);
          Bufs b = a;
          for (int64_t step = 1; step <= 3; ++step) {
            const k::RuleArgs r = rules(step)[ri];
            const std::vector<float> gf = random_f32(1000 * step + ri, specials);
            const std::vector<uint16_t> g16 = to16(gf, f16);
            const void* g = st == k::Storage::F32 ? static_cast<const void*>(gf.data()) : g16.data();
            const uint64_t seed = 42, base = static_cast<uint64_t>(step) << 40;
            auto ptrs = [&](Bufs& x, void*& p, void*& s0, void*& s1) {
              p = st == k::Storage::F32 ? static_cast<void*>(x.pf.data()) : x.p16.data();
              s0 = st == k::Storage::Bf16Pure ? static_cast<void*>(x.s0.data()) : x.m0.data();
              s1 = st == k::Storage::Bf16Pure ? static_cast<void*>(x.s1.data()) : x.m1.data();
            };
            void *p, *s0, *s1;
            ptrs(a, p, s0, s1);
            old_update(st, r, p, g, a.master.data(), a.rem.data(), s0, s1, sr, seed, base);
            ptrs(b, p, s0, s1);
            k::UpdateBuffers u;
            u.param = p;
            u.grad = g;
            u.master = b.master.data();
            u.remainder = b.rem.data();
            u.state[0] = s0;
            u.state[1] = s1;
            u.n = kN;
            u.stochastic = sr;
            u.seed = seed;
            u.counter_base = base;
            k::apply_update(st, r, u);
            ASSERT_TRUE(a == b) << "storage " << static_cast<int>(st) << " rule case " << ri << " stochastic " << sr
                                << " specials " << specials << " step " << step;
            ++checked;
          }
        }
      }
  EXPECT_EQ(checked, 5 * 5 * 2 * 3 + 5 * 2 * 3);  // + the stochastic pure cases
}
