/* The interface converters/to_c.py's (and to_c_snn.py's) generated model.c implements: where
 * the inputs and outputs live in the static arena, one call per step of the static schedule,
 * and what the model counted in its last inference (STATS). */
#ifndef EK_MODEL_H
#define EK_MODEL_H
#include <stdint.h>

typedef struct { uint32_t offset, size; } ek_span_t;

typedef struct {
    const char *hash;            /* 16 hex digits of the model's content hash */
    uint32_t arena_bytes;
    uint16_t n_inputs, n_outputs, n_steps;
    const ek_span_t *inputs, *outputs, *steps;  /* steps: each step's output tensor */
    int8_t *arena;
    void (*run_step)(uint16_t step);
    const uint32_t *stats;       /* n_stats counters of the last inference (none for int8 models;
                                  * a spiking model: its synaptic operations, then each node's
                                  * ticks over the T time steps) */
    uint16_t n_stats;
} ek_model_t;

extern const ek_model_t ek_model;
#endif
