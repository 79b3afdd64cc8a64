/* int8 kernels of edgekit's transposed convolution; included by ek_kernels.h. */
#ifndef EK_TRANSPOSE_CONV_H
#define EK_TRANSPOSE_CONV_H
#include <stdint.h>

/* conv_transpose2d on an ek_conv_t (weight [cout][cin / groups][kh][kw], output channels
 * first; bias the int32 bias as it is, not folded; pt/pl the top/left crop of the full
 * output): the twin of edgekit/runtime/kernels/conv_transpose.py. */
void ek_conv_transpose2d(const ek_conv_t *p, const int8_t *x, int8_t *y);

#endif
