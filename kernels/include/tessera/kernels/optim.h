// tessera/kernels/optim.h — optimizer updates and reductions over flat fp32 buffers.
// Plain C++ with no framework types; the CPU versions are the reference for device ones.
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

// param, grad, exp_avg, exp_avg_sq: n elements each. Updates param, exp_avg, exp_avg_sq.
void adamw_f32(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t n,
               const AdamWArgs& a);

// Hyper-parameters of one SGD update with momentum (as torch.optim.SGD, dampening 0).
struct SgdArgs {
  double lr = 1e-2;
  double momentum = 0.9;
  double weight_decay = 0.0;   // L2, added to the gradient
  bool nesterov = false;
  bool first_step = true;      // the momentum buffer starts as the first gradient
  double grad_scale = 1.0;
};

// param, grad, momentum_buf: n elements each. Updates param and momentum_buf.
void sgd_f32(float* param, const float* grad, float* momentum_buf, int64_t n, const SgdArgs& a);

// Sum of squares in double precision, in a fixed order (deterministic).
double sum_squares_f32(const float* x, int64_t n);

// True when every element is finite.
bool all_finite_f32(const float* x, int64_t n);

}  // namespace tessera::kernels
