// kernels/common/updates.h — the per-element AdamW, SGD and Lion math and the bf16 + remainder
// split/merge, written once for the CPU loops (cpu/) and the CUDA kernels (cuda/). Private to kernels/.
//
// Bitwise agreement between the two rests on this file: the same fp32 expressions in the same
// order, sqrt and division correctly rounded on both sides (nvcc's defaults; no fast math), and
// no multiply-add contraction (-ffp-contract=off for the host compiler, -fmad=false for nvcc;
// see kernels/CMakeLists.txt). The scalar constants are computed once on the host, in double.
#pragma once
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "tessera/kernels/optim.h"
#include "tessera/kernels/precision.h"
#include "tessera/kernels/update.h"

namespace tessera::kernels::updates {

// ---- AdamW (decoupled weight decay, as torch.optim.AdamW) ----------------------------------

// Scalars of one AdamW step: computed in double, then rounded once to fp32.
struct AdamConsts {
  float decay, step_size, bias2_sqrt, b1, b2, one_minus_b1, one_minus_b2, eps, scale;
};

inline AdamConsts adam_consts(const AdamWArgs& a) {
  const double bias1 = 1.0 - std::pow(a.beta1, static_cast<double>(a.step));
  const double bias2 = 1.0 - std::pow(a.beta2, static_cast<double>(a.step));
  AdamConsts c;
  c.decay = static_cast<float>(1.0 - a.lr * a.weight_decay);
  c.step_size = static_cast<float>(a.lr / bias1);
  c.bias2_sqrt = static_cast<float>(std::sqrt(bias2));
  c.b1 = static_cast<float>(a.beta1);
  c.b2 = static_cast<float>(a.beta2);
  // 1 - beta in double, then rounded, as torch.optim.AdamW does (1.0f - 0.999f is off by 1e-5).
  c.one_minus_b1 = static_cast<float>(1.0 - a.beta1);
  c.one_minus_b2 = static_cast<float>(1.0 - a.beta2);
  c.eps = static_cast<float>(a.eps);
  c.scale = static_cast<float>(a.grad_scale);
  return c;
}

// One element: grad is the stored gradient (widened to fp32); param, exp_avg, exp_avg_sq are
// read and written in fp32.
TESSERA_HD inline void adam_update(const AdamConsts& c, float grad, float& param, float& exp_avg, float& exp_avg_sq) {
  const float g = grad * c.scale;
  float p = param * c.decay;
  const float m = c.b1 * exp_avg + c.one_minus_b1 * g;
  const float v = c.b2 * exp_avg_sq + c.one_minus_b2 * g * g;
  const float denom = sqrtf(v) / c.bias2_sqrt + c.eps;
  p -= c.step_size * (m / denom);
  exp_avg = m;
  exp_avg_sq = v;
  param = p;
}

// ---- SGD with momentum (as torch.optim.SGD, dampening 0) -----------------------------------

struct SgdConsts {
  float lr, mu, wd, scale;
  bool first_step, nesterov;
};

inline SgdConsts sgd_consts(const SgdArgs& a) {
  return {static_cast<float>(a.lr), static_cast<float>(a.momentum), static_cast<float>(a.weight_decay),
          static_cast<float>(a.grad_scale), a.first_step, a.nesterov};
}

// One element. kMomentum is (momentum != 0), hoisted out of the loops: without momentum the
// buffer is neither read nor written.
template <bool kMomentum>
TESSERA_HD inline void sgd_update(const SgdConsts& c, float grad, float& param, float* momentum_buf) {
  float g = grad * c.scale + c.wd * param;
  if (kMomentum) {
    const float buf = c.first_step ? g : c.mu * *momentum_buf + g;
    *momentum_buf = buf;
    g = c.nesterov ? g + c.mu * buf : buf;
  }
  param -= c.lr * g;
}

// ---- Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms") --------------

struct LionConsts {
  float decay, lr, b1, b2, one_minus_b1, one_minus_b2, scale;
};

inline LionConsts lion_consts(const LionArgs& a) {
  return {static_cast<float>(1.0 - a.lr * a.weight_decay), static_cast<float>(a.lr), static_cast<float>(a.beta1),
          static_cast<float>(a.beta2), static_cast<float>(1.0 - a.beta1), static_cast<float>(1.0 - a.beta2),
          static_cast<float>(a.grad_scale)};
}

// sign(x): 1, -1, 0 for ±0, NaN for NaN.
TESSERA_HD inline float sign_of(float x) { return x > 0.0f ? 1.0f : x < 0.0f ? -1.0f : x == 0.0f ? 0.0f : x; }

// One element: the update direction is the sign of an interpolation (beta1) between momentum
// and gradient; the momentum then tracks the gradient with beta2.
TESSERA_HD inline void lion_update(const LionConsts& c, float grad, float& param, float& momentum) {
  const float g = grad * c.scale;
  const float direction = sign_of(c.b1 * momentum + c.one_minus_b1 * g);
  param = param * c.decay - c.lr * direction;
  momentum = c.b2 * momentum + c.one_minus_b2 * g;
}

// Runs body(std::true_type{}) when flag is set, body(std::false_type{}) otherwise: a runtime
// choice hoisted out of an element loop into a compile-time one.
template <class Body>
void with_flag(bool flag, Body body) {
  if (flag)
    body(std::true_type{});
  else
    body(std::false_type{});
}

// Without momentum the buffer is neither read nor written.
template <class Body>
void with_momentum(const SgdConsts& c, Body body) {
  with_flag(c.mu != 0.0f, body);
}

// ---- pure bf16: how an updated parameter is stored ------------------------------------------

// Stochastically at counter_base + i (key = detail::stochastic_key(seed)), or to nearest even.
template <bool kStochastic>
TESSERA_HD inline uint16_t store_pure_bf16(float p, uint64_t key, uint64_t counter) {
  return kStochastic ? detail::f32_to_bf16_stochastic_keyed(p, key, counter) : f32_to_bf16(p);
}

// ---- fp32 master as bf16 + 16-bit remainder (see precision.h) ------------------------------

// Upper half rounded to nearest with ties away from zero (so the remainder fits in int16);
// NaN becomes a quiet NaN of the same sign, as f32_to_bf16 does.
TESSERA_HD inline uint16_t split_one(float x, int16_t* rem) {
  const uint32_t hi = f32_to_bf16_ties_away(x);
  *rem = static_cast<int16_t>(static_cast<uint16_t>(detail::f32_bits(x) - (hi << 16)));
  return static_cast<uint16_t>(hi);
}

TESSERA_HD inline float merge_one(uint16_t hi, int16_t rem) {
  return detail::f32_from_bits((static_cast<uint32_t>(hi) << 16) + static_cast<uint32_t>(static_cast<int32_t>(rem)));
}

}  // namespace tessera::kernels::updates
