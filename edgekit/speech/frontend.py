"""The speech front-end: 16 kHz mono WAV in, normalized log-mel features out, in numpy.

The one function ``features`` runs in training, in evaluation and on the deploying host, so
the model sees the same numbers everywhere. Frames are 25 ms Hann windows every 10 ms; 40
mel bands (HTK scale, 20 Hz to 7.6 kHz) of the 512-point power spectrum, ``log(mel + 1e-6)``,
each band's mean over the utterance subtracted (cepstral mean normalization: a voice's or a
channel's fixed colouring cancels) and divided by ``SCALE``. A Graph takes a fixed number of
frames, so the features are padded with zeros (the normalized mean) to ``FRAMES``; a longer clip
is refused.
"""

from __future__ import annotations

import functools
import wave
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError

SAMPLE_RATE = 16_000
WINDOW = 400  # 25 ms
HOP = 160  # 10 ms
N_FFT = 512
MELS = 40
FRAMES = 256  # the model's window: 2.56 s
MAX_SAMPLES = WINDOW + (FRAMES - 1) * HOP
SCALE = 4.0  # about the normalized log-mels' standard deviation on the corpus


def read_wav(path: str | Path) -> np.ndarray:
    """The samples of a 16 kHz mono 16-bit PCM WAV file as float32 in [-1, 1]."""
    try:
        with wave.open(str(path), "rb") as w:
            rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
            data = w.readframes(w.getnframes())
    except (OSError, EOFError, wave.Error) as err:
        raise EdgekitError(f"{path}: not a readable WAV file ({err})") from None
    if (rate, channels, width) != (SAMPLE_RATE, 1, 2):
        raise EdgekitError(f"{path}: {rate} Hz, {channels} channel(s), {8 * width}-bit; "
                           "edgekit.speech reads 16 kHz mono 16-bit WAV (convert with "
                           f"`sox {path} -r 16000 -c 1 -b 16 out.wav`)")
    return (np.frombuffer(data, "<i2") / 32768.0).astype(np.float32)


def write_wav(path: str | Path, audio: np.ndarray) -> Path:
    """``audio`` (float in [-1, 1]) as a 16 kHz mono 16-bit WAV file."""
    pcm = np.clip(np.round(np.asarray(audio, np.float64) * 32768.0), -32768, 32767)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.astype("<i2").tobytes())
    return Path(path)


def features(audio: np.ndarray) -> np.ndarray:
    """Normalized log-mels of one clip, (MELS, FRAMES) float32: a model's input row."""
    audio = np.asarray(audio, np.float64).reshape(-1)
    if len(audio) > MAX_SAMPLES:
        raise EdgekitError(f"a {len(audio) / SAMPLE_RATE:.2f} s clip is longer than the "
                           f"model's {MAX_SAMPLES / SAMPLE_RATE:.2f} s window")
    if len(audio) < WINDOW:
        audio = np.pad(audio, (0, WINDOW - len(audio)))
    n = 1 + (len(audio) - WINDOW) // HOP
    frames = np.lib.stride_tricks.sliding_window_view(audio, WINDOW)[::HOP][:n]
    power = np.abs(np.fft.rfft(frames * _hann(), N_FFT)) ** 2
    logmel = np.log(power @ _mel_filters() + 1e-6)
    logmel = (logmel - logmel.mean(axis=0)) / SCALE
    out = np.zeros((MELS, FRAMES), np.float32)
    out[:, :n] = logmel.T
    return out


def batch(clips: list[np.ndarray]) -> np.ndarray:
    """Features of many clips, (N, MELS, FRAMES)."""
    return np.stack([features(a) for a in clips])


@functools.cache
def _hann() -> np.ndarray:
    return np.hanning(WINDOW + 1)[:WINDOW]  # periodic


@functools.cache
def _mel_filters() -> np.ndarray:
    """(N_FFT // 2 + 1, MELS) triangular filters, equally spaced on the HTK mel scale."""
    def mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def hz(m):
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    edges = hz(np.linspace(mel(20.0), mel(7600.0), MELS + 2))
    bins = np.fft.rfftfreq(N_FFT, 1.0 / SAMPLE_RATE)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    tri = np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid))
    return np.maximum(tri, 0.0).T
