/* int8 conv/linear layers that read their weights as rows of codes, unpacked one output channel
 * at a time in the kernel (converters/to_c_lowbit.py writes them): int4 (two a byte, low nibble
 * first, two's complement), ternary (five a byte, base 3, digit + 1) or plain int8, and sum each
 * output in a 32-, 16- or 12-bit (any 8..32) accumulator that saturates every partial sum or
 * wraps. The twin of gemm_int8_rows in edgekit/runtime/kernels/lowbit.py: the same terms
 * (x - zp) * w in the same (torch) order, the int32 bias added to the finished sum, TFLite's
 * requantization (ek_arith.h), so the outputs are bit-identical. */
#ifndef EK_LOWBIT_H
#define EK_LOWBIT_H
#include <stdint.h>

enum { EK_ROWS_INT8 = 0, EK_ROWS_INT4 = 1, EK_ROWS_TERNARY = 2 };

typedef struct {
    int16_t format, bits, saturate;  /* EK_ROWS_*, accumulator width, 1: saturate, 0: wrap */
    int32_t row_bytes;               /* stored bytes of one output channel's row */
    const uint8_t *weight;           /* [cout][row_bytes], row in torch order */
} ek_rows_t;

typedef struct {
    int16_t cin, h, w, cout, oh, ow, kh, kw, sh, sw, pt, pl, dh, dw, groups;
    int32_t in_zp, out_zp, lo, hi;
    ek_rows_t rows;
    const int32_t *bias, *mult, *shift;  /* the int32 bias as the Graph holds it (not folded) */
} ek_conv_rows_t;

typedef struct {
    int32_t n, in, out, in_zp, out_zp, lo, hi;  /* n: rows of the input's last axis */
    ek_rows_t rows;
    const int32_t *bias, *mult, *shift;
} ek_linear_rows_t;

/* ``row``: scratch of one unpacked weight row (cin / groups * kh * kw bytes, or in). */
void ek_conv2d_rows(const ek_conv_rows_t *p, int8_t *row, const int8_t *x, int8_t *y);
void ek_linear_rows(const ek_linear_rows_t *p, int8_t *row, const int8_t *x, int8_t *y);
#endif
