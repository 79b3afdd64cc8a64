"""The pad kernel: one sample as a 4-D array (``edgekit.ops.pad`` gives fewer axes leading
ones), padded per axis by a constant, a reflection or the edge value.

The firmware's ``ek_pad_i8`` (``firmware_bridge/firmware/ek_pad.c``) is this loop in C; numba
compiles it for float32 and int8 alike (it moves values, so int8 keeps its quantization).
"""

from __future__ import annotations

from numba import njit

CONSTANT, REFLECT, REPLICATE = 0, 1, 2  # the mode codes (EK_PAD_* in ek_pad.h)


@njit(cache=True, inline="always")
def source(i, before, size, mode):
    """The input index output index ``i`` reads along an axis, or -1 for the constant. A
    reflection never reaches past the far edge: the shape rule keeps pads below ``size``."""
    j = i - before
    if j < 0:
        return -1 if mode == CONSTANT else (-j if mode == REFLECT else 0)
    if j >= size:
        return -1 if mode == CONSTANT else (2 * (size - 1) - j if mode == REFLECT else size - 1)
    return j


@njit(cache=True)
def pad4(x, before, mode, value, out):
    """``out`` = ``x`` (4-D) padded by ``before[a]`` at the start of axis ``a`` (the rest at its
    end, as ``out``'s shape says); ``value`` fills constant padding."""
    for a in range(out.shape[0]):
        sa = source(a, before[0], x.shape[0], mode)
        for b in range(out.shape[1]):
            sb = source(b, before[1], x.shape[1], mode)
            for c in range(out.shape[2]):
                sc = source(c, before[2], x.shape[2], mode)
                if sa < 0 or sb < 0 or sc < 0:
                    out[a, b, c, :] = value
                    continue
                for d in range(out.shape[3]):
                    sd = source(d, before[3], x.shape[3], mode)
                    out[a, b, c, d] = value if sd < 0 else x[sa, sb, sc, sd]
