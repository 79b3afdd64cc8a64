/* int8 resizing, twins of edgekit/runtime/kernels/resize.py (nearest, bilinear_i8). */
#include "ek_kernels.h"

void ek_resize_nearest(const ek_resize_t *p, const int8_t *x, int8_t *y) {
    for (int32_t c = 0; c < p->c; c++, x += p->h * p->w) {
        for (int32_t oy = 0; oy < p->oh; oy++) {
            const int8_t *row = x + p->y0[oy] * p->w;
            for (int32_t ox = 0; ox < p->ow; ox++) *y++ = row[p->x0[ox]];
        }
    }
}

void ek_resize_bilinear(const ek_resize_t *p, const int8_t *x, int8_t *y) {
    for (int32_t c = 0; c < p->c; c++, x += p->h * p->w) {
        for (int32_t oy = 0; oy < p->oh; oy++) {
            const int8_t *a = x + p->y0[oy] * p->w, *b = x + p->y1[oy] * p->w;
            int32_t hy = p->wy[oy], ly = 1024 - hy;
            for (int32_t ox = 0; ox < p->ow; ox++) {
                int32_t hx = p->wx[ox], lx = 1024 - hx;
                int32_t i0 = p->x0[ox], i1 = p->x1[ox];
                int32_t acc = a[i0] * ly * lx + b[i0] * hy * lx + a[i1] * ly * hx
                              + b[i1] * hy * hx;
                *y++ = (int8_t)(acc > 0 ? (acc + (1 << 19)) / (1 << 20)
                                        : (acc - (1 << 19)) / (1 << 20));
            }
        }
    }
}
