/* int8 kernels of edgekit's batched matmul and embedding lookup; included by ek_kernels.h. */
#ifndef EK_MATMUL_H
#define EK_MATMUL_H
#include <stdint.h>

#endif
