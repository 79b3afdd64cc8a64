"""The sub-network table of an anytime Graph (numpy only, device side).

An anytime Graph is the supernet's full path as a plain Graph — every target runs it as it is,
at full budget — plus ``metadata["anytime"]``, which says how to run any other path on the
same weights:

- ``blocks``: per block, ``input`` (the tensor the block reads), ``branches`` (per branch, the
  output tensors of its nodes, in order) and ``adds`` (the outputs of the add that joins each
  branch to the stream, in order);
- ``paths``: per path (one digit per block, ``supernet``), ``macs`` and, once measured on
  validation data (``select``), ``accuracy``;
- ``full_macs``: the full path's MACs, what a budget in percent is a share of.

A path leaves out the nodes of the branches it drops and their adds; each left-out add's output
is then the tensor the add would have added to (``plan``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from edgekit.errors import EdgekitError
from edgekit.graph import Graph


@dataclass(frozen=True)
class Plan:
    """One path of an anytime Graph: the nodes it runs (indices, in order) and, per left-out
    add, the tensor that stands for its output (``aliases``)."""

    path: str
    nodes: tuple[int, ...]
    aliases: dict[str, str]

    def source(self, name: str) -> str:
        while name in self.aliases:
            name = self.aliases[name]
        return name


def table(graph: Graph) -> dict[str, Any]:
    """The Graph's sub-network table; an ``EdgekitError`` for a plain Graph."""
    meta = graph.metadata.get("anytime")
    if not isinstance(meta, dict) or "blocks" not in meta or "paths" not in meta:
        raise EdgekitError("this model is not an anytime network (no sub-network table in its "
                           "metadata); a budget needs one made by 'edgekit anytime train'")
    return meta


def plan(graph: Graph, path: str) -> Plan:
    meta = table(graph)
    blocks = meta["blocks"]
    if path not in meta["paths"]:
        raise EdgekitError(f"path {path!r} is not in this model's table: give one digit per "
                           f"block ({len(blocks)}), each 0 (skip), 1 (half) or 2 (full)")
    dropped: set[str] = set()
    aliases: dict[str, str] = {}
    for block, choice in zip(blocks, path, strict=True):
        keep = int(choice)
        for k, (branch, add) in enumerate(zip(block["branches"], block["adds"], strict=True)):
            if k >= keep:
                dropped.update((*branch, add))
                aliases[add] = block["adds"][k - 1] if k else block["input"]
    nodes = tuple(i for i, node in enumerate(graph.nodes) if node.outputs[0] not in dropped)
    return Plan(path, nodes, aliases)


def extract(graph: Graph, path: str) -> Graph:
    """The path as a plain Graph (for ONNX, TFLite, C or a board): its nodes, reading the
    tensors that stand for left-out adds, and its weights (the same arrays, not copies)."""
    p = plan(graph, path)
    nodes = []
    for i in p.nodes:
        node = graph.nodes[i]
        nodes.append(type(node)(node.op, [p.source(n) for n in node.inputs], list(node.outputs),
                                dict(node.attrs), node.name))
    outputs = [p.source(n) for n in graph.outputs]
    used = {n for node in nodes for n in node.inputs} | {n for node in nodes for n in node.outputs}
    used |= set(graph.inputs)
    metadata = {k: v for k, v in graph.metadata.items() if k != "anytime"}
    metadata["anytime_path"] = path
    return Graph(list(graph.inputs), outputs,
                 {n: graph.tensors[n] for n in graph.tensors if n in used}, nodes,
                 {n: v for n, v in graph.params.items() if n in used}, metadata).validate()


def calibration_graphs(graph: Graph) -> list[Graph]:
    """The paths int8 calibration observes (``quant.calibrate``), as plain Graphs: those of the
    accuracy-cost front once accuracies are measured (the paths budgets choose), else every
    path; the full path always."""
    meta = table(graph)
    paths = list(meta["paths"])
    if all("accuracy" in e for e in meta["paths"].values()):
        from edgekit.anytime.select import front

        paths = [row["path"] for row in front(graph)]
    full = max(meta["paths"], key=lambda p: meta["paths"][p]["macs"])
    return [extract(graph, p) for p in dict.fromkeys([full, *paths])]


def path_macs(graph: Graph, path: str) -> int:
    return sum(graph.node_macs(graph.nodes[i]) for i in plan(graph, path).nodes)


UNITS = {"ms": "latency_ms", "us": "latency_ms", "uj": "energy_uj", "mj": "energy_uj"}
SCALE = {"ms": 1.0, "us": 1e-3, "uj": 1.0, "mj": 1e3}


def parse_budget(graph: Graph, budget: Any) -> tuple[str, float]:
    """A budget as (the table's cost key, the limit): MACs as an int or ``"120000"``, a share of
    the full path's MACs (``"50%"``), or, once the table holds a device's costs
    (``costs.annotate``), a latency (``"2ms"``, ``"800us"``) or an energy (``"30uJ"``,
    ``"0.1mJ"``)."""
    full = int(table(graph)["full_macs"])
    text = str(budget).strip().lower().replace("µ", "u")
    key, scale, number = "macs", 1.0, text
    if text.endswith("%"):
        scale, number = full / 100, text[:-1]
    elif text[-2:] in UNITS:
        key, scale, number = UNITS[text[-2:]], SCALE[text[-2:]], text[:-2]
    try:
        limit = float(number) * scale
    except ValueError:
        limit = -1.0
    if isinstance(budget, bool) or not 0 < limit < math.inf:
        raise EdgekitError(f"budget {budget!r}: give MACs (e.g. 120000), a share of the full "
                           f"network's {full:,} MACs (e.g. 50%), or a latency or energy on the "
                           "model's device profile (2ms, 30uJ)")
    if key != "macs" and key not in next(iter(table(graph)["paths"].values())):
        raise EdgekitError(f"budget {budget!r}: this model holds no per-path {key} yet; give "
                           "'edgekit anytime select --profile DEVICE' (e.g. cortex-m4)")
    return key, limit


def choose(graph: Graph, budget: Any) -> str:
    """The path to run within ``budget``: the most accurate measured path whose cost fits (the
    largest when no accuracy is stored); a budget below the smallest path is an error."""
    key, limit = parse_budget(graph, budget)
    paths = table(graph)["paths"]
    fits = [path for path, entry in paths.items() if entry[key] <= limit]
    if not fits:
        smallest = min(entry[key] for entry in paths.values())
        raise EdgekitError(f"budget {budget!r} ({limit:,.6g} {key}) is below the smallest "
                           f"sub-network ({smallest:,.6g} {key})")
    if all("accuracy" in paths[p] for p in fits):  # ties: the cheaper path
        return max(fits, key=lambda p: (paths[p]["accuracy"], -paths[p]["macs"], p))
    return max(fits, key=lambda p: (paths[p]["macs"], p))
