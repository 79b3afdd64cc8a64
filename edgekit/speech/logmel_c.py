"""The tables of the board's front-end (``firmware/ek_logmel.c``): the Hann window, the FFT's
twiddles and the mel filters (each band's run of non-zero weights), as float32 from the same
numpy functions ``frontend.features`` uses, and the C that declares them. The board then
computes in float what the host computes in float64: equal within float32 rounding.
"""

from __future__ import annotations

import numpy as np

from edgekit.speech import frontend


def tables() -> dict[str, np.ndarray]:
    """Every array ``ek_logmel_t`` points at, by field name."""
    filters = frontend._mel_filters()  # (bins, mels)
    first, count, at, weights = [], [], [], []
    for m in range(frontend.MELS):
        nonzero = np.flatnonzero(filters[:, m])
        lo, hi = int(nonzero[0]), int(nonzero[-1]) + 1
        first.append(lo)
        count.append(hi - lo)
        at.append(len(weights))
        weights.extend(filters[lo:hi, m])
    k = np.arange(frontend.N_FFT // 2)
    twiddle = np.stack([np.cos(-2 * np.pi * k / frontend.N_FFT),
                        np.sin(-2 * np.pi * k / frontend.N_FFT)], 1).reshape(-1)
    return {"hann": np.float32(frontend._hann()), "twiddle": np.float32(twiddle),
            "first": np.uint16(first), "count": np.uint16(count), "at": np.uint16(at),
            "weights": np.float32(weights)}


def declarations(name: str = "logmel") -> list[str]:
    """C declaring the tables and the ``ek_logmel_t`` ``name`` that points at them."""
    from edgekit.converters.to_c import _c_array

    types = {np.float32: "float", np.uint16: "uint16_t"}
    out = [_c_array(types[a.dtype.type], f"{name}_{field}", a) for field, a in tables().items()]
    fields = ", ".join(f".{f} = {name}_{f}" for f in tables())
    out.append(f"static const ek_logmel_t {name} = {{.window = {frontend.WINDOW}, "
               f".hop = {frontend.HOP}, .mels = {frontend.MELS}, .frames = {frontend.FRAMES}, "
               f"{fields}, .floor = 1e-6f, .scale = {1 / frontend.SCALE!r}f}};")
    return out
