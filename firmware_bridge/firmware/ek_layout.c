/* int8 data movement (transpose, slice): the twin of numpy's copy of a strided view, which the
 * runtime's kernels of edgekit/ops/layout.py make. */
#include <string.h>

#include "ek_kernels.h"

void ek_strided_copy(const ek_strided_t *p, const int8_t *x, int8_t *y) {
    const int32_t last = p->ndims - 1, n = p->dims[last], step = p->strides[last];
    int32_t index[EK_MAX_DIMS] = {0}, outer = 1;
    for (int32_t k = 0; k < last; k++) outer *= p->dims[k];
    for (int32_t o = 0; o < outer; o++) {
        const int8_t *src = x + p->offset;
        for (int32_t k = 0; k < last; k++) src += index[k] * p->strides[k];
        if (step == 1) {
            memcpy(y, src, (size_t)n);
        } else {
            for (int32_t i = 0; i < n; i++) y[i] = src[i * step];
        }
        y += n;
        for (int32_t k = last - 1; k >= 0 && ++index[k] == p->dims[k]; k--) index[k] = 0;
    }
}
