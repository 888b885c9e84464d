// core/src/autocast.cpp — AutocastScope over ATen's autocast state (the per-device API of
// LibTorch >= 2.4, the CPU/GPU pair of functions before it).
#include "tessera/core/autocast.hpp"

#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include "tessera/core/plugin_host.hpp"

namespace tessera {

AutocastScope::AutocastScope(at::Device device, int32_t dtype) : active_(dtype != TSR_DTYPE_NONE), cpu_(device.is_cpu()) {
  if (!active_) return;
  const at::ScalarType t = to_scalar_type(dtype);
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  const at::DeviceType dt = device.type();
  prev_enabled_ = at::autocast::is_autocast_enabled(dt);
  prev_dtype_ = at::autocast::get_autocast_dtype(dt);
  at::autocast::set_autocast_enabled(dt, true);
  at::autocast::set_autocast_dtype(dt, t);
#else
  prev_enabled_ = cpu_ ? at::autocast::is_cpu_enabled() : at::autocast::is_enabled();
  prev_dtype_ = cpu_ ? at::autocast::get_autocast_cpu_dtype() : at::autocast::get_autocast_gpu_dtype();
  if (cpu_) {
    at::autocast::set_cpu_enabled(true);
    at::autocast::set_autocast_cpu_dtype(t);
  } else {
    at::autocast::set_enabled(true);
    at::autocast::set_autocast_gpu_dtype(t);
  }
#endif
  at::autocast::increment_nesting();
  device_ = device.type();
}
AutocastScope::~AutocastScope() {
  if (!active_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  at::autocast::set_autocast_enabled(device_, prev_enabled_);
  at::autocast::set_autocast_dtype(device_, prev_dtype_);
#else
  if (cpu_) {
    at::autocast::set_cpu_enabled(prev_enabled_);
    at::autocast::set_autocast_cpu_dtype(prev_dtype_);
  } else {
    at::autocast::set_enabled(prev_enabled_);
    at::autocast::set_autocast_gpu_dtype(prev_dtype_);
  }
#endif
}

}  // namespace tessera
