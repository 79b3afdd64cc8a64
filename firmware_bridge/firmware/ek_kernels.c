/* int8 kernels: TFLite arithmetic (ek_arith.h), bit-exact with edgekit's numba runtime.
 *
 * Convolutions copy output pixels' windows into small columns (cin/groups * kh * kw bytes each,
 * padding filled with the input zero point) and take dot products with the weight rows; the
 * input zero point is folded into the bias by the C writer (b - zp * sum(w)): with padding equal
 * to zp, sum(col * w) - zp * sum(w) = sum((col - zp) * w) exactly, so the inner loop is loads and
 * multiply-accumulates. The convolution, depthwise and fully connected inner loops come per core
 * (ek_simd.h: SMLAD on the Cortex-M4/M7, Helium on the M55, plain C on the M3). */
#include <math.h>
#include <string.h>

#include "ek_arith.h"
#include "ek_kernels.h"
#include "ek_simd.h"

/* Requantization constants of one output channel (ek_arith.h's ek_requantize). */
typedef struct { int32_t mult, shift, zp, lo, hi; } ek_rq_t;

static inline int8_t ek_rq(int32_t acc, const ek_rq_t *q) {
    return ek_requantize(acc, q->mult, q->shift, q->zp, q->lo, q->hi);
}

/* y[i] = ek_rq(acc[i] + bias, q) for i < n, a pass of its own, so that one channel's constants
 * stay in registers (kernels whose multiply-accumulate loops need all the registers fill acc
 * first: ek_rq_run for one channel, ek_rq_block for several). Where the shift is to the right
 * and the output range the whole of int8 (no activation, or a ReLU whose zero point is -128),
 * ek_mbqm_lr's short form takes two instructions less: the rounding's -[r < 0] is -[x < 0]
 * (the multiplier is never negative, and where x < 0 gives r = 0 both round to 0), so it is
 * added with the nudge inside SMMLAR; the clamp is one SSAT. */
static inline __attribute__((always_inline)) void ek_rq_span(const int32_t *acc, int32_t n,
                                                             int32_t bias, const ek_rq_t *q,
                                                             int8_t *y) {
    const int32_t m = q->mult, zp = q->zp, lo = q->lo, hi = q->hi;
    const int32_t left = q->shift > 0 ? q->shift : 0, right = q->shift < 0 ? -q->shift : 0;
    if (right > 0 && lo == -128 && hi == 127) {
        const int32_t round = 1 << (right - 1);
        for (int32_t i = 0; i < n; i++) {
            const int32_t x = (int32_t)((uint32_t)(acc[i] + bias) << left);
            const int32_t v = __builtin_expect((uint32_t)x + 0x40000000u < 0x80000000u, 1)
                                  ? ek_mulhr_add(x * 2, m, round + (x >> 31)) >> right
                                  : ek_rdbpot(ek_srdhm(x, m), right);
            y[i] = (int8_t)ek_sat8(v + zp);
        }
    } else {
        for (int32_t i = 0; i < n; i++)
            y[i] = (int8_t)ek_clamp(ek_mbqm_lr(acc[i] + bias, m, left, right) + zp, lo, hi);
    }
}

#if defined(EK_DSP)
__attribute__((noinline))
static void ek_rq_run(const int32_t *acc, int32_t n, int32_t bias, const ek_rq_t *q,
                      int8_t *y) {
    ek_rq_span(acc, n, bias, q, y);
}

/* Channels o0..o1 of a convolution, n outputs each from acc[step * (o - o0)], into
 * y + o * stride. */
__attribute__((noinline))
static void ek_rq_block(const ek_conv_t *p, const int32_t *acc, int32_t step, int32_t o0,
                        int32_t o1, int32_t n, int8_t *y, int32_t stride) {
    const int32_t zp = p->out_zp, lo = p->lo, hi = p->hi;
    for (int32_t o = o0; o < o1; o++, acc += step) {
        const ek_rq_t q = {p->mult[o], p->shift[o], zp, lo, hi};
        ek_rq_span(acc, n, p->bias[o], &q, y + o * stride);
    }
}
#endif

/* The scratch ``col`` (edgekit.ops.conv.scratch_bytes says how large) at an 8-byte boundary. */
static inline void *ek_aligned(int8_t *p) {
    return (void *)(((uintptr_t)p + 7u) & ~(uintptr_t)7u);
}

/* The window of output pixel ``pixel`` over group g's input channels, (ic, ky, kx) like the
 * weights; taps outside the input hold the input zero point. Fields are read into locals once
 * (a store through int8_t * may alias the struct, which would reload them per byte). */
static void ek_column(const ek_conv_t *p, const int8_t *x, int32_t g, int32_t pixel,
                      int8_t *c) {
    const int32_t h = p->h, w = p->w, kh = p->kh, kw = p->kw, dh = p->dh, dw = p->dw;
    const int32_t per_group = p->cin / p->groups, plane = h * w;
    const int32_t y0 = pixel / p->ow * p->sh - p->pt, x0 = pixel % p->ow * p->sw - p->pl;
    const int inside = y0 >= 0 && x0 >= 0 && y0 + (kh - 1) * dh < h && x0 + (kw - 1) * dw < w;
    const int8_t *src = x + g * per_group * plane + y0 * w + x0;
    if (inside && kh == 1 && kw == 1) {  /* pointwise: one tap per channel */
        for (int32_t ic = 0; ic < per_group; ic++, src += plane) *c++ = *src;
        return;
    }
    if (inside && kw == 3 && dw == 1) {
        for (int32_t ic = 0; ic < per_group; ic++, src += plane) {
            const int8_t *row = src;
            for (int32_t ky = 0; ky < kh; ky++, row += dh * w, c += 3) {
                c[0] = row[0];
                c[1] = row[1];
                c[2] = row[2];
            }
        }
        return;
    }
    const int8_t zp = (int8_t)p->in_zp;
    for (int32_t ic = 0; ic < per_group; ic++, src += plane) {
        for (int32_t ky = 0; ky < kh; ky++) {
            const int32_t iy = y0 + ky * dh;
            const int8_t *row = src + ky * dh * w;
            for (int32_t kx = 0; kx < kw; kx++) {
                const int32_t ix = x0 + kx * dw;
                *c++ = (iy >= 0 && iy < h && ix >= 0 && ix < w) ? row[kx * dw] : zp;
            }
        }
    }
}

/* The taps k in [*k0, *k1) whose position base + k * d lies inside [0, size). */
static void ek_taps(int32_t base, int32_t d, int32_t k, int32_t size, int32_t *k0, int32_t *k1) {
    if (d == 1) {  /* no divisions */
        *k0 = base < 0 ? -base : 0;
        *k1 = size - base < k ? size - base : k;
        if (*k1 < 0) *k1 = 0;
        return;
    }
    *k0 = base < 0 ? (-base + d - 1) / d : 0;
    *k1 = size - 1 - base < 0 ? 0 : (size - 1 - base) / d + 1;
    if (*k1 > k) *k1 = k;
}

/* --- Dot products of columns and weight rows, per core -------------------------------------
 * Convolutions copy output pixels' windows into columns (padding filled with the input zero
 * point, which the bias compensates: converters fold b - zp * sum(w)) and take dot products with
 * the weight rows: two pixels by two output channels on the Cortex-M3, so every load serves two
 * multiply-adds; four pixels by one channel on the M4/M7 (the columns widened to int16 once) and
 * the M55 (whose requantization then runs on one vector). */

#if defined(EK_MVE)
/* Four columns (c, c + depth, ...) times one weight row: sixteen taps per VMLADAVA, the last
 * depth % 16 under a VCTP predicate. */
static inline int32x4_t ek_dot4_mve(const int8_t *c, const int8_t *w, int32_t n, int32_t bias) {
    const int8_t *c1 = c + n, *c2 = c1 + n, *c3 = c2 + n;
    int32_t s0 = bias, s1 = bias, s2 = bias, s3 = bias, k = 0;
    for (; k + 16 <= n; k += 16) {
        int8x16_t wv = vld1q_s8(w + k);
        s0 = vmladavaq_s8(s0, vld1q_s8(c + k), wv);
        s1 = vmladavaq_s8(s1, vld1q_s8(c1 + k), wv);
        s2 = vmladavaq_s8(s2, vld1q_s8(c2 + k), wv);
        s3 = vmladavaq_s8(s3, vld1q_s8(c3 + k), wv);
    }
    if (k < n) {
        mve_pred16_t pr = vctp8q((uint32_t)(n - k));
        int8x16_t wv = vldrbq_z_s8(w + k, pr);
        s0 = vmladavaq_p_s8(s0, vldrbq_z_s8(c + k, pr), wv, pr);
        s1 = vmladavaq_p_s8(s1, vldrbq_z_s8(c1 + k, pr), wv, pr);
        s2 = vmladavaq_p_s8(s2, vldrbq_z_s8(c2 + k, pr), wv, pr);
        s3 = vmladavaq_p_s8(s3, vldrbq_z_s8(c3 + k, pr), wv, pr);
    }
    int32x4_t v = vdupq_n_s32(s0);
    v = vsetq_lane_s32(s1, v, 1);
    v = vsetq_lane_s32(s2, v, 2);
    return vsetq_lane_s32(s3, v, 3);
}

/* ek_requantize on four lanes of one channel: VQRDMULH is TFLite's saturating rounding doubling
 * high multiply exactly; the rounding right shift (half away from zero) is gemmlowp's
 * RoundingDivideByPOT: negative lanes less one, then VRSHL's round half up. */
static inline int32x4_t ek_requant4_mve(int32x4_t acc, const ek_rq_t *q) {
    const int32_t left = q->shift > 0 ? q->shift : 0, right = q->shift > 0 ? 0 : -q->shift;
    acc = vqrdmulhq_n_s32(vshlq_s32(acc, vdupq_n_s32(left)), q->mult);
    const int32x4_t down = vdupq_n_s32(-right);
    acc = vrshlq_s32(vqaddq_s32(acc, vshrq_n_s32(vandq_s32(acc, down), 31)), down);
    acc = vaddq_n_s32(acc, q->zp);
    return vminq_s32(vmaxq_s32(acc, vdupq_n_s32(q->lo)), vdupq_n_s32(q->hi));
}

__attribute__((noinline))
static void ek_conv_cols(const ek_conv_t *p, int8_t *scratch, const int8_t *x, int8_t *y) {
    const int32_t outs = p->cout / p->groups, pixels = p->oh * p->ow;
    const int32_t depth = p->cin / p->groups * p->kh * p->kw;
    int8_t *cols = scratch;  /* four columns */
    for (int32_t g = 0; g < p->groups; g++) {
        for (int32_t px = 0; px < pixels; px += 4) {
            const int32_t n = pixels - px < 4 ? pixels - px : 4;
            for (int32_t j = 0; j < 4; j++) ek_column(p, x, g, px + (j < n ? j : 0),
                                                      cols + j * depth);
            const mve_pred16_t keep = vctp32q((uint32_t)n);
            for (int32_t o = g * outs; o < (g + 1) * outs; o++) {
                const ek_rq_t q = {p->mult[o], p->shift[o], p->out_zp, p->lo, p->hi};
                int32x4_t acc = ek_dot4_mve(cols, p->weight + o * depth, depth, p->bias[o]);
                vstrbq_p_s32(y + o * pixels + px, ek_requant4_mve(acc, &q), keep);
            }
        }
    }
}

/* Two weight rows times one input row, sixteen taps per VMLADAVA. */
static void ek_dot2(const int8_t *a, const int8_t *b0, const int8_t *b1, int32_t n,
                    int32_t *acc0, int32_t *acc1) {
    int32_t s0 = *acc0, s1 = *acc1, k = 0;
    for (; k + 16 <= n; k += 16) {
        int8x16_t av = vld1q_s8(a + k);
        s0 = vmladavaq_s8(s0, av, vld1q_s8(b0 + k));
        s1 = vmladavaq_s8(s1, av, vld1q_s8(b1 + k));
    }
    if (k < n) {
        mve_pred16_t pr = vctp8q((uint32_t)(n - k));
        int8x16_t av = vldrbq_z_s8(a + k, pr);
        s0 = vmladavaq_p_s8(s0, av, vldrbq_z_s8(b0 + k, pr), pr);
        s1 = vmladavaq_p_s8(s1, av, vldrbq_z_s8(b1 + k, pr), pr);
    }
    *acc0 = s0;
    *acc1 = s1;
}

#elif defined(EK_DSP)
/* Column j of four, widened for SMLAD into ``wide``: per four taps k..k+3 a block of eight
 * words, two per column, (c[k], c[k+2]) and (c[k+1], c[k+3]) (SXTB16's order; the weights are
 * split the same way, so the products pair up); then per tap of the depth % 4 last two words,
 * (c0, c1) and (c2, c3). */
static void ek_widen(const int8_t *c, int32_t n, int32_t j, uint32_t *wide) {
    int32_t k = 0;
    for (uint32_t *out = wide + 2 * j; k + 4 <= n; k += 4, out += 8) {
        const uint32_t a = ek_read4(c + k);
        out[0] = ek_sxtb16(a);
        out[1] = ek_sxtb16_ror8(a);
    }
    uint16_t *tail = (uint16_t *)(wide + 2 * k) + j;
    for (; k < n; k++, tail += 4) *tail = (uint16_t)c[k];
}

/* The four widened columns of a pointwise convolution's pixels px..px+3 (stride 1, no
 * padding: each input channel's plane holds them side by side), straight from the planes: per
 * four channels four words, split by SXTB16 and regrouped by PKHBT/PKHTB into the eight words
 * ek_widen would write (no byte copies, no int8 column). */
static inline uint32_t ek_pkhbt(uint32_t lo, uint32_t hi) { return (lo & 0xFFFFu) | hi << 16; }
static inline uint32_t ek_pkhtb(uint32_t hi, uint32_t lo) {
    return (hi & 0xFFFF0000u) | lo >> 16;
}

static void ek_widen_pointwise(const int8_t *x, int32_t plane, int32_t n, uint32_t *wide) {
    int32_t k = 0;
    for (; k + 4 <= n; k += 4, x += 4 * plane, wide += 8) {
        const uint32_t a = ek_read4(x), b = ek_read4(x + plane);
        const uint32_t c = ek_read4(x + 2 * plane), d = ek_read4(x + 3 * plane);
        const uint32_t ae = ek_sxtb16(a), ao = ek_sxtb16_ror8(a);
        const uint32_t be = ek_sxtb16(b), bo = ek_sxtb16_ror8(b);
        const uint32_t ce = ek_sxtb16(c), co = ek_sxtb16_ror8(c);
        const uint32_t de = ek_sxtb16(d), dof = ek_sxtb16_ror8(d);
        wide[0] = ek_pkhbt(ae, ce), wide[1] = ek_pkhbt(be, de);    /* pixel 0 */
        wide[2] = ek_pkhbt(ao, co), wide[3] = ek_pkhbt(bo, dof);   /* pixel 1 */
        wide[4] = ek_pkhtb(ce, ae), wide[5] = ek_pkhtb(de, be);    /* pixel 2 */
        wide[6] = ek_pkhtb(co, ao), wide[7] = ek_pkhtb(dof, bo);   /* pixel 3 */
    }
    for (int16_t *tail = (int16_t *)wide; k < n; k++, x += plane, tail += 4)
        tail[0] = x[0], tail[1] = x[1], tail[2] = x[2], tail[3] = x[3];
}

/* The sums of four widened columns times one weight row into s[0..4): per four taps one weight
 * word split by SXTB16, four LDRDs of the columns and eight SMLADs, sixteen multiply-adds;
 * eight taps a pass. */
static void ek_dot4_dsp(const uint32_t *col, const int8_t *w, int32_t depth, int32_t s[4]) {
    int32_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    const int8_t *end = w + (depth & ~3);
#define EK_DOT4_TAPS4()                                                                 \
    do {                                                                                \
        const uint32_t v = ek_read4(w), v02 = ek_sxtb16(v), v13 = ek_sxtb16_ror8(v);    \
        uint32_t a, b;                                                                  \
        w += 4;                                                                         \
        ek_ldrd_post(&col, &a, &b);                                                     \
        s0 = ek_smlad(b, v13, ek_smlad(a, v02, s0));                                    \
        ek_ldrd_post(&col, &a, &b);                                                     \
        s1 = ek_smlad(b, v13, ek_smlad(a, v02, s1));                                    \
        ek_ldrd_post(&col, &a, &b);                                                     \
        s2 = ek_smlad(b, v13, ek_smlad(a, v02, s2));                                    \
        ek_ldrd_post(&col, &a, &b);                                                     \
        s3 = ek_smlad(b, v13, ek_smlad(a, v02, s3));                                    \
    } while (0)
    for (const int8_t *end8 = w + (depth & ~7); w < end8;) {
        EK_DOT4_TAPS4();
        EK_DOT4_TAPS4();
    }
    if (w < end) EK_DOT4_TAPS4();
#undef EK_DOT4_TAPS4
    for (const int16_t *t = (const int16_t *)col; w < end + (depth & 3); t += 4) {  /* tail */
        const int32_t v = *w++;
        s0 += t[0] * v;
        s1 += t[1] * v;
        s2 += t[2] * v;
        s3 += t[3] * v;
    }
    s[0] = s0, s[1] = s1, s[2] = s2, s[3] = s3;
}

/* Output pixels four at a time (their columns widened once, then reused by every channel),
 * the missing pixels of a last group repeating its first, computed and dropped; per block of
 * EK_CONV_BLOCK channels the sums first, then each channel's requantization run (two passes:
 * neither needs more registers than the core has). */
#define EK_CONV_BLOCK 16

__attribute__((noinline))
static void ek_conv_cols(const ek_conv_t *p, int8_t *scratch, const int8_t *x, int8_t *y) {
    const int32_t outs = p->cout / p->groups, pixels = p->oh * p->ow;
    const int32_t per_group = p->cin / p->groups, depth = per_group * p->kh * p->kw;
    const int pointwise = p->kh == 1 && p->kw == 1 && p->sh == 1 && p->sw == 1 && p->pt == 0 &&
                          p->pl == 0 && p->oh == p->h && p->ow == p->w;
    uint32_t *wide = ek_aligned(scratch);
    int8_t *c = (int8_t *)(wide + 2 * depth);
    int32_t acc[4 * EK_CONV_BLOCK];
    for (int32_t g = 0; g < p->groups; g++) {
        for (int32_t px = 0; px < pixels; px += 4) {
            const int32_t n = pixels - px < 4 ? pixels - px : 4;
            if (pointwise && n == 4) {
                ek_widen_pointwise(x + g * per_group * pixels + px, pixels, depth, wide);
            } else {
                for (int32_t j = 0; j < 4; j++) {
                    ek_column(p, x, g, px + (j < n ? j : 0), c);
                    ek_widen(c, depth, j, wide);
                }
            }
            for (int32_t o0 = g * outs; o0 < (g + 1) * outs; o0 += EK_CONV_BLOCK) {
                const int32_t o1 = o0 + EK_CONV_BLOCK < (g + 1) * outs ? o0 + EK_CONV_BLOCK
                                                                      : (g + 1) * outs;
                for (int32_t o = o0; o < o1; o++)
                    ek_dot4_dsp(wide, p->weight + o * depth, depth, acc + 4 * (o - o0));
                ek_rq_block(p, acc, 4, o0, o1, n, y + px, pixels);
            }
        }
    }
}

/* Two weight rows times one input row: per four taps one input word and two weight words
 * split by SXTB16, four SMLADs. */
static void ek_dot2(const int8_t *a, const int8_t *b0, const int8_t *b1, int32_t n,
                    int32_t *acc0, int32_t *acc1) {
    int32_t s0 = *acc0, s1 = *acc1;
    for (const int8_t *end = a + (n & ~3); a < end; a += 4, b0 += 4, b1 += 4) {
        const uint32_t x = ek_read4(a), v = ek_read4(b0), u = ek_read4(b1);
        const uint32_t x02 = ek_sxtb16(x), x13 = ek_sxtb16_ror8(x);
        s0 = ek_smlad(x13, ek_sxtb16_ror8(v), ek_smlad(x02, ek_sxtb16(v), s0));
        s1 = ek_smlad(x13, ek_sxtb16_ror8(u), ek_smlad(x02, ek_sxtb16(u), s1));
    }
    for (int32_t k = n & 3; k > 0; k--) {
        const int32_t v = *a++;
        s0 += v * *b0++;
        s1 += v * *b1++;
    }
    *acc0 = s0;
    *acc1 = s1;
}

#else
/* a . b0 and a . b1 in one pass: each byte of a is loaded once for both. */
static void ek_dot2(const int8_t *a, const int8_t *b0, const int8_t *b1, int32_t n,
                    int32_t *acc0, int32_t *acc1) {
    int32_t s0 = *acc0, s1 = *acc1;
    for (const int8_t *end = a + n; a < end; a++) {
        int32_t v = *a;
        s0 += v * *b0++;
        s1 += v * *b1++;
    }
    *acc0 = s0;
    *acc1 = s1;
}

/* Two columns times two weight rows: four sums from four loads per step, so a multiply-add
 * costs one load and one MLA (plus a quarter of the loop's compare and branch). */
static inline void ek_dot2x2(const int8_t *c0, const int8_t *c1, const int8_t *w0,
                             const int8_t *w1, int32_t n, int32_t acc[4]) {
    int32_t s00 = acc[0], s01 = acc[1], s10 = acc[2], s11 = acc[3];
    for (const int8_t *end = c0 + n; c0 < end;) {
        int32_t a0 = *c0++, a1 = *c1++, b0 = *w0++, b1 = *w1++;
        s00 += a0 * b0;
        s01 += a0 * b1;
        s10 += a1 * b0;
        s11 += a1 * b1;
    }
    acc[0] = s00;
    acc[1] = s01;
    acc[2] = s10;
    acc[3] = s11;
}

/* Output pixels two at a time, output channels two at a time over them; a lone last pixel or
 * channel is computed twice, kept once. */
__attribute__((noinline))
static void ek_conv_cols(const ek_conv_t *p, int8_t *scratch, const int8_t *x, int8_t *y) {
    const int32_t outs = p->cout / p->groups, pixels = p->oh * p->ow;
    const int32_t depth = p->cin / p->groups * p->kh * p->kw;
    int8_t *c0 = scratch, *c1 = c0 + depth;
    for (int32_t g = 0; g < p->groups; g++) {
        for (int32_t px = 0; px < pixels; px += 2) {
            const int two = px + 1 < pixels;
            ek_column(p, x, g, px, c0);
            if (two) ek_column(p, x, g, px + 1, c1);
            for (int32_t o = g * outs; o < (g + 1) * outs; o += 2) {
                const int pair = o + 1 < (g + 1) * outs;
                const int8_t *w0 = p->weight + o * depth, *w1 = pair ? w0 + depth : w0;
                int32_t acc[4] = {p->bias[o], p->bias[o + pair], p->bias[o], p->bias[o + pair]};
                ek_dot2x2(c0, two ? c1 : c0, w0, w1, depth, acc);
                const ek_rq_t q0 = {p->mult[o], p->shift[o], p->out_zp, p->lo, p->hi};
                int8_t *y0 = y + o * pixels + px;
                y0[0] = ek_rq(acc[0], &q0);
                if (two) y0[1] = ek_rq(acc[2], &q0);
                if (pair) {
                    const ek_rq_t q1 = {p->mult[o + 1], p->shift[o + 1], p->out_zp, p->lo, p->hi};
                    y0[pixels] = ek_rq(acc[1], &q1);
                    if (two) y0[pixels + 1] = ek_rq(acc[3], &q1);
                }
            }
        }
    }
}
#endif

/* --- Depthwise (one input channel per output channel, multiplier 1) ------------------------
 * Each channel's input rows are copied once into a ring of the (kh - 1) * dh + 1 rows a window
 * spans, each padded with the input zero point to the padded width (and 4 bytes of slack for
 * word and vector reads past the last window), so every window, at the border or not, reads
 * its kh x kw taps in place, and bias + sum(x * w) is exact (the bias holds -zp * sum(w)). One
 * output row at a time, per core. */

#define EK_DW_SLACK 4

/* Generic: any kernel size, stride and dilation. */
static void ek_dw_row_scalar(const ek_conv_t *p, const int8_t *const *rows, const int8_t *wc,
                             int32_t bias, const ek_rq_t *q, int8_t *y) {
    const int32_t kh = p->kh, kw = p->kw, sw = p->sw, dw = p->dw, ow = p->ow;
    for (int32_t ox = 0; ox < ow; ox++) {
        int32_t acc = bias;
        const int8_t *wr = wc;
        for (int32_t ky = 0; ky < kh; ky++, wr += kw) {
            const int8_t *r = rows[ky] + ox * sw;
            if (kw == 3 && dw == 1)
                acc += r[0] * wr[0] + r[1] * wr[1] + r[2] * wr[2];
            else
                for (int32_t kx = 0; kx < kw; kx++) acc += r[kx * dw] * wr[kx];
        }
        y[ox] = ek_rq(acc, q);
    }
}

#if defined(EK_MVE)
/* Four outputs per vector (stride 1): per tap one widening load of four inputs and one
 * vector multiply-add by the tap's weight, then one vector requantization. */
static void ek_dw_row(const ek_conv_t *p, const int8_t *const *rows, const int8_t *wc,
                      int32_t bias, const ek_rq_t *q, int8_t *y) {
    const int32_t kh = p->kh, kw = p->kw, dw = p->dw, ow = p->ow;
    if (p->sw != 1) {
        ek_dw_row_scalar(p, rows, wc, bias, q, y);
        return;
    }
    for (int32_t ox = 0; ox < ow; ox += 4) {
        int32x4_t acc = vdupq_n_s32(bias);
        const int8_t *wr = wc;
        for (int32_t ky = 0; ky < kh; ky++, wr += kw) {
            const int8_t *r = rows[ky] + ox;
            for (int32_t kx = 0; kx < kw; kx++) acc = vmlaq_n_s32(acc, vldrbq_s32(r + kx * dw),
                                                                  wr[kx]);
        }
        vstrbq_p_s32(y + ox, ek_requant4_mve(acc, q), vctp32q((uint32_t)(ow - ox)));
    }
}
#elif defined(EK_DSP)
/* 3x3, stride 1, no dilation: two outputs per step, in two passes per block of EK_DW_BLOCK
 * outputs (so neither pass runs out of registers: the MAC pass keeps the nine weights in five,
 * the requantization pass one channel's constants). A word r0..r3 of each row splits by SXTB16
 * into (r0, r2) and (r1, r3); with the row's weights as (w0, w2) and w1, output ox is
 * SMLAD((r0, r2), (w0, w2)) + r1 * w1 (SMLABB) and output ox + 1 SMLAD((r1, r3), (w0, w2)) +
 * r2 * w1 (SMLATB): seven instructions for six multiply-adds. The middle weights of the first
 * two rows share a word (SMLAxT reads its top half); the bias is added on requantization. */
#define EK_DW_BLOCK 32

static inline uint32_t ek_pack16(int32_t lo, int32_t hi) {
    return (uint32_t)(uint16_t)lo | (uint32_t)(uint16_t)hi << 16;
}

/* One channel's 3x3 weights as the row kernel takes them, packed once per channel. */
typedef struct { uint32_t w02a, w02b, w02c, w1ab; int32_t w1c; } ek_dw3_t;

static inline ek_dw3_t ek_dw3_pack(const int8_t *wc) {
    const ek_dw3_t k = {ek_pack16(wc[0], wc[2]), ek_pack16(wc[3], wc[5]),
                        ek_pack16(wc[6], wc[8]), ek_pack16(wc[1], wc[4]), wc[7]};
    return k;
}

static void ek_dw3_row(const int8_t *const *rows, const ek_dw3_t *k, int32_t ow, int32_t bias,
                       const ek_rq_t *q, int8_t *y) {
    const uint32_t w02a = k->w02a, w02b = k->w02b, w02c = k->w02c, w1ab = k->w1ab;
    const int32_t w1c = k->w1c;
    int32_t acc[EK_DW_BLOCK];
    for (int32_t ox = 0; ox < ow; ox += EK_DW_BLOCK) {
        const int32_t n = ow - ox < EK_DW_BLOCK ? ow - ox : EK_DW_BLOCK;
        const int8_t *r0 = rows[0] + ox, *r1 = rows[1] + ox, *r2 = rows[2] + ox;
        for (int32_t *a = acc, *end = acc + n; a < end; a += 2, r0 += 2, r1 += 2, r2 += 2) {
            uint32_t v = ek_read4(r0), e = ek_sxtb16(v), o = ek_sxtb16_ror8(v);
            int32_t a0 = ek_smlabb(o, (int32_t)w1ab, ek_smuad(e, w02a));
            int32_t a1 = ek_smlatb(e, (int32_t)w1ab, ek_smuad(o, w02a));
            v = ek_read4(r1), e = ek_sxtb16(v), o = ek_sxtb16_ror8(v);
            a0 = ek_smlabt(o, w1ab, ek_smlad(e, w02b, a0));
            a1 = ek_smlatt(e, w1ab, ek_smlad(o, w02b, a1));
            v = ek_read4(r2), e = ek_sxtb16(v), o = ek_sxtb16_ror8(v);
            a[0] = ek_smlabb(o, w1c, ek_smlad(e, w02c, a0));
            a[1] = ek_smlatb(e, w1c, ek_smlad(o, w02c, a1));
        }
        ek_rq_run(acc, n, bias, q, y + ox);
    }
}
#define EK_DW3 1
#define ek_dw_row ek_dw_row_scalar
#else
#define ek_dw_row ek_dw_row_scalar
#endif

/* The ring's slot for padded input row r (r >= -pt), filled from the input (or the zero point
 * above and below it). The side padding is a few bytes: stored in place (volatile keeps the
 * compiler from turning the loops back into memset calls, which cost more than they store). */
static void ek_dw_fill(const ek_conv_t *p, const int8_t *plane, int32_t r, int8_t *slot,
                       int32_t width) {
    const int8_t zp = (int8_t)p->in_zp;
    if (r < 0 || r >= p->h) {
        memset(slot, zp, (size_t)width);
        return;
    }
    const int32_t left = p->pl < width ? p->pl : width;
    const int32_t body = p->w < width - left ? p->w : width - left;
    int8_t *end = slot + width;
    for (int8_t *pad = slot + left; slot < pad; slot++) *(volatile int8_t *)slot = zp;
    memcpy(slot, plane + r * p->w, (size_t)body);
    for (slot += body; slot < end; slot++) *(volatile int8_t *)slot = zp;
}

__attribute__((noinline))
static void ek_depthwise(const ek_conv_t *p, int8_t *scratch, const int8_t *x, int8_t *y) {
    const int32_t kh = p->kh, dh = p->dh, span = (kh - 1) * dh + 1;
    const int32_t width = (p->ow - 1) * p->sw + (p->kw - 1) * p->dw + 1 + EK_DW_SLACK;
    const int32_t stride = (width + 3) & ~3;
    const int8_t **rows = ek_aligned(scratch);  /* kh row pointers, then the ring */
    int8_t *ring = (int8_t *)(rows + kh);
#if defined(EK_DW3)
    const int dw3 = kh == 3 && p->kw == 3 && p->sw == 1 && p->dw == 1;
#endif
    for (int32_t c = 0; c < p->cout; c++, x += p->h * p->w) {
        const ek_rq_t q = {p->mult[c], p->shift[c], p->out_zp, p->lo, p->hi};
        const int8_t *wc = p->weight + c * kh * p->kw;
#if defined(EK_DW3)
        const ek_dw3_t k3 = ek_dw3_pack(wc);
#endif
        int32_t loaded = -p->pt - 1;  /* the last padded row in the ring */
        for (int32_t oy = 0; oy < p->oh; oy++, y += p->ow) {
            const int32_t top = oy * p->sh - p->pt;
            int32_t slot = (top + p->pt) % span;  /* row top's slot; the next ones follow */
            for (int32_t r = top, s = slot; r < top + span; r++, s = s + 1 < span ? s + 1 : 0)
                if (r > loaded) ek_dw_fill(p, x, r, ring + s * stride, width);
            loaded = top + span - 1;
            for (int32_t ky = 0; ky < kh; ky++) {
                rows[ky] = ring + slot * stride;
                slot = slot + dh < span ? slot + dh : slot + dh - span;
            }
#if defined(EK_DW3)
            if (dw3) {
                ek_dw3_row(rows, &k3, p->ow, p->bias[c], &q, y);
                continue;
            }
#endif
            ek_dw_row(p, rows, wc, p->bias[c], &q, y);
        }
    }
}

void ek_conv2d(const ek_conv_t *p, int8_t *col, const int8_t *x, int8_t *y) {
    if (p->groups == p->cin && p->cout == p->cin) ek_depthwise(p, col, x, y);
    else ek_conv_cols(p, col, x, y);
}

/* Two output rows at a time over each input row (a lone last one twice, kept once). */
void ek_linear(const ek_linear_t *p, const int8_t *x, int8_t *y) {
    for (int32_t r = 0; r < p->rows; r++, x += p->in, y += p->out) {
        for (int32_t j = 0; j < p->out; j += 2) {
            const int pair = j + 1 < p->out;
            const int8_t *w0 = p->weight + j * p->in, *w1 = pair ? w0 + p->in : w0;
            int32_t a0 = p->bias[j], a1 = p->bias[j + pair];
            ek_dot2(x, w0, w1, p->in, &a0, &a1);
            y[j] = ek_requantize(a0, p->mult[j], p->shift[j], p->out_zp, p->lo, p->hi);
            if (pair)
                y[j + 1] = ek_requantize(a1, p->mult[j + 1], p->shift[j + 1], p->out_zp, p->lo,
                                         p->hi);
        }
    }
}

#define EK_ADD_LEFT_SHIFT 20

void ek_add_sub(const ek_binary_t *p, const int8_t *x, const int8_t *y, int32_t sign,
                int8_t *out) {
    EK_BINARY_ROWS(p, x, y, out, a, b,
                   ek_requantize(ek_mbqm((a - p->zx) * (1 << EK_ADD_LEFT_SHIFT), p->mult[0],
                                         p->shift[0]) +
                                     sign * ek_mbqm((b - p->zy) * (1 << EK_ADD_LEFT_SHIFT),
                                                    p->mult[1], p->shift[1]),
                                 p->mult[2], p->shift[2], p->zo, p->lo, p->hi));
}

void ek_add(const ek_binary_t *p, const int8_t *x, const int8_t *y, int8_t *out) {
    ek_add_sub(p, x, y, 1, out);
}

void ek_mul(const ek_binary_t *p, const int8_t *x, const int8_t *y, int8_t *out) {
    EK_BINARY_ROWS(p, x, y, out, a, b,
                   ek_requantize((a - p->zx) * (b - p->zy), p->mult[0], p->shift[0], p->zo, p->lo,
                                 p->hi));
}

void ek_clamp_i8(int32_t size, int32_t lo, int32_t hi, const int8_t *x, int8_t *y) {
    for (int32_t i = 0; i < size; i++) y[i] = (int8_t)ek_clamp(x[i], lo, hi);
}

void ek_lut_i8(int32_t size, const int8_t *table, const int8_t *x, int8_t *y) {
    for (int32_t i = 0; i < size; i++) y[i] = table[x[i] + 128];
}

void ek_leaky_relu(const ek_leaky_t *p, const int8_t *x, int8_t *y) {
    for (int32_t i = 0; i < p->size; i++) {
        int32_t v = x[i] - p->zx;
        y[i] = v >= 0 ? ek_requantize(v, p->m_id, p->s_id, p->zo, -128, 127)
                      : ek_requantize(v, p->m_alpha, p->s_alpha, p->zo, -128, 127);
    }
}

void ek_maxpool2d(const ek_pool_t *p, const int8_t *x, int8_t *y) {
    for (int32_t c = 0; c < p->c; c++, x += p->h * p->w) {
        for (int32_t oy = 0; oy < p->oh; oy++) {
            int32_t by = oy * p->sh - p->pt, y0, y1;
            ek_taps(by, p->dh, p->kh, p->h, &y0, &y1);
            for (int32_t ox = 0; ox < p->ow; ox++) {
                int32_t bx = ox * p->sw - p->pl, x0, x1, best = -128;
                ek_taps(bx, p->dw, p->kw, p->w, &x0, &x1);
                for (int32_t ky = y0; ky < y1; ky++)
                    for (int32_t kx = x0; kx < x1; kx++) {
                        int32_t v = x[(by + ky * p->dh) * p->w + bx + kx * p->dw];
                        if (v > best) best = v;
                    }
                *y++ = (int8_t)best;
            }
        }
    }
}

/* TFLite's int8 average: (sum +- count/2) / count truncating; padding counts only with
 * count_include_pad, as the zero point. */
void ek_avgpool2d(const ek_pool_t *p, const int8_t *x, int8_t *y) {
    for (int32_t c = 0; c < p->c; c++, x += p->h * p->w) {
        for (int32_t oy = 0; oy < p->oh; oy++) {
            int32_t by = oy * p->sh - p->pt, y0, y1;
            ek_taps(by, 1, p->kh, p->h, &y0, &y1);
            for (int32_t ox = 0; ox < p->ow; ox++) {
                int32_t bx = ox * p->sw - p->pl, x0, x1, acc = 0;
                ek_taps(bx, 1, p->kw, p->w, &x0, &x1);
                for (int32_t ky = y0; ky < y1; ky++)
                    for (int32_t kx = x0; kx < x1; kx++) acc += x[(by + ky) * p->w + bx + kx];
                int32_t count = (y1 - y0) * (x1 - x0);
                if (p->count_include_pad) {
                    acc += (p->kh * p->kw - count) * p->zp;
                    count = p->kh * p->kw;
                }
                int32_t half = count / 2;
                int32_t avg = acc > 0 ? (acc + half) / count : -((-acc + half) / count);
                *y++ = (int8_t)ek_clamp(avg, -128, 127);
            }
        }
    }
}

void ek_copy(int32_t size, const int8_t *x, int8_t *y) { memcpy(y, x, (size_t)size); }

void ek_concat_part(int32_t outer, int32_t inner, int32_t total_inner, int32_t offset,
                    const int8_t *x, int8_t *y) {
    for (int32_t o = 0; o < outer; o++) memcpy(y + o * total_inner + offset, x + o * inner,
                                               (size_t)inner);
}

/* float -> int8 rounding half away from zero (edgekit.quant.edge). */
static int8_t ek_quantize(float v, double scale, int32_t zp) {
    double q = (double)v / scale;
    double r = floor(fabs(q) + 0.5);
    return (int8_t)ek_clamp((int32_t)(q < 0 ? -r : r) + zp, -128, 127);
}

/* Softmax in float between a dequantize and a quantize (docs/quantized-graph.md). */
void ek_softmax(const ek_softmax_t *p, const int8_t *x, int8_t *y) {
    for (int32_t o = 0; o < p->outer; o++) {
        for (int32_t i = 0; i < p->inner; i++) {
            const int8_t *xr = x + o * p->n * p->inner + i;
            int8_t *yr = y + o * p->n * p->inner + i;
            float peak = (float)((xr[0] - p->zx) * (double)p->sx);
            for (int32_t a = 1; a < p->n; a++) {
                float v = (float)((xr[a * p->inner] - p->zx) * (double)p->sx);
                if (v > peak) peak = v;
            }
            double total = 0.0;
            for (int32_t a = 0; a < p->n; a++)
                total += expf((float)((xr[a * p->inner] - p->zx) * (double)p->sx) - peak);
            double inv = 1.0 / total;
            for (int32_t a = 0; a < p->n; a++) {
                float e = expf((float)((xr[a * p->inner] - p->zx) * (double)p->sx) - peak);
                yr[a * p->inner] = ek_quantize((float)(e * inv), p->so, p->zo);
            }
        }
    }
}

void ek_layernorm(const ek_layernorm_t *p, const int8_t *x, int8_t *y) {
    for (int32_t r = 0; r < p->rows; r++, x += p->n, y += p->n) {
        double mean = 0.0, var = 0.0;
        for (int32_t i = 0; i < p->n; i++) mean += (float)((x[i] - p->zx) * (double)p->sx);
        mean /= p->n;
        for (int32_t i = 0; i < p->n; i++) {
            double d = (float)((x[i] - p->zx) * (double)p->sx) - mean;
            var += d * d;
        }
        double inv = 1.0 / sqrt(var / p->n + p->eps);
        for (int32_t i = 0; i < p->n; i++) {
            double v = (float)((x[i] - p->zx) * (double)p->sx);
            y[i] = ek_quantize((float)((v - mean) * inv * p->gamma[i] + p->beta[i]), p->so, p->zo);
        }
    }
}

/* --- Spiking kernels (converters/to_c_snn.py): float32 and int8 spiking Graphs on one body per
 * layout. A macro names what differs between the element types: the charge of a neuron, what
 * it emits, and the multiply-add. Integer sums wrap modulo 2^32 (in uint32_t, as the runtime's
 * int64 results stored into int32 arrays do), so they stay equal to the runtime's even where
 * they would overflow, and C's signed overflow never arises. */

#define EK_MAC_F32(acc, value, tap) ((acc) += (value) * (tap))
#define EK_MAC_I32(acc, value, tap) \
    ((acc) = (int32_t)((uint32_t)(acc) + (uint32_t)(value) * (uint32_t)(tap)))

/* dst[o * stride] += value * taps[o] for o < n (MAC), four at a time: one event's terms, each
 * into a different output, so the unrolling changes no output's order of additions. */
#define EK_SCATTER(Y_T, W_T, DST, STRIDE, VALUE, TAPS, N, MAC) \
    do {                                                       \
        Y_T *d_ = (DST);                                       \
        const W_T *t_ = (TAPS);                                \
        const int32_t s_ = (STRIDE);                           \
        int32_t n_ = (N);                                      \
        for (; n_ >= 4; n_ -= 4, t_ += 4, d_ += 4 * s_) {      \
            MAC(d_[0], VALUE, t_[0]);                          \
            MAC(d_[s_], VALUE, t_[1]);                         \
            MAC(d_[2 * s_], VALUE, t_[2]);                     \
            MAC(d_[3 * s_], VALUE, t_[3]);                     \
        }                                                      \
        for (; n_ > 0; n_--, d_ += s_) MAC(*d_, VALUE, *t_++); \
    } while (0)

/* One neuron step over ``size`` neurons: u = CHARGE (from v[k] and x[k]); fire when
 * u >= threshold[k], emitting SPIKE, then reset by subtraction or to zero; v keeps u. */
#define EK_NEURON_STEP(U_T, CHARGE, SPIKE)       \
    for (int32_t k = 0; k < size; k++) {         \
        U_T u = CHARGE;                          \
        if (u >= threshold[k]) {                 \
            out[k] = SPIKE;                      \
            u = subtract ? u - threshold[k] : 0; \
        } else {                                 \
            out[k] = 0;                          \
        }                                        \
        v[k] = u;                                \
    }

/* IF (leak 1) or LIF: u = leak * v + x; a spike is the threshold (spiking.neuron_step). */
void ek_neuron_step_f32(int32_t size, const float *x, const float *threshold, float *v,
                        float leak, int32_t subtract, float *out) {
    EK_NEURON_STEP(float, leak * v[k] + x[k], threshold[k])
}

/* spiking.int_neuron_step: an int32 membrane, u = trunc(v * leak / 2^15) + x in int64 (leak a
 * Q15 multiplier; IF's 2^15 keeps v as it is, without the multiply), a spike the neuron's int8
 * amplitude, the new membrane stored into int32. */
void ek_neuron_step_s32(int32_t size, const int32_t *x, const int32_t *threshold, int32_t *v,
                        int32_t leak, int32_t subtract, const int8_t *amplitude, int8_t *out) {
    if (leak == 32768) {
        EK_NEURON_STEP(int64_t, (int64_t)v[k] + x[k], amplitude[k])
    } else {  /* C's division truncates toward zero; by a constant 2^15 it is shifts */
        EK_NEURON_STEP(int64_t, (int64_t)v[k] * leak / 32768 + x[k], amplitude[k])
    }
}

/* y = bias + sum over the non-zero x[k] - ZP of (x[k] - ZP) * w_t[k] (w_t is [in][out]), one
 * weight row per event (spiking.event_linear), adding the synaptic operations made to ops. */
#define EK_EVENT_LINEAR(X_T, W_T, Y_T, ZP, MAC)                 \
    do {                                                        \
        for (int32_t o = 0; o < out_n; o++) y[o] = bias[o];     \
        for (int32_t k = 0; k < in; k++, w_t += out_n) {        \
            const X_T value = x[k] - (ZP);                      \
            if (value == 0) continue;                           \
            EK_SCATTER(Y_T, W_T, y, 1, value, w_t, out_n, MAC); \
            ops += out_n;                                       \
        }                                                       \
    } while (0)

int32_t ek_event_linear_f32(int32_t in, int32_t out_n, const float *w_t, const float *bias,
                            const float *x, float *y) {
    int32_t ops = 0;
    EK_EVENT_LINEAR(float, float, float, 0.0f, EK_MAC_F32);
    return ops;
}

/* int8 input (spikes, or the int8 input less its zero point ``zp``: the time-invariant first
 * layer, spiking._centred, where every element but the zero point is an event). */
int32_t ek_event_linear_s8(int32_t in, int32_t out_n, const int8_t *w_t, const int32_t *bias,
                           const int8_t *x, int32_t zp, int32_t *y) {
    int32_t ops = 0;
    EK_EVENT_LINEAR(int32_t, int8_t, int32_t, zp, EK_MAC_I32);
    return ops;
}

/* int32 input (a pool's window sums). */
int32_t ek_event_linear_s32(int32_t in, int32_t out_n, const int8_t *w_t, const int32_t *bias,
                            const int32_t *x, int32_t *y) {
    int32_t ops = 0;
    EK_EVENT_LINEAR(int32_t, int8_t, int32_t, 0, EK_MAC_I32);
    return ops;
}

/* Grouped convolution driven by input events (spiking.event_conv2d): each non-zero input
 * element x - ZP scatters value * w into every output its taps reach, in the same order (W_T
 * the weights' type, Y_T the sums'), adding the synaptic operations made to ops. The tap
 * tables rows/cols (spiking.tap_targets) give the output row/column an input row/column
 * reaches through each tap, or -1: no division per tap. */
#define EK_EVENT_CONV2D(X_T, W_T, Y_T, ZP, MAC)                                               \
    do {                                                                                      \
        const int32_t h = p->h, w = p->w, ow = p->ow, kh = p->kh, kw = p->kw;                 \
        const int32_t cout = p->cout, plane = p->oh * ow, per_group = p->cin / p->groups;     \
        const int32_t per_out = cout / p->groups;                                             \
        for (int32_t o = 0; o < cout; o++)                                                    \
            for (int32_t i = 0; i < plane; i++) y[o * plane + i] = p->bias[o];                \
        for (int32_t c = 0; c < p->cin; c++) {                                                \
            const int32_t o0 = c / per_group * per_out;                                       \
            const W_T *wc = p->weight + c % per_group * kh * kw * cout + o0;                  \
            Y_T *yc = y + o0 * plane;                                                         \
            for (int32_t iy = 0; iy < h; iy++) {                                              \
                const int16_t *rows = p->rows + iy * kh;                                      \
                for (int32_t ix = 0; ix < w; ix++) {                                          \
                    const X_T value = *x++ - (ZP);                                            \
                    if (value == 0) continue;                                                 \
                    const int16_t *cols = p->cols + ix * kw;                                  \
                    for (int32_t ky = 0; ky < kh; ky++) {                                     \
                        if (rows[ky] < 0) continue;                                           \
                        Y_T *row = yc + rows[ky] * ow;                                        \
                        const W_T *taps = wc + ky * kw * cout;                                \
                        for (int32_t kx = 0; kx < kw; kx++, taps += cout) {                   \
                            if (cols[kx] < 0) continue;                                       \
                            EK_SCATTER(Y_T, W_T, row + cols[kx], plane, value, taps, per_out, \
                                       MAC);                                                  \
                            ops += per_out;                                                   \
                        }                                                                     \
                    }                                                                         \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
    } while (0)

int32_t ek_event_conv2d_f32(const ek_conv_f32_t *p, const float *x, float *y) {
    int32_t ops = 0;
    EK_EVENT_CONV2D(float, float, float, 0.0f, EK_MAC_F32);
    return ops;
}

/* int8 input: spikes, or the int8 input less its zero point (the first layer, _centred). */
int32_t ek_event_conv2d_s8(const ek_conv_s8_t *p, const int8_t *x, int32_t zp, int32_t *y) {
    int32_t ops = 0;
    EK_EVENT_CONV2D(int32_t, int8_t, int32_t, zp, EK_MAC_I32);
    return ops;
}

/* int32 input: a pool's window sums. */
int32_t ek_event_conv2d_s32(const ek_conv_s8_t *p, const int32_t *x, int32_t *y) {
    int32_t ops = 0;
    EK_EVENT_CONV2D(int32_t, int8_t, int32_t, 0, EK_MAC_I32);
    return ops;
}

/* Each window's sum over its X_T taps inside the input (padding adds nothing) in ACC_T, row
 * by row, then *y = RESULT (which may read acc and count, the taps summed). */
#define EK_POOL_WINDOWS(X_T, ACC_T, RESULT)                                                   \
    const int32_t h = p->h, w = p->w, kh = p->kh, kw = p->kw, sh = p->sh, sw = p->sw;         \
    for (int32_t c = 0; c < p->c; c++, x += h * w) {                                          \
        for (int32_t oy = 0; oy < p->oh; oy++) {                                              \
            int32_t by = oy * sh - p->pt, y0, y1;                                             \
            ek_taps(by, 1, kh, h, &y0, &y1);                                                  \
            for (int32_t ox = 0; ox < p->ow; ox++) {                                          \
                int32_t bx = ox * sw - p->pl, x0, x1;                                         \
                ACC_T acc = 0;                                                                \
                ek_taps(bx, 1, kw, w, &x0, &x1);                                              \
                const int32_t count = (y1 - y0) * (x1 - x0);                                  \
                (void)count;                                                                  \
                for (int32_t ky = y0; ky < y1; ky++) {                                        \
                    const X_T *row = x + (by + ky) * w + bx + x0;                             \
                    for (int32_t k = 0; k < x1 - x0; k++) acc += row[k];                      \
                }                                                                             \
                *y++ = RESULT;                                                                \
            }                                                                                 \
        }                                                                                     \
    }

/* pool.avg_pool2d: the window's sum in double (numba's float64 accumulator), divided by the
 * window, or by its taps inside the input unless count_include_pad, then rounded to float. */
void ek_avgpool2d_f32(const ek_pool_t *p, const float *x, float *y) {
    EK_POOL_WINDOWS(float, double, (float)(acc / (p->count_include_pad ? p->kh * p->kw : count)))
}

/* int8_pool.sum_pool2d: an int8 SNN's average pool, each window's integer sum. */
void ek_sum_pool2d_s8(const ek_pool_t *p, const int8_t *x, int32_t *y) {
    EK_POOL_WINDOWS(int8_t, uint32_t, (int32_t)acc)
}

void ek_sum_pool2d_s32(const ek_pool_t *p, const int32_t *x, int32_t *y) {
    EK_POOL_WINDOWS(int32_t, uint32_t, (int32_t)acc)
}

/* Each of ``channels`` rows of ``size`` summed in ACC_T, then y[c] = RESULT. */
#define EK_ROW_SUMS(ACC_T, RESULT)                      \
    for (int32_t c = 0; c < channels; c++) {            \
        ACC_T acc = 0;                                  \
        for (int32_t i = 0; i < size; i++) acc += *x++; \
        y[c] = RESULT;                                  \
    }

/* pool.row_mean: each channel's sum in double, divided by its size, rounded to float. */
void ek_global_avgpool_f32(int32_t channels, int32_t size, const float *x, float *y) {
    EK_ROW_SUMS(double, (float)(acc / size))
}

/* int8_pool.row_sums: an int8 SNN's global average pool, each channel's integer sum. */
void ek_global_sum_s8(int32_t channels, int32_t size, const int8_t *x, int32_t *y) {
    EK_ROW_SUMS(uint32_t, (int32_t)acc)
}

void ek_global_sum_s32(int32_t channels, int32_t size, const int32_t *x, int32_t *y) {
    EK_ROW_SUMS(uint32_t, (int32_t)acc)
}

/* elementwise.binary's add of two tensors of one shape, no activation. */
void ek_add_f32(int32_t size, const float *x, const float *y, float *out) {
    for (int32_t i = 0; i < size; i++) out[i] = x[i] + y[i];
}

/* spiking.scaled_add: an int8 SNN's residual add, spikes * m + current in int32. */
void ek_scaled_add_s32(int32_t size, const int8_t *spikes, int32_t m, const int32_t *current,
                       int32_t *out) {
    for (int32_t i = 0; i < size; i++)
        out[i] = (int32_t)((uint32_t)spikes[i] * (uint32_t)m + (uint32_t)current[i]);
}
