"""Integer parameters of int8 ops, built once from the Graph's quantization parameters.

Each builder returns a frozen dataclass that every consumer reads as it is: the runtime's int8
prepare functions bind its fields to kernels, the C writer emits them as a struct, the ONNX
writer uses them where it spells the arithmetic out. Each multiplier is formed in the precision
(double or float) of the matching tflite-micro kernel, from scales rounded to float32 as a
``.tflite`` file stores them, so that all of them agree with tflite-micro bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgekit.numerics.arith import quantize_multipliers


def zero_point(q) -> int:
    """The (per-tensor) zero point of quantization parameters ``q``."""
    return int(q.zero_point[0])


def f32(x) -> np.ndarray:
    """Scales as float32 values (what a .tflite file holds), in float64 for the arithmetic."""
    return np.asarray(x, np.float32).astype(np.float64)


def _round_half_away(v: np.float32) -> int:
    return int(np.sign(v) * np.floor(np.abs(v) + np.float32(0.5)))


def activation_bounds(activation: str, q_out) -> tuple[int, int]:
    """TFLite's CalculateActivationRangeQuantized: ``zp + round(f / scale)`` in float32."""
    zp, scale = zero_point(q_out), np.float32(q_out.scale[0])
    lo = -128 if activation == "none" else max(-128, zp)
    hi = 127 if activation != "relu6" else min(127, zp + _round_half_away(np.float32(6) / scale))
    return lo, hi


@dataclass(frozen=True)
class LeakyParams:
    """int8 leaky ReLU: ``zo + x' * (m_id, s_id)`` for x' = x - zx >= 0, else with alpha's."""

    zx: int
    zo: int
    m_id: int
    s_id: int
    m_alpha: int
    s_alpha: int


def leaky_params(q_in, q_out, alpha: float) -> LeakyParams:
    """Multipliers ``s_in / s_out`` and ``alpha * s_in / s_out``, formed in float32 as
    tflite-micro's LeakyReluPrepare does."""
    s_in, s_out = np.float32(q_in.scale[0]), np.float32(q_out.scale[0])
    reals = np.array([s_in / s_out, s_in * np.float32(alpha) / s_out], np.float32)
    (m_id, m_alpha), (s_id, s_alpha) = quantize_multipliers(reals.astype(np.float64))
    return LeakyParams(zero_point(q_in), zero_point(q_out), int(m_id), int(s_id), int(m_alpha),
                       int(s_alpha))
