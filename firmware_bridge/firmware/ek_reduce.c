/* int8 reductions over axes as tflite-micro computes MEAN, SUM and REDUCE_MAX, bit-exact with
 * edgekit's runtime (edgekit/ops/reduce.py). */
#include "ek_arith.h"
#include "ek_kernels.h"

/* The input offset of index i of a group of axes (sizes dims, input strides strides). */
static int32_t ek_reduce_offset(int32_t i, int32_t rank, const int32_t *dims,
                                const int32_t *strides) {
    int32_t off = 0;
    for (int32_t d = rank - 1; d >= 0; d--) {
        off += (i % dims[d]) * strides[d];
        i /= dims[d];
    }
    return off;
}

void ek_reduce_sum_i8(const ek_reduce_t *p, const int8_t *x, int8_t *y) {
    for (int32_t o = 0; o < p->n_out; o++) {
        const int8_t *base = x + ek_reduce_offset(o, p->out_rank, p->out_dims, p->out_strides);
        int32_t acc = 0;
        for (int32_t r = 0; r < p->n_red; r++)
            acc += base[ek_reduce_offset(r, p->red_rank, p->red_dims, p->red_strides)];
        y[o] = ek_requantize(acc - p->offset, p->mult, p->shift, p->zo, -128, 127);
    }
}

void ek_reduce_max_i8(const ek_reduce_t *p, const int8_t *x, int8_t *y) {
    for (int32_t o = 0; o < p->n_out; o++) {
        const int8_t *base = x + ek_reduce_offset(o, p->out_rank, p->out_dims, p->out_strides);
        int8_t m = -128;
        for (int32_t r = 0; r < p->n_red; r++) {
            int8_t v = base[ek_reduce_offset(r, p->red_rank, p->red_dims, p->red_strides)];
            if (v > m) m = v;
        }
        y[o] = m;
    }
}
