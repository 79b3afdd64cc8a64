/* The training commands (firmware_bridge/protocol.py, 0x0B..0x0F) of a firmware whose model has
 * a trainable head (converters/to_c_train.py defines ``ek_head`` and EK_TRAIN; only then does
 * ek_protocol.c dispatch here, and a firmware without one answers "unknown command").
 *
 * Every command stays idempotent, as the link's retries need: TRAIN_STEP carries its index
 * (1, 2, ... since TRAIN_CONFIG) and a step asked again is answered from the reply kept, not
 * applied twice; a step out of order (the board rebooted, so its weights are the image's
 * again) is refused. The parameter stream of TRAIN_READ/TRAIN_WRITE is each layer's weight
 * then bias, float32 little-endian, in the head's order. */
#include <string.h>

#include "ek_board.h"
#include "ek_model.h"
#include "ek_protocol.h"
#include "ek_train.h"

/* The generated model's head; weak so that the firmware's size measurement, whose empty model
 * has none, still links (firmware_bridge/sizes.py). */
extern const ek_head_t ek_head __attribute__((weak));

enum { STEP_HEAD = 16, STEP_REPLY = 16, FIRST = 1, LAST = 2 };

static ek_optim_t opt;
static uint8_t configured;
static uint32_t done;  /* TRAIN_STEPs applied since TRAIN_CONFIG */
static uint8_t step_reply[STEP_REPLY];  /* the last one's reply, for a repeated request */

static uint32_t u32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint16_t u16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static float f32(const uint8_t *p) { float v; memcpy(&v, p, 4); return v; }

static uint32_t param_bytes(void) {
    uint32_t n = 0;
    for (uint16_t l = 0; l < ek_head.n_layers; l++)
        n += 4u * ((uint32_t)ek_head.layers[l].out * ek_head.layers[l].in + ek_head.layers[l].out);
    return n;
}

/* Copy ``n`` bytes at ``offset`` of the parameter stream from ``buf`` (WRITE) or into it. */
static void param_copy(uint32_t offset, uint8_t *buf, uint32_t n, int into_params) {
    for (uint16_t l = 0; l < ek_head.n_layers && n; l++) {
        const ek_dense_t *d = &ek_head.layers[l];
        uint8_t *part[2] = {(uint8_t *)d->w, (uint8_t *)d->b};
        uint32_t size[2] = {4u * d->out * d->in, 4u * d->out};
        for (int i = 0; i < 2 && n; i++) {
            if (offset >= size[i]) { offset -= size[i]; continue; }
            uint32_t k = size[i] - offset < n ? size[i] - offset : n;
            if (into_params) memcpy(part[i] + offset, buf, k);
            else memcpy(buf, part[i] + offset, k);
            buf += k;
            n -= k;
            offset = 0;
        }
    }
}

static uint16_t classes(void) { return ek_head.layers[ek_head.n_layers - 1].out; }

static const float *head_forward(void) {
    ek_head_features(&ek_head, ek_model.arena + ek_model.outputs[0].offset);
    return ek_head_forward(&ek_head);
}

static void zero_state(void) {
    ek_head_zero_grads(&ek_head);
    for (uint16_t l = 0; l < ek_head.n_layers && ek_head.adam; l++) {
        const ek_dense_t *d = &ek_head.layers[l];
        memset(d->mw, 0, 4u * d->out * d->in);
        memset(d->vw, 0, 4u * d->out * d->in);
        memset(d->mb, 0, 4u * d->out);
        memset(d->vb, 0, 4u * d->out);
    }
}

/* TRAIN_CONFIG: u8 optimizer (0 SGD, 1 AdamW), 3 pad bytes, f32 weight decay, beta1, beta2,
 * eps, 1 - beta1, 1 - beta2; clears gradients, moments and the step count. Reply: u32
 * parameter bytes, u16 layers, u16 classes, u8 whether the head holds AdamW's moments. */
static int32_t config(const uint8_t *in, uint32_t n, uint8_t *out, const char **why) {
    if (n != 28) {
        *why = "TRAIN_CONFIG takes optimizer, weight decay, betas, eps";
        return -EK_ERR_SIZE;
    }
    if (in[0] > 1 || (in[0] && !ek_head.adam)) {
        *why = "this firmware's head was built for SGD: build it for AdamW";
        return -EK_ERR_RANGE;
    }
    opt = (ek_optim_t){f32(in + 4), f32(in + 8), f32(in + 12), f32(in + 16), f32(in + 20),
                       f32(in + 24), in[0], 0.0f, 0.0f};
    zero_state();
    done = 0;
    configured = 1;
    uint32_t bytes = param_bytes();
    uint16_t layers = ek_head.n_layers, k = classes();
    memcpy(out, &bytes, 4);
    memcpy(out + 4, &layers, 2);
    memcpy(out + 6, &k, 2);
    out[8] = ek_head.adam;
    return 9;
}

/* TRAIN_STEP: u32 index, u8 flags (1: the mini-batch's first sample, 2: its last), u8 pad,
 * u16 label, u16 samples in the mini-batch, u16 pad, f32 learning rate, then the inputs as
 * INFER takes them. Reply: u32 backbone ticks, u32 head ticks (forward, backward, update),
 * f32 loss, u16 predicted class, u16 pad. */
static int32_t step(uint8_t seq, uint8_t *in, uint32_t n, uint8_t *out,
                    ek_backbone_fn backbone, const char **why) {
    static const char *order = "not the next training step (rebooted?)";  /* < 64 B: any frame */
    if (n < STEP_HEAD) {
        *why = "TRAIN_STEP takes index, flags, label, count, lr, inputs";
        return -EK_ERR_SIZE;
    }
    uint32_t index = u32(in);
    uint16_t label = u16(in + 6), count = u16(in + 8);
    if (!configured || (index != done + 1 && (index != done || !done))) {
        *why = order;
        return -EK_ERR_RANGE;
    }
    if (index == done) {
        memcpy(out, step_reply, STEP_REPLY);
        return STEP_REPLY;
    }
    if (label >= classes() || count == 0) {
        *why = "label or batch count out of range";
        return -EK_ERR_RANGE;
    }
    int64_t ticks = backbone(seq, in + STEP_HEAD, n - STEP_HEAD);
    if (ticks < 0) return EK_TRAIN_ANSWERED;
    uint64_t start = board_ticks();
    if (in[4] & FIRST) ek_head_zero_grads(&ek_head);
    const float *logits = head_forward();
    uint16_t best = 0;
    for (uint16_t k = 1; k < classes(); k++) best = logits[k] > logits[best] ? k : best;
    float loss = ek_softmax_xent(logits, classes(), label, count, ek_head.dy);
    ek_head_backward(&ek_head);
    if (in[4] & LAST) ek_head_update(&ek_head, &opt, f32(in + 12));
    uint32_t head_ticks = (uint32_t)(board_ticks() - start), backbone_ticks = (uint32_t)ticks;
    memcpy(step_reply, &backbone_ticks, 4);
    memcpy(step_reply + 4, &head_ticks, 4);
    memcpy(step_reply + 8, &loss, 4);
    memcpy(step_reply + 12, &best, 2);
    step_reply[14] = step_reply[15] = 0;
    done = index;
    memcpy(out, step_reply, STEP_REPLY);
    return STEP_REPLY;
}

/* TRAIN_INFER: the inputs as INFER takes them; reply u32 backbone ticks, u32 head ticks, the
 * logits as f32. */
static int32_t infer(uint8_t seq, uint8_t *in, uint32_t n, uint8_t *out, ek_backbone_fn backbone) {
    int64_t ticks = backbone(seq, in, n);
    if (ticks < 0) return EK_TRAIN_ANSWERED;
    uint64_t start = board_ticks();
    const float *logits = head_forward();
    uint32_t head_ticks = (uint32_t)(board_ticks() - start), backbone_ticks = (uint32_t)ticks;
    memcpy(out, &backbone_ticks, 4);
    memcpy(out + 4, &head_ticks, 4);
    memcpy(out + 8, logits, 4u * classes());
    return 8 + 4 * classes();
}

/* TRAIN_READ: u32 offset, u16 length of the parameter stream; reply u32 steps done, the bytes.
 * TRAIN_WRITE: u32 offset, the bytes; reply u32 steps done. */
static int32_t params(uint8_t type, uint8_t *in, uint32_t n, uint8_t *out, const char **why) {
    int reading = type == EK_TRAIN_READ;
    if (n < 4 || (reading && n != 6)) {
        *why = "TRAIN_READ/WRITE takes offset and length/bytes";
        return -EK_ERR_SIZE;
    }
    uint32_t offset = u32(in), len = reading ? u16(in + 4) : n - 4, size = param_bytes();
    if (offset > size || len > size - offset || 4 + len > EK_MAX_PAYLOAD) {
        *why = "outside the head's parameters";
        return -EK_ERR_RANGE;
    }
    memcpy(out, &done, 4);
    param_copy(offset, reading ? out + 4 : in + 4, len, !reading);
    return reading ? (int32_t)(4 + len) : 4;
}

int32_t ek_train_command(uint8_t type, uint8_t seq, uint8_t *in, uint32_t n, uint8_t *out,
                         ek_backbone_fn backbone, const char **why) {
    switch (type) {
    case EK_TRAIN_CONFIG: return config(in, n, out, why);
    case EK_TRAIN_STEP: return step(seq, in, n, out, backbone, why);
    case EK_TRAIN_INFER: return infer(seq, in, n, out, backbone);
    case EK_TRAIN_READ: case EK_TRAIN_WRITE: return params(type, in, n, out, why);
    default: *why = "unknown command"; return -EK_ERR_TYPE;
    }
}
