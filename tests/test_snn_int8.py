"""int8 spiking networks (edgekit.quant.spiking): accuracy against the float SNN, integer
neurons against numpy, ONNX Runtime equal to the runtime bit for bit, SOPs, files, targets."""

import numpy as np
import pytest
from test_snn import _independent_sops, small_cnn

import edgekit
from edgekit import EdgekitError
from edgekit.converters.builder import GraphBuilder
from edgekit.converters.snn import to_snn
from edgekit.numerics.params import leak_multiplier, spike_amplitudes
from edgekit.quant import quantize_array
from edgekit.runtime import SpikingExecutor

torch = pytest.importorskip("torch")


def _accuracy(scores, y):
    return float((scores.argmax(1) == y).mean())


@pytest.fixture(scope="module")
def cnn(digits):
    from edgekit import models
    from edgekit.converters.from_torch import from_torch

    torch.manual_seed(0)  # the initial weights: the accuracies below are measured with these
    net = models.train(models.digits_cnn(16, pool="avg"), digits.x_train, digits.y_train,
                       epochs=4)
    return from_torch(net, torch.zeros(1, 1, 16, 16))


@pytest.fixture(scope="module")
def mlp(digits):
    from edgekit import models
    from edgekit.converters.from_torch import from_torch

    torch.manual_seed(0)
    net = models.train(models.mlp(256, (64, 32)), digits.x_train, digits.y_train, epochs=6)
    return from_torch(net, torch.zeros(1, 1, 16, 16))


def _raw_input(q, x):
    return quantize_array(x, q.tensors[q.inputs[0]].quant)


def _ort_equal(q, x):
    """ONNX Runtime's integer sums equal the runtime's, and so do the floats of both targets."""
    ort = pytest.importorskip("onnxruntime")
    from edgekit.converters.snn_onnx import snn_onnx_model

    session = ort.InferenceSession(snn_onnx_model(q).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    xq = _raw_input(q, x)
    got = session.run(None, {q.inputs[0]: xq})[0]
    want = SpikingExecutor(q).run(xq, raw=True)
    assert got.dtype == want.dtype == np.int32
    np.testing.assert_array_equal(got, want)
    with edgekit.deploy(q, "cpu:onnxruntime") as a, edgekit.deploy(q, "cpu") as b:
        np.testing.assert_array_equal(a.run(x), b.run(x))


@pytest.mark.parametrize("calibrate", [None, "fas"])
def test_int8_accuracy_matches_the_float_snn(cnn, mlp, digits, calibrate):
    """T = 8, 128 calibration samples; measured float / int8: the digits CNN (4 epochs)
    47.1 / 47.4 % (max: too few steps for its thresholds), 95.8 / 96.1 % (FAS); the MLP
    88.9 / 89.4 % (max), 94.4 / 94.4 % (FAS). int8 stays within a point of float32."""
    calib = digits.x_train[:128]
    for ann in (cnn, mlp):
        snn = to_snn(ann, calib, 8, calibrate=calibrate)
        q = edgekit.quantize(snn, calib)
        assert q.metadata["quantized"] == "int8" and q.metadata["timesteps"] == 8
        acc_float = _accuracy(SpikingExecutor(snn).run(digits.x_test), digits.y_test)
        acc_int8 = _accuracy(SpikingExecutor(q).run(digits.x_test), digits.y_test)
        assert acc_int8 >= acc_float - 0.01, (acc_float, acc_int8)
    _ort_equal(q, digits.x_test[:64])  # the MLP: int32 MatMul in ONNX


def test_digits_cnn_onnx_is_exact(cnn, digits):
    snn = to_snn(cnn, digits.x_train[:64], 8, calibrate="fas")
    _ort_equal(edgekit.quantize(snn, digits.x_train[:64]), digits.x_test[:96])


@pytest.mark.parametrize(("neuron", "reset", "output"),
                         [("if", "subtract", "membrane"), ("if", "zero", "membrane"),
                          ("lif", "subtract", "spike_count"), ("lif", "zero", "membrane")])
def test_onnx_runtime_equals_the_runtime_exactly(neuron, reset, output):
    """small_cnn has every synapse kind and a residual add of spikes and a current."""
    x = np.random.default_rng(5).random((6, 4, 9, 9)).astype(np.float32)
    snn = to_snn(small_cnn(), x, 6, neuron=neuron, reset=reset, v_init=0.5, output=output)
    _ort_equal(edgekit.quantize(snn, x), x)


def test_ds_cnn_onnx_is_exact(digits):
    """Depthwise convolutions, ReLU6 thresholds, residual adds, global average pooling."""
    from edgekit import models
    from edgekit.converters.from_torch import from_torch

    torch.manual_seed(0)
    ann = from_torch(models.ds_cnn(16).eval(), torch.zeros(1, 1, 16, 16))
    q = edgekit.quantize(to_snn(ann, digits.x_train[:64], 6), digits.x_train[:64])
    assert {"scaled_add", "global_sum"} <= {node.op for node in q.nodes}  # add, global pool
    _ort_equal(q, digits.x_test[:32])


@pytest.mark.parametrize(("neuron", "reset"), [("if", "subtract"), ("lif", "zero")])
def test_integer_neurons_match_numpy(neuron, reset):
    """Recorded int32 currents through a numpy integer neuron give the recorded int8 spikes;
    the output is the edge's time average of the output layer's sum."""
    x = np.random.default_rng(1).random((3, 4, 9, 9)).astype(np.float32)
    q = edgekit.quantize(to_snn(small_cnn(), x, 5, neuron=neuron, reset=reset, v_init=0.25), x)
    traces, _ = SpikingExecutor(q).record(x)
    for node in q.nodes:
        if node.op not in ("if_neuron", "lif_neuron"):
            continue
        z, th = traces[node.inputs[0]].astype(np.int64), q.params[node.inputs[1]]
        amplitude = spike_amplitudes(th, q.tensors[node.inputs[0]].quant,
                                     q.tensors[node.outputs[0]].quant)
        leak = leak_multiplier(node.attrs.get("leak", 1.0))
        v = np.broadcast_to(q.params[node.inputs[2]], z.shape[1:]).astype(np.int64)
        for t in range(5):
            v = np.trunc(v * leak / 2**15).astype(np.int64) + z[t]
            fired = v >= th
            np.testing.assert_array_equal(traces[node.outputs[0]][t], np.where(fired, amplitude, 0))
            v = np.where(fired, v - th if reset == "subtract" else 0, v)
    out = q.outputs[0]
    scale = np.asarray(q.tensors[out].quant.scale, np.float32) / np.float32(5)
    np.testing.assert_allclose(SpikingExecutor(q).run(x), traces[out].sum(0) * scale, rtol=1e-6)
    layers = SpikingExecutor(q).run_layers(x)  # in real units, as run's output
    np.testing.assert_array_equal(layers[out], SpikingExecutor(q).run(x))


def test_synaptic_operations_follow_the_float_counting_rule():
    x = np.random.default_rng(4).random((2, 4, 9, 9)).astype(np.float32)
    q = edgekit.quantize(to_snn(small_cnn(), x, 6), x)
    traces, _ = SpikingExecutor(q).record(x)
    report = edgekit.profile(q, inputs=x, runs=2, warmup=1, per_layer=False).data
    ex = SpikingExecutor(q)
    want = {node.name: _independent_sops(q, traces, node) / 2
            for node, event in zip(q.nodes, ex.event_driven, strict=True) if event}
    spiking = report["spiking"]
    assert {s["name"]: s["synaptic_ops"] for s in spiking["synapses"]} == want
    assert report["totals"]["synaptic_ops"] == sum(want.values()) > 0
    assert "0.1 pJ x SOPs" in spiking["basis"] and "0.3 pJ" in spiking["basis"]


def test_saves_loads_and_quantizes_once(tmp_path, mlp, digits):
    q = edgekit.quantize(to_snn(mlp, digits.x_train[:64], 4, neuron="lif", leak=0.95),
                         digits.x_train[:64])
    loaded = edgekit.load(q.save(tmp_path / "snn8.ekm"))
    x = digits.x_test[:16]
    np.testing.assert_array_equal(SpikingExecutor(loaded).run(x), SpikingExecutor(q).run(x))
    with pytest.raises(EdgekitError, match="already quantized"):
        edgekit.quantize(q, digits.x_train[:8])


def _conv_pool_conv(second: np.ndarray, relu: bool = True):
    b = GraphBuilder()
    x = b.input("x", (1, 1, 8, 8))
    y = b.node("conv2d", [x, b.param(np.full((32, 1, 3, 3), 0.1), "c1.w")],
               {"padding": [1, 1, 1, 1], "activation": "relu" if relu else "none"}, name="c1")
    y = b.node("avgpool2d", [y], {"kernel": [2, 2], "stride": [2, 2]}, name="pool")
    y = b.node("conv2d", [y, b.param(second, "c2.w")], {"activation": "relu"}, name="c2")
    y = b.node("reshape", [y], {"shape": [4 * 2 * 2]}, name="flat")
    b.output(b.node("linear", [y, b.param(np.ones((3, 16)), "fc.w")], name="fc"))
    return b.build()


def test_what_has_no_int8_spiking_form_says_so():
    x = np.random.default_rng(0).random((8, 1, 8, 8)).astype(np.float32)
    rate = to_snn(small_cnn(), np.random.default_rng(0).random((4, 4, 9, 9), np.float32), 4,
                  encoding="rate")
    with pytest.raises(EdgekitError, match="direct encoding"):
        edgekit.quantize(rate, np.random.default_rng(0).random((4, 4, 9, 9), np.float32))
    broken = to_snn(_conv_pool_conv(np.ones((4, 32, 3, 3))), x, 4)
    broken.params["c2.w"][0, 0, 0, 0] = np.nan
    with pytest.raises(EdgekitError, match="NaN"):
        edgekit.quantize(broken, x)
    no_neuron = to_snn(_conv_pool_conv(np.ones((4, 32, 3, 3)), relu=False), x, 4)
    with pytest.raises(EdgekitError, match="no neuron between"):
        edgekit.quantize(no_neuron, x)
    pytest.importorskip("onnx")  # the writer needs it
    from edgekit.converters.snn_onnx import snn_onnx_model

    # 32 x 3 x 3 weights of 127 on window sums up to 4 x 127 reach 2^24 in a float32 Conv
    wide = edgekit.quantize(to_snn(_conv_pool_conv(np.ones((4, 32, 3, 3))), x, 4), x)
    with pytest.raises(EdgekitError, match="2\\^24"):
        snn_onnx_model(wide)
    assert SpikingExecutor(wide).run(x).shape == (8, 3)  # the runtime still runs it


def test_cli_converts_to_an_int8_snn(tmp_path, mlp, digits):
    import subprocess
    import sys

    mlp.save(tmp_path / "mlp.ekm")
    np.savez(tmp_path / "calib.npz", x=digits.x_train[:64])
    proc = subprocess.run([sys.executable, "-m", "edgekit.cli", "convert",
                           str(tmp_path / "mlp.ekm"), "--to-snn", "--timesteps", "4",
                           "--calibration-data", str(tmp_path / "calib.npz"),
                           "--quantize", "int8", "--to", "ekm,onnx", "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    q = edgekit.load(tmp_path / "out" / "mlp.ekm")
    assert q.metadata["quantized"] == "int8" and q.metadata["timesteps"] == 4
    assert (tmp_path / "out" / "mlp.onnx").exists()
    assert edgekit.load(tmp_path / "out" / "mlp.float.ekm").metadata["timesteps"] == 4


# The integer ops of int8 spiking Graphs, one node each: input (dtype, shape) and attributes.
INTEGER_OPS = {
    "sum_pool2d": ([("int8", (2, 3, 7, 7))], {"kernel": [3, 3], "stride": [2, 2],
                                               "padding": [1, 1, 1, 1]}),
    "global_sum": ([("int32", (2, 4, 5, 5))], {}),
    "scaled_add": ([("int8", (2, 3, 4, 4)), ("int32", (2, 3, 4, 4))], {"multiplier": 37}),
}


def _integer_op(op):
    """A one-node int8 spiking Graph (T = 1) of ``op`` and integer inputs for it."""
    from edgekit.graph import Graph, Node, QuantParams, TensorInfo
    from edgekit.ops import OPS

    specs, attrs = INTEGER_OPS[op]
    rng = np.random.default_rng(3)
    tensors, xs = {}, []
    for i, (dtype, shape) in enumerate(specs):
        tensors[f"x{i}"] = TensorInfo((1, *shape[1:]), dtype, QuantParams([0.5], [0]))
        bound = 127 if dtype == "int8" else 1 << 12  # sums stay exact in float64 and float32
        xs.append(rng.integers(-bound, bound, shape, endpoint=True).astype(dtype))
    out = OPS[op].infer([t.shape for t in tensors.values()], attrs)
    tensors["y"] = TensorInfo(tuple(out), "int32", QuantParams([0.25], [0]))
    graph = Graph(list(tensors)[:-1], ["y"], tensors, [Node(op, list(tensors)[:-1], ["y"], attrs)],
                  {}, {"timesteps": 1, "quantized": "int8"})
    return graph.validate(), xs


@pytest.mark.parametrize("op", sorted(INTEGER_OPS))
def test_integer_ops_compute_their_references_exactly(op):
    """Each op's runtime kernel (spiking_int8) and unrolled ONNX (onnx_spiking) give the
    integers of its numpy reference, bit for bit; the firmware's are the suites above's."""
    from edgekit.ops import OPS

    graph, xs = _integer_op(op)
    want = OPS[op].reference(*xs, **INTEGER_OPS[op][1]).astype(np.int64)
    got = SpikingExecutor(graph).run(xs if len(xs) > 1 else xs[0], raw=True)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)
    ort = pytest.importorskip("onnxruntime")
    from edgekit.converters.snn_onnx import snn_onnx_model

    session = ort.InferenceSession(snn_onnx_model(graph).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(session.run(None, dict(zip(graph.inputs, xs)))[0], want)


def _pooled_residual_cnn():
    """conv-relu, a residual add onto a second conv, an average pool, a conv, a global average
    pool and a linear: every integer op of an int8 spiking Graph."""
    rng = np.random.default_rng(0)
    b = GraphBuilder()
    x = b.input("x", (1, 2, 8, 8))
    c1 = b.node("conv2d", [x, b.param(rng.normal(size=(4, 2, 3, 3)) * 0.4, "c1.w"),
                           b.param(rng.normal(size=4) * 0.1, "c1.b")],
                {"padding": [1, 1, 1, 1], "activation": "relu"}, name="c1")
    c2 = b.node("conv2d", [c1, b.param(rng.normal(size=(4, 4, 3, 3)) * 0.3, "c2.w"),
                           b.param(rng.normal(size=4) * 0.1, "c2.b")],
                {"padding": [1, 1, 1, 1]}, name="c2")
    y = b.node("add", [c2, c1], {"activation": "relu"}, name="res")
    y = b.node("avgpool2d", [y], {"kernel": [2, 2], "stride": [2, 2]}, name="pool")
    y = b.node("conv2d", [y, b.param(rng.normal(size=(6, 4, 3, 3)) * 0.3, "c3.w"),
                          b.param(rng.normal(size=6) * 0.1, "c3.b")],
               {"padding": [1, 1, 1, 1], "activation": "relu"}, name="c3")
    y = b.node("global_avgpool", [y], name="gap")
    y = b.node("reshape", [y], {"shape": [6]}, name="flat")
    b.output(b.node("linear", [y, b.param(rng.normal(size=(3, 6)), "fc.w"),
                               b.param(rng.normal(size=3), "fc.b")], name="fc"))
    return b.build()


def test_the_int8_snn_says_what_it_computes():
    """Pools and residual adds become the integer ops (the add's operands spikes first, its
    multiplier the ratio of their scales), nothing in metadata; the float ops stay float."""
    from edgekit.graph import Node
    from edgekit.numerics.params import scaled_add_params

    x = np.random.default_rng(1).random((8, 2, 8, 8)).astype(np.float32)
    snn = to_snn(_pooled_residual_cnn(), x, 4)
    q = edgekit.quantize(snn, x)
    assert [n.op for n in snn.nodes if n.op in ("add", "avgpool2d", "global_avgpool")] == \
        ["add", "avgpool2d", "global_avgpool"]  # the float SNN is left as it was
    ops = [n.op for n in q.nodes]
    assert {"sum_pool2d", "global_sum", "scaled_add"} <= set(ops)
    assert not {"add", "avgpool2d", "global_avgpool"} & set(ops)
    add = next(n for n in q.nodes if n.op == "scaled_add")
    spikes, current = (q.tensors[n] for n in add.inputs)
    assert (spikes.dtype, current.dtype) == ("int8", "int32")
    assert add.attrs["multiplier"] == scaled_add_params(spikes.quant, current.quant).multiplier
    mixed = [Node("scaled_add", n.inputs, n.outputs, {"multiplier": 2}) if n.op == "add" else n
             for n in snn.nodes]
    with pytest.raises(EdgekitError, match="integer op"):  # no integer op in a float SNN
        edgekit.Graph(snn.inputs, snn.outputs, dict(snn.tensors), mixed, dict(snn.params),
                      dict(snn.metadata)).validate()
    ann_meta = {k: v for k, v in snn.metadata.items() if k != "timesteps"}
    with pytest.raises(EdgekitError, match="belong.* to spiking Graphs"):  # neurons need T
        edgekit.Graph(snn.inputs, snn.outputs, dict(snn.tensors), list(snn.nodes),
                      dict(snn.params), ann_meta).validate()


def test_an_int8_snn_saved_before_the_integer_ops_loads_upgraded(tmp_path):
    """Files written when int8 SNNs kept avgpool2d, global_avgpool and add (meaning window sums
    and the scaled add) load as the integer ops, computing the same integers."""
    import json
    import zipfile

    x = np.random.default_rng(2).random((6, 2, 8, 8)).astype(np.float32)
    q = edgekit.quantize(to_snn(_pooled_residual_cnn(), x, 4), x)
    new = q.save(tmp_path / "new.ekm")
    with zipfile.ZipFile(new) as zf:
        doc, arrays = json.loads(zf.read("graph.json")), zf.read("params.npz")
    for node in doc["nodes"]:  # the old form: the current first, the multiplier unstored
        if node["op"] == "scaled_add":
            node.update(op="add", inputs=node["inputs"][::-1], attrs={"activation": "none"})
        elif node["op"] == "sum_pool2d":
            node.update(op="avgpool2d", attrs={**node["attrs"], "count_include_pad": True})
        elif node["op"] == "global_sum":
            node["op"] = "global_avgpool"
    with zipfile.ZipFile(tmp_path / "old.ekm", "w") as zf:
        zf.writestr("graph.json", json.dumps(doc))
        zf.writestr("params.npz", arrays)
    old = edgekit.load(tmp_path / "old.ekm")
    assert [(n.op, n.inputs, n.attrs) for n in old.nodes] == \
        [(n.op, n.inputs, n.attrs) for n in q.nodes]
    xq = _raw_input(q, x)
    np.testing.assert_array_equal(SpikingExecutor(old).run(xq, raw=True),
                                  SpikingExecutor(q).run(xq, raw=True))
