/* Packed weight rows and narrow accumulators for int8 layers (ek_lowbit.h). Scalar C: each
 * output channel's row is unpacked into ``row`` once, then every output pixel sums its window
 * against it, tap by tap in torch order (input channel, kernel row, kernel column); taps
 * outside the input add nothing, as the runtime's padding of x - zp = 0 adds 0. */
#include "ek_lowbit.h"

#include "ek_arith.h"

static void ek_unpack_row(const ek_rows_t *r, int32_t c, int32_t n, int8_t *row) {
    const uint8_t *src = r->weight + (int32_t)r->row_bytes * c;
    for (int32_t j = 0; j < n; j++) {
        if (r->format == EK_ROWS_INT4) {
            int32_t nibble = (src[j >> 1] >> ((j & 1) * 4)) & 0xF;
            row[j] = (int8_t)(nibble >= 8 ? nibble - 16 : nibble);
        } else if (r->format == EK_ROWS_TERNARY) {
            int32_t byte = src[j / 5];
            for (int32_t k = j % 5; k > 0; k--) byte /= 3;
            row[j] = (int8_t)(byte % 3 - 1);
        } else {
            row[j] = (int8_t)src[j];
        }
    }
}

/* acc + term in a ``bits``-wide accumulator: clamped (saturate) or modulo 2^bits. */
static inline int32_t ek_acc(int32_t acc, int32_t term, int32_t bits, int32_t saturate) {
    const int64_t top = ((int64_t)1 << (bits - 1)) - 1, bottom = -top - 1;
    const int64_t sum = (int64_t)acc + term;
    if (saturate) return (int32_t)(sum < bottom ? bottom : sum > top ? top : sum);
    const uint64_t wrapped = (uint64_t)(sum - bottom) & (((uint64_t)1 << bits) - 1u);
    return (int32_t)((int64_t)wrapped + bottom);
}

static inline int8_t ek_rows_out(int32_t acc, int32_t bias, int32_t mult, int32_t shift,
                                 int32_t zp, int32_t lo, int32_t hi) {
    return ek_requantize((int32_t)((uint32_t)acc + (uint32_t)bias), mult, shift, zp, lo, hi);
}

void ek_conv2d_rows(const ek_conv_rows_t *p, int8_t *row, const int8_t *x, int8_t *y) {
    const int32_t per_group = p->cin / p->groups, per_out = p->cout / p->groups;
    const int32_t n = per_group * p->kh * p->kw, plane = p->oh * p->ow;
    const int32_t bits = p->rows.bits, saturate = p->rows.saturate, zp = p->in_zp;
    for (int32_t c = 0; c < p->cout; c++) {
        const int32_t first = (c / per_out) * per_group;
        ek_unpack_row(&p->rows, c, n, row);
        for (int32_t oy = 0; oy < p->oh; oy++) {
            for (int32_t ox = 0; ox < p->ow; ox++) {
                int32_t acc = 0;
                const int8_t *w = row;
                for (int32_t ic = 0; ic < per_group; ic++) {
                    const int8_t *in = x + (first + ic) * p->h * p->w;
                    for (int32_t ky = 0; ky < p->kh; ky++) {
                        const int32_t iy = oy * p->sh + ky * p->dh - p->pt;
                        for (int32_t kx = 0; kx < p->kw; kx++, w++) {
                            const int32_t ix = ox * p->sw + kx * p->dw - p->pl;
                            if (iy < 0 || iy >= p->h || ix < 0 || ix >= p->w) continue;
                            acc = ek_acc(acc, (in[iy * p->w + ix] - zp) * *w, bits, saturate);
                        }
                    }
                }
                y[c * plane + oy * p->ow + ox] = ek_rows_out(acc, p->bias[c], p->mult[c],
                                                             p->shift[c], p->out_zp, p->lo,
                                                             p->hi);
            }
        }
    }
}

void ek_linear_rows(const ek_linear_rows_t *p, int8_t *row, const int8_t *x, int8_t *y) {
    const int32_t bits = p->rows.bits, saturate = p->rows.saturate;
    for (int32_t c = 0; c < p->out; c++) {
        ek_unpack_row(&p->rows, c, p->in, row);
        for (int32_t r = 0; r < p->n; r++) {
            const int8_t *in = x + r * p->in;
            int32_t acc = 0;
            for (int32_t j = 0; j < p->in; j++)
                acc = ek_acc(acc, (in[j] - p->in_zp) * row[j], bits, saturate);
            y[r * p->out + c] = ek_rows_out(acc, p->bias[c], p->mult[c], p->shift[c],
                                            p->out_zp, p->lo, p->hi);
        }
    }
}
