// kernels/cpu/precision.cpp — CPU implementations of the 16-bit conversions, bf16+remainder
// split/merge, and the overflow checks and sums of squares over 16-bit values.
#include "tessera/kernels/precision.h"

#include <algorithm>

#include "../common/updates.h"

namespace tessera::kernels {

namespace {

using updates::merge_one;
using updates::split_one;

// All-finite over 16-bit patterns whose exponent field is `exp_mask`: branch-free inside
// fixed-size chunks (vectorisable), early exit between chunks.
bool all_finite_16(const uint16_t* x, int64_t n, uint16_t exp_mask) {
  constexpr int64_t kChunk = 1024;
  for (int64_t start = 0; start < n; start += kChunk) {
    const int64_t end = std::min(n, start + kChunk);
    unsigned bad = 0;
    for (int64_t i = start; i < end; ++i) bad |= static_cast<unsigned>((x[i] & exp_mask) == exp_mask);
    if (bad) return false;
  }
  return true;
}

// sum_squares_f32's order: four partial sums over groups of four, tail into the first.
template <float (*Widen)(uint16_t)>
double sum_squares_16(const uint16_t* x, int64_t n) {
  double s[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4)
    for (int k = 0; k < 4; ++k) {
      const double v = Widen(x[i + k]);
      s[k] += v * v;
    }
  for (; i < n; ++i) {
    const double v = Widen(x[i]);
    s[0] += v * v;
  }
  return (s[0] + s[1]) + (s[2] + s[3]);
}

}  // namespace

// ---- bulk conversions ----------------------------------------------------------------------

void convert_bf16_to_f32(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(src[i]);
}

void convert_f32_to_bf16(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_bf16(src[i]);
}

void convert_f16_to_f32(const uint16_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(src[i]);
}

void convert_f32_to_f16(const float* src, uint16_t* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_f16(src[i]);
}

void convert_f32_to_bf16_stochastic(const float* src, uint16_t* dst, int64_t n, uint64_t seed,
                                    uint64_t counter_base) {
  const uint64_t key = detail::stochastic_key(seed);
  for (int64_t i = 0; i < n; ++i)
    dst[i] = detail::f32_to_bf16_stochastic_keyed(src[i], key, counter_base + static_cast<uint64_t>(i));
}

// ---- split / merge -------------------------------------------------------------------------

void split_f32_to_bf16_remainder(const float* master, uint16_t* bf16, int16_t* remainder, int64_t n) {
  for (int64_t i = 0; i < n; ++i) bf16[i] = split_one(master[i], &remainder[i]);
}

void merge_bf16_remainder_to_f32(const uint16_t* bf16, const int16_t* remainder, float* master, int64_t n) {
  for (int64_t i = 0; i < n; ++i) master[i] = merge_one(bf16[i], remainder[i]);
}

// ---- overflow checks and reductions --------------------------------------------------------

bool all_finite_bf16(const uint16_t* x, int64_t n) { return all_finite_16(x, n, 0x7F80u); }
bool all_finite_f16(const uint16_t* x, int64_t n) { return all_finite_16(x, n, 0x7C00u); }

double sum_squares_bf16(const uint16_t* x, int64_t n) { return sum_squares_16<bf16_to_f32>(x, n); }
double sum_squares_f16(const uint16_t* x, int64_t n) { return sum_squares_16<f16_to_f32>(x, n); }

}  // namespace tessera::kernels
