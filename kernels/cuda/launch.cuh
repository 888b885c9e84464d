// kernels/cuda/launch.cuh — what the CUDA kernel files share: the error check, the stream cast
// and one grid-stride launcher for element-wise operations. Private to kernels/cuda/.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace tessera::kernels::cuda::impl {

constexpr int kThreads = 256;
// Grids are capped (each thread then loops over the elements a grid-stride apart): 4096 blocks
// of 256 threads are several waves on any current GPU, and a fixed cap keeps the reductions'
// summation order a function of n alone.
constexpr int64_t kMaxBlocks = 4096;

inline int blocks_for(int64_t n) {
  return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxBlocks));
}

inline cudaStream_t as_stream(void* stream) { return static_cast<cudaStream_t>(stream); }

// Throws std::runtime_error("tessera::kernels::cuda::<what>: <CUDA's message>") unless ok.
void check(cudaError_t status, const char* what);

// Calls op(i) for every i in [0, n). Op is a small struct of pointers and scalars (copied to the
// device as a kernel argument) with a __device__ operator()(int64_t) const.
template <class Op>
__global__ void __launch_bounds__(kThreads) elementwise_kernel(Op op, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) op(i);
}

template <class Op>
void launch_elementwise(const char* what, int64_t n, void* stream, const Op& op) {
  if (n <= 0) return;
  elementwise_kernel<<<blocks_for(n), kThreads, 0, as_stream(stream)>>>(op, n);
  check(cudaGetLastError(), what);
}

}  // namespace tessera::kernels::cuda::impl
