// checkpoint.cpp — the checkpoint autograd function: a no-grad forward that keeps its input, the
// generator state and the autocast state; a backward that recomputes under them and backpropagates.
#include "checkpoint.hpp"

#include <ATen/autocast_mode.h>
#include <ATen/core/ivalue.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/version.h>

#include <mutex>
#include <utility>

namespace tessera::transformer {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// ---- autocast state of one device type (the per-device API of LibTorch >= 2.4, the CPU/GPU pair
// of functions before it) -------------------------------------------------------------------------
struct AutocastState {
  bool enabled = false;
  at::ScalarType dtype = at::kFloat;
};

AutocastState autocast_state(at::DeviceType type) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  return {at::autocast::is_autocast_enabled(type), at::autocast::get_autocast_dtype(type)};
#else
  if (type == at::kCPU) return {at::autocast::is_cpu_enabled(), at::autocast::get_autocast_cpu_dtype()};
  return {at::autocast::is_enabled(), at::autocast::get_autocast_gpu_dtype()};
#endif
}

void set_autocast_state(at::DeviceType type, const AutocastState& s) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  at::autocast::set_autocast_enabled(type, s.enabled);
  at::autocast::set_autocast_dtype(type, s.dtype);
#else
  if (type == at::kCPU) {
    at::autocast::set_cpu_enabled(s.enabled);
    at::autocast::set_autocast_cpu_dtype(s.dtype);
  } else {
    at::autocast::set_enabled(s.enabled);
    at::autocast::set_autocast_gpu_dtype(s.dtype);
  }
#endif
}

// Autocast's cast cache off for the scope: a weight cast without grad in the checkpointed forward
// must not be reused by a later op that needs its gradient, and casts made in the recomputation
// must not outlive the backward (the weights change at the next update).
class NoCastCache {
 public:
  NoCastCache() : prev_(at::autocast::is_autocast_cache_enabled()) { at::autocast::set_autocast_cache_enabled(false); }
  ~NoCastCache() { at::autocast::set_autocast_cache_enabled(prev_); }

 private:
  bool prev_;
};

// Autocast as the forward had it, for the scope (backward runs with autocast off, and on CUDA on
// the autograd engine's own thread).
class AutocastAs {
 public:
  AutocastAs(at::DeviceType type, AutocastState s) : type_(type), prev_(autocast_state(type)) {
    set_autocast_state(type, s);
  }
  ~AutocastAs() { set_autocast_state(type_, prev_); }

 private:
  at::DeviceType type_;
  AutocastState prev_;
};

at::Generator device_generator(at::Device device) { return at::globalContext().defaultGenerator(device); }

at::Tensor generator_state(at::Device device) {
  at::Generator gen = device_generator(device);
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

// The device generator set to `state` for the scope, and put back to where it was afterwards: the
// recomputation draws the forward's random numbers without shifting the stream the run goes on with.
class GeneratorAt {
 public:
  GeneratorAt(at::Device device, const at::Tensor& state) : gen_(device_generator(device)) {
    std::lock_guard<std::mutex> lock(gen_.mutex());
    prev_ = gen_.get_state();
    gen_.set_state(state);
  }
  ~GeneratorAt() {
    std::lock_guard<std::mutex> lock(gen_.mutex());
    gen_.set_state(prev_);
  }

 private:
  at::Generator gen_;
  at::Tensor prev_;  // (state bytes,) uint8 on the CPU
};

// What backward needs besides the saved input.
struct Recompute : torch::CustomClassHolder {
  CheckpointFn fn;
  std::vector<at::Tensor> params;
  at::Device device{at::kCPU};
  at::Tensor rng_state;  // (state bytes,) uint8 CPU: the device generator before the forward
  AutocastState autocast;
};

class CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
 public:
  // Arguments in this order: r (not a tensor: gradient slot 0 stays undefined), x, params.
  static at::Tensor forward(AutogradContext* ctx, c10::intrusive_ptr<Recompute> r, const at::Tensor& x,
                            at::TensorList /*params, inputs only so that they get gradients*/) {
    r->device = x.device();
    r->rng_state = generator_state(r->device);
    r->autocast = autocast_state(r->device.type());
    ctx->save_for_backward({x});
    at::Tensor y;
    {
      NoCastCache no_cache;
      y = r->fn(x);  // grad mode is off here (Function::apply)
    }
    ctx->saved_data["recompute"] = c10::IValue::make_capsule(std::move(r));
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto r = c10::static_intrusive_pointer_cast<Recompute>(ctx->saved_data["recompute"].toCapsule());
    const at::Tensor x = ctx->get_saved_variables()[0];
    // Only what the caller's backward asks for: edge 0 is x, edge 1 + i is params[i].
    variable_list inputs;
    std::vector<size_t> slot;  // position in the returned list of each entry of inputs
    at::Tensor xd = x.detach();
    if (ctx->needs_input_grad(0)) {
      xd.requires_grad_(true);
      inputs.push_back(xd);
      slot.push_back(1);
    }
    for (size_t i = 0; i < r->params.size(); ++i)
      if (ctx->needs_input_grad(i + 1) && r->params[i].requires_grad()) {
        inputs.push_back(r->params[i]);
        slot.push_back(i + 2);
      }
    variable_list out(2 + r->params.size());
    if (inputs.empty()) return out;
    at::Tensor y;
    {
      GeneratorAt rng(r->device, r->rng_state);
      AutocastAs autocast(r->device.type(), r->autocast);
      NoCastCache no_cache;
      at::AutoGradMode grad_mode(true);
      y = r->fn(xd);
    }
    // The parameters' gradients come back as this node's outputs, so the caller's engine
    // accumulates them; grad() here runs no AccumulateGrad node.
    variable_list g = torch::autograd::grad({y}, inputs, {grads[0]}, /*retain_graph=*/false,
                                            /*create_graph=*/false, /*allow_unused=*/true);
    for (size_t j = 0; j < g.size(); ++j) out[slot[j]] = g[j];
    return out;
  }
};

}  // namespace

at::Tensor checkpoint(const CheckpointFn& fn, const at::Tensor& x, const std::vector<at::Tensor>& params) {
  bool needs_grad = x.requires_grad();
  for (const auto& p : params) needs_grad = needs_grad || p.requires_grad();
  if (!at::GradMode::is_enabled() || !needs_grad) return fn(x);
  auto r = c10::make_intrusive<Recompute>();
  r->fn = fn;
  r->params = params;
  return CheckpointFunction::apply(std::move(r), x, at::TensorList(params));
}

}  // namespace tessera::transformer
