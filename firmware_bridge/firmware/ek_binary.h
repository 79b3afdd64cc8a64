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

/* The broadcast walk all the binary kernels share: the output row by row, both operands' offsets
 * once per row (ek_binary_offsets), then per element `expr` with the operands' int8 values as the
 * int32_t `a` and `b` (named by the caller). A macro rather than a function taking a callback so
 * that the per-element computation is inlined: no indirect call per element on the MCU. */
#define EK_BINARY_ROWS(p, x, y, out, a, b, expr)                                               \
    do {                                                                                       \
        int32_t ek_inner_ = (p)->dims[(p)->ndims - 1];                                         \
        int32_t ek_xs_ = (p)->x_strides[(p)->ndims - 1];                                       \
        int32_t ek_ys_ = (p)->y_strides[(p)->ndims - 1];                                       \
        for (int32_t ek_row_ = 0; ek_row_ < (p)->size / ek_inner_; ek_row_++) {                \
            int32_t ek_xo_, ek_yo_;                                                            \
            ek_binary_offsets((p), ek_row_, &ek_xo_, &ek_yo_);                                 \
            const int8_t *ek_xr_ = (x) + ek_xo_, *ek_yr_ = (y) + ek_yo_;                       \
            int8_t *ek_o_ = (out) + ek_row_ * ek_inner_;                                       \
            for (int32_t ek_i_ = 0; ek_i_ < ek_inner_; ek_i_++) {                              \
                int32_t a = ek_xr_[ek_i_ * ek_xs_], b = ek_yr_[ek_i_ * ek_ys_];                \
                ek_o_[ek_i_] = (int8_t)(expr);                                                 \
            }                                                                                  \
        }                                                                                      \
    } while (0)

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
