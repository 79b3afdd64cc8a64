/* int8 kernels of edgekit's batched matmul and embedding lookup; included by ek_kernels.h. */
#ifndef EK_MATMUL_H
#define EK_MATMUL_H
#include <stdint.h>

/* TFLite's BATCH_MATMUL on one sample: ``count`` output matrices (m x p), the b-th the product
 * of x's matrix x_index[b] (m x k) and y's y_index[b] (k x p), broadcast as numpy does; int32
 * sums of (x - zx) * (y - zy) requantized by (mult, shift) onto zo (edgekit.ops.matmul). */
typedef struct {
    int32_t count, m, k, p;
    const int32_t *x_index, *y_index;
    int32_t zx, zy, zo, mult, shift;
} ek_matmul_t;

void ek_matmul(const ek_matmul_t *p, const int8_t *x, const int8_t *y, int8_t *out);

/* embedding: out row r = table row indices[r] (``features`` int8 values each) for ``count``
 * int32 indices stored little-endian from ``indices`` (read byte-wise: no alignment assumed).
 * An index outside [0, rows) is clamped to the table: the host refuses them, and a raw frame
 * must still never make the board read outside its table. */
void ek_gather_rows(int32_t count, int32_t rows, int32_t features, const int8_t *indices,
                    const int8_t *table, int8_t *out);

#endif
