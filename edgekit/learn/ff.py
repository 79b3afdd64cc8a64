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

``label="channels"`` is the channel-wise competitive variant (Papachristodoulou et al., AAAI
2024): no label in the input and no negative data; a block's channels are split among the
classes (channel c speaks for class ``c % classes``), each class's goodness is the mean square
of its channels, and the loss is cross-entropy over the class goodnesses; the classifier then
reads features trained on the very inputs the Graph sees, and one copy of the batch runs, not
three. It is not the default. Measured on the digits, seed 0 (channels against the label in
the input): from scratch it wins on three of four networks (8x8 CNN 89.1 % against 72.4, MLP
64-128-64 89.4 against 83.6, four-layer MLP 71.9 against 70.8; 256-48-32 MLP 80.2 against
88.6), fine-tuning it loses on all three measured (four-layer MLP 37.0 against 44.8), and both
stay far below backprop. On narrow layers each class owns 3-4 units; pushing the other classes'
units to zero kills about 40 % of them (four-layer MLP), and each deeper layer passes on less
than it receives (goodness accuracy 88 % after the first block, 59 % after the fourth).
"""

from __future__ import annotations

import numpy as np

from edgekit.learn import kernels as K
from edgekit.learn.blocks import Block, backward, forward
from edgekit.learn.dual import kept
from edgekit.learn.losses import cross_entropy
from edgekit.learn.state import RuleState

LABELS = ("channels", "input")


def setup(blocks: list[Block], classes: int, rng: np.random.Generator, theta: float = 1.0,
          greedy: bool = False, label: str = "input") -> RuleState:
    if label not in LABELS:
        raise TypeError(f"label must be one of {', '.join(LABELS)}, got {label!r}")
    return RuleState({"theta": theta, "greedy": greedy, "classes": classes, "label": label})


def groups(block: Block, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Which class each of the block's output features speaks for, and each class's feature
    count: channel c for class ``c % classes`` (a conv's every position of the channel), or,
    with fewer channels than classes, feature f for ``f % classes``."""
    channels = block.out_shape[0] if len(block.out_shape) == 3 else block.out_size
    per = block.out_size // channels
    group = (np.arange(block.out_size) // per if channels >= classes
             else np.arange(block.out_size)) % classes
    return group.astype(np.int64), np.bincount(group, minlength=classes).astype(np.float64)


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
    embedded = cfg["label"] == "input"
    if embedded:
        wrong = (y + rng.integers(1, classes, batch)) % classes
        h = np.concatenate([embed(x, y, classes), embed(x, wrong, classes), x])
    else:
        h = x
    hidden = blocks[:-1]
    active = min(int(phase * len(hidden)), len(hidden) - 1) if cfg["greedy"] else None
    total = 0.0
    for i, block in enumerate(hidden):
        train = block.trainable and active in (None, i)
        h, tape = forward(block, h, keep=train)
        tape = kept(tape, cfg.get("dual", False), outputs=False)
        if train:
            flat = h.reshape(len(h), -1)
            dh = np.zeros_like(flat)
            if embedded:
                total += K.goodness_loss(flat[:2 * batch], cfg["theta"], dh[:2 * batch])
            else:
                total += K.group_goodness_loss(flat, y, *groups(block, classes), dh)
            backward(block, tape, dh, need_dx=False)
            tape = flat = dh = None  # the block is done: nothing of it outlives this point
    logits, tape = forward(blocks[-1], h[2 * batch:] if embedded else h)
    loss, error = cross_entropy(logits, y)
    backward(blocks[-1], tape, error, need_dx=False)
    return (loss if np.isfinite(total) else total), logits


def predict(blocks: list[Block], x: np.ndarray, classes: int,
            label: str = "input") -> np.ndarray:
    """Goodness summed over the hidden blocks, ``(batch, classes)``: each class's channels'
    (``label="channels"``), or the whole block's for each embedded label in turn."""
    scores = np.zeros((len(x), classes))
    if label == "channels":
        h = x
        for block in blocks[:-1]:
            h, _ = forward(block, h, keep=False)
            K.group_goodness(h.reshape(len(x), -1), *groups(block, classes), scores)
        return scores
    for k in range(classes):
        h = embed(x, np.full(len(x), k), classes)
        column = np.zeros(len(x))
        for block in blocks[:-1]:
            h, _ = forward(block, h, keep=False)
            K.goodness(h.reshape(len(x), -1), column)
        scores[:, k] = column
    return scores
