// plugins/precision/common/flat_backend.hpp — shared by the in-tree precision backends (a
// header of the plugins, not of the SDK): per-shard state buffers and optimizer arguments.
#pragma once
#include <tessera/kernels/optim.h>
#include <tessera/kernels/precision.h>
#include <tessera/plugin.hpp>

#include <map>
#include <string>
#include <vector>

namespace tessera::precision {

// Base of a backend: allocates named state buffers per shard through the host (so the core
// accounts for and checkpoints them) and releases them at the end.
class FlatBackend : public sdk::Precision {
 public:
  explicit FlatBackend(const sdk::Host& host) : host_(host) {}
  ~FlatBackend() override {
    for (auto& [shard, bufs] : states_)
      for (auto& [name, t] : bufs) host_.release(t);
  }

 protected:
  // A zero-filled state buffer "<shard>.<name>" of the shard's length.
  template <class T>
  T* alloc(const tsr_flat_shard& shard, const std::string& name, int32_t category, int32_t dtype) {
    tsr_tensor* t = nullptr;
    const tsr_host* h = host_.raw();
    tsr_status s = h->alloc_state(h->ctx, (std::string(shard.name) + "." + name).c_str(), category, dtype, shard.numel, &t);
    if (s != TSR_OK) throw sdk::Error(s, "could not allocate state '" + name + "' for shard '" + shard.name + "'");
    states_[shard.name][name] = t;
    return static_cast<T*>(h->tensor_data(t));
  }
  template <class T>
  T* state(const tsr_flat_shard& shard, const std::string& name) const {
    auto it = states_.find(shard.name);
    if (it == states_.end() || !it->second.count(name))
      throw sdk::Error(TSR_ERR_INVALID_ARGUMENT, "shard '" + std::string(shard.name) + "' was not initialised");
    return static_cast<T*>(host_.raw()->tensor_data(it->second.at(name)));
  }
  template <class T>
  T* params(const tsr_flat_shard& shard) const { return static_cast<T*>(host_.raw()->tensor_data(shard.params)); }
  template <class T>
  const T* grads(const tsr_flat_shard& shard) const { return static_cast<const T*>(host_.raw()->tensor_data(shard.grads)); }

  void expect(const tsr_flat_shard& shard, int32_t param_dtype, int32_t grad_dtype, const char* backend) const {
    if (shard.param_dtype != param_dtype || shard.grad_dtype != grad_dtype)
      throw sdk::Error(TSR_ERR_TYPE, std::string(backend) + " backend got shard '" + shard.name + "' of unexpected dtypes");
  }
  static kernels::AdamWArgs adamw_args(const tsr_optim_step& o) {
    kernels::AdamWArgs a;
    a.lr = o.lr;
    a.beta1 = o.beta1;
    a.beta2 = o.beta2;
    a.eps = o.eps;
    a.weight_decay = o.weight_decay;
    a.step = o.step;
    a.grad_scale = o.grad_scale;
    return a;
  }
  static kernels::SgdArgs sgd_args(const tsr_optim_step& o) {
    kernels::SgdArgs a;
    a.lr = o.lr;
    a.momentum = o.momentum;
    a.weight_decay = o.weight_decay;
    a.nesterov = o.nesterov != 0;
    a.first_step = o.step == 1;
    a.grad_scale = o.grad_scale;
    return a;
  }
  [[noreturn]] static void unsupported(const tsr_optim_step& o, const char* backend) {
    throw sdk::Error(TSR_ERR_UNSUPPORTED, std::string(backend) + " backend has no update for optimizer algorithm " +
                                              std::to_string(o.algorithm));
  }

  const sdk::Host& host_;

 private:
  std::map<std::string, std::map<std::string, tsr_tensor*>> states_;
};

// A backend with 16-bit parameters and gradients, an fp32 master copy and fp32 moments (bf16,
// fp16): the master is initialised from the parameters and every update runs on it.
struct Bf16Traits {
  static constexpr int32_t kDtype = TSR_DTYPE_BF16;
  static constexpr const char* kName = "bf16";
  static void widen(const uint16_t* p, float* m, int64_t n) { kernels::convert_bf16_to_f32(p, m, n); }
  static constexpr auto adamw = &kernels::adamw_bf16_master_f32;
  static constexpr auto sgd = &kernels::sgd_bf16_master_f32;
};
struct F16Traits {
  static constexpr int32_t kDtype = TSR_DTYPE_F16;
  static constexpr const char* kName = "fp16";
  static void widen(const uint16_t* p, float* m, int64_t n) { kernels::convert_f16_to_f32(p, m, n); }
  static constexpr auto adamw = &kernels::adamw_f16_master_f32;
  static constexpr auto sgd = &kernels::sgd_f16_master_f32;
};

template <class Traits>
class MasterF32Backend : public FlatBackend {
 public:
  MasterF32Backend(const sdk::Host& host, bool autocast) : FlatBackend(host), autocast_(autocast) {}

  tsr_precision_info describe() override {
    return {sizeof(tsr_precision_info), Traits::kDtype, Traits::kDtype, TSR_MASTER_FP32, TSR_DTYPE_F32,
            autocast_ ? Traits::kDtype : TSR_DTYPE_NONE};
  }
  void init_shard(const tsr_flat_shard& shard) override {
    expect(shard, Traits::kDtype, Traits::kDtype, Traits::kName);
    float* master = alloc<float>(shard, "master", TSR_STATE_MASTER, TSR_DTYPE_F32);
    Traits::widen(params<uint16_t>(shard), master, shard.numel);
    alloc<float>(shard, "exp_avg", TSR_STATE_OPTIMIZER, TSR_DTYPE_F32);
    alloc<float>(shard, "exp_avg_sq", TSR_STATE_OPTIMIZER, TSR_DTYPE_F32);
  }
  void step(const tsr_flat_shard& shard, const tsr_optim_step& opt) override {
    auto* p = params<uint16_t>(shard);
    const auto* g = grads<uint16_t>(shard);
    auto* master = state<float>(shard, "master");
    auto* m = state<float>(shard, "exp_avg");
    if (opt.algorithm == TSR_OPTIM_ADAMW)
      Traits::adamw(p, g, master, m, state<float>(shard, "exp_avg_sq"), shard.numel, adamw_args(opt));
    else if (opt.algorithm == TSR_OPTIM_SGD)
      Traits::sgd(p, g, master, m, shard.numel, sgd_args(opt));  // exp_avg doubles as the momentum buffer
    else
      unsupported(opt, Traits::kName);
  }

 private:
  bool autocast_;
};

}  // namespace tessera::precision
