"""LLS, learning with local learning signals (Apolinario et al.; code ``mapolinario94/LLS-DNN``).

Each hidden block trains on its own loss the moment its forward pass is done: its output is
average-pooled (conv: adaptive p x p per channel; linear: adaptive to p*p features), L2
normalised, projected on fixed class bases ``B[k, t] = sin(f_k t)`` (``f = linspace(50, 512,
classes)``, or their sign, the square wave), and scored with cross-entropy at temperature T.
LLS-M scales the class scores by a learned vector m, LLS-MxM mixes them with a learned matrix M
(both initialised 0.01 N(0, 1), as in the reference code). The classifier trains on
cross-entropy. No error crosses blocks, so a block's tape dies before the next block runs: the
training memory is one block's, not the network's.
"""

from __future__ import annotations

import numpy as np

from edgekit.learn import kernels as K
from edgekit.learn.blocks import Block, backward, forward
from edgekit.learn.losses import cross_entropy
from edgekit.learn.state import RuleState

MODES = ("plain", "m", "mxm")


def basis(classes: int, width: int, waveform: str) -> np.ndarray:
    """The fixed ``(classes, width)`` class bases: sine, or its sign (square)."""
    freq = np.linspace(50, 512, classes)[:, None]
    b = np.sin(freq * np.arange(width)[None, :])
    return (np.sign(b) if waveform == "square" else b).astype(np.float32)


def latent_shape(block: Block, pool: int) -> tuple[int, int, int]:
    """(planes, P, Q) the block output is pooled to: p x p per channel, or p*p features."""
    if len(block.out_shape) == 3:
        return block.out_shape[0], min(pool, block.out_shape[1]), min(pool, block.out_shape[2])
    return 1, 1, min(pool * pool, block.out_size)


def setup(blocks: list[Block], classes: int, rng: np.random.Generator, mode: str = "plain",
          temperature: float = 0.5, pool: int = 4, waveform: str = "square") -> RuleState:
    state = RuleState({"mode": mode, "temperature": temperature, "pool": pool,
                       "waveform": waveform})
    for b in blocks[:-1]:
        if not b.trainable:
            continue
        state.fixed[f"lls.B/{b.name}"] = basis(classes, int(np.prod(latent_shape(b, pool))),
                                               waveform)
        if mode != "plain":
            shape = (classes,) if mode == "m" else (classes, classes)
            state.params[f"lls.{mode}/{b.name}"] = (0.01 * rng.standard_normal(shape)).astype(
                np.float32)
    return state


def local_loss(h: np.ndarray, labels: np.ndarray, bases: np.ndarray, latent: tuple,
               temperature: float, modulation: np.ndarray | None
               ) -> tuple[float, np.ndarray, np.ndarray | None]:
    """LLS's loss for one block's output ``h`` (batch first), dL/dh and dL/d modulation.

    ``modulation`` is None (LLS), a vector m (LLS-M: scores * m) or a matrix M (LLS-MxM:
    scores @ M)."""
    batch = h.shape[0]
    planes, p, q = latent
    spatial = h.reshape(batch * planes, -1, h.shape[-1]) if h.ndim == 4 else h.reshape(
        batch, 1, -1)
    pooled = np.empty((spatial.shape[0], p, q), np.float32)
    K.adaptive_avgpool(spatial, pooled)
    lat = pooled.reshape(batch, -1)
    unit, norms = np.empty_like(lat), np.empty(batch, np.float32)
    K.l2_normalize(lat, unit, norms)
    scores = unit @ bases.T
    logits = scores if modulation is None else (
        scores * modulation if modulation.ndim == 1 else scores @ modulation)
    loss, dlogits = cross_entropy(logits, labels, 1.0 / temperature)
    dmod = None
    if modulation is not None and modulation.ndim == 1:
        dmod, dscores = (dlogits * scores).sum(0), dlogits * modulation
    elif modulation is not None:
        dmod, dscores = scores.T @ dlogits, dlogits @ modulation.T
    else:
        dscores = dlogits
    dlat = np.empty_like(lat)
    K.l2_normalize_backward(unit, norms, (dscores @ bases).astype(np.float32), dlat)
    dh = np.empty(spatial.shape, np.float32)
    K.adaptive_avgpool_backward(dlat.reshape(pooled.shape), dh)
    return loss, dh.reshape(h.shape), dmod


def step(blocks: list[Block], state: RuleState, x: np.ndarray, y: np.ndarray,
         phase: float, rng: np.random.Generator) -> tuple[float, np.ndarray]:
    """One update's gradients (into the blocks' and state's grads): (loss, logits)."""
    cfg = state.config
    total = 0.0
    for block in blocks[:-1]:
        x, tape = forward(block, x, keep=block.trainable)
        if block.trainable:
            name = f"lls.{cfg['mode']}/{block.name}"
            loss, dh, dmod = local_loss(x, y, state.fixed[f"lls.B/{block.name}"],
                                        latent_shape(block, cfg["pool"]), cfg["temperature"],
                                        state.params.get(name))
            backward(block, tape, dh, need_dx=False)
            tape = None  # the block is done: its tape dies before the next block runs
            if dmod is not None:
                state.grads[name] += dmod
            total += loss
    logits, tape = forward(blocks[-1], x)
    loss, error = cross_entropy(logits, y)
    backward(blocks[-1], tape, error, need_dx=False)
    return (loss if np.isfinite(total) else total), logits
