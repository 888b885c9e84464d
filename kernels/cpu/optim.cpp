// kernels/cpu/optim.cpp — CPU implementations of the flat-buffer optimizer kernels.
// Element math (common/updates.h) in fp32 like PyTorch's foreach path; scalars once in double.
#include "tessera/kernels/optim.h"

#include <cmath>

#include "../common/updates.h"

namespace tessera::kernels {

void adamw_f32(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t n,
               const AdamWArgs& a) {
  const updates::AdamConsts c = updates::adam_consts(a);
  for (int64_t i = 0; i < n; ++i) updates::adam_update(c, grad[i], param[i], exp_avg[i], exp_avg_sq[i]);
}

void sgd_f32(float* param, const float* grad, float* momentum_buf, int64_t n, const SgdArgs& a) {
  const updates::SgdConsts c = updates::sgd_consts(a);
  updates::with_momentum(c, [&](auto momentum) {
    for (int64_t i = 0; i < n; ++i)
      updates::sgd_update<decltype(momentum)::value>(c, grad[i], param[i], momentum_buf + i);
  });
}

double sum_squares_f32(const float* x, int64_t n) {
  // Four independent partial sums keep the loop vectorisable and the order fixed.
  double s[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4)
    for (int k = 0; k < 4; ++k) s[k] += static_cast<double>(x[i + k]) * x[i + k];
  for (; i < n; ++i) s[0] += static_cast<double>(x[i]) * x[i];
  return (s[0] + s[1]) + (s[2] + s[3]);
}

bool all_finite_f32(const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) return false;
  return true;
}

}  // namespace tessera::kernels
