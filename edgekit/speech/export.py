"""Each exit of an early-exit Graph as a complete sub-model, for runtimes that cannot stop
half-way (ONNX Runtime, LiteRT): the nodes that exit's output depends on, and nothing else.

A host or app that evaluates the policy itself runs the exit-1 model, then, if the policy says
go on, the exit-2 model, and so on (recomputing the shared blocks); edgekit's own runtime does
not need this (``Executor.staged`` stops and resumes in one Graph).
"""

from __future__ import annotations

import copy
from pathlib import Path

from edgekit.errors import EdgekitError
from edgekit.graph import Graph
from edgekit.speech.exits import META, exits_of

WRITERS = ("ekm", "onnx", "tflite")


def exit_graph(graph: Graph, k: int) -> Graph:
    """The sub-model ending at exit ``k`` (1-based): its one output, and only its ancestors."""
    exits = exits_of(graph)
    if not 1 <= k <= len(exits):
        raise EdgekitError(f"exit {k}: the model has exits 1 to {len(exits)}")
    need = {exits[k - 1].output}
    nodes = []
    for node in reversed(graph.nodes):
        if need.intersection(node.outputs):
            nodes.append(node)
            need.update(node.inputs)
    nodes.reverse()
    used = need | {exits[k - 1].output}
    meta = copy.deepcopy(graph.metadata)
    meta[META] = {**meta[META], "outputs": [exits[k - 1].output],
                  "blocks": [exits[k - 1].blocks], "policy": "exit:1", "exit_of": k}
    meta[META].pop("calibration", None)
    return Graph(list(graph.inputs), [exits[k - 1].output],
                 {n: copy.deepcopy(t) for n, t in graph.tensors.items() if n in used},
                 copy.deepcopy(nodes),
                 {n: v for n, v in graph.params.items() if n in used}, meta).validate()


def export(graph: Graph, folder: str | Path, formats: tuple[str, ...] = ("onnx", "tflite"),
           stem: str = "asr") -> list[Path]:
    """Write every exit's sub-model as ``<stem>.exit<k>.<format>`` into ``folder`` (made if
    missing)."""
    bad = [f for f in formats if f not in WRITERS]
    if bad:
        raise EdgekitError(f"formats {bad}: choose from {', '.join(WRITERS)}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for k in range(1, len(exits_of(graph)) + 1):
        sub = exit_graph(graph, k)
        for fmt in formats:
            path = folder / f"{stem}.exit{k}.{fmt}"
            if fmt == "ekm":
                sub.save(path)
            elif fmt == "onnx":
                from edgekit.converters.to_onnx import to_onnx

                to_onnx(sub, path)
            else:
                from edgekit.converters.to_tflite import to_tflite

                to_tflite(sub, path)
            written.append(path)
    return written
