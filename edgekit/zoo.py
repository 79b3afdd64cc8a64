"""The real networks edgekit is checked against (issue 19): the four MLPerf Tiny reference
models, written here in torch, and five stock torchvision classifiers (torch side only).

``network(name)`` builds one with a seeded random initialisation (nothing is downloaded) and
batch-norm statistics recalibrated on its own sample inputs, so that activations have the
scale a trained network's have instead of drifting layer after layer; ``sample_inputs`` draws
smooth (low-frequency) inputs of its shape. ``NETWORKS`` lists them with their input shapes.

MLPerf Tiny definitions follow ``benchmark/training/*`` of github.com/mlcommons/tiny (commit
1afd2c9): ``keyword_spotting/keras_model.py`` (``ds_cnn``), ``visual_wake_words/vww_model.py``
(``mobilenet_v1``), ``image_classification/keras_model.py`` (``resnet_v1_eembc``) and
``anomaly_detection/keras_model.py`` (``get_model``). Keras is channels-last; these take NCHW
(MFCCs as 1 x 49 x 10). Keras defaults are kept where they change numbers: biases on every
conv, batch-norm epsilon 1e-3, TF "same" padding (odd padding at the bottom/right, so a
stride-2 layer pads asymmetrically: an explicit ``F.pad`` before a conv, as TF does it) and the
softmax the Keras models end with.

torchvision: the wheel matching torch 2.13.0 is 0.28.0 (``pip install torchvision==0.28.0``, in
the ``dev`` extra). Its model code is plain Python, but where its C extension cannot load (the
only wheel on some indexes is a CUDA build beside a CPU torch), ``import torchvision`` fails
while registering meta and autograd kernels for the extension's operators (``torchvision::nms
does not exist``). ``torchvision_models()`` then imports the stock package again without those
two registration modules: models, ``ops.misc`` and transforms import unchanged, and
torchvision's own "custom C++ ops not loaded" error stays for the detection ops this skips.
"""

from __future__ import annotations

import importlib
import math
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

KERAS_BN_EPS = 1e-3  # keras.layers.BatchNormalization's default epsilon (torch's is 1e-5)

# --------------------------------------------------------------------------- MLPerf Tiny


class SameConv2d(nn.Conv2d):
    """``Conv2D(padding='same')`` as TF computes it: total padding ``max((ceil(n / s) - 1) * s
    + k - n, 0)`` per axis, the odd one at the end. Symmetric padding stays the conv's own;
    asymmetric padding (stride 2 on an even size) is an explicit zero ``F.pad`` first."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []  # F.pad order: (left, right, top, bottom)
        for n, k, s in reversed(list(zip(x.shape[2:], self.kernel_size, self.stride,
                                         strict=True))):
            total = max((math.ceil(n / s) - 1) * s + k - n, 0)
            pads += [total // 2, total - total // 2]
        if pads[0] == pads[1] and pads[2] == pads[3]:
            return F.conv2d(x, self.weight, self.bias, self.stride, (pads[2], pads[0]),
                            self.dilation, self.groups)
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation,
                        self.groups)


def _conv_bn_relu(cin: int, cout: int, kernel, stride=1, groups: int = 1) -> list[nn.Module]:
    return [SameConv2d(cin, cout, kernel, stride, groups=groups),
            nn.BatchNorm2d(cout, eps=KERAS_BN_EPS), nn.ReLU()]


def _separable(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    """Keras ``DepthwiseConv2D(3)`` + BN + ReLU, then ``Conv2D(1)`` + BN + ReLU."""
    return _conv_bn_relu(cin, cin, 3, stride, groups=cin) + _conv_bn_relu(cin, cout, 1)


def ds_cnn_kws(classes: int = 12, filters: int = 64) -> nn.Module:
    """Keyword spotting DS-CNN on 1 x 49 x 10 MFCCs (``get_model``, ``ds_cnn``): a 10x4
    stride-2 conv, four depthwise-separable blocks, dropout, a 24x5 average pool, dense and
    softmax over 12 labels."""
    blocks = [m for _ in range(4) for m in _separable(filters, filters)]
    return nn.Sequential(
        *_conv_bn_relu(1, filters, (10, 4), 2), nn.Dropout(0.2), *blocks, nn.Dropout(0.4),
        nn.AvgPool2d((49 // 2, 10 // 2)), nn.Flatten(), nn.Linear(filters, classes),
        nn.Softmax(dim=1))


def mobilenet_v1_vww(classes: int = 2, filters: int = 8) -> nn.Module:
    """Visual wake words MobileNetV1 with alpha = 0.25 on 3 x 96 x 96 (``mobilenet_v1``): a
    stride-2 conv, thirteen depthwise-separable blocks, a 3x3 average pool (global at 96x96),
    dense and softmax over person / no person."""
    layers = _conv_bn_relu(3, filters, 3, 2)
    # (stride of the depthwise conv, channel multiplier of the pointwise one), blocks 2-14
    for stride, grow in [(1, 2), (2, 2), (1, 1), (2, 2), (1, 1), (2, 2), *[(1, 1)] * 5,
                         (2, 2), (1, 1)]:
        layers += _separable(filters, filters * grow, stride)
        filters *= grow
    return nn.Sequential(*layers, nn.AvgPool2d(3), nn.Flatten(), nn.Linear(filters, classes),
                         nn.Softmax(dim=1))


class _ResNetStack(nn.Module):
    """Two 3x3 conv-BN layers added to the input (through a strided 1x1 conv when the stack
    downsamples), then ReLU: one stack of ``resnet_v1_eembc``."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(*_conv_bn_relu(cin, cout, 3, stride),
                                  SameConv2d(cout, cout, 3),
                                  nn.BatchNorm2d(cout, eps=KERAS_BN_EPS))
        self.shortcut = SameConv2d(cin, cout, 1, stride) if stride != 1 else nn.Identity()
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.shortcut(x) + self.body(x))


def resnet8(classes: int = 10, filters: int = 16) -> nn.Module:
    """Image classification ResNet-8 on 3 x 32 x 32 CIFAR-10 (``resnet_v1_eembc``): a 3x3
    conv and three residual stacks of 16, 32 and 64 filters, an 8x8 average pool, dense and
    softmax. 16 filters is the benchmark's model (78 k parameters); the repository's 2026
    revision makes the count an argument and trains 26."""
    return nn.Sequential(
        *_conv_bn_relu(3, filters, 3), _ResNetStack(filters, filters, 1),
        _ResNetStack(filters, 2 * filters, 2), _ResNetStack(2 * filters, 4 * filters, 2),
        nn.AvgPool2d(8), nn.Flatten(), nn.Linear(4 * filters, classes), nn.Softmax(dim=1))


def fc_autoencoder(features: int = 640) -> nn.Module:
    """Anomaly detection autoencoder on 640 features (5 frames x 128 log-mels, ``get_model``):
    dense-BN-ReLU layers of 128, 128, 128, 128, 8, 128, 128, 128, 128, then dense back to
    640; its reconstruction error is the anomaly score."""
    layers: list[nn.Module] = []
    width = features
    for out in (128, 128, 128, 128, 8, 128, 128, 128, 128):
        layers += [nn.Linear(width, out), nn.BatchNorm1d(out, eps=KERAS_BN_EPS), nn.ReLU()]
        width = out
    return nn.Sequential(*layers, nn.Linear(width, features))


# --------------------------------------------------------------------------- torchvision


def torchvision_models() -> types.ModuleType:
    """``torchvision.models`` from the installed torchvision; ``ImportError`` when it is not
    installed. Where its C extension does not load, the package is imported without the two
    modules that register kernels for the extension's operators (module docstring)."""
    try:
        return importlib.import_module("torchvision.models")
    except RuntimeError:
        extension = sys.modules.get("torchvision.extension")
        if extension is None or extension._has_ops():
            raise  # not the missing C extension: show torchvision's own error
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]  # the half-imported package
    for name in ("torchvision._meta_registrations", "torchvision._autograd_registrations"):
        sys.modules[name] = types.ModuleType(name)
    return importlib.import_module("torchvision.models")


def _torchvision(name: str) -> Callable[[], nn.Module]:
    return lambda: getattr(torchvision_models(), name)()


# --------------------------------------------------------------------------- the list


@dataclass(frozen=True)
class Network:
    """One real network: how to build it, its input (batch 1, NCHW or N x features) and what
    its output is (class scores, or a reconstruction of the input)."""

    name: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    task: str  # "classify" or "reconstruct"
    source: str


NETWORKS: dict[str, Network] = {n.name: n for n in [
    Network("mobilenet_v2", _torchvision("mobilenet_v2"), (1, 3, 64, 64), "classify",
            "torchvision"),
    Network("mobilenet_v3_small", _torchvision("mobilenet_v3_small"), (1, 3, 64, 64),
            "classify", "torchvision"),
    Network("resnet18", _torchvision("resnet18"), (1, 3, 64, 64), "classify",
            "torchvision"),
    Network("squeezenet1_1", _torchvision("squeezenet1_1"), (1, 3, 64, 64), "classify",
            "torchvision"),
    Network("shufflenet_v2_x0_5", _torchvision("shufflenet_v2_x0_5"), (1, 3, 64, 64),
            "classify", "torchvision"),
    Network("kws_ds_cnn", ds_cnn_kws, (1, 1, 49, 10), "classify", "MLPerf Tiny KWS"),
    Network("vww_mobilenet_v1", mobilenet_v1_vww, (1, 3, 96, 96), "classify",
            "MLPerf Tiny VWW"),
    Network("ic_resnet8", resnet8, (1, 3, 32, 32), "classify", "MLPerf Tiny IC"),
    Network("ad_autoencoder", fc_autoencoder, (1, 640), "reconstruct", "MLPerf Tiny AD"),
]}


def sample_inputs(name: str, n: int, seed: int = 0) -> np.ndarray:
    """``n`` seeded inputs for network ``name``: images and MFCCs are smooth random fields
    (noise on a grid 4x coarser, upsampled bilinearly, plus a little fine noise), so that
    neighbouring pixels correlate as in real data, each with its own contrast and per-channel
    offset (as photos differ in exposure and colour); feature vectors are standard normal."""
    shape = NETWORKS[name].input_shape
    gen = torch.Generator().manual_seed(seed)
    if len(shape) != 4:
        return torch.randn((n, *shape[1:]), generator=gen).numpy()
    coarse = torch.randn((n, shape[1], *(max(1, d // 4) for d in shape[2:])), generator=gen)
    smooth = F.interpolate(coarse, size=shape[2:], mode="bilinear", align_corners=False)
    field = smooth + 0.1 * torch.randn((n, *shape[1:]), generator=gen)
    contrast = 2 * torch.rand((n, 1, 1, 1), generator=gen)
    return (field * contrast + torch.randn((n, shape[1], 1, 1), generator=gen)).numpy()


@torch.no_grad()
def network(name: str, seed: int = 0, calibration: int = 16) -> nn.Module:
    """Network ``name`` in eval mode: initialised from ``torch.manual_seed(seed)``, then its
    batch-norm running statistics set to the mean and variance its layers see over
    ``calibration`` sample inputs (as a trained network's are), dropout off."""
    torch.manual_seed(seed)
    model = NETWORKS[name].build().eval()
    if calibration:
        _calibrate_norms(model, sample_inputs(name, calibration, seed + 1))
    return model


@torch.no_grad()
def _calibrate_norms(model: nn.Module, x: np.ndarray) -> None:
    """Set every batch norm's running statistics to the mean and variance its input has over
    ``x``, leaving ``model`` in eval mode."""
    model.eval()  # dropout off
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over x
        m.train()
    if norms:
        model(torch.from_numpy(x))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
        m.eval()


# --------------------------------------------------------------------------- a small task

TASK_CLASSES = 4  # at most; VWW has two


def task(name: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` labelled examples of a task network ``name`` learns in a few hundred CPU steps, so
    int8 can be judged by the accuracy it costs rather than by drift from random weights.

    Classifiers: class ``k`` adds template ``k`` (a fixed smooth field of the input's shape,
    as spread as the inputs) to a ``sample_inputs`` background, labels ``0 .. k-1`` over the
    first outputs. The autoencoder: points near an 8-dimensional subspace of its 640 features
    (its bottleneck's width), labels unused (zeros)."""
    shape, gen = NETWORKS[name].input_shape, np.random.default_rng(seed + 7)
    if NETWORKS[name].task == "reconstruct":
        basis = np.random.default_rng(1234).standard_normal((8, shape[1])) / math.sqrt(8)
        x = gen.standard_normal((n, 8)) @ basis + 0.05 * gen.standard_normal((n, shape[1]))
        return x.astype(np.float32), np.zeros(n, np.int64)
    templates = sample_inputs(name, TASK_CLASSES, seed=1234)
    templates = templates / templates.std(axis=tuple(range(1, len(shape))), keepdims=True)
    labels = gen.integers(0, _classes(name), n)
    return (sample_inputs(name, n, seed) + templates[labels]).astype(np.float32), labels


def _classes(name: str) -> int:
    return 2 if name == "vww_mobilenet_v1" else TASK_CLASSES


def trained(name: str, steps: int = 150, seed: int = 0, batch: int = 32) -> nn.Module:
    """Network ``name`` (``network``) trained on ``task`` for ``steps`` Adam steps, in eval
    mode with batch-norm statistics recomputed for the final weights. Softmax-ended (Keras)
    classifiers train on the log of their output."""
    model = network(name, seed).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = (torch.from_numpy(a) for a in task(name, steps * batch, seed + 100))
    ends_in_softmax = isinstance(list(model.modules())[-1], nn.Softmax)
    for step in range(steps):
        xb, yb = x[step * batch:(step + 1) * batch], y[step * batch:(step + 1) * batch]
        out = model(xb)
        if NETWORKS[name].task == "reconstruct":
            loss = F.mse_loss(out, xb)
        elif ends_in_softmax:
            loss = F.nll_loss(torch.log(out.clamp_min(1e-12)), yb)
        else:
            loss = F.cross_entropy(out, yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    _calibrate_norms(model, x[-4 * batch:].numpy())  # statistics of the final weights
    return model
