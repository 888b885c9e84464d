// tessera/core/tensor_map.hpp — TensorMap, the named tensors of one batch ("image", "label",
// "input_ids", ...) as they flow from the loader through encoders and losses.
#pragma once
#include <ATen/ATen.h>

#include <map>
#include <string>

namespace tessera {

using TensorMap = std::map<std::string, at::Tensor>;

}  // namespace tessera
