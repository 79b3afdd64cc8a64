/* The interface converters/to_c.py's generated model.c implements: where the inputs and
 * outputs live in the static arena, and one call per step of the static schedule. */
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
} ek_model_t;

extern const ek_model_t ek_model;
#endif
