"""GraphBuilder: what every importer uses to emit a Graph, with shapes inferred as it goes.

Importers translate one source op at a time into builder calls; composite source ops
(batch norm, flatten, ...) become compositions of core ops here, and the passes in
``passes.py`` then fold and fuse them (batch norm into the conv before it, ReLU into its
producer), so every importer gets the same clean Graph.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from edgekit.graph import Graph, Node, TensorInfo
from edgekit.ops import OPS, resolve_attrs


class GraphBuilder:
    def __init__(self, metadata: dict[str, Any] | None = None):
        self.graph = Graph([], [], {}, [], {}, dict(metadata or {}))

    def _unique(self, hint: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_.:/-]", "_", hint) or "t"
        name, i = base, 1
        while name in self.graph.tensors:
            name, i = f"{base}_{i}", i + 1
        return name

    def shape(self, name: str) -> tuple[int, ...]:
        return self.graph.tensors[name].shape

    def input(self, hint: str, shape: tuple[int, ...], dtype: str = "float32") -> str:
        """A graph input; its batch dimension is recorded as 1 whatever the example had.
        ``dtype`` "int32": indices (into an embedding's table)."""
        name = self._unique(hint)
        self.graph.tensors[name] = TensorInfo((1, *map(int, shape[1:])), dtype)
        self.graph.inputs.append(name)
        return name

    def param(self, value: np.ndarray, hint: str) -> str:
        value = np.ascontiguousarray(value, dtype=np.float32)
        name = self._unique(hint)
        self.graph.tensors[name] = TensorInfo(tuple(value.shape))
        self.graph.params[name] = value
        return name

    def node(self, op: str, inputs: list[str], attrs: dict[str, Any] | None = None,
             name: str = "") -> str:
        """Append a node; returns its output tensor's name (shape inferred by the op table)."""
        attrs = resolve_attrs(op, dict(attrs or {}))
        shape = OPS[op].infer([self.shape(i) for i in inputs], attrs)
        out = self._unique(name or op)
        self.graph.tensors[out] = TensorInfo(tuple(int(d) for d in shape))
        self.graph.nodes.append(Node(op, list(inputs), [out], attrs, name))
        return out

    def batchnorm(self, x: str, mean, var, gamma, beta, eps: float, name: str) -> str:
        """Inference batch norm as a per-channel mul + add (channel axis 1); passes fold it."""
        scale = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)
        shift = np.asarray(beta, np.float64) - np.asarray(mean, np.float64) * scale
        trailing = (1,) * (len(self.shape(x)) - 2)
        y = self.node("mul", [x, self.param(scale.reshape(-1, *trailing), f"{name}.scale")],
                      name=name)
        return self.node("add", [y, self.param(shift.reshape(-1, *trailing), f"{name}.shift")],
                         name=name)

    def output(self, name: str) -> None:
        self.graph.outputs.append(name)

    def build(self) -> Graph:
        from edgekit.converters.passes import optimize

        return optimize(self.graph).validate()
