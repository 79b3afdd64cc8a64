"""The target registry and the peer targets: ONNX Runtime, LiteRT and tflite-micro on the CPU,
and the GPU target (unavailable here, with its reason; its torch backend is checked on the CPU).

Every peer must look like the ``cpu`` target from outside: NCHW numpy in and out, any batch
size, inputs by position or name, and for int8 Graphs float <-> int8 conversion at the edge.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from edgekit import EdgekitError
from edgekit.converters.builder import GraphBuilder
from edgekit.graph import Graph, QuantParams
from edgekit.quant.edge import dequantize_array, quantize_array
from edgekit.targets import deploy, get_target, target_names

PEERS = ["cpu:onnxruntime", "cpu:litert", "cpu:tflite-micro"]


def _w(b: GraphBuilder, shape: tuple[int, ...], hint: str) -> str:
    """A random weight seeded by its name, so every model is the same whichever tests run."""
    rng = np.random.default_rng(zlib.crc32(hint.encode()))
    return b.param(rng.normal(size=shape) / np.sqrt(np.prod(shape[1:])), hint)


def small_cnn(softmax: bool = True) -> Graph:
    b = GraphBuilder()
    x = b.input("x", (1, 3, 8, 8))
    y = b.node("conv2d", [x, _w(b, (8, 3, 3, 3), "c1.w"), _w(b, (8,), "c1.b")],
               {"padding": [1, 1, 1, 1], "activation": "relu"}, name="c1")
    z = b.node("conv2d", [y, _w(b, (8, 1, 3, 3), "dw.w")], {"padding": [1, 1, 1, 1],
                                                              "groups": 8}, name="dw")
    y = b.node("add", [y, z], name="res")
    y = b.node("maxpool2d", [y], {"kernel": [2, 2], "stride": [2, 2]}, name="pool")
    y = b.node("reshape", [y], {"shape": [128]}, name="flat")
    y = b.node("linear", [y, _w(b, (10, 128), "fc.w"), _w(b, (10,), "fc.b")], name="fc")
    b.output(b.node("softmax", [y], name="prob") if softmax else y)
    return b.build()


def two_inputs_two_outputs() -> Graph:
    b = GraphBuilder()
    x, v = b.input("x", (1, 2, 5, 5)), b.input("v", (1, 6))
    b.output(b.node("global_avgpool", [b.node("conv2d", [x, _w(b, (3, 2, 3, 3), "c.w")])]))
    b.output(b.node("linear", [v, _w(b, (4, 6), "fc.w")], {"activation": "relu6"}))
    return b.build()


def int8_conv() -> Graph:
    """A hand-quantized conv + ReLU as docs/quantized-graph.md lays an int8 Graph out."""
    b = GraphBuilder()
    x = b.input("x", (1, 3, 6, 6))
    b.output(b.node("conv2d", [x, b.param(np.zeros((4, 3, 3, 3)), "w"),
                               b.param(np.zeros(4), "b")],
                    {"padding": [1, 1, 1, 1], "activation": "relu"}, name="conv"))
    g = b.build()
    rng = np.random.default_rng(7)
    s_in, s_w = 0.02, rng.uniform(0.002, 0.01, 4)
    tensors = g.tensors
    g.params["w"] = rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    g.params["b"] = rng.integers(-2000, 2000, 4).astype(np.int32)
    for name, dtype, quant in [("x", "int8", QuantParams([s_in], [-3])),
                               ("w", "int8", QuantParams(list(s_w), [0] * 4, 0)),
                               ("b", "int32", QuantParams(list(s_in * s_w), [0] * 4, 0)),
                               (g.outputs[0], "int8", QuantParams([0.05], [-20]))]:
        tensors[name].dtype, tensors[name].quant = dtype, quant
    g.metadata["quantized"] = "int8"
    return g.validate()


def inputs_for(graph: Graph, batch: int, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(batch, *graph.tensors[n].shape[1:])).astype(np.float32)
            for n in graph.inputs]


def available_or_skip(target: str) -> None:
    ok, why = get_target(target).available()
    if not ok:
        pytest.skip(why)


def close(a: np.ndarray, b: np.ndarray) -> None:
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(b).max())))


# --- registry ------------------------------------------------------------------------------

def test_registry_lists_the_new_targets():
    assert {"cpu", *PEERS, "gpu"} <= set(target_names())


def test_unknown_target_lists_the_known_ones():
    with pytest.raises(EdgekitError, match=r"unknown target 'npu'.*cpu:litert"):
        deploy(small_cnn(), "npu")


@pytest.mark.parametrize("target, module, extra", [
    ("cpu:onnxruntime", "onnxruntime", "onnx"),
    ("cpu:litert", "litert", "tflite"),
    ("cpu:tflite-micro", "tflite_micro", "tflite"),
])
def test_missing_backend_package_says_what_to_install(target, module, extra, monkeypatch):
    import importlib

    mod = importlib.import_module(f"edgekit.targets.{module}")
    monkeypatch.setattr(mod, "missing", lambda *modules: modules[0])
    ok, why = get_target(target).available()
    assert not ok and f"pip install 'edgekit[{extra}]'" in why
    with pytest.raises(EdgekitError, match="not available here"):
        deploy(small_cnn(), target)


# --- float Graphs on the CPU peers ---------------------------------------------------------

@pytest.mark.parametrize("target", PEERS)
def test_peer_agrees_with_cpu_at_any_batch(target):
    available_or_skip(target)
    graph = small_cnn()
    with deploy(graph, "cpu") as cpu, deploy(graph, target) as peer:
        for batch in (1, 4, 2):
            (x,) = inputs_for(graph, batch, seed=batch)
            got = peer.run(x)
            assert got.shape == (batch, 10) and got.dtype == np.float32
            close(got, cpu.run(x))


@pytest.mark.parametrize("target", PEERS)
def test_peer_takes_inputs_by_position_or_name(target):
    available_or_skip(target)
    graph = two_inputs_two_outputs()
    x, v = inputs_for(graph, 3)
    expected = deploy(graph, "cpu").run([x, v])
    session = deploy(graph, target)
    for got in (session.run([x, v]), session.run({"v": v, "x": x})):
        assert isinstance(got, list) and len(got) == 2
        for g, e in zip(got, expected, strict=True):
            close(g, e)


@pytest.mark.parametrize("target", PEERS)
def test_peer_run_layers_agree_with_cpu(target):
    available_or_skip(target)
    graph = small_cnn()
    (x,) = inputs_for(graph, 2)
    got = deploy(graph, target).run_layers(x)
    expected = deploy(graph, "cpu").run_layers(x)
    assert set(got) == {n.outputs[0] for n in graph.nodes}
    for name, value in expected.items():
        close(got[name], value)


@pytest.mark.parametrize("target", PEERS)
def test_peer_rejects_bad_inputs_and_options(target):
    available_or_skip(target)
    session = deploy(small_cnn(), target)
    with pytest.raises(EdgekitError, match=r"expected shape \(N, 3, 8, 8\)"):
        session.run(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(EdgekitError, match="takes no option"):
        deploy(small_cnn(), target, bogus=1)


# --- int8 Graphs: conversion at the edge ---------------------------------------------------

@pytest.mark.parametrize("target", PEERS)
def test_int8_session_quantizes_inputs_and_dequantizes_outputs(target):
    available_or_skip(target)
    g = int8_conv()
    (x,) = inputs_for(g, 3)
    session = deploy(g, target)
    raw = session.run(quantize_array(x, g.tensors["x"].quant), raw=True)
    assert raw.dtype == np.int8 and raw.shape == (3, 4, 6, 6)
    np.testing.assert_array_equal(session.run(x),
                                  dequantize_array(raw, g.tensors[g.outputs[0]].quant))
    with pytest.raises(EdgekitError, match="raw=True takes int8"):
        session.run(x, raw=True)


@pytest.mark.parametrize("target", ["cpu:onnxruntime", "cpu:litert"])
def test_int8_peers_within_one_step_of_tflite_micro(target):
    available_or_skip(target)
    g = int8_conv()
    x = quantize_array(inputs_for(g, 4)[0], g.tensors["x"].quant)
    reference = deploy(g, "cpu:tflite-micro").run(x, raw=True).astype(np.int32)
    got = deploy(g, target).run(x, raw=True).astype(np.int32)
    assert np.abs(got - reference).max() <= 1


def test_int8_tflite_micro_matches_edgekit_runtime_bit_for_bit():
    available_or_skip("cpu:tflite-micro")
    g = int8_conv()
    x = quantize_array(inputs_for(g, 4)[0], g.tensors["x"].quant)
    ours = deploy(g, "cpu").run(x, raw=True)
    np.testing.assert_array_equal(deploy(g, "cpu:tflite-micro").run(x, raw=True), ours)


def test_quantized_model_is_bit_exact_in_tflite_micro_and_within_a_step_elsewhere():
    """edgekit.quantize's Graph (no softmax: TFLM's LUT softmax is declared to differ)."""
    from edgekit import quantize

    graph = small_cnn(softmax=False)
    q = quantize(graph, inputs_for(graph, 32, seed=5)[0])
    x = quantize_array(inputs_for(graph, 16, seed=6)[0], q.tensors[q.inputs[0]].quant)
    ours = deploy(q, "cpu").run(x, raw=True)
    np.testing.assert_array_equal(deploy(q, "cpu:tflite-micro").run(x, raw=True), ours)
    for target in ("cpu:litert", "cpu:onnxruntime"):
        got = deploy(q, target).run(x, raw=True)
        diff = np.abs(got.astype(np.int32) - ours)
        print(f"{target}: {(diff > 0).sum()} of {diff.size} int8 outputs differ (max {diff.max()})")
        assert (got.argmax(1) == ours.argmax(1)).mean() >= 0.9


# --- int8 agreement, measured in steps ----------------------------------------------------

def _quantized_cnn() -> tuple[Graph, np.ndarray]:
    """edgekit.quantize's small CNN and 16 float inputs; XNNPACK and ONNX Runtime round a few
    of its int8 values differently from the runtime."""
    from edgekit import quantize

    graph = small_cnn(softmax=False)
    return quantize(graph, inputs_for(graph, 32, seed=5)[0]), inputs_for(graph, 16, seed=6)[0]


def _steps(reference: np.ndarray, test: np.ndarray) -> dict:
    diff = np.abs(reference.astype(np.int64) - test.astype(np.int64))
    return {"values": diff.size, "differing": int((diff > 0).sum()),
            "differing_share": float((diff > 0).mean()), "max_steps": int(diff.max())}


@pytest.mark.parametrize("target", PEERS)
def test_validate_counts_differing_int8_values_and_steps(target):
    """validate's int8 figures against the same counts made here from raw int8 runs."""
    from edgekit.validate import validate

    available_or_skip(target)
    q, x = _quantized_cnn()
    report = validate(q, target, x)
    xq = quantize_array(x, q.tensors[q.inputs[0]].quant)
    with deploy(q, "cpu") as cpu, deploy(q, target) as peer:
        ours, got = cpu.run(xq, raw=True), peer.run(xq, raw=True)
        our_layers, layers = cpu.run_layers(xq, raw=True), peer.run_layers(xq, raw=True)
    assert report["int8_vs_edgekit_runtime"] == pytest.approx(_steps(ours, got))
    assert report["vs_edgekit_runtime"]["top1_agreement"] >= 0.9  # the existing keys stay
    rows = {r["tensor"]: r for r in report["layers"]}
    assert set(rows) == set(layers)
    for name, value in layers.items():
        row, want = rows[name], _steps(our_layers[name], value)
        assert (row["differing"], row["max_steps"]) == (want["differing"], want["max_steps"])
    if target == "cpu:tflite-micro":
        assert report["int8_vs_edgekit_runtime"]["differing"] == 0


def test_litert_layers_come_from_the_kernels_that_run_the_model():
    """XNNPACK's single rounding makes this model's outputs differ from the runtime's; the
    per-layer check must show that drift (it read LiteRT's builtin kernels, which showed none),
    and its last layer must be the whole model's output."""
    available_or_skip("cpu:litert")
    q, x = _quantized_cnn()
    xq = quantize_array(x, q.tensors[q.inputs[0]].quant)
    ours, producers = deploy(q, "cpu").run_layers(xq, raw=True), q.producers()
    for kernels in ("xnnpack", "reference"):
        with deploy(q, "cpu:litert", kernels=kernels) as session:
            out, layers = session.run(xq, raw=True), session.run_layers(xq, raw=True)
        np.testing.assert_array_equal(layers[q.outputs[0]], out)
        differs = [n for n in ours if not np.array_equal(layers[n], ours[n])]
        if kernels == "xnnpack":
            assert not np.array_equal(out, ours[q.outputs[0]])
            assert differs and differs[0] != q.outputs[0]  # seen before the output
        else:  # TFLite's reference kernels: the fixed-point rule, as the runtime computes it,
            # but for one value of their per-channel FULLY_CONNECTED (one step)
            assert [producers[n].op for n in differs] in ([], ["linear"])
    with pytest.raises(EdgekitError, match="kernels is one of xnnpack, builtin, reference"):
        deploy(q, "cpu:litert", kernels="ruy")


def test_cli_litert_kernels_reach_the_target(tmp_path, capsys):
    """``--litert-kernels`` chooses cpu:litert's kernels from run, profile and deploy
    --validate: XNNPACK's outputs drift from the runtime's, TFLite's reference kernels' are
    within the one step of their FULLY_CONNECTED; on another target the flag is an error."""
    import json

    from edgekit import cli

    available_or_skip("cpu:litert")
    q, x = _quantized_cnn()
    model, data = str(q.save(tmp_path / "m.int8.ekm")), tmp_path / "d.npz"
    np.save(tmp_path / "x.npy", x)
    np.savez(data, x=x)
    steps = {}
    for kernels in ("xnnpack", "reference"):
        assert cli.main(["deploy", model, "--target", "cpu:litert", "--validate", str(data),
                         "--json", "--litert-kernels", kernels]) == 0
        steps[kernels] = json.loads(capsys.readouterr().out)["int8_vs_edgekit_runtime"]
        out = tmp_path / f"{kernels}.npy"
        assert cli.main(["run", model, "--input", str(tmp_path / "x.npy"), "--output", str(out),
                         "--target", "cpu:litert", "--litert-kernels", kernels]) == 0
        capsys.readouterr()
        with deploy(q, "cpu:litert", kernels=kernels) as session:
            np.testing.assert_array_equal(np.load(out), session.run(x))
    assert steps["reference"]["max_steps"] <= 1
    assert steps["xnnpack"]["differing"] > steps["reference"]["differing"]
    assert cli.main(["profile", model, "--target", "cpu:litert", "--litert-kernels",
                     "reference", "--runs", "1", "--warmup", "0"]) == 0
    assert "cpu:litert" in capsys.readouterr().out
    assert cli.main(["run", model, "--input", str(tmp_path / "x.npy"),
                     "--litert-kernels", "reference"]) == 2
    assert capsys.readouterr().err == ("edgekit: error: --litert-kernels applies to --target "
                                       "cpu:litert, not 'cpu'\n")


def test_validate_says_when_layers_do_not_reproduce_the_output(monkeypatch):
    """A per-layer run on other kernels than the model's (the fault injected: LiteRT's layers
    read from its builtin kernels while XNNPACK runs the model, as before issue 20) shows
    no drift where the output has one; validate compares the two and says so."""
    from edgekit.converters.to_tflite import tflite_model
    from edgekit.targets import litert
    from edgekit.validate import validate

    available_or_skip("cpu:litert")
    q, x = _quantized_cnn()
    assert validate(q, "cpu:litert", x)["layers_reproduce_outputs"] is True

    def builtin_layers(self, feeds):
        runner = litert._Runner(tflite_model(self.graph, [n.outputs[0] for n in self.graph.nodes]),
                                "builtin")
        runner.invoke(feeds)
        return {n.outputs[0]: runner.get(n.outputs[0]) for n in self.graph.nodes}

    monkeypatch.setattr(litert.LiteRtSession, "_run_layers", builtin_layers)
    report = validate(q, "cpu:litert", x)
    assert report["int8_vs_edgekit_runtime"]["differing"] > 0
    assert report["layers_reproduce_outputs"] is False
    assert any("does not reproduce its own outputs" in note for note in report["notes"])


# --- ONNX Runtime's int8 kernels on CPUs without VNNI --------------------------------------

@pytest.mark.parametrize("machine, flags, risky", [
    ("x86_64", "fpu sse2 avx2 fma", True),
    ("x86_64", "fpu avx2 avx512f avx512_vnni", False),
    ("x86_64", "fpu avx2 avx_vnni", False),
    ("x86_64", "fpu sse2", False),
    ("aarch64", "fp asimd", False),
])
def test_u8s8_saturation_risk_from_cpu_flags(machine, flags, risky, tmp_path, monkeypatch):
    from edgekit.targets import onnxruntime as ort_target

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t: {flags}\n")
    monkeypatch.setattr(ort_target.platform, "machine", lambda: machine)
    assert (ort_target.u8s8_saturation_risk(cpuinfo) is not None) == risky
    if machine == "x86_64":
        assert ort_target.u8s8_saturation_risk(tmp_path / "absent") is not None


def test_ort_int8_turns_optimizations_off_where_kernels_saturate(monkeypatch):
    ort = pytest.importorskip("onnxruntime")
    from edgekit.targets import onnxruntime as ort_target

    off = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    monkeypatch.setattr(ort_target, "u8s8_saturation_risk", lambda: "a test CPU without VNNI")
    session = deploy(int8_conv(), "cpu:onnxruntime")
    assert session.options.graph_optimization_level == off
    assert "optimizations off" in session.notes[0] and "without VNNI" in session.notes[0]
    forced = deploy(int8_conv(), "cpu:onnxruntime", optimize=True)
    assert forced.options.graph_optimization_level != off and not forced.notes
    assert not deploy(small_cnn(), "cpu:onnxruntime").notes  # float models are unaffected
    monkeypatch.setattr(ort_target, "u8s8_saturation_risk", lambda: None)
    assert deploy(int8_conv(), "cpu:onnxruntime").options.graph_optimization_level != off


# --- gpu -----------------------------------------------------------------------------------

def test_gpu_runs_or_says_why_not():
    ok, why = get_target("gpu").available()
    if ok:
        graph = small_cnn()
        (x,) = inputs_for(graph, 2)
        close(deploy(graph, "gpu").run(x), deploy(graph, "cpu").run(x))
        return
    assert "CUDA" in why
    with pytest.raises(EdgekitError, match="not available here"):
        deploy(small_cnn(), "gpu")
    pytest.skip(why)


def torch_graph() -> Graph:
    """The ops whose torch form needs care: asymmetric padding, padded pools, 1-D conv."""
    b = GraphBuilder()
    x = b.input("x", (1, 3, 7, 7))
    y = b.node("conv2d", [x, _w(b, (4, 3, 3, 3), "c.w")], {"padding": [0, 1, 2, 1]})
    y = b.node("maxpool2d", [y], {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1, 1, 1]})
    y = b.node("avgpool2d", [y], {"kernel": [3, 3], "stride": [1, 1], "padding": [1, 0, 1, 1],
                                  "count_include_pad": False})
    y = b.node("avgpool2d", [y], {"kernel": [2, 2], "stride": [1, 1], "padding": [1, 1, 0, 0]})
    y = b.node("reshape", [y], {"shape": [4, 12]})
    y = b.node("conv1d", [y, _w(b, (6, 2, 3), "c1.w")], {"padding": [1, 1], "groups": 2})
    y = b.node("layernorm", [y, b.param(np.ones(12), "g"), b.param(np.zeros(12), "be")])
    y = b.node("leaky_relu", [b.node("mul", [y, y])], {"alpha": 0.2})
    b.output(b.node("softmax", [b.node("concat", [y, y], {"axis": 1})], {"axis": 1}))
    return b.build()


@pytest.mark.parametrize("build", [small_cnn, two_inputs_two_outputs, torch_graph])
def test_gpu_torch_backend_agrees_with_cpu_on_the_cpu_device(build):
    pytest.importorskip("torch")
    from edgekit.targets.gpu import TorchSession

    graph = build()
    inputs = inputs_for(graph, 3)
    got, expected = TorchSession(graph, device="cpu").run(inputs), deploy(graph, "cpu").run(inputs)
    for g, e in zip(*(v if isinstance(v, list) else [v] for v in (got, expected)), strict=True):
        close(g, e)


def test_gpu_torch_backend_runs_a_spiking_graph_as_the_cpu_does():
    pytest.importorskip("torch")
    from edgekit.converters.snn import to_snn
    from edgekit.targets.gpu import TorchSession

    rng = np.random.default_rng(6)
    for options in ({}, {"neuron": "lif", "reset": "zero", "v_init": 0.5}):
        snn = to_snn(small_cnn(softmax=False), rng.random((8, 3, 8, 8), np.float32), 4,
                     **options)
        x = rng.random((3, 3, 8, 8)).astype(np.float32)
        session = TorchSession(snn, device="cpu")
        close(session.run(x), deploy(snn, "cpu").run(x))
        layers, want = session.run_layers(x), deploy(snn, "cpu").run_layers(x)
        for name in want:
            close(layers[name], want[name])
    rate = to_snn(small_cnn(softmax=False), rng.random((8, 3, 8, 8), np.float32), 4,
                  encoding="rate")
    with pytest.raises(EdgekitError, match="direct-encoded"):
        TorchSession(rate, device="cpu")


def test_gpu_torch_backend_refuses_int8():
    pytest.importorskip("torch")
    from edgekit.targets.gpu import TorchSession

    with pytest.raises(EdgekitError, match="float32 Graphs"):
        TorchSession(int8_conv(), device="cpu")
