/* int8 kernels of edgekit's broadcasting binary ops (sub, div, maximum, minimum), clip and prelu; included by ek_kernels.h. */
#ifndef EK_BINARY_H
#define EK_BINARY_H
#include <stdint.h>

#endif
