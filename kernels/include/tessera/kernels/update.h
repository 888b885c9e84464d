// tessera/kernels/update.h — the one optimizer-update API: an optimizer *rule* (AdamW, SGD, Lion)
// composed with a *storage* format (how parameter, master and states are read and written back).
#pragma once
#include <cstdint>

#include "tessera/kernels/optim.h"

// How it works. A rule is the per-element math on fp32 values: it reads the (scaled) gradient,
// the parameter and its states, and writes the parameter and the states. A storage loads those
// fp32 values from the buffers of a number format and stores them back with that format's
// rounding. apply_update composes the two into one loop (kernels/cpu/update.cpp) and
// cuda::apply_update into one kernel (kernels/cuda/update.cu); both use the same element code
// (kernels/common/compose.h), so their results are equal bit for bit. A new optimizer is one
// rule, a new format one storage, and either works with all of the other kind, on both devices.
//
// The element math does not look beyond element i to update element i, so any split of a
// buffer into shards gives the bits of one call over the whole of it (stochastic counters aside:
// give shards disjoint counter ranges).
//
// ---- rules and their state slots (UpdateBuffers::state[k]) ---------------------------------
//
//   Rule::AdamW  2 states. state[0] = exp_avg (m), state[1] = exp_avg_sq (v); zero before
//                step 1. As torch.optim.AdamW (decoupled weight decay, bias correction by
//                AdamWArgs::step).
//   Rule::Sgd    1 state when momentum != 0, else 0. state[0] = the momentum buffer (read only
//                after the first step: SgdArgs::first_step sets it to the gradient). As
//                torch.optim.SGD, dampening 0: L2 weight decay added to the gradient, nesterov.
//   Rule::Lion   1 state. state[0] = the momentum m (zero before step 1). Chen et al. 2023:
//                c = b1*m + (1-b1)*g; p = p*(1 - lr*wd) - lr*sign(c); m = b2*m + (1-b2)*g, with
//                sign(±0) = 0 and sign(NaN) = NaN.
//
// Every rule first scales the gradient: g = float(grad) * float(grad_scale). Scalars (1 - beta,
// bias corrections, 1 - lr*wd) are computed once in double and rounded once to fp32; the element
// expressions are fp32 in a fixed order (no contraction into multiply-adds on either device).
// Non-finite gradients propagate into the results: check them first (all_finite_*).
//
// ---- storages: what each buffer holds (all (n,) and contiguous) -----------------------------
//
//   Storage          param / grad        master              states      param written as
//   F32              fp32 / fp32         - (param is it)     fp32        the fp32 result
//   Bf16MasterF32    bf16 / bf16         fp32                fp32        ties-away bf16 of master
//   Bf16Remainder    bf16 / bf16         remainder (int16):  fp32        split (ties-away bf16,
//                                        param + remainder                remainder = low bits)
//                                        = exact fp32 master
//   Bf16Pure         bf16 / bf16         -                   bf16 (RNE)  RNE bf16, or stochastic
//   F16MasterF32     fp16 / fp16         fp32                fp32        RNE fp16 of master
//
// bf16/fp16 values are their uint16_t bit patterns. For the master storages the parameter is
// write-only during an update (the rule runs on the master). Ties-away makes Bf16MasterF32 and
// Bf16Remainder bitwise equal in parameters, merged master and states (see precision.h, split).
// Bf16Pure with stochastic set stores element i as f32_to_bf16_stochastic(p, seed,
// counter_base + i); advance counter_base between steps.
namespace tessera::kernels {

enum class Rule : int32_t { AdamW = 0, Sgd = 1, Lion = 2 };

// Hyper-parameters of one Lion update.
struct LionArgs {
  double lr = 1e-4;
  double beta1 = 0.9, beta2 = 0.99;
  double weight_decay = 0.0;  // decoupled, as AdamW's
  double grad_scale = 1.0;
};

// A rule and its hyper-parameters; converts implicitly from each rule's argument struct.
struct RuleArgs {
  Rule rule = Rule::AdamW;
  AdamWArgs adamw;  // read when rule == AdamW
  SgdArgs sgd;      // read when rule == Sgd
  LionArgs lion;    // read when rule == Lion
  RuleArgs() = default;
  RuleArgs(const AdamWArgs& a) : rule(Rule::AdamW), adamw(a) {}  // NOLINT: implicit on purpose
  RuleArgs(const SgdArgs& a) : rule(Rule::Sgd), sgd(a) {}        // NOLINT
  RuleArgs(const LionArgs& a) : rule(Rule::Lion), lion(a) {}     // NOLINT
};

// The number of state buffers (state[0 .. num_states)) the rule reads and writes; the others are
// never touched and may be null. Throws std::invalid_argument for an unknown rule.
int num_states(const RuleArgs& a);
inline constexpr int kMaxStates = 2;

enum class Storage : int32_t { F32 = 0, Bf16MasterF32 = 1, Bf16Remainder = 2, Bf16Pure = 3, F16MasterF32 = 4 };

// The buffers of one shard, each (n,) as the storage table above says; pointers a storage does
// not use may be null. Device pointers for cuda::apply_update.
struct UpdateBuffers {
  void* param = nullptr;          // fp32, or bf16/fp16 bits
  const void* grad = nullptr;     // the param's dtype
  float* master = nullptr;        // fp32 master: Bf16MasterF32, F16MasterF32
  int16_t* remainder = nullptr;   // low halves of the master: Bf16Remainder
  void* state[kMaxStates] = {nullptr, nullptr};  // fp32, or bf16 bits for Bf16Pure
  int64_t n = 0;                  // element count; n <= 0 does nothing
  // Bf16Pure only: stochastic rounding of the parameter, element i at counter_base + i.
  bool stochastic = false;
  uint64_t seed = 0, counter_base = 0;
};

// One optimizer step of `a` on the buffers stored as `s`. Throws std::invalid_argument when a
// buffer the combination needs is null (n > 0), or for an unknown rule or storage.
void apply_update(Storage s, const RuleArgs& a, const UpdateBuffers& b);

// ---- the fp32 master of a storage (checkpoints, and a backend's first step) -----------------
// Only param, master and remainder of `b` are used (and n).

// master = the parameters widened (Bf16MasterF32, F16MasterF32); remainder = 0
// (Bf16Remainder: the exact master of bf16 parameters); nothing for F32 and Bf16Pure.
void init_master(Storage s, const UpdateBuffers& b);
// out (n,) fp32 = the exact master: F32 param; Bf16MasterF32 / F16MasterF32 master;
// Bf16Remainder merge(param, remainder); Bf16Pure the widened param.
void export_master(Storage s, const UpdateBuffers& b, float* out);
// From in (n,) fp32: the master (where there is one) = in, and the parameters stored as an
// update stores them: F32 copy; Bf16MasterF32 ties-away bf16; Bf16Remainder split; Bf16Pure
// RNE bf16; F16MasterF32 RNE fp16. export_master after import_master gives `in` back bit for
// bit, except for Bf16Pure (RNE) and NaN payloads.
void import_master(Storage s, const UpdateBuffers& b, const float* in);

}  // namespace tessera::kernels
