/* int8 kernels of edgekit's nearest and bilinear resizing; included by ek_kernels.h. */
#ifndef EK_RESIZE_H
#define EK_RESIZE_H
#include <stdint.h>

/* A resize of c planes h x w to oh x ow. Per output row (column): the input rows (columns) it
 * reads, y0 and y1, and y1's weight wy in 1/1024ths (y0's is 1024 - wy), written by
 * converters/to_c.py from edgekit.numerics.params.resize_taps; nearest reads y0/x0 only. */
typedef struct {
    int16_t c, h, w, oh, ow;
    const int16_t *y0, *y1, *wy, *x0, *x1, *wx;
} ek_resize_t;

void ek_resize_nearest(const ek_resize_t *p, const int8_t *x, int8_t *y);
/* TFLite's ResizeBilinearInteger: the weighted sum in 2^-20ths (int32: the weights' magnitudes
 * add to at most 2048 per axis), rounded half away from zero. */
void ek_resize_bilinear(const ek_resize_t *p, const int8_t *x, int8_t *y);

#endif
