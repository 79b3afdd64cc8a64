/* TFLite's int8 requantization, the C twin of edgekit/quant/arith.py (bit-exact: one shared
 * test runs both on the same vectors). Kept in a header so every kernel inlines it. */
#ifndef EK_ARITH_H
#define EK_ARITH_H
#include <stdint.h>

/* SaturatingRoundingDoublingHighMul: (a * b * 2 + 2^31 rounding) >> 32, truncating division. */
static inline int32_t ek_srdhm(int32_t a, int32_t b) {
    if (a == INT32_MIN && b == INT32_MIN) return INT32_MAX;
    int64_t ab = (int64_t)a * (int64_t)b;
    int64_t nudge = ab >= 0 ? (1LL << 30) : (1 - (1LL << 30));
    return (int32_t)((ab + nudge) / (1LL << 31));
}

/* Division by 2^n rounding half away from zero. */
static inline int32_t ek_rdbpot(int32_t x, int n) {
    int32_t mask = (int32_t)((1LL << n) - 1);
    int32_t rem = x & mask;
    int32_t thr = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> n) + (rem > thr ? 1 : 0);
}

/* (a * b + 2^31) >> 32: SMMULR where the core has it. */
static inline int32_t ek_mulhr(int32_t a, int32_t b) {
#if defined(__ARM_FEATURE_DSP)
    int32_t r;
    __asm("smmulr %0, %1, %2" : "=r"(r) : "r"(a), "r"(b));
    return r;
#else
    return (int32_t)(((int64_t)a * b + 0x80000000LL) >> 32);
#endif
}

/* c + ((a * b + 2^31) >> 32): SMMLAR where the core has it (adding c to the high word before
 * the rounding shift leaves the low word, so the rounding, alone). */
static inline int32_t ek_mulhr_add(int32_t a, int32_t b, int32_t c) {
#if defined(__ARM_FEATURE_DSP)
    int32_t r;
    __asm("smmlar %0, %1, %2, %3" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
#else
    return (int32_t)((uint32_t)c + (uint32_t)ek_mulhr(a, b));
#endif
}

/* v clamped to [-128, 127]: one SSAT where the core has it. */
static inline int32_t ek_sat8(int32_t v) {
#if defined(__ARM_FEATURE_SAT)
    int32_t r;
    __asm("ssat %0, #8, %1" : "=r"(r) : "r"(v));
    return r;
#else
    return v < -128 ? -128 : v > 127 ? 127 : v;
#endif
}

/* MultiplyByQuantizedMultiplier with the shift split into its left and right parts. Where
 * |acc << left| < 2^30 (every accumulator of a real layer), a shorter form with the same
 * result: SRDHM(x, m) = floor((x m + 2^30) / 2^31) (what TFLite's sign-dependent nudge and
 * truncating division come to) = (2x m + 2^31) >> 32, and rounding half away from zero by 2^n
 * is floor((r + 2^(n-1) - [r < 0]) / 2^n); neither overflows there. Elsewhere the reference
 * form. Loops over one channel call it with left and right invariant (and right known to be
 * positive where they test it first), so the compiler keeps both out of the loop. */
static inline int32_t ek_mbqm_lr(int32_t acc, int32_t m, int32_t left, int32_t right) {
    const int32_t x = (int32_t)((uint32_t)acc << left);
    if (__builtin_expect((uint32_t)x + 0x40000000u < 0x80000000u, 1)) {
        const int32_t r = ek_mulhr(x * 2, m);
        return right ? (r + (1 << (right - 1)) + (r >> 31)) >> right : r;
    }
    return ek_rdbpot(ek_srdhm(x, m), right);
}

static inline int32_t ek_mbqm(int32_t acc, int32_t m, int32_t shift) {
    return ek_mbqm_lr(acc, m, shift > 0 ? shift : 0, shift < 0 ? -shift : 0);
}

static inline int32_t ek_clamp(int32_t v, int32_t lo, int32_t hi) {
    return v < lo ? lo : v > hi ? hi : v;
}

static inline int8_t ek_requantize(int32_t acc, int32_t m, int32_t shift, int32_t zp,
                                   int32_t lo, int32_t hi) {
    return (int8_t)ek_clamp(ek_mbqm(acc, m, shift) + zp, lo, hi);
}
#endif
