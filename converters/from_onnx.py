"""Import an ONNX model into the Graph.

ONNX nodes are walked in their (topological) file order and translated through the lowering
each op module registers for its op types (composites in ``_ONNX_OPS``). Exporters compute
reshape targets at run time (Shape → Gather → Unsqueeze → Concat → Cast ...); since every
shape here is static except the batch, ``Shape`` is answered from the Graph (batch read as 1)
and every node whose inputs are then all constants is evaluated at import time with ONNX's
reference evaluator, leaving only real layers to lower. The batch dimension of the inputs may
be symbolic; any other must be fixed.

onnx is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.graph import Graph
from edgekit.ops import implementations

# framework-free helpers shared by both importers (from_torch imports torch only when called)
from .from_torch import (
    Act,
    Importer,
    Unsupported,
    const_param,
    same_pads,
)
from .onnx_fusion import fuse_pointwise


def from_onnx(model: str | Path | Any) -> Graph:
    """Lower an ONNX model (a file path or an ``onnx.ModelProto``) to a Graph.

    Raises ``UnsupportedOpsError`` naming every node that has no Graph op, and
    ``EdgekitError`` for a missing, unreadable or malformed file.
    """
    return _OnnxImporter(_load(model)).run()


def _load(model):
    """The ModelProto, checked: protobuf parses many byte strings, so garbage is caught by the
    checker rather than surfacing later as a confusing lowering error."""
    import onnx

    where = "ONNX model"
    try:
        if not isinstance(model, onnx.ModelProto):
            where = str(model)
            if not Path(model).is_file():
                raise EdgekitError(f"{where}: no such file")
            model = onnx.load(where)
        onnx.checker.check_model(model)
    except EdgekitError:
        raise
    except Exception as err:  # protobuf, checker and OS errors all mean the same to a user
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise EdgekitError(f"{where}: not a readable ONNX model ({type(err).__name__}: "
                           f"{first[:300]}); re-export it from the training framework") from None
    if not model.graph.node:
        raise EdgekitError(f"{where}: the ONNX graph has no nodes")
    opset, newest = _opset(model), onnx.defs.onnx_opset_version()
    if opset > newest:  # the lowerings' reading of its operators may no longer hold
        raise EdgekitError(f"{where}: ONNX opset {opset} is newer than the {newest} this onnx "
                           "package knows; export with an opset up to it")
    return model


def _opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


@dataclass
class _Node:
    """What a lowering sees: the builder, the Graph node name, the ONNX op type (one
    lowering may serve several), attributes, opset, and how many outputs the ONNX node
    declares (optional extra outputs must be unused)."""

    b: Any
    name: str
    op: str
    attrs: dict[str, Any]
    opset: int
    n_out: int

    def get(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

    def shape(self, x: Act) -> tuple[int, ...]:
        return self.b.shape(x.name)

    def emit(self, op: str, inputs: list[Act], attrs: dict[str, Any] | None = None) -> Act:
        """Append Graph op ``op`` on ``inputs``, named after this node."""
        return Act(self.b.node(op, [x.name for x in inputs], attrs, name=self.name))

    def param(self, value: Any, suffix: str) -> Act:
        """Constant ``value`` as a param of the Graph, named after this node."""
        return const_param(self.b, value, f"{self.name}.{suffix}")

    def axis(self, default: int | None, rank: int) -> int:
        """Attribute ``axis`` made non-negative; one outside -rank..rank-1 (or missing, with no
        default) is an error, not wrapped round to another axis."""
        value = self.get("axis", default)
        if type(value) is not int or not -rank <= value < rank:
            raise EdgekitError(f"attribute axis={value!r} is out of range for rank {rank}")
        return value % rank

    def const(self, value: Any, what: str) -> Any:
        """An input that must be known at import time; ``what`` names the unsupported use."""
        if isinstance(value, Act) or value is None:
            raise Unsupported(what)
        return value

    def pads(self, sizes, kernel, stride, dilation) -> list[int]:
        """Explicit pads (already [begins..., ends...]) or the ones auto_pad implies."""
        auto = self.get("auto_pad", "NOTSET")
        if auto != "NOTSET" and "pads" in self.attrs:  # ONNX forbids both: which one holds?
            raise EdgekitError(f"auto_pad={auto} and explicit pads {self.get('pads')} together")
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            return same_pads(sizes, kernel, stride, dilation, lower=auto == "SAME_LOWER")
        if auto == "VALID":
            return [0] * 2 * len(kernel)
        return list(self.get("pads", [0] * 2 * len(kernel)))


class _OnnxImporter(Importer):
    def __init__(self, model):
        super().__init__("ONNX")
        import onnx.numpy_helper as nph

        self.model = model
        self.opset = _opset(model)
        self.env: dict[str, Any] = {t.name: _initializer(nph, t) for t in model.graph.initializer}
        self.env[""] = None  # an omitted optional input
        self.shapes = _inferred_shapes(model)

    def run(self) -> Graph:
        for value in self.model.graph.input:
            if value.name not in self.env:
                self.env[value.name] = Act(self.b.input(value.name, _input_shape(value),
                                                        _input_dtype(value)))
        consts = {k: v for k, v in self.env.items() if isinstance(v, np.ndarray)}
        for i, node in enumerate(fuse_pointwise(list(self.model.graph.node), consts,
                                                   [v.name for v in self.model.graph.output])):
            self._node(node, _decode(node.name) or f"{node.op_type}_{i}")
        for value in self.model.graph.output:
            out = self.env.get(value.name)
            if isinstance(out, Act):
                self.b.output(out.name)
            elif not (self.unsupported or self.errors):
                raise EdgekitError(f"graph output {value.name!r} is not computed from the inputs")
        return self.finish()

    def _node(self, node, name: str) -> None:
        from onnx import helper

        inputs = [self.env[i] for i in node.input]
        attrs = {a.name: _decode(helper.get_attribute_value(a)) for a in node.attribute}
        op = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        if any(v is _FAILED for v in inputs):  # after a failure with no stand-in: report
            if _lowering(op) is None and op not in _SHAPE_OPS:  # what surely fails, go on
                self.unsupported.append((op, name))
            outs = [_FAILED] * len(node.output)
        elif op == "Shape" and isinstance(inputs[0], Act):
            outs = [np.array(self.b.shape(inputs[0].name), np.int64)[attrs.get("start", 0):
                                                                      attrs.get("end")]]
        elif not any(isinstance(v, Act) for v in inputs):
            outs = self.attempt(op, name, lambda: self._fold(node, inputs),
                                lambda: self._stand_ins(node, name))
        else:
            fn = _lowering(op)
            call = _Node(self.b, name, op, attrs, self.opset, len(node.output))
            out = self.attempt(op, name, fn and (lambda: fn(call, *inputs)),
                               lambda: self._stand_ins(node, name))
            outs = out if isinstance(out, list) else [out]
        for key, value in zip(node.output, outs, strict=False):  # unused optional outputs
            self.env[key] = value

    def _stand_ins(self, node, name: str) -> list:
        """Inputs shaped like a failed node's outputs (from ONNX shape inference), so the
        nodes after it still lower and report their own problems; _FAILED where unknown."""
        return [Act(self.b.input(f"{name}.unsupported", self.shapes[out]))
                if out in self.shapes else _FAILED for out in node.output]

    def _fold(self, node, inputs: list) -> list:
        """Evaluate an all-constant node now; Constant directly, the rest with onnx.reference."""
        from onnx import helper, numpy_helper
        from onnx.reference import ReferenceEvaluator

        if node.op_type == "Constant" and node.attribute:
            attr = node.attribute[0]
            value = helper.get_attribute_value(attr)
            if attr.name == "value":
                return [numpy_helper.to_array(value)]
            return [np.array(value, _CONSTANT_DTYPES.get(attr.name))]
        feeds = {f"in{i}": v for i, v in enumerate(inputs) if v is not None}
        names = [f"in{i}" if v is not None else "" for i, v in enumerate(inputs)]
        outs = [f"out{i}" for i in range(len(node.output))]
        folded = helper.make_node(node.op_type, names, outs, domain=node.domain)
        folded.attribute.extend(node.attribute)
        graph = helper.make_graph(
            [folded], "fold",
            [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), None)
             for k, v in feeds.items()],
            [helper.make_empty_tensor_value_info(o) for o in outs])
        model = helper.make_model(graph, opset_imports=self.model.opset_import)
        try:
            return ReferenceEvaluator(model).run(None, feeds)
        except Exception as err:
            raise Unsupported(f"{node.op_type} (cannot evaluate: {type(err).__name__})") from None


def _initializer(nph, tensor) -> np.ndarray:
    """An initializer's array; the checker passes some whose bytes do not fill their shape."""
    try:
        return nph.to_array(tensor)
    except Exception as err:  # onnx and numpy raise several types on a malformed tensor
        raise EdgekitError(f"ONNX initializer {tensor.name!r} is malformed "
                           f"({type(err).__name__}: {str(err)[:200]})") from None


_FAILED = object()  # the value of a node that could not be lowered (already reported)
_SHAPE_OPS = {"Shape", "Gather", "Unsqueeze", "Squeeze", "Cast", "Slice"}  # fold, never fail
_CONSTANT_DTYPES = {"value_float": np.float32, "value_floats": np.float32,
                    "value_int": np.int64, "value_ints": np.int64}


def _inferred_shapes(model) -> dict[str, tuple[int, ...]]:
    """Intermediate shapes from ONNX shape inference (batch read as 1), where fully known."""
    from onnx import shape_inference

    try:
        values = shape_inference.infer_shapes(model).graph.value_info
    except Exception:  # inference is only a help for error reporting
        return {}
    shapes = {}
    for value in values:
        dims = value.type.tensor_type.shape.dim
        if len(dims) > 1 and all(d.HasField("dim_value") for d in dims[1:]):
            shapes[value.name] = (1, *(d.dim_value for d in dims[1:]))
    return shapes


def _decode(value):
    """ONNX strings as str (protobuf hands over bytes that are not valid UTF-8 as bytes)."""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


_INPUT_DTYPES = {1: "float32", 6: "int32", 7: "int32"}  # ONNX FLOAT, INT32, INT64


def _input_dtype(value) -> str:
    """A graph input's dtype: float32, or int32 for integer indices (int64 ones included:
    Sessions refuse an index outside its table, so none is too large for int32)."""
    return _INPUT_DTYPES[value.type.tensor_type.elem_type]


def _input_shape(value) -> tuple[int, ...]:
    """A graph input's shape with the batch read as 1; other dims must be fixed."""
    ttype = value.type.tensor_type
    if not value.type.HasField("tensor_type") or not ttype.HasField("shape"):
        raise EdgekitError(f"input {value.name!r} has no tensor shape; edgekit needs it")
    if ttype.elem_type not in _INPUT_DTYPES:
        raise EdgekitError(f"input {value.name!r} is not float32 (ONNX elem_type "
                           f"{ttype.elem_type}); edgekit graphs take float32 inputs, or "
                           "int32/int64 indices (into an embedding's table)")
    dims = list(ttype.shape.dim)
    for i, d in enumerate(dims[1:], 1):
        if not d.HasField("dim_value") or d.dim_value < 1:
            raise EdgekitError(f"input {value.name!r}: dimension {i} is symbolic "
                               f"({d.dim_param or '?'}); only the batch dimension may be")
    return (1, *(d.dim_value for d in dims[1:]))


# --------------------------------------------------------------------------- lowerings


def _batchnorm(n, x, scale, bias, mean, var, *_):
    if n.get("training_mode", 0) or n.n_out > 1:
        raise Unsupported("BatchNormalization in training mode")
    values = [n.const(v, "BatchNormalization with non-constant statistics")
              for v in (mean, var, scale, bias)]
    return Act(n.b.batchnorm(x.name, *values, float(n.get("epsilon", 1e-5)), n.name))


def _alias(n, x, *_):
    return [x] + [None] * (n.n_out - 1)


def _lowering(op_type: str) -> Callable[..., Any] | None:
    """The lowering of ONNX op ``op_type``: an op module's (``names`` it registered for
    "onnx_import"), else one of the composites below."""
    for impl in implementations("onnx_import").values():
        if op_type in impl.options["names"]:
            return impl.fn
    return _ONNX_OPS.get(op_type)


# Composite ONNX ops (no Graph op of their own) and ops not yet moved into an op module.
_ONNX_OPS: dict[str, Callable[..., Any]] = {
    "BatchNormalization": _batchnorm,
    "Dropout": _alias, "Identity": _alias,
}
