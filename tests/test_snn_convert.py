"""Spiking conversion at scale: the calibration streams in batches that a memory budget sets,
gives the thresholds the whole set at once gives, and the converted SNN is checked against its
ANN, with a warning when it falls short."""

import tracemalloc
import warnings

import numpy as np
import pytest
from test_snn import small_cnn

from edgekit import EdgekitError
from edgekit.cli import main
from edgekit.converters.snn import (
    SpikingConversionWarning,
    _scale_of,
    _scales,
    calibration_plan,
    to_snn,
)
from edgekit.graph import Graph, Node, TensorInfo

torch = pytest.importorskip("torch")


def _x(n: int, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 4, 9, 9)).astype(np.float32)


@pytest.fixture(scope="module")
def ann(digits):
    """The digits CNN with average pooling, trained briefly: it converts well at T = 32."""
    from edgekit import models
    from edgekit.converters.from_torch import from_torch

    torch.manual_seed(0)
    net = models.train(models.digits_cnn(16, pool="avg"), digits.x_train, digits.y_train,
                       epochs=6)
    return from_torch(net, torch.zeros(1, 1, 16, 16))


def test_the_budget_sets_the_batch():
    g, x = small_cnn(), _x(200)
    snn = to_snn(g, x[:4], 4, check=0)
    plans = [calibration_plan(g, snn, len(x), budget, fas=True)
             for budget in (1_200_000, 2_000_000, 2**31)]
    assert [p.batch for p in plans] == sorted(p.batch for p in plans)
    assert 1 <= plans[0].batch < plans[1].batch < plans[2].batch == len(x)
    for plan, budget in zip(plans[:2], (1_200_000, 2_000_000), strict=True):
        assert plan.fixed + plan.batch * plan.per_sample <= budget
        assert plan.fixed + (plan.batch + 1) * plan.per_sample > budget  # the largest that fits


def test_a_budget_below_one_sample_is_one_line():
    with pytest.raises(EdgekitError, match="cannot hold one calibration sample") as err:
        to_snn(small_cnn(), _x(8), 4, calibrate="fas", memory_budget=100_000)
    assert "\n" not in str(err.value)


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_budget_bounds_the_memory_calibration_takes():
    """numpy's arrays are traced by tracemalloc: the peak over a FAS conversion stays within
    the budget plus the calibration data (the caller's, copied once as float32 and padded) and
    the weights, while the whole set at once takes several times more."""
    g, x = small_cnn(), _x(600)
    budget = 1_500_000
    kept = 3 * x.nbytes + sum(p.nbytes for p in g.params.values())
    def bounded_run():
        return to_snn(g, x, 8, calibrate="fas", memory_budget=budget, check=0)

    def whole_run():
        return to_snn(g, x, 8, calibrate="fas", check=0)

    for run in (bounded_run, whole_run):  # numba compiles (traced too) on a path's first call
        run()
    bounded, whole = _peak(bounded_run), _peak(whole_run)
    assert bounded <= budget + kept
    assert whole > 2 * (budget + kept)


@pytest.mark.parametrize("balancing", ["max", "p99.9", 0.7])
@pytest.mark.parametrize("calibrate", [None, "fas"])
def test_streamed_thresholds_equal_the_whole_set(balancing, calibrate):
    """Bit for bit: max and fractions of it stream exactly, p99.9 keeps the order statistics it
    falls between, and FAS adds each sample's errors in the same order whatever the batch; the
    runtime's kernels compute each sample alone, so the currents do not depend on the batch."""
    g, x = small_cnn(), _x(150)
    whole = to_snn(g, x, 4, balancing=balancing, calibrate=calibrate, check=0)
    plan = calibration_plan(g, whole, len(x), 2**31, calibrate == "fas")
    budget = plan.fixed + 17 * plan.per_sample  # 8 batches of 17 and one of 14 (padded)
    assert plan.batch == len(x)
    assert calibration_plan(g, whole, len(x), budget, calibrate == "fas").batch == 17
    streamed = to_snn(g, x, 4, balancing=balancing, calibrate=calibrate, check=0,
                      memory_budget=budget)
    for name, value in whole.params.items():
        np.testing.assert_array_equal(streamed.params[name], value, err_msg=name)


@pytest.mark.parametrize("n", [1, 2, 999, 1000, 1001, 20_000])
def test_streamed_percentile_is_numpys(n):
    """The 99.9th percentile from the kept top values, in float32 as numpy's linear method:
    equal to np.percentile over all the values within one float32 rounding."""
    values = np.random.default_rng(n).standard_normal((n, 1)).astype(np.float32) ** 2
    g = Graph(["x"], ["y"], {"x": TensorInfo((1, 1)), "y": TensorInfo((1, 1))},
              [Node("relu", ["x"], ["y"], {}, "r")], {})
    kept = _scales(g, values, ["y"], "p99.9", 7, False, lambda: None)["y"]
    assert len(kept[0]) <= max(2, n // 500)
    want = float(np.percentile(values, 99.9))
    assert _scale_of(kept, "p99.9") == pytest.approx(want, rel=2e-7, abs=0)


def test_the_check_warns_when_the_snn_collapses(ann, digits):
    x, y = digits.x_train[:256], digits.y_train[:256]
    with pytest.warns(SpikingConversionWarning, match="falls short .* try more time steps"):
        bad = to_snn(ann, x, 1, labels=y)
    report = bad.metadata["conversion_check"]
    assert report["samples"] == 256 and report["timesteps"] == 1
    assert report["ann_accuracy"] - report["snn_accuracy"] > 0.05
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpikingConversionWarning)
        good = to_snn(ann, x, 32, balancing="p99.9", labels=y)
    report = good.metadata["conversion_check"]
    assert report["agreement"] >= 0.95
    assert report["ann_accuracy"] - report["snn_accuracy"] <= 0.05


def test_cli_prints_the_check_and_warns_on_one_line(tmp_path, ann, digits, capsys):
    ann.save(tmp_path / "cnn.ekm")
    np.savez(tmp_path / "calib.npz", x=digits.x_train[:128], y=digits.y_train[:128])
    args = ["convert", str(tmp_path / "cnn.ekm"), "--to-snn", "--calibrate", "none",
            "--calibration-data", str(tmp_path / "calib.npz"), "-o"]
    assert main([*args, str(tmp_path / "t1.ekm"), "--timesteps", "1"]) == 0
    out, err = capsys.readouterr()
    assert "SNN vs ANN on 128 calibration samples: top-1 agreement" in out
    warning = [line for line in err.splitlines() if "warning" in line]
    assert len(warning) == 1 and warning[0].startswith("edgekit: warning: the SNN falls short")
    assert "--timesteps 4" in warning[0] and "--calibrate fas" in warning[0]
    assert main([*args, str(tmp_path / "t32.ekm"), "--timesteps", "32"]) == 0
    out, err = capsys.readouterr()
    assert "accuracy" in out and "warning" not in err
    assert main([*args, str(tmp_path / "t.ekm"), "--calibrate", "fas",
                 "--memory-budget", "0.1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot hold one calibration sample" in err
