// tessera/kernels/cuda.h — CUDA versions of the kernels of update.h, optim.h and precision.h,
// over device pointers. Plain C++ (no CUDA or framework types); defined only when TESSERA_HAVE_CUDA_KERNELS.
#pragma once
#include <cstdint>

#include "tessera/kernels/optim.h"
#include "tessera/kernels/update.h"

// Contract, for every function below:
//  * Each is the device twin of the function of the same name in tessera::kernels: same
//    arguments (pointers are device pointers of the current CUDA device), same element math.
//    Element-wise results are bitwise equal to the CPU version's; sum_squares_* differ only by
//    the summation order (see there).
//  * `stream` is a cudaStream_t passed as void*. nullptr is the legacy default stream, which is
//    also LibTorch's default current stream; a caller that runs on another stream passes it.
//  * Updates and conversions are asynchronous on `stream`. all_finite_* and sum_squares_* return
//    a host value, so they wait for `stream` to finish.
//  * n <= 0 does nothing (reductions return their identity: true, 0.0).
//  * CUDA errors are thrown as std::runtime_error naming the function. An error of a kernel's
//    execution may be reported by a later call, as CUDA reports asynchronous errors.
namespace tessera::kernels::cuda {

// True when a CUDA device is usable from this process.
bool available();

// ---- update.h: the composed optimizer update and the storages' masters -----------------------
// Device twins of apply_update / init_master / export_master / import_master; the same
// composed element code, so results equal the CPU's bit for bit (stochastic rounding included).
void apply_update(Storage s, const RuleArgs& a, const UpdateBuffers& b, void* stream);
void init_master(Storage s, const UpdateBuffers& b, void* stream);
void export_master(Storage s, const UpdateBuffers& b, float* out, void* stream);
void import_master(Storage s, const UpdateBuffers& b, const float* in, void* stream);

// ---- optim.h ---------------------------------------------------------------------------------
// Accumulated in double in a fixed order that depends on n only (not on the device or the run),
// so the result is the same on every call. The order differs from the CPU's, so the two agree
// only to within double rounding (bound derived in tests/unit/test_cuda_kernels.cpp).
double sum_squares_f32(const float* x, int64_t n, void* stream);
bool all_finite_f32(const float* x, int64_t n, void* stream);

// ---- precision.h: conversions ----------------------------------------------------------------
void convert_bf16_to_f32(const uint16_t* src, float* dst, int64_t n, void* stream);
void convert_f32_to_bf16(const float* src, uint16_t* dst, int64_t n, void* stream);
void convert_f16_to_f32(const uint16_t* src, float* dst, int64_t n, void* stream);
void convert_f32_to_f16(const float* src, uint16_t* dst, int64_t n, void* stream);
void convert_f32_to_bf16_stochastic(const float* src, uint16_t* dst, int64_t n, uint64_t seed,
                                    uint64_t counter_base, void* stream);
void split_f32_to_bf16_remainder(const float* master, uint16_t* bf16, int16_t* remainder, int64_t n, void* stream);
void merge_bf16_remainder_to_f32(const uint16_t* bf16, const int16_t* remainder, float* master, int64_t n,
                                 void* stream);

// ---- precision.h: overflow checks and reductions over 16-bit values --------------------------
bool all_finite_bf16(const uint16_t* x, int64_t n, void* stream);
bool all_finite_f16(const uint16_t* x, int64_t n, void* stream);
// As sum_squares_f32 (same fixed order), over the widened values.
double sum_squares_bf16(const uint16_t* x, int64_t n, void* stream);
double sum_squares_f16(const uint16_t* x, int64_t n, void* stream);

}  // namespace tessera::kernels::cuda
