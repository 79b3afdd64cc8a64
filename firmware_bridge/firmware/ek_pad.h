/* int8 kernels of edgekit's padding (constant, reflect, replicate); included by ek_kernels.h. */
#ifndef EK_PAD_H
#define EK_PAD_H
#include <stdint.h>

enum { EK_PAD_CONSTANT = 0, EK_PAD_REFLECT = 1, EK_PAD_REPLICATE = 2 };

/* One sample as 4 axes (edgekit.ops.pad): each axis grows by before[a] and after[a]; value
 * (the constant, already quantized) fills constant padding. */
typedef struct {
    int32_t dims[4], before[4], after[4], mode;
    int8_t value;
} ek_pad_t;

void ek_pad_i8(const ek_pad_t *p, const int8_t *x, int8_t *y);

#endif
