/* int8 kernels of edgekit's nearest and bilinear resizing; included by ek_kernels.h. */
#ifndef EK_RESIZE_H
#define EK_RESIZE_H
#include <stdint.h>

#endif
