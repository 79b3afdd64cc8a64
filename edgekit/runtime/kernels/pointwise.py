"""float32 kernels of the pointwise ops (``edgekit.ops.pointwise``): numba compiles an op's
float64 numpy function for one element into a numpy ufunc that writes float32, which the
runtime calls with ``out=`` on its arena views (nothing is allocated per run). ``where`` and
``erf``, which numpy has for arrays only, get their scalar twins here. The ufuncs are cached on
disk like every numba kernel.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache

import numpy as np
from numba import vectorize
from numba.extending import overload

from edgekit.ops import pointwise


@overload(pointwise.where)
def _where(cond, a, b):
    return lambda cond, a, b: a if cond else b


@overload(pointwise.erf)
def _erf(x):
    return lambda x: math.erf(x)


@cache
def ufunc(fn: Callable, n_params: int) -> np.ufunc:
    """``fn(x, *params)`` as a ufunc of float64 arguments (float32 inputs are widened as they
    are read) with a float32 result."""
    signature = f"float32({', '.join(['float64'] * (1 + n_params))})"
    return vectorize([signature], cache=True)(fn)
