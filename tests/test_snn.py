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
def digits():
    from edgekit import data

    return data.digits(16)


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
