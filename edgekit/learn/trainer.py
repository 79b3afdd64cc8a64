"""The trainer around the rules: epochs of shuffled mini-batches or an online stream of single
samples, a learning-rate schedule, seeds, and a checkpoint written atomically after every epoch.

Everything random is drawn from generators seeded by (seed, purpose, epoch[, batch]), and the
kernels are sequential, so the weights after epoch k depend only on the checkpoint of epoch
k - 1: a run killed at any moment and resumed from its checkpoint ends with exactly the weights
of an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.fileio import atomic_write_bytes
from edgekit.graph import Graph
from edgekit.learn.blocks import Block, dense_layers, from_graph, to_graph, zero_grads
from edgekit.learn.memory import training_memory
from edgekit.learn.norm import Norm, chain_grads, update
from edgekit.learn.optim import Optimizer
from edgekit.learn.rules import RULES, Rule
from edgekit.learn.state import RuleState
from edgekit.limits import check_npz

_SHUFFLE, _SETUP, _STEP = 0, 1, 2  # purposes, so no two draws share a stream


def mark_trainable(blocks: list[Block], layers: str | int) -> None:
    """``"all"``, ``"head"`` (the classifier only) or N (the last N layers) train."""
    if layers == "all":
        n = len(blocks)
    elif layers == "head":
        n = 1
    elif type(layers) is int and 1 <= layers <= len(blocks):
        n = layers
    else:
        raise EdgekitError(f"layers must be 'all', 'head' or 1..{len(blocks)}, got {layers!r}")
    for i, block in enumerate(blocks):
        block.trainable = i >= len(blocks) - n


def finetune(graph: Graph, x: np.ndarray, y: np.ndarray, rule: str = "lls", epochs: int = 5,
             lr: float | None = None, batch_size: int = 32, layers: str | int = "all",
             seed: int = 0,
             optimizer: str = "adam", weight_decay: float = 0.0, schedule: str = "cosine",
             online: bool = False, norm: bool = False, proximal_mu: float = 0.0,
             dual_precision: bool = False,
             checkpoint: str | Path | None = None, resume: bool = False,
             progress: Callable[[Iterable[int]], Iterable[int]] = iter,
             on_epoch: Callable[[dict[str, Any]], None] | None = None,
             **options: Any) -> tuple[Graph, dict[str, Any]]:
    """Train a float Graph's weights on (x, y) with a learning rule, on numpy and numba only.

    Returns the updated Graph (quantize and deploy it like any other) and a history: one record
    per epoch (loss, training accuracy, learning rate, seconds) and the rule's training memory.
    ``lr`` defaults to the rule's own (``RULES[rule].lr``): local losses move the weights less
    per step than the true gradient does, so one rate cannot suit every rule.
    ``online`` learns one sample at a time in the given order (a stream); ``norm`` gives every
    trainable hidden layer a running-statistics normalisation (``edgekit.learn.norm``: for
    training from scratch, folded into the weights on export); ``proximal_mu`` > 0 adds
    FedProx's pull ``mu * (w - w0)`` towards the starting weights to every trainable weight's
    gradient (a fleet client keeps near the global model); ``dual_precision`` keeps the tapes
    the backward pass reads as 8-bit copies (``edgekit.learn.dual``); ``checkpoint`` is
    rewritten atomically after every epoch and, with ``resume``, continued from. ``options``
    go to the rule (LLS: temperature, pool, waveform; FF: theta, greedy). A non-finite loss or
    weight stops training with ``EdgekitError``, leaving the last good checkpoint in place.
    """
    _check(epochs >= 1 and type(epochs) is int, f"epochs must be a positive int, got {epochs!r}")
    lr = get_rule(rule).lr if lr is None else lr
    _check(math.isfinite(lr) and lr > 0, f"lr must be a positive number, got {lr!r}")
    _check(optimizer in ("adam", "sgd"), f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    _check(schedule in ("cosine", "constant"),
           f"schedule must be 'cosine' or 'constant', got {schedule!r}")
    batch_size = 1 if online else batch_size
    _check(type(batch_size) is int and batch_size >= 1, "batch_size must be a positive int")
    _check(type(seed) is int and seed >= 0, f"seed must be an int >= 0, got {seed!r}")
    _check(checkpoint is None or Path(checkpoint).suffix != ".ekm",
           f"checkpoint {checkpoint}: a checkpoint is training state, not a model; "
           "give it another name (the default is OUT.ckpt)")
    blocks = from_graph(graph)
    x, y = _data(graph, blocks, x, y)
    learner = prepare(blocks, rule, layers, seed, Optimizer(optimizer, weight_decay), norm,
                      sample=(x, y), dual_precision=dual_precision, **options)
    params, opt = learner.params, learner.opt
    _check(math.isfinite(proximal_mu) and proximal_mu >= 0,
           f"proximal_mu must be a number >= 0, got {proximal_mu!r}")
    anchor = {k: v.copy() for k, v in params.items()} if proximal_mu else {}
    buffers = {f"norm.{k}/{b.name}": getattr(b.norm, k) for b in dense_layers(blocks) if b.norm
               for k in ("mean", "var")}
    buffers.update(learner.state.buffers)
    config = {"model": structure_id(graph), "rule": rule, "seed": seed,
              "batch_size": batch_size, "layers": layers, "online": online,
              "optimizer": optimizer, "norm": norm, "samples": len(y), "options": options,
              **({"dual_precision": True} if dual_precision else {})}
    history: list[dict[str, Any]] = []
    path = Path(checkpoint) if checkpoint else None
    if resume and path and path.exists():
        history = _load(path, config, params, buffers, opt)
    for epoch in progress(range(len(history), epochs)):
        start = time.perf_counter()
        rate = epoch_rate(lr, schedule, epoch, epochs)
        order = epoch_order(seed, epoch, len(y), online)
        total = correct = 0.0
        for b, first in enumerate(range(0, len(y), batch_size)):
            idx = order[first:first + batch_size]
            learner.zero_grads()
            # x[idx] is handed over: a local rule frees it once its first block is done
            loss, logits = learner.rule.step(blocks, learner.state, x[idx], y[idx],
                                             epoch / epochs,
                                             np.random.default_rng([seed, _STEP, epoch, b]))
            if not math.isfinite(loss):
                _diverged(f"loss became {loss} at epoch {epoch + 1}, batch {b + 1}", path)
            learner.pull(anchor, proximal_mu)
            learner.apply(rate)
            total += loss * len(idx)
            correct += int((logits.argmax(1) == y[idx]).sum())
        if not all(np.isfinite(p).all() for p in params.values()):
            _diverged(f"weights became non-finite in epoch {epoch + 1}", path)
        record = {"epoch": epoch + 1, "loss": total / len(y), "accuracy": correct / len(y),
                  "lr": rate, "seconds": time.perf_counter() - start}
        history.append(record)
        if path:
            _save(path, config, params, buffers, opt, history)
        if on_epoch:
            on_epoch(record)
    memory = training_memory(blocks, rule, batch_size, opt.state_bytes(params), learner.state,
                             dual_precision)
    out, extras = (learner.rule.export(graph, blocks, learner.state) if learner.rule.export
                   else (to_graph(graph, blocks), {}))
    return out, {"rule": rule, "epochs": history, "memory": memory, **extras}


def epoch_rate(lr: float, schedule: str, epoch: int, epochs: int) -> float:
    """The learning rate of (0-based) ``epoch``: constant, or cosine-annealed from ``lr``."""
    return lr if schedule == "constant" else lr * (1 + math.cos(math.pi * epoch / epochs)) / 2


def epoch_order(seed: int, epoch: int, n: int, online: bool) -> np.ndarray:
    """The order of the ``n`` samples in ``epoch``: as given (online), else shuffled by
    (seed, epoch). A learner elsewhere (the board, ``learn.board``) visits them so too."""
    return (np.arange(n) if online
            else np.random.default_rng([seed, _SHUFFLE, epoch]).permutation(n))


@dataclass
class Learner:
    """One training setup: the blocks, the rule and its state, what trains, the optimizer."""

    blocks: list[Block]
    rule: Rule
    state: RuleState
    params: dict[str, np.ndarray]
    opt: Optimizer

    def zero_grads(self) -> None:
        """Before a step (which the caller runs, handing the batch straight to ``rule.step``:
        a reference kept here would keep the batch alive that a local rule lets go)."""
        for block in self.blocks:
            if block.trainable:
                zero_grads(block)
        self.state.zero_grads()

    def pull(self, anchor: dict[str, np.ndarray], mu: float) -> None:
        """Add the gradient of ``mu / 2 * ||w - anchor||^2`` to each anchored weight's."""
        grads = {**{n: v for b in self.blocks for n, v in b.grads.items()}, **self.state.grads}
        for name, w0 in anchor.items():
            g = grads[name]
            g += mu * (self.params[name] - w0).reshape(g.shape)

    def apply(self, lr: float) -> None:
        """After a step: the optimizer update, through the norms, and their statistics."""
        for block in dense_layers(self.blocks):
            if block.norm:
                g = block.grads
                chain_grads(block.weight, block.bias, block.norm, g[block.weight_name],
                            g[block.bias_name], g[f"norm.gamma/{block.name}"],
                            g[f"norm.beta/{block.name}"])
        self.opt.update(self.params, {**{n: v for b in self.blocks for n, v in b.grads.items()},
                                      **self.state.grads}, lr)
        for block in dense_layers(self.blocks):
            if block.norm:
                update(block.norm)


def prepare(blocks: list[Block], rule: str, layers: str | int = "all", seed: int = 0,
            opt: Optimizer | None = None, norm: bool = False,
            sample: tuple[np.ndarray, np.ndarray] | None = None, dual_precision: bool = False,
            **options: Any) -> Learner:
    """Mark what trains, add norms, set the rule up (seeded; a rule that reads the training
    data gets ``sample``): then per batch ``zero_grads``, ``rule.step`` and ``apply``."""
    found = get_rule(rule)
    mark_trainable(blocks, layers)
    if norm:
        add_norms(blocks)
    if found.reads_data and sample is not None:
        options = {**options, "sample": sample}
    try:
        state = found.setup(blocks, blocks[-1].z_shape[0],
                                  np.random.default_rng([seed, _SETUP]), **options)
    except TypeError as err:
        raise EdgekitError(f"rule {rule!r}: {err}") from None
    state.config["dual"] = dual_precision
    params = {name: value for b in dense_layers(blocks) if b.trainable
              for name, value in b.params.items()}
    return Learner(blocks, found, state, {**params, **state.params}, opt or Optimizer())


def get_rule(name: str) -> Rule:
    if name not in RULES:
        raise EdgekitError(f"unknown rule {name!r}; rules: {', '.join(RULES)}")
    return RULES[name]


def add_norms(blocks: list[Block]) -> None:
    """A running-statistics norm on every trainable hidden block (they need a bias to fold
    into)."""
    for block in dense_layers(blocks[:-1]):
        if block.trainable:
            if not block.bias_name:
                raise EdgekitError(f"norm=True folds into biases; layer {block.name!r} has none")
            block.norm = Norm(block.z_shape[0])


def memory_for(graph: Graph, rule: str, batch_size: int = 32, layers: str | int = "all",
               optimizer: str = "adam", norm: bool = False,
               dual_precision: bool = False) -> dict[str, Any]:
    """A rule's training memory on a Graph without training: what ``profile --training``
    shows, so one can see which rule fits a device's SRAM before fine-tuning there."""
    learner = prepare(from_graph(graph), rule, layers, 0, Optimizer(optimizer), norm)
    return training_memory(learner.blocks, rule, batch_size,
                           learner.opt.state_bytes(learner.params), learner.state, dual_precision)


def _check(ok: bool, msg: str) -> None:
    if not ok:
        raise EdgekitError(msg)


def _data(graph: Graph, blocks: list[Block], x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y)
    want = graph.tensors[graph.inputs[0]].shape[1:]
    _check(x.ndim >= 1 and x.shape[1:] == want and len(x) > 0,
           f"inputs have shape {x.shape}, the model takes (N, {', '.join(map(str, want))})")
    classes = blocks[-1].z_shape[0]
    _check(y.shape == (len(x),) and np.issubdtype(y.dtype, np.integer)
           and bool(((y >= 0) & (y < classes)).all()),
           f"labels must be {len(x)} integers in [0, {classes}), got {y.dtype} {y.shape}")
    _check(bool(np.isfinite(x).all()), "inputs contain NaN or inf")
    return np.ascontiguousarray(x, np.float32), y.astype(np.int64)


def _diverged(what: str, path: Path | None) -> None:
    kept = f"; the last good checkpoint {path} is kept" if path and path.exists() else ""
    raise EdgekitError(f"training diverged: {what}{kept}; lower the learning rate")


def _save(path: Path, config: dict, params: dict, buffers: dict, opt: Optimizer,
          history: list) -> None:
    """Write the checkpoint atomically (``edgekit.fileio``): a kill mid-write keeps the last."""
    meta = {"config": config, "history": history, "opt_steps": opt.steps}
    arrays = {f"w/{k}": v for k, v in params.items()}
    arrays.update({f"b/{k}": v for k, v in buffers.items()})
    arrays.update({f"opt/{k}": v for k, v in opt.state.items()})
    buf = io.BytesIO()
    np.savez(buf, meta=np.array(json.dumps(meta)), **arrays)
    atomic_write_bytes(path, buf.getvalue())


def structure_id(graph: Graph) -> str:
    """A hash of what makes ``graph`` the model it is, weights aside: inputs, outputs, tensor
    names, shapes and dtypes, ops and their attrs. A checkpoint carries it, so that resuming
    onto another model is refused even when its weights would happen to fit."""
    doc = {"inputs": graph.inputs, "outputs": graph.outputs,
           "tensors": {name: [list(t.shape), t.dtype] for name, t in graph.tensors.items()},
           "nodes": [[n.op, n.inputs, n.outputs, n.attrs] for n in graph.nodes]}
    text = json.dumps(doc, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _load(path: Path, config: dict, params: dict, buffers: dict,
          opt: Optimizer) -> list[dict[str, Any]]:
    """Continue from the checkpoint at ``path``: checked in full (model, run, every array's
    name, shape, dtype and values) before anything is copied, since numpy would broadcast a
    wrong shape into a weight and the kernels write wherever a wrong optimizer state says."""
    check_npz(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            arrays = {k: z[k] for k in z.files if k != "meta"}
    except Exception as err:
        raise EdgekitError(f"{path}: not a readable edgekit checkpoint ({err})") from None
    try:
        _check_checkpoint(meta, arrays, config, params, buffers, opt)
    except EdgekitError as err:
        raise EdgekitError(f"{path}: {err}; delete it or run without --resume") from None
    for name, value in params.items():
        value[...] = arrays[f"w/{name}"]
    for name, value in buffers.items():
        value[...] = arrays[f"b/{name}"]
    opt.state = {k[4:]: v for k, v in arrays.items() if k.startswith("opt/")}
    opt.steps = meta["opt_steps"]
    return meta["history"]


def _check_checkpoint(meta: Any, arrays: dict[str, np.ndarray], config: dict, params: dict,
                      buffers: dict, opt: Optimizer) -> None:
    _check(isinstance(meta, dict) and isinstance(meta.get("config"), dict)
           and isinstance(meta["config"].get("model"), str)
           and isinstance(meta.get("history"), list)
           and all(isinstance(r, dict) for r in meta["history"])
           and type(meta.get("opt_steps")) is int and meta["opt_steps"] >= 0,
           "not an edgekit checkpoint of this version (its model, config, history or "
           "opt_steps is missing or malformed)")
    theirs = meta["config"].get("model")
    _check(theirs == config["model"], f"a checkpoint of another model (structure {theirs}, "
           f"this model's is {config['model']})")
    _check(meta["config"] == json.loads(json.dumps(config)),
           f"written by a different run ({meta['config']}); resume with the same rule, seed, "
           "batch size, layers and data")
    stepped = Optimizer(opt.kind, steps=meta["opt_steps"])
    expected = {**{f"w/{k}": v.shape for k, v in params.items()},
                **{f"b/{k}": v.shape for k, v in buffers.items()},
                **{f"opt/{k}": shape for k, shape in stepped.state_shapes(params).items()}}
    missing, extra = sorted(set(expected) - set(arrays)), sorted(set(arrays) - set(expected))
    if missing:
        raise EdgekitError(f"has no array {missing[0]!r} ({len(missing)} missing)")
    if extra:
        raise EdgekitError(f"holds arrays this run does not have: {', '.join(extra[:3])}")
    for key, shape in expected.items():
        value = arrays[key]
        _check(value.dtype == np.float32 and value.shape == shape,
               f"array {key!r} is {value.dtype} {value.shape}, this model needs float32 {shape}")
        _check(bool(np.isfinite(value).all()), f"array {key!r} holds NaN or inf")
