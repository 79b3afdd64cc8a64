"""Memory planners: place every activation buffer at an offset in one arena.

A buffer lives over an inclusive range of steps; two buffers may share bytes only when their
lifetimes do not overlap. The greedy planner's arena size is the peak activation memory that
profiles report, and the executor allocates exactly that many bytes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

ALIGNMENT = 16


class Buffer(NamedTuple):
    name: str
    nbytes: int
    first_use: int
    last_use: int

    def overlaps(self, other: Buffer) -> bool:
        return self.first_use <= other.last_use and other.first_use <= self.last_use


@dataclass(frozen=True)
class Plan:
    offsets: tuple[int, ...]  # one per buffer, in the order the buffers were given
    size: int  # arena bytes, a multiple of the alignment


def _align(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


@dataclass(frozen=True)
class Planner(ABC):
    alignment: int = ALIGNMENT

    @abstractmethod
    def plan(self, buffers: Sequence[Buffer]) -> Plan:
        """Offsets (multiples of ``alignment``) for ``buffers`` and the arena size they need."""


@dataclass(frozen=True)
class NaivePlanner(Planner):
    """Every buffer gets its own bytes: the upper bound, and what per-layer inspection needs."""

    def plan(self, buffers: Sequence[Buffer]) -> Plan:
        offsets, end = [], 0
        for buf in buffers:
            offsets.append(end)
            end = _align(end + buf.nbytes, self.alignment)
        return Plan(tuple(offsets), end)


@dataclass(frozen=True)
class GreedyPlanner(Planner):
    """tflite-micro's greedy planner: largest buffers first, each at the lowest offset where it
    fits between the already placed buffers whose lifetimes overlap its own."""

    def plan(self, buffers: Sequence[Buffer]) -> Plan:
        order = sorted(range(len(buffers)), key=lambda i: (-buffers[i].nbytes, i))
        offsets = [0] * len(buffers)
        placed: list[int] = []
        for i in order:
            buf = buffers[i]
            live = sorted((offsets[j], buffers[j].nbytes) for j in placed
                          if buffers[j].overlaps(buf))
            offset = 0
            for start, nbytes in live:
                if offset + buf.nbytes <= start:
                    break
                offset = max(offset, _align(start + nbytes, self.alignment))
            offsets[i] = offset
            placed.append(i)
        size = max((offsets[i] + b.nbytes for i, b in enumerate(buffers)), default=0)
        return Plan(tuple(offsets), _align(size, self.alignment))
