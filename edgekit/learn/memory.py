"""Training-memory accounting: what each rule must keep alive between forward and update.

Counted from the blocks' shapes the way the rules' code holds its arrays: weights, gradients
and optimizer state (the same for every rule but LLS-M/MxM's few extra parameters), plus the
activation peak, which is where rules differ. Backprop and DFA keep every trainable block's
tape (input, output, max-pool winners) until the output error exists; backprop also carries
an error buffer back through the blocks. Local rules (LLS, FF) keep one block's tape at a time,
and LLS never holds a batch of errors (its loss is per sample, made as the backward consumes
it).
``tests/test_learn.py`` checks the activation peak against tracemalloc on real steps.
"""

from __future__ import annotations

import math
from typing import Any

from edgekit.learn.blocks import Block, Unit, dense_layers, keeps_pre_pool
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


def activation_peak(blocks: list[Block], rule: str, batch: int) -> int:
    """Peak bytes of activations, tapes, error buffers and scratch during one training step,
    the input batch included (the trainer hands it over to the rule)."""
    ins = [batch * math.prod(b.in_shape) * F32 for b in blocks]
    outs = [batch * b.out_size * F32 for b in blocks]
    first = next(i for i, b in enumerate(blocks) if b.trainable)
    if rule in ("lls", "lls-m", "lls-mxm", "ff"):
        # LLS makes each sample's error as the backward consumes it and lets the input batch go
        # once the first block is done; FF holds the batch, its three label-embedded copies and
        # a batch of errors
        n = 3 if rule == "ff" else 1
        peaks = [n * (ins[i] + outs[i])
                 + (n * _tape(b, batch) + (n * outs[i] if rule == "ff" else 0)
                    + _scratch(b, False, batch) if b.trainable else 0)
                 for i, b in enumerate(blocks[:-1])]
        return max(*peaks, ins[-1] + 2 * outs[-1]) + (ins[0] if rule == "ff" else 0)
    kept = ins[0] + sum(outs[i] + _tape(b, batch) for i, b in enumerate(blocks) if i >= first)
    if rule == "dfa":
        return kept + max(outs[i] + _scratch(b, False, batch) for i, b in enumerate(blocks))
    return kept + max(outs[i] + (ins[i] if i > first else 0) + _scratch(b, i > first, batch)
                      for i, b in enumerate(blocks) if i >= first)


def training_memory(blocks: list[Block], rule: str, batch: int, optimizer_bytes: int,
                    state: RuleState) -> dict[str, Any]:
    """Bytes by kind and the total peak, for one rule at one batch size."""
    weights = sum(v.nbytes for b in dense_layers(blocks) for v in (b.weight, b.bias))
    trainable = sum(v.nbytes for b in blocks if b.trainable for v in b.params.values())
    extra = sum(v.nbytes for v in (*state.params.values(), *state.fixed.values()))
    extra_grads = sum(v.nbytes for v in state.params.values())
    activations = activation_peak(blocks, rule, batch)
    parts = {"weights": weights, "rule_arrays": extra, "gradients": trainable + extra_grads,
             "optimizer": optimizer_bytes, "activations": activations}
    return {**parts, "batch": batch, "total": sum(parts.values())}
