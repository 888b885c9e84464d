// tests/unit/optimizer_cases.hpp — the optimizer settings the kernel tests sweep, the kernels'
// argument structs built from them, and apply_update's buffers per storage (shared by the CPU,
// mixed-precision and CUDA kernel tests; only kernels/ headers).
#pragma once
#include <cstdint>

#include "tessera/kernels/update.h"

namespace tessera::test {

struct AdamWCase {
  const char* name;
  double lr, beta1, beta2, eps, weight_decay, grad_scale;
};

// `step` is 1-based, as AdamW's bias correction counts.
inline kernels::AdamWArgs adamw_args(const AdamWCase& c, int64_t step) {
  kernels::AdamWArgs a;
  a.lr = c.lr;
  a.beta1 = c.beta1;
  a.beta2 = c.beta2;
  a.eps = c.eps;
  a.weight_decay = c.weight_decay;
  a.step = step;
  a.grad_scale = c.grad_scale;
  return a;
}

struct SgdCase {
  const char* name;
  double lr, momentum, weight_decay;
  bool nesterov;
  double grad_scale;
};

// first_step: the momentum buffer starts as the gradient (torch.optim.SGD's first step).
inline kernels::SgdArgs sgd_args(const SgdCase& c, bool first_step) {
  kernels::SgdArgs a;
  a.lr = c.lr;
  a.momentum = c.momentum;
  a.weight_decay = c.weight_decay;
  a.nesterov = c.nesterov;
  a.first_step = first_step;
  a.grad_scale = c.grad_scale;
  return a;
}

struct LionCase {
  const char* name;
  double lr, beta1, beta2, weight_decay, grad_scale;
};

inline kernels::LionArgs lion_args(const LionCase& c) {
  kernels::LionArgs a;
  a.lr = c.lr;
  a.beta1 = c.beta1;
  a.beta2 = c.beta2;
  a.weight_decay = c.weight_decay;
  a.grad_scale = c.grad_scale;
  return a;
}

// ---- kernels::UpdateBuffers of each storage (host or device pointers; s1 unused by 1-state rules)

// Storage::F32: fp32 param, grad, states.
inline kernels::UpdateBuffers f32_buffers(float* p, const float* g, float* s0, float* s1, int64_t n) {
  kernels::UpdateBuffers b;
  b.param = p;
  b.grad = g;
  b.state[0] = s0;
  b.state[1] = s1;
  b.n = n;
  return b;
}
// Storage::Bf16MasterF32 / F16MasterF32: 16-bit param and grad, fp32 master and states.
inline kernels::UpdateBuffers master_buffers(uint16_t* p, const uint16_t* g, float* master, float* s0, float* s1,
                                             int64_t n) {
  kernels::UpdateBuffers b = f32_buffers(nullptr, nullptr, s0, s1, n);
  b.param = p;
  b.grad = g;
  b.master = master;
  return b;
}
// Storage::Bf16Remainder: bf16 param + int16 remainder, bf16 grad, fp32 states.
inline kernels::UpdateBuffers remainder_buffers(uint16_t* p, int16_t* rem, const uint16_t* g, float* s0, float* s1,
                                                int64_t n) {
  kernels::UpdateBuffers b = f32_buffers(nullptr, nullptr, s0, s1, n);
  b.param = p;
  b.grad = g;
  b.remainder = rem;
  return b;
}
// Storage::Bf16Pure: everything bf16; stochastic rounding of the parameter at counter_base + i.
inline kernels::UpdateBuffers pure_buffers(uint16_t* p, const uint16_t* g, uint16_t* s0, uint16_t* s1, int64_t n,
                                           bool stochastic, uint64_t seed, uint64_t counter_base) {
  kernels::UpdateBuffers b;
  b.param = p;
  b.grad = g;
  b.state[0] = s0;
  b.state[1] = s1;
  b.n = n;
  b.stochastic = stochastic;
  b.seed = seed;
  b.counter_base = counter_base;
  return b;
}

}  // namespace tessera::test
