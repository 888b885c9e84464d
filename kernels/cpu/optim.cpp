// kernels/cpu/optim.cpp — CPU implementations of the flat-buffer optimizer kernels.
// Element math in fp32 like PyTorch's foreach path; scalars computed once in double.
#include "tessera/kernels/optim.h"

#include <cmath>

namespace tessera::kernels {

void adamw_f32(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t n,
               const AdamWArgs& a) {
  const double bias1 = 1.0 - std::pow(a.beta1, static_cast<double>(a.step));
  const double bias2 = 1.0 - std::pow(a.beta2, static_cast<double>(a.step));
  const float decay = static_cast<float>(1.0 - a.lr * a.weight_decay);
  const float step_size = static_cast<float>(a.lr / bias1);
  const float bias2_sqrt = static_cast<float>(std::sqrt(bias2));
  const float b1 = static_cast<float>(a.beta1), b2 = static_cast<float>(a.beta2);
  // 1 - beta in double, then rounded, as torch.optim.AdamW does (1.0f - 0.999f is off by 1e-5).
  const float one_minus_b1 = static_cast<float>(1.0 - a.beta1), one_minus_b2 = static_cast<float>(1.0 - a.beta2);
  const float eps = static_cast<float>(a.eps), scale = static_cast<float>(a.grad_scale);
  for (int64_t i = 0; i < n; ++i) {
    const float g = grad[i] * scale;
    float p = param[i] * decay;
    const float m = b1 * exp_avg[i] + one_minus_b1 * g;
    const float v = b2 * exp_avg_sq[i] + one_minus_b2 * g * g;
    const float denom = std::sqrt(v) / bias2_sqrt + eps;
    p -= step_size * (m / denom);
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    param[i] = p;
  }
}

void sgd_f32(float* param, const float* grad, float* momentum_buf, int64_t n, const SgdArgs& a) {
  const float lr = static_cast<float>(a.lr), mu = static_cast<float>(a.momentum);
  const float wd = static_cast<float>(a.weight_decay), scale = static_cast<float>(a.grad_scale);
  for (int64_t i = 0; i < n; ++i) {
    float g = grad[i] * scale + wd * param[i];
    float buf = g;
    if (mu != 0.0f) {
      buf = a.first_step ? g : mu * momentum_buf[i] + g;
      momentum_buf[i] = buf;
      g = a.nesterov ? g + mu * buf : buf;
    }
    param[i] -= lr * g;
  }
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
