/* An anytime model's sub-network table (converters/to_c_anytime.py; edgekit.anytime): one image
 * holds the shared weights and every path's steps; INFER_PATH names a path and the firmware runs
 * only that path's steps. A plain model has no paths (the weak default in ek_anytime.c). */
#ifndef EK_ANYTIME_H
#define EK_ANYTIME_H
#include <stdint.h>

typedef struct {
    uint16_t n_paths, full;   /* full: the path that runs every step (what INFER runs) */
    const uint16_t *starts;   /* n_paths + 1: path p runs steps[starts[p] .. starts[p + 1]) */
    const uint16_t *steps;    /* step indices of ek_model.run_step, in order */
    void (*use)(uint16_t path);  /* point each left-out add's output at the tensor standing
                                  * for it (its own place again for the full path) */
} ek_paths_t;

extern const ek_paths_t ek_paths;
#endif
