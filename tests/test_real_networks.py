"""The real networks of issue 19 (``edgekit.zoo``: five stock torchvision classifiers and the
four MLPerf Tiny reference models) through the public API: the stock ``torch.export`` program
imports and agrees with torch in float, and the int8 Graph agrees across the CPU backends;
on the emulated board, one that fits runs bit-exact (mobilenet_v2 too, its layers longer than a
link frame streamed) and one that does not is refused with the overshoot.
``benchmarks/real_networks.py`` prints the same stages as a table.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from torch import nn

import edgekit
from edgekit import zoo
from edgekit.errors import EdgekitError
from edgekit.quant import quantize_array
from edgekit.targets import get_target

SAMPLES = 4


def networks(*marks: pytest.MarkDecorator) -> list:
    """Every zoo network as a parameter."""
    return [pytest.param(name, marks=list(marks), id=name) for name in zoo.NETWORKS]


@functools.cache
def _imported(name: str):
    """(torch outputs on the sample inputs, the sample inputs, the imported float Graph)."""
    model = zoo.network(name)
    x = zoo.sample_inputs(name, SAMPLES, seed=3)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    program = torch.export.export(model, (torch.from_numpy(x[:1]),))  # as users save it
    return ref, x, edgekit.from_torch(program)


def imported(name: str):
    try:
        return _imported(name)
    except ImportError as err:  # torchvision, from the dev extra
        pytest.skip(f"{name} needs {err.name or err}: pip install -e '.[dev]'")


@functools.cache
def _quantized(name: str):
    return edgekit.quantize(imported(name)[2], zoo.sample_inputs(name, 16, seed=2))


@pytest.mark.parametrize("name", networks())
def test_imports_and_agrees_with_torch_in_float(name):
    ref, x, graph = imported(name)
    got = edgekit.deploy(graph, "cpu").run(x)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4 * np.abs(ref).max())
    if zoo.NETWORKS[name].task == "classify":
        np.testing.assert_array_equal(got.argmax(1), ref.argmax(1))


@pytest.mark.parametrize("name", networks(pytest.mark.slow))
def test_int8_agrees_across_cpu_backends(name):
    """tflite-micro is the runtime's arithmetic: bit-exact. ONNX Runtime (QDQ, rounding in
    float) and LiteRT (XNNPACK) round a few values a step off per layer, and through a deep
    net the steps add up (tens of output steps on mobilenet_v2, whose random weights amplify
    every difference as they amplify int8's own error): their outputs may differ from the
    runtime's by no more than the runtime's int8 outputs differ from torch's float ones (rms,
    in output steps; benchmarks/real_networks.py prints both), or than one step where int8's
    own error is smaller (ic_resnet8's softmax: 0.33 steps, ONNX Runtime 0.5 off)."""
    ref, x, _ = imported(name)
    q = _quantized(name)
    runtime = edgekit.deploy(q, "cpu")
    xq = quantize_array(x, q.tensors[q.inputs[0]].quant)
    raw = runtime.run(xq, raw=True).astype(np.int32)
    quant_error = _rms((runtime.run(x) - ref) / q.tensors[q.outputs[0]].quant.scale[0])
    for target in ("cpu:tflite-micro", "cpu:onnxruntime", "cpu:litert"):
        ok, why = get_target(target).available()
        if not ok:
            pytest.skip(f"{target}: {why}")
        with edgekit.deploy(q, target) as session:
            steps = session.run(xq, raw=True).astype(np.int32) - raw
        if target == "cpu:tflite-micro":
            np.testing.assert_array_equal(steps, 0)
        else:
            assert _rms(steps) <= max(1.5 * quant_error, 1.0), (target, _rms(steps),
                                                                 quant_error)


def _rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(values, dtype=np.float64))))


def _board_missing() -> str:
    return get_target("mcu:qemu").available()[1]


@pytest.mark.slow
@pytest.mark.skipif(bool(_board_missing()), reason=f"MCU target unavailable: {_board_missing()}")
@pytest.mark.parametrize("name", ["ad_autoencoder", "kws_ds_cnn", "ic_resnet8",
                                  "vww_mobilenet_v1"])
def test_mlperf_tiny_on_the_board_is_bit_exact(name):
    """The four MLPerf Tiny networks fit the emulated M3 (their TF 'same' pads folded into
    the stride-2 convolutions) and run there as the int8 runtime computes them."""
    _, x, _ = imported(name)
    q = _quantized(name)
    xq = quantize_array(x[:2], q.tensors[q.inputs[0]].quant)
    with edgekit.deploy(q, "mcu:qemu") as board:
        got = np.concatenate([board.run(xq[i:i + 1], raw=True) for i in range(len(xq))])
    np.testing.assert_array_equal(got, edgekit.deploy(q, "cpu").run(xq, raw=True))


@pytest.mark.slow
@pytest.mark.skipif(bool(_board_missing()), reason=f"MCU target unavailable: {_board_missing()}")
def test_mobilenet_v2_streams_its_large_layers_on_the_board():
    """mobilenet_v2 at 64x64: layer outputs of 98,306 B, longer than any link frame, and a
    12,288 B input stream in 4 KB chunks (protocol 3), so the board's memory decides; it runs
    as the int8 runtime computes it, within the reply timeout its cost gives."""
    from edgekit.converters.to_c import LINK_CHUNK_BYTES

    _, x, _ = imported("mobilenet_v2")
    q = _quantized("mobilenet_v2")
    xq = quantize_array(x[:2], q.tensors[q.inputs[0]].quant)
    with edgekit.deploy(q, "mcu:qemu") as board:
        assert board.hello.max_payload == LINK_CHUNK_BYTES
        got = np.concatenate([board.run(xq[i:i + 1], raw=True) for i in range(len(xq))])
    np.testing.assert_array_equal(got, edgekit.deploy(q, "cpu").run(xq, raw=True))


@pytest.mark.slow
@pytest.mark.skipif(bool(_board_missing()), reason=f"MCU target unavailable: {_board_missing()}")
def test_resnet18_does_not_fit_the_board():
    """11.7 M int8 weights against the emulated M3's 4 MiB of flash: refused before any build,
    naming the limit and the overshoot."""
    q = edgekit.quantize(imported("resnet18")[2], zoo.sample_inputs("resnet18", 2, seed=2))
    with pytest.raises(EdgekitError, match=r"does not fit cortex-m3-qemu: flash: weights and "
                                           r"constants \([\d,]+ B\) \+ the firmware's code, "
                                           r"kernels and schedule \([\d,]+ B\) need [\d,]+ B "
                                           r"of 4,194,304 B, exceeds it by [\d,]+ B"):
        edgekit.deploy(q, "mcu:qemu")


class _InPlace(nn.Module):
    """What torchvision's layers record: ``relu_``, ``out += identity``, ``hardtanh_``
    (``ReLU6(inplace=True)``), ``dropout_``; and a view taken before the in-place ReLU, which
    must see it (so renaming ``relu_`` to ``relu`` would not be enough)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 1)
        self.relu6 = nn.ReLU6(inplace=True)
        self.drop = nn.Dropout(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        alias = y.view(y.shape)
        y.relu_()
        z = self.conv2(alias)
        z += y
        return self.drop(self.relu6(z))


def test_in_place_ops_import_as_torch_computes_them():
    torch.manual_seed(0)
    model = _InPlace().eval()
    x = torch.randn(2, 3, 8, 8)
    program = torch.export.export(model, (x[:1],))
    assert {"relu_", "add_", "hardtanh_", "dropout_"} <= {
        str(n.target).split(".")[1] for n in program.graph.nodes if n.op == "call_function"}
    graph = edgekit.from_torch(program)
    with torch.no_grad():
        ref = model(x).numpy()
    np.testing.assert_allclose(edgekit.deploy(graph, "cpu").run(x.numpy()), ref, atol=1e-5)


@pytest.mark.parametrize("size, kernel, stride, pads", [
    ((49, 10), (10, 4), 2, (1, 1, 4, 5)),  # the KWS DS-CNN's first conv: 25 x 5 out
    ((32, 32), (3, 3), 2, (0, 1, 0, 1)),   # ResNet-8 / VWW stride-2 3x3: TF pads after only
    ((32, 32), (1, 1), 2, (0, 0, 0, 0)),   # ResNet-8's strided shortcut
    ((12, 12), (3, 3), 1, (1, 1, 1, 1)),   # depthwise 3x3: torch's own padding=1
])
def test_same_conv_pads_as_tensorflow(size, kernel, stride, pads):
    """TF 'same': out = ceil(n / s), total padding (out - 1) * s + k - n, the odd one after."""
    torch.manual_seed(0)
    conv = zoo.SameConv2d(2, 3, kernel, stride)
    x = torch.randn(1, 2, *size)
    want = torch.nn.functional.conv2d(torch.nn.functional.pad(x, pads), conv.weight, conv.bias,
                                      stride)
    got = conv(x)
    assert got.shape[2:] == tuple(-(-n // stride) for n in size)
    torch.testing.assert_close(got, want)
