"""Surrogate-gradient fine-tuning of converted SNNs (converters.snn_finetune) and the default
``convert --to-snn``: FAS, then fine-tuning when the calibration data has labels."""

import warnings

import numpy as np
import pytest

import edgekit
from edgekit.cli import main
from edgekit.errors import EdgekitError
from edgekit.runtime import SpikingExecutor

torch = pytest.importorskip("torch")

from edgekit import models  # noqa: E402
from edgekit.converters.from_torch import from_torch  # noqa: E402
from edgekit.converters.snn import to_snn  # noqa: E402
from edgekit.converters.snn_finetune import SpikingModule, finetune_snn  # noqa: E402


@pytest.fixture(scope="module")
def ds_cnn():
    """ds_cnn (depthwise-separable, residual, ReLU6, global pooling), untrained: the torch
    module must compute what the runtime does whatever the weights."""
    torch.manual_seed(0)
    net = models.ds_cnn(channels=8).eval()
    for m in net.modules():  # batch norm statistics that are not the identity
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 2)
    return from_torch(net, torch.zeros(1, 1, 16, 16))


@pytest.fixture(scope="module")
def ann(digits):
    """An MLP trained briefly (seconds): at T = 2 its plain conversion is far below it."""
    torch.manual_seed(0)
    net = models.train(models.mlp(256, (64,)), digits.x_train, digits.y_train, epochs=4)
    return from_torch(net, torch.zeros(1, 1, 16, 16))


def _accuracy(graph, x, y) -> float:
    return float((SpikingExecutor(graph).run(x).argmax(1) == y).mean())


@pytest.mark.parametrize("neuron", ["if", "lif"])
def test_the_torch_module_computes_what_the_runtime_does(ds_cnn, digits, neuron):
    snn = to_snn(ds_cnn, digits.x_train[:32], 3, neuron=neuron, v_init=0.25, check=0)
    with torch.no_grad():
        y = SpikingModule(snn)(torch.from_numpy(digits.x_test[:16])).numpy()
    np.testing.assert_allclose(y, SpikingExecutor(snn).run(digits.x_test[:16]), atol=1e-5)


def test_fine_tuning_trains_weights_and_thresholds(ann, digits):
    x, y = digits.x_train[:128], digits.y_train[:128]
    snn = to_snn(ann, x, 2, check=0)  # plain conversion at T = 2: 64 % here
    tuned = finetune_snn(snn, x, y, epochs=4, validation=0)
    assert _accuracy(tuned, x, y) > _accuracy(snn, x, y) + 0.15  # 88 %
    for name in snn.params:
        if name.endswith(".threshold") or name.endswith(".weight"):
            assert not np.array_equal(tuned.params[name], snn.params[name]), name
        if name.endswith(".v_init"):
            np.testing.assert_array_equal(tuned.params[name], snn.params[name])
    assert min(tuned.params[n].min() for n in tuned.params if n.endswith(".threshold")) > 0
    with torch.no_grad():  # the exported Graph is the trained module
        np.testing.assert_allclose(SpikingModule(tuned)(torch.from_numpy(x[:8])).numpy(),
                                   SpikingExecutor(tuned).run(x[:8]), atol=1e-5)


def test_the_held_out_share_keeps_the_converted_snn_when_training_hurts(ann, digits):
    x, y = digits.x_train[:80], digits.y_train[:80]
    snn = to_snn(ann, x, 2, calibrate="fas", check=0)
    tuned = finetune_snn(snn, x, y, epochs=2, lr=50.0)  # a step that ruins it
    assert tuned.metadata["snn_finetune"]["kept_epoch"] == 0
    for name, value in snn.params.items():
        np.testing.assert_array_equal(tuned.params[name], value)


def test_refusals(ann, digits):
    x, y = digits.x_train[:8], digits.y_train[:8]
    with pytest.raises(EdgekitError, match="one label per input"):
        finetune_snn(to_snn(ann, x, 2, check=0), x, y[:4])
    with pytest.raises(EdgekitError, match="direct-encoded spiking Graph"):
        finetune_snn(ann, x, y)
    with pytest.raises(EdgekitError, match="direct-encoded"):
        finetune_snn(to_snn(ann, x, 2, encoding="rate", check=0), x, y)


def test_cli_default_fine_tunes_with_labels_and_none_is_plain(tmp_path, ann, digits, capsys):
    ann.save(tmp_path / "ds.ekm")  # the MLP
    x, y = digits.x_train[:64], digits.y_train[:64]
    np.savez(tmp_path / "labelled.npz", x=x, y=y)
    np.savez(tmp_path / "inputs.npz", x=x)
    args = ["convert", str(tmp_path / "ds.ekm"), "--to-snn", "--timesteps", "2",
            "--calibration-data"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main([*args, str(tmp_path / "labelled.npz"), "-o", str(tmp_path / "d.ekm")]) == 0
        assert "calibration finetune" in capsys.readouterr().out
        tuned = edgekit.load(tmp_path / "d.ekm")
        assert tuned.metadata["snn_finetune"]["epochs"] == 20
        assert main([*args, str(tmp_path / "inputs.npz"), "-o", str(tmp_path / "f.ekm")]) == 0
        assert "calibration fas" in capsys.readouterr().out
        assert main([*args, str(tmp_path / "labelled.npz"), "--calibrate", "none",
                     "-o", str(tmp_path / "p.ekm")]) == 0
        assert "calibration none" in capsys.readouterr().out
    plain, fas = edgekit.load(tmp_path / "p.ekm"), edgekit.load(tmp_path / "f.ekm")
    reference = to_snn(ann, x, 2, balancing="p99.9", check=0)
    for name, value in reference.params.items():
        np.testing.assert_array_equal(plain.params[name], value)
    assert "snn_finetune" not in fas.metadata
    assert any(not np.array_equal(fas.params[n], reference.params[n])
               for n in reference.params if n.endswith(".threshold"))
    assert main([*args, str(tmp_path / "inputs.npz"), "--calibrate", "finetune",
                 "-o", str(tmp_path / "e.ekm")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs 'y'" in err
