"""Spiking Graphs (converters.snn) on the microcontroller firmware: the float32 spiking kernels
and converters.to_c_snn's time loop, host-compiled against the SpikingExecutor (always, given
gcc) and on the emulated Cortex-M3 (QEMU mps2-an385, given its toolchain) through the ordinary
``mcu:qemu`` target and CLI. Where every kernel is a twin (the CNNs: their one-channel stem
sums in the runtime's dense order) both sides run the same float32 operations in the same order,
so the outputs must be bit-identical and the synaptic operations equal. The MLP's first layer
is the runtime's reassociated matrix product (``linear.gemm_nt``) against the board's ordered
sum: its values differ in the last bits (up to 4.8e-7 measured), which changes the outputs only
where it flips a spike. int8 spiking Graphs (``edgekit.quantize`` of them) run on the integer
kernels: the board's int32 output sums and SOPs must equal the runtime's always, and the floats
the Session's edge makes of them the cpu target's. Every board started here is stopped, and
the last teardown checks that no QEMU process is left behind."""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
from dataclasses import replace

import numpy as np
import pytest

import edgekit
from edgekit.errors import EdgekitError
from edgekit.firmware_bridge.board import QemuBoard, qemu_missing
from edgekit.firmware_bridge.build import FIRMWARE, build, toolchain_missing
from edgekit.firmware_bridge.protocol import Cmd, parse_infer, parse_stats

TIMESTEPS = 6
CNN_TIMESTEPS = 8
_MISSING = toolchain_missing() or qemu_missing()
on_qemu = pytest.mark.skipif(bool(_MISSING), reason=f"MCU target unavailable: {_MISSING}")


def exported(net, x):
    torch = pytest.importorskip("torch")
    return edgekit.from_torch(torch.export.export(net, (torch.from_numpy(x[:1]),)))


@pytest.fixture(scope="module")
def snn():
    torch = pytest.importorskip("torch")
    from edgekit import data, models
    from edgekit.converters.snn import to_snn

    ds = data.digits(8)
    torch.manual_seed(0)
    net = models.train(models.mlp(64, hidden=(32,)), ds.x_train, ds.y_train, epochs=3)
    graph = exported(net, ds.x_test)
    return to_snn(graph, ds.x_train[:300], timesteps=TIMESTEPS), ds, graph


@pytest.fixture(scope="module")
def cnn(digits):
    """The digits CNN with average pooling, trained briefly, as a spiking Graph of T=8 steps
    (about 93 % on the test digits, the ANN 94 %)."""
    torch = pytest.importorskip("torch")
    from edgekit import models
    from edgekit.converters.snn import to_snn

    ds = digits
    torch.manual_seed(2)
    net = models.train(models.digits_cnn(16, pool="avg"), ds.x_train, ds.y_train, epochs=3)
    return to_snn(exported(net, ds.x_test), ds.x_train[:300], timesteps=CNN_TIMESTEPS,
                  balancing="p99.9")


@pytest.fixture(scope="module")
def ds_cnn(digits):
    """ds_cnn (strided stem, depthwise and pointwise convolutions, residual adds, global
    average pool) as a spiking Graph. Untrained: what is checked is that the board computes
    what the runtime computes, and training it well takes longer than this whole module."""
    torch = pytest.importorskip("torch")
    from edgekit import models
    from edgekit.converters.snn import to_snn

    torch.manual_seed(0)
    net = models.ds_cnn(16).eval()
    return to_snn(exported(net, digits.x_test), digits.x_train[:300], timesteps=4)


def reference(graph, x, raw: bool = False):
    """SpikingExecutor's outputs, one sample at a time, and its SOPs per sample; with ``raw``
    (an int8 spiking Graph, int8 ``x``) the int32 sums over the time steps."""
    from edgekit.runtime.spiking import SpikingExecutor

    ex = SpikingExecutor(graph)
    outs = np.stack([ex.run(sample[None], raw)[0] for sample in x])
    return (outs if raw else outs.astype(np.float32),
            [sum(ex.record(sample[None], raw)[1]) for sample in x])


def raw_input(graph, x):
    """``x`` quantized at the edge as every Session does it, for an int8 spiking Graph."""
    from edgekit.quant import quantize_array

    return quantize_array(x, graph.tensors[graph.inputs[0]].quant)


@pytest.fixture(scope="module")
def on_board():
    """``on_board(graph)``: one ``mcu:qemu`` session per Graph for the whole module, all closed
    at its end."""
    sessions = {}

    def session(graph):
        if id(graph) not in sessions:
            sessions[id(graph)] = edgekit.deploy(graph, "mcu:qemu")
        return sessions[id(graph)]

    yield session
    for opened in sessions.values():
        opened.close()


def is_int8(graph):
    return graph.metadata.get("quantized") == "int8"


def exchanged(graph, x):
    """What a Session gives the board for real inputs ``x``: int8 for an int8 Graph."""
    return raw_input(graph, x) if is_int8(graph) else x


@pytest.fixture(scope="module")
def cnn8(cnn, digits):
    """The digits CNN's spiking Graph quantized to int8 (int8 weights and spikes, int32
    currents and membranes)."""
    return edgekit.quantize(cnn, digits.x_train[:128])


@pytest.fixture(scope="module")
def ds_cnn8(ds_cnn, digits):
    return edgekit.quantize(ds_cnn, digits.x_train[:128])


@pytest.fixture(scope="module")
def small8():
    """test_snn's small_cnn (grouped, strided, asymmetrically padded convolutions, a residual
    add) as an int8 SNN of LIF neurons resetting to zero, half-charged, counting spikes."""
    from test_snn import small_cnn

    from edgekit.converters.snn import to_snn

    x = np.random.default_rng(5).random((8, 4, 9, 9)).astype(np.float32)
    snn = to_snn(small_cnn(), x, 6, neuron="lif", reset="zero", v_init=0.5,
                 output="spike_count")
    return edgekit.quantize(snn, x), x


def dilated8():
    """Dilated, strided and padded convolutions around a padded 3x3 average pool (window sums
    clipped at the border) and a global one, LIF neurons leaking 0.9: an int8 SNN."""
    from edgekit.converters.builder import GraphBuilder
    from edgekit.converters.snn import to_snn

    rng = np.random.default_rng(0)
    b = GraphBuilder()
    y = b.input("x", (1, 3, 11, 11))
    y = b.node("conv2d", [y, b.param(rng.normal(size=(6, 3, 3, 3)) * 0.4, "c1.w")],
               {"padding": [2, 1, 2, 1], "dilation": [2, 1], "activation": "relu"}, name="c1")
    y = b.node("avgpool2d", [y], {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1, 1, 1],
                                  "count_include_pad": True}, name="pool")
    y = b.node("conv2d", [y, b.param(rng.normal(size=(4, 6, 3, 3)) * 0.3, "c2.w")],
               {"padding": [2, 2, 2, 2], "dilation": [2, 2], "stride": [1, 2],
                "activation": "relu"}, name="c2")
    y = b.node("global_avgpool", [y], {}, name="gap")
    y = b.node("reshape", [y], {"shape": [4]}, name="flat")
    b.output(b.node("linear", [y, b.param(rng.normal(size=(3, 4)), "fc.w")], name="fc"))
    x = np.random.default_rng(1).random((6, 3, 11, 11)).astype(np.float32)
    return edgekit.quantize(to_snn(b.build(), x, 5, neuron="lif", leak=0.9), x), x


def assert_agrees(got, want, sops, want_sops, exact: bool):
    """Bit-identical outputs and equal SOPs where the kernels are twins; else the same top-1
    everywhere and bit-identical outputs (and equal SOPs) wherever no spike flipped, at least
    in 95 % of the samples."""
    same = [np.array_equal(a, b) for a, b in zip(got, want, strict=True)]
    print(f"\n{sum(same)} of {len(same)} bit-identical, max |diff| {np.abs(got - want).max()}, "
          f"top-1 agreement {(got.argmax(1) == want.argmax(1)).mean():.0%}")
    if exact:
        np.testing.assert_array_equal(got, want)
        assert sops == want_sops
        return
    assert (got.argmax(1) == want.argmax(1)).all()
    assert np.mean(same) >= 0.95
    assert all(a == b for a, b, s in zip(sops, want_sops, same) if s)


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no host C compiler (gcc)")
@pytest.mark.parametrize("case", ["mlp", "mlp-lif-zero-reset", "cnn", "ds_cnn", "int8-mlp",
                                  "int8-small-lif", "int8-dilated", "cnn8", "ds_cnn8"])
def test_time_loop_host_compiled_matches_spiking_executor(request, snn, tmp_path, case):
    """float32: bit-identical where the kernels are twins; int8: the int32 sums equal always."""
    from edgekit.converters.snn import to_snn
    from edgekit.converters.to_c_snn import to_c_snn

    graph, ds, ann = snn
    x = ds.x_test[:100]
    if case == "mlp-lif-zero-reset":  # a LIF network resetting to zero, half-charged at start
        graph = to_snn(ann, ds.x_train[:300], timesteps=TIMESTEPS, neuron="lif", reset="zero",
                       v_init=0.5)
    elif case == "int8-mlp":  # the first layer a linear one on the int8 input less its zp
        graph = edgekit.quantize(graph, ds.x_train[:128])
    elif case == "int8-small-lif":
        graph, x = request.getfixturevalue("small8")
    elif case == "int8-dilated":
        graph, x = dilated8()
    elif case != "mlp":
        graph, x = request.getfixturevalue(case), request.getfixturevalue("digits").x_test[:30]
    int8 = graph.metadata.get("quantized") == "int8"
    to_c_snn(graph, tmp_path)
    (tmp_path / "harness.c").write_text(
        '#include <string.h>\n#include "ek_model.h"\n'
        "uint64_t board_ticks(void) { return 0; }\n"
        "uint32_t host_run(const void *in, void *out) {\n"
        "    memcpy(ek_model.arena + ek_model.inputs[0].offset, in, ek_model.inputs[0].size);\n"
        "    ek_model.run_step(0);\n"
        "    memcpy(out, ek_model.arena + ek_model.outputs[0].offset, ek_model.outputs[0].size);\n"
        "    return ek_model.stats[0];\n"
        "}\n")
    lib_path = tmp_path / "lib.so"
    subprocess.run(["gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
                    f"-I{FIRMWARE}", f"-I{tmp_path}", str(tmp_path / "harness.c"),
                    str(FIRMWARE / "ek_kernels.c"), str(tmp_path / "model.c"), "-lm", "-o",
                    str(lib_path)], check=True)
    lib = ctypes.CDLL(str(lib_path))
    lib.host_run.restype = ctypes.c_uint32
    x = raw_input(graph, x) if int8 else np.ascontiguousarray(x, np.float32)
    want, want_sops = reference(graph, x, raw=int8)
    got, sops = np.empty_like(want), []
    for i, sample in enumerate(x):
        sample = np.ascontiguousarray(sample)
        sops.append(lib.host_run(sample.ctypes.data_as(ctypes.c_void_p),
                                 got[i].ctypes.data_as(ctypes.c_void_p)))
    if int8:
        assert want.dtype == np.int32
    assert_agrees(got, want, sops, want_sops, exact=case not in ("mlp", "mlp-lif-zero-reset"))


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no host C compiler (gcc)")
def test_integer_kernels_wrap_and_truncate_as_the_runtime(tmp_path):
    """At the edges of int32: membranes and currents whose sums leave int32, negative membranes
    leaking (truncation toward zero), products and residual sums that wrap: the firmware's
    integer kernels give the numba kernels' results."""
    from edgekit.runtime.kernels import spiking

    lib_path = tmp_path / "kernels.so"
    subprocess.run(["gcc", "-std=c99", "-O2", "-shared", "-fPIC", f"-I{FIRMWARE}",
                    str(FIRMWARE / "ek_kernels.c"), "-lm", "-o", str(lib_path)], check=True)
    lib = ctypes.CDLL(str(lib_path))
    rng = np.random.default_rng(0)
    n = 4096
    edge = np.iinfo(np.int32)

    def ptr(a):
        return a.ctypes.data_as(ctypes.c_void_p)

    def wide(size):
        return np.concatenate([rng.integers(edge.min, edge.max, size // 2, dtype=np.int32),
                               rng.integers(-3000, 3000, size - size // 2, dtype=np.int32)])

    x, v, threshold = wide(n), wide(n), np.abs(wide(n)) + 1
    amplitude = rng.integers(1, 128, n, dtype=np.int8)
    for leak, subtract in [(32768, 1), (29491, 0), (29491, 1), (1, 1)]:
        want_v, want = v.copy()[None], np.zeros((1, n), np.int8)
        spiking.int_neuron_step(x[None], threshold, want_v, np.int64(leak), bool(subtract),
                                amplitude, want)
        got_v, got = v.copy(), np.zeros(n, np.int8)
        lib.ek_neuron_step_s32(n, ptr(x), ptr(threshold), ptr(got_v), leak, subtract,
                               ptr(amplitude), ptr(got))
        np.testing.assert_array_equal(got_v, want_v[0])
        np.testing.assert_array_equal(got, want[0])
    spikes, current = rng.integers(-128, 128, n, dtype=np.int8), wide(n)
    want, got = np.zeros(n, np.int32), np.zeros(n, np.int32)
    spiking.scaled_add(spikes, np.int32(40_000_000), current, want)
    lib.ek_scaled_add_s32(n, ptr(spikes), 40_000_000, ptr(current), ptr(got))
    np.testing.assert_array_equal(got, want)
    inputs, outputs = 64, 9
    x, bias = wide(inputs), wide(outputs)
    x[::3] = 0  # no event
    w_t = rng.integers(-128, 128, (inputs, outputs), dtype=np.int8)
    want, count, got = np.zeros((1, outputs), np.int32), np.zeros(1, np.int64), np.zeros(
        outputs, np.int32)
    spiking.event_linear(x[None], w_t, bias, want, count)
    ops = lib.ek_event_linear_s32(inputs, outputs, ptr(w_t), ptr(bias), ptr(x), ptr(got))
    np.testing.assert_array_equal(got, want[0])
    assert ops == count[0]


@on_qemu
def test_spiking_mlp_on_qemu_matches_spiking_executor(snn):
    from edgekit.converters.to_c_snn import generate

    graph, ds, _ = snn
    firmware = build(*generate(graph))
    x = np.ascontiguousarray(ds.x_test[:40], np.float32)
    want, want_sops = reference(graph, x)
    board = QemuBoard(firmware.elf)
    try:
        assert board.hello.model_hash == firmware.model_hash
        got, sops = [], []
        for sample in x:
            _, ticks, out = parse_infer(board.link.request(Cmd.INFER, sample.tobytes()), 1)
            got.append(np.frombuffer(out, "<f4"))
            sops.append(parse_stats(board.link.request(Cmd.STATS))[0])
        print(f"spiking MLP T={TIMESTEPS} on the emulated Cortex-M3: {ticks[0]:,} ticks")
    finally:
        board.stop()
    assert_agrees(np.stack(got), want, sops, want_sops, exact=False)
    accuracy = (np.stack(got).argmax(1) == ds.y_test[:40]).mean()
    assert accuracy > 0.5, accuracy


@on_qemu
def test_spiking_cnn_deployed_on_qemu_matches_spiking_executor(cnn, on_board, digits):
    x, y = digits.x_test[:30], digits.y_test[:30]
    want, want_sops = reference(cnn, x)
    board = on_board(cnn)
    got = board.run(x)
    assert got.dtype == np.float32 and got.shape == want.shape
    sops = []
    for sample in x[:3]:  # SOPs of the last inference, over STATS
        board.run(sample[None])
        sops.append(board.stats()["synaptic_ops"])
    assert_agrees(got, want, sops, want_sops[:3], exact=True)  # twins, the first layer too
    accuracy = (got.argmax(1) == y).mean()
    print(f"spiking digits CNN T={CNN_TIMESTEPS} on the board: accuracy {accuracy:.0%}")
    assert accuracy > 0.5


@on_qemu
def test_int8_spiking_cnn_on_qemu_equals_the_runtime_exactly(cnn, cnn8, on_board, digits):
    """The board's int32 sums over the T steps are the runtime's, so are the floats the edge
    makes of them, and its SOPs over STATS are the runtime's count."""
    x, y = digits.x_test[:30], digits.y_test[:30]
    xq = raw_input(cnn8, x)
    want, want_sops = reference(cnn8, xq, raw=True)
    board = on_board(cnn8)
    got = board.run(xq, raw=True)
    assert got.dtype == np.int32 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    with edgekit.deploy(cnn8, "cpu") as cpu:
        floats = board.run(x)
        np.testing.assert_array_equal(floats, cpu.run(x))
    sops = []
    for sample in xq[:3]:
        board.run(sample[None], raw=True)
        sops.append(board.stats()["synaptic_ops"])
    assert sops == want_sops[:3] and min(sops) > 0
    accuracy = (floats.argmax(1) == y).mean()
    float_accuracy = (reference(cnn, x)[0].argmax(1) == y).mean()
    print(f"\nint8 spiking digits CNN T={CNN_TIMESTEPS} on the board: accuracy {accuracy:.0%} "
          f"(float32 {float_accuracy:.0%})")
    assert accuracy >= float_accuracy - 0.1 and accuracy > 0.5


@on_qemu
@pytest.mark.parametrize("model", ["cnn", "cnn8"])
def test_device_profile_reports_instructions_sops_and_fit(request, model, cnn, on_board, digits):
    from edgekit.converters.to_c_snn import ram_bytes

    graph = request.getfixturevalue(model)
    board = on_board(graph)
    int8 = is_int8(graph)
    x = digits.x_test[:1]  # real values, quantized at the edge for an int8 Graph
    run = board.device_profile(x)
    assert run["synaptic_ops"] == reference(graph, exchanged(graph, x), raw=int8)[1][0]
    assert len(run["layer_instructions"]) == len(graph.nodes)
    assert 0 < sum(run["layer_instructions"]) <= run["instructions"]
    weights = sum(graph.tensors[p].nbytes for p in graph.params)
    assert weights < run["flash_bytes"] < weights + 48 * 1024
    assert run["ram_bytes"] >= ram_bytes(graph) > board.hello.arena_bytes
    if int8:
        assert ram_bytes(graph) < ram_bytes(cnn)  # int8 spikes take a byte, not four
    print(f"\n{'int8' if int8 else 'float32'} spiking digits CNN T={CNN_TIMESTEPS} on the "
          f"emulated Cortex-M3: {run['instructions']:,} instructions, "
          f"{run['synaptic_ops']:,} SOPs, flash {run['flash_bytes']:,} B, RAM "
          f"{run['ram_bytes']:,} B (static model RAM {ram_bytes(graph):,} B)")


@on_qemu
@pytest.mark.parametrize("model", ["ds_cnn", "ds_cnn8"])
def test_spiking_ds_cnn_on_qemu(request, model, digits):
    graph = request.getfixturevalue(model)
    int8 = is_int8(graph)
    x = exchanged(graph, digits.x_test[:20])
    want, want_sops = reference(graph, x, raw=int8)
    with edgekit.deploy(graph, "mcu:qemu") as session:
        got = session.run(x, raw=int8)
        run = session.device_profile(digits.x_test[19:20])
    np.testing.assert_array_equal(got, want)
    assert run["synaptic_ops"] == want_sops[-1] > 0
    print(f"\n{'int8' if int8 else 'float32'} spiking ds_cnn T=4: "
          f"{run['instructions']:,} instructions, {run['synaptic_ops']:,} SOPs, "
          f"flash {run['flash_bytes']:,} B, RAM {run['ram_bytes']:,} B")


@on_qemu
def test_cli_deploy_validate_run_and_profile(cnn, digits, tmp_path, capsys):
    from edgekit.cli import main

    model, data, out = tmp_path / "snn.ekm", tmp_path / "data.npz", tmp_path / "y.npy"
    cnn.save(model)
    np.savez(data, x=digits.x_test[:8], y=digits.y_test[:8])
    assert main(["deploy", str(model), "--target", "mcu:qemu", "--validate", str(data),
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["vs_edgekit_runtime"]["max_abs_error"] == 0.0
    assert main(["run", str(model), "--target", "mcu:qemu", "--input", str(data),
                 "--output", str(out)]) == 0
    np.testing.assert_array_equal(np.load(out), reference(cnn, digits.x_test[:8])[0])
    assert main(["profile", str(model), "--target", "mcu:qemu", "--runs", "2", "--warmup",
                 "1", "--per-layer", "--json", str(tmp_path / "p.json")]) == 0
    profile = json.loads((tmp_path / "p.json").read_text())
    assert profile["device_run"]["synaptic_ops"] > 0
    assert all("instructions" in layer["time_ms"] for layer in profile["layers"])


@on_qemu
def test_the_fit_check_counts_membranes_and_buffers(cnn, monkeypatch):
    from edgekit.converters.to_c_snn import ram_bytes
    from edgekit.firmware_bridge import build as build_module
    from edgekit.profile.devices import load_profile

    def no_build(*args, **kwargs):
        raise AssertionError("built although the model does not fit")

    monkeypatch.setattr(build_module, "build", no_build)
    small = replace(load_profile("cortex-m3-qemu"), name="tiny-m0", sram_bytes=16 * 1024)
    with pytest.raises(EdgekitError, match=rf"does not fit tiny-m0: sram: peak activations "
                                           rf"\({ram_bytes(cnn):,} B\)"):
        edgekit.deploy(cnn, "mcu:qemu", profile=small)


@on_qemu
def test_what_the_firmware_cannot_run_is_refused(snn, cnn, cnn8, digits):
    from edgekit.converters.snn import to_snn
    from edgekit.graph import Node

    graph, ds, ann = snn
    rate = to_snn(ann, ds.x_train[:300], timesteps=TIMESTEPS, encoding="rate")
    with pytest.raises(EdgekitError, match="direct-encoded"):
        edgekit.deploy(rate, "mcu:qemu")
    mixed = edgekit.Graph(list(cnn8.inputs), list(cnn8.outputs),
                          {**cnn8.tensors, cnn8.outputs[0]: cnn.tensors[cnn.outputs[0]]},
                          list(cnn8.nodes), dict(cnn8.params), dict(cnn8.metadata))
    with pytest.raises(EdgekitError, match="float32 spiking Graphs and int8 ones"):
        edgekit.deploy(mixed, "mcu:qemu")
    maxpool = edgekit.Graph(list(cnn.inputs), list(cnn.outputs), dict(cnn.tensors),
                            [Node("maxpool2d", n.inputs, n.outputs,
                                  {"kernel": [2, 2], "stride": [2, 2], "padding": [0, 0, 0, 0],
                                   "dilation": [1, 1]}, n.name)
                             if n.op == "avgpool2d" else n for n in cnn.nodes],
                            dict(cnn.params), dict(cnn.metadata))
    with pytest.raises(EdgekitError, match=r"no spiking kernel for \['maxpool2d'\]"):
        edgekit.deploy(maxpool, "mcu:qemu")
