// kernels/cpu/precision.cpp — CPU implementations of the 16-bit conversions, bf16+remainder
// split/merge and mixed-precision AdamW/SGD; element math identical to optim.cpp's fp32 loops.
#include "tessera/kernels/precision.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

namespace tessera::kernels {

namespace {

// ---- split / merge of one element ----------------------------------------------------------

// Upper half rounded to nearest with ties away from zero (so the remainder fits in int16);
// NaN becomes a quiet NaN of the same sign, as f32_to_bf16 does.
inline uint16_t split_one(float x, int16_t* rem) {
  const uint32_t hi = f32_to_bf16_ties_away(x);
  *rem = static_cast<int16_t>(static_cast<uint16_t>(detail::f32_bits(x) - (hi << 16)));
  return static_cast<uint16_t>(hi);
}

inline float merge_one(uint16_t hi, int16_t rem) {
  return detail::f32_from_bits((static_cast<uint32_t>(hi) << 16) +
                               static_cast<uint32_t>(static_cast<int32_t>(rem)));
}

// ---- the AdamW element update of adamw_f32 -------------------------------------------------

// Scalars exactly as adamw_f32 computes them (double, then rounded once to fp32).
struct AdamConsts {
  float decay, step_size, bias2_sqrt, b1, b2, one_minus_b1, one_minus_b2, eps, scale;
  explicit AdamConsts(const AdamWArgs& a) {
    const double bias1 = 1.0 - std::pow(a.beta1, static_cast<double>(a.step));
    const double bias2 = 1.0 - std::pow(a.beta2, static_cast<double>(a.step));
    decay = static_cast<float>(1.0 - a.lr * a.weight_decay);
    step_size = static_cast<float>(a.lr / bias1);
    bias2_sqrt = static_cast<float>(std::sqrt(bias2));
    b1 = static_cast<float>(a.beta1);
    b2 = static_cast<float>(a.beta2);
    one_minus_b1 = static_cast<float>(1.0 - a.beta1);
    one_minus_b2 = static_cast<float>(1.0 - a.beta2);
    eps = static_cast<float>(a.eps);
    scale = static_cast<float>(a.grad_scale);
  }
};

// Same expressions, same order as adamw_f32's loop body, so the fp32 results are bitwise equal.
inline void adam_update(const AdamConsts& c, float grad, float& param, float& exp_avg, float& exp_avg_sq) {
  const float g = grad * c.scale;
  float p = param * c.decay;
  const float m = c.b1 * exp_avg + c.one_minus_b1 * g;
  const float v = c.b2 * exp_avg_sq + c.one_minus_b2 * g * g;
  const float denom = std::sqrt(v) / c.bias2_sqrt + c.eps;
  p -= c.step_size * (m / denom);
  exp_avg = m;
  exp_avg_sq = v;
  param = p;
}

// ---- the SGD element update of sgd_f32 -----------------------------------------------------

struct SgdConsts {
  float lr, mu, wd, scale;
  bool first_step, nesterov;
  explicit SgdConsts(const SgdArgs& a)
      : lr(static_cast<float>(a.lr)),
        mu(static_cast<float>(a.momentum)),
        wd(static_cast<float>(a.weight_decay)),
        scale(static_cast<float>(a.grad_scale)),
        first_step(a.first_step),
        nesterov(a.nesterov) {}
};

// kMomentum is (momentum != 0), hoisted out of the loops; without momentum the buffer is not
// touched at all, as in sgd_f32.
template <bool kMomentum>
inline void sgd_update(const SgdConsts& c, float grad, float& param, float* momentum_buf) {
  float g = grad * c.scale + c.wd * param;
  if (kMomentum) {
    const float buf = c.first_step ? g : c.mu * *momentum_buf + g;
    *momentum_buf = buf;
    g = c.nesterov ? g + c.mu * buf : buf;
  }
  param -= c.lr * g;
}

// Runs body(std::true_type / std::false_type) according to whether momentum is used.
template <class Body>
inline void with_momentum(const SgdConsts& c, Body body) {
  if (c.mu != 0.0f)
    body(std::true_type{});
  else
    body(std::false_type{});
}

// All-finite over 16-bit patterns whose exponent field is `exp_mask`: branch-free inside
// fixed-size chunks (vectorisable), early exit between chunks.
bool all_finite_16(const uint16_t* x, int64_t n, uint16_t exp_mask) {
  constexpr int64_t kChunk = 1024;
  for (int64_t start = 0; start < n; start += kChunk) {
    const int64_t end = std::min(n, start + kChunk);
    unsigned bad = 0;
    for (int64_t i = start; i < end; ++i) bad |= static_cast<unsigned>((x[i] & exp_mask) == exp_mask);
    if (bad) return false;
  }
  return true;
}

// sum_squares_f32's order: four partial sums over groups of four, tail into the first.
template <float (*Widen)(uint16_t)>
double sum_squares_16(const uint16_t* x, int64_t n) {
  double s[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4)
    for (int k = 0; k < 4; ++k) {
      const double v = Widen(x[i + k]);
      s[k] += v * v;
    }
  for (; i < n; ++i) {
    const double v = Widen(x[i]);
    s[0] += v * v;
  }
  return (s[0] + s[1]) + (s[2] + s[3]);
}

}  // namespace

// ---- bulk conversions ----------------------------------------------------------------------

void convert_bf16_to_f32(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(src[i]);
}

void convert_f32_to_bf16(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_bf16(src[i]);
}

void convert_f16_to_f32(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(src[i]);
}

void convert_f32_to_f16(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_f16(src[i]);
}

void convert_f32_to_bf16_stochastic(const float* src, uint16_t* dst, int64_t n, uint64_t seed,
                                    uint64_t counter_base) {
  const uint64_t key = detail::stochastic_key(seed);
  for (int64_t i = 0; i < n; ++i)
    dst[i] = detail::f32_to_bf16_stochastic_keyed(src[i], key, counter_base + static_cast<uint64_t>(i));
}

// ---- split / merge -------------------------------------------------------------------------

void split_f32_to_bf16_remainder(const float* master, uint16_t* bf16, int16_t* remainder, int64_t n) {
  for (int64_t i = 0; i < n; ++i) bf16[i] = split_one(master[i], &remainder[i]);
}

void merge_bf16_remainder_to_f32(const uint16_t* bf16, const int16_t* remainder, float* master, int64_t n) {
  for (int64_t i = 0; i < n; ++i) master[i] = merge_one(bf16[i], remainder[i]);
}

// ---- AdamW ---------------------------------------------------------------------------------

void adamw_bf16_master_f32(uint16_t* param_bf16, const uint16_t* grad_bf16, float* master, float* exp_avg,
                           float* exp_avg_sq, int64_t n, const AdamWArgs& a) {
  const AdamConsts c(a);
  for (int64_t i = 0; i < n; ++i) {
    float p = master[i], m = exp_avg[i], v = exp_avg_sq[i];
    adam_update(c, bf16_to_f32(grad_bf16[i]), p, m, v);
    master[i] = p;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    param_bf16[i] = f32_to_bf16_ties_away(p);
  }
}

void adamw_bf16_remainder(uint16_t* param_bf16, int16_t* remainder, const uint16_t* grad_bf16, float* exp_avg,
                          float* exp_avg_sq, int64_t n, const AdamWArgs& a) {
  const AdamConsts c(a);
  for (int64_t i = 0; i < n; ++i) {
    float p = merge_one(param_bf16[i], remainder[i]), m = exp_avg[i], v = exp_avg_sq[i];
    adam_update(c, bf16_to_f32(grad_bf16[i]), p, m, v);
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    param_bf16[i] = split_one(p, &remainder[i]);
  }
}

void adamw_bf16_pure(uint16_t* param_bf16, const uint16_t* grad_bf16, uint16_t* exp_avg_bf16,
                     uint16_t* exp_avg_sq_bf16, int64_t n, const AdamWArgs& a, bool stochastic_rounding,
                     uint64_t seed, uint64_t counter_base) {
  const AdamConsts c(a);
  if (stochastic_rounding) {
    const uint64_t key = detail::stochastic_key(seed);
    for (int64_t i = 0; i < n; ++i) {
      float p = bf16_to_f32(param_bf16[i]), m = bf16_to_f32(exp_avg_bf16[i]), v = bf16_to_f32(exp_avg_sq_bf16[i]);
      adam_update(c, bf16_to_f32(grad_bf16[i]), p, m, v);
      exp_avg_bf16[i] = f32_to_bf16(m);
      exp_avg_sq_bf16[i] = f32_to_bf16(v);
      param_bf16[i] = detail::f32_to_bf16_stochastic_keyed(p, key, counter_base + static_cast<uint64_t>(i));
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      float p = bf16_to_f32(param_bf16[i]), m = bf16_to_f32(exp_avg_bf16[i]), v = bf16_to_f32(exp_avg_sq_bf16[i]);
      adam_update(c, bf16_to_f32(grad_bf16[i]), p, m, v);
      exp_avg_bf16[i] = f32_to_bf16(m);
      exp_avg_sq_bf16[i] = f32_to_bf16(v);
      param_bf16[i] = f32_to_bf16(p);
    }
  }
}

void adamw_f16_master_f32(uint16_t* param_f16, const uint16_t* grad_f16, float* master, float* exp_avg,
                          float* exp_avg_sq, int64_t n, const AdamWArgs& a) {
  const AdamConsts c(a);
  for (int64_t i = 0; i < n; ++i) {
    float p = master[i], m = exp_avg[i], v = exp_avg_sq[i];
    adam_update(c, f16_to_f32(grad_f16[i]), p, m, v);
    master[i] = p;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    param_f16[i] = f32_to_f16(p);
  }
}

// ---- SGD -----------------------------------------------------------------------------------

void sgd_bf16_master_f32(uint16_t* param_bf16, const uint16_t* grad_bf16, float* master, float* momentum_buf,
                         int64_t n, const SgdArgs& a) {
  const SgdConsts c(a);
  with_momentum(c, [&](auto momentum) {
    for (int64_t i = 0; i < n; ++i) {
      float p = master[i];
      sgd_update<decltype(momentum)::value>(c, bf16_to_f32(grad_bf16[i]), p, momentum_buf + i);
      master[i] = p;
      param_bf16[i] = f32_to_bf16_ties_away(p);
    }
  });
}

void sgd_bf16_remainder(uint16_t* param_bf16, int16_t* remainder, const uint16_t* grad_bf16, float* momentum_buf,
                        int64_t n, const SgdArgs& a) {
  const SgdConsts c(a);
  with_momentum(c, [&](auto momentum) {
    for (int64_t i = 0; i < n; ++i) {
      float p = merge_one(param_bf16[i], remainder[i]);
      sgd_update<decltype(momentum)::value>(c, bf16_to_f32(grad_bf16[i]), p, momentum_buf + i);
      param_bf16[i] = split_one(p, &remainder[i]);
    }
  });
}

void sgd_f16_master_f32(uint16_t* param_f16, const uint16_t* grad_f16, float* master, float* momentum_buf,
                        int64_t n, const SgdArgs& a) {
  const SgdConsts c(a);
  with_momentum(c, [&](auto momentum) {
    for (int64_t i = 0; i < n; ++i) {
      float p = master[i];
      sgd_update<decltype(momentum)::value>(c, f16_to_f32(grad_f16[i]), p, momentum_buf + i);
      master[i] = p;
      param_f16[i] = f32_to_f16(p);
    }
  });
}

// ---- overflow checks and reductions --------------------------------------------------------

bool all_finite_bf16(const uint16_t* x, int64_t n) { return all_finite_16(x, n, 0x7F80u); }
bool all_finite_f16(const uint16_t* x, int64_t n) { return all_finite_16(x, n, 0x7C00u); }

double sum_squares_bf16(const uint16_t* x, int64_t n) { return sum_squares_16<bf16_to_f32>(x, n); }
double sum_squares_f16(const uint16_t* x, int64_t n) { return sum_squares_16<f16_to_f32>(x, n); }

}  // namespace tessera::kernels
