"""FAS stage 1: fine-tune an ANN with quantization-clip-floor-shift activations (QCFS, Bu et
al. ICLR 2022) so that it converts to an SNN that is accurate at few time steps.

A spiking neuron with threshold theta and an initial membrane of theta/2 fires, over L steps,
``theta * floor(clamp(x/theta, 0, 1) * L + 0.5) / L`` on average for a constant input x. Training
the ANN with exactly that activation, theta learned per layer, leaves conversion only the errors
of inputs that vary from step to step and of T != L. ``qcfs_finetune`` swaps every
``nn.ReLU``/``nn.ReLU6`` for a ``QCFS`` and fine-tunes; ``qcfs_graph`` exports the net with
plain ReLUs back in place (so ``from_torch`` fuses them as usual) and writes the learned thetas
to ``graph.metadata["activation_thresholds"]`` keyed by the Graph tensor each activation
produces. ``to_snn(graph, ..., balancing="trained", v_init=0.5)`` reads them from there: the
Graph is the only hand-off, and conversion needs no torch.
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch
from torch import nn

from edgekit import models
from edgekit.errors import EdgekitError
from edgekit.graph import Graph

from .from_torch import from_torch


class QCFS(nn.Module):
    """``theta * floor(clamp(x/theta, 0, 1) * levels + 0.5) / levels`` with a learnable theta;
    the floor passes gradients straight through. ``cap`` bounds theta (6 for a ReLU6)."""

    def __init__(self, theta: float, levels: int = 8, cap: float = math.inf):
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(float(min(theta, cap))))
        self.levels, self.cap = levels, cap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        theta = self.theta.clamp(max=self.cap)
        y = torch.clamp(x / theta, 0, 1) * self.levels + 0.5
        y = y + (torch.floor(y) - y).detach()
        return theta * y / self.levels


def qcfs_finetune(net: nn.Module, x: np.ndarray, y: np.ndarray, levels: int = 8,
                  epochs: int = 3, lr: float = 1e-3, seed: int = 0,
                  percentile: float = 95.0) -> nn.Module:
    """Swap every ReLU/ReLU6 module of the trained ``net`` for a ``QCFS`` whose theta starts at
    the ``percentile`` of that activation on ``x`` (at most 6 for a ReLU6), then fine-tune on
    ``(x, y)`` with ``models.train``. Modifies ``net`` in place; returns it in eval mode.

    Theta learns at ``lr`` with the weights, so a short fine-tuning keeps it near its start;
    on the digits models the 95th percentile converted better at T = 4-8 than the 99th or the
    99.9th (the lower threshold clips a little more but needs fewer steps per level).
    Functional ``torch.relu`` calls stay ReLUs; ``qcfs_graph`` refuses such a net."""
    relus = {path: m for path, m in net.named_modules() if type(m) in (nn.ReLU, nn.ReLU6)}
    if not relus:
        raise EdgekitError(f"{type(net).__name__} has no nn.ReLU or nn.ReLU6 module to replace; "
                           "QCFS fine-tuning needs activations written as modules")
    outputs: dict[nn.Module, list[torch.Tensor]] = {m: [] for m in relus.values()}
    hooks = [m.register_forward_hook(lambda m, _, out: outputs[m].append(out.flatten()))
             for m in outputs]
    try:
        models.predict(net, x[:512])
    finally:
        for hook in hooks:
            hook.remove()
    for path, relu in relus.items():
        values = torch.cat(outputs[relu]).numpy() if outputs[relu] else np.zeros(1)
        theta = float(np.percentile(values, percentile)) or 1.0
        cap = 6.0 if isinstance(relu, nn.ReLU6) else math.inf
        _set(net, path, QCFS(theta, levels, cap))
    return models.train(net, x, y, epochs=epochs, lr=lr, seed=seed)


def qcfs_graph(net: nn.Module, example: torch.Tensor) -> Graph:
    """The Graph of a ``qcfs_finetune``d ``net`` with plain ReLU/ReLU6 in place of its QCFS
    modules, and each learned theta in ``metadata["activation_thresholds"]`` (its levels in
    ``metadata["activation_levels"]``) under the tensor that activation produces.

    The k-th ReLU activation of the Graph (fused or not, in node order) is the k-th QCFS call
    of a forward pass; the counts must agree and each tensor must be named after the module
    path of its QCFS (``from_torch`` names activations so), or the mapping is ambiguous and
    this raises ``EdgekitError``.
    """
    paths = {m: path for path, m in net.named_modules() if isinstance(m, QCFS)}
    if not paths:
        raise EdgekitError(f"{type(net).__name__} has no QCFS activation; run qcfs_finetune "
                           "first")
    calls: list[QCFS] = []
    hooks = [m.register_forward_hook(lambda m, *_: calls.append(m)) for m in paths]
    try:
        with torch.no_grad():
            net.eval()(example)
    finally:
        for hook in hooks:
            hook.remove()
    for m, path in paths.items():
        _set(net, path, nn.ReLU6() if m.cap == 6 else nn.ReLU())
    try:
        graph = from_torch(net, example)
    finally:
        for m, path in paths.items():
            _set(net, path, m)
    acts = [node.outputs[0] for node in graph.nodes
            if node.op in ("relu", "relu6") or node.attrs.get("activation") in ("relu", "relu6")]
    if len(acts) != len(calls):
        raise EdgekitError(
            f"the Graph has {len(acts)} ReLU activations but the net calls QCFS {len(calls)} "
            "times, so the learned thresholds cannot be matched to tensors; write every ReLU as "
            "an nn.ReLU/nn.ReLU6 module (not torch.relu or F.relu) before qcfs_finetune")
    thresholds, levels = {}, {}
    for tensor, m in zip(acts, calls, strict=True):
        if not re.fullmatch(re.escape(paths[m]) + r"(_\d+)?", tensor):
            raise EdgekitError(
                f"Graph activation {tensor!r} is not named after QCFS module {paths[m]!r}: the "
                "export reordered or renamed activations, so their thresholds are ambiguous")
        thresholds[tensor] = float(m.theta.detach().clamp(max=m.cap))
        levels[tensor] = m.levels
    graph.metadata["activation_thresholds"] = thresholds
    graph.metadata["activation_levels"] = levels
    return graph


def _set(net: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(net.get_submodule(parent), name, module)
