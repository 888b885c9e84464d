// kernels/cuda/reduce.cu — CUDA overflow checks (all_finite) and sums of squares over fp32,
// bf16 and fp16 buffers; the sums are accumulated in double in an order fixed by n alone.
#include "launch.cuh"
#include "tessera/kernels/cuda.h"
#include "tessera/kernels/precision.h"

namespace tessera::kernels::cuda {

namespace {

using impl::kThreads;

// Device scratch memory ordered on the caller's stream (stream-ordered allocator): taking and
// returning it does not synchronise the device as cudaMalloc/cudaFree would.
class Scratch {
 public:
  Scratch(size_t bytes, cudaStream_t stream, const char* what) : stream_(stream) {
    impl::check(cudaMallocAsync(&ptr_, bytes, stream), what);
  }
  ~Scratch() { cudaFreeAsync(ptr_, stream_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  template <class T>
  T* as() const { return static_cast<T*>(ptr_); }

 private:
  void* ptr_ = nullptr;
  cudaStream_t stream_;
};

// Copies one value back to the host once `stream` has reached this point.
template <class T>
T read_back(const T* device_value, cudaStream_t stream, const char* what) {
  T host{};
  impl::check(cudaMemcpyAsync(&host, device_value, sizeof(T), cudaMemcpyDeviceToHost, stream), what);
  impl::check(cudaStreamSynchronize(stream), what);
  return host;
}

// ---- all_finite: a value is ±Inf or NaN when its exponent field is all ones ------------------

__device__ uint32_t bits_of(float x) { return __float_as_uint(x); }
__device__ uint32_t bits_of(uint16_t x) { return x; }

// Sets *flag when any element's exponent field (mask) is all ones; *flag is never cleared here.
template <class T, uint32_t kExponentMask>
__global__ void __launch_bounds__(kThreads) flag_nonfinite(const T* x, int64_t n, int* flag) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  bool bad = false;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    bad |= (bits_of(x[i]) & kExponentMask) == kExponentMask;
  if (__syncthreads_or(bad) && threadIdx.x == 0) *flag = 1;
}

template <class T, uint32_t kExponentMask>
bool all_finite(const T* x, int64_t n, void* stream, const char* what) {
  if (n <= 0) return true;
  const cudaStream_t s = impl::as_stream(stream);
  Scratch flag(sizeof(int), s, what);
  impl::check(cudaMemsetAsync(flag.as<int>(), 0, sizeof(int), s), what);
  flag_nonfinite<T, kExponentMask><<<impl::blocks_for(n), kThreads, 0, s>>>(x, n, flag.as<int>());
  impl::check(cudaGetLastError(), what);
  return read_back(flag.as<int>(), s, what) == 0;
}

// ---- sum of squares in double, in a fixed order -----------------------------------------------
//
// Pass 1: thread t of block b sums, in index order, the squares of elements b*kThreads + t +
// k*stride (stride = grid size); each block adds its threads' sums in a fixed tree and writes
// one partial. Pass 2: one block adds the partials the same way. The grid size is a function of
// n only (impl::blocks_for), so the order, and thus the result, is the same on every run and GPU.

__host__ __device__ float as_f32(float x) { return x; }

// The block's values added in a fixed tree; the sum is returned to every thread.
__device__ double block_sum(double v) {
  __shared__ double partial[kThreads];
  partial[threadIdx.x] = v;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
    __syncthreads();
  }
  return partial[0];
}

// Widen gives an element's value (bf16_to_f32 and f16_to_f32 for the 16-bit formats).
template <class T, float (*Widen)(T)>
__global__ void __launch_bounds__(kThreads) sum_squares_blocks(const T* x, int64_t n, double* block_sums) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  double s = 0.0;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const double v = Widen(x[i]);
    s += v * v;
  }
  const double total = block_sum(s);
  if (threadIdx.x == 0) block_sums[blockIdx.x] = total;
}

// One block: adds the `count` block sums into *out.
__global__ void __launch_bounds__(kThreads) sum_block_sums(const double* block_sums, int count, double* out) {
  double s = 0.0;
  for (int i = threadIdx.x; i < count; i += kThreads) s += block_sums[i];
  const double total = block_sum(s);
  if (threadIdx.x == 0) *out = total;
}

template <class T, float (*Widen)(T)>
double sum_squares(const T* x, int64_t n, void* stream, const char* what) {
  if (n <= 0) return 0.0;
  const cudaStream_t s = impl::as_stream(stream);
  const int blocks = impl::blocks_for(n);
  Scratch sums((blocks + 1) * sizeof(double), s, what);  // block sums, then the total
  double* block_sums = sums.as<double>();
  sum_squares_blocks<T, Widen><<<blocks, kThreads, 0, s>>>(x, n, block_sums);
  impl::check(cudaGetLastError(), what);
  sum_block_sums<<<1, kThreads, 0, s>>>(block_sums, blocks, block_sums + blocks);
  impl::check(cudaGetLastError(), what);
  return read_back(block_sums + blocks, s, what);
}

}  // namespace

bool all_finite_f32(const float* x, int64_t n, void* stream) {
  return all_finite<float, 0x7F800000u>(x, n, stream, "all_finite_f32");
}
bool all_finite_bf16(const uint16_t* x, int64_t n, void* stream) {
  return all_finite<uint16_t, 0x7F80u>(x, n, stream, "all_finite_bf16");
}
bool all_finite_f16(const uint16_t* x, int64_t n, void* stream) {
  return all_finite<uint16_t, 0x7C00u>(x, n, stream, "all_finite_f16");
}

double sum_squares_f32(const float* x, int64_t n, void* stream) {
  return sum_squares<float, as_f32>(x, n, stream, "sum_squares_f32");
}
double sum_squares_bf16(const uint16_t* x, int64_t n, void* stream) {
  return sum_squares<uint16_t, bf16_to_f32>(x, n, stream, "sum_squares_bf16");
}
double sum_squares_f16(const uint16_t* x, int64_t n, void* stream) {
  return sum_squares<uint16_t, f16_to_f32>(x, n, stream, "sum_squares_f16");
}

}  // namespace tessera::kernels::cuda
