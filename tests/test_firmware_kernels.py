"""The firmware's C kernels against their numba twins, compiled for this host (gcc), so every op
is checked bit for bit without the emulator: the requantization arithmetic on the same vectors
as ``edgekit.numerics.arith``, and a model using every op through ``converters.to_c``'s schedule.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess

import numpy as np
import pytest

from edgekit.firmware_bridge.build import FIRMWARE
from edgekit.numerics import arith

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="no host C compiler (gcc)")

ARITH_HARNESS = r"""
#include "ek_arith.h"
void requant_many(const int32_t *acc, const int32_t *m, const int32_t *s, int32_t n,
                  int32_t zp, int32_t lo, int32_t hi, int8_t *out) {
    for (int32_t i = 0; i < n; i++) out[i] = ek_requantize(acc[i], m[i], s[i], zp, lo, hi);
}
void mbqm_many(const int32_t *acc, const int32_t *m, const int32_t *s, int32_t n, int32_t *out) {
    for (int32_t i = 0; i < n; i++) out[i] = ek_mbqm(acc[i], m[i], s[i]);
}
"""

MODEL_HARNESS = r"""
#include <string.h>
#include "ek_model.h"
/* inputs in, steps 0..last run, that step's output copied out */
void host_run(const int8_t *in, uint16_t last, int8_t *out) {
    for (uint16_t i = 0; i < ek_model.n_inputs; i++) {
        memcpy(ek_model.arena + ek_model.inputs[i].offset, in, ek_model.inputs[i].size);
        in += ek_model.inputs[i].size;
    }
    for (uint16_t s = 0; s <= last; s++) ek_model.run_step(s);
    memcpy(out, ek_model.arena + ek_model.steps[last].offset, ek_model.steps[last].size);
}
"""


def compile_library(tmp_path, harness: str, *sources: str) -> ctypes.CDLL:
    (tmp_path / "harness.c").write_text(harness)
    lib = tmp_path / "lib.so"
    subprocess.run(["gcc", "-std=c99", "-O2", "-shared", "-fPIC", f"-I{FIRMWARE}",
                    f"-I{tmp_path}", str(tmp_path / "harness.c"), *sources, "-lm", "-o",
                    str(lib)], check=True, capture_output=True)
    return ctypes.CDLL(str(lib))


def kernel_sources() -> list[str]:
    """The firmware's C files that compute (for a host library): not the board's serving
    (``ek_main.c``, ``ek_protocol.c``, ``ek_train_serve.c``), which calls the board's UART and
    ticks. The kernels call one another, so a generated model links against all of them."""
    serving = {"ek_main.c", "ek_protocol.c", "ek_train_serve.c"}
    return [str(f) for f in sorted(FIRMWARE.glob("ek_*.c")) if f.name not in serving]


def ptr(a: np.ndarray):
    return a.ctypes.data_as(ctypes.c_void_p)


def test_requantization_matches_numba(tmp_path):
    lib = compile_library(tmp_path, ARITH_HARNESS)
    rng = np.random.default_rng(0)
    n = 20000
    acc = np.concatenate([rng.integers(-2**31, 2**31, n // 2),
                          rng.integers(-5000, 5000, n // 2)]).astype(np.int32)
    acc[:4] = [arith.INT32_MIN, arith.INT32_MAX, 0, -1]
    reals = np.exp(rng.uniform(np.log(1e-6), np.log(2.0), n))
    m, s = arith.quantize_multipliers(reals)
    m[:2] = arith.INT32_MIN  # SRDHM's saturating case needs a == b == INT32_MIN
    s[:2] = 0
    # TFLite's precondition (as in tflite-micro): acc * 2^shift fits in int32
    left = np.maximum(s, 0).astype(np.int64)
    acc = np.clip(acc, arith.INT32_MIN >> left, arith.INT32_MAX >> left).astype(np.int32)
    out = np.empty(n, np.int32)
    lib.mbqm_many(ptr(acc), ptr(m), ptr(s), ctypes.c_int32(n), ptr(out))
    expected = [arith.multiply_by_quantized_multiplier(int(a), int(mm), int(ss))
                for a, mm, ss in zip(acc, m, s)]
    np.testing.assert_array_equal(out, np.array(expected, np.int64).astype(np.int32))
    small = (acc // 1024).astype(np.int32)
    q = np.empty(n, np.int8)
    lib.requant_many(ptr(small), ptr(m), ptr(s), ctypes.c_int32(n), ctypes.c_int32(-3),
                     ctypes.c_int32(-128), ctypes.c_int32(100), ptr(q))
    expected = [arith.requantize(int(a), int(mm), int(ss), -3, -128, 100)
                for a, mm, ss in zip(small, m, s)]
    np.testing.assert_array_equal(q, np.array(expected, np.int8))


def all_ops_graph():
    """An int8 Graph using the firmware's original op set (each op's "c" implementation lives
    in its module in ``edgekit.ops``)."""
    torch = pytest.importorskip("torch")
    from torch import nn

    import edgekit

    class AllOps(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 4, 3, stride=2, padding=1)
            self.dw = nn.Conv2d(4, 8, 3, padding=2, dilation=2, groups=4)
            self.dw2 = nn.Conv2d(8, 8, 3, stride=2, padding=2, dilation=2, groups=8)
            self.dw3 = nn.Conv2d(8, 8, 3, padding=1, groups=8)
            self.leaky = nn.LeakyReLU(0.1)
            self.avg = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=True)
            self.maxp = nn.MaxPool2d(3, stride=1, padding=1)
            self.c1 = nn.Conv1d(8, 6, 3, stride=2, padding=1)
            self.fc = nn.Linear(6 * 9, 12)
            self.ln = nn.LayerNorm(12)
            self.gap = nn.AdaptiveAvgPool2d(1)

        def forward(self, x):
            a = nn.functional.relu6(self.conv(x))
            b = self.leaky(self.dw(a))
            c = self.avg(b) + self.maxp(self.avg(b)) + self.dw2(self.dw3(b))
            d = torch.relu(c * c + self.gap(c))
            e = torch.cat([d, c], dim=1).flatten(2)
            f = torch.relu(self.c1(e.reshape(1, 8, 18)))
            return torch.softmax(self.ln(self.fc(f.flatten(1))), -1)

    torch.manual_seed(0)
    x = torch.randn(1, 2, 12, 12)
    graph = edgekit.from_torch(torch.export.export(AllOps().eval(), (x,)))
    calibration = np.random.default_rng(0).standard_normal((64, 2, 12, 12)).astype(np.float32)
    return edgekit.quantize(graph, calibration)


def test_every_op_matches_the_runtime(tmp_path):
    from edgekit.converters.to_c import to_c
    from edgekit.quant.edge import quantize_array
    from edgekit.runtime.executor import Executor

    graph = all_ops_graph()
    to_c(graph, tmp_path)
    lib = compile_library(tmp_path, MODEL_HARNESS, str(FIRMWARE / "ek_kernels.c"),
                          str(tmp_path / "model.c"))
    x = np.random.default_rng(1).standard_normal((20, 2, 12, 12)).astype(np.float32) * 1.5
    xq = quantize_array(x, graph.tensors[graph.inputs[0]].quant)
    float_inside = {"softmax", "layernorm"}
    for sample in xq:
        ref = Executor(graph).run_layers(sample[None], raw=True)
        for step, node in enumerate(graph.nodes):
            want = ref[node.outputs[0]].reshape(-1)
            got = np.empty(want.size, np.int8)
            lib.host_run(ptr(np.ascontiguousarray(sample)), ctypes.c_uint16(step), ptr(got))
            diff = np.abs(got.astype(int) - want.astype(int)).max()
            # softmax/layernorm compute in float (the contract): a step apart at most
            assert diff <= (1 if node.op in float_inside else 0), (node.op, step, diff)


def test_lut_matches_numba(tmp_path):
    """The firmware's ``ek_lut_i8`` against ``int8_elementwise.lut_i8`` on every int8 input,
    with a table built as the int8 pointwise ops build theirs (sigmoid here, an asymmetric
    input quantization so that both ends of the table are used)."""
    from edgekit.graph import QuantParams
    from edgekit.numerics.params import lut_params
    from edgekit.runtime.kernels.int8_elementwise import lut_i8

    lib = compile_library(tmp_path, "", str(FIRMWARE / "ek_kernels.c"))
    table = lut_params(QuantParams([0.1], [-20]), QuantParams([1 / 256], [-128]),
                       lambda v: 1 / (1 + np.exp(-v))).table
    x = np.concatenate([np.arange(-128, 128), np.random.default_rng(4).integers(-128, 128, 999)])
    x = x.astype(np.int8)
    want, got = np.empty_like(x), np.empty_like(x)
    lut_i8(x, table, want)
    lib.ek_lut_i8(ctypes.c_int32(x.size), ptr(np.ascontiguousarray(table)), ptr(x), ptr(got))
    np.testing.assert_array_equal(got, want)
    assert want[0] == -128 and want[255] == 127 and len(np.unique(want)) > 64


@pytest.mark.parametrize("leak,subtract", [(1.0, True), (1.0, False), (0.9, True), (0.75, False)])
def test_neuron_step_matches_numba(tmp_path, leak, subtract):
    """The firmware's float32 IF/LIF step against ``kernels.spiking.neuron_step``, bit for bit
    over 8 steps of random inputs (some exactly at threshold), membranes and outputs."""
    from edgekit.runtime.kernels import spiking

    lib = compile_library(tmp_path, "", str(FIRMWARE / "ek_kernels.c"))
    rng = np.random.default_rng(2)
    k = 1000
    threshold = rng.uniform(0.05, 2.0, k).astype(np.float32)
    v_ref = rng.uniform(-1.0, 1.0, (1, k)).astype(np.float32)
    v_c = v_ref[0].copy()
    for _ in range(8):
        x = rng.normal(0.3, 1.0, (1, k)).astype(np.float32)
        x[0, :50] = threshold[:50] - np.float32(leak) * v_ref[0, :50]  # lands on the threshold
        want = np.empty_like(x)
        spiking.neuron_step(x, threshold, v_ref, np.float32(leak), subtract, want)
        got = np.empty(k, np.float32)
        lib.ek_neuron_step_f32(ctypes.c_int32(k), ptr(x), ptr(threshold), ptr(v_c),
                               ctypes.c_float(leak), ctypes.c_int32(subtract), ptr(got))
        np.testing.assert_array_equal(got, want[0])
        np.testing.assert_array_equal(v_c, v_ref[0])
    assert 0 < np.count_nonzero(got) < k


def test_event_linear_matches_numba(tmp_path):
    """The firmware's event-driven float32 linear against ``kernels.spiking.event_linear``: bit
    for bit on spike vectors (amplitude = threshold, mostly zero), with the same SOP count."""
    from edgekit.runtime.kernels import spiking

    lib = compile_library(tmp_path, "", str(FIRMWARE / "ek_kernels.c"))
    lib.ek_event_linear_f32.restype = ctypes.c_int32
    rng = np.random.default_rng(3)
    n_in, n_out = 64, 32
    w_t = np.ascontiguousarray(rng.standard_normal((n_in, n_out)).astype(np.float32))
    bias = rng.standard_normal(n_out).astype(np.float32)
    for _ in range(20):
        amp = rng.uniform(0.1, 2.0, n_in).astype(np.float32)
        x = np.where(rng.random(n_in) < 0.3, amp, np.float32(0)).astype(np.float32)[None]
        want = np.empty((1, n_out), np.float32)
        count = np.zeros(1, np.int64)
        spiking.event_linear(x, w_t, bias, want, count)
        got = np.empty(n_out, np.float32)
        ops = lib.ek_event_linear_f32(ctypes.c_int32(n_in), ctypes.c_int32(n_out), ptr(w_t),
                                      ptr(bias), ptr(x), ptr(got))
        np.testing.assert_array_equal(got, want[0])
        assert ops == count[0]


@pytest.mark.parametrize(("mode", "align_corners", "half_pixel"), [
    ("nearest", False, False), ("nearest", False, True), ("nearest", True, False),
    ("bilinear", False, False), ("bilinear", False, True), ("bilinear", True, False)])
def test_resize_matches_numba(tmp_path, mode, align_corners, half_pixel):
    """The firmware's ``ek_resize_nearest``/``ek_resize_bilinear`` (ek_resize.c) against the
    runtime's int8 resize, through ``converters.to_c``, on raw inputs over the whole int8
    range: up by a non-integer scale (5x7 -> 8x10) and down (9x6 -> 4x5)."""
    import edgekit
    from edgekit.converters.builder import GraphBuilder
    from edgekit.converters.to_c import to_c
    from edgekit.runtime.executor import Executor

    kernels = kernel_sources()
    rng = np.random.default_rng(5)
    for i, (hw, size) in enumerate((((5, 7), [8, 10]), ((9, 6), [4, 5]))):
        b = GraphBuilder()
        x = b.input("x", (1, 3, *hw))
        b.output(b.node("resize", [x], {"size": size, "mode": mode, "half_pixel": half_pixel,
                                        "align_corners": align_corners}))
        graph = edgekit.quantize(b.build(), rng.standard_normal((8, 3, *hw)).astype(np.float32))
        out = tmp_path / str(i)
        to_c(graph, out)
        lib = compile_library(out, MODEL_HARNESS, *kernels, str(out / "model.c"))
        for sample in rng.integers(-128, 128, (10, 1, 3, *hw)).astype(np.int8):
            want = Executor(graph).run(sample, raw=True).reshape(-1)
            got = np.empty(want.size, np.int8)
            lib.host_run(ptr(np.ascontiguousarray(sample)), ctypes.c_uint16(0), ptr(got))
            np.testing.assert_array_equal(got, want)
