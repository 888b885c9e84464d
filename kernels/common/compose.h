// kernels/common/compose.h — the rule x storage composition behind apply_update (update.h):
// rule functors (per-element fp32 math), storage functors (load/store), one dispatcher. Private.
//
// with_update(storage, args, buffers, run) picks the compile-time Rule and Storage types from
// the runtime values and calls run(UpdateOp<R, S>{...}, n) once. cpu/update.cpp's run is a plain
// loop, cuda/update.cu's a kernel launch, so the element code exists once for both devices.
#pragma once
#include <stdexcept>
#include <string>

#include "tessera/kernels/update.h"
#include "updates.h"

namespace tessera::kernels::compose {

// ---- rules: operator()(g, p, s) updates the fp32 parameter p and states s[0 .. kStates) -----
// g is the stored gradient widened to fp32 (the rule applies grad_scale).

struct AdamWRule {
  static constexpr int kStates = 2;
  updates::AdamConsts c;
  TESSERA_HD void operator()(float grad, float& p, float* s) const { updates::adam_update(c, grad, p, s[0], s[1]); }
};

template <bool kMomentum>
struct SgdRule {
  static constexpr int kStates = kMomentum ? 1 : 0;
  updates::SgdConsts c;
  TESSERA_HD void operator()(float grad, float& p, float* s) const { updates::sgd_update<kMomentum>(c, grad, p, s); }
};

struct LionRule {
  static constexpr int kStates = 1;
  updates::LionConsts c;
  TESSERA_HD void operator()(float grad, float& p, float* s) const { updates::lion_update(c, grad, p, s[0]); }
};

// ---- storages: load(i, p, s) / store(i, p, s) over K states; grad(i) widened -----------------

template <int K>
struct F32Store {
  float* param;             // (n,) fp32
  const float* grad;        // (n,) fp32
  float* state[kMaxStates];  // (n,) fp32 each, the first K used
  TESSERA_HD float grad_at(int64_t i) const { return grad[i]; }
  TESSERA_HD void load(int64_t i, float& p, float* s) const {
    p = param[i];
    for (int k = 0; k < K; ++k) s[k] = state[k][i];
  }
  TESSERA_HD void store(int64_t i, float p, const float* s) const {
    for (int k = 0; k < K; ++k) state[k][i] = s[k];
    param[i] = p;
  }
};

// 16-bit parameters and gradients with an fp32 master: Round gives the stored parameter
// (ties-away bf16, RNE fp16), Widen the gradient's value.
template <int K, uint16_t (*Round)(float), float (*Widen)(uint16_t)>
struct MasterF32Store {
  uint16_t* param;          // (n,) bf16 or fp16 bits, write-only
  const uint16_t* grad;     // (n,) bf16 or fp16 bits
  float* master;            // (n,) fp32
  float* state[kMaxStates];  // (n,) fp32 each
  TESSERA_HD float grad_at(int64_t i) const { return Widen(grad[i]); }
  TESSERA_HD void load(int64_t i, float& p, float* s) const {
    p = master[i];
    for (int k = 0; k < K; ++k) s[k] = state[k][i];
  }
  TESSERA_HD void store(int64_t i, float p, const float* s) const {
    master[i] = p;
    for (int k = 0; k < K; ++k) state[k][i] = s[k];
    param[i] = Round(p);
  }
};

template <int K>
struct Bf16RemainderStore {
  uint16_t* param;          // (n,) bf16 bits: upper half of the master
  int16_t* remainder;       // (n,) lower half of the master
  const uint16_t* grad;     // (n,) bf16 bits
  float* state[kMaxStates];  // (n,) fp32 each
  TESSERA_HD float grad_at(int64_t i) const { return bf16_to_f32(grad[i]); }
  TESSERA_HD void load(int64_t i, float& p, float* s) const {
    p = updates::merge_one(param[i], remainder[i]);
    for (int k = 0; k < K; ++k) s[k] = state[k][i];
  }
  TESSERA_HD void store(int64_t i, float p, const float* s) const {
    for (int k = 0; k < K; ++k) state[k][i] = s[k];
    int16_t rem;
    param[i] = updates::split_one(p, &rem);
    remainder[i] = rem;
  }
};

template <int K, bool kStochastic>
struct Bf16PureStore {
  uint16_t* param;             // (n,) bf16 bits
  const uint16_t* grad;        // (n,) bf16 bits
  uint16_t* state[kMaxStates];  // (n,) bf16 bits each, stored RNE
  uint64_t key, counter_base;  // detail::stochastic_key(seed), counter of element 0
  TESSERA_HD float grad_at(int64_t i) const { return bf16_to_f32(grad[i]); }
  TESSERA_HD void load(int64_t i, float& p, float* s) const {
    p = bf16_to_f32(param[i]);
    for (int k = 0; k < K; ++k) s[k] = bf16_to_f32(state[k][i]);
  }
  TESSERA_HD void store(int64_t i, float p, const float* s) const {
    for (int k = 0; k < K; ++k) state[k][i] = f32_to_bf16(s[k]);
    param[i] = updates::store_pure_bf16<kStochastic>(p, key, counter_base + static_cast<uint64_t>(i));
  }
};

// ---- the composed element operation ----------------------------------------------------------

template <class R, class S>
struct UpdateOp {
  R rule;
  S store;
  TESSERA_HD void operator()(int64_t i) const {
    float p, s[R::kStates > 0 ? R::kStates : 1];
    store.load(i, p, s);
    rule(store.grad_at(i), p, s);
    store.store(i, p, s);
  }
};

[[noreturn]] inline void invalid(const std::string& what) {
  throw std::invalid_argument("tessera::kernels::apply_update: " + what);
}

// Calls run(rule) with the compile-time rule of `a`.
template <class Run>
void with_rule(const RuleArgs& a, Run&& run) {
  switch (a.rule) {
    case Rule::AdamW:
      return run(AdamWRule{updates::adam_consts(a.adamw)});
    case Rule::Sgd: {
      const updates::SgdConsts c = updates::sgd_consts(a.sgd);
      return updates::with_momentum(c, [&](auto momentum) { run(SgdRule<decltype(momentum)::value>{c}); });
    }
    case Rule::Lion:
      return run(LionRule{updates::lion_consts(a.lion)});
  }
  invalid("unknown rule " + std::to_string(static_cast<int>(a.rule)));
}

inline int num_states_of(const RuleArgs& a) {
  int k = 0;
  with_rule(a, [&](auto rule) { k = decltype(rule)::kStates; });
  return k;
}

// p itself, or std::invalid_argument naming the buffer when it is null.
template <class P>
P need(P p, const char* what) {
  if (!p) invalid(std::string(what) + " is null");
  return p;
}
inline uint16_t* bits16(void* p, const char* what) { return static_cast<uint16_t*>(need(p, what)); }
inline const uint16_t* bits16(const void* p, const char* what) { return static_cast<const uint16_t*>(need(p, what)); }

// The first K state pointers of b, checked and cast to T*.
template <class T, int K>
void states_of(const UpdateBuffers& b, T* (&out)[kMaxStates]) {
  static const char* const kNames[kMaxStates] = {"state[0]", "state[1]"};
  for (int k = 0; k < kMaxStates; ++k) out[k] = k < K ? static_cast<T*>(need(b.state[k], kNames[k])) : nullptr;
}

// Calls run(op, n) once with the UpdateOp of (s, a) over b.
template <class Run>
void with_update(Storage s, const RuleArgs& a, const UpdateBuffers& b, Run&& run) {
  if (b.n <= 0) return;
  with_rule(a, [&](auto rule) {
    using R = decltype(rule);
    constexpr int K = R::kStates;
    uint16_t* param = bits16(b.param, "param");
    const uint16_t* grad = bits16(b.grad, "grad");
    switch (s) {
      case Storage::F32: {
        F32Store<K> st{static_cast<float*>(b.param), static_cast<const float*>(b.grad), {}};
        states_of<float, K>(b, st.state);
        return run(UpdateOp<R, F32Store<K>>{rule, st}, b.n);
      }
      case Storage::Bf16MasterF32: {
        using St = MasterF32Store<K, f32_to_bf16_ties_away, bf16_to_f32>;
        St st{param, grad, need(b.master, "master"), {}};
        states_of<float, K>(b, st.state);
        return run(UpdateOp<R, St>{rule, st}, b.n);
      }
      case Storage::F16MasterF32: {
        using St = MasterF32Store<K, f32_to_f16, f16_to_f32>;
        St st{param, grad, need(b.master, "master"), {}};
        states_of<float, K>(b, st.state);
        return run(UpdateOp<R, St>{rule, st}, b.n);
      }
      case Storage::Bf16Remainder: {
        Bf16RemainderStore<K> st{param, need(b.remainder, "remainder"), grad, {}};
        states_of<float, K>(b, st.state);
        return run(UpdateOp<R, Bf16RemainderStore<K>>{rule, st}, b.n);
      }
      case Storage::Bf16Pure:
        return updates::with_flag(b.stochastic, [&](auto stochastic) {
          using St = Bf16PureStore<K, decltype(stochastic)::value>;
          St st{param, grad, {}, detail::stochastic_key(b.seed), b.counter_base};
          states_of<uint16_t, K>(b, st.state);
          run(UpdateOp<R, St>{rule, st}, b.n);
        });
    }
    invalid("unknown storage " + std::to_string(static_cast<int>(s)));
  });
}

// ---- the master of a storage, element-wise ---------------------------------------------------

// What init/export/import do per element, for storage s: one op type per (storage, direction).
struct WidenBf16 {  // dst = widen(src)
  const uint16_t* src;
  float* dst;
  TESSERA_HD void operator()(int64_t i) const { dst[i] = bf16_to_f32(src[i]); }
};
struct WidenF16 {
  const uint16_t* src;
  float* dst;
  TESSERA_HD void operator()(int64_t i) const { dst[i] = f16_to_f32(src[i]); }
};
struct CopyF32 {
  const float* src;
  float* dst;
  TESSERA_HD void operator()(int64_t i) const { dst[i] = src[i]; }
};
struct ZeroI16 {
  int16_t* dst;
  TESSERA_HD void operator()(int64_t i) const { dst[i] = 0; }
};
struct Merge {
  const uint16_t* hi;
  const int16_t* rem;
  float* dst;
  TESSERA_HD void operator()(int64_t i) const { dst[i] = updates::merge_one(hi[i], rem[i]); }
};
struct Split {
  const float* src;
  uint16_t* hi;
  int16_t* rem;
  TESSERA_HD void operator()(int64_t i) const {
    int16_t r;
    hi[i] = updates::split_one(src[i], &r);
    rem[i] = r;
  }
};
// master = src and param = Round(src) (master may be null: then param only).
template <uint16_t (*Round)(float)>
struct SetMaster {
  const float* src;
  float* master;
  uint16_t* param;
  TESSERA_HD void operator()(int64_t i) const {
    const float x = src[i];
    if (master) master[i] = x;
    param[i] = Round(x);
  }
};

template <class Run>
void with_init_master(Storage s, const UpdateBuffers& b, Run&& run) {
  if (b.n <= 0) return;
  switch (s) {
    case Storage::F32:
    case Storage::Bf16Pure:
      return;
    case Storage::Bf16MasterF32:
      return run(WidenBf16{bits16(b.param, "param"), need(b.master, "master")}, b.n);
    case Storage::F16MasterF32:
      return run(WidenF16{bits16(b.param, "param"), need(b.master, "master")}, b.n);
    case Storage::Bf16Remainder:
      return run(ZeroI16{need(b.remainder, "remainder")}, b.n);
  }
  invalid("unknown storage " + std::to_string(static_cast<int>(s)));
}

template <class Run>
void with_export_master(Storage s, const UpdateBuffers& b, float* out, Run&& run) {
  if (b.n <= 0) return;
  if (!out) invalid("out is null");
  switch (s) {
    case Storage::F32:
      return run(CopyF32{static_cast<float*>(need(b.param, "param")), out}, b.n);
    case Storage::Bf16MasterF32:
    case Storage::F16MasterF32:
      return run(CopyF32{need(b.master, "master"), out}, b.n);
    case Storage::Bf16Remainder:
      return run(Merge{bits16(b.param, "param"), need(b.remainder, "remainder"), out}, b.n);
    case Storage::Bf16Pure:
      return run(WidenBf16{bits16(b.param, "param"), out}, b.n);
  }
  invalid("unknown storage " + std::to_string(static_cast<int>(s)));
}

template <class Run>
void with_import_master(Storage s, const UpdateBuffers& b, const float* in, Run&& run) {
  if (b.n <= 0) return;
  if (!in) invalid("in is null");
  switch (s) {
    case Storage::F32:
      return run(CopyF32{in, static_cast<float*>(need(b.param, "param"))}, b.n);
    case Storage::Bf16MasterF32:
      return run(SetMaster<f32_to_bf16_ties_away>{in, need(b.master, "master"), bits16(b.param, "param")},
                 b.n);
    case Storage::F16MasterF32:
      return run(SetMaster<f32_to_f16>{in, need(b.master, "master"), bits16(b.param, "param")}, b.n);
    case Storage::Bf16Remainder:
      return run(Split{in, bits16(b.param, "param"), need(b.remainder, "remainder")}, b.n);
    case Storage::Bf16Pure:
      return run(SetMaster<f32_to_bf16>{in, nullptr, bits16(b.param, "param")}, b.n);
  }
  invalid("unknown storage " + std::to_string(static_cast<int>(s)));
}

}  // namespace tessera::kernels::compose
