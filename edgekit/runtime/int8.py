"""What the int8 prepare functions of the op modules (``edgekit.ops``) share: the check that
an op moving values keeps one quantization, and aligned scratch carved into typed arrays.

The prepare functions themselves live with their ops. Everything derived from quantization
parameters is built once, in prepare, by ``edgekit.numerics.params`` (the C writer reads the same
builders), so steps only run kernels and the runtime, tflite-micro and the firmware agree bit
for bit (``docs/quantized-graph.md``).
"""

from __future__ import annotations

import math

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.graph import QuantParams

ALIGN = 16


def check_shared(op: str, quant: list[QuantParams]) -> None:
    """Ops that only move values need their inputs and output quantized alike."""
    first = (quant[0].scale, quant[0].zero_point)
    if any((q.scale, q.zero_point) != first for q in quant[1:]):
        raise EdgekitError(f"int8 {op} needs its inputs and output to share one scale and zero "
                           f"point (docs/quantized-graph.md), got {[q.to_json() for q in quant]}")


def _nbytes(shape: tuple[int, ...], dtype: type) -> int:
    return math.prod(shape) * np.dtype(dtype).itemsize


def _aligned(nbytes: int) -> int:
    return -(-nbytes // ALIGN) * ALIGN


def carve(scratch: np.ndarray, *parts: tuple[tuple[int, ...], type]) -> list[np.ndarray]:
    """Consecutive aligned arrays of the given shapes and dtypes in one scratch buffer (an int8
    prepare function's ``scratch``, sized by ``scratch_bytes`` of the same parts)."""
    arrays, offset = [], 0
    for shape, dtype in parts:
        arrays.append(scratch[offset:offset + _nbytes(shape, dtype)].view(dtype).reshape(shape))
        offset += _aligned(_nbytes(shape, dtype))
    return arrays


def scratch_bytes(*parts: tuple[tuple[int, ...], type]) -> int:
    return sum(_aligned(_nbytes(shape, dtype)) for shape, dtype in parts)
