"""log_softmax along axis 1 of ``(outer, n, inner)`` views: float32, and int8 as tflite-micro's
LOG_SOFTMAX computes it (reference_ops::LogSoftmaxQuantized), bit for bit.

The int8 kernel is gemmlowp's fixed-point arithmetic spelled out on int64 values that stay in
int32's range: the differences to the row's max scaled to Q5.26, their exps (Q0.31, gemmlowp's
``exp_on_negative_values``) summed in Q12.19, the log of the sum (TFLite's
``log_x_for_x_greater_than_or_equal_to_1``, Q5.26), and each output ``(diff - log) / 2^22 +
127`` (TFLite's fixed output quantization: scale 1/16, zero point 127). The parameters are
``numerics.params.log_softmax_params``; the firmware's twin is ``ek_log_softmax_i8``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from edgekit.numerics.arith import (
    INT32_MAX,
    INT32_MIN,
    count_leading_zeros,
    multiply_by_quantized_multiplier,
    one_over_one_plus_x,
    rounding_divide_by_pot,
    rounding_half_sum,
    saturating_left_shift,
    srdhm,
)
from edgekit.runtime.kernels.elementwise import row_max


@njit(cache=True)
def log_softmax(x, out):
    """max-shifted, the sum of exps in float64."""
    for o in range(x.shape[0]):
        for i in range(x.shape[2]):
            peak = row_max(x, o, i)
            total = 0.0
            for a in range(x.shape[1]):
                total += np.exp(np.float64(x[o, a, i]) - peak)
            log_total = np.log(total)
            for a in range(x.shape[1]):
                out[o, a, i] = np.float64(x[o, a, i]) - peak - log_total


@njit(cache=True, inline="always")
def pot(x, exponent):
    """gemmlowp's SaturatingRoundingMultiplyByPOT: x * 2^exponent, saturating when it grows,
    rounding half away from zero when it shrinks."""
    if exponent == 0:
        return x
    if exponent < 0:
        return rounding_divide_by_pot(x, -exponent)
    return saturating_left_shift(x, exponent)


@njit(cache=True, inline="always")
def _saturate(v):
    return min(max(v, INT32_MIN), INT32_MAX)


@njit(cache=True)
def exp_on_negative_values(a, integer_bits):
    """exp(a) for a <= 0 in Q(integer_bits), as Q0.31 (gemmlowp)."""
    fractional = 31 - integer_bits
    quarter = 1 << (fractional - 2)
    a_mod = (a & (quarter - 1)) - quarter
    x = pot(a_mod, integer_bits) + (1 << 28)  # exp on [-1/4, 0): Taylor around -1/8
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    poly = pot(srdhm(pot(x4, -2) + x3, 715827883) + x2, -1)
    result = 1895147668 + srdhm(1895147668, x + poly)
    remainder = a_mod - a
    for exponent, multiplier in ((-2, 1672461947), (-1, 1302514674), (0, 790015084),
                                 (1, 290630308), (2, 39332535), (3, 720401), (4, 242)):
        if integer_bits > exponent and remainder & (1 << (fractional + exponent)):
            result = srdhm(result, multiplier)
    if integer_bits > 5 and a < -(1 << (36 - integer_bits)):
        result = 0
    if a == 0:
        result = INT32_MAX
    return result


@njit(cache=True)
def log_x_ge_1(value, input_bits, output_bits):
    """log(v) for v >= 1 in Q(input_bits), as Q(output_bits) (TFLite's
    log_x_for_x_greater_than_or_equal_to_1_impl)."""
    accum_bits = output_bits + 1
    log_2, sqrt_sqrt_half, sqrt_half = 1488522236, 1805811301, 1518500250
    alpha_n, alpha_d, alpha_i, alpha_f = 117049297, 127690142, 1057819769, 638450708
    shifted_quarter = pot(536870912, -accum_bits)
    a_headroom_plus_1 = count_leading_zeros(value)
    r_a = pot(srdhm(pot(value, a_headroom_plus_1 - 1), sqrt_half), 1)
    a_pow_2 = _saturate(pot(input_bits - a_headroom_plus_1, 31 - accum_bits) + shifted_quarter)
    z_b = srdhm(value, sqrt_half)
    b_headroom = count_leading_zeros(z_b) - 1
    r_b = pot(value, b_headroom)
    b_pow_2 = _saturate(pot(input_bits - b_headroom, 31 - accum_bits) - shifted_quarter)
    r = min(r_a, r_b)
    pow_2 = max(a_pow_2, b_pow_2)
    p = rounding_half_sum(r, sqrt_sqrt_half)
    q = 2 * (r - sqrt_sqrt_half)
    common_sq = srdhm(q, q)
    num = srdhm(q, r) + srdhm(srdhm(q, common_sq), alpha_n)
    denom_minus_one = srdhm(p, alpha_i + q + srdhm(alpha_d, common_sq)) + srdhm(alpha_f, q)
    recip = one_over_one_plus_x(denom_minus_one)
    scaled = srdhm(pow_2, log_2) + srdhm(pot(num, -accum_bits), recip)
    return pot(scaled, accum_bits - output_bits)


@njit(cache=True)
def log_softmax_i8(x, mult, left_shift, reverse_mult, reverse_shift, diff_min, out):
    """tflite-micro's int8 LOG_SOFTMAX of each row along axis 1."""
    for o in range(x.shape[0]):
        for i in range(x.shape[2]):
            peak = np.int64(-128)
            for a in range(x.shape[1]):
                peak = max(peak, np.int64(x[o, a, i]))
            total = np.int64(0)  # Q12.19
            for a in range(x.shape[1]):
                diff = np.int64(x[o, a, i]) - peak
                if diff >= diff_min:
                    scaled = multiply_by_quantized_multiplier(diff, mult, left_shift)
                    total += pot(exp_on_negative_values(scaled, 5), -12)
            log_sum = log_x_ge_1(total, 12, 5)
            bound = max(diff_min - 1, multiply_by_quantized_multiplier(
                log_sum + INT32_MIN, reverse_mult, reverse_shift))
            for a in range(x.shape[1]):
                diff = np.int64(x[o, a, i]) - peak
                if diff > bound:
                    scaled = multiply_by_quantized_multiplier(diff, mult, left_shift)
                    v = rounding_divide_by_pot(scaled - log_sum, 22) + 127
                    out[o, a, i] = min(max(v, -128), 127)
                else:
                    out[o, a, i] = -128
