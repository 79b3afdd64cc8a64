/* The speech front-end in float (ek_logmel.h). */
#include <math.h>

#include "ek_logmel.h"

/* In-place radix-2 FFT of EK_LOGMEL_FFT complex values (re, im interleaved). */
static void fft(float *x, const float *twiddle) {
    const uint32_t n = EK_LOGMEL_FFT;
    for (uint32_t i = 1, j = 0; i < n; i++) {  /* bit-reversed order */
        uint32_t bit = n >> 1;
        for (; j & bit; bit >>= 1) j ^= bit;
        j |= bit;
        if (i < j) {
            float re = x[2 * i], im = x[2 * i + 1];
            x[2 * i] = x[2 * j]; x[2 * i + 1] = x[2 * j + 1];
            x[2 * j] = re; x[2 * j + 1] = im;
        }
    }
    for (uint32_t len = 2; len <= n; len <<= 1) {
        uint32_t stride = n / len;
        for (uint32_t s = 0; s < n; s += len) {
            for (uint32_t k = 0; k < len / 2; k++) {
                float wr = twiddle[2 * k * stride], wi = twiddle[2 * k * stride + 1];
                float *a = x + 2 * (s + k), *b = x + 2 * (s + k + len / 2);
                float tr = b[0] * wr - b[1] * wi, ti = b[0] * wi + b[1] * wr;
                b[0] = a[0] - tr; b[1] = a[1] - ti;
                a[0] += tr; a[1] += ti;
            }
        }
    }
}

uint32_t ek_logmel(const ek_logmel_t *p, const int16_t *pcm, uint32_t n, float *out,
                   float *work) {
    uint32_t frames = n < p->window ? 1 : 1 + (n - p->window) / p->hop;
    if (frames > p->frames) frames = p->frames;
    for (uint32_t t = 0; t < frames; t++) {
        for (uint32_t i = 0; i < EK_LOGMEL_FFT; i++) {
            uint32_t at = t * p->hop + i;
            work[2 * i] = i < p->window && at < n ? pcm[at] / 32768.0f * p->hann[i] : 0.0f;
            work[2 * i + 1] = 0.0f;
        }
        fft(work, p->twiddle);
        for (uint32_t m = 0; m < p->mels; m++) {
            float sum = 0.0f;
            const float *w = p->weights + p->at[m];
            for (uint32_t b = 0; b < p->count[m]; b++) {
                const float *c = work + 2 * (p->first[m] + b);
                sum += (c[0] * c[0] + c[1] * c[1]) * w[b];
            }
            out[m * p->frames + t] = logf(sum + p->floor);
        }
    }
    for (uint32_t m = 0; m < p->mels; m++) {
        float *row = out + m * p->frames, mean = 0.0f;
        for (uint32_t t = 0; t < frames; t++) mean += row[t];
        mean /= (float)frames;
        for (uint32_t t = 0; t < p->frames; t++) row[t] = t < frames ? (row[t] - mean) * p->scale : 0.0f;
    }
    return frames;
}
