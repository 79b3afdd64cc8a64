/* int8 kernels of edgekit's reductions over axes and log-softmax; included by ek_kernels.h. */
#ifndef EK_REDUCE_H
#define EK_REDUCE_H
#include <stdint.h>

#ifndef EK_MAX_DIMS
#define EK_MAX_DIMS 6
#endif

/* One sample's reduction: n_out outputs (the kept axes, in order), each over n_red inputs (the
 * reduced axes); each group of axes with its sizes and input strides. Mean and sum subtract
 * offset (input zero point x n_red) from the int32 sum and requantize by (mult, shift) onto zo
 * (edgekit.numerics.params.ReduceParams); max reads none of the four. */
typedef struct {
    int32_t n_out, n_red, out_rank, red_rank;
    int32_t out_dims[EK_MAX_DIMS], out_strides[EK_MAX_DIMS];
    int32_t red_dims[EK_MAX_DIMS], red_strides[EK_MAX_DIMS];
    int32_t offset, zo, mult, shift;
} ek_reduce_t;

void ek_reduce_sum_i8(const ek_reduce_t *p, const int8_t *x, int8_t *y);
void ek_reduce_max_i8(const ek_reduce_t *p, const int8_t *x, int8_t *y);

/* int8 log-softmax along n of (outer, n, inner), as tflite-micro's LOG_SOFTMAX
 * (edgekit.numerics.params.LogSoftmaxParams). */
typedef struct {
    int32_t outer, n, inner, mult, left_shift, reverse_mult, reverse_shift, diff_min;
} ek_log_softmax_t;

void ek_log_softmax_i8(const ek_log_softmax_t *p, const int8_t *x, int8_t *y);

#endif
