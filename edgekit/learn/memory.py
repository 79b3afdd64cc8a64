"""Training-memory accounting: what each rule must keep alive between forward and update.

Counted from the blocks' shapes the way the rules' code holds its arrays: weights, gradients
and optimizer state (the same for every rule but LLS-M/MxM's few extra parameters), plus the
activation peak, which is where rules differ. Backprop and DFA keep every trainable block's
tape (input, output, max-pool winners) until the output error exists; backprop also carries
an error buffer back through the blocks. Local rules (LLS, FF) keep one block's tape at a time,
and LLS never holds a batch of errors (its loss is per sample, made as the backward consumes
it).
With dual precision (``edgekit.learn.dual``) the kept tapes count one byte per value and
eight per channel, plus the float copies the backward unpacks for one block at a time.
``tests/test_learn.py`` checks the activation peak against tracemalloc on real steps.
"""

from __future__ import annotations

import math
import tracemalloc
from typing import Any

import numpy as np

from edgekit.learn.blocks import Block, Unit, dense_layers, keeps_pre_pool
from edgekit.learn.dual import packed_bytes
from edgekit.learn.state import RuleState

F32 = 4


def _tape(b: Block | Unit, batch: int) -> int:
    """Bytes a block's tape adds beyond its input and output (winners, pre-pool maps; a unit's
    inner outputs and tapes, and the sum at its add)."""
    winners = batch * b.out_size if b.pool and b.pool.kind == "max" else 0
    pre_pool = batch * math.prod(b.z_shape) * F32 if keeps_pre_pool(b) else 0
    if isinstance(b, Unit):
        inner = b.layers() if b.shortcut is not None else b.body[:-1]
        pre_pool += sum(batch * x.out_size * F32 + _tape(x, batch) for x in inner)
    return winners + pre_pool


def _scratch(b: Block | Unit, need_dx: bool, batch: int) -> int:
    """Buffers of a block's backward: for a conv, one sample's im2row rows (and their gradient
    when the input gradient is needed; a grouped conv has none), the pre-pool map's gradient
    and the pooled gradient; for a unit, its batch of errors at the output and the add, and
    its layers' scratch with the input gradients they pass down."""
    if isinstance(b, Unit):
        errors = batch * (b.out_size + math.prod(b.z_shape)) * F32
        return errors + max(_scratch(x, True, batch) + batch * math.prod(x.in_shape) * F32
                            for x in b.layers())
    if b.op != "conv2d":
        return 0
    rows = 0 if b.groups != 1 else math.prod(b.z_shape[1:]) * math.prod(b.weight.shape[1:])
    return ((2 if need_dx else 1) * rows + math.prod(b.z_shape) + b.out_size) * F32


def activation_peak(blocks: list[Block], rule: str, batch: int, dual: bool = False,
                    copies: int = 3) -> int:
    """Peak bytes of activations, tapes, error buffers and scratch during one training step,
    the input batch included (the trainer hands it over to the rule). ``dual``: the tapes are
    kept as 8-bit copies (``edgekit.learn.dual``); ``copies``: of the batch FF runs (3 with the
    label in the input, 1 with it in the channels)."""
    ins = [batch * math.prod(b.in_shape) * F32 for b in blocks]
    outs = [batch * b.out_size * F32 for b in blocks]
    first = next(i for i, b in enumerate(blocks) if b.trainable)
    if dual:
        return _dual_peak(blocks, rule, batch, ins, outs, first, copies)
    if rule in ("lls", "lls-m", "lls-mxm", "ff"):
        # LLS makes each sample's error as the backward consumes it and lets the input batch go
        # once the first block is done; FF holds the batch, its three label-embedded copies and
        # a batch of errors
        n = copies if rule == "ff" else 1
        peaks = [n * (ins[i] + outs[i])
                 + (n * _tape(b, batch) + (n * outs[i] if rule == "ff" else 0)
                    + _scratch(b, False, batch) if b.trainable else 0)
                 for i, b in enumerate(blocks[:-1])]
        return max(*peaks, ins[-1] + 2 * outs[-1]) + (ins[0] if rule == "ff" and n > 1 else 0)
    kept = ins[0] + sum(outs[i] + _tape(b, batch) for i, b in enumerate(blocks) if i >= first)
    if rule == "dfa":
        return kept + max(outs[i] + _scratch(b, False, batch) for i, b in enumerate(blocks))
    return kept + max(outs[i] + (ins[i] if i > first else 0) + _scratch(b, i > first, batch)
                      for i, b in enumerate(blocks) if i >= first)


def _packed_tape(b: Block | Unit, batch: int) -> int:
    """``_tape`` kept as 8-bit copies: winners as they are, pre-pool maps and a unit's inner
    outputs packed."""
    winners = batch * b.out_size if b.pool and b.pool.kind == "max" else 0
    pre_pool = packed_bytes(b.z_shape, batch) if keeps_pre_pool(b) else 0
    if isinstance(b, Unit):
        inner = b.layers() if b.shortcut is not None else b.body[:-1]
        pre_pool += sum(packed_bytes(x.out_shape, batch) + _packed_tape(x, batch)
                        for x in inner)
    return winners + pre_pool


def _joins(b: Block | Unit, batch: int) -> int:
    """A residual unit's forward: the sum at its add and the branch outputs it is made from."""
    if not isinstance(b, Unit) or b.shortcut is None:
        return 0
    return 2 * batch * math.prod(b.z_shape) * F32


def _unpacked(b: Block | Unit, batch: int) -> int:
    """Float32 copies the backward makes of a packed tape: a linear layer's output whole and
    its input one sample at a time, a conv's both one sample at a time (a unit's layers one
    after another)."""
    if isinstance(b, Unit):
        return max(_unpacked(x, batch) for x in b.layers())
    outputs = b.out_size * F32 * (batch if b.op == "linear" else 1)
    return math.prod(b.in_shape) * F32 + outputs


def _dual_peak(blocks: list, rule: str, batch: int, ins: list[int], outs: list[int],
               first: int, copies: int) -> int:
    """``activation_peak`` with packed tapes: the forward peak (a block's float input, output
    and tape beside everything packed so far) or the backward's (what is packed, the error
    buffers, one block's unpacked copies and scratch), whichever is larger."""
    qin = [packed_bytes(b.in_shape, batch) for b in blocks]
    qout = [packed_bytes(b.out_shape, batch) for b in blocks]
    if rule in ("lls", "lls-m", "lls-mxm", "ff"):
        n = copies if rule == "ff" else 1
        peaks = [max(n * (ins[i] + outs[i] + _tape(b, batch)),
                     n * (qin[i] + outs[i] + _tape(b, batch)) + (n * outs[i] if rule == "ff"
                                                                 else 0)
                     + _scratch(b, False, batch) + n * _unpacked(b, batch))
                 if b.trainable else n * (ins[i] + outs[i])
                 for i, b in enumerate(blocks[:-1])]
        return max(*peaks, ins[-1] + 2 * outs[-1]) + (ins[0] if rule == "ff" and n > 1 else 0)
    kept = [qout[i] + _packed_tape(b, batch) if i >= first else 0 for i, b in enumerate(blocks)]
    forward = max(qin[first] + sum(kept[:i]) + ins[i] + outs[i] + _tape(b, batch) + kept[i]
                  + _joins(b, batch) for i, b in enumerate(blocks))
    total = qin[first] + sum(kept)
    need_dx = rule != "dfa"
    backward = max(outs[i] + (ins[i] if need_dx and i > first else 0)
                   + _scratch(b, need_dx and i > first, batch) + _unpacked(b, batch)
                   for i, b in enumerate(blocks) if i >= first)
    return max(forward, total + backward)


def training_memory(blocks: list[Block], rule: str, batch: int, optimizer_bytes: int,
                    state: RuleState, dual: bool = False) -> dict[str, Any]:
    """Bytes by kind and the total peak, for one rule at one batch size."""
    weights = sum(v.nbytes for b in dense_layers(blocks) for v in (b.weight, b.bias))
    trainable = sum(v.nbytes for b in blocks if b.trainable for v in b.params.values())
    extra = sum(v.nbytes for v in (*state.params.values(), *state.fixed.values(),
                                   *state.buffers.values()))
    extra_grads = sum(v.nbytes for v in state.params.values())
    copies = 1 if state.config.get("label") == "channels" else 3
    activations = activation_peak(blocks, rule, batch, dual, copies)
    parts = {"weights": weights, "rule_arrays": extra, "gradients": trainable + extra_grads,
             "optimizer": optimizer_bytes, "activations": activations}
    return {**parts, "batch": batch, "total": sum(parts.values())}


def measured_peak(blocks: list, rule: str, x: np.ndarray, y: np.ndarray,
                  dual: bool = False) -> tuple[int, dict[str, np.ndarray]]:
    """tracemalloc's peak over one real step handed its batch (as the trainer does; the second
    step: the first compiles), and the step's gradients: what ``activation_peak`` is checked
    against."""
    from edgekit.learn.blocks import zero_grads
    from edgekit.learn.rules import RULES

    state = RULES[rule].setup(blocks, int(y.max()) + 1, np.random.default_rng(0))
    state.config["dual"] = dual
    for _ in range(2):
        for b in blocks:
            zero_grads(b)
        state.zero_grads()
        tracemalloc.start()
        RULES[rule].step(blocks, state, x[np.arange(len(y))], y, 0.0, np.random.default_rng(0))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak, {k: v.copy() for b in blocks for k, v in b.grads.items()}
