"""Selection: every path's accuracy on validation data, the Pareto front over accuracy and
cost, and the best path per budget (numpy only)."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.anytime.runtime import AnytimeRunner
from edgekit.anytime.table import choose, parse_budget, table
from edgekit.graph import Graph


def measure(graph: Graph, x: np.ndarray, y: np.ndarray, batch: int = 256) -> Graph:
    """Store every path's accuracy on ``(x, y)`` in the Graph's table (in place); returns it."""
    runner = AnytimeRunner(graph)
    paths = table(graph)["paths"]
    for path, entry in paths.items():
        hits = 0
        for start in range(0, len(y), batch):
            logits = runner.run(x[start:start + batch], path=path)
            hits += int((logits.argmax(-1) == y[start:start + batch]).sum())
        entry["accuracy"] = hits / len(y)
    table(graph)["validation_samples"] = len(y)
    return graph


def front(graph: Graph) -> list[dict[str, Any]]:
    """The Pareto front of measured paths, cheapest first: no other path is at least as
    accurate for fewer MACs."""
    rows = sorted(({"path": p, **e} for p, e in table(graph)["paths"].items()),
                  key=lambda r: (r["macs"], -r["accuracy"]))
    out: list[dict[str, Any]] = []
    for row in rows:
        if not out or row["accuracy"] > out[-1]["accuracy"]:
            out.append(row)
    return out


def select(graph: Graph, budgets: list[str]) -> list[dict[str, Any]]:
    """Per budget: the best measured path within it, its costs and accuracy."""
    meta = table(graph)
    rows = []
    for budget in budgets:
        key, limit = parse_budget(graph, budget)
        path = choose(graph, budget)
        entry = meta["paths"][path]
        rows.append({"budget": budget, "limit": {key: limit}, "path": path, "share":
                     entry["macs"] / meta["full_macs"], **entry})
    return rows
