"""``to_c``: an int8 Graph as C for edgekit's microcontroller firmware (``firmware_bridge``).

The model becomes ``model.c``/``model.h``: weights as const arrays (they stay in flash), one
const parameter struct per node, a static schedule of kernel calls (``run_step``, a switch: no
interpreter) and one static arena whose offsets come from edgekit's memory planner, so the
board uses exactly the peak activation memory edgekit reports. Every multiplier, shift and
activation bound is derived by the numba runtime's own functions (``edgekit.runtime.int8``), so
the firmware computes what the runtime computes, bit for bit.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.fileio import atomic_write_bytes, check_folder
from edgekit.graph import Graph, Node
from edgekit.numerics.arith import quantize_multipliers
from edgekit.numerics.params import activation_bounds
from edgekit.ops import implementation, implementations
from edgekit.runtime.float32 import broadcast_layout
from edgekit.runtime.int8 import conv_multipliers
from edgekit.runtime.planner import Buffer, GreedyPlanner, Plan

MAX_DIMS = 6  # EK_MAX_DIMS in ek_kernels.h
LINK_PAYLOAD_LIMIT = 65535  # the frame's u16 length field


def _size(shape) -> int:
    """Elements of one sample (the board runs batch 1)."""
    return math.prod(shape[1:])


def _zp(q) -> int:
    return int(q.zero_point[0])


def _f32(x) -> float:
    return float(np.float32(x))


def _c_array(ctype: str, name: str, values: np.ndarray) -> str:
    flat = np.asarray(values).reshape(-1)
    fmt = (lambda v: repr(float(np.float32(v))) + "f") if ctype == "float" else str
    body = ",".join(fmt(v) for v in flat.tolist()) or "0"
    return f"static const {ctype} {name}[{max(flat.size, 1)}] = {{{body}}};"


def _struct(ctype: str, name: str, fields: dict[str, object]) -> str:
    body = ", ".join(f".{k} = {_c_value(v)}" for k, v in fields.items())
    return f"static const {ctype} {name} = {{{body}}};"


def _c_value(v: object) -> str:
    if isinstance(v, (list, tuple, np.ndarray)):
        return "{" + ", ".join(_c_value(x) for x in np.asarray(v).tolist()) + "}"
    if isinstance(v, float):
        return repr(float(np.float32(v))) + "f"
    return str(v)


class _Writer:
    """Collects the declarations and the call of each step while walking the Graph."""

    def __init__(self, graph: Graph, plan: Plan, offsets: dict[str, int]):
        self.graph, self.plan, self.offsets = graph, plan, offsets
        self.decls: list[str] = []
        self.calls: list[str] = []
        self.col_bytes = 0
        self._arrays = 0

    def array(self, ctype: str, values: np.ndarray) -> str:
        name = f"k{self._arrays}"
        self._arrays += 1
        self.decls.append(_c_array(ctype, name, values))
        return name

    def at(self, tensor: str) -> str:
        return f"(arena + {self.offsets[tensor]})"

    def shape(self, tensor: str) -> tuple[int, ...]:
        return (1, *self.graph.tensors[tensor].shape[1:])

    def quant(self, node: Node) -> list:
        return [self.graph.tensors[t].quant for t in (*node.inputs, *node.outputs)]

    def size(self, tensor: str) -> int:
        """Elements of one sample of ``tensor``."""
        return _size(self.shape(tensor))

    def struct(self, ctype: str, i: int, fields: dict[str, object]) -> str:
        """Declare step ``i``'s const parameter struct; returns its address as C."""
        self.decls.append(_struct(ctype, f"p{i}", fields))
        return f"&p{i}"


def _conv(w: _Writer, i: int, node: Node, one_d: bool) -> str:
    a, graph = node.attrs, w.graph
    x, weight, bias = (graph.params.get(t) for t in node.inputs[:3])
    xs, ys = w.shape(node.inputs[0]), w.shape(node.outputs[0])
    if one_d:
        xs, ys, weight = (*xs[:2], 1, xs[2]), (*ys[:2], 1, ys[2]), weight[:, :, None, :]
        geometry = dict(sh=1, sw=a["stride"][0], pt=0, pl=a["padding"][0], dh=1,
                        dw=a["dilation"][0])
    else:
        geometry = dict(sh=a["stride"][0], sw=a["stride"][1], pt=a["padding"][0],
                        pl=a["padding"][1], dh=a["dilation"][0], dw=a["dilation"][1])
    quant = w.quant(node)
    m, shift = conv_multipliers(quant, weight.shape[0], False)
    lo, hi = activation_bounds(a["activation"], quant[-1])
    folded = bias.astype(np.int64) - _zp(quant[0]) * weight.reshape(weight.shape[0], -1).astype(
        np.int64).sum(axis=1)
    _check_int32(node, folded)
    w.col_bytes = max(w.col_bytes, 2 * math.prod(weight.shape[1:]))  # two columns
    fields = dict(cin=xs[1], h=xs[2], w=xs[3], cout=ys[1], oh=ys[2], ow=ys[3],
                  kh=weight.shape[2], kw=weight.shape[3], **geometry, groups=a["groups"],
                  in_zp=_zp(quant[0]), out_zp=_zp(quant[-1]), lo=lo, hi=hi,
                  weight=w.array("int8_t", weight), bias=w.array("int32_t", folded),
                  mult=w.array("int32_t", m), shift=w.array("int32_t", shift))
    w.decls.append(_struct("ek_conv_t", f"p{i}", fields))
    return f"ek_conv2d(&p{i}, col, {w.at(node.inputs[0])}, {w.at(node.outputs[0])});"


def _check_int32(node: Node, values: np.ndarray) -> None:
    if np.abs(values).max(initial=0) >= 2**31:
        raise EdgekitError(f"node {node.name or node.op}: folded bias overflows int32; "
                           "quantize with edgekit.quantize (it keeps biases under 2^30)")


def _linear(w: _Writer, i: int, node: Node) -> str:
    weight, bias = (w.graph.params[t] for t in node.inputs[1:3])
    quant = w.quant(node)
    m, shift = conv_multipliers(quant, weight.shape[0], len(quant[1].scale) == 1)
    lo, hi = activation_bounds(node.attrs["activation"], quant[-1])
    folded = bias.astype(np.int64) - _zp(quant[0]) * weight.astype(np.int64).sum(axis=1)
    _check_int32(node, folded)
    xs = w.shape(node.inputs[0])
    fields = dict(rows=_size(xs) // xs[-1], **{"in": xs[-1]}, out=weight.shape[0],
                  out_zp=_zp(quant[-1]), lo=lo, hi=hi, weight=w.array("int8_t", weight),
                  bias=w.array("int32_t", folded), mult=w.array("int32_t", m),
                  shift=w.array("int32_t", shift))
    w.decls.append(_struct("ek_linear_t", f"p{i}", fields))
    return f"ek_linear(&p{i}, {w.at(node.inputs[0])}, {w.at(node.outputs[0])});"


def _binary(w: _Writer, i: int, node: Node) -> str:
    quant = w.quant(node)
    out_shape, y_name = w.shape(node.outputs[0]), node.inputs[1]
    y_shape = w.graph.tensors[y_name].shape
    y_shape = y_shape if y_name in w.graph.params else (1, *y_shape[1:])
    if w.shape(node.inputs[0]) != out_shape:
        raise EdgekitError(f"{node.op}: only the second operand may broadcast")
    dims, strides = broadcast_layout(out_shape, y_shape)
    if len(dims) > MAX_DIMS:
        raise EdgekitError(f"{node.op}: broadcasting over more than {MAX_DIMS} runs of axes")
    s1, s2, s_out = (float(np.float32(q.scale[0])) for q in quant)
    if node.op == "add":
        twice = 2 * max(s1, s2)
        reals = [s1 / twice, s2 / twice, twice / ((1 << 20) * s_out)]
        lo, hi = activation_bounds(node.attrs["activation"], quant[2])
    else:
        reals, (lo, hi) = [s1 * s2 / s_out, 0.0, 0.0], (-128, 127)
    m, shift = quantize_multipliers(np.array(reals))
    pad = [1] * (MAX_DIMS - len(dims))
    fields = dict(size=_size(out_shape), ndims=len(dims), dims=[*dims, *pad],
                  y_strides=[*strides, *pad], zx=_zp(quant[0]), zy=_zp(quant[1]),
                  zo=_zp(quant[2]), lo=lo, hi=hi, mult=m, shift=shift)
    w.decls.append(_struct("ek_binary_t", f"p{i}", fields))
    y = w.array("int8_t", w.graph.params[y_name]) if y_name in w.graph.params else w.at(y_name)
    return f"ek_{node.op}(&p{i}, {w.at(node.inputs[0])}, {y}, {w.at(node.outputs[0])});"


def _pool(w: _Writer, i: int, node: Node) -> str:
    a, xs, ys = node.attrs, w.shape(node.inputs[0]), w.shape(node.outputs[0])
    if node.op == "global_avgpool":
        kernel, stride, padding, dilation, include = xs[2:], (1, 1), (0, 0), (1, 1), 0
    else:
        kernel, stride, padding = a["kernel"], a["stride"], a["padding"]
        dilation, include = a.get("dilation", (1, 1)), int(a.get("count_include_pad", False))
    fields = dict(c=xs[1], h=xs[2], w=xs[3], oh=ys[2], ow=ys[3], kh=kernel[0], kw=kernel[1],
                  sh=stride[0], sw=stride[1], pt=padding[0], pl=padding[1], dh=dilation[0],
                  dw=dilation[1], count_include_pad=include, zp=_zp(w.quant(node)[0]))
    w.decls.append(_struct("ek_pool_t", f"p{i}", fields))
    kernel_fn = "ek_maxpool2d" if node.op == "maxpool2d" else "ek_avgpool2d"
    return f"{kernel_fn}(&p{i}, {w.at(node.inputs[0])}, {w.at(node.outputs[0])});"


def _copy(w: _Writer, i: int, node: Node) -> str:
    return (f"ek_copy({_size(w.shape(node.outputs[0]))}, {w.at(node.inputs[0])}, "
            f"{w.at(node.outputs[0])});")


def _concat(w: _Writer, i: int, node: Node) -> str:
    ys = w.shape(node.outputs[0])
    axis = node.attrs["axis"] % len(ys)
    outer, total, offset, calls = math.prod(ys[:axis]), math.prod(ys[axis:]), 0, []
    for name in node.inputs:
        inner = math.prod(w.shape(name)[axis:])
        calls.append(f"ek_concat_part({outer}, {inner}, {total}, {offset}, {w.at(name)}, "
                     f"{w.at(node.outputs[0])});")
        offset += inner
    return " ".join(calls)


def _float_inside(w: _Writer, i: int, node: Node) -> str:
    """softmax/layernorm compute in float between a dequantize and a quantize (the contract)."""
    q_in, q_out = w.quant(node)[0], w.quant(node)[-1]
    edges = dict(zx=_zp(q_in), zo=_zp(q_out), sx=_f32(q_in.scale[0]), so=_f32(q_out.scale[0]))
    xs = w.shape(node.inputs[0])
    if node.op == "softmax":
        axis = node.attrs["axis"] % len(xs)
        fields = dict(outer=math.prod(xs[:axis]), n=xs[axis], inner=math.prod(xs[axis + 1:]),
                      **edges)
        ctype = "ek_softmax_t"
    else:
        gamma, beta = (w.graph.params[t].astype(np.float32) for t in node.inputs[1:3])
        fields = dict(rows=_size(xs) // gamma.size, n=gamma.size, **edges,
                      eps=float(node.attrs["eps"]), gamma=w.array("float", gamma),
                      beta=w.array("float", beta))
        ctype = "ek_layernorm_t"
    w.decls.append(_struct(ctype, f"p{i}", fields))
    return f"ek_{node.op}(&p{i}, {w.at(node.inputs[0])}, {w.at(node.outputs[0])});"


_OPS: dict[str, Callable[[_Writer, int, Node], str]] = {
    "conv2d": lambda w, i, n: _conv(w, i, n, False),
    "conv1d": lambda w, i, n: _conv(w, i, n, True),
    "linear": _linear, "add": _binary, "mul": _binary, "maxpool2d": _pool, "avgpool2d": _pool,
    "global_avgpool": _pool,
    "reshape": _copy, "concat": _concat, "softmax": _float_inside, "layernorm": _float_inside,
}


def _visitor(op: str) -> Callable[[_Writer, int, Node], str] | None:
    impl = implementation(op, "c")
    return impl.fn if impl else _OPS.get(op)


def check_supported(graph: Graph) -> None:
    """Raise unless the firmware can run ``graph``: int8 and every op in the kernel set."""
    if graph.metadata.get("quantized") != "int8":
        raise EdgekitError("the microcontroller firmware runs int8 Graphs and spiking Graphs, "
                           "not float32 ones: quantize first (edgekit.quantize, or `edgekit "
                           "convert --quantize int8`)")
    missing = sorted({n.op for n in graph.nodes if _visitor(n.op) is None})
    if missing:
        have = sorted({*_OPS, *implementations("c")})
        raise EdgekitError(f"the firmware has no kernel for {missing}; it supports {have}")


def max_payload(graph: Graph) -> int:
    """The longest frame payload the firmware exchanges for ``graph`` (its link buffers' size):
    INFER_LAYERS requests, INFER replies (ticks per step + outputs), layer outputs, HELLO."""
    inputs = sum(_size(graph.tensors[n].shape) for n in graph.inputs)
    outputs = sum(_size(graph.tensors[n].shape) for n in graph.outputs)
    layer = max(_size(graph.tensors[n.outputs[0]].shape) for n in graph.nodes)
    need = max(2 + inputs, 4 + 4 * len(graph.nodes) + outputs, 2 + layer, 64)
    if need > LINK_PAYLOAD_LIMIT:
        raise EdgekitError(f"the model exchanges {need:,} B in one frame over the serial link, "
                           f"more than the protocol's {LINK_PAYLOAD_LIMIT:,} B: shrink its "
                           "inputs, outputs or largest layer")
    return need


def memory_plan(graph: Graph, itemsize: int | Callable[[str], int] = 1,
                held: Sequence[str] = ()) -> tuple[Plan, dict[str, int]]:
    """Arena offsets of every activation at batch 1 (GreedyPlanner; no kernel needs scratch in
    the arena: the convolution's column buffer is a separate static array). ``itemsize``: bytes
    per element (4 for a float32 spiking Graph), or a function of the tensor's name (an int8
    spiking Graph's int8 spikes and int32 currents); ``held``: tensors that live through the
    whole schedule (in a spiking Graph, what the time loop reads again at every step)."""
    size_of = itemsize if callable(itemsize) else lambda name: itemsize
    last = len(graph.nodes)
    first_use = {n: 0 for n in (*graph.inputs, *held)}
    last_use = {n: last for n in (*graph.outputs, *held)}
    for i, node in enumerate(graph.nodes):
        for t in node.inputs:
            if t not in graph.params:
                last_use[t] = max(last_use.get(t, i), i)
        for t in node.outputs:
            first_use.setdefault(t, i)
            last_use.setdefault(t, i)
    names = list(first_use)
    buffers = [Buffer(n, size_of(n) * _size(graph.tensors[n].shape), first_use[n], last_use[n])
               for n in names]
    plan = GreedyPlanner().plan(buffers)
    return plan, dict(zip(names, plan.offsets, strict=True))


def ram_bytes(graph: Graph) -> int:
    """Static RAM the model's activations take on the board (its arena): what the fit check
    counts."""
    return memory_plan(graph)[0].size


def generate(graph: Graph) -> tuple[str, str, str]:
    """``(model.c, model.h, hash)``: the C sources and their content hash (16 hex digits)."""
    check_supported(graph)
    max_payload(graph)
    plan, offsets = memory_plan(graph)
    w = _Writer(graph, plan, offsets)
    for i, node in enumerate(graph.nodes):
        w.calls.append(f"    case {i}: {_visitor(node.op)(w, i, node)} break;")
    spans = {
        "inputs": [(offsets[n], _size(graph.tensors[n].shape)) for n in graph.inputs],
        "outputs": [(offsets[n], _size(graph.tensors[n].shape)) for n in graph.outputs],
        "steps": [(offsets[n.outputs[0]], _size(graph.tensors[n.outputs[0]].shape))
                  for n in graph.nodes],
    }
    span_decls = [f"static const ek_span_t {k}[{len(v)}] = {{"
                  + ", ".join(f"{{{o}, {s}}}" for o, s in v) + "};" for k, v in spans.items()]
    body = "\n".join([
        '#include "model.h"', '#include "ek_kernels.h"', "",
        f"static int8_t arena[{max(plan.size, 4)}] __attribute__((aligned(16)));",
        f"static int8_t col[{max(w.col_bytes, 4)}];", *w.decls, *span_decls, "",
        "static void run_step(uint16_t step) {", "    switch (step) {", *w.calls,
        "    default: break;", "    }", "}", "",
    ])
    digest = hashlib.sha256(body.encode()).hexdigest()[:16]
    source = body + "\n".join([
        "const ek_model_t ek_model = {",
        f'    .hash = "{digest}", .arena_bytes = {plan.size},',
        f"    .n_inputs = {len(graph.inputs)}, .n_outputs = {len(graph.outputs)}, "
        f".n_steps = {len(graph.nodes)},",
        "    .inputs = inputs, .outputs = outputs, .steps = steps,",
        "    .arena = arena, .run_step = run_step,", "};", "",
    ])
    header = model_header("to_c", digest, plan.size, len(graph.nodes), max_payload(graph))
    return "/* Generated by edgekit.converters.to_c: do not edit. */\n" + source, header, digest


def model_header(writer: str, digest: str, arena_bytes: int, n_steps: int,
                 max_payload_bytes: int) -> str:
    """``model.h``: what the firmware's protocol server needs to know of a generated model."""
    return (f"/* Generated by edgekit.converters.{writer}: do not edit. */\n"
            "#ifndef MODEL_H\n#define MODEL_H\n#include \"ek_model.h\"\n"
            f"#define EK_MODEL_HASH \"{digest}\"\n#define EK_ARENA_BYTES {arena_bytes}\n"
            f"#define EK_N_STEPS {n_steps}\n#define EK_MAX_PAYLOAD {max_payload_bytes}\n"
            "#endif\n")


def write_model(generated: tuple[str, str, str], outdir: str | Path) -> Path:
    """Write a generator's ``(model.c, model.h, digest)`` into ``outdir``; returns ``outdir``."""
    out = Path(outdir)
    check_folder(out, create=True)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "model.c", generated[0].encode())
    atomic_write_bytes(out / "model.h", generated[1].encode())
    return out


def to_c(graph: Graph, outdir: str | Path) -> Path:
    """Write ``model.c`` and ``model.h`` for ``graph`` into ``outdir``; returns ``outdir``."""
    return write_model(generate(graph), outdir)
