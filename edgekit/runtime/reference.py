"""Evaluate a Graph with every op's plain-numpy reference (``OpDef.reference``, in the op's
module): the oracle the kernels are tested against.

References are written to be obviously right rather than fast: each op computes in float64
straight from its definition and rounds to float32 once at the end. Inputs arrive positionally
and attributes as keyword arguments, so each signature documents its op.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.graph import Graph
from edgekit.ops import OPS

REFERENCE: dict[str, Callable[..., np.ndarray]] = {
    name: spec.reference for name, spec in OPS.items() if spec.reference is not None}


def evaluate(graph: Graph, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every tensor of ``graph`` (inputs, params and each node's output) for the given inputs."""
    values = {**graph.params, **{k: np.asarray(v, np.int32 if graph.tensors[k].dtype == "int32"
                                               else np.float32) for k, v in feeds.items()}}
    for node in graph.nodes:
        if node.op not in REFERENCE:
            raise EdgekitError(f"no reference for op {node.op!r}; it has: {sorted(REFERENCE)}")
        values[node.outputs[0]] = REFERENCE[node.op](*(values[n] for n in node.inputs),
                                                     **node.attrs)
    return values
