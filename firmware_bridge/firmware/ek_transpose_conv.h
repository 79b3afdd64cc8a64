/* int8 kernels of edgekit's transposed convolution; included by ek_kernels.h. */
#ifndef EK_TRANSPOSE_CONV_H
#define EK_TRANSPOSE_CONV_H
#include <stdint.h>

#endif
