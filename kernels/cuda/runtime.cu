// kernels/cuda/runtime.cu — device discovery and the CUDA error check shared by the kernel files.
#include <stdexcept>
#include <string>

#include "launch.cuh"
#include "tessera/kernels/cuda.h"

namespace tessera::kernels::cuda {

bool available() {
  int count = 0;
  const bool ok = cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
  // Without a driver or device the call fails; clear that error so that it is not reported
  // later by an unrelated check.
  if (!ok) cudaGetLastError();
  return ok;
}

namespace impl {

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess)
    throw std::runtime_error(std::string("tessera::kernels::cuda::") + what + ": " + cudaGetErrorString(status));
}

}  // namespace impl
}  // namespace tessera::kernels::cuda
