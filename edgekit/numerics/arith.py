"""TFLite's integer requantization arithmetic, as numba functions every int8 kernel shares.

These are the exact formulas of the TFLite int8 specification (``docs/algorithms.md``,
"Integer arithmetic"): with them edgekit's runtime, the C firmware and tflite-micro produce
bit-identical outputs. The C firmware has a twin of each function, tested on the same vectors.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


def quantize_multiplier(real: float) -> tuple[int, int]:
    """Real multiplier -> (int32 m0 in [2^30, 2^31), shift) with real ~= m0 * 2^(shift - 31)."""
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    m0 = int(round(q * (1 << 31)))
    if m0 == 1 << 31:
        m0 //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return m0, shift


def quantize_multipliers(reals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``quantize_multiplier`` as int32 arrays (multipliers, shifts)."""
    pairs = [quantize_multiplier(float(r)) for r in np.ravel(reals)]
    return (np.array([p[0] for p in pairs], np.int32), np.array([p[1] for p in pairs], np.int32))


@njit(cache=True, inline="always")
def srdhm(a: np.int64, b: np.int64) -> np.int64:
    """SaturatingRoundingDoublingHighMul of two int32 values (held in int64)."""
    if a == INT32_MIN and b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    num = ab + nudge
    # C's int64 division truncates toward zero; Python's // floors.
    q = num // (1 << 31)
    if num < 0 and q * (1 << 31) != num:
        q += 1
    return q


@njit(cache=True, inline="always")
def rounding_divide_by_pot(x: np.int64, exponent: np.int64) -> np.int64:
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


@njit(cache=True, inline="always")
def multiply_by_quantized_multiplier(acc: np.int64, multiplier: np.int64,
                                     shift: np.int64) -> np.int64:
    """TFLite's MultiplyByQuantizedMultiplier: acc * m0 * 2^(shift-31), rounded as TFLite does."""
    left = shift if shift > 0 else 0
    right = -shift if shift < 0 else 0
    return rounding_divide_by_pot(srdhm(acc * (1 << left), multiplier), right)


@njit(cache=True, inline="always")
def clamp(v: np.int64, lo: np.int64, hi: np.int64) -> np.int64:
    return lo if v < lo else hi if v > hi else v


@njit(cache=True, inline="always")
def requantize(acc: np.int64, multiplier: np.int64, shift: np.int64, zero_point: np.int64,
               lo: np.int64, hi: np.int64) -> np.int64:
    """An int32 accumulator to an int8 output: rescaled, offset by the output's zero point and
    clamped to the fused activation's range ``[lo, hi]``, as every TFLite int8 kernel ends."""
    return clamp(multiply_by_quantized_multiplier(acc, multiplier, shift) + zero_point, lo, hi)


# --- TFLite's fixed-point reciprocal (int8 DIV: reference_ops::DivElementwise) ----------------

@njit(cache=True, inline="always")
def count_leading_zeros(x: np.int64) -> np.int64:
    """Leading zero bits of ``x`` as a uint32 (32 for 0)."""
    x &= 0xFFFFFFFF
    n = 32
    while x > 0:
        x >>= 1
        n -= 1
    return n


@njit(cache=True, inline="always")
def count_leading_sign_bits(x: np.int64) -> np.int64:
    """Redundant sign bits of int32 ``x`` (gcc's __builtin_clrsb; 31 for 0 and -1)."""
    return count_leading_zeros(x if x >= 0 else ~x) - 1


@njit(cache=True, inline="always")
def saturating_left_shift(x: np.int64, exponent: np.int64) -> np.int64:
    """gemmlowp's SaturatingRoundingMultiplyByPOT for a positive exponent."""
    threshold = (1 << (31 - exponent)) - 1
    if x > threshold:
        return INT32_MAX
    if x < -threshold:
        return INT32_MIN
    return x << exponent


@njit(cache=True, inline="always")
def rounding_half_sum(a: np.int64, b: np.int64) -> np.int64:
    """gemmlowp's RoundingHalfSum: (a + b + sign) / 2, C's truncating division."""
    s = a + b + (1 if a + b >= 0 else -1)
    return s // 2 if s >= 0 else -(-s // 2)


@njit(cache=True, inline="always")
def one_over_one_plus_x(a: np.int64) -> np.int64:
    """gemmlowp's one_over_one_plus_x_for_x_in_0_1: 1 / (1 + a) for Q0.31 ``a`` in [0, 1), as
    Q0.31, by three Newton-Raphson steps in Q2.29 from 48/17 - 32/17 * d."""
    half_denominator = rounding_half_sum(a, INT32_MAX)
    r = 1515870810 + srdhm(half_denominator, -1010580540)
    for _ in range(3):
        one_minus = (1 << 29) - srdhm(half_denominator, r)
        r = r + saturating_left_shift(srdhm(r, one_minus), 2)
    return saturating_left_shift(r, 1)


@njit(cache=True, inline="always")
def reciprocal(x: np.int64):
    """TFLite's GetReciprocal(x, 31): (r, shift) with 1 / x ~= r * 2^(shift - 31) for int32
    ``x >= 1``, by ``one_over_one_plus_x``."""
    headroom_plus_one = count_leading_zeros(x)
    shift = 31 - headroom_plus_one
    a = (x << headroom_plus_one) - (1 << 31)  # Q0.31: x / 2^shift - 1, in [0, 1)
    return one_over_one_plus_x(a), shift
