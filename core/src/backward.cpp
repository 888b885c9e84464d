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

namespace {

// A validated term set, ready for the one autograd call.
struct Prepared {
  std::vector<at::Tensor> outputs, seeds;
  PendingTermValues values;
};

Prepared prepare(const std::vector<Term>& terms, const BackwardOptions& opt) {
  if (terms.empty()) throw Error("backward at step " + std::to_string(opt.step) + ": the loss reducers emitted no terms");
  std::set<std::string> names;
  Prepared p;
  std::vector<at::Tensor> means;
  for (const auto& t : terms) {
    if (!names.insert(t.name).second)
      throw Error("backward at step " + std::to_string(opt.step) + ": two terms are named '" + t.name +
                  "' (the second from " + t.plugin + ")");
    if (!t.value.defined()) throw Error(term_label(t) + ": undefined tensor");
    if (!t.value.requires_grad())
      throw Error(term_label(t) + ": element 0 of tensors does not require grad and does not have a grad_fn");
    if (!std::isfinite(t.weight)) throw Error(term_label(t) + ": weight is not finite");
    if (t.per_unit && t.loss >= opt.units.size())
      throw Error(term_label(t) + ": a sum over units (tokens) outside a training step, which counts them");
    if (t.per_unit && t.value.numel() != 1)
      throw Error(term_label(t) + ": a sum over units (tokens) must be a scalar (shape " + shape_str(t.value.sizes()) + ")");
    const double divisor = t.per_unit ? opt.units[t.loss] : opt.divisor;
    const double factor = opt.loss_scale / divisor;
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
    means.push_back(t.value.detach().to(at::kDouble).mean() / (t.per_unit ? divisor : 1.0));
    p.values.names.push_back(t.name);
    p.values.labels.push_back(term_label(t));
    p.values.weights.push_back(t.weight);
    p.values.logged.push_back(t.logged);
    p.values.per_unit.push_back(t.per_unit);
    p.outputs.push_back(t.value);
    p.seeds.push_back(std::move(seed));
  }
  p.values.means = at::stack(means);
  return p;
}

void run(Prepared& p, const BackwardOptions& opt) {
  torch::autograd::backward(p.outputs, p.seeds, opt.retain_graph, opt.create_graph, opt.inputs);
}

}  // namespace

PendingTermValues BackwardDispatcher::backward_pending(const std::vector<Term>& terms,
                                                      const BackwardOptions& opt) const {
  Prepared p = prepare(terms, opt);
  run(p, opt);
  return std::move(p.values);
}

std::vector<TermValue> BackwardDispatcher::backward(const std::vector<Term>& terms,
                                                    const BackwardOptions& opt) const {
  Prepared p = prepare(terms, opt);
  std::string bad;
  auto values = read_term_values({p.values}, opt.step, opt.check_finite ? &bad : nullptr);
  if (!bad.empty()) throw NonFiniteError(bad);  // before anything is backwarded
  run(p, opt);
  return std::move(values.front());
}

std::vector<std::vector<TermValue>> read_term_values(const std::vector<PendingTermValues>& passes, int64_t step,
                                                     std::string* nonfinite) {
  std::vector<at::Tensor> all;
  for (const auto& p : passes) all.push_back(p.means);
  const at::Tensor host = all.empty() ? at::Tensor() : at::cat(all).to(at::kCPU);  // the one sync
  const double* v = host.defined() ? host.data_ptr<double>() : nullptr;
  std::vector<std::vector<TermValue>> out;
  for (const auto& p : passes) {
    out.emplace_back();
    for (size_t i = 0; i < p.names.size(); ++i, ++v) {
      const double reported = p.logged[i] ? *p.logged[i] : *v;
      if (nonfinite && nonfinite->empty() && (!std::isfinite(*v) || !std::isfinite(reported))) {
        const double bad = std::isfinite(reported) ? *v : reported;
        *nonfinite = p.labels[i] + " is " + (std::isnan(bad) ? "NaN" : "infinite") + " at step " + std::to_string(step);
      }
      out.back().push_back({p.names[i], reported * p.weights[i], p.per_unit[i]});
    }
  }
  return out;
}

}  // namespace tessera
