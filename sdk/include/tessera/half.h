/* tessera/half.h — bf16 and fp16 <-> f32 for plugins in plain C (C11 or C++), which get no
 * at::BFloat16 / at::Half. Bit-exact with LibTorch's conversions: f32 -> 16 bits rounds to
 * nearest, ties to even; too large becomes +-infinity; NaN stays NaN; fp16 subnormals are kept.
 * A loss reads its inputs in the dtype the precision backend computes in (see abi.h, "Dtypes a
 * plugin receives"): under bf16 / bf16_pure / fp16 a DLPack tensor may hold these 16-bit codes. */
#ifndef TESSERA_HALF_H
#define TESSERA_HALF_H

#include <stdint.h>
#include <string.h>

static inline float tsr_bits_to_f32(uint32_t bits) {
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}
static inline uint32_t tsr_f32_to_bits(float f) {
  uint32_t bits;
  memcpy(&bits, &f, sizeof bits);
  return bits;
}

/* bfloat16: the high half of an f32. */
static inline float tsr_bf16_to_f32(uint16_t h) { return tsr_bits_to_f32((uint32_t)h << 16); }
static inline uint16_t tsr_f32_to_bf16(float f) {
  const uint32_t x = tsr_f32_to_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)0x7fc0u; /* NaN */
  return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

/* IEEE binary16: 1 sign, 5 exponent (bias 15), 10 mantissa bits. */
static inline float tsr_f16_to_f32(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    if (mant == 0) return tsr_bits_to_f32(sign);
    int e = -1; /* a subnormal: shift its leading 1 up to the implicit bit */
    do {
      ++e;
      mant <<= 1;
    } while ((mant & 0x400u) == 0);
    return tsr_bits_to_f32(sign | (uint32_t)(127 - 15 - e) << 23 | (mant & 0x3ffu) << 13);
  }
  if (exp == 31) return tsr_bits_to_f32(sign | 0x7f800000u | mant << 13); /* inf, NaN */
  return tsr_bits_to_f32(sign | (exp + 112u) << 23 | mant << 13);
}
static inline uint16_t tsr_f32_to_f16(float f) {
  const uint32_t x = tsr_f32_to_bits(f);
  const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);  /* NaN */
  if (ax >= 0x47800000u) return (uint16_t)(sign | 0x7c00u); /* >= 65536: infinity */
  if (ax < 0x38800000u) {                                    /* below 2^-14: subnormal or zero */
    if (ax <= 0x33000000u) return sign;                      /* <= 2^-25 rounds (to even) to 0 */
    const uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u, shift = 126u - e;
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (r & 1u))) ++r;
    return (uint16_t)(sign | r);
  }
  uint32_t r = (ax >> 13) - (112u << 10); /* rebias the exponent, keep 10 mantissa bits */
  const uint32_t rem = ax & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r; /* a carry may reach infinity */
  return (uint16_t)(sign | r);
}

#endif /* TESSERA_HALF_H */
