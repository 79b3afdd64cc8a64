/* The speech front-end on the board (issue 13): 16-bit PCM in, normalized log-mels out, in
 * float, as edgekit.speech.frontend.features computes them in numpy (25 ms Hann frames every
 * 10 ms, 512-point power spectrum, mel filterbank, log(mel + floor), each band's mean over the
 * clip subtracted, times scale, zero past the clip's frames). The window, the filters and the
 * FFT's twiddles come from the host (edgekit/speech/logmel_c.py), so the numbers are numpy's. */
#ifndef EK_LOGMEL_H
#define EK_LOGMEL_H
#include <stdint.h>

#define EK_LOGMEL_FFT 512

typedef struct {
    uint16_t window, hop, mels, frames;
    const float *hann;          /* window weights */
    const float *twiddle;       /* cos, sin of -2 pi k / FFT for k < FFT / 2, interleaved */
    const uint16_t *first;      /* per mel band: its first FFT bin */
    const uint16_t *count;      /* and how many bins it weighs */
    const uint16_t *at;         /* where its weights start in weights */
    const float *weights;
    float floor, scale;
} ek_logmel_t;

/* The (mels, frames) features of the n samples at pcm into out (row-major); work holds
 * 2 * EK_LOGMEL_FFT floats. Returns the clip's frames (the rest of each row is zero). */
uint32_t ek_logmel(const ek_logmel_t *p, const int16_t *pcm, uint32_t n, float *out,
                   float *work);
#endif
