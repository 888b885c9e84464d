// tessera/core/backward.hpp — the backward dispatcher: validates the set of terms the loss
// reducers emitted and makes ONE torch::autograd::backward call with PyTorch's semantics.
#pragma once
#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <vector>

#include "tessera/core/error.hpp"
#include "tessera/core/plugin_host.hpp"

namespace tessera {

struct BackwardOptions {
  double loss_scale = 1.0;    // from the precision backend
  double divisor = 1.0;       // gradient accumulation: micro-batches per optimizer step
  // Per [[loss]] (Term::loss): the units (tokens) of the whole global batch, which divide the
  // loss's sum terms (Term::per_unit) instead of `divisor`; at least 1 each.
  std::vector<double> units;
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
  double value = 0.0;  // weight * mean(value) (a scalar's own value times its weight); for a
                       // sum term weight * sum / the global batch's units: its share of the mean
  bool per_unit = false;
};

// The values of a backwarded term set, still where they were computed: reading them is a
// device sync, so a training step collects every pass's and reads them once (read_term_values).
struct PendingTermValues {
  std::vector<std::string> names;     // one per term, in emission order
  std::vector<std::string> labels;    // "term 'x' from <plugin>", for messages
  std::vector<double> weights;
  std::vector<std::optional<double>> logged;  // the plugin's own scalar, when it gives one
  std::vector<bool> per_unit;
  at::Tensor means;                   // (terms,) float64: mean of each term's value
};

// Every pass's values with ONE device sync, in pass order. *nonfinite gets a message naming the
// first NaN/Inf term (as the dispatcher's NonFiniteError would) and stays empty when all are
// finite. Each value is weight * (the plugin's logged scalar, or the term's mean).
std::vector<std::vector<TermValue>> read_term_values(const std::vector<PendingTermValues>& passes, int64_t step,
                                                     std::string* nonfinite);

class BackwardDispatcher {
 public:
  // Seeds: a scalar term gets weight * loss_scale / divisor (a sum term: / units of its loss);
  // a non-scalar term its explicit gradient times the same factor. Throws Error for an empty set, duplicate names, a term
  // that does not require grad, a non-scalar term without gradient (PyTorch's wording plus
  // the term and plugin), a gradient whose shape/dtype/device differs, a non-finite value.
  std::vector<TermValue> backward(const std::vector<Term>& terms, const BackwardOptions& opt) const;
  // The same validation and backward, without reading the values (opt.check_finite is not
  // consulted: nothing is checked before the backward).
  PendingTermValues backward_pending(const std::vector<Term>& terms, const BackwardOptions& opt) const;
};

}  // namespace tessera
