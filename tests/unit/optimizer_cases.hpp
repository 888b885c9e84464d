// tests/unit/optimizer_cases.hpp — the optimizer settings the kernel tests sweep, and the
// kernels' argument structs built from them (shared by the CPU, mixed-precision and CUDA
// kernel tests; only kernels/ headers, so the CUDA test still builds without LibTorch).
#pragma once
#include <cstdint>

#include "tessera/kernels/optim.h"

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

}  // namespace tessera::test
