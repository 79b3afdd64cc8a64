"""In-sensor front-ends: the split spiking Graph (converters.insensor) gives the unsplit Graph's
outputs exactly on every target that runs spiking Graphs, the link's encodings round-trip, and
bandwidth and energy (edgekit.insensor) follow their formulas; the ``insensor`` command."""

import json
import math

import numpy as np
import pytest

import edgekit
from edgekit.cli import main
from edgekit.converters.insensor import decode, encode, frame_bits, run_split, split
from edgekit.converters.snn import to_snn
from edgekit.errors import EdgekitError
from edgekit.firmware_bridge.board import qemu_missing
from edgekit.firmware_bridge.build import toolchain_missing
from edgekit.insensor import Measured, SensorEnergy, designs
from edgekit.runtime import SpikingExecutor

torch = pytest.importorskip("torch")

from edgekit import models  # noqa: E402
from edgekit.converters.from_torch import from_torch  # noqa: E402

_MISSING = toolchain_missing() or qemu_missing()


def _ds_cnn(seed: int = 0):
    torch.manual_seed(seed)
    net = models.ds_cnn(channels=8).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 2)
    return from_torch(net, torch.zeros(1, 1, 16, 16))


@pytest.fixture(scope="module")
def snn(digits):
    return to_snn(_ds_cnn(), digits.x_train[:64], 4, check=0)


@pytest.mark.parametrize("neuron, reset", [("if", "subtract"), ("lif", "zero")])
def test_the_split_pipeline_equals_the_unsplit_graph_exactly(digits, neuron, reset):
    graph = to_snn(_ds_cnn(1), digits.x_train[:64], 5, neuron=neuron, reset=reset, leak=0.8,
                   v_init=0.3, check=0)
    s = split(graph)
    assert [n.op for n in s.sensor.nodes] == ["conv2d", f"{neuron}_neuron"]
    assert s.processor.inputs == [s.current] and s.processor.nodes[0].outputs == [s.cut]
    x = digits.x_test[:40]
    np.testing.assert_array_equal(run_split(s, x), SpikingExecutor(graph).run(x))


def test_onnxruntime_runs_the_processor_exactly_as_the_unsplit_graph(snn, digits):
    pytest.importorskip("onnxruntime")
    from edgekit.insensor import measure

    m = measure(snn, digits.x_test[:24], digits.y_test[:24], targets=("cpu:onnxruntime",))
    assert m.accuracy["insensor"] == m.accuracy["snn"]


@pytest.mark.slow
@pytest.mark.skipif(bool(_MISSING), reason=f"MCU target unavailable: {_MISSING}")
def test_the_board_runs_the_processor_exactly_as_the_unsplit_graph(snn, digits):
    """One firmware build: the board's kernels are the runtime's twins, bit for bit on ds_cnn
    (test_mcu_snn), so the processor on the board is checked against the unsplit runtime."""
    x = digits.x_test[:6]
    np.testing.assert_array_equal(run_split(split(snn), x, "mcu:qemu"),
                                  SpikingExecutor(snn).run(x))


@pytest.mark.parametrize("rate", [0.5, 0.01])
def test_the_link_round_trips_and_takes_the_shorter_encoding(rate):
    train = np.random.default_rng(0).random((4, 8, 5, 5)) < rate
    kind, data = encode(train)
    packed, events = frame_bits(train)
    assert packed == 4 * 200
    assert events == 4 * math.ceil(math.log2(201)) + train.sum() * math.ceil(math.log2(200))
    assert kind == ("bits" if packed <= events else "events") == ("bits" if rate > 0.1
                                                                  else "events")
    assert len(data) == math.ceil(min(packed, events) / 8)
    np.testing.assert_array_equal(decode(kind, data, 4, (8, 5, 5)), train)


def test_split_refusals(snn):
    with pytest.raises(EdgekitError, match="changes from step to step"):
        split(snn, 2)
    with pytest.raises(EdgekitError, match="neuron layer in 1.."):
        split(snn, 0)
    with pytest.raises(EdgekitError, match="float32, direct-encoded spiking Graph"):
        split(_ds_cnn())


def test_bandwidth_and_energy_follow_the_formulas():
    m = Measured(packed_bits=400, event_bits=np.array([100, 300]), sops=1000.0, samples=256,
                 first_macs=5000, rest_macs=20000, neurons_steps=400, snn_sops=1200.0,
                 accuracy={"ann": 0.9, "snn": 0.88, "insensor": 0.88})
    e = SensorEnergy(adc_fom_fj=5.0, link_pj_per_bit=20.0, analog_mac_pj=0.1, spike_pj=0.05,
                     mac_pj=4.6, ac_pj=0.9, sources={})
    rows = {r["name"]: r for r in designs(m, e, adc_bits=12)}
    conv = rows["conventional, ANN"]
    assert conv["bits_per_frame"] == 256 * 12
    readout = 256 * (5.0 * 4096 / 1000 + 12 * 20.0)
    assert conv["energy_pj_per_frame"] == pytest.approx(readout + 25000 * 4.6, abs=0.1)
    adaptive = rows["in-sensor, adaptive"]
    assert adaptive["bits_per_frame"] == 200  # per frame min(400, events): 100 and 300
    assert adaptive["bandwidth_reduction"] == pytest.approx(3072 / 200)
    e_in = 5000 * 0.1 + 400 * 0.05 + 200 * 20.0 + 1000 * 0.9
    assert adaptive["energy_reduction"] == pytest.approx((readout + 25000 * 4.6) / e_in,
                                                         rel=1e-5)
    assert adaptive["accuracy_change"] == pytest.approx(-0.02)
    bayer = {r["name"]: r for r in designs(m, e, adc_bits=12, bayer=True)}
    assert bayer["in-sensor, bit-packed"]["bandwidth_reduction"] == pytest.approx(
        256 * 4 / 3 * 12 / 400)


def test_cli_prints_the_table_and_writes_the_designs(tmp_path, snn, digits, capsys):
    snn.save(tmp_path / "snn.ekm")
    np.savez(tmp_path / "test.npz", x=digits.x_test[:16], y=digits.y_test[:16])
    out = tmp_path / "ins.json"
    assert main(["insensor", str(tmp_path / "snn.ekm"), "--split", "1", "--adc-bits", "12",
                 "--data", str(tmp_path / "test.npz"), "--json", str(out)]) == 0
    assert "in-sensor, bit-packed" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert len(report["designs"]) >= 3
    for design in report["designs"]:
        assert {"name", "bandwidth_reduction", "energy_reduction", "accuracy",
                "accuracy_change"} <= set(design)
    assert all("inferred" in report["sources"][k] for k in
               ("adc_fom_fj", "link_pj_per_bit", "analog_mac_pj", "spike_pj"))
    for argv, what in ((["--split", "2"], "changes from step to step"),
                       (["--adc-bits", "0"], "--adc-bits is 1..24"),
                       (["--timesteps", "3"], "drop --timesteps"),
                       (["--profile", "cortex-m4"], "no complete [insensor] table")):
        assert main(["insensor", str(tmp_path / "snn.ekm"), "--data",
                     str(tmp_path / "test.npz"), *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and what in err, err
    assert edgekit.load(tmp_path / "snn.ekm").metadata["timesteps"] == 4


def test_sensor_data_sets():
    from edgekit.sensor_data import digit_events, photo_patches

    photos = photo_patches(size=8, per_class=10)
    assert photos.x_train.shape[1:] == (3, 8, 8) and len(photos.y_train) + len(
        photos.y_test) == 40
    assert set(np.concatenate([photos.y_train, photos.y_test])) == {0, 1, 2, 3}
    events = digit_events(size=8, shifts=2)
    assert events.x_train.shape[1:] == (2, 8, 8) and events.x_train.max() == 1.0
    on, off = ((events.x_train[:, c] > 0).mean() for c in (0, 1))
    assert 0.01 < on < 0.9 and 0.01 < off < 0.9  # both polarities, not every pixel
