// tessera/core/backward.hpp — the backward dispatcher: validates the set of terms the loss
// reducers emitted and makes ONE torch::autograd::backward call with PyTorch's semantics.
#pragma once
#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "tessera/core/error.hpp"
#include "tessera/core/plugin_host.hpp"

namespace tessera {

struct BackwardOptions {
  double loss_scale = 1.0;    // from the precision backend
  double divisor = 1.0;       // gradient accumulation: micro-batches per optimizer step
  bool retain_graph = false;
  bool create_graph = false;
  bool check_finite = true;   // a NaN/Inf term value is an error naming term, plugin, step
  int64_t step = 0;           // for messages
  std::vector<at::Tensor> inputs;  // as torch.autograd.backward's `inputs`: accumulate only into these
};

// A term whose value is NaN or Inf (BackwardOptions::check_finite); nothing was backwarded.
class NonFiniteError : public Error {
 public:
  using Error::Error;
};

// What each term contributed, for metrics: the weighted value of scalar terms.
struct TermValue {
  std::string name;
  double value = 0.0;  // weight * mean(value) (a scalar's own value times its weight)
};

class BackwardDispatcher {
 public:
  // Seeds: a scalar term gets weight * loss_scale / divisor; a non-scalar term its explicit
  // gradient times the same factor. Throws Error for an empty set, duplicate names, a term
  // that does not require grad, a non-scalar term without gradient (PyTorch's wording plus
  // the term and plugin), a gradient whose shape/dtype/device differs, a non-finite value.
  std::vector<TermValue> backward(const std::vector<Term>& terms, const BackwardOptions& opt) const;
};

}  // namespace tessera
