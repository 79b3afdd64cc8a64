"""int8 reductions: the requantization of int32 sums that ends tflite-micro's MEAN and SUM
(``numerics.params.ReduceParams``). The sums themselves are numpy's (exact in int32, in any
order); the firmware's twin is ``ek_reduce_sum_i8``."""

from __future__ import annotations

from numba import njit

from edgekit.numerics.arith import requantize


@njit(cache=True)
def requantize_sums(sums, offset, multiplier, shift, zero_point, out):
    for i in range(sums.size):
        out[i] = requantize(sums[i] - offset, multiplier, shift, zero_point, -128, 127)
