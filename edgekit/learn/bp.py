"""Backpropagation in numba: the baseline every local rule is measured against.

Every block from the first trainable one on keeps its tape until the loss is known, and the
error travels back through each block's input gradient: the memory local rules avoid.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgekit.learn.blocks import Block, backward, forward
from edgekit.learn.dual import kept
from edgekit.learn.losses import cross_entropy
from edgekit.learn.state import RuleState


def setup(blocks: list[Block], classes: int, rng: np.random.Generator) -> RuleState:
    return RuleState({})


def step(blocks: list[Block], state: RuleState, x: np.ndarray, y: np.ndarray,
         phase: float, rng: np.random.Generator | None,
         loss: Callable[[np.ndarray], tuple[float, np.ndarray]] | None = None
         ) -> tuple[float, np.ndarray]:
    """One update's gradients (into the blocks' and state's grads): (loss, logits). ``loss``
    (logits -> (value, dL/dlogits)) replaces cross-entropy on ``y``. The batch ``x`` is handed
    over: no caller keeps it, so it is freed once the first block has read it."""
    first = next(i for i, b in enumerate(blocks) if b.trainable)
    tapes, dual = [], state.config.get("dual", False)
    for i, block in enumerate(blocks):
        x, tape = forward(block, x, keep=i >= first)
        tapes.append(kept(tape, dual, tapes[-1].y if dual and i > first else None))
    value, error = loss(x) if loss else cross_entropy(x, y)
    for i in range(len(blocks) - 1, first - 1, -1):
        error = backward(blocks[i], tapes[i], error, need_dx=i > first)
        tapes[i] = None  # free the tape as soon as its block is done
    return value, x
