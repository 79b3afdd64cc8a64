/* int8 kernels of edgekit's reductions over axes and log-softmax; included by ek_kernels.h. */
#ifndef EK_REDUCE_H
#define EK_REDUCE_H
#include <stdint.h>

#endif
