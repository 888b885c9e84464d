// core/src/flat_params.cpp — moves registered parameters into flat per-dtype buffers and
// points their gradients at a flat gradient buffer.
#include "tessera/core/flat_params.hpp"

#include <torch/csrc/autograd/variable.h>

#include "tessera/core/error.hpp"

namespace tessera {

const char* dtype_short_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "f32";
    case at::kDouble: return "f64";
    case at::kHalf: return "f16";
    case at::kBFloat16: return "bf16";
    default: return "other";
  }
}

void FlatParams::add(const std::string& name, const at::Tensor& param) {
  if (finalized_) throw Error("parameter '" + name + "' registered after the flat buffers were built");
  if (!param.defined()) throw Error("parameter '" + name + "' is an undefined tensor");
  if (!param.requires_grad()) throw Error("parameter '" + name + "' does not require grad");
  if (!param.is_leaf()) throw Error("parameter '" + name + "' is not a leaf tensor");
  for (const auto& [n, t] : pending_) {
    if (n == name) throw Error("two parameters are named '" + name + "': two [[encoder]] or [[loss]] tables of one plugin need distinct `name`s");
    if (t.unsafeGetTensorImpl() == param.unsafeGetTensorImpl())
      throw Error("parameter '" + name + "' is the same tensor as '" + n + "'");
  }
  pending_.emplace_back(name, param);
}

void FlatParams::finalize(at::ScalarType param_dtype, at::ScalarType grad_dtype, at::Device device) {
  if (finalized_) throw Error("flat parameter buffers are already built");
  // One buffer per parameter dtype; today every floating parameter takes param_dtype.
  FlatParamBuffer buf;
  buf.dtype = param_dtype;
  buf.name = dtype_short_name(param_dtype);
  int64_t total = 0;
  for (const auto& [name, p] : pending_) {
    ParamSlot slot;
    slot.name = name;
    slot.param = p;
    slot.offset = total;
    slot.numel = p.numel();
    slot.shape = p.sizes().vec();
    total += (slot.numel + FlatParamBuffer::kAlign - 1) / FlatParamBuffer::kAlign * FlatParamBuffer::kAlign;
    buf.slots.push_back(std::move(slot));
  }
  auto opts = at::TensorOptions().device(device);
  buf.params = at::zeros({total}, opts.dtype(param_dtype));
  buf.grads = at::zeros({total}, opts.dtype(grad_dtype));
  {
    at::NoGradGuard no_grad;
    for (auto& slot : buf.slots) {
      at::Tensor view = buf.params.narrow(0, slot.offset, slot.numel).view(slot.shape);
      view.copy_(slot.param.detach());
      // The plugin keeps its tensor object; only the storage moves.
      slot.param.set_data(view);
      slot.param.mutable_grad() = buf.grads.narrow(0, slot.offset, slot.numel).view(slot.shape);
    }
  }
  buffers_.clear();
  if (total > 0) buffers_.push_back(std::move(buf));
  pending_.clear();
  finalized_ = true;
}

void FlatParams::partition_grads(const std::vector<std::pair<int64_t, int64_t>>& ranges) {
  if (!finalized_) throw Error("partition_grads before the flat buffers were built");
  if (ranges.size() != buffers_.size())
    throw Error("partition_grads: " + std::to_string(ranges.size()) + " ranges for " + std::to_string(buffers_.size()) +
                " flat buffers");
  for (size_t i = 0; i < buffers_.size(); ++i) {
    FlatParamBuffer& b = buffers_[i];
    const auto [begin, end] = ranges[i];
    if (begin < 0 || end < begin || end > b.numel())
      throw Error("partition_grads: range [" + std::to_string(begin) + ", " + std::to_string(end) + ") outside buffer '" +
                  b.name + "'");
    b.grads = at::zeros({end - begin}, b.grads.options());  // the full-size buffer is freed
    b.grad_begin = begin;
    for (auto& s : b.slots) s.param.mutable_grad().reset();
  }
  grads_partitioned_ = true;
}

void FlatParams::zero_grad() {
  for (auto& b : buffers_) {
    b.grads.zero_();
    if (grads_partitioned_) {
      for (auto& s : b.slots) s.param.mutable_grad().reset();
      continue;
    }
    // A plugin (or user code) may have replaced a .grad(); put the view back.
    for (auto& s : b.slots) {
      const at::Tensor& g = s.param.grad();
      if (!g.defined() || g.data_ptr() != static_cast<char*>(b.grads.data_ptr()) + s.offset * b.grads.element_size())
        s.param.mutable_grad() = b.grads.narrow(0, s.offset, s.numel).view(s.shape);
    }
  }
}

int64_t FlatParams::num_params() const {
  int64_t n = 0;
  for (const auto& b : buffers_)
    for (const auto& s : b.slots) n += s.numel;
  return n;
}

std::vector<std::pair<std::string, at::Tensor>> FlatParams::named_parameters() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& b : buffers_)
    for (const auto& s : b.slots) out.emplace_back(s.name, b.params.narrow(0, s.offset, s.numel).view(s.shape));
  return out;
}

}  // namespace tessera
