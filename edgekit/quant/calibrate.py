"""Calibration: run the float Graph on sample inputs and choose each tensor's real range.

Every activation (graph inputs included) is observed over all calibration samples, run in
batches so memory stays bounded whatever the number of samples. ``minmax`` keeps the extremes.
``percentile`` and ``mse`` need the distribution, so they take a second pass that fills two
histograms per tensor, of the positive values and of the magnitudes of the negative ones: the two
tails are clipped separately, and zero (exactly representable) never moves. The int8 grid a range
maps to (``range_scale_zero_point``) is defined here too, since the mse search scores it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.graph import Graph

BATCH = 64  # calibration samples per executor run
BINS = 2048  # histogram bins per side of zero
MSE_STEPS = 100  # clipping ranges tried by the mse search

Range = tuple[float, float]
Histograms = tuple[np.ndarray, np.ndarray]  # counts of x > 0 over [0, hi], of -x < 0 over [0, -lo]


def activation_ranges(graph: Graph, feeds: dict[str, np.ndarray], method: str,
                      percentile: float) -> dict[str, Range]:
    """(lo, hi) with lo <= 0 <= hi for every graph input and node output, by tensor name."""
    extremes: dict[str, Range] = {}
    for values in _observed(graph, feeds):
        for name, v in values.items():
            lo, hi = extremes.get(name, (0.0, 0.0))
            extremes[name] = (min(lo, float(v.min())), max(hi, float(v.max())))
    if method == "minmax":
        return extremes
    hists = {name: (np.zeros(BINS), np.zeros(BINS)) for name in extremes}
    for values in _observed(graph, feeds):
        for name, v in values.items():
            lo, hi = extremes[name]
            hists[name][0][:] += np.histogram(v[v > 0], BINS, (0.0, hi or 1.0))[0]
            hists[name][1][:] += np.histogram(-v[v < 0], BINS, (0.0, -lo or 1.0))[0]
    choose = CLIPPERS[method]
    return {name: choose(hists[name], extremes[name], percentile) for name in extremes}


def range_scale_zero_point(lo: Any, hi: Any) -> tuple[np.ndarray, np.ndarray]:
    """Asymmetric int8 grid over [lo, hi] (arrays or floats, lo <= 0 <= hi, lo < hi):
    ``scale = (hi - lo) / 255`` rounded to float32, ``zp = round(-128 - lo / scale)`` clamped."""
    scale = np.asarray((np.asarray(hi, np.float64) - lo) / 255, np.float32).astype(np.float64)
    zero_point = np.clip(np.floor(-128 - np.asarray(lo) / scale + 0.5), -128, 127)
    return scale, zero_point


def _observed(graph: Graph, feeds: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
    """Every activation for each batch; for an anytime Graph, of each path a budget can choose
    (``anytime.table.calibration_graphs``): a small path's tensors (its logits, a block reading
    an earlier block's input) hold other values than the full path's, and its grids must
    hold them too."""
    from edgekit.runtime import Executor

    graphs = [graph]
    if "anytime" in graph.metadata:
        from edgekit.anytime.table import calibration_graphs

        graphs = calibration_graphs(graph)
    for g in graphs:
        yield from _batches(Executor(g), feeds)


def _batches(executor, feeds: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
    """Every activation for each batch of the calibration samples; NaN/inf is an error."""
    n = next(iter(feeds.values())).shape[0]
    for start in range(0, n, BATCH):
        chunk = {name: x[start:start + BATCH] for name, x in feeds.items()}
        values = {**chunk, **executor.run_layers(chunk)}
        for name, v in values.items():
            if not np.isfinite(v).all():
                raise EdgekitError(
                    f"calibration: tensor {name!r} is NaN or infinite on calibration samples "
                    f"{start}..{start + len(v) - 1}; the float model overflows on them "
                    "(check its weights and input scaling)")
        yield values


def _percentile(hists: Histograms, extremes: Range, percentile: float) -> Range:
    """Each side clipped at the ``percentile`` of its magnitudes (upper edge of that bin)."""
    lo, hi = extremes
    return (-_tail(hists[1], -lo, percentile), _tail(hists[0], hi, percentile))


def _tail(counts: np.ndarray, top: float, percentile: float) -> float:
    total = counts.sum()
    if total == 0:
        return 0.0
    index = int(np.searchsorted(np.cumsum(counts), total * percentile / 100.0))
    return top * min(index + 1, BINS) / BINS


def _mse(hists: Histograms, extremes: Range, percentile: float) -> Range:
    """The range ``alpha * (lo, hi)`` whose int8 grid gives the least squared error over the
    histogrammed values (bin centres), for alpha on a grid of ``MSE_STEPS`` values in (0, 1]."""
    lo, hi = extremes
    if lo == hi:
        return extremes
    centres = (np.arange(BINS) + 0.5) / BINS
    values = np.concatenate([centres * hi, -centres * -lo])
    counts = np.concatenate(hists)
    alphas = np.arange(1, MSE_STEPS + 1)[:, None] / MSE_STEPS
    scale, zp = range_scale_zero_point(alphas * lo, alphas * hi)
    q = np.clip(np.floor(values / scale + 0.5) + zp, -128, 127)
    errors = (((q - zp) * scale - values) ** 2 * counts).sum(axis=1)
    best = float(alphas[int(np.argmin(errors)), 0])
    return (best * lo, best * hi)


CLIPPERS: dict[str, Callable[[Histograms, Range, float], Range]] = {
    "percentile": _percentile, "mse": _mse}
METHODS = ("minmax", *CLIPPERS)
