"""int8 layers on weight rows (``runtime.lowbit`` / ``ek_lowbit.c``): the ``int4_a8`` and
``ternary_a8`` schemes' packed weights and narrow (12/16-bit, saturating or wrapping)
accumulators, in the runtime against the int8 runtime, host-compiled against the runtime
(always, given gcc) and on the emulated board (given its toolchain and QEMU). Integer sums in
the same order on both sides: every output must be identical."""

from __future__ import annotations

import copy
import ctypes
import shutil
import subprocess

import numpy as np
import pytest

import edgekit
from edgekit.errors import EdgekitError
from edgekit.firmware_bridge.board import qemu_missing
from edgekit.firmware_bridge.build import FIRMWARE, toolchain_missing
from edgekit.graph import Graph, Node, TensorInfo
from edgekit.numerics import formats
from edgekit.quant import accumulators
from edgekit.quant.edge import quantize_array
from edgekit.runtime.executor import Executor

_MISSING = toolchain_missing() or qemu_missing()
on_qemu = pytest.mark.skipif(bool(_MISSING), reason=f"MCU target unavailable: {_MISSING}")
host_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="no host C compiler (gcc)")


def net(rng) -> Graph:
    """conv (general, then grouped and strided, then depthwise), conv1d, linear head."""
    shapes = {"w1": (8, 3, 3, 3), "w2": (8, 4, 3, 3), "w3": (8, 1, 3, 3), "w4": (6, 8, 3),
              "w5": (5, 42)}
    params = {k: rng.standard_normal(s).astype(np.float32) * 0.3 for k, s in shapes.items()}
    params.update(b1=rng.standard_normal(8).astype(np.float32), b5=np.zeros(5, np.float32))
    t = {k: TensorInfo(v.shape) for k, v in params.items()}
    t.update(x=TensorInfo((1, 3, 7, 7)), a=TensorInfo((1, 8, 7, 7)), b=TensorInfo((1, 8, 3, 3)),
             c=TensorInfo((1, 8, 3, 3)), d=TensorInfo((1, 8, 9)), e=TensorInfo((1, 6, 7)),
             f=TensorInfo((1, 42)), y=TensorInfo((1, 5)))
    nodes = [Node("conv2d", ["x", "w1", "b1"], ["a"], {"padding": [1, 1, 1, 1],
                                                       "activation": "relu"}),
             Node("conv2d", ["a", "w2"], ["b"], {"groups": 2, "stride": [2, 2]}),
             Node("conv2d", ["b", "w3"], ["c"], {"groups": 8, "padding": [1, 1, 1, 1]}),
             Node("reshape", ["c"], ["d"], {"shape": [8, 9]}),
             Node("conv1d", ["d", "w4"], ["e"], {"activation": "relu"}),
             Node("reshape", ["e"], ["f"], {"shape": [42]}),
             Node("linear", ["f", "w5", "b5"], ["y"])]
    return Graph(["x"], ["y"], t, nodes, params).validate()


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(21)
    return net(rng), rng.standard_normal((16, 3, 7, 7)).astype(np.float32)


def codes_as_int8(q: Graph) -> Graph:
    """``q`` with every packed weight's codes as an int8 weight (same scales): what the
    packed model computes, in the int8 runtime's own kernels."""
    g = copy.deepcopy(q)
    for name, t in g.tensors.items():
        if t.dtype in ("int4", "ternary"):
            row = int(np.prod(t.shape[1:]))
            g.params[name] = formats.unpack(g.params[name][0], t.dtype, row).reshape(
                t.shape).astype(np.int8)
            t.dtype = "int8"
    return g.validate()


def narrowed(q: Graph, bits: int, mode: str) -> Graph:
    """Every layer of ``q`` at ``bits``, proven or not (the kernels must agree on overflow)."""
    g = copy.deepcopy(q)
    g.metadata["accumulators"] = {name: {"bits": bits, "mode": mode}
                                  for name in accumulators.required_bits(q)}
    return g


@pytest.mark.parametrize("scheme,per_byte", [("int4_a8", 2), ("ternary_a8", 5)])
def test_a8_schemes_store_packed_codes_and_run_as_int8_weights(data, scheme, per_byte,
                                                               tmp_path):
    g, x = data
    q = edgekit.quantize(g, x, scheme=scheme)
    fmt = scheme.split("_")[0]
    assert q.metadata["quantized"] == "int8" and q.metadata["quantization"]["weights"] == fmt
    assert all(q.tensors[w].dtype == fmt for w in ("w1", "w2", "w3", "w4", "w5"))
    assert q.tensors["b1"].dtype == "int32" and q.tensors["a"].dtype == "int8"
    assert q.params["w5"].shape == (1, 5, -(-42 // per_byte))
    plain = codes_as_int8(q)
    assert np.array_equal(Executor(q).run(x), Executor(plain).run(x))
    back = edgekit.load(q.save(tmp_path / "q.ekm"))
    assert np.array_equal(Executor(back).run(x), Executor(q).run(x))
    from edgekit.converters.to_onnx import to_onnx

    with pytest.raises(EdgekitError, match=f"'{scheme}' scheme's {fmt} weights in an int8"):
        to_onnx(q, tmp_path / "q.onnx")


def test_narrow_accumulators_change_only_what_overflows(data):
    """Where the proof passes, a narrow accumulator gives the int32 outputs exactly; at a width
    that overflows, saturating and wrapping both change outputs (and differ)."""
    g, x = data
    q = edgekit.quantize(g, x)
    wide = Executor(q).run(x)
    proven = accumulators.required_bits(q)
    safe = accumulators.narrow(q, max(proven.values()), "wrap")
    assert set(safe.metadata["accumulators"]) == set(proven)
    assert np.array_equal(Executor(safe).run(x), wide)
    assert accumulators.narrow(q, min(proven.values()) - 1).metadata["accumulators"] == {}
    counts = accumulators.overflows(q, x, 10)
    assert sum(c["wrap"] for c in counts.values()) > 0
    outs = {mode: Executor(narrowed(q, 10, mode)).run(x) for mode in accumulators.MODES}
    assert not np.array_equal(outs["saturate"], wide) and not np.array_equal(outs["wrap"], wide)
    assert not np.array_equal(outs["saturate"], outs["wrap"])
    bad = copy.deepcopy(q)
    bad.metadata["accumulators"] = {"y": {"bits": 40, "mode": "wrap"}}
    with pytest.raises(EdgekitError, match="accumulator of 'y'"):
        Executor(bad).run(x)


def saturated_linear(q: Graph, x: np.ndarray, bits: int) -> np.ndarray:
    """The last (linear) layer's int32 sums with every partial sum clamped to ``bits``, in
    numpy, from its int8 input as the runtime computes it."""
    node = q.nodes[-1]
    xin = Executor(q).run_layers(x)[node.inputs[0]].astype(np.int64)
    xin -= q.tensors[node.inputs[0]].quant.zero_point[0]
    w = q.params[node.inputs[1]].astype(np.int64)
    top = 2 ** (bits - 1) - 1
    acc = np.zeros((len(x), w.shape[0]), np.int64)
    for j in range(w.shape[1]):
        acc = np.clip(acc + xin[:, j, None] * w[None, :, j], -top - 1, top)
    return acc


def test_saturation_clamps_every_partial_sum_in_torch_order(data):
    from edgekit.numerics.arith import requantize
    from edgekit.numerics.params import conv_params

    g, x = data
    q = edgekit.quantize(g, x)
    node = q.nodes[-1]
    n = copy.deepcopy(q)  # the linear head only: its input is q's
    n.metadata["accumulators"] = {node.outputs[0]: {"bits": 12, "mode": "saturate"}}
    quant = [q.tensors[t].quant for t in (*node.inputs, node.outputs[0])]
    p = conv_params(quant, q.params[node.inputs[1]], q.params[node.inputs[2]], "none",
                    fully_connected=True)
    acc = saturated_linear(q, x, 12) + q.params[node.inputs[2]]
    want = np.vectorize(requantize)(acc, p.mult, p.shift, p.out_zp, p.lo, p.hi)
    assert (saturated_linear(q, x, 32) != saturated_linear(q, x, 12)).any()  # it clamps
    assert np.array_equal(Executor(n).run_layers(x)[node.outputs[0]], want)


@pytest.fixture(scope="module")
def kernel_objects(tmp_path_factory):
    """The kernels ``net``'s models call (ek_lowbit.c's, ek_kernels.c's copy) compiled once
    for the host (no board, no protocol)."""
    out = tmp_path_factory.mktemp("kernels")
    objects = []
    for name in ("ek_kernels", "ek_lowbit"):
        objects.append(out / f"{name}.o")
        subprocess.run(["gcc", "-std=c99", "-O1", "-fPIC", f"-I{FIRMWARE}", "-c",
                        str(FIRMWARE / f"{name}.c"), "-o", str(objects[-1])], check=True)
    return objects


def host_library(q: Graph, where, objects) -> ctypes.CDLL:
    """``to_c(q)`` compiled for the host, linked with the firmware's kernels."""
    from edgekit.converters.to_c import to_c

    to_c(q, where)
    (where / "harness.c").write_text(
        '#include <string.h>\n#include "ek_model.h"\n'
        "uint64_t board_ticks(void) { return 0; }\n"
        "void host_run(const void *in, void *out) {\n"
        "    memcpy(ek_model.arena + ek_model.inputs[0].offset, in, ek_model.inputs[0].size);\n"
        "    for (uint16_t s = 0; s < ek_model.n_steps; s++) ek_model.run_step(s);\n"
        "    memcpy(out, ek_model.arena + ek_model.outputs[0].offset, "
        "ek_model.outputs[0].size);\n}\n")
    subprocess.run(["gcc", "-std=c99", "-O1", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
                    f"-I{FIRMWARE}", f"-I{where}", str(where / "harness.c"),
                    str(where / "model.c"), *map(str, objects), "-lm", "-o",
                    str(where / "lib.so")], check=True)
    return ctypes.CDLL(str(where / "lib.so"))


@host_gcc
@pytest.mark.parametrize("case", ["int4_a8", "ternary_a8", "12-saturate", "12-wrap"])
def test_host_compiled_rows_kernels_equal_the_runtime(data, case, kernel_objects, tmp_path):
    g, x = data
    if case.endswith("_a8"):
        q = edgekit.quantize(g, x, scheme=case)
    else:
        bits, mode = case.split("-")
        q = narrowed(edgekit.quantize(g, x), int(bits), mode)
        assert sum(c[mode] for c in accumulators.overflows(q, x, int(bits)).values()) > 0
    lib = host_library(q, tmp_path, kernel_objects)
    xq = quantize_array(x, q.tensors["x"].quant)
    want = Executor(q).run(xq, raw=True)
    got = np.empty_like(want)
    for i, sample in enumerate(xq):
        sample = np.ascontiguousarray(sample)
        lib.host_run(sample.ctypes.data_as(ctypes.c_void_p), got[i].ctypes.data_as(
            ctypes.c_void_p))
    np.testing.assert_array_equal(got, want)


def test_c_writer_packs_the_rows_and_refuses_float_activations(data):
    from edgekit.converters.to_c import footprint, generate

    g, x = data
    sizes = {s: footprint(edgekit.quantize(g, x, scheme=s)).const_bytes
             for s in ("int8", "int4_a8", "ternary_a8")}
    weights = sum(int(np.prod(g.params[w].shape)) for w in ("w1", "w2", "w3", "w4", "w5"))
    rows = {"int4_a8": 2, "ternary_a8": 5}
    for scheme, per in rows.items():
        packed = sum(len(w) * -(-int(np.prod(w.shape[1:])) // per)
                     for w in (g.params[k] for k in ("w1", "w2", "w3", "w4", "w5")))
        assert sizes["int8"] - sizes[scheme] == weights - packed
    source = generate(edgekit.quantize(g, x, scheme="ternary_a8"))[0]
    assert source.count("ek_conv2d_rows(") == 4 and "ek_linear_rows(" in source
    with pytest.raises(EdgekitError, match="'int4_a8' or 'ternary_a8'"):
        generate(edgekit.quantize(g, x, scheme="int4"))


@pytest.mark.slow
@on_qemu
def test_board_runs_packed_and_narrow_models_bit_identical(data):
    """int8, int4_a8, ternary_a8 and a 12-bit saturating int8 model on the emulated board:
    the runtime's outputs exactly; the packed images are smaller in flash."""
    from edgekit.targets.mcu import elf_sizes

    g, x = data
    models = {s: edgekit.quantize(g, x, scheme=s) for s in ("int8", "int4_a8", "ternary_a8")}
    models["int8 12-bit"] = narrowed(models["int8"], 12, "saturate")
    flash = {}
    for name, q in models.items():
        with edgekit.deploy(q, "mcu:qemu") as board:
            np.testing.assert_array_equal(board.run(x), Executor(q).run(x))
            flash[name] = elf_sizes(board.firmware.elf)["flash_bytes"]
    print(f"\nflash bytes: {flash}")
    assert flash["int8"] > flash["int4_a8"] > flash["ternary_a8"]
