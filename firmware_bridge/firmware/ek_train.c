/* The head's training kernels (ek_train.h): float only, no board or model, so a host compiler
 * builds this file as it is for the tests' twin of the board. Sums run in the host learner's
 * order where it has one (the weight gradients over the mini-batch, the input gradients over
 * the outputs); -ffp-contract=off keeps every product and sum a separate rounding, as numba's. */
#include <math.h>
#include <string.h>

#include "ek_train.h"

void ek_head_features(const ek_head_t *h, const int8_t *q) {
    for (uint32_t i = 0; i < h->layers[0].in; i++)
        h->x[i] = (float)((int32_t)q[i] - h->zero_point) * h->scale;
}

static float activate(float v, uint8_t act, float alpha) {
    if (act == 1) return v > 0.0f ? v : 0.0f;
    if (act == 2) return v > 0.0f ? (v < 6.0f ? v : 6.0f) : 0.0f;
    if (act == 3) return v > 0.0f ? v : v * alpha;
    return v;
}

/* The derivative read from the activation's output (edgekit.learn.kernels.act_grad). */
static float derivative(float y, uint8_t act, float alpha) {
    if (act == 1) return y > 0.0f ? 1.0f : 0.0f;
    if (act == 2) return y > 0.0f && y < 6.0f ? 1.0f : 0.0f;
    if (act == 3) return y > 0.0f ? 1.0f : alpha;
    return 1.0f;
}

const float *ek_head_forward(const ek_head_t *h) {
    const float *x = h->x;
    for (uint16_t l = 0; l < h->n_layers; l++) {
        const ek_dense_t *d = &h->layers[l];
        for (uint32_t j = 0; j < d->out; j++) {
            const float *w = d->w + j * d->in;
            float s = 0.0f;
            for (uint32_t k = 0; k < d->in; k++) s += x[k] * w[k];
            d->y[j] = activate(s + d->b[j], d->act, d->alpha);
        }
        x = d->y;
    }
    return x;
}

float ek_softmax_xent(const float *logits, uint16_t classes, uint16_t label, uint16_t count,
                      float *dlogits) {
    float peak = logits[0], total = 0.0f;
    for (uint16_t k = 1; k < classes; k++) peak = logits[k] > peak ? logits[k] : peak;
    for (uint16_t k = 0; k < classes; k++) total += expf(logits[k] - peak);
    for (uint16_t k = 0; k < classes; k++) {
        float p = expf(logits[k] - peak) / total;
        dlogits[k] = (p - (k == label ? 1.0f : 0.0f)) / (float)count;
    }
    return logf(total) + peak - logits[label];
}

void ek_head_backward(const ek_head_t *h) {
    float *dy = h->dy, *dx = h->dz;
    for (int32_t l = h->n_layers - 1; l >= 0; l--) {
        const ek_dense_t *d = &h->layers[l];
        const float *x = l ? h->layers[l - 1].y : h->x;
        for (uint32_t j = 0; j < d->out; j++) dy[j] *= derivative(d->y[j], d->act, d->alpha);
        for (uint32_t j = 0; j < d->out; j++) {
            float g = dy[j], *gw = d->gw + j * d->in;
            if (g != 0.0f)
                for (uint32_t k = 0; k < d->in; k++) gw[k] += g * x[k];
            d->gb[j] += g;
        }
        if (l == 0) break;
        memset(dx, 0, d->in * sizeof *dx);
        for (uint32_t j = 0; j < d->out; j++) {
            const float g = dy[j], *w = d->w + j * d->in;
            if (g != 0.0f)
                for (uint32_t k = 0; k < d->in; k++) dx[k] += g * w[k];
        }
        float *t = dy;
        dy = dx;
        dx = t;
    }
}

void ek_head_zero_grads(const ek_head_t *h) {
    for (uint16_t l = 0; l < h->n_layers; l++) {
        const ek_dense_t *d = &h->layers[l];
        memset(d->gw, 0, (uint32_t)d->out * d->in * sizeof *d->gw);
        memset(d->gb, 0, d->out * sizeof *d->gb);
    }
}

static void sgd(float *p, const float *g, uint32_t n, float lr, float wd) {
    for (uint32_t i = 0; i < n; i++) p[i] -= lr * (g[i] + wd * p[i]);
}

/* AdamW as torch (and edgekit.learn.kernels.adam): bias-corrected moments, decoupled decay. */
static void adam(float *p, const float *g, float *m, float *v, uint32_t n, float lr,
                 const ek_optim_t *o, float c1, float c2) {
    for (uint32_t i = 0; i < n; i++) {
        m[i] = o->beta1 * m[i] + o->one_minus_beta1 * g[i];
        v[i] = o->beta2 * v[i] + o->one_minus_beta2 * g[i] * g[i];
        p[i] -= lr * (o->weight_decay * p[i] + (m[i] / c1) / (sqrtf(v[i]) / c2 + o->eps));
    }
}

void ek_head_update(const ek_head_t *h, ek_optim_t *opt, float lr) {
    opt->c1 = opt->beta1 * opt->c1 + opt->one_minus_beta1;
    opt->c2_squared = opt->beta2 * opt->c2_squared + opt->one_minus_beta2;
    float c1 = opt->c1, c2 = sqrtf(opt->c2_squared);
    for (uint16_t l = 0; l < h->n_layers; l++) {
        const ek_dense_t *d = &h->layers[l];
        uint32_t n = (uint32_t)d->out * d->in;
        if (opt->adam) {
            adam(d->w, d->gw, d->mw, d->vw, n, lr, opt, c1, c2);
            adam(d->b, d->gb, d->mb, d->vb, d->out, lr, opt, c1, c2);
        } else {
            sgd(d->w, d->gw, n, lr, opt->weight_decay);
            sgd(d->b, d->gb, d->out, lr, opt->weight_decay);
        }
    }
}
