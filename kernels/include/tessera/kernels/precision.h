// tessera/kernels/precision.h — 16-bit floating point (bf16, IEEE half) conversions, stochastic
// rounding and bf16+remainder master storage over flat buffers (updates in them: update.h).
#pragma once
#include <cstdint>
#include <cstring>

#include "tessera/kernels/optim.h"

// The inline helpers below are the one definition of each rounding rule, for the CPU loops and
// for the CUDA kernels alike: compiled by nvcc they are __host__ __device__, elsewhere plain.
#if defined(__CUDACC__)
#define TESSERA_HD __host__ __device__
#else
#define TESSERA_HD
#endif

// Conventions for everything below:
//  * bf16 and fp16 values are passed as their uint16_t bit patterns (no framework types).
//  * "RNE" is IEEE round-to-nearest, ties-to-even; fp32 arithmetic follows IEEE (no fast-math).
//  * n is an element count; n <= 0 means "do nothing" (reductions return their identity).
//  * Buffers of one call must not overlap, except where a function says otherwise.

namespace tessera::kernels {

// ---- scalar conversions (inline so that callers' loops can vectorise them) ----------------

namespace detail {
TESSERA_HD inline uint32_t f32_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}
TESSERA_HD inline float f32_from_bits(uint32_t u) {
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
}
// cond ? a : b written with masks, so that loops stay branch-free and vectorise.
TESSERA_HD inline uint32_t select(bool cond, uint32_t a, uint32_t b) {
  const uint32_t mask = 0u - static_cast<uint32_t>(cond);
  return (a & mask) | (b & ~mask);
}
}  // namespace detail

// bf16 -> fp32, exact (every bf16 value, NaN payloads included, is an fp32 value).
TESSERA_HD inline float bf16_to_f32(uint16_t h) { return detail::f32_from_bits(static_cast<uint32_t>(h) << 16); }

// fp32 -> bf16, RNE. Values beyond the largest finite bf16 round to ±Inf as RNE dictates; ±Inf
// and ±0 are preserved, subnormals round like any other value. A NaN stays a NaN with the same
// sign: the top 7 payload bits are kept and the quiet bit set (as x86 VCVTNEPS2BF16; ATen
// instead returns the canonical 0x7FC0, so the two agree on every non-NaN input).
TESSERA_HD inline uint16_t f32_to_bf16(float x) {
  const uint32_t u = detail::f32_bits(x);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const uint32_t nan = (u >> 16) | 0x0040u;
  return static_cast<uint16_t>(detail::select((u & 0x7FFFFFFFu) > 0x7F800000u, nan, rounded));
}

// fp32 -> bf16, round to nearest with ties AWAY from zero. This is how both master-keeping
// backends (bf16 and bf16_remainder) derive the bf16 compute copy from the fp32 master: the
// 16-bit remainder form can store exactly this rounding (an even bf16 value has 65537 fp32
// values that round to it under RNE, one more than 16 bits can tell apart), so using it in
// both makes their parameters bitwise equal. It differs from RNE only on exact ties with an
// even upper half (1 fp32 value in 65536), by one ulp away from zero. NaN -> quiet NaN.
TESSERA_HD inline uint16_t f32_to_bf16_ties_away(float x) {
  const uint32_t u = detail::f32_bits(x);
  const uint32_t rounded = (u >> 16) + ((u >> 15) & 1u);
  return static_cast<uint16_t>(detail::select((u & 0x7FFFFFFFu) > 0x7F800000u, (u >> 16) | 0x0040u, rounded));
}

// IEEE binary16 -> fp32, exact (subnormals included; NaN payloads are kept).
TESSERA_HD inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
  const uint32_t normal = ((e + (127u - 15u)) << 23) | (m << 13);
  const uint32_t inf_nan = 0x7F800000u | (m << 13);
  // Subnormal (and zero): m * 2^-24, exact in fp32.
  const uint32_t sub = detail::f32_bits(static_cast<float>(m) * 5.9604644775390625e-8f);
  const uint32_t mag = detail::select(e == 0, sub, detail::select(e == 31, inf_nan, normal));
  return detail::f32_from_bits(sign | mag);
}

// fp32 -> IEEE binary16, RNE: |x| >= 65520 (the midpoint above 65504) becomes ±Inf, results
// below 2^-14 are correctly rounded subnormals (or ±0), ±Inf and ±0 are preserved. A NaN becomes
// a quiet NaN with the same sign and the top 9 payload bits kept (ATen: sign | 0x7E00).
TESSERA_HD inline uint16_t f32_to_f16(float x) {
  const uint32_t u = detail::f32_bits(x);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t a = u & 0x7FFFFFFFu;
  // Normal result: rebias the exponent, RNE on the 13 dropped bits; a carry out of the
  // mantissa bumps the exponent, and everything from 65520 up lands on or past 0x7C00 (Inf).
  uint32_t normal = (a - ((127u - 15u) << 23) + 0x0FFFu + ((a >> 13) & 1u)) >> 13;
  normal = detail::select(normal > 0x7C00u, 0x7C00u, normal);
  // Subnormal result (|x| < 2^-14): adding 0.5f puts the value where fp32's ulp is 2^-24, the
  // fp16 subnormal ulp, so the fp32 addition does the RNE; the low bits are then the result
  // (0x400 when it rounds up to the smallest normal, which is the right encoding too).
  const uint32_t sub = detail::f32_bits(detail::f32_from_bits(a) + 0.5f) - 0x3F000000u;
  const uint32_t nan = 0x7E00u | ((a >> 13) & 0x3FFu);
  const uint32_t mag = detail::select(a > 0x7F800000u, nan, detail::select(a < 0x38800000u, sub, normal));
  return static_cast<uint16_t>(sign | mag);
}

// ---- stochastic rounding -------------------------------------------------------------------

namespace detail {
// A 64-bit bijective mixer (xor-shift / odd-multiply rounds).
TESSERA_HD inline uint64_t mix64(uint64_t z) {
  z ^= z >> 31;
  z *= 0x7FB5D329728EA185ull;
  z ^= z >> 27;
  z *= 0x81DADEF4BC2DD44Dull;
  z ^= z >> 33;
  return z;
}
// Per-seed key, computed once per seed.
TESSERA_HD inline uint64_t stochastic_key(uint64_t seed) { return mix64(seed ^ 0x6A09E667F3BCC909ull); }
// 16 uniform bits for (key, counter): the counter is spread by an odd constant (a bijection, so
// distinct counters of one seed never share an input) and mixed with the seed's key.
TESSERA_HD inline uint32_t stochastic_bits16(uint64_t key, uint64_t counter) {
  return static_cast<uint32_t>(mix64(key + counter * 0x9E3779B97F4A7C15ull) >> 48);
}
TESSERA_HD inline uint16_t f32_to_bf16_stochastic_keyed(float x, uint64_t key, uint64_t counter) {
  const uint32_t u = detail::f32_bits(x);
  const uint32_t rounded = (u + stochastic_bits16(key, counter)) >> 16;
  const uint32_t nan = (u >> 16) | 0x0040u;
  return static_cast<uint16_t>(select((u & 0x7FFFFFFFu) > 0x7F800000u, nan, rounded));
}
}  // namespace detail

// fp32 -> bf16 with stochastic rounding: r, 16 uniform random bits drawn from a stateless hash
// of (seed, counter), is added to the fp32 bit pattern and the low 16 bits are dropped. The
// result is one of the two bf16 values bracketing x (x itself when x is a bf16 value), the one
// farther from zero with probability (low 16 bits of x) / 65536, so E[result] = x. Same
// (seed, counter) -> same result on every machine; use a fresh counter for every rounding
// (e.g. step * numel + element index) or the rounding errors are correlated. ±Inf and ±0 are
// preserved; NaN is handled as in f32_to_bf16. Finite x above the largest finite bf16 may round
// to ±Inf (as if Inf were the next value, 2^128).
TESSERA_HD inline uint16_t f32_to_bf16_stochastic(float x, uint64_t seed, uint64_t counter) {
  return detail::f32_to_bf16_stochastic_keyed(x, detail::stochastic_key(seed), counter);
}

// ---- bulk conversions (src and dst: n elements each) ---------------------------------------

void convert_bf16_to_f32(const uint16_t* src, float* dst, int64_t n);
void convert_f32_to_bf16(const float* src, uint16_t* dst, int64_t n);  // RNE
void convert_f16_to_f32(const uint16_t* src, float* dst, int64_t n);
void convert_f32_to_f16(const float* src, uint16_t* dst, int64_t n);   // RNE
// Element i uses counter counter_base + i (wrapping modulo 2^64).
void convert_f32_to_bf16_stochastic(const float* src, uint16_t* dst, int64_t n, uint64_t seed,
                                    uint64_t counter_base);

// ---- fp32 master stored as bf16 + 16-bit remainder -----------------------------------------
//
// split: bf16[i] is master[i] rounded to nearest, and remainder[i] = bits(master[i]) -
// (bf16[i] << 16) as a signed integer, which lies in [-32768, 32767]. Exactness forces one
// departure from RNE: a tie (low 16 bits exactly 0x8000) whose upper half is even would round
// down under RNE, leaving +32768, which does not fit; every tie therefore rounds away from zero
// (upper half + 1). This is the convention of Transformer Engine's store_param_remainders (the
// remainder is then simply the low 16 bits reinterpreted as int16). So bf16[i] ==
// f32_to_bf16(master[i]) for every value except those ties (1 in 131072 random bit patterns),
// where it is one bf16 ulp farther from zero.
// merge: master[i] = bits (bf16[i] << 16) + remainder[i], exact, bit for bit, for every finite
// fp32 value (±0, subnormals, the largest finite values, whose bf16 half is ±Inf) and for ±Inf.
// NaN: split gives a NaN bf16 (as f32_to_bf16) and merge gives back a NaN of the same sign,
// with payload bits not necessarily the original ones.
void split_f32_to_bf16_remainder(const float* master, uint16_t* bf16, int16_t* remainder, int64_t n);
void merge_bf16_remainder_to_f32(const uint16_t* bf16, const int16_t* remainder, float* master, int64_t n);

// ---- overflow checks and reductions over 16-bit gradients ----------------------------------

// True when no element is ±Inf or NaN (exponent field all ones). True for n <= 0.
bool all_finite_bf16(const uint16_t* x, int64_t n);
bool all_finite_f16(const uint16_t* x, int64_t n);

// Sum of squares of the widened values, accumulated in double in the fixed order of
// sum_squares_f32 (bitwise equal to sum_squares_f32 over the converted values).
double sum_squares_bf16(const uint16_t* x, int64_t n);
double sum_squares_f16(const uint16_t* x, int64_t n);

}  // namespace tessera::kernels
