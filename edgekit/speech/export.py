"""An early-exit Graph cut for runtimes that cannot stop half-way (ONNX Runtime, LiteRT, a
board): each exit as a complete sub-model (``exit_graph``, what ``asr export`` writes), or the
encoder cut at its exits into consecutive segments (``segments``) that run one after another.

A complete sub-model per exit suits an app that picks one exit for good; an app that evaluates
the policy runs the segments instead: segment k takes what segment k-1 left (the encoder state
after its blocks) and gives exit k's posteriors and the state for segment k+1, so nothing is
computed twice and nothing past the accepted exit is computed. edgekit's own runtime needs
neither (``Executor.staged`` stops and resumes in one Graph).
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


def segments(graph: Graph) -> list[Graph]:
    """The Graph's nodes cut after each exit's output, in order: segment k reads the graph
    input (k = 1) or the tensors earlier segments produce and later nodes read, and gives exit
    k's posteriors first, then the tensors later segments read."""
    exits = exits_of(graph)
    index = {node.outputs[0]: i for i, node in enumerate(graph.nodes)}
    out, start = [], 0
    for k, ex in enumerate(exits):
        end = index[ex.output] + 1
        nodes, later = graph.nodes[start:end], graph.nodes[end:]
        made = {node.outputs[0] for node in nodes}
        reads = dict.fromkeys(t for node in nodes for t in node.inputs
                              if t not in made and t not in graph.params)
        carry = dict.fromkeys(t for node in later for t in node.inputs if t in made)
        outputs = [ex.output, *(t for t in carry if t != ex.output)]
        used = made | set(reads) | {t for node in nodes for t in node.inputs}
        meta = {key: v for key, v in graph.metadata.items() if key != META}
        meta[META] = {"segment_of": k + 1, "outputs": [ex.output], "blocks": [ex.blocks]}
        out.append(Graph(list(reads), outputs,
                         {n: copy.deepcopy(t) for n, t in graph.tensors.items() if n in used},
                         copy.deepcopy(nodes),
                         {n: v for n, v in graph.params.items() if n in used}, meta).validate())
        start = end
    return out


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
