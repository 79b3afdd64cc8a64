"""The fused cpu runtime (``edgekit/runtime/fused.py``): a Program compiled into one function
gives the step-by-step Program's outputs bit for bit, and tflite-micro's in int8; anything it
cannot take (a failed compile, no cache folder, several outputs, a NaN) runs the ordinary way."""

from __future__ import annotations

import functools
import tempfile

import numpy as np
import pytest
import torch
from torch import nn

import edgekit
from edgekit import zoo
from edgekit.errors import EdgekitError
from edgekit.quant import quantize_array
from edgekit.runtime import Executor
from edgekit.targets import get_target


class _Block(nn.Module):
    """Depthwise-separable block with ReLU6 and a residual add: none of edgekit.models."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels), nn.ReLU6(),
            nn.Conv2d(channels, channels, 1), nn.BatchNorm2d(channels))

    def forward(self, x):
        return torch.relu(x + self.body(x))


def _small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 8, 3, stride=2, padding=1), nn.ReLU6(), _Block(8),
                         nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8 * 3 * 3, 5)).eval()


@functools.cache
def _graphs(name: str) -> tuple:
    """(float Graph, int8 Graph, inputs) of a zoo network or of the small net above."""
    if name == "small":
        model, x = _small_net(), np.random.default_rng(0).standard_normal((40, 2, 12, 12))
    else:
        model, x = zoo.network(name), zoo.sample_inputs(name, 40, seed=3)
    x = x.astype(np.float32)
    graph = edgekit.from_torch(model, (torch.from_numpy(x[:1]),))
    return graph, edgekit.quantize(graph, x[:16]), x


def _executors(graph) -> tuple[Executor, Executor]:
    fused, steps = Executor(graph), Executor(graph)
    fused.fuse_after, steps.fuse_after = 0, None
    return fused, steps


def _same(fused: Executor, steps: Executor, x: np.ndarray, raw: bool = False) -> None:
    for sample in x:
        got = fused.run(sample[None], raw)
        np.testing.assert_array_equal(got, steps.run(sample[None], raw))
    assert fused._fuser.fused and all(f is not None for f in fused._fuser.fused.values()), \
        fused._fuser.why_not


@pytest.mark.parametrize("name", ["small", pytest.param("kws_ds_cnn", marks=pytest.mark.slow),
                                  pytest.param("ic_resnet8", marks=pytest.mark.slow)])
def test_fused_is_bit_identical_to_the_steps(name):
    """Float32 and int8 (float edges and raw int8), batch 1 (and 8 in int8): the same kernels in
    the same order, so the same bits; float included (no reassociation, no contraction)."""
    graph, qgraph, x = _graphs(name)
    for g in (graph, qgraph):
        fused, steps = _executors(g)
        _same(fused, steps, x[:6])
    np.testing.assert_array_equal(fused.run(x[:8]), steps.run(x[:8]))
    fused, steps = _executors(qgraph)
    _same(fused, steps, quantize_array(x[:6], qgraph.tensors[qgraph.inputs[0]].quant), raw=True)


@pytest.mark.parametrize("name", ["small", pytest.param("kws_ds_cnn", marks=pytest.mark.slow),
                                  pytest.param("ic_resnet8", marks=pytest.mark.slow)])
def test_fused_int8_equals_tflite_micro(name):
    ok, why = get_target("cpu:tflite-micro").available()
    if not ok:
        pytest.skip(why)
    _, qgraph, x = _graphs(name)
    xq = quantize_array(x[:10], qgraph.tensors[qgraph.inputs[0]].quant)
    fused, _ = _executors(qgraph)
    with edgekit.deploy(qgraph, "cpu:tflite-micro") as micro:
        for sample in xq:
            np.testing.assert_array_equal(fused.run(sample[None], raw=True),
                                          micro.run(sample[None], raw=True))
    assert all(f is not None for f in fused._fuser.fused.values()), fused._fuser.why_not


def test_a_failed_compile_falls_back_to_the_steps(tmp_path, monkeypatch):
    """No folder to write the generated source in (the cache folder under a file, the
    temporary folder gone): no error, the steps run, and the reason is kept."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("EDGEKIT_CACHE", str(blocker / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(blocker / "tmp"))
    graph, qgraph, x = _graphs("small")
    for g in (graph, qgraph):
        fused, steps = _executors(g)
        for sample in x[:3]:
            np.testing.assert_array_equal(fused.run(sample[None]), steps.run(sample[None]))
        assert list(fused._fuser.fused.values()) == [None]
        assert "Error" in fused._fuser.why_not[(1, False)]


def test_an_unwritable_cache_still_fuses(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("EDGEKIT_CACHE", str(blocker / "cache"))
    graph, _, x = _graphs("small")
    _same(*_executors(graph), x[:3])


def test_the_cache_holds_one_source_per_program(tmp_path, monkeypatch):
    """Written once under its hash: a second Executor (or process) loads the same file."""
    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path))
    _, qgraph, x = _graphs("small")
    for _ in range(2):
        fused, steps = _executors(qgraph)
        _same(fused, steps, x[:2])
    assert len(list((tmp_path / "fused").glob("fused_*.py"))) == 1


def test_what_is_not_fused_runs_the_ordinary_way():
    """Two outputs: not fused. A NaN input: the ordinary path's error, or, allowed, its
    result. Another dtype or a non-contiguous input: the ordinary path."""
    graph, _, x = _graphs("small")
    fused, steps = _executors(graph)
    bad = x[:1].copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(EdgekitError, match="NaN"):
        fused.run(bad)
    np.testing.assert_array_equal(fused.run(bad, allow_nonfinite=True),
                                  steps.run(bad, allow_nonfinite=True))
    wide = x[:2].astype(np.float64)
    np.testing.assert_array_equal(fused.run(wide), steps.run(wide))
    strided = np.swapaxes(np.swapaxes(x[:2], 2, 3).copy(), 2, 3)  # not C-contiguous
    np.testing.assert_array_equal(fused.run(strided), steps.run(strided))

    two = edgekit.from_torch(_TwoHeads().eval(), (torch.from_numpy(x[:1]),))
    fused, steps = _executors(two)
    for a, b in zip(fused.run(x[:1]), steps.run(x[:1]), strict=True):
        np.testing.assert_array_equal(a, b)
    assert fused._fuser.fused == {}  # two outputs: never offered to the fuser


class _TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3)

    def forward(self, x):
        y = self.conv(x)
        return y.relu(), y.sigmoid()


def test_fuse_after_counts_calls_and_env_turns_it_off(monkeypatch):
    from edgekit.runtime.fused import fuse_after_default

    graph, _, x = _graphs("small")
    ex = Executor(graph)
    ex.fuse_after = 2
    for _ in range(2):
        ex.run(x[:1])
    assert ex._fuser.fused == {}
    ex.run(x[:1])
    assert ex._fuser.fused[(1, False)] is not None
    monkeypatch.setenv("EDGEKIT_FUSE_AFTER", "off")
    assert fuse_after_default() is None
    monkeypatch.setenv("EDGEKIT_FUSE_AFTER", "soon")
    with pytest.raises(EdgekitError, match="EDGEKIT_FUSE_AFTER"):
        fuse_after_default()
