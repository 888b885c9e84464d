// core/src/backward.cpp — validation of a term set and the single autograd call that
// backwards it (weights, loss scale and accumulation divisor folded into the seeds).
#include "tessera/core/backward.hpp"

#include <torch/csrc/autograd/autograd.h>

#include <cmath>
#include <set>
#include <sstream>

#include "tessera/core/error.hpp"

namespace tessera {
namespace {

std::string term_label(const Term& t) { return "term '" + t.name + "' from " + t.plugin; }

std::string shape_str(at::IntArrayRef s) {
  std::ostringstream o;
  o << s;
  return o.str();
}

}  // namespace

std::vector<TermValue> BackwardDispatcher::backward(const std::vector<Term>& terms,
                                                    const BackwardOptions& opt) const {
  if (terms.empty()) throw Error("backward at step " + std::to_string(opt.step) + ": the loss reducers emitted no terms");
  std::set<std::string> names;
  std::vector<at::Tensor> outputs, seeds;
  std::vector<TermValue> values;
  const double factor = opt.loss_scale / opt.divisor;
  for (const auto& t : terms) {
    if (!names.insert(t.name).second)
      throw Error("backward at step " + std::to_string(opt.step) + ": two terms are named '" + t.name +
                  "' (the second from " + t.plugin + ")");
    if (!t.value.defined()) throw Error(term_label(t) + ": undefined tensor");
    if (!t.value.requires_grad())
      throw Error(term_label(t) + ": element 0 of tensors does not require grad and does not have a grad_fn");
    if (!std::isfinite(t.weight)) throw Error(term_label(t) + ": weight is not finite");
    at::Tensor seed;
    if (t.grad.defined()) {
      if (!t.grad.sizes().equals(t.value.sizes()))
        throw Error(term_label(t) + ": Mismatch in shape: grad_output[0] has a shape of " + shape_str(t.grad.sizes()) +
                    " and output[0] has a shape of " + shape_str(t.value.sizes()) + ".");
      if (t.grad.scalar_type() != t.value.scalar_type())
        throw Error(term_label(t) + ": gradient dtype " + std::string(c10::toString(t.grad.scalar_type())) +
                    " differs from the term's dtype " + c10::toString(t.value.scalar_type()));
      if (t.grad.device() != t.value.device())
        throw Error(term_label(t) + ": gradient is on " + t.grad.device().str() + ", the term on " +
                    t.value.device().str());
      seed = t.grad * (t.weight * factor);
    } else {
      if (t.value.numel() != 1)
        throw Error(term_label(t) + ": grad can be implicitly created only for scalar outputs (shape " +
                    shape_str(t.value.sizes()) + "); emit the term with an explicit gradient");
      seed = at::full_like(t.value, t.weight * factor, at::MemoryFormat::Contiguous);
    }
    double v = t.value.detach().to(at::kDouble).mean().item<double>();
    const double reported = t.logged ? *t.logged : v;
    if (opt.check_finite && (!std::isfinite(v) || !std::isfinite(reported))) {
      const double bad = std::isfinite(reported) ? v : reported;
      throw NonFiniteError(term_label(t) + " is " + (std::isnan(bad) ? "NaN" : "infinite") + " at step " +
                           std::to_string(opt.step));
    }
    values.push_back({t.name, reported * t.weight});
    outputs.push_back(t.value);
    seeds.push_back(std::move(seed));
  }
  torch::autograd::backward(outputs, seeds, opt.retain_graph, opt.create_graph, opt.inputs);
  return values;
}

}  // namespace tessera
