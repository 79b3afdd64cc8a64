"""Direct feedback alignment (Nøkland 2016): the output error reaches every hidden block
through its own fixed random matrix, so no weights are transported and no error travels back
through the layers; the classifier gets its true gradient.

The random projection lands on each block's *output* and passes through the block's own pool
and activation derivative, which for a block without a pool is Nøkland's
``delta_l = (B_l e) * f'(a_l)``. The error needs the full forward pass first, so every trainable
block's tape stays alive until the output is known (as in backprop), but no gradient buffer
crosses blocks.
"""

from __future__ import annotations

import numpy as np

from edgekit.learn.blocks import Block, backward, forward
from edgekit.learn.losses import cross_entropy
from edgekit.learn.state import RuleState


def setup(blocks: list[Block], classes: int, rng: np.random.Generator) -> RuleState:
    """One fixed ``(classes, width)`` matrix per hidden block, U[-1, 1) / sqrt(width)."""
    fixed = {f"dfa.B/{b.name}": (rng.uniform(-1, 1, (classes, b.out_size))
                                 / np.sqrt(b.out_size)).astype(np.float32)
             for b in blocks[:-1] if b.trainable}
    return RuleState({}, fixed=fixed)


def feedback(error: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The hidden block's error signal: the output error projected by its fixed matrix."""
    return error @ matrix


def step(blocks: list[Block], state: RuleState, x: np.ndarray, y: np.ndarray,
         phase: float, rng: np.random.Generator) -> tuple[float, np.ndarray]:
    """One update's gradients (into the blocks' and state's grads): (loss, logits)."""
    tapes = []
    for block in blocks:
        x, tape = forward(block, x, keep=block.trainable)
        tapes.append(tape)
    loss, error = cross_entropy(x, y)
    backward(blocks[-1], tapes[-1], error, need_dx=False)
    for block, tape in zip(blocks[:-1], tapes[:-1]):
        if block.trainable:
            backward(block, tape, feedback(error, state.fixed[f"dfa.B/{block.name}"]), False)
    return loss, x
