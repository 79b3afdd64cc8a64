"""Binary elementwise ops: add (with a fused activation), sub, mul, div, maximum and minimum,
with every backend's implementation; both operands broadcast as numpy's do ((N, 3, 1) and
(N, 1, 4) give (N, 3, 4)).

Their int8 forms are TFLite's ADD, SUB, MUL, DIV, MAXIMUM and MINIMUM as tflite-micro computes
them, with the integer parameters of ``numerics.params`` that the runtime and the C writer both
read. A constant operand keeps its own (lower) rank; an activation operand has the output's
rank (Graph validation), so the batch axes line up.
"""

from __future__ import annotations

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.ops import declare
from edgekit.ops.schema import OpDef, elementwise_macs, fail
from edgekit.ops.util import finish


def broadcast(s, a):
    """numpy's broadcast of the operand shapes; a constant may not broadcast along the batch."""
    rank = max(len(x) for x in s)
    padded = [(1,) * (rank - len(x)) + tuple(x) for x in s]
    out = []
    for dims in zip(*padded, strict=True):
        size = max(dims)
        if any(d not in (1, size) for d in dims):
            fail(f"shapes {' and '.join(str(tuple(x)) for x in s)} do not broadcast")
        out.append(size)
    if out[0] != 1:
        fail(f"shapes {' and '.join(str(tuple(x)) for x in s)} broadcast along the batch axis")
    return tuple(out)


def _binary(name: str, fn, doc: str, attrs=None, quant="calibrated", macs=None) -> OpDef:
    """A binary op computing numpy's ``fn``; ``macs`` counts its multiplies (mul, div: one per
    output; add, sub, maximum, minimum: none, as the profilers count them)."""
    activation = "activation" in (attrs or {})
    return declare(OpDef(
        name, (2, 2), attrs or {}, broadcast, macs or (lambda i, o, a: 0), quant=quant, doc=doc,
        reference=(lambda x, y, *, activation: finish(fn(x.astype(np.float64), y), activation))
        if activation else lambda x, y: finish(fn(x.astype(np.float64), y))))


add = _binary("add", np.add, "elementwise x + y (numpy broadcasting), then the activation",
              {"activation": "none"})
sub = _binary("sub", np.subtract, "elementwise x - y (numpy broadcasting), then the activation",
              {"activation": "none"})
mul = _binary("mul", np.multiply, "elementwise x * y (numpy broadcasting)",
              macs=elementwise_macs)
div = _binary("div", np.divide, "elementwise x / y (numpy broadcasting)", macs=elementwise_macs)
maximum = _binary("maximum", np.maximum, "elementwise max(x, y) (numpy broadcasting)",
                  quant="all_inputs")
minimum = _binary("minimum", np.minimum, "elementwise min(x, y) (numpy broadcasting)",
                  quant="all_inputs")
BINARY = (add, sub, mul, div, maximum, minimum)


def broadcast_layout(shape, *operands) -> tuple[np.ndarray, ...]:
    """How the kernels read operands of shapes ``operands`` broadcast to ``shape``: (dims,
    strides of each operand), axes of size 1 dropped and neighbouring axes merged while every
    operand is broadcast along both or along neither (its stride there is 0 where broadcast)."""
    padded = [(1,) * (len(shape) - len(s)) + tuple(s) for s in operands]
    dims: list[int] = []
    kinds: list[tuple[bool, ...]] = []
    for axis, d in enumerate(shape):
        if any(p[axis] not in (1, d) for p in padded):
            raise EdgekitError(f"operands of shapes {[tuple(s) for s in operands]} do not "
                               f"broadcast to {tuple(shape)}")
        kind = tuple(p[axis] == 1 for p in padded)
        if d > 1 and dims and kinds[-1] == kind:
            dims[-1] *= d
        elif d > 1:
            dims.append(d)
            kinds.append(kind)
    strides = []
    for k in range(len(operands)):
        own, step = [], 1
        for d, kind in zip(reversed(dims), reversed(kinds), strict=True):
            own.append(0 if kind[k] else step)
            step *= 1 if kind[k] else d
        strides.append(np.array(own[::-1] or [0], np.int64))
    return (np.array(dims or [1], np.int64), *strides)


def _layout(ins, out) -> tuple[np.ndarray, ...]:
    """``broadcast_layout`` of the runtime's arrays."""
    return broadcast_layout(out.shape, *(v.shape for v in ins))


# --- edgekit runtime --------------------------------------------------------------------------

def _float32(op: OpDef):
    @op.implements("float32")
    def prepare(ins, out, activation="none"):
        from edgekit.runtime.kernels import elementwise
        from edgekit.runtime.registry import bind

        x, y = ins
        return bind(elementwise.binary, x.reshape(-1), y.reshape(-1), *_layout(ins, out),
                    elementwise.BINARY[op.name], *elementwise.ACTIVATION_BOUNDS[activation],
                    out.reshape(-1))


for _op in BINARY:
    _float32(_op)


def _add_sub_int8(sign: int):
    def prepare(ins, out, *, activation, quant):
        from edgekit.numerics.params import add_params
        from edgekit.runtime.kernels import int8_elementwise
        from edgekit.runtime.registry import bind

        x, y = ins
        p = add_params(quant, activation)
        return bind(int8_elementwise.add, x.reshape(-1), y.reshape(-1), *_layout(ins, out),
                    sign, p.zx, p.zy, p.zo, np.array(p.mult, np.int32),
                    np.array(p.shift, np.int32), p.lo, p.hi, out.reshape(-1))

    return prepare


add.implements("int8")(_add_sub_int8(1))
sub.implements("int8")(_add_sub_int8(-1))


@mul.implements("int8")
def _mul_int8(ins, out, *, quant):
    from edgekit.numerics.params import mul_params
    from edgekit.runtime.kernels import int8_elementwise
    from edgekit.runtime.registry import bind

    x, y = ins
    p = mul_params(quant)
    return bind(int8_elementwise.mul, x.reshape(-1), y.reshape(-1), *_layout(ins, out), p.zx,
                p.zy, p.zo, p.mult, p.shift, p.lo, p.hi, out.reshape(-1))


def _select_int8(op: OpDef):
    @op.implements("int8")
    def prepare(ins, out, *, quant):
        from edgekit.runtime.int8 import check_shared
        from edgekit.runtime.kernels import int8_elementwise
        from edgekit.runtime.registry import bind

        check_shared(op.name, quant)
        x, y = ins
        return bind(int8_elementwise.select, x.reshape(-1), y.reshape(-1), *_layout(ins, out),
                    op is maximum, out.reshape(-1))


_select_int8(maximum)
_select_int8(minimum)
@div.implements("int8")
def _div_int8(ins, out, *, quant):
    from edgekit.numerics.params import div_params
    from edgekit.runtime.kernels import int8_elementwise
    from edgekit.runtime.registry import bind

    x, y = ins
    p = div_params(quant)
    return bind(int8_elementwise.div, x.reshape(-1), y.reshape(-1), *_layout(ins, out), p.zx,
                p.zy, p.zo, p.mult, p.shift, p.lo, p.hi, out.reshape(-1))


# --- importers --------------------------------------------------------------------------------

_COMMUTATIVE = ("add", "mul", "maximum", "minimum")


def arith(b, op: str, x, y, name: str):
    """``x op y`` for add/sub/mul/div/maximum/minimum where either side may be a constant (both
    importers, and the composites that end in one, e.g. ONNX Gemm with a computed C).

    A constant operand of a commutative op goes second, where the importers' passes look for
    one to fold into a conv/linear before it. Subtracting a constant stays an add of its
    negation: exact in float (x - c is x + (-c) bit for bit), foldable into a conv's bias, and in
    int8 TFLite's ADD and SUB are one arithmetic, so nothing is lost. Dividing by a constant
    stays a mul by its reciprocal: within a float32 rounding of x / c, foldable into a conv's
    weights, and in int8 a MUL by the reciprocal quantized once, where int8 DIV would quantize
    c and then approximate 1 / c again in fixed point.
    """
    from edgekit.converters.from_torch import Act, const_param

    if not isinstance(y, Act) and op in ("sub", "div"):
        y = np.asarray(y, np.float32)
        with np.errstate(divide="ignore"):  # 1 / 0 is inf: validation names the param
            y, op = (-y, "add") if op == "sub" else (np.float32(1) / y, "mul")
    if not isinstance(x, Act) and op in _COMMUTATIVE:
        x, y = y, x
    x, y = (v if isinstance(v, Act) else const_param(b, v, f"{name}.const") for v in (x, y))
    return Act(b.node(op, [x.name, y.name], name=name))


def _torch(c, x, y=None, alpha=1, rounding_mode=None):
    """aten add/sub/rsub/mul/div/reciprocal/maximum/minimum (the op is ``c.aten``), through
    ``arith``; ``rsub(x, y, alpha)`` is ``y - alpha * x``, ``reciprocal(x)`` (what ``c / x``
    exports as, times c) ``1 / x``."""
    from edgekit.converters.from_torch import Act, Unsupported

    op = c.aten
    if rounding_mode is not None:
        raise Unsupported(f"div(rounding_mode={rounding_mode!r})")
    if op == "rsub":
        x, y, op = y, x, "sub"
    elif op == "reciprocal":
        x, y, op = np.float32(1), x, "div"
    if alpha != 1:
        if isinstance(y, Act):
            raise Unsupported(f"{c.aten} with alpha")
        y = y * alpha
    x, y = (v if isinstance(v, Act) or not hasattr(v, "detach") else c.const(v, c.aten)
            for v in (x, y))
    return arith(c.b, op, x, y, c.name)


def _onnx_import(n, x, *rest):
    """ONNX Add/Sub/Mul/Div and the variadic Max/Min (folded pairwise), through ``arith``."""
    op = {"Max": "maximum", "Min": "minimum"}.get(n.op, n.op.lower())
    for i, y in enumerate(rest):
        x = arith(n.b, op, x, y, n.name if i == len(rest) - 1 else f"{n.name}.{i}")
    return x


for _op, _aten, _onnx in ((add, ("add",), "Add"), (sub, ("sub", "rsub"), "Sub"),
                          (mul, ("mul",), "Mul"), (div, ("div", "reciprocal"), "Div"),
                          (maximum, ("maximum",), "Max"), (minimum, ("minimum",), "Min")):
    _op.implements("torch", names=_aten)(_torch)
    _op.implements("onnx_import", names=(_onnx,))(_onnx_import)


# --- writers ----------------------------------------------------------------------------------

_TFLITE = {"add": ("ADD", "Add"), "sub": ("SUB", "Sub"), "mul": ("MUL", "Mul"),
           "div": ("DIV", "Div"), "maximum": ("MAXIMUM", "MaximumMinimum"),
           "minimum": ("MINIMUM", "MaximumMinimum")}
_ONNX = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "maximum": "Max",
         "minimum": "Min"}


def _tflite(w, node):
    """The op in the layout of its first activation operand; TFLite broadcasts as numpy."""
    code, options = _TFLITE[node.op]
    layout = w.layout[next(n for n in node.inputs if n not in w.graph.params)]
    ins = [w.value(name, layout) for name in node.inputs]
    fields = ({"fusedActivationFunction": w.fused(node.attrs.get("activation", "none"))}
              if options != "MaximumMinimum" else {})
    w.op(code, ins, [w.output(node, layout)], w.options(options, **fields))


def _onnx(e, node, ins):
    return e.activate(e.add(_ONNX[node.op], ins), node.attrs.get("activation", "none"))


def c_operand(w, name: str) -> tuple[tuple[int, ...], str]:
    """(shape, C expression) of a kernel operand: a param's own shape and an int8 array of its
    own, or an activation at batch 1 in the arena."""
    if name in w.graph.params:
        return w.graph.tensors[name].shape, w.array("int8_t", w.graph.params[name])
    return w.shape(name), w.at(name)


def c_binary(w, i, node, kernel: str, params: dict, y=None) -> str:
    """One ``ek_binary_t`` (the broadcast layout of both operands and ``params``) and the call
    of ``kernel`` on it; ``y`` may give the second operand's (shape, C expression) instead."""
    from edgekit.converters.to_c import MAX_DIMS

    (x_shape, x), (y_shape, y) = c_operand(w, node.inputs[0]), y or c_operand(w, node.inputs[1])
    dims, x_strides, y_strides = broadcast_layout(w.shape(node.outputs[0]), x_shape, y_shape)
    if len(dims) > MAX_DIMS:
        raise EdgekitError(f"{node.op}: broadcasting over more than {MAX_DIMS} runs of axes")
    pad = [1] * (MAX_DIMS - len(dims))
    p = w.struct("ek_binary_t", i, dict(size=w.size(node.outputs[0]), ndims=len(dims),
                                         dims=[*dims, *pad], x_strides=[*x_strides, *pad],
                                         y_strides=[*y_strides, *pad], **params))
    return f"{kernel}({p}, {x}, {y}, {w.at(node.outputs[0])});"


def _add_sub_c(w, i, node):
    from dataclasses import asdict

    from edgekit.numerics.params import add_params

    return c_binary(w, i, node, f"ek_{node.op}",
                    asdict(add_params(w.quant(node), node.attrs["activation"])))


add.implements("c")(_add_sub_c)
sub.implements("c")(_add_sub_c)


def _first_multiplier(p: dict) -> dict:
    """Parameters with one multiplier in the first of the struct's three slots."""
    return {**p, "mult": (p["mult"], 0, 0), "shift": (p["shift"], 0, 0)}


@mul.implements("c")
def _mul_c(w, i, node):
    """The firmware's struct has ADD's three multipliers; MUL uses the first."""
    from dataclasses import asdict

    from edgekit.numerics.params import mul_params

    return c_binary(w, i, node, "ek_mul", _first_multiplier(asdict(mul_params(w.quant(node)))))


def _select_c(w, i, node):
    """MAXIMUM/MINIMUM compare stored values (one shared quantization): no parameters."""
    from edgekit.runtime.int8 import check_shared

    check_shared(node.op, w.quant(node))
    return c_binary(w, i, node, f"ek_{node.op}", {})


for _op in BINARY:
    _op.implements("tflite")(_tflite)
    _op.implements("onnx")(_onnx)
maximum.implements("c")(_select_c)
minimum.implements("c")(_select_c)


@div.implements("c")
def _div_c(w, i, node):
    """The firmware's struct has ADD's three multipliers; DIV uses the first."""
    from dataclasses import asdict

    from edgekit.numerics.params import div_params

    return c_binary(w, i, node, "ek_div", _first_multiplier(asdict(div_params(w.quant(node)))))


# --- gpu target (torch) and on-device learning ------------------------------------------------

def _gpu(op: OpDef):
    @op.implements("gpu")
    def fn(x, y, activation="none"):
        import torch

        from edgekit.targets.gpu import activate

        return activate(getattr(torch, op.name)(x, y), activation)


for _op in BINARY:
    _gpu(_op)
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
no_spiking_form(div, "converters.snn.to_snn refuses div: a quotient of spike trains is not the "
                     "quotient of the rates")
no_spiking_form(sub, "converters.snn.to_snn refuses sub: a rate-coded spike train cannot carry "
                     "the negative values a difference takes")
for _op in (maximum, minimum):
    no_spiking_form(_op, f"converters.snn.to_snn refuses {_op.name}: the elementwise "
                         f"{_op.name} of two spike trains is not that of their rates")


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
