"""Binary elementwise ops: add (with a fused activation) and mul, with every backend's
implementation; the second operand broadcasts to the first's shape.

Their int8 forms are TFLite's ADD and MUL, with the integer parameters of
``numerics.params.add_params``/``mul_params`` that the runtime and the C writer both read.
Importers lower sub to add (of a negated operand) and div to mul (by a constant's reciprocal).
"""

from __future__ import annotations

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.ops import declare
from edgekit.ops.schema import OpDef, elementwise_macs, fail, prod
from edgekit.ops.util import finish


def broadcast_to_first(s, a):
    x, y = s
    if len(y) > len(x):
        fail(f"second operand {y} has higher rank than the first {x}")
    y = (1,) * (len(x) - len(y)) + tuple(y)
    for dx, dy in zip(x, y):
        if dy not in (1, dx):
            fail(f"shapes {x} and {s[1]} do not broadcast to the first operand's shape")
    return tuple(x)


add = declare(OpDef(
    "add", (2, 2), {"activation": "none"}, broadcast_to_first,
    reference=lambda x, y, *, activation: finish(x.astype(np.float64) + y, activation),
    doc="elementwise x + y; y broadcasts to x's shape"))

mul = declare(OpDef(
    "mul", (2, 2), {}, broadcast_to_first, elementwise_macs,
    reference=lambda x, y: finish(x.astype(np.float64) * y),
    doc="elementwise x * y; y broadcasts to x"))


def broadcast_layout(shape, y_shape) -> tuple[np.ndarray, np.ndarray]:
    """How the kernels read a second operand of ``y_shape`` broadcast to ``shape``: (dims,
    y_strides), axes merged into runs where y is broadcast or not."""
    padded = (1,) * (len(shape) - len(y_shape)) + tuple(y_shape)
    dims: list[int] = []
    broadcast: list[bool] = []
    for d, e in zip(shape, padded, strict=True):
        if e not in (1, d):
            raise EdgekitError(f"operand of shape {tuple(y_shape)} does not broadcast to {shape}")
        if d > 1 and dims and broadcast[-1] == (e == 1):
            dims[-1] *= d
        elif d > 1:
            dims.append(d)
            broadcast.append(e == 1)
    strides, step = [], 1
    for d, b in zip(reversed(dims), reversed(broadcast), strict=True):
        strides.append(0 if b else step)
        step *= 1 if b else d
    return np.array(dims or [1], np.int64), np.array(strides[::-1] or [0], np.int64)


def _layout(x, y, out) -> tuple[np.ndarray, np.ndarray]:
    """``broadcast_layout`` of the runtime's arrays; only the second operand broadcasts."""
    if x.shape != out.shape:
        raise EdgekitError(f"first operand {x.shape} must have the output's shape {out.shape} "
                           "(only the second operand broadcasts)")
    return broadcast_layout(out.shape, y.shape)


# --- edgekit runtime --------------------------------------------------------------------------

def _float32(ins, out, multiply: bool, activation: str):
    from edgekit.runtime.kernels import elementwise
    from edgekit.runtime.registry import bind

    x, y = ins
    return bind(elementwise.binary, x.reshape(-1), y.reshape(-1), *_layout(x, y, out), multiply,
                *elementwise.ACTIVATION_BOUNDS[activation], out.reshape(-1))


@add.implements("float32")
def _add_float32(ins, out, *, activation):
    return _float32(ins, out, False, activation)


@mul.implements("float32")
def _mul_float32(ins, out):
    return _float32(ins, out, True, "none")


@add.implements("int8")
def _add_int8(ins, out, *, activation, quant):
    from edgekit.numerics.params import add_params
    from edgekit.runtime.kernels import int8_elementwise
    from edgekit.runtime.registry import bind

    x, y = ins
    p = add_params(quant, activation)
    return bind(int8_elementwise.add, x.reshape(-1), y.reshape(-1), *_layout(x, y, out), p.zx,
                p.zy, p.zo, np.array(p.mult, np.int32), np.array(p.shift, np.int32), p.lo, p.hi,
                out.reshape(-1))


@mul.implements("int8")
def _mul_int8(ins, out, *, quant):
    from edgekit.numerics.params import mul_params
    from edgekit.runtime.kernels import int8_elementwise
    from edgekit.runtime.registry import bind

    x, y = ins
    p = mul_params(quant)
    return bind(int8_elementwise.mul, x.reshape(-1), y.reshape(-1), *_layout(x, y, out), p.zx,
                p.zy, p.zo, p.mult, p.shift, p.lo, p.hi, out.reshape(-1))


# --- importers --------------------------------------------------------------------------------

def arith(b, op: str, x, y, name: str):
    """``x op y`` for add/sub/mul/div where either side may be a constant (both importers, and
    the composites that end in one, e.g. ONNX Gemm with a computed C).

    The Graph has add and mul only, with y broadcasting to x: sub becomes add of a negated
    operand, div a mul by the reciprocal of a constant, and operands are swapped (both ops
    commute) so that the activation with the full shape comes first.
    """
    from edgekit.converters.from_torch import Act, Unsupported, const_param

    if op == "sub":  # x + (-y)
        if not isinstance(y, Act):
            y = -np.asarray(y, np.float32)
        else:
            y = Act(b.node("mul", [y.name, const_param(b, -1.0, f"{name}.neg").name], name=name))
        op = "add"
    elif op == "div":  # x * (1 / y)
        if isinstance(y, Act):
            raise Unsupported("div by a tensor")
        y, op = 1.0 / np.asarray(y, np.float32), "mul"
    if not isinstance(x, Act) or (isinstance(y, Act) and _bigger(b, y, x)):
        x, y = y, x
    if not isinstance(y, Act):
        y = const_param(b, y, f"{name}.const")
    return Act(b.node(op, [x.name, y.name], name=name))


def _bigger(b, y, x) -> bool:
    sx, sy = b.shape(x.name), b.shape(y.name)
    return (len(sy), prod(sy)) > (len(sx), prod(sx))


def _torch(c, x, y, alpha=1, rounding_mode=None):
    """aten add/sub/mul/div (the op is ``c.aten``), through ``arith``."""
    from edgekit.converters.from_torch import Act, Unsupported

    if rounding_mode is not None:
        raise Unsupported(f"div(rounding_mode={rounding_mode!r})")
    if alpha != 1:
        if isinstance(y, Act):
            raise Unsupported(f"{c.aten} with alpha")
        y = y * alpha
    x, y = (v if isinstance(v, Act) or not hasattr(v, "detach") else c.const(v, c.aten)
            for v in (x, y))
    return arith(c.b, c.aten, x, y, c.name)


def _onnx_import(n, x, y):
    """ONNX Add/Sub/Mul/Div (the op is ``n.op``), through ``arith``."""
    return arith(n.b, n.op.lower(), x, y, n.name)


add.implements("torch", names=("add", "sub"))(_torch)
mul.implements("torch", names=("mul", "div"))(_torch)
add.implements("onnx_import", names=("Add", "Sub"))(_onnx_import)
mul.implements("onnx_import", names=("Mul", "Div"))(_onnx_import)


# --- writers ----------------------------------------------------------------------------------

def _tflite(code: str, options: str):
    def visit(w, node):
        """``code`` in the layout of its (first) activation operand; TFLite broadcasts."""
        layout = w.layout[next(n for n in node.inputs if n not in w.graph.params)]
        ins = [w.value(name, layout) for name in node.inputs]
        opts = w.options(options, fusedActivationFunction=w.fused(
            node.attrs.get("activation", "none")))
        w.op(code, ins, [w.output(node, layout)], opts)

    return visit


add.implements("tflite")(_tflite("ADD", "Add"))
mul.implements("tflite")(_tflite("MUL", "Mul"))


@add.implements("onnx")
def _add_onnx(e, node, ins):
    return e.activate(e.add("Add", ins), node.attrs["activation"])


@mul.implements("onnx")
def _mul_onnx(e, node, ins):
    return e.add("Mul", ins)


def _c(w, i, node, params: dict) -> str:
    """One ``ek_binary_t`` (the broadcast layout and ``params``) and the call; a constant
    second operand becomes an int8 array of its own."""
    from edgekit.converters.to_c import MAX_DIMS

    out_shape, y_name = w.shape(node.outputs[0]), node.inputs[1]
    y_shape = w.graph.tensors[y_name].shape
    y_shape = y_shape if y_name in w.graph.params else (1, *y_shape[1:])
    if w.shape(node.inputs[0]) != out_shape:
        raise EdgekitError(f"{node.op}: only the second operand may broadcast")
    dims, strides = broadcast_layout(out_shape, y_shape)
    if len(dims) > MAX_DIMS:
        raise EdgekitError(f"{node.op}: broadcasting over more than {MAX_DIMS} runs of axes")
    pad = [1] * (MAX_DIMS - len(dims))
    p = w.struct("ek_binary_t", i, dict(size=w.size(node.outputs[0]), ndims=len(dims),
                                         dims=[*dims, *pad], y_strides=[*strides, *pad],
                                         **params))
    y = w.array("int8_t", w.graph.params[y_name]) if y_name in w.graph.params else w.at(y_name)
    return f"ek_{node.op}({p}, {w.at(node.inputs[0])}, {y}, {w.at(node.outputs[0])});"


@add.implements("c")
def _add_c(w, i, node):
    from dataclasses import asdict

    from edgekit.numerics.params import add_params

    return _c(w, i, node, asdict(add_params(w.quant(node), node.attrs["activation"])))


@mul.implements("c")
def _mul_c(w, i, node):
    """The firmware's struct has ADD's three multipliers; MUL uses the first."""
    from dataclasses import asdict

    from edgekit.numerics.params import mul_params

    p = asdict(mul_params(w.quant(node)))
    return _c(w, i, node, {**p, "mult": (p["mult"], 0, 0), "shift": (p["shift"], 0, 0)})


# --- gpu target (torch) and on-device learning ------------------------------------------------

@add.implements("gpu")
def _add_gpu(x, y, *, activation):
    from edgekit.targets.gpu import activate

    return activate(x + y, activation)


@mul.implements("gpu")
def _mul_gpu(x, y):
    return x * y


for _op in (add, mul):
    _op.unsupported("learn", f"edgekit.learn has no gradient rule for {_op.name} (it trains "
                             "sequential chains of conv/linear blocks)")


# --- spiking backends -------------------------------------------------------------------------
# spiking, spiking_int8, onnx_spiking, c_spiking and quant_spiking of add and mul are
# registered here by the spiking engines' migration.

from edgekit.ops.spiking import no_spiking_form, same_every_step  # noqa: E402

same_every_step(add)
no_spiking_form(add, "int8 spiking Graphs add spikes to a current with scaled_add (edgekit."
                     "quantize makes it of a residual add); float32 ones write add as float32 "
                     "Graphs do", ("spiking_int8", "onnx_spiking"))
no_spiking_form(mul, "converters.snn.to_snn refuses mul: a product of spike trains is not the "
                     "product of the rates")


@add.implements("quant_spiking")
def _add_quant_spiking(g, node, float_params, per_channel, partners):
    """A residual add of a spike tensor and a layer's current becomes ``scaled_add(spikes,
    current)``: int32 in the current's scale, which the current's layer made the spike scale
    over an integer (``numerics.params.scaled_add_params``)."""
    import copy

    from edgekit.numerics.params import scaled_add_params
    from edgekit.quant.spiking import per_tensor, set_tensor

    kinds = sorted(g.tensors[name].dtype for name in node.inputs)
    if kinds != ["int32", "int8"] or node.inputs[1] in g.params:
        raise EdgekitError("int8 SNNs add a spike tensor to a layer's current (a residual "
                           "connection), nothing else; run this SNN in float32")
    spikes, current = sorted(node.inputs, key=lambda name: g.tensors[name].dtype != "int8")
    quant = per_tensor(g, current, "add")
    m = scaled_add_params(g.tensors[spikes].quant, quant).multiplier
    set_tensor(g, node.outputs[0], "int32", copy.deepcopy(quant))
    node.op, node.inputs, node.attrs = "scaled_add", [spikes, current], {"multiplier": m}


@add.implements("c_spiking")
def _add_c_spiking(w, i, node):
    """A float32 spiking Graph's residual add (an int8 one holds ``scaled_add``)."""
    w.no_activation(node)
    x, y = node.inputs
    if y in w.graph.params or w.shape(x) != w.shape(y):
        raise EdgekitError(f"add {node.name or node.outputs[0]}: the firmware's spiking path "
                           "adds two activations of one shape (a residual), no broadcasting")
    return f"ek_add_f32({w.size(x)}, {w.at(x)}, {w.at(y)}, {w.at(node.outputs[0])})"
