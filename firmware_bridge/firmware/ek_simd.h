/* The SIMD instructions the int8 kernels use per core, the way CMSIS-NN organizes its kernels,
 * chosen at build time by the compiler's -mcpu (firmware_bridge/ports.py):
 *
 *   EK_DSP (Cortex-M4/M7, __ARM_FEATURE_DSP): SXTB16 widens bytes 0 and 2 (or, rotated, 1 and 3)
 *     of a word to two int16 halves; SMLAD adds the two products of two such pairs to an int32.
 *   EK_MVE (Cortex-M55, __ARM_FEATURE_MVE): 128-bit Helium vectors; VMLADAVA.S8 adds the sixteen
 *     products of two int8x16 vectors to an int32, tail-predicated by VCTP.
 *   neither (Cortex-M3): the portable loops.
 *
 * EK_EMULATE_DSP / EK_EMULATE_MVE, for the host twin tests only (tests/test_mcu_cores.py), define
 * the same primitives in plain C with the instructions' arithmetic, so the very kernel source a
 * board runs is checked bit for bit against the numba runtime on the host. */
#ifndef EK_SIMD_H
#define EK_SIMD_H
#include <stdint.h>
#include <string.h>

#if defined(__ARM_FEATURE_MVE) || defined(EK_EMULATE_MVE)
#define EK_MVE 1
#elif defined(__ARM_FEATURE_DSP) || defined(EK_EMULATE_DSP)
#define EK_DSP 1
#endif

/* A word of four bytes at any alignment (one LDR on v7-M and later, which allow unaligned
 * loads; a byte-wise read elsewhere). */
static inline uint32_t ek_read4(const int8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

#if defined(EK_DSP) && defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>
static inline uint32_t ek_sxtb16(uint32_t v) { return (uint32_t)__sxtb16(v); }
static inline uint32_t ek_sxtb16_ror8(uint32_t v) {  /* one instruction: SXTB16 r, v, ROR #8 */
    uint32_t r;
    __asm("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
    return r;
}
static inline int32_t ek_smlad(uint32_t a, uint32_t b, int32_t acc) {
    return __smlad(a, b, acc);
}
static inline int32_t ek_smlabb(uint32_t a, int32_t b, int32_t acc) {
    return __smlabb((int32_t)a, b, acc);
}
/* *a, *b = the next two words at *p, p advanced: one LDRD with post-increment. */
static inline void ek_ldrd_post(const uint32_t **p, uint32_t *a, uint32_t *b) {
    __asm("ldrd %0, %1, [%2], #8" : "=r"(*a), "=r"(*b), "+r"(*p)
          : "m"(*(const struct { uint32_t w[2]; } *)*p));
}
static inline int32_t ek_smlatb(uint32_t a, int32_t b, int32_t acc) {
    return __smlatb((int32_t)a, b, acc);
}
static inline int32_t ek_smlabt(uint32_t a, uint32_t b, int32_t acc) {
    return __smlabt((int32_t)a, (int32_t)b, acc);
}
static inline int32_t ek_smlatt(uint32_t a, uint32_t b, int32_t acc) {
    return __smlatt((int32_t)a, (int32_t)b, acc);
}
static inline int32_t ek_smuad(uint32_t a, uint32_t b) { return __smuad(a, b); }
#elif defined(EK_DSP)
/* SXTB16: the halves are the sign-extended bytes 0 and 2. */
static inline uint32_t ek_sxtb16(uint32_t v) {
    return (uint32_t)(uint16_t)(int16_t)(int8_t)(v & 0xFF)
           | (uint32_t)(uint16_t)(int16_t)(int8_t)((v >> 16) & 0xFF) << 16;
}
static inline uint32_t ek_sxtb16_ror8(uint32_t v) { return ek_sxtb16(v >> 8 | v << 24); }
/* SMLAD: acc + lo(a) * lo(b) + hi(a) * hi(b), wrapping modulo 2^32 as the instruction does. */
static inline int32_t ek_smlad(uint32_t a, uint32_t b, int32_t acc) {
    int32_t lo = (int16_t)(a & 0xFFFF) * (int16_t)(b & 0xFFFF);
    int32_t hi = (int16_t)(a >> 16) * (int16_t)(b >> 16);
    return (int32_t)((uint32_t)acc + (uint32_t)lo + (uint32_t)hi);
}
static inline void ek_ldrd_post(const uint32_t **p, uint32_t *a, uint32_t *b) {
    *a = (*p)[0];
    *b = (*p)[1];
    *p += 2;
}
/* SMLABB / SMLATB: acc + the bottom / top half of a times the bottom half of b. */
static inline int32_t ek_smlabb(uint32_t a, int32_t b, int32_t acc) {
    return (int32_t)((uint32_t)acc + (uint32_t)((int16_t)(a & 0xFFFF) * (int16_t)b));
}
static inline int32_t ek_smlatb(uint32_t a, int32_t b, int32_t acc) {
    return (int32_t)((uint32_t)acc + (uint32_t)((int16_t)(a >> 16) * (int16_t)b));
}
/* SMLABT / SMLATT: the bottom / top half of a times the top half of b; SMUAD: SMLAD from 0. */
static inline int32_t ek_smlabt(uint32_t a, uint32_t b, int32_t acc) {
    return ek_smlabb(a, (int32_t)(b >> 16), acc);
}
static inline int32_t ek_smlatt(uint32_t a, uint32_t b, int32_t acc) {
    return ek_smlatb(a, (int32_t)(b >> 16), acc);
}
static inline int32_t ek_smuad(uint32_t a, uint32_t b) { return ek_smlad(a, b, 0); }
#endif

#if defined(EK_MVE) && defined(__ARM_FEATURE_MVE)
#include <arm_mve.h>
#elif defined(EK_MVE)
/* The Helium intrinsics the kernels call, lane by lane. */
typedef struct { int8_t v[16]; } int8x16_t;
typedef struct { int32_t v[4]; } int32x4_t;
typedef uint16_t mve_pred16_t;  /* one bit per byte lane */

static inline mve_pred16_t vctp8q(uint32_t n) {
    return (mve_pred16_t)(n >= 16 ? 0xFFFF : (1u << n) - 1u);
}
static inline int8x16_t vldrbq_z_s8(const int8_t *p, mve_pred16_t pred) {
    int8x16_t r;
    for (int i = 0; i < 16; i++) r.v[i] = (pred >> i & 1) ? p[i] : 0;
    return r;
}
static inline int8x16_t vld1q_s8(const int8_t *p) { return vldrbq_z_s8(p, 0xFFFF); }
static inline int32_t vmladavaq_s8(int32_t acc, int8x16_t a, int8x16_t b) {
    uint32_t s = (uint32_t)acc;
    for (int i = 0; i < 16; i++) s += (uint32_t)(a.v[i] * b.v[i]);
    return (int32_t)s;
}
static inline int32_t vmladavaq_p_s8(int32_t acc, int8x16_t a, int8x16_t b, mve_pred16_t p) {
    uint32_t s = (uint32_t)acc;
    for (int i = 0; i < 16; i++)
        if (p >> i & 1) s += (uint32_t)(a.v[i] * b.v[i]);
    return (int32_t)s;
}

static inline mve_pred16_t vctp32q(uint32_t n) {
    return (mve_pred16_t)(n >= 4 ? 0xFFFF : (1u << 4 * n) - 1u);
}
static inline int32x4_t vdupq_n_s32(int32_t a) {
    int32x4_t r = {{a, a, a, a}};
    return r;
}
static inline int32x4_t vsetq_lane_s32(int32_t a, int32x4_t v, int i) {
    v.v[i] = a;
    return v;
}
/* VLDRB.S32: four bytes, each sign-extended to a lane. */
static inline int32x4_t vldrbq_s32(const int8_t *p) {
    int32x4_t r = {{p[0], p[1], p[2], p[3]}};
    return r;
}
/* VSTRB.32 under a predicate: each enabled lane's low byte. */
static inline void vstrbq_p_s32(int8_t *p, int32x4_t v, mve_pred16_t pred) {
    for (int i = 0; i < 4; i++)
        if (pred >> 4 * i & 1) p[i] = (int8_t)v.v[i];
}
#define EK_LANES(expr)                           \
    do {                                         \
        for (int i = 0; i < 4; i++) r.v[i] = (expr); \
    } while (0)
static inline int32x4_t vmlaq_n_s32(int32x4_t a, int32x4_t b, int32_t c) {
    int32x4_t r;
    EK_LANES((int32_t)((uint32_t)a.v[i] + (uint32_t)b.v[i] * (uint32_t)c));
    return r;
}
static inline int32x4_t vaddq_n_s32(int32x4_t a, int32_t b) {
    int32x4_t r;
    EK_LANES((int32_t)((uint32_t)a.v[i] + (uint32_t)b));
    return r;
}
static inline int32x4_t vandq_s32(int32x4_t a, int32x4_t b) {
    int32x4_t r;
    EK_LANES(a.v[i] & b.v[i]);
    return r;
}
static inline int32x4_t vshrq_n_s32(int32x4_t a, int n) {
    int32x4_t r;
    EK_LANES(a.v[i] >> n);
    return r;
}
static inline int32x4_t vminq_s32(int32x4_t a, int32x4_t b) {
    int32x4_t r;
    EK_LANES(a.v[i] < b.v[i] ? a.v[i] : b.v[i]);
    return r;
}
static inline int32x4_t vmaxq_s32(int32x4_t a, int32x4_t b) {
    int32x4_t r;
    EK_LANES(a.v[i] > b.v[i] ? a.v[i] : b.v[i]);
    return r;
}
static inline int32_t ek_saturate(int64_t v) {
    return v > INT32_MAX ? INT32_MAX : v < INT32_MIN ? INT32_MIN : (int32_t)v;
}
static inline int32x4_t vqaddq_s32(int32x4_t a, int32x4_t b) {
    int32x4_t r;
    EK_LANES(ek_saturate((int64_t)a.v[i] + b.v[i]));
    return r;
}
/* VQRDMULH: saturate((2ab + 2^31) >> 32), computed as (ab + 2^30) >> 31 (2ab may overflow). */
static inline int32x4_t vqrdmulhq_n_s32(int32x4_t a, int32_t b) {
    int32x4_t r;
    EK_LANES(ek_saturate(((int64_t)a.v[i] * b + (1LL << 30)) >> 31));
    return r;
}
/* VSHL (register): each lane shifted left by b (right, truncating, where b < 0). */
static inline int32x4_t vshlq_s32(int32x4_t a, int32x4_t b) {
    int32x4_t r;
    EK_LANES(b.v[i] >= 0 ? (int32_t)((uint32_t)a.v[i] << b.v[i]) : a.v[i] >> -b.v[i]);
    return r;
}
/* VRSHL: as VSHL, a right shift rounding half up (in 64 bits: no overflow). */
static inline int32x4_t vrshlq_s32(int32x4_t a, int32x4_t b) {
    int32x4_t r;
    EK_LANES(b.v[i] >= 0 ? (int32_t)((uint32_t)a.v[i] << b.v[i])
                         : (int32_t)(((int64_t)a.v[i] + (1LL << (-b.v[i] - 1))) >> -b.v[i]));
    return r;
}
#undef EK_LANES
#endif
#endif
