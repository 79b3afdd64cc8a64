"""Dual activation precision (after DIVISION, Wang et al. 2022): the forward pass computes in
float32, and what a block's tape keeps for the backward pass is a low-precision copy.

A kept tensor becomes 8-bit codes with one range per channel and sample (per sample for a
vector): ``v ~= lo + code * step``, ``step = (max - min) / 255``. Exact zeros stay exact when
the range starts at zero (a ReLU's output), so the activation derivative read from the output
is exact where it matters most. DIVISION keeps a float low-frequency part beside the
low-precision residual; at 8 bits with a range per channel the copy alone is within the
accuracy budget (``benchmarks/learn_dual.py``), so edgekit keeps the one copy. The backward
pass reads one sample of a conv block's tape at a time (``Packed[n]``), and of a linear
block's input (its output whole), so float32 copies exist for one block at a time.

Tensors that are views of one another are packed once: inside a tape by their memory, across
blocks by the rule handing the previous block's packed output on (``pack_tape(tape, x=...)``).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from edgekit.learn import kernels as K


@dataclasses.dataclass
class Packed:
    """A float32 array of ``shape`` kept as uint8 codes ``(batch, rows, cols)`` and per-row
    float32 ``lo`` and ``step`` (``(batch, rows)``)."""

    codes: np.ndarray
    lo: np.ndarray
    step: np.ndarray
    shape: tuple[int, ...]

    def __getitem__(self, n: int) -> np.ndarray:
        """Sample ``n`` back in float32."""
        out = np.empty(self.codes.shape[1:], np.float32)
        K.unpack_rows(self.codes[n], self.lo[n], self.step[n], out)
        return out.reshape(self.shape[1:])

    def full(self) -> np.ndarray:
        out = np.empty(self.codes.shape, np.float32)
        rows = self.codes.shape[0] * self.codes.shape[1]
        K.unpack_rows(self.codes.reshape(rows, -1), self.lo.reshape(-1), self.step.reshape(-1),
                      out.reshape(rows, -1))
        return out.reshape(self.shape)

    def reshape(self, *shape: int) -> Packed:
        return dataclasses.replace(self, shape=tuple(shape))

    @property
    def nbytes(self) -> int:
        return self.codes.nbytes + self.lo.nbytes + self.step.nbytes


def pack(a: np.ndarray) -> Packed:
    """The 8-bit copy of ``a`` (batch first, float32, contiguous): a range per channel of a
    ``(N, C, H, W)`` map, per sample otherwise."""
    batch = a.shape[0]
    rows = a.shape[1] if a.ndim == 4 else 1
    codes = np.empty((batch, rows, a.size // (batch * rows)), np.uint8)
    lo, step = np.empty((batch, rows), np.float32), np.empty((batch, rows), np.float32)
    K.pack_rows(a.reshape(batch * rows, -1), codes.reshape(batch * rows, -1), lo.reshape(-1),
                step.reshape(-1))
    return Packed(codes, lo, step, a.shape)


def packed_bytes(shape: tuple[int, ...], batch: int) -> int:
    """Bytes of ``pack`` on a batch of per-sample ``shape``: a code per value, 8 per row."""
    rows = shape[0] if len(shape) == 3 else 1
    return batch * (math.prod(shape) + 8 * rows)


def pack_tape(tape, x: Packed | None = None, outputs: bool = True):
    """The tape with its arrays packed (a unit's inner tapes too; the max-pool winners are
    uint8 already); ``x``: the input's packed copy when the caller has it (the previous
    block's packed output). ``outputs=False`` packs the input only (a local rule reads the
    output in float right away). An array seen twice (views: an inner layer's output is the
    next one's input) is packed once; every array is alive during the call, so an address
    names one array."""
    memo: dict = {}

    def one(a):
        if a is None:
            return None
        key = (a.__array_interface__["data"][0], a.nbytes)
        if key not in memo:
            memo[key] = pack(a)
        return memo[key].reshape(*a.shape)

    if x is not None:
        memo[tape.x.__array_interface__["data"][0], tape.x.nbytes] = x
    if not outputs:
        return dataclasses.replace(tape, x=one(tape.x))
    inner = None if tape.inner is None else [
        dataclasses.replace(t, x=one(t.x), y=one(t.y), a=one(t.a)) for t in tape.inner]
    return dataclasses.replace(tape, x=one(tape.x), y=one(tape.y), a=one(tape.a), inner=inner)


def kept(tape, on: bool, x: Packed | None = None, outputs: bool = True):
    """What a rule keeps of a block's tape: the tape, or with dual precision ``on`` its packed
    copy (``pack_tape``)."""
    return pack_tape(tape, x, outputs) if on and tape is not None else tape
