"""Dual activation precision: the 8-bit tape copies, gradients through them against the float
ones, and the training memory they save (counted and measured by tracemalloc)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgekit
from edgekit import data, models
from edgekit.learn.blocks import from_graph
from edgekit.learn.dual import pack
from edgekit.learn.memory import activation_peak, measured_peak


def _graph(net, shape) -> edgekit.Graph:
    return edgekit.from_torch(net.eval(), (torch.zeros(shape),))


@pytest.fixture(scope="module")
def digits16():
    return data.digits(16)


def test_pack_keeps_each_channel_within_half_a_step_and_zeros_exact():
    rng = np.random.default_rng(0)
    a = np.maximum(rng.standard_normal((4, 3, 5, 5)), 0).astype(np.float32)
    a[:, 1] *= 100  # channels of very different ranges each get their own
    p = pack(a)
    back = p.full()
    step = (a.max((2, 3)) - a.min((2, 3))) / 255
    assert (np.abs(back - a) <= step[:, :, None, None] + 1e-6).all()  # half, or one at zero
    assert ((back == 0) == (a == 0)).all()  # a ReLU's derivative reads the same mask
    assert np.array_equal(p[2], back[2])
    assert p.nbytes == a.size + 8 * 4 * 3


def _step(graph, rule, x, y, dual):
    """One step's gradients, tracemalloc's peak and the counted peak."""
    blocks = from_graph(graph)
    peak, grads = measured_peak(blocks, rule, x, y, dual)
    return grads, peak, activation_peak(blocks, rule, len(y), dual)


@pytest.mark.parametrize("build", [lambda: models.digits_cnn(16), lambda: models.ds_cnn(16)],
                         ids=["cnn", "ds-cnn"])
def test_dual_precision_gradients_stay_close_and_memory_drops(build, digits16):
    torch.manual_seed(0)
    graph = _graph(build(), (1, 1, 16, 16))
    x, y = digits16.x_train[:32].copy(), digits16.y_train[:32]
    for rule in ("bp", "dfa", "lls"):
        exact, off, counted_off = _step(graph, rule, x, y, False)
        approx, on, counted_on = _step(graph, rule, x, y, True)
        for name, g in exact.items():
            err = np.linalg.norm(approx[name] - g) / max(np.linalg.norm(g), 1e-12)
            assert err < 0.05, (rule, name, err)
        assert counted_on == pytest.approx(on, rel=0.3), rule
        if rule != "lls":  # a local rule keeps one block: little to pack
            assert on < 0.92 * off and counted_on < 0.92 * counted_off, rule


@pytest.mark.slow
def test_finetune_with_dual_precision_reports_less_memory_and_learns(digits16):
    torch.manual_seed(0)
    graph = _graph(models.digits_cnn(16), (1, 1, 16, 16))
    x, y = digits16.x_train[:400], digits16.y_train[:400]
    runs = {d: edgekit.finetune(graph, x, y, rule="bp", epochs=2, dual_precision=d)
            for d in (False, True)}
    assert (runs[True][1]["memory"]["activations"]
            < 0.92 * runs[False][1]["memory"]["activations"])
    acc = {d: (edgekit.runtime.Executor(g).run(digits16.x_test).argmax(1)
               == digits16.y_test).mean() for d, (g, _) in runs.items()}
    assert acc[True] > 0.8 and abs(acc[True] - acc[False]) < 0.03
