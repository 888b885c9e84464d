// kernels/cuda/convert.cu — CUDA bulk conversions between fp32 and bf16/fp16 (RNE and
// stochastic) and the bf16 + remainder split/merge: the scalar rules of precision.h per thread.
#include "../common/updates.h"
#include "launch.cuh"
#include "tessera/kernels/cuda.h"

namespace tessera::kernels::cuda {

namespace {

// dst[i] = Convert(src[i]).
template <class Src, class Dst, Dst (*Convert)(Src)>
struct Map {
  const Src* src;  // (n,)
  Dst* dst;        // (n,)
  __device__ void operator()(int64_t i) const { dst[i] = Convert(src[i]); }
};

struct StochasticToBf16 {
  const float* src;  // (n,) fp32
  uint16_t* dst;     // (n,) bf16 bits
  uint64_t key, counter_base;  // detail::stochastic_key(seed), counter of element 0
  __device__ void operator()(int64_t i) const {
    dst[i] = detail::f32_to_bf16_stochastic_keyed(src[i], key, counter_base + static_cast<uint64_t>(i));
  }
};

struct Split {
  const float* master;  // (n,) fp32
  uint16_t* bf16;       // (n,) upper halves
  int16_t* remainder;   // (n,) lower halves
  __device__ void operator()(int64_t i) const {
    int16_t rem;
    bf16[i] = updates::split_one(master[i], &rem);
    remainder[i] = rem;
  }
};

struct Merge {
  const uint16_t* bf16;      // (n,) upper halves
  const int16_t* remainder;  // (n,) lower halves
  float* master;             // (n,) fp32
  __device__ void operator()(int64_t i) const { master[i] = updates::merge_one(bf16[i], remainder[i]); }
};

}  // namespace

void convert_bf16_to_f32(const uint16_t* src, float* dst, int64_t n, void* stream) {
  impl::launch_elementwise("convert_bf16_to_f32", n, stream, Map<uint16_t, float, bf16_to_f32>{src, dst});
}

void convert_f32_to_bf16(const float* src, uint16_t* dst, int64_t n, void* stream) {
  impl::launch_elementwise("convert_f32_to_bf16", n, stream, Map<float, uint16_t, f32_to_bf16>{src, dst});
}

void convert_f16_to_f32(const uint16_t* src, float* dst, int64_t n, void* stream) {
  impl::launch_elementwise("convert_f16_to_f32", n, stream, Map<uint16_t, float, f16_to_f32>{src, dst});
}

void convert_f32_to_f16(const float* src, uint16_t* dst, int64_t n, void* stream) {
  impl::launch_elementwise("convert_f32_to_f16", n, stream, Map<float, uint16_t, f32_to_f16>{src, dst});
}

void convert_f32_to_bf16_stochastic(const float* src, uint16_t* dst, int64_t n, uint64_t seed,
                                    uint64_t counter_base, void* stream) {
  impl::launch_elementwise("convert_f32_to_bf16_stochastic", n, stream,
                           StochasticToBf16{src, dst, detail::stochastic_key(seed), counter_base});
}

void split_f32_to_bf16_remainder(const float* master, uint16_t* bf16, int16_t* remainder, int64_t n, void* stream) {
  impl::launch_elementwise("split_f32_to_bf16_remainder", n, stream, Split{master, bf16, remainder});
}

void merge_bf16_remainder_to_f32(const uint16_t* bf16, const int16_t* remainder, float* master, int64_t n,
                                 void* stream) {
  impl::launch_elementwise("merge_bf16_remainder_to_f32", n, stream, Merge{bf16, remainder, master});
}

}  // namespace tessera::kernels::cuda
