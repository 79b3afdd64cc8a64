"""Forward-forward (Hinton 2022; reference ``mpezeshki/pytorch_forward_forward``).

Positive data carries its true label in the first ``classes`` input features (zeroed, then the
label's one set to the batch maximum), negative data a random wrong label. Each hidden block
raises the goodness ``mean(h^2)`` of positive data above theta and pushes negative data below
it, on its own detached input; ``greedy`` trains the hidden blocks one after another (the epoch
budget split evenly), otherwise all at once. ``predict`` infers by embedding every label in turn
and taking the one with the largest goodness summed over the hidden blocks. theta is 1 by
default: the reference's 2 suits its length-normalised layer inputs; here it left a four-layer
MLP near chance (benchmarks/learn_defaults.py chose 1 over 0.5 and 2).

The classifier, which a deployed Graph needs, trains on cross-entropy over the features of the
input as it is, which is what the Graph sees: the label features are real pixels on most data
(not MNIST's empty border; 68 % of them are nonzero on 16x16 digits), and a head trained on
them zeroed lost up to 4.5 points on the raw test images. Unlike the reference, block inputs
are not length-normalised: a deployed Graph has no such op, and training must see what the
Graph computes.
"""

from __future__ import annotations

import numpy as np

from edgekit.learn import kernels as K
from edgekit.learn.blocks import Block, backward, forward
from edgekit.learn.losses import cross_entropy
from edgekit.learn.state import RuleState


def setup(blocks: list[Block], classes: int, rng: np.random.Generator, theta: float = 1.0,
          greedy: bool = False) -> RuleState:
    return RuleState({"theta": theta, "greedy": greedy, "classes": classes})


def embed(x: np.ndarray, labels: np.ndarray, classes: int) -> np.ndarray:
    """A copy of ``x`` with the label one-hot (scaled to the batch max) in its first features."""
    out = np.array(x, np.float32).reshape(len(x), -1)
    peak = out.max()
    out[:, :classes] = 0.0
    out[np.arange(len(x)), labels] = peak
    return out.reshape(x.shape)


def step(blocks: list[Block], state: RuleState, x: np.ndarray, y: np.ndarray,
         phase: float, rng: np.random.Generator) -> tuple[float, np.ndarray]:
    """One update's gradients (into the blocks' and state's grads): (loss, logits)."""
    cfg = state.config
    classes, batch = cfg["classes"], len(y)
    wrong = (y + rng.integers(1, classes, batch)) % classes
    h = np.concatenate([embed(x, y, classes), embed(x, wrong, classes), x])
    hidden = blocks[:-1]
    active = min(int(phase * len(hidden)), len(hidden) - 1) if cfg["greedy"] else None
    total = 0.0
    for i, block in enumerate(hidden):
        train = block.trainable and active in (None, i)
        h, tape = forward(block, h, keep=train)
        if train:
            flat = h.reshape(3 * batch, -1)
            dh = np.zeros_like(flat)
            total += K.goodness_loss(flat[:2 * batch], cfg["theta"], dh[:2 * batch])
            backward(block, tape, dh, need_dx=False)
            tape = flat = dh = None  # the block is done: nothing of it outlives this point
    logits, tape = forward(blocks[-1], h[2 * batch:])
    loss, error = cross_entropy(logits, y)
    backward(blocks[-1], tape, error, need_dx=False)
    return (loss if np.isfinite(total) else total), logits


def predict(blocks: list[Block], x: np.ndarray, classes: int) -> np.ndarray:
    """Goodness summed over the hidden blocks for each embedded label: ``(batch, classes)``."""
    scores = np.zeros((classes, len(x)))
    for label in range(classes):
        h = embed(x, np.full(len(x), label), classes)
        for block in blocks[:-1]:
            h, _ = forward(block, h, keep=False)
            K.goodness(h.reshape(len(x), -1), scores[label])
    return scores.T
