// kernels/cuda/updates.cu — CUDA AdamW and SGD over flat shards (fp32; bf16 + fp32 master;
// bf16 + remainder; pure bf16 with stochastic rounding; fp16 + fp32 master). One thread per
// element, the element math of common/updates.h, so the results equal kernels/cpu/ bit for bit.
#include "../common/updates.h"
#include "launch.cuh"
#include "tessera/kernels/cuda.h"

namespace tessera::kernels::cuda {

namespace {

using updates::AdamConsts;
using updates::SgdConsts;

// ---- AdamW: each op loads element i, runs adam_update in fp32, stores element i ------------

struct AdamWF32 {
  float* param;             // (n,) fp32
  const float* grad;        // (n,) fp32
  float *exp_avg, *exp_avg_sq;  // (n,) fp32 each
  AdamConsts c;
  __device__ void operator()(int64_t i) const {
    float p = param[i], m = exp_avg[i], v = exp_avg_sq[i];
    updates::adam_update(c, grad[i], p, m, v);
    param[i] = p;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
  }
};

// 16-bit parameters and gradients with an fp32 master; Round gives the stored parameter
// (ties-away bf16 for the bf16 backends, RNE fp16 for fp16), Widen the gradient's value.
template <uint16_t (*Round)(float), float (*Widen)(uint16_t)>
struct AdamWMasterF32 {
  uint16_t* param;          // (n,) bf16 or fp16 bits, write-only
  const uint16_t* grad;     // (n,) bf16 or fp16 bits
  float *master, *exp_avg, *exp_avg_sq;  // (n,) fp32 each
  AdamConsts c;
  __device__ void operator()(int64_t i) const {
    float p = master[i], m = exp_avg[i], v = exp_avg_sq[i];
    updates::adam_update(c, Widen(grad[i]), p, m, v);
    master[i] = p;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    param[i] = Round(p);
  }
};

struct AdamWBf16Remainder {
  uint16_t* param;          // (n,) bf16 bits: upper half of the master
  int16_t* remainder;       // (n,) lower half of the master
  const uint16_t* grad;     // (n,) bf16 bits
  float *exp_avg, *exp_avg_sq;  // (n,) fp32 each
  AdamConsts c;
  __device__ void operator()(int64_t i) const {
    float p = updates::merge_one(param[i], remainder[i]), m = exp_avg[i], v = exp_avg_sq[i];
    updates::adam_update(c, bf16_to_f32(grad[i]), p, m, v);
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    int16_t rem;
    param[i] = updates::split_one(p, &rem);
    remainder[i] = rem;
  }
};

template <bool kStochastic>
struct AdamWBf16Pure {
  uint16_t* param;          // (n,) bf16 bits
  const uint16_t* grad;     // (n,) bf16 bits
  uint16_t *exp_avg, *exp_avg_sq;  // (n,) bf16 bits each
  AdamConsts c;
  uint64_t key, counter_base;  // stochastic rounding: detail::stochastic_key(seed), counter of element 0
  __device__ void operator()(int64_t i) const {
    float p = bf16_to_f32(param[i]), m = bf16_to_f32(exp_avg[i]), v = bf16_to_f32(exp_avg_sq[i]);
    updates::adam_update(c, bf16_to_f32(grad[i]), p, m, v);
    exp_avg[i] = f32_to_bf16(m);
    exp_avg_sq[i] = f32_to_bf16(v);
    param[i] = updates::store_pure_bf16<kStochastic>(p, key, counter_base + static_cast<uint64_t>(i));
  }
};

// ---- SGD: kMomentum as in updates::sgd_update ----------------------------------------------

template <bool kMomentum>
struct SgdF32 {
  float* param;             // (n,) fp32
  const float* grad;        // (n,) fp32
  float* momentum_buf;      // (n,) fp32; untouched without momentum
  SgdConsts c;
  __device__ void operator()(int64_t i) const {
    float p = param[i];
    updates::sgd_update<kMomentum>(c, grad[i], p, momentum_buf + i);
    param[i] = p;
  }
};

template <bool kMomentum, bool kStochastic>
struct SgdBf16Pure {
  uint16_t* param;          // (n,) bf16 bits
  const uint16_t* grad;     // (n,) bf16 bits
  uint16_t* momentum_buf;   // (n,) bf16 bits; untouched without momentum
  SgdConsts c;
  uint64_t key, counter_base;
  __device__ void operator()(int64_t i) const {
    float p = bf16_to_f32(param[i]), buf = kMomentum ? bf16_to_f32(momentum_buf[i]) : 0.0f;
    updates::sgd_update<kMomentum>(c, bf16_to_f32(grad[i]), p, &buf);
    if (kMomentum) momentum_buf[i] = f32_to_bf16(buf);
    param[i] = updates::store_pure_bf16<kStochastic>(p, key, counter_base + static_cast<uint64_t>(i));
  }
};

template <bool kMomentum, uint16_t (*Round)(float), float (*Widen)(uint16_t)>
struct SgdMasterF32 {
  uint16_t* param;          // (n,) bf16 or fp16 bits, write-only
  const uint16_t* grad;     // (n,) bf16 or fp16 bits
  float *master, *momentum_buf;  // (n,) fp32 each; momentum_buf untouched without momentum
  SgdConsts c;
  __device__ void operator()(int64_t i) const {
    float p = master[i];
    updates::sgd_update<kMomentum>(c, Widen(grad[i]), p, momentum_buf + i);
    master[i] = p;
    param[i] = Round(p);
  }
};

template <bool kMomentum>
struct SgdBf16Remainder {
  uint16_t* param;          // (n,) bf16 bits: upper half of the master
  int16_t* remainder;       // (n,) lower half of the master
  const uint16_t* grad;     // (n,) bf16 bits
  float* momentum_buf;      // (n,) fp32; untouched without momentum
  SgdConsts c;
  __device__ void operator()(int64_t i) const {
    float p = updates::merge_one(param[i], remainder[i]);
    updates::sgd_update<kMomentum>(c, bf16_to_f32(grad[i]), p, momentum_buf + i);
    int16_t rem;
    param[i] = updates::split_one(p, &rem);
    remainder[i] = rem;
  }
};

}  // namespace

// ---- AdamW ---------------------------------------------------------------------------------

void adamw_f32(float* param, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t n, const AdamWArgs& a,
               void* stream) {
  impl::launch_elementwise("adamw_f32", n, stream, AdamWF32{param, grad, exp_avg, exp_avg_sq, updates::adam_consts(a)});
}

void adamw_bf16_master_f32(uint16_t* param_bf16, const uint16_t* grad_bf16, float* master, float* exp_avg,
                           float* exp_avg_sq, int64_t n, const AdamWArgs& a, void* stream) {
  using Op = AdamWMasterF32<f32_to_bf16_ties_away, bf16_to_f32>;
  impl::launch_elementwise("adamw_bf16_master_f32", n, stream,
                           Op{param_bf16, grad_bf16, master, exp_avg, exp_avg_sq, updates::adam_consts(a)});
}

void adamw_bf16_remainder(uint16_t* param_bf16, int16_t* remainder, const uint16_t* grad_bf16, float* exp_avg,
                          float* exp_avg_sq, int64_t n, const AdamWArgs& a, void* stream) {
  impl::launch_elementwise("adamw_bf16_remainder", n, stream,
                           AdamWBf16Remainder{param_bf16, remainder, grad_bf16, exp_avg, exp_avg_sq,
                                              updates::adam_consts(a)});
}

void adamw_bf16_pure(uint16_t* param_bf16, const uint16_t* grad_bf16, uint16_t* exp_avg_bf16,
                     uint16_t* exp_avg_sq_bf16, int64_t n, const AdamWArgs& a, bool stochastic_rounding,
                     uint64_t seed, uint64_t counter_base, void* stream) {
  const AdamConsts c = updates::adam_consts(a);
  const uint64_t key = detail::stochastic_key(seed);
  updates::with_flag(stochastic_rounding, [&](auto stochastic) {
    using Op = AdamWBf16Pure<decltype(stochastic)::value>;
    impl::launch_elementwise("adamw_bf16_pure", n, stream,
                             Op{param_bf16, grad_bf16, exp_avg_bf16, exp_avg_sq_bf16, c, key, counter_base});
  });
}

void adamw_f16_master_f32(uint16_t* param_f16, const uint16_t* grad_f16, float* master, float* exp_avg,
                          float* exp_avg_sq, int64_t n, const AdamWArgs& a, void* stream) {
  using Op = AdamWMasterF32<f32_to_f16, f16_to_f32>;
  impl::launch_elementwise("adamw_f16_master_f32", n, stream,
                           Op{param_f16, grad_f16, master, exp_avg, exp_avg_sq, updates::adam_consts(a)});
}

// ---- SGD -----------------------------------------------------------------------------------

void sgd_f32(float* param, const float* grad, float* momentum_buf, int64_t n, const SgdArgs& a, void* stream) {
  const SgdConsts c = updates::sgd_consts(a);
  updates::with_momentum(c, [&](auto momentum) {
    using Op = SgdF32<decltype(momentum)::value>;
    impl::launch_elementwise("sgd_f32", n, stream, Op{param, grad, momentum_buf, c});
  });
}

void sgd_bf16_pure(uint16_t* param_bf16, const uint16_t* grad_bf16, uint16_t* momentum_bf16, int64_t n,
                   const SgdArgs& a, bool stochastic_rounding, uint64_t seed, uint64_t counter_base, void* stream) {
  const SgdConsts c = updates::sgd_consts(a);
  const uint64_t key = detail::stochastic_key(seed);
  updates::with_momentum(c, [&](auto momentum) {
    updates::with_flag(stochastic_rounding, [&](auto stochastic) {
      using Op = SgdBf16Pure<decltype(momentum)::value, decltype(stochastic)::value>;
      impl::launch_elementwise("sgd_bf16_pure", n, stream, Op{param_bf16, grad_bf16, momentum_bf16, c, key, counter_base});
    });
  });
}

void sgd_bf16_master_f32(uint16_t* param_bf16, const uint16_t* grad_bf16, float* master, float* momentum_buf,
                         int64_t n, const SgdArgs& a, void* stream) {
  const SgdConsts c = updates::sgd_consts(a);
  updates::with_momentum(c, [&](auto momentum) {
    using Op = SgdMasterF32<decltype(momentum)::value, f32_to_bf16_ties_away, bf16_to_f32>;
    impl::launch_elementwise("sgd_bf16_master_f32", n, stream, Op{param_bf16, grad_bf16, master, momentum_buf, c});
  });
}

void sgd_bf16_remainder(uint16_t* param_bf16, int16_t* remainder, const uint16_t* grad_bf16, float* momentum_buf,
                        int64_t n, const SgdArgs& a, void* stream) {
  const SgdConsts c = updates::sgd_consts(a);
  updates::with_momentum(c, [&](auto momentum) {
    using Op = SgdBf16Remainder<decltype(momentum)::value>;
    impl::launch_elementwise("sgd_bf16_remainder", n, stream, Op{param_bf16, remainder, grad_bf16, momentum_buf, c});
  });
}

void sgd_f16_master_f32(uint16_t* param_f16, const uint16_t* grad_f16, float* master, float* momentum_buf,
                        int64_t n, const SgdArgs& a, void* stream) {
  const SgdConsts c = updates::sgd_consts(a);
  updates::with_momentum(c, [&](auto momentum) {
    using Op = SgdMasterF32<decltype(momentum)::value, f32_to_f16, f16_to_f32>;
    impl::launch_elementwise("sgd_f16_master_f32", n, stream, Op{param_f16, grad_f16, master, momentum_buf, c});
  });
}

}  // namespace tessera::kernels::cuda
