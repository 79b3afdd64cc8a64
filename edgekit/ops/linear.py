"""linear: y = x @ W.T + b over the last axis (a fully connected layer).

int8 requantizes with ``numerics.params.conv_params`` (as TFLite's FULLY_CONNECTED), which the
C writer reads too. The importers also lower a product with a constant matrix to it: torch's
addmm (how core ATen spells nn.Linear) and ONNX's Gemm here, torch's matmul/mm and ONNX's
MatMul with a constant right side in ``ops/matmul.py``.
"""

from __future__ import annotations

import numpy as np

from edgekit.ops import declare
from edgekit.ops.schema import OpDef, fail, prod
from edgekit.ops.util import finish, float_bias


def _shape(s, a):
    x, w = s[0], s[1]
    if len(w) != 2 or len(x) < 2 or x[-1] != w[1]:
        fail(f"linear weight {w} does not match input {x}")
    if len(s) > 2 and tuple(s[2]) != (w[0],):
        fail(f"bias shape {s[2]} does not match {w[0]} outputs")
    return (*x[:-1], w[0])


def _reference(x, w, b=None, *, activation):
    y = x.astype(np.float64) @ w.astype(np.float64).T
    return finish(y if b is None else y + b, activation)


linear = declare(OpDef(
    "linear", (2, 3), {"activation": "none"}, _shape, lambda i, o, a: prod(o) * i[1][1],
    weight_inputs=(1, 2), int8_weights=True, reference=_reference,
    doc="y = x @ W.T + b over the last axis; W is [out, in]"))


# --- runtime ------------------------------------------------------------------------------------

@linear.implements("float32")
def _float32(ins, out, *, activation):
    from edgekit.runtime.kernels import elementwise
    from edgekit.runtime.kernels.linear import gemm_nt
    from edgekit.runtime.registry import bind

    x, w = ins[0], ins[1]
    return bind(gemm_nt, x.reshape(-1, x.shape[-1]), w, float_bias(ins, w.shape[0]),
                False, *elementwise.ACTIVATION_BOUNDS[activation], out.reshape(-1, out.shape[-1]))


@linear.implements("int8")
def _int8(ins, out, *, activation, quant):
    """int8 rows times int8 weights; the input zero point is folded into the bias once:
    ``sum((x - zp) * w) + b = sum(x * w) + (b - zp * sum(w))``."""
    from edgekit.numerics.params import conv_params
    from edgekit.runtime.kernels import int8_gemm
    from edgekit.runtime.registry import bind

    x, w = ins[0], ins[1]
    p = conv_params(quant, w, ins[2] if len(ins) > 2 else None, activation,
                    fully_connected=True)
    return bind(int8_gemm.gemm_requant, x.reshape(-1, x.shape[-1]), w, p.folded, False, p.mult,
                p.shift, p.out_zp, p.lo, p.hi, out.reshape(-1, out.shape[-1]))


# --- importers ----------------------------------------------------------------------------------

def _torch_linear(c, x, weight, bias=None):
    w = c.param(c.const(weight, "linear"), "weight")
    b = [] if bias is None else [c.param(c.const(bias, "linear"), "bias")]
    return c.emit("linear", [x, w, *b])


def _torch_addmm(c, bias, x, other, beta=1, alpha=1):
    from edgekit.converters.from_torch import Act, Unsupported

    if any(isinstance(v, Act) for v in (bias, other)) or not isinstance(x, Act):
        raise Unsupported("addmm with non-constant weights")
    out = other.shape[-1]
    if bias.numel() not in (1, out):
        raise Unsupported("addmm with a per-sample bias")
    return _torch_linear(c, x, other.t() * alpha, (bias * beta).reshape(-1).expand(out))


_TORCH = {"linear": _torch_linear, "addmm": _torch_addmm}


@linear.implements("torch", names=tuple(_TORCH))
def _torch(c, *args, **kwargs):
    return _TORCH[c.aten](c, *args, **kwargs)


def _onnx_gemm(n, a, b, c=None):
    """alpha * A @ B' + beta * C with a constant B; a computed C is added after the linear."""
    from edgekit.converters.from_torch import Act, Unsupported
    from edgekit.ops.elementwise import arith

    if n.get("transA", 0):
        raise Unsupported("Gemm(transA=1)")
    if not isinstance(a, Act):
        raise Unsupported("Gemm with a constant A")
    b = n.const(b, "Gemm with a non-constant B")
    w = (b if n.get("transB", 0) else b.T) * n.get("alpha", 1.0)
    out = w.shape[0]
    inputs = [a, n.param(w, "weight")]
    bias = None if c is None or isinstance(c, Act) else c * n.get("beta", 1.0)
    if bias is not None:
        if bias.size not in (1, out):
            raise Unsupported("Gemm with a per-sample C")
        inputs.append(n.param(np.broadcast_to(bias.reshape(-1), (out,)), "bias"))
    y = n.emit("linear", inputs)
    if isinstance(c, Act):
        c = c if n.get("beta", 1.0) == 1.0 else arith(n.b, "mul", c, n.get("beta"), n.name)
        y = arith(n.b, "add", y, c, n.name)
    return y


_ONNX = {"Gemm": _onnx_gemm}


@linear.implements("onnx_import", names=tuple(_ONNX))
def _onnx_import(n, *inputs):
    return _ONNX[n.op](n, *inputs)


# --- writers ------------------------------------------------------------------------------------

@linear.implements("tflite")
def _tflite(w, node):
    """FULLY_CONNECTED over the last axis; inputs of rank > 2 reshape back afterwards."""
    from edgekit.converters.to_tflite import identity

    rank = len(w.graph.tensors[node.inputs[0]].shape)
    x = w.value(node.inputs[0], identity(rank))
    out = w.output(node, identity(rank))
    shape = w.shape(out)
    flat = out if rank == 2 else w.derived(out, [prod(shape[:-1]), shape[-1]], "/2d")
    weight = w.graph.params[node.inputs[1]]
    opts = w.options("FullyConnected", fusedActivationFunction=w.fused(node.attrs["activation"]))
    w.op("FULLY_CONNECTED", [x, w.weight(node, weight, 0), w.bias(node, weight.shape[0])],
         [flat], opts)
    if flat != out:
        w.reshape(flat, out)


@linear.implements("onnx")
def _onnx(e, node, ins):
    """Gemm for [N, in] inputs; MatMul (on the transposed weight) + Add for higher ranks."""
    if len(e.graph.tensors[node.inputs[0]].shape) == 2:
        y = e.add("Gemm", ins, transB=1)
    else:
        y = e.add("MatMul", [ins[0], e.add("Transpose", [ins[1]], perm=[1, 0])])
        y = e.add("Add", [y, ins[2]]) if len(ins) > 2 else y
    return e.activate(y, node.attrs["activation"])


@linear.implements("c")
def _c(w, i, node):
    """``ek_linear`` over the rows of the last axis, the input zero point in the bias."""
    from edgekit.numerics.params import conv_params

    weight = w.graph.params[node.inputs[1]]
    p = conv_params(w.quant(node), weight, w.graph.params.get(node.inputs[2])
                    if len(node.inputs) > 2 else None, node.attrs["activation"],
                    fully_connected=True)
    xs = w.shape(node.inputs[0])
    fields = dict(rows=w.size(node.inputs[0]) // xs[-1], **{"in": xs[-1]}, out=weight.shape[0],
                  out_zp=p.out_zp, lo=p.lo, hi=p.hi, weight=w.array("int8_t", weight),
                  bias=w.array("int32_t", p.folded_int32(f"node {node.name or node.op}")),
                  mult=w.array("int32_t", p.mult), shift=w.array("int32_t", p.shift))
    return (f"ek_linear({w.struct('ek_linear_t', i, fields)}, {w.at(node.inputs[0])}, "
            f"{w.at(node.outputs[0])});")


# --- other consumers ----------------------------------------------------------------------------

@linear.implements("gpu")
def _gpu(x, w, b=None, *, activation):
    import torch.nn.functional as F

    from edgekit.targets.gpu import activate

    return activate(F.linear(x, w, b), activation)


@linear.implements("learn")
def _learn(blocks, graph, node, where):
    from edgekit.learn.blocks import add_dense

    add_dense(blocks, graph, node, where)


# --- spiking backends ---------------------------------------------------------------------------
# Registered below by the spiking migration (event-driven and integer spiking kernels, spiking
# quantizer, unrolled ONNX and firmware writers).

from edgekit.ops.spiking import synapse  # noqa: E402


def _event_linear(ins, out, *, activation):
    """Fed by spikes: each non-zero input element adds its weight row to the outputs, which
    start from the bias; SOPs counted."""
    from edgekit.errors import EdgekitError
    from edgekit.runtime.kernels import spiking
    from edgekit.runtime.spiking import EventStep

    x, w = ins[0], ins[1]
    if activation != "none":
        raise EdgekitError("an event-driven linear layer takes no fused activation")
    bias = ins[2] if len(ins) > 2 else np.zeros(w.shape[0], out.dtype)
    return EventStep(spiking.event_linear, x.reshape(-1, x.shape[-1]), np.ascontiguousarray(w.T),
                     bias, out.reshape(-1, out.shape[-1]))


synapse(linear, _event_linear)


@linear.implements("onnx_spiking")
def _onnx_spiking(e, step, node):
    """int32 MatMul (exact in ONNX Runtime) on the input less its zero point, plus the bias."""
    params = e.graph.params
    w_t = e.once(f"{node.inputs[1]}/t", lambda: params[node.inputs[1]].T.astype(np.int32))
    b = e.once(node.inputs[2], lambda: params[node.inputs[2]])
    e.add("Add", [e.add("MatMul", [e.centred(node, step.inputs[0], "INT32"), w_t]), b])


@linear.implements("c_spiking")
def _c_spiking(w, i, node):
    """``ek_event_linear`` on flat (N, features) inputs, float32 or int8 weights."""
    from edgekit.errors import EdgekitError

    w.no_activation(node)
    weight = w.graph.params[node.inputs[1]]
    if w.size(node.inputs[0]) != weight.shape[1]:
        raise EdgekitError(f"linear {node.name or node.outputs[0]}: the firmware's spiking "
                           "path runs linear layers on flat (N, features) inputs")
    suffix, x = w.event_input(i, node)
    return (f"ek_event_linear_{suffix}({weight.shape[1]}, {weight.shape[0]}, "
            f"{w.weights(f'w{i}', weight.T)}, {w.bias(i, node, weight.shape[0])}, "
            f"{x}, {w.at(node.outputs[0])})")
