// tessera/core/engine.hpp — the backward engine: torch.autograd.backward's API over the term
// dispatcher, plus gradient-ready hooks on every registered parameter, so that any backward
// (the engine's, or .backward() called directly on an output) reaches the gradient consumer.
#pragma once
#include <ATen/ATen.h>

#include <functional>
#include <memory>
#include <vector>

#include "tessera/core/backward.hpp"
#include "tessera/core/flat_params.hpp"

namespace tessera {

// Receives gradients as autograd produces them (a reducer; DESIGN.md's bucketed reduction).
class GradReadyListener {
 public:
  virtual ~GradReadyListener() = default;
  // Parameter `index` (FlatParams order) has its gradient for this backward pass in place.
  virtual void on_grad_ready(size_t index) = 0;
  // The backward pass that produced those gradients has finished.
  virtual void on_backward_end() = 0;
};

// What happened between two step boundaries.
struct StepStats {
  int64_t backward_passes = 0;       // graph traversals that reached at least one parameter
  int64_t params_with_grad = 0;      // parameters whose gradient arrived at least once
  std::vector<size_t> unused_params; // indices of parameters no backward reached
};

class Engine {
 public:
  // Installs a post-hook on the gradient accumulator of every parameter of `params`
  // (finalized). The engine must outlive every backward that can reach those parameters.
  explicit Engine(FlatParams& params);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // torch.autograd.backward(tensors, grad_tensors, retain_graph, create_graph, inputs), exactly:
  // grads may be empty (all implicit) or one per tensor (undefined = implicit, scalar only).
  // opt.loss_scale / opt.divisor scale every seed (the engine's prologue).
  void backward(const std::vector<at::Tensor>& tensors, const std::vector<at::Tensor>& grads = {},
                const BackwardOptions& opt = {});
  // The loss reducers' terms, validated and backwarded in one call (see BackwardDispatcher).
  std::vector<TermValue> backward(const std::vector<Term>& terms, const BackwardOptions& opt);
  // The same, without reading the term values (no device sync): see read_term_values.
  PendingTermValues backward_pending(const std::vector<Term>& terms, const BackwardOptions& opt);

  void set_listener(GradReadyListener* listener) { listener_ = listener; }

  // The explicit step/accumulation boundary: returns what the backward passes since the
  // last boundary did and starts counting afresh. Throws Error when no backward reached any
  // parameter since the last boundary (an optimizer step would silently do nothing).
  StepStats finish_step();
  int64_t backward_passes() const { return passes_; }

 private:
  struct Hooked;
  void grad_ready(size_t index);
  void backward_end();

  FlatParams& params_;
  BackwardDispatcher dispatcher_;
  GradReadyListener* listener_ = nullptr;
  std::vector<std::shared_ptr<Hooked>> hooks_;
  std::vector<int64_t> ready_counts_;  // per parameter, since the last boundary
  int64_t passes_ = 0;
  bool in_pass_ = false;
};

}  // namespace tessera
