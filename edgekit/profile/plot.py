"""Plots of profiles (matplotlib, drawn off-screen): per-layer costs of one Report, and the
accuracy-versus-cost Pareto plots of a comparison. Axis titles say which figures are modelled,
measured, emulated or estimated.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import EdgekitError
from edgekit.fileio import atomic_write

if TYPE_CHECKING:
    from edgekit.profile.report import Report


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise EdgekitError("plots need matplotlib: pip install 'edgekit[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_report(report: Report, path: str | Path) -> Path:
    """Bar charts over the layers: MACs, modelled energy, and time where there is one (measured
    p50, or the labelled estimate where the device is not attached)."""
    from edgekit.profile.report import layer_time, layer_time_label

    plt = _pyplot()
    d = report.data
    layers = d["layers"]
    names = [f"{i} {la['op']}" for i, la in enumerate(layers)]
    times = [0.0 if t == "-" else t for t in (layer_time(la["time_ms"]) for la in layers)]
    panels = [([la["macs"] for la in layers], "MACs (counted)"),
              ([la["energy_model_uj"] for la in layers], "energy, µJ (model: counts x pJ table)")]
    if layer_time_label(d):
        panels.append((times, "time, " + layer_time_label(d)))
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(6, 0.45 * len(layers) + 2), 8),
                             sharex=True)
    for ax, (values, label) in zip(axes, panels, strict=True):
        ax.bar(range(len(values)), values)
        ax.set_ylabel(label, fontsize=8)
    axes[-1].set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    fig.suptitle(f"{d['model']} on {d['target']} ({d['device']['name']})")
    return _save(plt, fig, path)


def plot_pareto(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Accuracy against modelled energy and against latency, one point per model, the Pareto
    front joined; without accuracies, latency against energy (both to minimise)."""
    from edgekit.profile.compare import pareto_front

    plt = _pyplot()
    has_acc = all(r["accuracy"] is not None for r in rows)
    lat_label = "latency, ms (" + rows[0]["latency_source"] + ")"
    pairs = ([("energy_model_uj", "energy per inference, µJ (model)"), ("latency_ms", lat_label)]
             if has_acc else [("energy_model_uj", "energy per inference, µJ (model)")])
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.5 * len(pairs), 4.5), squeeze=False)
    for ax, (key, label) in zip(axes[0], pairs, strict=True):
        ys = [r["accuracy"] for r in rows] if has_acc else [r["latency_ms"] for r in rows]
        xs = [r[key] for r in rows]
        front = pareto_front(xs, ys, maximize_y=has_acc)
        ax.scatter(xs, ys)
        for r, x, y in zip(rows, xs, ys, strict=True):
            ax.annotate(r["model"], (x, y), fontsize=8, xytext=(3, 3), textcoords="offset points")
        pts = sorted((xs[i], ys[i]) for i in front)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "--", label="Pareto front")
        ax.set_xlabel(label)
        ax.set_ylabel("accuracy (measured on the labels)" if has_acc else lat_label)
        ax.legend(fontsize=8)
    fig.suptitle(f"models on {rows[0]['target']}")
    return _save(plt, fig, path)


def plot_format(path: str | Path) -> str:
    """The image format ``path`` asks for: its suffix, or png without one. Commands call this
    before any work, so a suffix matplotlib cannot write fails first, not after profiling."""
    fmt = Path(path).suffix[1:].lower() or "png"
    _pyplot()
    from matplotlib.backend_bases import FigureCanvasBase

    known = FigureCanvasBase.get_supported_filetypes()
    if fmt not in known:
        raise EdgekitError(f"{path}: matplotlib cannot write .{fmt} images; use one of "
                           f"{', '.join('.' + k for k in sorted(known))}")
    return fmt


def _save(plt: Any, fig: Any, path: str | Path) -> Path:
    """Write the figure to exactly ``path``, atomically (matplotlib given a name would add
    .png to one without a suffix)."""
    fig.tight_layout()
    path = Path(path)
    fmt = plot_format(path)
    try:
        with atomic_write(path) as f:
            fig.savefig(f, format=fmt, dpi=100)
    finally:
        plt.close(fig)
    return path
