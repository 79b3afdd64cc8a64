"""Pointwise functions that ONNX exporters write out as arithmetic, found and fused back before
import.

``torch.onnx.export`` below opset 20 has no Gelu: it writes ``x * 0.5 * (1 + erf(x / sqrt 2))``
as five nodes, and the tanh form as ten. Imported node by node the first fails (the Graph has no
erf) and the second becomes ten int8 steps, each rounding. Here each Erf or Tanh node anchors a
search: the smallest closed region of elementwise arithmetic around it, from one source value
``x`` to one result ``y``, whose intermediate values nothing else reads. A region is replaced
by one node of the op only when it computes the op's own numpy reference on a probe of values,
so whatever order or constants an exporter picks, a region is fused only if it is that function.
"""

from __future__ import annotations

import numpy as np

from edgekit.ops import OPS

# anchor op type -> the op (and attributes) its region may compute, as an ONNX node
_ANCHORS = {"Erf": ("Gelu", "gelu", {"approximate": "none"}),
            "Tanh": ("Gelu", "gelu", {"approximate": "tanh"})}
_ARITHMETIC = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide,
               "Pow": np.power}
_MAX_STEPS = 6  # nodes after the anchor a region may end at (the tanh form needs 3)
_PROBE = np.linspace(-7.0, 7.0, 141)


def fuse_pointwise(nodes: list, constants: dict[str, np.ndarray], outputs: list[str]) -> list:
    """``nodes`` (topologically ordered NodeProtos) with every decomposed pointwise function
    replaced by its one node; ``constants`` maps value names to known arrays (the initializers;
    Constant nodes are read here) and ``outputs`` names the graph's outputs, which count as
    readers."""
    consts = dict(constants)
    for node in nodes:
        if node.op_type == "Constant" and len(node.attribute) == 1 \
                and node.attribute[0].name in ("value", "value_float"):
            try:
                consts[node.output[0]] = _constant(node)
            except Exception:  # a malformed constant: the importer reports it in its place
                continue
    producer = {out: node for node in nodes for out in node.output}
    readers: dict[str, int] = {}
    for name in [name for node in nodes for name in node.input] + list(outputs):
        readers[name] = readers.get(name, 0) + 1
    fused: dict[int, object] = {}  # id of the region's last node -> the fused node
    dropped: set[int] = set()
    for node in nodes:
        if node.op_type in _ANCHORS and id(node) not in dropped and _pointwise(node):
            region = _region(node, nodes, producer, readers, consts)
            if region is not None:
                members, x, y = region
                fused[id(members[-1])] = _node(node.op_type, x, y)
                dropped.update(id(m) for m in members)
    return [fused.get(id(n), n) for n in nodes if id(n) not in dropped or id(n) in fused]


def _pointwise(node) -> bool:
    """An anchor of one input or arithmetic of two, with one output, in ONNX's own domain."""
    arity = 2 if node.op_type in _ARITHMETIC else 1 if node.op_type in _ANCHORS else 0
    return len(node.input) == arity and len(node.output) == 1 \
        and node.domain in ("", "ai.onnx")


def _constant(node) -> np.ndarray:
    from onnx import helper, numpy_helper

    value = helper.get_attribute_value(node.attribute[0])
    return numpy_helper.to_array(value) if node.attribute[0].name == "value" \
        else np.array(value, np.float32)


def _region(anchor, nodes, producer, readers, consts):
    """(member nodes in file order, x, y) of the first region around ``anchor``, ending at it
    or at one of the next nodes, that computes the anchor's op; None when there is none."""
    _, op, attrs = _ANCHORS[anchor.op_type]
    want = OPS[op].reference(_PROBE, **attrs).astype(np.float64)
    sources = _sources(anchor.input[0], producer, consts)
    end = anchor
    for _ in range(_MAX_STEPS + 1):
        for x in sources:
            members = _closure(end.output[0], x, producer, consts)
            if members is None or anchor not in members:
                continue
            if not _closed(members, end.output[0], readers):
                continue
            got = _evaluate(members, x, end.output[0], consts)
            if got is not None and np.allclose(got, want, rtol=1e-5, atol=1e-6):
                order = {id(n): i for i, n in enumerate(nodes)}
                return sorted(members, key=lambda m: order[id(m)]), x, end.output[0]
        nxt = [n for n in nodes if end.output[0] in n.input]
        if len(nxt) != 1 or nxt[0].op_type not in _ARITHMETIC or not _pointwise(nxt[0]):
            return None
        end = nxt[0]
    return None


def _closed(members, y, readers) -> bool:
    """Whether nothing outside the region reads a value it computes, other than ``y``."""
    inside = {out for m in members for out in m.output} - {y}
    reads = sum(1 for m in members for name in m.input if name in inside)
    return reads == sum(readers.get(name, 0) for name in inside) \
        and not any(y in m.input for m in members)


def _sources(name, producer, consts, depth: int = 6) -> list[str]:
    """Candidate inputs ``x``: the values behind ``name`` through up to ``depth`` arithmetic
    nodes, nearest first."""
    found, frontier = [], [name]
    for _ in range(depth):
        found += frontier
        frontier = [i for v in frontier if producer.get(v) is not None
                    and producer[v].op_type in _ARITHMETIC
                    for i in producer[v].input if i not in consts]
    return list(dict.fromkeys(found))


def _closure(y, x, producer, consts):
    """The nodes computing ``y`` from ``x`` and constants through arithmetic and anchors only,
    or None."""
    members, stack = [], [y]
    while stack:
        name = stack.pop()
        if name == x or name in consts:
            continue
        node = producer.get(name)
        if node is None or not _pointwise(node):
            return None
        if node not in members:
            members.append(node)
            stack.extend(node.input)
    return members


def _evaluate(members, x, y, consts):
    from edgekit.ops.pointwise import erf

    values = {x: _PROBE}
    pending = list(members)
    while pending:
        ready = [m for m in pending if all(i in values or i in consts for i in m.input)]
        if not ready:
            return None
        for m in ready:
            if any(np.size(consts[i]) != 1 for i in m.input if i not in values):
                return None  # a constant that is not one number: not a pointwise function
            args = [values[i] if i in values else float(np.asarray(consts[i]).reshape(()))
                    for i in m.input]
            with np.errstate(all="ignore"):
                values[m.output[0]] = (erf(args[0]) if m.op_type == "Erf" else
                                       np.tanh(args[0]) if m.op_type == "Tanh" else
                                       _ARITHMETIC[m.op_type](*args))
            pending.remove(m)
    return values[y]


def _node(anchor_type: str, x: str, y: str):
    from onnx import helper

    onnx_op, _, attrs = _ANCHORS[anchor_type]
    return helper.make_node(onnx_op, [x], [y], name=f"{y}.fused", **attrs)
