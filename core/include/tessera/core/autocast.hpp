// tessera/core/autocast.hpp — AutocastScope: autocast for the forward pass and the losses in
// the precision backend's dtype, as torch.autocast(device, dtype) does (LibTorch 1.13 and 2.x).
#pragma once
#include <ATen/ATen.h>

#include <cstdint>

namespace tessera {

class AutocastScope {
 public:
  // dtype: a TSR_DTYPE_* code; TSR_DTYPE_NONE makes the scope do nothing.
  AutocastScope(at::Device device, int32_t dtype);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool active_, cpu_, prev_enabled_ = false;
  at::ScalarType prev_dtype_ = at::kFloat;
  at::DeviceType device_ = at::kCPU;
};

}  // namespace tessera
