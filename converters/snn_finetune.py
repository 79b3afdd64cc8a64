"""Surrogate-gradient fine-tuning of a converted SNN: the second half of hybrid training (Rathi
et al., ICLR 2020), which Datta et al. (ICASSP 2023) use for their in-sensor SNNs.

Conversion (``converters.snn.to_snn``, with FAS calibration) gives a spiking Graph whose rates
approximate the ANN; at T = 4-8 the residual error of each layer adds up (ds_cnn: 2-3 points).
Here the spiking Graph itself runs in torch for its T steps (each op's "gpu" function, the one
the ``gpu`` target's torch backend interprets Graphs with, on the CPU), every neuron's
Heaviside step given a surrogate derivative, and backpropagation through the T steps trains the
weights and biases of the convolution and linear layers and every neuron's threshold on
cross-entropy of the time-averaged output. The trained values go back into a copy of the
Graph's params: the result is an ordinary spiking Graph that every spiking target runs.

Surrogate: the triangle ``max(0, 1 - |u/theta - 1|)`` (Rathi et al.'s linear surrogate, scaled
by 1/theta), so the gradient reaches the threshold through both the firing decision and the
amplitude ``theta`` a spike carries. Initial membranes stay as calibration set them.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterable

import numpy as np
import torch

from edgekit.errors import EdgekitError
from edgekit.graph import Graph
from edgekit.ops import implementations
from edgekit.spiking import is_spiking

from .snn import CHECK_SAMPLES, SpikingConversionWarning, check_advice, conversion_check

_NEURONS = ("if_neuron", "lif_neuron")
_SYNAPSES = ("conv2d", "conv1d", "linear")  # their weights and biases train
EPOCHS, LR = 20, 3e-3  # on ds_cnn (512 samples, T = 4-8) 5 epochs or lr 1e-3 gained little
MIN_THRESHOLD = 1e-3  # a threshold trained to 0 would fire on any current


class _Spike(torch.autograd.Function):
    """Heaviside of ``r = u / theta - 1`` forward, the triangle ``max(0, 1 - |r|)`` backward."""

    @staticmethod
    def forward(ctx, r: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ctx.save_for_backward(r)
        return (r >= 0).to(r.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        (r,) = ctx.saved_tensors
        return grad * torch.clamp(1 - r.abs(), min=0)


class SpikingModule(torch.nn.Module):
    """A float32, direct-encoded spiking Graph as a differentiable torch module: ``forward(x)``
    is the output averaged over the Graph's T steps, as ``SpikingExecutor`` computes it.
    Nodes that depend on no neuron (the direct-input first layer) run once per inference."""

    def __init__(self, graph: Graph):
        super().__init__()
        if not is_spiking(graph) or graph.metadata.get("encoding", "direct") != "direct":
            raise EdgekitError("surrogate fine-tuning takes a direct-encoded spiking Graph "
                               "(converters.snn.to_snn)")
        if any(t.dtype != "float32" for t in graph.tensors.values()):
            raise EdgekitError("fine-tune the float32 spiking Graph, then quantize it")
        self.graph = graph
        self.functions = {op: impl.fn for op, impl in implementations("gpu").items()}
        missing = sorted({n.op for n in graph.nodes} - set(self.functions))
        if missing:
            raise EdgekitError(f"surrogate fine-tuning has no torch function for {missing}")
        trained = {p for n in graph.nodes if n.op in _SYNAPSES for p in n.inputs[1:]}
        trained |= {n.inputs[1] for n in graph.nodes if n.op in _NEURONS}
        self.names = sorted(p for p in trained if p in graph.params)
        self.weights = torch.nn.ParameterList(
            torch.nn.Parameter(torch.from_numpy(np.array(graph.params[p], np.float32)))
            for p in self.names)
        self.fixed = {p: torch.from_numpy(np.array(v)) for p, v in graph.params.items()
                      if p not in trained}
        dynamic: set[str] = set()
        for node in graph.nodes:
            if node.op in _NEURONS or dynamic & set(node.inputs):
                dynamic.add(node.outputs[0])
        self.static = [n for n in graph.nodes if n.outputs[0] not in dynamic]
        self.dynamic = [n for n in graph.nodes if n.outputs[0] in dynamic]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        values = {**self.fixed, **dict(zip(self.names, self.weights, strict=True)),
                  self.graph.inputs[0]: x}
        for node in self.static:
            values[node.outputs[0]] = self._call(node, values)
        steps = self.graph.metadata["timesteps"]
        membranes: dict[str, torch.Tensor] = {}
        total = 0
        for _ in range(steps):
            for node in self.dynamic:
                out = node.outputs[0]
                if node.op in _NEURONS:
                    values[out], membranes[out] = _neuron(membranes.get(out), node, values)
                else:
                    values[out] = self._call(node, values)
            total = total + values[self.graph.outputs[0]]
        return total / steps

    def _call(self, node, values):
        return self.functions[node.op](*[values[n] for n in node.inputs], **node.attrs)

    def export(self) -> Graph:
        """A copy of the Graph with the trained weights and thresholds as its params."""
        graph = copy.deepcopy(self.graph)
        for name, value in zip(self.names, self.weights, strict=True):
            graph.params[name] = value.detach().numpy().astype(np.float32).copy()
        return graph


def _neuron(v, node, values):
    """One IF/LIF step with the surrogate: the output (spikes times thresholds) and membrane."""
    x, threshold = values[node.inputs[0]], values[node.inputs[1]]
    if v is None:
        v = values[node.inputs[2]] if len(node.inputs) > 2 else torch.zeros_like(x)
    u = node.attrs.get("leak", 1.0) * v + x
    spikes = _Spike.apply(u / threshold - 1)
    out = spikes * threshold
    return out, u - out if node.attrs["reset"] == "subtract" else u * (1 - spikes)


def finetune_snn(snn: Graph, x: np.ndarray, y: np.ndarray, *, epochs: int = EPOCHS,
                 lr: float = LR, batch_size: int = 32, validation: float = 0.2, seed: int = 0,
                 progress: Callable[[Iterable[int]], Iterable[int]] = iter) -> Graph:
    """``snn`` fine-tuned on ``(x, y)`` (class labels) with surrogate gradients through its T
    steps: Adam at ``lr`` with a cosine schedule over ``epochs``, seeded. Repeated runs in one
    process give the same Graph; across processes the training was not bit-reproducible here
    (measured: ds_cnn, T = 4, the same inputs kept epoch 6 at 93.04 % in one process and epoch
    9 at 92.76 % in another).

    The last ``validation`` share of the samples is held out: after each epoch the SNN is
    scored on it, and the weights of the best epoch are kept, the converted ones (epoch 0)
    unless an epoch beats them, so fine-tuning a few hundred calibration samples cannot leave
    the SNN worse on data it did not train on (the digits CNN, already within 0.3 points of its
    ANN, overfits them). Returns a new spiking Graph; ``snn`` is not changed. ``progress``
    wraps the epoch loop."""
    x, y = np.asarray(x, np.float32), np.asarray(y).reshape(-1)
    if len(x) != len(y) or len(x) == 0:
        raise EdgekitError(f"surrogate fine-tuning needs one label per input, got {len(y)} "
                           f"labels for {len(x)} inputs")
    if type(epochs) is not int or epochs < 1:
        raise EdgekitError(f"epochs must be a positive int, got {epochs!r}")
    if not 0 <= validation < 1:
        raise EdgekitError(f"validation is a share of the samples in [0, 1), got {validation!r}")
    if len(x) - int(len(x) * validation) < 1:
        raise EdgekitError("surrogate fine-tuning needs at least one sample to train on")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small layers: threads only contend (see _train)
    try:
        return _train(snn, x, y, epochs, lr, batch_size, validation, seed, progress)
    finally:
        torch.set_num_threads(threads)


def _train(snn, x, y, epochs, lr, batch_size, validation, seed, progress) -> Graph:
    """``finetune_snn``'s loop, on one torch thread: the layers of the nets converted here are
    thousands of MACs per sample, too small to split, and on a busy 2-core machine torch's
    two spinning threads made the CLI's 20 epochs (ds_cnn, 512 samples, T = 4) take 638 s."""
    held = int(len(x) * validation)
    torch.manual_seed(seed)
    module = SpikingModule(snn)
    cut = len(x) - held
    xt, xv = torch.from_numpy(x[:cut]), torch.from_numpy(x[cut:])
    yt, yv = torch.from_numpy(y[:cut].astype(np.int64)), torch.from_numpy(y[cut:].astype(np.int64))

    def score() -> float:
        with torch.no_grad():
            return float((module(xv).argmax(1) == yv).float().mean()) if held else 0.0

    best, kept, best_epoch = score(), [w.detach().clone() for w in module.weights], 0
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    gen = torch.Generator().manual_seed(seed)
    thresholds = [w for name, w in zip(module.names, module.weights, strict=True)
                  if name.endswith(".threshold")]
    for epoch in progress(range(1, epochs + 1)):
        for idx in torch.randperm(len(yt), generator=gen).split(batch_size):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(module(xt[idx]), yt[idx]).backward()
            opt.step()
            with torch.no_grad():
                for w in thresholds:
                    w.clamp_(min=MIN_THRESHOLD)
        sched.step()
        accuracy = score()
        if accuracy > best or not held:
            best, kept, best_epoch = accuracy, [w.detach().clone() for w in module.weights], epoch
    with torch.no_grad():
        for w, k in zip(module.weights, kept, strict=True):
            w.copy_(k)
    tuned = module.export()
    tuned.metadata["snn_finetune"] = {"epochs": epochs, "lr": lr, "kept_epoch": best_epoch,
                                      "validation_samples": held,
                                      "validation_accuracy": best if held else None}
    return tuned


def finetune_and_check(ann: Graph, snn: Graph, x: np.ndarray, y: np.ndarray, *,
                       check: int = CHECK_SAMPLES, **options) -> Graph:
    """``finetune_snn(snn, x, y, **options)``, then the check ``to_snn`` runs on a converted
    SNN (``converters.snn.conversion_check`` on the last ``check`` samples, its figures in
    ``metadata["conversion_check"]``, a ``SpikingConversionWarning`` when the SNN falls short of
    ``ann``): what ``convert --to-snn`` does with labelled calibration data."""
    tuned = finetune_snn(snn, x, y, **options)
    checked = min(check, len(x))
    if checked:
        report = conversion_check(ann, tuned, np.asarray(x[-checked:], np.float32),
                                  np.asarray(y).reshape(-1)[-checked:])
        tuned.metadata["conversion_check"] = report
        advice = check_advice(report, tuned.metadata["timesteps"], "fas")
        if advice:
            warnings.warn(advice, SpikingConversionWarning, stacklevel=2)
    return tuned
