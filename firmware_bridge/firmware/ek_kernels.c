/* int8 kernels: TFLite arithmetic (ek_arith.h), bit-exact with edgekit's numba runtime.
 *
 * Convolutions copy the windows of two output pixels into two small columns (cin/groups * kh * kw
 * bytes each, padding filled with the input zero point) and take dot products with the weight
 * rows of two output channels at a time. The input zero point is folded into the bias by converters/to_c.py
 * (b - zp * sum(w)): with padding equal to zp, sum(col * w) - zp * sum(w) = sum((col - zp) * w)
 * exactly, so the inner loop is load, load, multiply-accumulate. */
#include <math.h>
#include <string.h>

#include "ek_arith.h"
#include "ek_kernels.h"

/* Dot product of two int8 rows, 4 terms per pass: on a Cortex-M3 each term is two
 * post-incrementing LDRSB and one MLA. */
static inline int32_t ek_dot(const int8_t *a, const int8_t *b, int32_t n, int32_t acc) {
    for (; n >= 4; n -= 4, a += 4, b += 4)
        acc += a[0] * b[0] + a[1] * b[1] + a[2] * b[2] + a[3] * b[3];
    for (; n > 0; n--) acc += *a++ * *b++;
    return acc;
}

/* a . b0 and a . b1 in one pass: each byte of a is loaded once for both. */
static inline void ek_dot2(const int8_t *a, const int8_t *b0, const int8_t *b1, int32_t n,
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

/* The window of output pixel ``pixel`` over group g's input channels, (ic, ky, kx) like the
 * weights; taps outside the input hold the input zero point. */
static void ek_column(const ek_conv_t *p, const int8_t *x, int32_t g, int32_t pixel,
                      int8_t *c) {
    const int32_t per_group = p->cin / p->groups;
    const int32_t y0 = pixel / p->ow * p->sh - p->pt, x0 = pixel % p->ow * p->sw - p->pl;
    const int inside = y0 >= 0 && x0 >= 0 && y0 + (p->kh - 1) * p->dh < p->h
                       && x0 + (p->kw - 1) * p->dw < p->w;
    if (inside && p->kh == 1 && p->kw == 1) {  /* pointwise: one tap per channel */
        const int32_t plane_size = p->h * p->w;
        const int8_t *src = x + g * per_group * plane_size + y0 * p->w + x0;
        for (int32_t ic = 0; ic < per_group; ic++, src += plane_size) *c++ = *src;
        return;
    }
    for (int32_t ic = g * per_group; ic < (g + 1) * per_group; ic++) {
        const int8_t *plane = x + ic * p->h * p->w;
        for (int32_t ky = 0; ky < p->kh; ky++) {
            int32_t iy = y0 + ky * p->dh;
            const int8_t *row = plane + iy * p->w + x0;
            if (inside) {
                for (int32_t kx = 0; kx < p->kw; kx++) *c++ = row[kx * p->dw];
                continue;
            }
            for (int32_t kx = 0; kx < p->kw; kx++) {
                int32_t ix = x0 + kx * p->dw;
                *c++ = (iy >= 0 && iy < p->h && ix >= 0 && ix < p->w) ? row[kx * p->dw]
                                                                       : (int8_t)p->in_zp;
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

static int32_t ek_sum(const int8_t *v, int32_t n) {
    int32_t total = 0;
    while (n--) total += *v++;
    return total;
}

/* One input channel per output channel (depthwise, multiplier 1): the window is read in place.
 * The bias has the zero point folded in for every tap (b - zp * sum(w)), so a window that lies
 * inside the input is bias + sum(x * w), and a border window adds back zp * (the weights of
 * its taps outside the input, which add nothing). */
static void ek_depthwise(const ek_conv_t *p, const int8_t *x, int8_t *y) {
    /* Locals, not p->...: a store through int8_t * may alias anything, so the compiler would
     * reload every field after each output byte. */
    const int32_t h = p->h, w = p->w, oh = p->oh, ow = p->ow, kh = p->kh, kw = p->kw;
    const int32_t sh = p->sh, sw = p->sw, pt = p->pt, pl = p->pl, dh = p->dh, dw = p->dw;
    const int32_t zp = p->in_zp, out_zp = p->out_zp, lo = p->lo, hi = p->hi, taps = kh * kw;
    for (int32_t c = 0; c < p->cout; c++, x += h * w) {
        const int8_t *wc = p->weight + c * taps;
        const int32_t wsum = ek_sum(wc, taps), bias = p->bias[c];
        const int32_t mult = p->mult[c], shift = p->shift[c];
        for (int32_t oy = 0; oy < oh; oy++) {
            const int32_t by = oy * sh - pt;
            const int full_y = by >= 0 && by + (kh - 1) * dh < h;
            int32_t ky0 = 0, ky1 = kh;
            if (!full_y) ek_taps(by, dh, kh, h, &ky0, &ky1);
            for (int32_t ox = 0; ox < ow; ox++) {
                const int32_t bx = ox * sw - pl;
                int32_t acc = bias;
                if (full_y && bx >= 0 && bx + (kw - 1) * dw < w) {  /* inside */
                    const int8_t *row = x + by * w + bx, *wr = wc;
                    for (int32_t ky = 0; ky < kh; ky++, row += dh * w, wr += kw) {
                        if (kw == 3 && dw == 1)
                            acc += row[0] * wr[0] + row[1] * wr[1] + row[2] * wr[2];
                        else
                            for (int32_t kx = 0; kx < kw; kx++) acc += row[kx * dw] * wr[kx];
                    }
                } else {
                    int32_t kx0, kx1, part = 0;
                    ek_taps(bx, dw, kw, w, &kx0, &kx1);
                    for (int32_t ky = ky0; ky < ky1; ky++) {
                        const int8_t *row = x + (by + ky * dh) * w + bx, *wr = wc + ky * kw;
                        for (int32_t kx = kx0; kx < kx1; kx++) {
                            acc += row[kx * dw] * wr[kx];
                            part += wr[kx];
                        }
                    }
                    acc += zp * (wsum - part);
                }
                *y++ = ek_requantize(acc, mult, shift, out_zp, lo, hi);
            }
        }
    }
}

/* Output pixels two at a time (two columns in ``col``, 2 * cin/groups * kh * kw bytes), output
 * channels two at a time over them. Fields are read into locals once (int8 stores alias). */
void ek_conv2d(const ek_conv_t *p, int8_t *col, const int8_t *x, int8_t *y) {
    const int32_t outs = p->cout / p->groups, pixels = p->oh * p->ow, groups = p->groups;
    const int32_t depth = p->cin / p->groups * p->kh * p->kw;
    const int32_t zp = p->out_zp, lo = p->lo, hi = p->hi;
    const int8_t *weight = p->weight;
    const int32_t *bias = p->bias, *mult = p->mult, *shift = p->shift;
    int8_t *col1 = col + depth;
    if (depth == p->kh * p->kw && outs == 1) {
        ek_depthwise(p, x, y);
        return;
    }
    for (int32_t g = 0; g < groups; g++) {
        for (int32_t px = 0; px < pixels; px += 2) {
            const int two = px + 1 < pixels;
            ek_column(p, x, g, px, col);
            if (two) ek_column(p, x, g, px + 1, col1);
            int32_t o = g * outs;
            for (; o + 1 < (g + 1) * outs; o += 2) {
                const int8_t *w0 = weight + o * depth, *w1 = w0 + depth;
                int32_t acc[4] = {bias[o], bias[o + 1], bias[o], bias[o + 1]};
                if (two) ek_dot2x2(col, col1, w0, w1, depth, acc);
                else ek_dot2(col, w0, w1, depth, &acc[0], &acc[1]);
                int8_t *y0 = y + o * pixels + px, *y1 = y0 + pixels;
                y0[0] = ek_requantize(acc[0], mult[o], shift[o], zp, lo, hi);
                y1[0] = ek_requantize(acc[1], mult[o + 1], shift[o + 1], zp, lo, hi);
                if (two) {
                    y0[1] = ek_requantize(acc[2], mult[o], shift[o], zp, lo, hi);
                    y1[1] = ek_requantize(acc[3], mult[o + 1], shift[o + 1], zp, lo, hi);
                }
            }
            if (o < (g + 1) * outs) {  /* one channel left */
                const int8_t *w = weight + o * depth;
                int32_t a0 = bias[o], a1 = bias[o];
                if (two) ek_dot2(w, col, col1, depth, &a0, &a1);
                else a0 = ek_dot(col, w, depth, a0);
                y[o * pixels + px] = ek_requantize(a0, mult[o], shift[o], zp, lo, hi);
                if (two) y[o * pixels + px + 1] = ek_requantize(a1, mult[o], shift[o], zp, lo, hi);
            }
        }
    }
}

/* Two output rows at a time over each input row. */
void ek_linear(const ek_linear_t *p, const int8_t *x, int8_t *y) {
    for (int32_t r = 0; r < p->rows; r++, x += p->in, y += p->out) {
        int32_t j = 0;
        for (; j + 1 < p->out; j += 2) {
            int32_t a0 = p->bias[j], a1 = p->bias[j + 1];
            ek_dot2(x, p->weight + j * p->in, p->weight + (j + 1) * p->in, p->in, &a0, &a1);
            y[j] = ek_requantize(a0, p->mult[j], p->shift[j], p->out_zp, p->lo, p->hi);
            y[j + 1] = ek_requantize(a1, p->mult[j + 1], p->shift[j + 1], p->out_zp, p->lo,
                                     p->hi);
        }
        if (j < p->out) {
            int32_t acc = ek_dot(x, p->weight + j * p->in, p->in, p->bias[j]);
            y[j] = ek_requantize(acc, p->mult[j], p->shift[j], p->out_zp, p->lo, p->hi);
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
