// plugins/precision/common/flat_backend.hpp — shared by the in-tree precision backends (a
// header of the plugins, not of the SDK): per-shard state buffers, optimizer arguments, and the
// choice of CPU or CUDA kernel by the device the shard lives on.
#pragma once
#include <tessera/kernels/cuda.h>
#include <tessera/kernels/optim.h>
#include <tessera/kernels/precision.h>
#include <tessera/plugin.hpp>

#include <c10/core/DeviceGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <map>
#include <string>
#include <vector>

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

  // Runs one kernel where the shard lives (its parameters, gradients and states share a device):
  // cpu() for a CPU shard; cuda(stream) for a CUDA shard, with its device current and `stream`
  // LibTorch's current stream there. `cuda` must be a generic lambda, [&](auto stream) {...}: a
  // build without CUDA kernels never instantiates it, so the kernels::cuda functions it calls
  // need no definition there, and a CUDA shard is a clear error instead.
  template <class Cpu, class Cuda>
  auto on_device(const tsr_flat_shard& shard, const char* backend, Cpu&& cpu, Cuda&& cuda) const {
    const at::Device device = host_.unwrap(shard.params).device();
    if (device.is_cpu()) return cpu();
    const std::string where = "shard '" + std::string(shard.name) + "' is on " + device.str();
    if (!device.is_cuda())
      throw sdk::Error(TSR_ERR_UNSUPPORTED, std::string(backend) + " backend: " + where + "; it runs on CPU and CUDA");
#ifdef TESSERA_HAVE_CUDA_KERNELS
    const c10::DeviceGuard guard(device);
    return cuda(detail::current_cuda_stream(device));
#else
    (void)cuda;
    throw sdk::Error(TSR_ERR_UNSUPPORTED, std::string(backend) +
                                              " backend was built without CUDA kernels (no CUDA compiler found, or "
                                              "TESSERA_CUDA=OFF), but " + where);
#endif
  }

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
    const char* name = o.algorithm == TSR_OPTIM_ADAMW ? "adamw" : o.algorithm == TSR_OPTIM_SGD ? "sgd" : "unknown";
    throw sdk::Error(TSR_ERR_UNSUPPORTED, std::string(backend) + " backend has no update for optimizer '" + name +
                                              "' (algorithm " + std::to_string(o.algorithm) + ")");
  }

  const sdk::Host& host_;

 private:
  std::map<std::string, std::map<std::string, tsr_tensor*>> states_;
};

// A backend with 16-bit parameters and gradients, an fp32 master copy and fp32 moments (bf16,
// fp16): the master is initialised from the parameters and every update runs on it. The traits
// name each kernel for the CPU and its CUDA twin (stream last); the twins are templates so that
// they are compiled only where on_device's CUDA path uses them.
struct Bf16Traits {
  static constexpr int32_t kDtype = TSR_DTYPE_BF16;
  static constexpr const char* kName = "bf16";
  static constexpr auto widen = &kernels::convert_bf16_to_f32;
  static constexpr auto adamw = &kernels::adamw_bf16_master_f32;
  static constexpr auto sgd = &kernels::sgd_bf16_master_f32;
  template <class... A> static void cuda_widen(A... a) { kernels::cuda::convert_bf16_to_f32(a...); }
  template <class... A> static void cuda_adamw(A... a) { kernels::cuda::adamw_bf16_master_f32(a...); }
  template <class... A> static void cuda_sgd(A... a) { kernels::cuda::sgd_bf16_master_f32(a...); }
};
struct F16Traits {
  static constexpr int32_t kDtype = TSR_DTYPE_F16;
  static constexpr const char* kName = "fp16";
  static constexpr auto widen = &kernels::convert_f16_to_f32;
  static constexpr auto adamw = &kernels::adamw_f16_master_f32;
  static constexpr auto sgd = &kernels::sgd_f16_master_f32;
  template <class... A> static void cuda_widen(A... a) { kernels::cuda::convert_f16_to_f32(a...); }
  template <class... A> static void cuda_adamw(A... a) { kernels::cuda::adamw_f16_master_f32(a...); }
  template <class... A> static void cuda_sgd(A... a) { kernels::cuda::sgd_f16_master_f32(a...); }
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
    const uint16_t* p = params<uint16_t>(shard);
    float* master = alloc<float>(shard, "master", TSR_STATE_MASTER, TSR_DTYPE_F32);
    const int64_t n = shard.numel;
    on_device(shard, Traits::kName, [&] { Traits::widen(p, master, n); },
              [&](auto stream) { Traits::cuda_widen(p, master, n, stream); });
    alloc<float>(shard, "exp_avg", TSR_STATE_OPTIMIZER, TSR_DTYPE_F32);
    alloc<float>(shard, "exp_avg_sq", TSR_STATE_OPTIMIZER, TSR_DTYPE_F32);
  }
  void step(const tsr_flat_shard& shard, const tsr_optim_step& opt) override {
    auto* p = params<uint16_t>(shard);
    const auto* g = grads<uint16_t>(shard);
    auto* master = state<float>(shard, "master");
    auto* m = state<float>(shard, "exp_avg");
    const int64_t n = shard.numel;
    if (opt.algorithm == TSR_OPTIM_ADAMW) {
      auto* v = state<float>(shard, "exp_avg_sq");
      const kernels::AdamWArgs a = adamw_args(opt);
      on_device(shard, Traits::kName, [&] { Traits::adamw(p, g, master, m, v, n, a); },
                [&](auto stream) { Traits::cuda_adamw(p, g, master, m, v, n, a, stream); });
    } else if (opt.algorithm == TSR_OPTIM_SGD) {
      const kernels::SgdArgs a = sgd_args(opt);  // exp_avg doubles as the momentum buffer
      on_device(shard, Traits::kName, [&] { Traits::sgd(p, g, master, m, n, a); },
                [&](auto stream) { Traits::cuda_sgd(p, g, master, m, n, a, stream); });
    } else {
      unsupported(opt, Traits::kName);
    }
  }

 private:
  bool autocast_;
};

}  // namespace tessera::precision
