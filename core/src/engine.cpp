// core/src/engine.cpp — gradient-ready hooks on the parameters' AccumulateGrad nodes, the
// end-of-backward callback, and torch.autograd.backward's API routed through the dispatcher.
#include "tessera/core/engine.hpp"

#include <torch/csrc/autograd/engine.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include "tessera/core/error.hpp"

namespace tessera {

// Keeps a parameter's gradient accumulator alive (autograd holds it weakly) together with
// the engine it reports to; the hook checks `engine` so a dead engine is never called.
struct Engine::Hooked {
  std::shared_ptr<torch::autograd::Node> accumulator;
  Engine* engine = nullptr;
};

Engine::Engine(FlatParams& params) : params_(params) {
  if (!params.finalized()) throw Error("the engine needs finalized flat parameter buffers");
  size_t index = 0;
  for (auto& buf : params.buffers()) {
    for (auto& slot : buf.slots) {
      auto hooked = std::make_shared<Hooked>();
      hooked->engine = this;
      hooked->accumulator = torch::autograd::impl::grad_accumulator(slot.param);
      if (!hooked->accumulator) throw Error("parameter '" + slot.name + "' has no gradient accumulator");
      std::weak_ptr<Hooked> weak = hooked;
      hooked->accumulator->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
          [weak, index](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) {
            if (auto h = weak.lock())
              if (h->engine) h->engine->grad_ready(index);
            return outputs;
          }));
      hooks_.push_back(std::move(hooked));
      ++index;
    }
  }
  ready_counts_.assign(index, 0);
}

Engine::~Engine() {
  for (auto& h : hooks_) h->engine = nullptr;
}

void Engine::grad_ready(size_t index) {
  if (!in_pass_) {
    // Prologue of a pass, whoever started it (engine.backward or tensor.backward()): the
    // epilogue is queued to run when this graph task completes.
    in_pass_ = true;
    ++passes_;
    torch::autograd::Engine::get_default_engine().queue_callback([this] { backward_end(); });
  }
  ++ready_counts_[index];
  if (listener_) listener_->on_grad_ready(index);
}

void Engine::backward_end() {
  in_pass_ = false;
  if (listener_) listener_->on_backward_end();
}

void Engine::backward(const std::vector<at::Tensor>& tensors, const std::vector<at::Tensor>& grads,
                      const BackwardOptions& opt) {
  if (!grads.empty() && grads.size() != tensors.size())
    throw Error("backward: got " + std::to_string(tensors.size()) + " tensors but " + std::to_string(grads.size()) +
                " gradients");
  std::vector<Term> terms;
  for (size_t i = 0; i < tensors.size(); ++i) {
    Term t;
    t.name = "tensors[" + std::to_string(i) + "]";
    t.plugin = "engine.backward";
    t.value = tensors[i];
    if (!grads.empty()) t.grad = grads[i];
    terms.push_back(std::move(t));
  }
  BackwardOptions o = opt;
  o.check_finite = false;  // torch.autograd.backward does not check values either
  dispatcher_.backward(terms, o);
}

std::vector<TermValue> Engine::backward(const std::vector<Term>& terms, const BackwardOptions& opt) {
  return dispatcher_.backward(terms, opt);
}

PendingTermValues Engine::backward_pending(const std::vector<Term>& terms, const BackwardOptions& opt) {
  return dispatcher_.backward_pending(terms, opt);
}

StepStats Engine::finish_step() {
  StepStats s;
  s.backward_passes = passes_;
  for (size_t i = 0; i < ready_counts_.size(); ++i) {
    if (ready_counts_[i] > 0) ++s.params_with_grad;
    else s.unused_params.push_back(i);
  }
  if (passes_ == 0)
    throw Error("optimizer step without a backward pass that reached any parameter since the last step");
  passes_ = 0;
  std::fill(ready_counts_.begin(), ready_counts_.end(), 0);
  return s;
}

}  // namespace tessera
