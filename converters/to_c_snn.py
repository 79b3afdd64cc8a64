"""C sources for a spiking Graph on the microcontroller firmware (``converters.snn``'s output,
direct encoding, float32 or quantized to int8 by ``edgekit.quantize``): the same ``ek_model_t``
interface as ``converters.to_c``, so the firmware's protocol, build and boards run it
unchanged.

The whole inference is one step of the schedule, ``SpikingExecutor.run``'s: reset every
membrane to its initial value, run the time-invariant nodes once (``SpikingExecutor.static``:
the first layer, which sees the same analog input at every step), then T times run the other
nodes in order and add the output tensor into its sum, then divide by T. Every kernel is the
twin of the runtime's (``ek_kernels.h``), so the board computes what the runtime computes.

Convolutions and linear layers scatter each non-zero input into the outputs it reaches
(``ek_event_conv2d_f32``, ``ek_event_linear_f32``) and count those synaptic operations where
the runtime does (``SpikingExecutor.event_driven``). The time-invariant first layer runs on the
same scatter kernel, uncounted, where the runtime runs its dense kernel: for a convolution with
one input channel per group (the usual image stem, ``conv.depthwise_planes``) or a pointwise
one, both sum each output as bias, then the taps in order (a zero input adds nothing), so the
board stays bit-identical; a first layer the runtime computes as a reassociated matrix product
(``linear.gemm_nt``: a linear layer, or a convolution over several input channels per group)
differs from it by float rounding, which changes the outputs only where it flips a spike.

An int8 spiking Graph (``edgekit.quant.spiking``) runs on the integer twins of the runtime's
int8 kernels, chosen by each tensor's dtype: int8 weights, int8 spikes and int32 currents, pool
sums and membranes, the Q15 leak, the scaled residual add. Its first layer is the event kernel
on the int8 input less its zero point (``spiking._centred``), uncounted; its output is the int32
sum over the T steps, undivided (the ``SpikingExecutor.run(x, raw=True)`` result), which the
Session's edge divides by T and dequantizes. Integer sums wrap as the runtime's do, so the board
returns the runtime's integers exactly, whatever the order of the additions.

Activations live in one static arena planned like ``to_c``'s (four bytes an element for float32
and int32 tensors, one for int8; what the time loop reads again at every step,
``SpikingExecutor.held``, lives through the whole inference), followed by the output sum (four
bytes an element); membranes are static arrays beside it. Float weights are written as
hexadecimal literals, exact. The model's STATS are its synaptic operations and each node's
ticks over the inference.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgekit.converters.to_c import (
    LINK_PAYLOAD_LIMIT,
    _struct,
    memory_plan,
    model_header,
    write_model,
)
from edgekit.errors import EdgekitError
from edgekit.graph import Graph, Node
from edgekit.ops import NEURON_OPS
from edgekit.quant.spiking import add_multiplier, leak_multiplier, spike_amplitudes
from edgekit.runtime.kernels.spiking import tap_targets
from edgekit.runtime.spiking import SpikingExecutor


def _size(shape) -> int:
    """Elements of one sample (the board runs batch 1)."""
    return int(np.prod(shape[1:], dtype=np.int64))


_CTYPES = {"float32": "float", "int8": "int8_t", "int32": "int32_t"}
_ITEMSIZE = {"float32": 4, "int8": 1, "int32": 4}
_SUFFIX = {"float32": "f32", "int8": "s8", "int32": "s32"}  # the kernel for that input dtype


def _literals(values: np.ndarray, ctype: str) -> str:
    flat = np.asarray(values).reshape(-1)
    if ctype == "float":  # hexadecimal: exact
        return ", ".join(float(v).hex() + "f" for v in flat.astype(np.float32))
    return ", ".join(str(v) for v in flat.astype(np.int64).tolist())


class _Writer:
    """Collects declarations, membrane resets and each node's call while walking the Graph;
    the tensors' dtypes choose the C types and kernels (``int8``: an int8 spiking Graph)."""

    def __init__(self, graph: Graph, offsets: dict[str, int], runtime: SpikingExecutor):
        self.graph, self.offsets, self.runtime = graph, offsets, runtime
        self.int8 = runtime.int8
        self.decls: list[str] = []
        self.resets: list[str] = []

    def dtype(self, tensor: str) -> str:
        return self.graph.tensors[tensor].dtype

    def at(self, tensor: str) -> str:
        return f"(({_CTYPES[self.dtype(tensor)]} *)(arena + {self.offsets[tensor]}))"

    def const(self, name: str, values: np.ndarray, ctype: str = "float") -> str:
        self.decls.append(f"static const {ctype} {name}[{max(np.size(values), 1)}] = "
                          f"{{{_literals(values, ctype) or '0'}}};")
        return name

    def weights(self, name: str, values: np.ndarray) -> str:
        return self.const(name, values, "int8_t" if self.int8 else "float")

    def shape(self, tensor: str) -> tuple[int, ...]:
        return self.graph.tensors[tensor].shape

    def bias(self, i: int, node: Node, n: int) -> str:
        values = (self.graph.params[node.inputs[2]] if len(node.inputs) > 2 else np.zeros(n))
        return self.const(f"b{i}", values, "int32_t" if self.int8 else "float")

    def event_input(self, i: int, node: Node) -> tuple[str, str]:
        """The event kernel's suffix for node i's input and its arguments: an int8 input less
        its zero point where the runtime centres it (the time-invariant first layer)."""
        x = node.inputs[0]
        suffix = _SUFFIX[self.dtype(x)]
        if suffix != "s8":
            return suffix, self.at(x)
        zp = int(self.graph.tensors[x].quant.zero_point[0]) if self.runtime.static[i] else 0
        return suffix, f"{self.at(x)}, {zp}"


def _no_activation(node: Node) -> None:
    if node.attrs.get("activation", "none") != "none":
        raise EdgekitError(f"{node.op} {node.name or node.outputs[0]}: activation "
                           f"{node.attrs['activation']!r} in a spiking Graph (the neurons are "
                           "the nonlinearity): convert with converters.snn.to_snn")


def _conv(w: _Writer, i: int, node: Node) -> str:
    _no_activation(node)
    a, weight = node.attrs, w.graph.params[node.inputs[1]]
    xs, ys = w.shape(node.inputs[0]), w.shape(node.outputs[0])
    fields = dict(cin=xs[1], h=xs[2], w=xs[3], cout=ys[1], oh=ys[2], ow=ys[3],
                  kh=weight.shape[2], kw=weight.shape[3], sh=a["stride"][0], sw=a["stride"][1],
                  pt=a["padding"][0], pl=a["padding"][1], dh=a["dilation"][0],
                  dw=a["dilation"][1], groups=a["groups"],
                  weight=w.weights(f"w{i}", weight.transpose(1, 2, 3, 0)),
                  bias=w.bias(i, node, weight.shape[0]))
    for axis, table in (("rows", 0), ("cols", 1)):  # the runtime's tap tables (_event_conv2d)
        fields[axis] = w.const(f"{axis}{i}", tap_targets(
            xs[2 + table], weight.shape[2 + table], a["stride"][table], a["padding"][table],
            a["dilation"][table], ys[2 + table]), "int16_t")
    w.decls.append(_struct("ek_conv_s8_t" if w.int8 else "ek_conv_f32_t", f"p{i}", fields))
    suffix, x = w.event_input(i, node)
    return f"ek_event_conv2d_{suffix}(&p{i}, {x}, {w.at(node.outputs[0])})"


def _linear(w: _Writer, i: int, node: Node) -> str:
    _no_activation(node)
    weight = w.graph.params[node.inputs[1]]
    if _size(w.shape(node.inputs[0])) != weight.shape[1]:
        raise EdgekitError(f"linear {node.name or node.outputs[0]}: the firmware's spiking "
                           "path runs linear layers on flat (N, features) inputs")
    suffix, x = w.event_input(i, node)
    return (f"ek_event_linear_{suffix}({weight.shape[1]}, {weight.shape[0]}, "
            f"{w.weights(f'w{i}', weight.T)}, {w.bias(i, node, weight.shape[0])}, "
            f"{x}, {w.at(node.outputs[0])})")


def _neuron(w: _Writer, i: int, node: Node) -> str:
    shape = w.shape(node.outputs[0])[1:]
    n = _size((1, *shape))
    params = [np.broadcast_to(w.graph.params[t], shape) for t in node.inputs[1:3]]
    threshold, v_init = params[0], params[1] if len(params) > 1 else np.zeros(shape)
    leak = node.attrs.get("leak", 1.0) if node.op == "lif_neuron" else 1.0
    subtract = int(node.attrs.get("reset", "subtract") == "subtract")
    x, y = w.at(node.inputs[0]), w.at(node.outputs[0])
    if w.int8:  # as runtime.spiking._int_neuron
        tensors = w.graph.tensors
        amplitude = spike_amplitudes(w.graph.params[node.inputs[1]],
                                     tensors[node.inputs[0]].quant, tensors[node.outputs[0]].quant)
        w.decls.append(f"static int32_t v{i}[{n}];")
        w.resets.append(f"    memcpy(v{i}, {w.const(f'vi{i}', v_init, 'int32_t')}, sizeof v{i});")
        return (f"ek_neuron_step_s32({n}, {x}, {w.const(f'th{i}', threshold, 'int32_t')}, "
                f"v{i}, {leak_multiplier(leak)}, {subtract}, "
                f"{w.const(f'a{i}', np.broadcast_to(amplitude, shape), 'int8_t')}, {y})")
    w.decls.append(f"static float v{i}[{n}];")
    w.resets.append(f"    memcpy(v{i}, {w.const(f'vi{i}', v_init)}, sizeof v{i});")
    return (f"ek_neuron_step_f32({n}, {x}, {w.const(f'th{i}', threshold)}, "
            f"v{i}, {float(np.float32(leak)).hex()}f, {subtract}, {y})")


def _avgpool(w: _Writer, i: int, node: Node) -> str:
    a, xs, ys = node.attrs, w.shape(node.inputs[0]), w.shape(node.outputs[0])
    fields = dict(c=xs[1], h=xs[2], w=xs[3], oh=ys[2], ow=ys[3], kh=a["kernel"][0],
                  kw=a["kernel"][1], sh=a["stride"][0], sw=a["stride"][1], pt=a["padding"][0],
                  pl=a["padding"][1], dh=1, dw=1,
                  count_include_pad=int(a.get("count_include_pad", False)), zp=0)
    w.decls.append(_struct("ek_pool_t", f"p{i}", fields))
    kernel = f"ek_sum_pool2d_{_SUFFIX[w.dtype(node.inputs[0])]}" if w.int8 else "ek_avgpool2d_f32"
    return f"{kernel}(&p{i}, {w.at(node.inputs[0])}, {w.at(node.outputs[0])})"


def _global_avgpool(w: _Writer, i: int, node: Node) -> str:
    xs = w.shape(node.inputs[0])
    kernel = (f"ek_global_sum_{_SUFFIX[w.dtype(node.inputs[0])]}" if w.int8
              else "ek_global_avgpool_f32")
    return f"{kernel}({xs[1]}, {_size(xs[1:])}, {w.at(node.inputs[0])}, {w.at(node.outputs[0])})"


def _add(w: _Writer, i: int, node: Node) -> str:
    _no_activation(node)
    x, y = node.inputs
    if y in w.graph.params or w.shape(x) != w.shape(y):
        raise EdgekitError(f"add {node.name or node.outputs[0]}: the firmware's spiking path "
                           "adds two activations of one shape (a residual), no broadcasting")
    n, out = _size(w.shape(x)), w.at(node.outputs[0])
    if not w.int8:
        return f"ek_add_f32({n}, {w.at(x)}, {w.at(y)}, {out})"
    spikes, current = (x, y) if w.dtype(x) == "int8" else (y, x)  # as runtime's _scaled_add
    m = add_multiplier(w.graph.tensors[spikes].quant, w.graph.tensors[current].quant)
    return f"ek_scaled_add_s32({n}, {w.at(spikes)}, {m}, {w.at(current)}, {out})"


def _reshape(w: _Writer, i: int, node: Node) -> str:
    x = node.inputs[0]
    return (f"memcpy({w.at(node.outputs[0])}, {w.at(x)}, "
            f"{_ITEMSIZE[w.dtype(x)] * _size(w.shape(x))})")


_OPS: dict[str, Callable[[_Writer, int, Node], str]] = {
    "conv2d": _conv, "linear": _linear, "if_neuron": _neuron, "lif_neuron": _neuron,
    "avgpool2d": _avgpool, "global_avgpool": _global_avgpool, "add": _add, "reshape": _reshape,
}
OPS = tuple(_OPS)


def check_supported(graph: Graph) -> None:
    """Raise unless the firmware can run ``graph``: a float32 spiking Graph, or an int8 one
    (``edgekit.quantize`` of one)."""
    meta = graph.metadata
    if not isinstance(meta.get("timesteps"), int) or meta["timesteps"] < 1:
        raise EdgekitError("not a spiking Graph: convert with converters.snn.to_snn first")
    if meta.get("encoding", "direct") != "direct":
        raise EdgekitError("the firmware runs direct-encoded spiking Graphs only (rate encoding "
                           "draws random numbers the board cannot reproduce): convert with "
                           "encoding='direct'")
    dtypes = {"int8", "int32"} if meta.get("quantized") == "int8" else {"float32"}
    if any(t.dtype not in dtypes for t in graph.tensors.values()):
        raise EdgekitError("the firmware runs float32 spiking Graphs and int8 ones made from "
                           "them by edgekit.quantize (int8 weights and spikes, int32 currents)")
    missing = sorted({n.op for n in graph.nodes if n.op not in _OPS})
    if missing:
        raise EdgekitError(f"the firmware has no spiking kernel for {missing}; it has "
                           f"{sorted(OPS)}")
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise EdgekitError("the firmware's spiking path runs one input and one output")


def _layout(graph: Graph, runtime: SpikingExecutor) -> tuple[dict[str, int], int, int]:
    """Arena offsets of the activations, the arena's size (the output sum, four bytes an
    element, at its end) and the membranes' bytes (float32 or int32)."""
    plan, offsets = memory_plan(graph, lambda name: _ITEMSIZE[graph.tensors[name].dtype],
                                held=sorted(runtime.held))
    arena = plan.size + 4 * _size(graph.tensors[graph.outputs[0]].shape)
    membranes = 4 * sum(_size(graph.tensors[n.outputs[0]].shape) for n in graph.nodes
                        if n.op in NEURON_OPS)
    return offsets, arena, membranes


def ram_bytes(graph: Graph) -> int:
    """Static RAM the model takes on the board: its arena and the membranes."""
    check_supported(graph)
    _, arena, membranes = _layout(graph, SpikingExecutor(graph))
    return arena + membranes


def generate(graph: Graph) -> tuple[str, str, str]:
    """``(model.c, model.h, hash)`` for a float32 or int8 spiking Graph."""
    check_supported(graph)
    timesteps, nodes = graph.metadata["timesteps"], graph.nodes
    runtime = SpikingExecutor(graph)  # which nodes run once, and whose SOPs count
    offsets, arena_bytes, _ = _layout(graph, runtime)
    in_name, out_name = graph.inputs[0], graph.outputs[0]
    in_bytes = _ITEMSIZE[graph.tensors[in_name].dtype] * _size(graph.tensors[in_name].shape)
    n_y = _size(graph.tensors[out_name].shape)
    out_bytes = 4 * n_y
    sum_at = arena_bytes - out_bytes
    produced_by = next(i for i, node in enumerate(nodes) if out_name in node.outputs)
    w = _Writer(graph, offsets, runtime)
    once, calls = [], []
    for i, node in enumerate(nodes):
        call = f"{'ops += ' if runtime.event_driven[i] else ''}{_OPS[node.op](w, i, node)}"
        (once if runtime.static[i] else calls).append(
            f"{'    ' if runtime.static[i] else '        '}{call}; stats[{1 + i}] += lap();")
    if runtime.int8:  # the int32 sums over the steps (modulo 2^32, as numpy's), undivided
        total = ["    uint32_t *sum = (uint32_t *)(arena + {at});",
                 "for (int32_t k = 0; k < {n}; k++) sum[k] = 0;",
                 "for (int32_t k = 0; k < {n}; k++) sum[k] += (uint32_t)y[k];", []]
    else:
        total = ["    float *sum = (float *)(arena + {at});",
                 "for (int32_t k = 0; k < {n}; k++) sum[k] = 0.0f;",
                 "for (int32_t k = 0; k < {n}; k++) sum[k] += y[k];",
                 [f"    for (int32_t k = 0; k < {n_y}; k++) sum[k] = sum[k] / {timesteps}.0f;"]]
    body = "\n".join([
        "#include <string.h>", '#include "model.h"', '#include "ek_board.h"',
        '#include "ek_kernels.h"', "",
        f"static int8_t arena[{arena_bytes}] __attribute__((aligned(16)));", *w.decls,
        f"static const ek_span_t inputs[1] = {{{{{offsets[in_name]}, {in_bytes}}}}};",
        f"static const ek_span_t outputs[1] = {{{{{sum_at}, {out_bytes}}}}};",
        f"static const ek_span_t steps[1] = {{{{{sum_at}, {out_bytes}}}}};",
        f"static uint32_t stats[{1 + len(nodes)}];  /* SOPs, then each node's ticks */",
        "static uint64_t last;", "",
        "static uint32_t lap(void) {  /* ticks since the previous lap */",
        "    uint64_t now = board_ticks(), ticks = now - last;", "    last = now;",
        "    return (uint32_t)ticks;", "}", "",
        "static void run_step(uint16_t step) {", "    if (step != 0) return;",
        total[0].format(at=sum_at), f"    const {_CTYPES[graph.tensors[out_name].dtype]} *y = "
        f"{w.at(out_name)};", "    uint32_t ops = 0;",
        "    memset(stats, 0, sizeof stats);", *w.resets,
        "    " + total[1].format(n=n_y), "    last = board_ticks();",
        *once, f"    for (int32_t t = 0; t < {timesteps}; t++) {{", *calls,
        "        " + total[2].format(n=n_y),
        f"        stats[{1 + produced_by}] += lap();  /* the output node's, with its sum */",
        "    }", *total[3], "    stats[0] = ops;", "}", "",
    ])
    digest = hashlib.sha256(body.encode()).hexdigest()[:16]
    max_payload = max(2 + in_bytes, 8 + out_bytes, 2 + out_bytes, 4 * (1 + len(nodes)), 64)
    if max_payload > LINK_PAYLOAD_LIMIT:
        raise EdgekitError(f"the model exchanges {max_payload:,} B in one frame, more than the "
                           f"protocol's {LINK_PAYLOAD_LIMIT:,} B")
    source = body + "\n".join([
        "const ek_model_t ek_model = {",
        f'    .hash = "{digest}", .arena_bytes = {arena_bytes},',
        "    .n_inputs = 1, .n_outputs = 1, .n_steps = 1,",
        "    .inputs = inputs, .outputs = outputs, .steps = steps,",
        "    .arena = arena, .run_step = run_step,",
        f"    .stats = stats, .n_stats = {1 + len(nodes)},", "};", "",
    ])
    header = model_header("to_c_snn", digest, arena_bytes, 1, max_payload)
    return "/* Generated by edgekit.converters.to_c_snn: do not edit. */\n" + source, header, digest


def to_c_snn(graph: Graph, outdir: str | Path) -> Path:
    """Write ``model.c`` and ``model.h`` for the spiking ``graph`` into ``outdir``."""
    return write_model(generate(graph), outdir)
