/* int8 batched matmul (edgekit.ops.matmul), bit-exact with the runtime's int8_batch_matmul and
 * tflite-micro's BATCH_MATMUL, and embedding's row gather (edgekit.ops.embedding). */
#include <string.h>

#include "ek_arith.h"
#include "ek_kernels.h"

void ek_matmul(const ek_matmul_t *p, const int8_t *x, const int8_t *y, int8_t *out) {
    for (int32_t b = 0; b < p->count; b++) {
        const int8_t *xs = x + p->x_index[b] * p->m * p->k;
        const int8_t *ys = y + p->y_index[b] * p->k * p->p;
        int8_t *dst = out + b * p->m * p->p;
        for (int32_t i = 0; i < p->m; i++) {
            for (int32_t j = 0; j < p->p; j++) {
                int32_t acc = 0;
                for (int32_t t = 0; t < p->k; t++) {
                    acc += ((int32_t)xs[i * p->k + t] - p->zx)
                           * ((int32_t)ys[t * p->p + j] - p->zy);
                }
                dst[i * p->p + j] = ek_requantize(acc, p->mult, p->shift, p->zo, -128, 127);
            }
        }
    }
}

void ek_gather_rows(int32_t count, int32_t rows, int32_t features, const int8_t *indices,
                    const int8_t *table, int8_t *out) {
    const uint8_t *bytes = (const uint8_t *)indices;
    for (int32_t r = 0; r < count; r++, bytes += 4, out += features) {
        int32_t i = (int32_t)((uint32_t)bytes[0] | (uint32_t)bytes[1] << 8
                              | (uint32_t)bytes[2] << 16 | (uint32_t)bytes[3] << 24);
        i = i < 0 ? 0 : i >= rows ? rows - 1 : i;
        memcpy(out, table + i * features, (size_t)features);
    }
}
