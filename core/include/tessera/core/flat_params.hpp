// tessera/core/flat_params.hpp — parameters registered by name and kept as views into one
// flat buffer per dtype (with a matching flat gradient buffer), as DESIGN.md describes.
#pragma once
#include <ATen/ATen.h>

#include <string>
#include <vector>

namespace tessera {

// Where one named parameter lives inside its flat buffer.
struct ParamSlot {
  std::string name;     // "<encoder name>.<plugin's parameter name>"
  at::Tensor param;     // the plugin's tensor object; its storage is now the flat buffer's
  int64_t offset = 0;   // first element in the flat buffer
  int64_t numel = 0;
  std::vector<int64_t> shape;
};

// One dtype's parameters and gradients, contiguous. Slots start at multiples of kAlign
// elements; the padding between them stays zero in both buffers.
struct FlatParamBuffer {
  static constexpr int64_t kAlign = 16;
  std::string name;      // dtype name, e.g. "f32": stable across runs (checkpoints, states)
  at::ScalarType dtype;  // parameter dtype
  at::Tensor params;     // (numel,) dtype
  at::Tensor grads;      // (numel,) grad dtype, or with partitioned gradients only the
                         // range [grad_begin, grad_begin + grads.numel()) of the flat space
  int64_t grad_begin = 0;
  std::vector<ParamSlot> slots;
  int64_t numel() const { return params.defined() ? params.numel() : 0; }
};

class FlatParams {
 public:
  // Registers a parameter by name. Throws Error on a duplicate name or a tensor that does
  // not require grad. Parameters are grouped by dtype in registration order.
  void add(const std::string& name, const at::Tensor& param);

  // Moves every parameter's storage into flat buffers of `param_dtype` on `device` (values
  // copied and cast), and sets each .grad() to a view into a zeroed flat gradient buffer
  // of `grad_dtype`; autograd then accumulates gradients in place into that buffer.
  void finalize(at::ScalarType param_dtype, at::ScalarType grad_dtype, at::Device device);

  // ZeRO-2: each buffer keeps only the gradients of its element range [begin, end) (one pair
  // per buffer). Parameters' .grad() are then no views: autograd allocates them and the
  // reducer moves them out into bucket staging as they arrive (and resets them).
  void partition_grads(const std::vector<std::pair<int64_t, int64_t>>& ranges);
  bool grads_partitioned() const { return grads_partitioned_; }

  // Zeroes the gradient buffers; puts each .grad() view back (or, partitioned, resets it).
  void zero_grad();
  std::vector<FlatParamBuffer>& buffers() { return buffers_; }
  const std::vector<FlatParamBuffer>& buffers() const { return buffers_; }
  int64_t num_params() const;  // elements, without padding
  bool finalized() const { return finalized_; }
  // Every parameter by name, as views of the flat buffers (for saving).
  std::vector<std::pair<std::string, at::Tensor>> named_parameters() const;

 private:
  std::vector<std::pair<std::string, at::Tensor>> pending_;
  std::vector<FlatParamBuffer> buffers_;
  bool finalized_ = false;
  bool grads_partitioned_ = false;
};

const char* dtype_short_name(at::ScalarType t);  // "f32", "bf16", "f16", ...

}  // namespace tessera
