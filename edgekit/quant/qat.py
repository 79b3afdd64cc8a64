"""Quantization-aware fine-tuning and distillation for the weight formats below int8 (torch
side): the conv/linear weights of a torch model are seen through the scheme's quantizer in the
forward pass, with a straight-through estimator in the backward pass (the gradient reaches the
float master weights as if the rounding were not there), as BitNet b1.58 trains its ternary
weights. ``distill`` adds the float teacher's softened outputs to the loss.

The fake quantizer is ``numerics.formats``' (int4: ``max|w| / 7`` per output channel or group;
ternary: absmean per output channel), and both are per output channel: a batch-norm folded
into the layer at import scales each channel's row by one factor, which changes its scale but
not its codes. So ``edgekit.quantize(from_torch(model), x, scheme)`` after training stores the
very codes the forward pass used.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from edgekit.errors import EdgekitError
from edgekit.numerics import formats

SCHEMES = ("int4", "ternary", "int8")  # int8: with accumulator_bits, A2Q's bounded rows
LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)


class FakeQuant(nn.Module):
    """A weight's parametrization: its quantized value forward, the identity backward."""

    def __init__(self, scheme: str, group_size: int | None = None):
        super().__init__()
        self.scheme, self.group_size = scheme, group_size

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        rows = w.reshape(w.shape[0], -1)
        group = self.group_size or rows.shape[1]
        g = rows.reshape(rows.shape[0], -1, group)
        if self.scheme == "ternary":
            scale = g.abs().mean(-1, keepdim=True).clamp_min(formats.TERNARY_TINY)
            q = torch.clamp(torch.round(g / scale), -1, 1) * scale
        else:
            amax = g.abs().amax(-1, keepdim=True)
            scale = torch.where(amax > 0, amax / formats.INT4_MAX, torch.ones_like(amax))
            q = torch.clamp(torch.round(g / scale), -formats.INT4_MAX, formats.INT4_MAX) * scale
        return w + (q.reshape(w.shape) - w).detach()


class AccumulatorQuant(nn.Module):
    """int8 weight rows whose codes fit an accumulator of ``bits`` for any int8 input
    (``quant.accumulators.fit_width``, A2Q): scale ``max(max|w| / 127, sum|w| * 255 /
    (2^(bits-1) - 1))`` per output channel, codes rounded toward zero, so ``sum|q| * 255``
    stays within the accumulator; straight-through backward."""

    def __init__(self, bits: int):
        super().__init__()
        self.room = (2 ** (bits - 1) - 1) / 255

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        rows = w.reshape(w.shape[0], -1)
        scale = torch.maximum(rows.abs().amax(1, keepdim=True) / 127,
                              rows.abs().sum(1, keepdim=True) / self.room)
        scale = scale.clamp_min(formats.TERNARY_TINY)
        q = torch.clamp(torch.trunc(rows / scale), -127, 127) * scale
        return w + (q.reshape(w.shape) - w).detach()


def fake_quantized(model: nn.Module, scheme: str, group_size: int | None = None,
                   formats: dict[str, str] | None = None,
                   accumulator_bits: int | None = None) -> nn.Module:
    """A copy of ``model`` whose conv/linear weights go through ``FakeQuant``: in ``scheme``,
    or in ``formats[name]`` for the weights it names (``"<module path>.weight"``, which is
    also the weight's name in the Graph ``edgekit.from_torch`` makes); ``"fp16"`` there
    leaves a weight float (BitNet keeps the first and last layers in high precision; stored
    as float16 by ``quantize(scheme="mixed")``). ``"int8"`` takes
    ``accumulator_bits`` (``AccumulatorQuant``) and applies to every layer."""
    formats = dict(formats or {})
    kept = {name for name, f in formats.items() if f == "fp16"}  # trained in float32
    formats = {name: f for name, f in formats.items() if name not in kept}
    if (scheme == "int8") != (accumulator_bits is not None) or (formats and scheme == "int8"):
        raise EdgekitError("accumulator_bits= goes with scheme 'int8' (every layer), and "
                           "scheme 'int8' with accumulator_bits=")
    for name in (scheme, *formats.values()):
        if name not in (SCHEMES if name == scheme else ("int4", "ternary")):
            raise EdgekitError(f"quantization-aware training takes {', '.join(SCHEMES)} (a "
                               f"layer of formats=: int4, ternary or fp16), not {name!r}")
    student = copy.deepcopy(model)
    for path, module in student.named_modules():
        if isinstance(module, LAYERS) and f"{path}.weight" not in kept:
            chosen = formats.get(f"{path}.weight", scheme)
            quantizer = (AccumulatorQuant(accumulator_bits) if scheme == "int8"
                         else FakeQuant(chosen, group_size))
            parametrize.register_parametrization(module, "weight", quantizer)
    return student


def released(model: nn.Module) -> nn.Module:
    """``model`` with its fake quantizers taken off: the float master weights, which
    ``edgekit.quantize`` with the same scheme maps onto the codes training used."""
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
    return model


def _logits(out: torch.Tensor, probabilities: bool) -> torch.Tensor:
    return torch.log(out.clamp_min(1e-12)) if probabilities else out


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, scheme: str, *, epochs: int = 20,
          lr: float = 3e-3, batch_size: int = 64, group_size: int | None = None,
          teacher: nn.Module | None = None, temperature: float = 4.0, alpha: float = 0.5,
          probabilities: bool = False, seed: int = 0,
          formats: dict[str, str] | None = None,
          accumulator_bits: int | None = None) -> nn.Module:
    """Fine-tune a copy of the trained float ``model`` with its weights in ``scheme`` (QAT);
    with a ``teacher`` (the float model, usually), distil: the loss is ``alpha`` times the
    KL divergence to the teacher's outputs softened by ``temperature`` (times T^2, Hinton et
    al.) plus ``1 - alpha`` times cross-entropy on the labels. ``probabilities``: the models
    end in a softmax (the Keras MLPerf ones), so their logs are the logits. Returns the
    student with its float master weights, in eval mode. ``formats`` gives some weights
    another scheme (``fake_quantized``; ``quantize(scheme="mixed", formats=...)`` stores the
    same). ``scheme="int8", accumulator_bits=n`` trains rows that fit an n-bit accumulator
    (``AccumulatorQuant``; ``accumulators.fit_width`` of the int8 Graph stores the same
    codes)."""
    torch.manual_seed(seed)
    student = fake_quantized(model, scheme, group_size, formats, accumulator_bits).train()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    gen = torch.Generator().manual_seed(seed)
    if teacher is not None:
        teacher.eval()
    for _ in range(epochs):
        for idx in torch.randperm(len(yt), generator=gen).split(batch_size):
            logits = _logits(student(xt[idx]), probabilities)
            loss = F.cross_entropy(logits, yt[idx])
            if teacher is not None:
                with torch.no_grad():
                    target = _logits(teacher(xt[idx]), probabilities) / temperature
                soft = F.kl_div(F.log_softmax(logits / temperature, -1),
                                F.log_softmax(target, -1), log_target=True,
                                reduction="batchmean") * temperature ** 2
                loss = alpha * soft + (1 - alpha) * loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return released(student.eval())
