"""Spiking networks: the neuron ops, the event-driven runtime against dense kernels and a numpy
neuron, ANN→SNN conversion accuracy as T grows, and FAS-style calibration at small T."""

import numpy as np
import pytest

import edgekit
from edgekit import EdgekitError
from edgekit.converters.builder import GraphBuilder
from edgekit.converters.snn import to_snn
from edgekit.runtime import Executor, SpikingExecutor

torch = pytest.importorskip("torch")


def _accuracy(scores, y):
    return float((scores.argmax(1) == y).mean())


@pytest.fixture(scope="module")
def ann(digits):
    """The digits CNN with average pooling (what conversion needs), trained briefly."""
    from edgekit import models
    from edgekit.converters.from_torch import from_torch

    net = models.train(models.digits_cnn(16, pool="avg"), digits.x_train, digits.y_train,
                       epochs=6)
    return from_torch(net, torch.zeros(1, 1, 16, 16))


@pytest.fixture(scope="module")
def ann_accuracy(ann, digits):
    return _accuracy(Executor(ann).run(digits.x_test), digits.y_test)


def small_cnn(seed: int = 0):
    """conv-relu, grouped conv with a strided window, residual add, linear: every synapse kind."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder()
    x = b.input("x", (1, 4, 9, 9))
    c1 = b.node("conv2d", [x, b.param(rng.normal(size=(6, 4, 3, 3)) * 0.4, "c1.w"),
                           b.param(rng.normal(size=6) * 0.1, "c1.b")],
                {"padding": [1, 1, 1, 1], "activation": "relu"}, name="c1")
    c2 = b.node("conv2d", [c1, b.param(rng.normal(size=(6, 3, 3, 3)) * 0.4, "c2.w"),
                           b.param(rng.normal(size=6) * 0.1, "c2.b")],
                {"padding": [1, 1, 1, 1], "groups": 2}, name="c2")
    y = b.node("add", [c1, c2], {"activation": "relu"}, name="res")
    y = b.node("conv2d", [y, b.param(rng.normal(size=(5, 6, 3, 3)) * 0.3, "c3.w")],
               {"padding": [0, 1, 2, 0], "stride": [2, 2], "activation": "relu"}, name="c3")
    y = b.node("reshape", [y], {"shape": [5 * 5 * 4]}, name="flat")
    b.output(b.node("linear", [y, b.param(rng.normal(size=(3, 100)) * 0.2, "fc.w"),
                               b.param(rng.normal(size=3), "fc.b")], name="fc"))
    return b.build()


def test_neuron_params_must_be_per_neuron():
    b = GraphBuilder()
    x = b.input("x", (1, 2, 3))
    with pytest.raises(EdgekitError, match="per-sample shape"):
        b.node("if_neuron", [x, b.param(np.ones(2), "th")])
    with pytest.raises(EdgekitError, match="reset must be"):
        b.node("if_neuron", [x, b.param(np.ones((2, 3)), "th2")], {"reset": "soft"})


@pytest.mark.parametrize(("neuron", "reset"), [("if", "subtract"), ("lif", "zero")])
def test_runtime_matches_a_numpy_simulation(neuron, reset):
    """Each neuron's recorded spikes equal a numpy neuron fed the recorded input currents, and
    the output is the time average of the output layer."""
    g = small_cnn()
    x = np.random.default_rng(1).random((3, 4, 9, 9)).astype(np.float32)
    snn = to_snn(g, x, 5, neuron=neuron, reset=reset, v_init=0.25)
    traces, _ = SpikingExecutor(snn).record(x)
    for node in snn.nodes:
        if node.op in ("if_neuron", "lif_neuron"):
            z, th = traces[node.inputs[0]], snn.params[node.inputs[1]]
            v = np.broadcast_to(snn.params[node.inputs[2]], z.shape[1:]).copy()
            for t in range(5):
                v = node.attrs.get("leak", 1.0) * v + z[t]
                fired = v >= th
                np.testing.assert_array_equal(traces[node.outputs[0]][t], np.where(fired, th, 0))
                v = np.where(fired, v - th if reset == "subtract" else 0, v)
    out = SpikingExecutor(snn).run(x)
    np.testing.assert_allclose(out, traces[snn.outputs[0]].mean(0), rtol=1e-6)


def test_event_driven_layers_equal_dense_ones():
    g = small_cnn()
    x = np.random.default_rng(2).random((2, 4, 9, 9)).astype(np.float32)
    snn = to_snn(g, x, 3)
    traces, sops = SpikingExecutor(snn).record(x)
    ex = SpikingExecutor(snn)
    assert sum(ex.event_driven) == 3 and not ex.event_driven[0]  # c2, c3, fc; c1 is dense
    for node, event in zip(snn.nodes, ex.event_driven, strict=True):
        if not event:
            continue
        single = edgekit.Graph([node.inputs[0]], [node.outputs[0]],
                               {n: snn.tensors[n] for n in (*node.inputs, *node.outputs)},
                               [node], {n: snn.params[n] for n in node.inputs[1:]})
        for t in range(3):
            want = Executor(single).run(traces[node.inputs[0]][t])
            np.testing.assert_allclose(traces[node.outputs[0]][t], want, rtol=1e-5, atol=1e-5)
    assert sum(sops) > 0


def test_accuracy_approaches_the_ann_as_t_grows(ann, ann_accuracy, digits):
    calib = digits.x_train[:256]
    acc = {t: _accuracy(SpikingExecutor(to_snn(ann, calib, t, balancing="p99.9"))
                        .run(digits.x_test), digits.y_test) for t in (2, 8, 32)}
    assert acc[2] < acc[8] <= acc[32] + 0.01
    assert acc[32] > ann_accuracy - 0.02


def test_fas_calibration_recovers_accuracy_at_t8(ann, ann_accuracy, digits):
    calib = digits.x_train[:256]
    plain = to_snn(ann, calib, 8)
    fas = to_snn(ann, calib, 8, calibrate="fas")
    acc_plain = _accuracy(SpikingExecutor(plain).run(digits.x_test), digits.y_test)
    acc_fas = _accuracy(SpikingExecutor(fas).run(digits.x_test), digits.y_test)
    assert acc_fas >= acc_plain
    assert acc_fas > ann_accuracy - 0.01


def test_rate_encoding_and_spike_count_output(ann, ann_accuracy, digits):
    snn = to_snn(ann, digits.x_train[:128], 32, encoding="rate", output="spike_count",
                 balancing=0.9)
    ex = SpikingExecutor(snn, seed=3)
    assert all(ex.event_driven[i] for i, n in enumerate(snn.nodes) if n.op == "conv2d")
    assert _accuracy(ex.run(digits.x_test), digits.y_test) > ann_accuracy - 0.15


def test_spiking_graph_saves_and_loads(tmp_path, ann, digits):
    snn = to_snn(ann, digits.x_train[:64], 4, neuron="lif", leak=0.95)
    loaded = edgekit.load(snn.save(tmp_path / "snn.ekm"))
    assert loaded.metadata["timesteps"] == 4
    x = digits.x_test[:8]
    np.testing.assert_array_equal(SpikingExecutor(loaded).run(x), SpikingExecutor(snn).run(x))


def test_conversion_rejects_what_it_cannot_convert(ann, digits):
    with pytest.raises(EdgekitError, match="balancing"):
        to_snn(ann, digits.x_train[:8], 4, balancing="mean")
    snn = to_snn(ann, digits.x_train[:8], 4)
    with pytest.raises(EdgekitError, match="already spiking"):
        to_snn(snn, digits.x_train[:8], 4)


def _independent_sops(graph, traces, node):
    """Σ_t Σ_inputs (input != 0) × fanout, fanout counted tap by tap from the geometry alone.
    In ``small_cnn`` every event-driven layer's input is a neuron layer's spike train."""
    x = traces[node.inputs[0]] != 0  # (T, N, ...)
    out_shape = graph.tensors[node.outputs[0]].shape
    if node.op == "linear":
        return x.sum() * out_shape[-1]
    w = graph.params[node.inputs[1]]
    (sh, sw), (pt, pl), (dh, dw) = (node.attrs["stride"], node.attrs["padding"][:2],
                                    node.attrs["dilation"])
    fanout = np.zeros(x.shape[3:], np.int64)
    for iy in range(fanout.shape[0]):
        for ix in range(fanout.shape[1]):
            for ky in range(w.shape[2]):
                for kx in range(w.shape[3]):
                    ny, nx = iy + pt - ky * dh, ix + pl - kx * dw
                    fanout[iy, ix] += (ny >= 0 and nx >= 0 and ny % sh == 0 and nx % sw == 0
                                       and ny // sh < out_shape[2] and nx // sw < out_shape[3])
    per_group = out_shape[1] // node.attrs["groups"]
    return int((x.sum(axis=(0, 1, 2)) * fanout).sum()) * per_group


def test_synaptic_operations_equal_an_independent_count_from_spike_trains():
    g = small_cnn()
    x = np.random.default_rng(4).random((2, 4, 9, 9)).astype(np.float32)
    snn = to_snn(g, x, 6)
    traces, _ = SpikingExecutor(snn).record(x)
    report = edgekit.profile(snn, inputs=x, runs=2, warmup=1, per_layer=False).data
    spiking = report["spiking"]
    ex = SpikingExecutor(snn)
    want = {node.name: _independent_sops(snn, traces, node) / 2
            for node, event in zip(snn.nodes, ex.event_driven, strict=True) if event}
    assert {s["name"]: s["synaptic_ops"] for s in spiking["synapses"]} == want
    assert report["totals"]["synaptic_ops"] == sum(want.values()) > 0
    for layer in spiking["neurons"]:
        trace = traces[next(n.outputs[0] for n in snn.nodes if n.name == layer["name"]
                            and n.op == "if_neuron")]
        np.testing.assert_allclose(layer["spikes_per_step"],
                                   (trace != 0).reshape(6, 2, -1).sum(2).mean(1))
    assert spiking["first_layer_macs"] == snn.node_macs(snn.nodes[0])
    assert spiking["membrane_bytes"] == 4 * sum(snn.tensors[n.outputs[0]].size
                                                for n in snn.nodes if n.op == "if_neuron")
    assert spiking["energy_ratio_ann_over_snn"] > 0
    assert report["latency_ms"]["p50"] > 0


@pytest.mark.parametrize(("neuron", "reset"), [("if", "subtract"), ("lif", "zero")])
def test_unrolled_onnx_matches_the_runtime(neuron, reset):
    ort = pytest.importorskip("onnxruntime")
    from edgekit.converters.snn_onnx import snn_onnx_model

    g = small_cnn()
    x = np.random.default_rng(5).random((4, 4, 9, 9)).astype(np.float32)
    snn = to_snn(g, x, 6, neuron=neuron, reset=reset, v_init=0.5, output="spike_count")
    model = snn_onnx_model(snn)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {snn.inputs[0]: x})[0]
    want = SpikingExecutor(snn).run(x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_unrolled_onnx_of_the_digits_snn(ann, digits):
    ort = pytest.importorskip("onnxruntime")
    from edgekit.converters.snn_onnx import snn_onnx_model

    snn = to_snn(ann, digits.x_train[:64], 8, calibrate="fas")
    session = ort.InferenceSession(snn_onnx_model(snn).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    x = digits.x_test[:64]
    got, want = session.run(None, {snn.inputs[0]: x})[0], SpikingExecutor(snn).run(x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_cli_converts_runs_deploys_and_profiles_an_snn(tmp_path, ann, ann_accuracy, digits):
    import json
    import subprocess
    import sys

    def cli(*args):
        proc = subprocess.run([sys.executable, "-m", "edgekit.cli", *args], capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    ann.save(tmp_path / "cnn.ekm")
    np.savez(tmp_path / "calib.npz", x=digits.x_train[:128])
    digits.save(tmp_path / "test.npz")
    cli("convert", str(tmp_path / "cnn.ekm"), "--to-snn", "--timesteps", "8",
        "--calibration-data", str(tmp_path / "calib.npz"), "--calibrate", "fas",
        "--to", "ekm,onnx", "-o", str(tmp_path / "out"))
    snn = tmp_path / "out" / "cnn.ekm"
    assert edgekit.load(snn).metadata["timesteps"] == 8 and (tmp_path / "out/cnn.onnx").exists()
    cli("run", str(snn), "--input", str(tmp_path / "test.npz"), "--output",
        str(tmp_path / "y.npy"))
    y = np.load(tmp_path / "y.npy")
    assert _accuracy(y, digits.y_test) > ann_accuracy - 0.02
    assert "accuracy" in cli("deploy", str(snn), "--validate", str(tmp_path / "test.npz"))
    cli("profile", str(snn), "--runs", "3", "--warmup", "1", "--json", str(tmp_path / "p.json"))
    report = json.loads((tmp_path / "p.json").read_text())
    assert report["spiking"]["synaptic_ops"] > 0 and report["totals"]["synaptic_ops"] > 0


def test_onnxruntime_target_runs_the_unrolled_snn():
    pytest.importorskip("onnxruntime")
    snn = to_snn(small_cnn(), np.random.default_rng(6).random((4, 4, 9, 9), np.float32), 4)
    x = np.random.default_rng(7).random((3, 4, 9, 9)).astype(np.float32)
    with edgekit.deploy(snn, target="cpu:onnxruntime") as ort_session, \
            edgekit.deploy(snn, target="cpu") as cpu_session:
        np.testing.assert_allclose(ort_session.run(x), cpu_session.run(x), rtol=1e-5, atol=1e-6)


def test_one_schedule_for_the_runtime_and_the_writers(tmp_path):
    """``edgekit.spiking.schedule``: the first layer once, the tensor it makes held, the layers
    fed by spikes event-driven; what the runtime binds and the firmware's time loop runs, from
    the Graph alone (no runtime, no numba) and all of it per step under rate encoding."""
    import subprocess
    import sys

    from edgekit.converters.to_c_snn import generate
    from edgekit.spiking import schedule

    x = np.random.default_rng(2).random((2, 4, 9, 9)).astype(np.float32)
    snn = to_snn(small_cnn(), x, 3)  # c1, neuron, c2, res, neuron, c3, neuron, flat, fc
    plan = schedule(snn)
    assert plan.static == plan.first_layer == tuple(i == 0 for i in range(9))
    assert plan.event_driven == tuple(i in (2, 5, 8) for i in range(9))
    assert plan.held == {snn.nodes[0].outputs[0]}
    ex = SpikingExecutor(snn)
    assert (ex.static, ex.event_driven, ex.held) == (plan.static, plan.event_driven, plan.held)
    source = generate(snn)[0]
    assert source.count("ops += ") == 3 and source.index("ek_event_conv2d_f32(&p0") < \
        source.index("for (int32_t t = 0;")  # the first layer before the time loop
    rate = schedule(to_snn(small_cnn(), x, 3, encoding="rate"))
    assert not any(rate.static) and rate.event_driven == tuple(i in (0, 2, 5, 8)
                                                               for i in range(9))
    snn.save(tmp_path / "snn.ekm")
    code = ("import sys\nfrom edgekit.graph import load\nfrom edgekit.spiking import schedule\n"
            "schedule(load(sys.argv[1]))\n"
            "assert not [m for m in sys.modules if m.startswith(('numba', 'edgekit.runtime'))]\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "snn.ekm")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_the_spiking_runtime_and_quantizer_import_no_cycle():
    """The runtime reads the integer neurons' parameters from ``edgekit.numerics`` and never
    imports the spiking quantizer, which imports no runtime module at import time either; each
    loads first in a fresh interpreter."""
    import ast
    import subprocess
    import sys
    from pathlib import Path

    def imports(path: Path, everywhere: bool) -> set[str]:
        tree = ast.parse(path.read_text())
        nodes = list(ast.walk(tree) if everywhere else tree.body)
        return ({n.module for n in nodes if isinstance(n, ast.ImportFrom) and n.module}
                | {a.name for n in nodes if isinstance(n, ast.Import) for a in n.names})

    root = Path(__file__).parents[1] / "edgekit"
    for package, everywhere, banned in (("runtime", True, "edgekit.quant.spiking"),
                                        ("quant", False, "edgekit.runtime")):
        for path in (root / package).rglob("*.py"):
            assert not [m for m in imports(path, everywhere) if m.startswith(banned)], path
    for first in ("edgekit.quant.spiking", "edgekit.runtime.spiking"):
        proc = subprocess.run([sys.executable, "-c", f"import {first}"], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr


def test_the_spiking_device_side_never_imports_torch(tmp_path):
    """Converting, quantizing, running, profiling, unrolling to ONNX and writing firmware C for
    a spiking Graph need numpy and numba (and onnx), never torch."""
    import subprocess
    import sys

    x = np.random.default_rng(6).random((4, 4, 9, 9), np.float32)
    small_cnn().save(tmp_path / "ann.ekm")
    np.save(tmp_path / "x.npy", x)
    code = (
        "import sys, numpy as np, edgekit\n"
        "from edgekit.converters.snn import to_snn\n"
        "from edgekit.converters.snn_onnx import snn_onnx_model\n"
        "from edgekit.converters.to_c_snn import generate\n"
        "from edgekit.profile.devices import load_profile\n"
        "from edgekit.profile.spiking import spiking_counts\n"
        "import edgekit.targets.mcu, edgekit.firmware_bridge.board\n"
        "x = np.load(sys.argv[2])\n"
        "snn = to_snn(edgekit.load(sys.argv[1]), x, 4, calibrate='fas')\n"
        "for g in (snn, edgekit.quantize(snn, x)):\n"
        "    edgekit.deploy(g, 'cpu').run(x)\n"
        "    spiking_counts(g, x, load_profile('cortex-m4'))\n"
        "    snn_onnx_model(g)\n"
        "    generate(g)\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "ann.ekm"),
                           str(tmp_path / "x.npy")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
