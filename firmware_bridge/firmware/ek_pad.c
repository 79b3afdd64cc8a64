/* Padding: the loop of edgekit.runtime.kernels.pad.pad4 in C, bit for bit (it moves values). */
#include <string.h>

#include "ek_kernels.h"

/* The input index output index i reads along an axis, or -1 for the constant (a reflection
 * never reaches past the far edge: the shape rule keeps its pads below the size). */
static int32_t ek_pad_source(int32_t i, int32_t before, int32_t size, int32_t mode) {
    int32_t j = i - before;
    if (j < 0) return mode == EK_PAD_CONSTANT ? -1 : (mode == EK_PAD_REFLECT ? -j : 0);
    if (j >= size) {
        if (mode == EK_PAD_CONSTANT) return -1;
        return mode == EK_PAD_REFLECT ? 2 * (size - 1) - j : size - 1;
    }
    return j;
}

void ek_pad_i8(const ek_pad_t *p, const int8_t *x, int8_t *y) {
    int32_t out[4];
    for (int a = 0; a < 4; a++) out[a] = p->dims[a] + p->before[a] + p->after[a];
    const int32_t d1 = p->dims[1], d2 = p->dims[2], d3 = p->dims[3];
    for (int32_t a = 0; a < out[0]; a++) {
        const int32_t sa = ek_pad_source(a, p->before[0], p->dims[0], p->mode);
        for (int32_t b = 0; b < out[1]; b++) {
            const int32_t sb = ek_pad_source(b, p->before[1], d1, p->mode);
            for (int32_t c = 0; c < out[2]; c++, y += out[3]) {
                const int32_t sc = ek_pad_source(c, p->before[2], d2, p->mode);
                if (sa < 0 || sb < 0 || sc < 0) {
                    memset(y, p->value, (size_t)out[3]);
                    continue;
                }
                const int8_t *row = x + ((sa * d1 + sb) * d2 + sc) * d3;
                for (int32_t d = 0; d < out[3]; d++) {
                    const int32_t sd = ek_pad_source(d, p->before[3], d3, p->mode);
                    y[d] = sd < 0 ? p->value : row[sd];
                }
            }
        }
    }
}
