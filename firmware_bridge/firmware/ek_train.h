/* Training a model's float head on the board, over its frozen int8 backbone (issue 17).
 *
 * The backbone is the generated int8 model (converters/to_c.py): its output is the head's
 * input, dequantized to float. The head is a chain of dense layers whose fp32 weights live in
 * RAM (the masters: nothing lower-precision is kept beside them); a training step runs the
 * head forward, softmax cross-entropy, backprop into the gradients, and, at the end of a
 * mini-batch, one SGD or AdamW update: what edgekit.learn's backprop does on the host
 * (edgekit/learn/kernels.py: softmax_xent, matmul_acc, sgd, adam), in the same order where
 * the host's order is defined. ek_train.c holds the kernels (no board, no model: a host
 * compiler builds them too, tests/test_mcu_train.py), ek_train_serve.c the commands. */
#ifndef EK_TRAIN_H
#define EK_TRAIN_H
#include <stdint.h>

typedef struct {
    uint16_t in, out;
    uint8_t act;          /* edgekit.learn.kernels.ACT_CODES: 0 none, 1 relu, 2 relu6, 3 leaky */
    float alpha;          /* leaky relu's slope below zero */
    float *w, *b;         /* (out, in) row-major and (out): the fp32 masters */
    float *gw, *gb;       /* their gradients, summed over the mini-batch */
    float *mw, *vw, *mb, *vb;  /* AdamW's moments, or NULL in a head built for SGD */
    float *y;             /* the layer's output: what its backward reads */
} ek_dense_t;

typedef struct {
    uint16_t n_layers;
    const ek_dense_t *layers;
    float *x;             /* the features: the backbone's int8 output, dequantized */
    float *dy, *dz;       /* error buffers, each as wide as the widest layer */
    float scale;          /* the features' int8 quantization */
    int32_t zero_point;
    uint8_t adam;         /* built with AdamW's moments */
} ek_head_t;

typedef struct {
    float weight_decay, beta1, beta2, eps;
    float one_minus_beta1, one_minus_beta2;  /* from the host's float64: 1 - 0.999f is not */
    uint8_t adam;
    float c1, c2_squared;  /* 1 - beta^t after t updates, by a recurrence that cancels nothing */
} ek_optim_t;

/* The host's backbone pass of a training command: take the inputs as INFER does (an ACK
 * first), run the model; its ticks, or -1 when it refused them (and answered already). */
typedef int64_t (*ek_backbone_fn)(uint8_t seq, uint8_t *inputs, uint32_t n);
#define EK_TRAIN_ANSWERED (-0x100)  /* ek_train_command: no reply left to send */

void ek_head_features(const ek_head_t *h, const int8_t *q);
const float *ek_head_forward(const ek_head_t *h);  /* the logits */
float ek_softmax_xent(const float *logits, uint16_t classes, uint16_t label, uint16_t count,
                      float *dlogits);
void ek_head_backward(const ek_head_t *h);  /* from dL/dlogits in h->dy */
void ek_head_zero_grads(const ek_head_t *h);
void ek_head_update(const ek_head_t *h, ek_optim_t *opt, float lr);
/* The training commands (TRAIN_CONFIG..TRAIN_INFER of ek_protocol.h): the reply's length in
 * ``out``, or minus an error code (with *why), or EK_TRAIN_ANSWERED. */
int32_t ek_train_command(uint8_t type, uint8_t seq, uint8_t *in, uint32_t n, uint8_t *out,
                         ek_backbone_fn backbone, const char **why);
#endif
