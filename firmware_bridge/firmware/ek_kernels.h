/* int8 kernels of edgekit's op set on NCHW tensors (batch 1), each the twin of a numba kernel in
 * edgekit/runtime/kernels/int8_*.py. Parameters are const structs written by converters/to_c.py,
 * so the model is a static schedule of these calls: no interpreter, no heap. */
#ifndef EK_KERNELS_H
#define EK_KERNELS_H
#include <stdint.h>

typedef struct {
    int16_t cin, h, w, cout, oh, ow, kh, kw, sh, sw, pt, pl, dh, dw, groups;
    int32_t in_zp, out_zp, lo, hi;
    const int8_t *weight;  /* [cout][cin / groups][kh][kw] */
    const int32_t *bias, *mult, *shift;  /* per output channel */
} ek_conv_t;

typedef struct {
    int32_t rows, in, out, out_zp, lo, hi;
    const int8_t *weight;  /* [out][in] */
    const int32_t *bias;   /* with the input zero point folded in: b - zp * sum(w) */
    const int32_t *mult, *shift;
} ek_linear_t;

#define EK_MAX_DIMS 6
/* Binary ops with numpy broadcasting (edgekit.ops.elementwise.broadcast_layout): the output's
 * merged dims and each operand's stride per merged dim (0 where it broadcasts). */
typedef struct {
    int32_t size, ndims, dims[EK_MAX_DIMS], x_strides[EK_MAX_DIMS], y_strides[EK_MAX_DIMS];
    int32_t zx, zy, zo, lo, hi, mult[3], shift[3];
} ek_binary_t;

typedef struct {
    int16_t c, h, w, oh, ow, kh, kw, sh, sw, pt, pl, dh, dw, count_include_pad;
    int32_t zp;
} ek_pool_t;

typedef struct { int32_t size, zx, zo, m_id, s_id, m_alpha, s_alpha; } ek_leaky_t;
typedef struct { int32_t outer, n, inner, zx, zo; float sx, so; } ek_softmax_t;
typedef struct {
    int32_t rows, n, zx, zo; float sx, so, eps; const float *gamma, *beta;
} ek_layernorm_t;

void ek_conv2d(const ek_conv_t *p, int8_t *col, const int8_t *x, int8_t *y);
void ek_linear(const ek_linear_t *p, const int8_t *x, int8_t *y);
/* TFLite int8 ADD (sign 1, ek_add) and SUB (sign -1, ek_sub): int8_elementwise.add. */
void ek_add_sub(const ek_binary_t *p, const int8_t *x, const int8_t *y, int32_t sign,
                int8_t *out);
void ek_add(const ek_binary_t *p, const int8_t *x, const int8_t *y, int8_t *out);
void ek_mul(const ek_binary_t *p, const int8_t *x, const int8_t *y, int8_t *out);
void ek_clamp_i8(int32_t size, int32_t lo, int32_t hi, const int8_t *x, int8_t *y);
/* int8 pointwise nonlinearities (sigmoid, tanh, GELU, ...): y = table[x + 128], the 256-entry
 * table written by converters/to_c.py from edgekit.numerics.params.lut_params. */
void ek_lut_i8(int32_t size, const int8_t *table, const int8_t *x, int8_t *y);
void ek_leaky_relu(const ek_leaky_t *p, const int8_t *x, int8_t *y);
void ek_maxpool2d(const ek_pool_t *p, const int8_t *x, int8_t *y);
void ek_avgpool2d(const ek_pool_t *p, const int8_t *x, int8_t *y);
void ek_copy(int32_t size, const int8_t *x, int8_t *y);
void ek_concat_part(int32_t outer, int32_t inner, int32_t total_inner, int32_t offset,
                    const int8_t *x, int8_t *y);
void ek_softmax(const ek_softmax_t *p, const int8_t *x, int8_t *y);
void ek_layernorm(const ek_layernorm_t *p, const int8_t *x, int8_t *y);
/* Kernels of spiking Graphs (converters/to_c_snn.py), twins of the numba kernels in
 * edgekit/runtime/kernels/spiking.py, pool.py and int8_pool.py and of elementwise.binary.
 * float32 (_f32): the same operations in the same order, so results are bit-identical (build
 * without FMA contraction). int8 spiking Graphs (edgekit.quant.spiking; _s8 takes int8 inputs,
 * _s32 int32 ones): int8 weights, int32 sums wrapping as the runtime's, so results are equal.
 * The event-driven layers return the synaptic operations they made. */
typedef struct {
    int16_t cin, h, w, cout, oh, ow, kh, kw, sh, sw, pt, pl, dh, dw, groups;
    const float *weight;  /* [cin / groups][kh][kw][cout]: the outputs one tap reaches, together */
    const float *bias;
    const int16_t *rows, *cols;  /* [h][kh], [w][kw]: the output row/column a tap reaches, or -1 */
} ek_conv_f32_t;

typedef struct {
    int16_t cin, h, w, cout, oh, ow, kh, kw, sh, sw, pt, pl, dh, dw, groups;
    const int8_t *weight;  /* [cin / groups][kh][kw][cout], as ek_conv_f32_t's */
    const int32_t *bias;
    const int16_t *rows, *cols;
} ek_conv_s8_t;

void ek_neuron_step_f32(int32_t size, const float *x, const float *threshold, float *v,
                        float leak, int32_t subtract, float *out);
int32_t ek_event_linear_f32(int32_t in, int32_t out_n, const float *w_t, const float *bias,
                            const float *x, float *y);
int32_t ek_event_conv2d_f32(const ek_conv_f32_t *p, const float *x, float *y);
void ek_avgpool2d_f32(const ek_pool_t *p, const float *x, float *y);
void ek_global_avgpool_f32(int32_t channels, int32_t size, const float *x, float *y);
void ek_add_f32(int32_t size, const float *x, const float *y, float *out);

/* leak: Q15 (32768 for IF); amplitude: each neuron's int8 spike. */
void ek_neuron_step_s32(int32_t size, const int32_t *x, const int32_t *threshold, int32_t *v,
                        int32_t leak, int32_t subtract, const int8_t *amplitude, int8_t *out);
/* zp: subtracted from every input first (the first layer's int8 input; 0 for spikes). */
int32_t ek_event_linear_s8(int32_t in, int32_t out_n, const int8_t *w_t, const int32_t *bias,
                           const int8_t *x, int32_t zp, int32_t *y);
int32_t ek_event_linear_s32(int32_t in, int32_t out_n, const int8_t *w_t, const int32_t *bias,
                            const int32_t *x, int32_t *y);
int32_t ek_event_conv2d_s8(const ek_conv_s8_t *p, const int8_t *x, int32_t zp, int32_t *y);
int32_t ek_event_conv2d_s32(const ek_conv_s8_t *p, const int32_t *x, int32_t *y);
void ek_sum_pool2d_s8(const ek_pool_t *p, const int8_t *x, int32_t *y);
void ek_sum_pool2d_s32(const ek_pool_t *p, const int32_t *x, int32_t *y);
void ek_global_sum_s8(int32_t channels, int32_t size, const int8_t *x, int32_t *y);
void ek_global_sum_s32(int32_t channels, int32_t size, const int32_t *x, int32_t *y);
void ek_scaled_add_s32(int32_t size, const int8_t *spikes, int32_t m, const int32_t *current,
                       int32_t *out);

/* one header per op family added after the first op set */
#include "ek_pad.h"
#include "ek_layout.h"
#include "ek_binary.h"
#include "ek_reduce.h"
#include "ek_matmul.h"
#include "ek_resize.h"
#include "ek_transpose_conv.h"
#include "ek_lowbit.h"
#endif
