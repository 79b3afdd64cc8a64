/* int8 kernels of edgekit's data movement: transpose/permute, slice; included by ek_kernels.h. */
#ifndef EK_LAYOUT_H
#define EK_LAYOUT_H
#include <stdint.h>

#endif
