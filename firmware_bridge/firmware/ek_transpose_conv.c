/* int8 transposed convolution, output-stationary: each output sums the taps that reach it
 * (oy + pt = iy * sh + ky * dh, the same on x) in int32, adds the bias and is requantized per
 * output channel. tflite-micro's TRANSPOSE_CONV scatters into an int32 buffer instead; integer
 * sums do not depend on their order (load validation bounds them inside int32), so both agree
 * bit for bit, without the output-sized buffer. */
#include "ek_arith.h"
#include "ek_kernels.h"

void ek_conv_transpose2d(const ek_conv_t *p, const int8_t *x, int8_t *y) {
    const int32_t per_group = p->cin / p->groups, outs = p->cout / p->groups;
    const int32_t taps = p->kh * p->kw, plane = p->h * p->w;
    for (int32_t o = 0; o < p->cout; o++) {
        const int8_t *w = p->weight + o * per_group * taps;
        const int8_t *xg = x + (o / outs) * per_group * plane;
        for (int32_t oy = 0; oy < p->oh; oy++) {
            for (int32_t ox = 0; ox < p->ow; ox++) {
                int32_t acc = 0;
                for (int32_t ky = 0; ky < p->kh; ky++) {
                    const int32_t ty = oy + p->pt - ky * p->dh;
                    if (ty < 0 || ty % p->sh != 0 || ty / p->sh >= p->h) continue;
                    for (int32_t kx = 0; kx < p->kw; kx++) {
                        const int32_t tx = ox + p->pl - kx * p->dw;
                        if (tx < 0 || tx % p->sw != 0 || tx / p->sw >= p->w) continue;
                        const int8_t *xp = xg + (ty / p->sh) * p->w + tx / p->sw;
                        const int8_t *wp = w + ky * p->kw + kx;
                        for (int32_t c = 0; c < per_group; c++) {
                            acc += ((int32_t)xp[c * plane] - p->in_zp) * wp[c * taps];
                        }
                    }
                }
                *y++ = ek_requantize(acc + p->bias[o], p->mult[o], p->shift[o], p->out_zp,
                                     p->lo, p->hi);
            }
        }
    }
}
