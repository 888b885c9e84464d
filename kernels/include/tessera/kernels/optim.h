// tessera/kernels/optim.h — the optimizers' hyper-parameter structs (the updates themselves:
// update.h) and reductions over flat fp32 buffers. Plain C++, no framework types.
#pragma once
#include <cstdint>

namespace tessera::kernels {

// Hyper-parameters of one AdamW update (decoupled weight decay, as torch.optim.AdamW).
struct AdamWArgs {
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0.0;
  int64_t step = 1;          // 1-based, for bias correction
  double grad_scale = 1.0;   // gradients are multiplied by this first (unscale x clip)
};

// Hyper-parameters of one SGD update with momentum (as torch.optim.SGD, dampening 0).
struct SgdArgs {
  double lr = 1e-2;
  double momentum = 0.9;
  double weight_decay = 0.0;   // L2, added to the gradient
  bool nesterov = false;
  bool first_step = true;      // the momentum buffer starts as the first gradient
  double grad_scale = 1.0;
};

// Sum of squares in double precision, in a fixed order (deterministic).
double sum_squares_f32(const float* x, int64_t n);

// True when every element is finite.
bool all_finite_f32(const float* x, int64_t n);

}  // namespace tessera::kernels
