/* int8 kernels of edgekit's padding (constant, reflect, replicate); included by ek_kernels.h. */
#ifndef EK_PAD_H
#define EK_PAD_H
#include <stdint.h>

#endif
