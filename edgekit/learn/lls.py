"""LLS, learning with local learning signals (Apolinario et al.; code ``mapolinario94/LLS-DNN``).

Each hidden block trains on its own loss the moment its forward pass is done: its output is
average-pooled (conv: adaptive p x p per channel; linear: not at all), L2 normalised,
projected on fixed class bases, and scored with cross-entropy at temperature T. The
reference's bases are waves, ``B[k, t] = sin(f_k t)`` (``f = linspace(50, 512, classes)``), or
their sign, the square wave (``waveform="sine"``/``"square"``).

edgekit's default bases (``waveform="data"``) are the classes' own directions: each class's
mean normalised latent over the training data as training starts, centred over the classes (the
common part scores every class alike), normalised and scaled to the square wave's length
sqrt(D), so T means what it means for the reference; then fixed like the waves. The loss,
its kernel and its memory are unchanged, and no parameter is added. Why: a wave basis is a
direction the block's features do not yet have. From scratch that costs epochs; fine-tuning,
it pulls a pretrained block away from what the layers after it read, and every block
relearns against a moving input (digits shifted one pixel, 5 epochs, seed 0: 82.2 % on a
four-layer MLP where backprop reaches 89.1, 46.0 % against 91.4 on a depthwise-separable
residual net, below the 82.5 % of training its classifier alone). Bases the features already
point along keep what the pretrained network separates and sharpen it: 92.5, 67.7 (and on the
8x8 CNN 96.9 against backprop's 97.5, from 89.7); from scratch too, on random features
(``benchmarks/learn_defaults.py`` has the table; ``docs/learning.md`` what else was tried).
LLS-M scales the class scores by a learned vector m, LLS-MxM mixes them with a learned matrix M
(both initialised 0.01 N(0, 1), as in the reference code). The classifier trains on
cross-entropy. No error crosses blocks, so a block's tape dies before the next block runs: the
training memory is one block's, not the network's.

A linear block's output is read whole, as the reference code does (``pooling_size`` = the
block's width): its units have no neighbourhood to average over, and pooling a 48-wide layer
to 16 features lets the loss see only 16 sums of neighbouring units, leaving the directions
within each group untrained (random features the next block and the classifier must read).
On a 256-48-32-10 MLP that pooling cost up to 8 points (seed 1: 88.6 % against 96.9 %).
"""

from __future__ import annotations

import numpy as np

from edgekit.learn import kernels as K
from edgekit.learn.blocks import Block, backward, forward
from edgekit.learn.dual import kept
from edgekit.learn.losses import cross_entropy
from edgekit.learn.state import RuleState

MODES = ("plain", "m", "mxm")
WAVEFORMS = ("data", "square", "sine")
SAMPLES = 1024  # at most this many training samples (evenly spaced) set the data bases


def basis(classes: int, width: int, waveform: str) -> np.ndarray:
    """The reference's fixed ``(classes, width)`` class bases: sine, or its sign (square)."""
    freq = np.linspace(50, 512, classes)[:, None]
    b = np.sin(freq * np.arange(width)[None, :])
    return (np.sign(b) if waveform == "square" else b).astype(np.float32)


def data_bases(blocks: list, x: np.ndarray, y: np.ndarray, classes: int,
               pool: int) -> dict[str, np.ndarray]:
    """Each trainable hidden block's class directions on (x, y) under its current weights:
    per class, the mean of the normalised latents, centred over the classes, normalised and
    scaled by sqrt(D). A class without samples, or one whose mean is the common one, keeps its
    square wave. Streams the data in batches, holding per-class sums only."""
    idx = np.unique(np.linspace(0, len(y) - 1, min(len(y), SAMPLES)).astype(np.int64))
    hidden = [b for b in blocks[:-1] if b.trainable]
    sums = {b.name: np.zeros((classes, int(np.prod(latent_shape(b, pool))))) for b in hidden}
    for first in range(0, len(idx), 64):
        part = idx[first:first + 64]
        h, labels = x[part], y[part]
        for block in blocks[:-1]:
            if not hidden:
                break
            h, _ = forward(block, h, keep=False)
            if block.trainable:
                lat = np.empty((len(h), *latent_shape(block, pool)), np.float32)
                planes = _planes(h)
                for n in range(len(h)):
                    K.adaptive_avgpool(planes[n], lat[n])
                lat = lat.reshape(len(h), -1)
                lat /= np.maximum(np.linalg.norm(lat, axis=1, keepdims=True), 1e-12)
                np.add.at(sums[block.name], labels, lat)
    counts = np.bincount(y[idx], minlength=classes)
    out = {}
    for name, total in sums.items():
        seen = counts > 0
        means = total / np.maximum(counts, 1)[:, None]
        means[seen] -= means[seen].mean(0)
        length = np.linalg.norm(means, axis=1, keepdims=True)
        wave = basis(classes, total.shape[1], "square")
        ok = seen & (length[:, 0] > 1e-6)
        out[name] = np.where(ok[:, None], means / np.maximum(length, 1e-12)
                             * np.sqrt(total.shape[1]), wave).astype(np.float32)
    return out


def _planes(h: np.ndarray) -> np.ndarray:
    """A batch of block outputs as (planes, H, W) per sample (a linear output is one row)."""
    return h.reshape(len(h), -1, *h.shape[2:]) if h.ndim == 4 else h.reshape(len(h), 1, 1, -1)


def latent_shape(block: Block, pool: int) -> tuple[int, int, int]:
    """(planes, P, Q) the block output is pooled to: p x p per channel, or a linear block's
    every feature."""
    if len(block.out_shape) == 3:
        return block.out_shape[0], min(pool, block.out_shape[1]), min(pool, block.out_shape[2])
    return 1, 1, block.out_size


def setup(blocks: list[Block], classes: int, rng: np.random.Generator, mode: str = "plain",
          temperature: float = 0.5, pool: int = 4, waveform: str = "data",
          sample: tuple[np.ndarray, np.ndarray] | None = None) -> RuleState:
    """``sample``: the training data (x, y) the ``"data"`` bases are taken from; without it
    (sizing memory before any data exists) the square wave stands in, of the same shape."""
    if waveform not in WAVEFORMS:
        raise TypeError(f"waveform must be one of {', '.join(WAVEFORMS)}, got {waveform!r}")
    state = RuleState({"mode": mode, "temperature": temperature, "pool": pool,
                       "waveform": waveform})
    taken = data_bases(blocks, *sample, classes, pool) if (
        waveform == "data" and sample is not None) else {}
    for b in blocks[:-1]:
        if not b.trainable:
            continue
        width = int(np.prod(latent_shape(b, pool)))
        state.fixed[f"lls.B/{b.name}"] = taken.get(
            b.name, basis(classes, width, "square" if waveform == "data" else waveform))
        if mode != "plain":
            shape = (classes,) if mode == "m" else (classes, classes)
            state.params[f"lls.{mode}/{b.name}"] = (0.01 * rng.standard_normal(shape)).astype(
                np.float32)
    return state


class LocalLoss:
    """One block's LLS error, computed one sample at a time (``error(n)``), so a batch of
    errors is never held; ``loss`` and the modulation gradient accumulate as samples pass."""

    def __init__(self, h: np.ndarray, labels: np.ndarray, bases: np.ndarray, latent: tuple,
                 temperature: float, modulation: np.ndarray | None, dmod: np.ndarray | None):
        self.h = _planes(h)
        self.labels, self.bases, self.inv_t = labels, bases, 1.0 / temperature
        self.mode = 0 if modulation is None else modulation.ndim
        self.mod = np.zeros((1, 1), np.float32) if modulation is None else modulation.reshape(
            -1 if self.mode == 2 else 1, bases.shape[0])
        self.dmod = np.zeros_like(self.mod) if dmod is None else dmod.reshape(self.mod.shape)
        self.lat = np.empty(latent, np.float32)
        self.du = np.empty_like(self.lat)
        self.scores = np.empty((3, bases.shape[0]), np.float32)
        self.dh = np.empty(self.h.shape[1:], np.float32)
        self.loss = 0.0

    def error(self, n: int) -> np.ndarray:
        self.loss += K.lls_sample_loss(self.h[n], self.labels[n], self.bases, self.inv_t,
                                       self.mode, self.mod, 1.0 / len(self.h), self.lat,
                                       self.du, self.scores, self.dh, self.dmod)
        return self.dh


def step(blocks: list[Block], state: RuleState, x: np.ndarray, y: np.ndarray,
         phase: float, rng: np.random.Generator) -> tuple[float, np.ndarray]:
    """One update's gradients (into the blocks' and state's grads): (loss, logits)."""
    cfg = state.config
    total = 0.0
    for block in blocks[:-1]:
        x, tape = forward(block, x, keep=block.trainable)
        tape = kept(tape, cfg.get("dual", False), outputs=False)
        if block.trainable:
            name = f"lls.{cfg['mode']}/{block.name}"
            local = LocalLoss(x, y, state.fixed[f"lls.B/{block.name}"],
                              latent_shape(block, cfg["pool"]), cfg["temperature"],
                              state.params.get(name), state.grads.get(name))
            backward(block, tape, local.error, need_dx=False)
            total += local.loss
            tape = local = None  # the block is done: nothing of it outlives this point
    logits, tape = forward(blocks[-1], x)
    loss, error = cross_entropy(logits, y)
    backward(blocks[-1], tape, error, need_dx=False)
    return (loss if np.isfinite(total) else total), logits
