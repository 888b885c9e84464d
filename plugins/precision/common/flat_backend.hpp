// plugins/precision/common/flat_backend.hpp — shared by the in-tree precision backends (a
// header of the plugins, not of the SDK): a backend is a kernels::Storage plus its options.
//
// FlatBackend does everything a storage needs: allocates the master and exactly the states the
// optimizer's rule uses, runs kernels::apply_update on the CPU or CUDA, and converts the master
// to and from fp32. TSR_OPTIM_* becomes a kernels::Rule in one place (rule_args below), so a new
// optimizer needs a rule in kernels/ and that line, and no edit to any backend.
#pragma once
#include <tessera/kernels/cuda.h>
#include <tessera/kernels/precision.h>
#include <tessera/kernels/update.h>
#include <tessera/plugin.hpp>

#include <c10/core/DeviceGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <map>
#include <string>

namespace tessera::precision {

namespace detail {
// c10::Stream::native_handle() (recent LibTorch) is the cudaStream_t of any CUDA stream.
template <class Stream>
auto native_handle(const Stream& s, int) -> decltype(s.native_handle()) {
  return s.native_handle();
}
// Without it, only the default stream (id 0) can be named: for the CUDA runtime it is the legacy
// default stream, nullptr.
template <class Stream>
void* native_handle(const Stream& s, long) {
  if (s.id() == 0) return nullptr;
  throw sdk::Error(TSR_ERR_UNSUPPORTED,
                   "the current CUDA stream is not the default stream, and this LibTorch has no "
                   "c10::Stream::native_handle() to name it to the kernels");
}

// LibTorch's current stream on a CUDA device as a cudaStream_t, through c10's device-neutral
// interface: the plugins also build against CPU-only LibTorch, which has no CUDA headers.
inline void* current_cuda_stream(const at::Device& device) {
  return native_handle(c10::impl::VirtualGuardImpl(device.type()).getStream(device), 0);
}
}  // namespace detail

// The optimizer of a step as a kernels rule: the one place TSR_OPTIM_* maps to kernels::Rule.
inline kernels::RuleArgs rule_args(const tsr_optim_step& o) {
  // The argument structs in their member order (kernels/optim.h, kernels/update.h).
  switch (o.algorithm) {
    case TSR_OPTIM_ADAMW:
      return kernels::AdamWArgs{o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, o.step, o.grad_scale};
    case TSR_OPTIM_SGD:  // the momentum buffer starts as the first gradient
      return kernels::SgdArgs{o.lr, o.momentum, o.weight_decay, o.nesterov != 0, o.step == 1, o.grad_scale};
    case TSR_OPTIM_LION:
      return kernels::LionArgs{o.lr, o.beta1, o.beta2, o.weight_decay, o.grad_scale};
  }
  throw sdk::Error(TSR_ERR_UNSUPPORTED, "no optimizer rule for algorithm " + std::to_string(o.algorithm));
}

// The state buffers' names, by slot (kernels/update.h says what each slot holds per rule). Slot
// 0 keeps the name "exp_avg" for every rule (AdamW's first moment, SGD's and Lion's momentum
// buffer) so that checkpoints of SGD runs written before ABI 1.1 still load.
inline const char* state_name(int slot) { return slot == 0 ? "exp_avg" : "exp_avg_sq"; }

// What a storage keeps per shard beside the parameters and gradients.
struct StorageLayout {
  kernels::Storage storage;
  const char* backend;   // name in messages
  int32_t param_dtype;   // TSR_DTYPE_*, also the gradients'
  int32_t master_dtype;  // TSR_DTYPE_F32 ("master"), TSR_DTYPE_I16 ("remainder") or TSR_DTYPE_NONE
  int32_t state_dtype;   // of every optimizer state
};

inline constexpr StorageLayout kFp32Layout{kernels::Storage::F32, "fp32", TSR_DTYPE_F32, TSR_DTYPE_NONE, TSR_DTYPE_F32};
inline constexpr StorageLayout kBf16Layout{kernels::Storage::Bf16MasterF32, "bf16", TSR_DTYPE_BF16, TSR_DTYPE_F32,
                                           TSR_DTYPE_F32};
inline constexpr StorageLayout kBf16RemainderLayout{kernels::Storage::Bf16Remainder, "bf16_remainder", TSR_DTYPE_BF16,
                                                    TSR_DTYPE_I16, TSR_DTYPE_F32};
inline constexpr StorageLayout kBf16PureLayout{kernels::Storage::Bf16Pure, "bf16_pure", TSR_DTYPE_BF16, TSR_DTYPE_NONE,
                                               TSR_DTYPE_BF16};
inline constexpr StorageLayout kFp16Layout{kernels::Storage::F16MasterF32, "fp16", TSR_DTYPE_F16, TSR_DTYPE_F32,
                                           TSR_DTYPE_F32};

// Base of every in-tree backend: one storage layout, all of the ABI's shard calls.
class FlatBackend : public sdk::Precision {
 public:
  FlatBackend(const sdk::Host& host, const StorageLayout& layout, int32_t autocast_dtype)
      : host_(host), layout_(layout), autocast_dtype_(autocast_dtype) {}
  ~FlatBackend() override {
    for (auto& [shard, bufs] : states_)
      for (auto& [name, t] : bufs) host_.release(t);
  }

 protected:
  // Runs one kernel where the shard lives (its parameters, gradients and states share a device):
  // cpu() for a CPU shard; cuda(stream) for a CUDA shard, with its device current and `stream`
  // LibTorch's current stream there. `cuda` must be a generic lambda, [&](auto stream) {...}: a
  // build without CUDA kernels never instantiates it, so the kernels::cuda functions it calls
  // need no definition there, and a CUDA shard is a clear error instead.
  template <class Cpu, class Cuda>
  auto on_device(const tsr_flat_shard& shard, Cpu&& cpu, Cuda&& cuda) const {
    const at::Device device = host_.unwrap(shard.params).device();
    if (device.is_cpu()) return cpu();
    const std::string where = "shard '" + std::string(shard.name) + "' is on " + device.str();
    if (!device.is_cuda())
      throw sdk::Error(TSR_ERR_UNSUPPORTED,
                       std::string(layout_.backend) + " backend: " + where + "; it runs on CPU and CUDA");
#ifdef TESSERA_HAVE_CUDA_KERNELS
    const c10::DeviceGuard guard(device);
    return cuda(detail::current_cuda_stream(device));
#else
    (void)cuda;
    throw sdk::Error(TSR_ERR_UNSUPPORTED, std::string(layout_.backend) +
                                              " backend was built without CUDA kernels (no CUDA compiler found, or "
                                              "TESSERA_CUDA=OFF), but " + where);
#endif
  }

 public:
  tsr_precision_info describe() override {
    const int32_t master = layout_.master_dtype == TSR_DTYPE_F32   ? TSR_MASTER_FP32
                           : layout_.master_dtype == TSR_DTYPE_I16 ? TSR_MASTER_REMAINDER16
                                                                   : TSR_MASTER_NONE;
    return {sizeof(tsr_precision_info), layout_.param_dtype, layout_.param_dtype, master, layout_.state_dtype,
            autocast_dtype_};
  }

  // ABI 1.0: the optimizer is not known yet, so allocate as for AdamW (whose two states cover
  // every rule's).
  void init_shard(const tsr_flat_shard& shard) override {
    tsr_optim_step adamw{};
    adamw.struct_size = sizeof adamw;
    adamw.algorithm = TSR_OPTIM_ADAMW;
    init_shard_for(shard, adamw);
  }

  void init_shard_for(const tsr_flat_shard& shard, const tsr_optim_step& opt) override {
    if (shard.param_dtype != layout_.param_dtype || shard.grad_dtype != layout_.param_dtype)
      throw sdk::Error(TSR_ERR_TYPE, std::string(layout_.backend) + " backend got shard '" + shard.name +
                                         "' of unexpected dtypes");
    states_[shard.name];  // the shard is known even when it needs no buffer
    if (layout_.master_dtype != TSR_DTYPE_NONE)
      alloc(shard, master_name(), TSR_STATE_MASTER, layout_.master_dtype);
    const int k = kernels::num_states(rule_args(opt));
    for (int slot = 0; slot < k; ++slot) alloc(shard, state_name(slot), TSR_STATE_OPTIMIZER, layout_.state_dtype);
    const kernels::UpdateBuffers b = buffers(shard, 0);
    on_device(shard, [&] { kernels::init_master(layout_.storage, b); },
              [&](auto stream) { kernels::cuda::init_master(layout_.storage, b, stream); });
  }

  void step(const tsr_flat_shard& shard, const tsr_optim_step& opt) override {
    const kernels::RuleArgs rule = rule_args(opt);
    kernels::UpdateBuffers b = buffers(shard, kernels::num_states(rule));
    rounding(shard, opt, b);
    on_device(shard, [&] { kernels::apply_update(layout_.storage, rule, b); },
              [&](auto stream) { kernels::cuda::apply_update(layout_.storage, rule, b, stream); });
  }

  void export_master(const tsr_flat_shard& shard, tsr_tensor* out) override {
    const kernels::UpdateBuffers b = buffers(shard, 0);
    float* dst = master_arg(shard, out, "export_master");
    on_device(shard, [&] { kernels::export_master(layout_.storage, b, dst); },
              [&](auto stream) { kernels::cuda::export_master(layout_.storage, b, dst, stream); });
  }

  void import_master(const tsr_flat_shard& shard, const tsr_tensor* in) override {
    const kernels::UpdateBuffers b = buffers(shard, 0);
    const float* src = master_arg(shard, in, "import_master");
    on_device(shard, [&] { kernels::import_master(layout_.storage, b, src); },
              [&](auto stream) { kernels::cuda::import_master(layout_.storage, b, src, stream); });
  }

 protected:
  // Sets the stochastic-rounding fields of b for this step (Bf16Pure); none by default.
  virtual void rounding(const tsr_flat_shard& /*shard*/, const tsr_optim_step& /*opt*/, kernels::UpdateBuffers& /*b*/) {}

  template <class T>
  const T* grads(const tsr_flat_shard& shard) const { return static_cast<const T*>(data(shard.grads)); }

  const sdk::Host& host_;

 private:
  const char* master_name() const { return layout_.master_dtype == TSR_DTYPE_I16 ? "remainder" : "master"; }
  void* data(const tsr_tensor* t) const { return host_.raw()->tensor_data(const_cast<tsr_tensor*>(t)); }

  // A zero-filled state buffer "<shard>.<name>" of the shard's length.
  void alloc(const tsr_flat_shard& shard, const std::string& name, int32_t category, int32_t dtype) {
    tsr_tensor* t = nullptr;
    const tsr_host* h = host_.raw();
    tsr_status s = h->alloc_state(h->ctx, (std::string(shard.name) + "." + name).c_str(), category, dtype, shard.numel, &t);
    if (s != TSR_OK) throw sdk::Error(s, "could not allocate state '" + name + "' for shard '" + shard.name + "'");
    states_[shard.name][name] = t;
  }
  void* state(const tsr_flat_shard& shard, const std::string& name) const {
    auto it = states_.find(shard.name);
    if (it == states_.end())
      throw sdk::Error(TSR_ERR_INVALID_ARGUMENT, "shard '" + std::string(shard.name) + "' was not initialised");
    auto buf = it->second.find(name);
    if (buf == it->second.end())
      throw sdk::Error(TSR_ERR_INVALID_ARGUMENT, "shard '" + std::string(shard.name) + "' has no state '" + name +
                                                     "': it was initialised for another optimizer");
    return data(buf->second);
  }

  // The shard's buffers as the kernels take them, with its first `states` state slots.
  kernels::UpdateBuffers buffers(const tsr_flat_shard& shard, int states) const {
    kernels::UpdateBuffers b;
    b.param = data(shard.params);
    b.grad = data(shard.grads);
    b.n = shard.numel;
    if (layout_.master_dtype == TSR_DTYPE_F32) b.master = static_cast<float*>(state(shard, master_name()));
    if (layout_.master_dtype == TSR_DTYPE_I16) b.remainder = static_cast<int16_t*>(state(shard, master_name()));
    if (!states_.count(shard.name))
      throw sdk::Error(TSR_ERR_INVALID_ARGUMENT, "shard '" + std::string(shard.name) + "' was not initialised");
    for (int slot = 0; slot < states; ++slot) b.state[slot] = state(shard, state_name(slot));
    return b;
  }

  // The fp32 (shard.numel,) tensor of export/import, checked against the shard.
  float* master_arg(const tsr_flat_shard& shard, const tsr_tensor* t, const char* what) const {
    const at::Tensor x = host_.unwrap(t);
    const at::Tensor p = host_.unwrap(shard.params);
    if (x.scalar_type() != at::kFloat || x.dim() != 1 || x.numel() != shard.numel || !x.is_contiguous() ||
        x.device() != p.device())
      throw sdk::Error(TSR_ERR_INVALID_ARGUMENT, std::string(layout_.backend) + " backend: " + what + " of shard '" +
                                                     shard.name + "' needs a contiguous (" +
                                                     std::to_string(shard.numel) + ",) fp32 tensor on " +
                                                     p.device().str());
    return static_cast<float*>(data(t));
  }

  StorageLayout layout_;
  int32_t autocast_dtype_;
  std::map<std::string, std::map<std::string, tsr_tensor*>> states_;
};

}  // namespace tessera::precision
