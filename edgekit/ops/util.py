"""numpy helpers the op modules share (references: float64 inside, one rounding to float32 at
the end)."""

from __future__ import annotations

import numpy as np

from edgekit.ops.schema import prod

FUSED = {"none": lambda y: y, "relu": lambda y: np.maximum(y, 0),
         "relu6": lambda y: np.clip(y, 0, 6)}


def finish(y: np.ndarray, activation: str = "none") -> np.ndarray:
    """``y`` through the fused activation, rounded once to float32."""
    return FUSED[activation](y).astype(np.float32)


def around_axis(a: np.ndarray, axis: int) -> np.ndarray:
    """``a`` viewed as (before axis, axis, after axis): the (outer, n, inner) layout of the
    kernels that work along one axis (softmax, log_softmax)."""
    axis %= a.ndim
    return a.reshape(prod(a.shape[:axis]), a.shape[axis], -1)


def axis_extents(shape, axis: int) -> dict[str, int]:
    """The sizes ``around_axis`` views a tensor of ``shape`` as, named as the firmware's
    structs of the along-one-axis kernels (``ek_softmax_t``, ``ek_log_softmax_t``) name them."""
    axis %= len(shape)
    return dict(outer=prod(shape[:axis]), n=shape[axis], inner=prod(shape[axis + 1:]))


def windows(x, kernel, stride, padding, dilation, fill):
    """(N, C, OH, OW, KH*KW) view of every pooling/conv window of x padded with ``fill``."""
    pt, pl, pb, pr = padding
    x = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=fill)
    (kh, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    oh = (x.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (x.shape[3] - dw * (kw - 1) - 1) // sw + 1
    taps = [x[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw]
            for i in range(kh) for j in range(kw)]
    return np.stack(taps, axis=-1)


def float_bias(ins: list[np.ndarray], channels: int) -> np.ndarray:
    """A float32 conv/linear node's bias input, or zeros when it has none (the kernels add
    one either way)."""
    return ins[2] if len(ins) > 2 else np.zeros(channels, np.float32)
