/* int8 kernels of edgekit's broadcasting binary ops (sub, div, maximum, minimum), clip and prelu; included by ek_kernels.h. */
#ifndef EK_BINARY_H
#define EK_BINARY_H
#include <stdint.h>

/* Offsets into x and y of innermost row ``row`` of the output (elementwise.offsets). */
static inline void ek_binary_offsets(const ek_binary_t *p, int32_t row, int32_t *xo,
                                     int32_t *yo) {
    int32_t a = 0, b = 0;
    for (int32_t d = p->ndims - 2; d >= 0; d--) {
        int32_t i = row % p->dims[d];
        a += i * p->x_strides[d];
        b += i * p->y_strides[d];
        row /= p->dims[d];
    }
    *xo = a;
    *yo = b;
}

/* TFLite int8 SUB: ek_add_sub (ek_kernels.c, ek_add's body) with sign -1. */
void ek_sub(const ek_binary_t *p, const int8_t *x, const int8_t *y, int8_t *out);
/* TFLite int8 DIV (mult[0], shift[0]): int8_elementwise.div. */
void ek_div(const ek_binary_t *p, const int8_t *x, const int8_t *y, int8_t *out);
/* TFLite int8 MAXIMUM/MINIMUM: inputs and output share one quantization (no parameters). */
void ek_maximum(const ek_binary_t *p, const int8_t *x, const int8_t *y, int8_t *out);
void ek_minimum(const ek_binary_t *p, const int8_t *x, const int8_t *y, int8_t *out);
/* TFLite int8 PRELU, alpha (int8, zero point 0) as y: (mult[0], shift[0]) where x >= zx, else
 * (mult[1], shift[1]) on (x - zx) * alpha (int8_elementwise.prelu). */
void ek_prelu(const ek_binary_t *p, const int8_t *x, const int8_t *alpha, int8_t *out);

#endif
