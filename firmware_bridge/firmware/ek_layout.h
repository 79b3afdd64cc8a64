/* int8 kernels of edgekit's data movement: transpose/permute, slice; included by ek_kernels.h. */
#ifndef EK_LAYOUT_H
#define EK_LAYOUT_H
#include <stdint.h>
#ifndef EK_MAX_DIMS
#define EK_MAX_DIMS 6
#endif

/* One strided copy (edgekit.ops.layout.strided_layout, written by converters/to_c.py): output
 * element (i_0, ..., i_{ndims-1}), in order, is x[offset + sum(i_k * strides[k])]. A transpose
 * and a slice are both this; axes that stay contiguous come merged. */
typedef struct {
    int32_t ndims, offset, dims[EK_MAX_DIMS], strides[EK_MAX_DIMS];
} ek_strided_t;

void ek_strided_copy(const ek_strided_t *p, const int8_t *x, int8_t *y);

#endif
