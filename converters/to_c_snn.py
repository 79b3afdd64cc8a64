"""C sources for a spiking Graph on the microcontroller firmware (``converters.snn``'s output,
direct encoding, float32 or quantized to int8 by ``edgekit.quantize``): the same ``ek_model_t``
interface as ``converters.to_c``, so the firmware's protocol, build and boards run it
unchanged.

The whole inference is one step of the schedule the runtime follows (``edgekit.spiking.
schedule``): reset every membrane to its initial value, run the time-invariant nodes once
(``static``: the first layer, which sees the same analog input at every step), then T times run
the other nodes in order and add the output tensor into its sum, then divide by T. Each op's
call is its module's ``c_spiking`` implementation, on the twin of the runtime's kernel
(``ek_kernels.h``), so the board computes what the runtime computes.

Convolutions and linear layers scatter each non-zero input into the outputs it reaches
(``ek_event_conv2d_f32``, ``ek_event_linear_f32``) and count those synaptic operations where
the runtime does (the schedule's ``event_driven``). The time-invariant first layer runs on the
same scatter kernel, uncounted, where the runtime runs its dense kernel: for a convolution with
one input channel per group (the usual image stem, ``conv.depthwise_planes``) or a pointwise
one, both sum each output as bias, then the taps in order (a zero input adds nothing), so the
board stays bit-identical; a first layer the runtime computes as a reassociated matrix product
(``linear.gemm_nt``: a linear layer, or a convolution over several input channels per group)
differs from it by float rounding, which changes the outputs only where it flips a spike.

An int8 spiking Graph (``edgekit.quant.spiking``) runs on the integer twins of the runtime's
int8 kernels, chosen by each tensor's dtype: int8 weights, int8 spikes and int32 currents, pool
sums and membranes, the Q15 leak, the scaled residual add. Its first layer is the event kernel
on the int8 input less its zero point (``runtime.spiking.centred``), uncounted; its output is
the int32 sum over the T steps, undivided (the ``SpikingExecutor.run(x, raw=True)`` result),
which the Session's edge divides by T and dequantizes. Integer sums wrap as the runtime's do, so
the board returns the runtime's integers exactly, whatever the order of the additions.

Activations live in one static arena planned like ``to_c``'s (four bytes an element for float32
and int32 tensors, one for int8; what the time loop reads again at every step, the
schedule's ``held``, lives through the whole inference), followed by the output sum (four
bytes an element); membranes are static arrays beside it. Float weights are written as
hexadecimal literals, exact. The model's STATS are its synaptic operations and each node's
ticks over the inference.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from edgekit.converters.to_c import (
    C_BYTES,
    DEFAULT_BOARD,
    Footprint,
    _struct,
    frame_payload,
    link_bytes,
    memory_plan,
    model_header,
    with_firmware,
    write_model,
)
from edgekit.errors import EdgekitError
from edgekit.graph import Graph, Node
from edgekit.ops import OPS, implementation, implementations
from edgekit.spiking import Schedule, is_int8, is_spiking, schedule


def _size(shape) -> int:
    """Elements of one sample (the board runs batch 1)."""
    return int(np.prod(shape[1:], dtype=np.int64))


_CTYPES = {"float32": "float", "int8": "int8_t", "int32": "int32_t"}
_ITEMSIZE = {"float32": 4, "int8": 1, "int32": 4}
# run_step's own code beyond its kernel calls (firmware_bridge.sizes bounds those): the time
# loop, the output sum, the resets and the lap() after each call, bounded above from the
# generated code's measured size on the Cortex-M3 (tests/test_profile.py holds it)
LOOP_BYTES = 512
LAP_BYTES = 32
_SUFFIX = {"float32": "f32", "int8": "s8", "int32": "s32"}  # the kernel for that input dtype


def _literals(values: np.ndarray, ctype: str) -> str:
    flat = np.asarray(values).reshape(-1)
    if ctype == "float":  # hexadecimal: exact
        return ", ".join(float(v).hex() + "f" for v in flat.astype(np.float32))
    return ", ".join(str(v) for v in flat.astype(np.int64).tolist())


class SpikingWriter:
    """What the ops' ``c_spiking`` visitors (``visit(w, i, node) -> C call``) write through:
    declarations, membranes and their resets, collected while walking the Graph; the tensors'
    dtypes choose the C types and kernels (``int8``: an int8 spiking Graph)."""

    def __init__(self, graph: Graph, offsets: dict[str, int], plan: Schedule):
        self.graph, self.offsets, self.plan = graph, offsets, plan
        self.int8 = is_int8(graph)
        self.decls: list[str] = []
        self.resets: list[str] = []
        self.const_bytes = 0
        self.arrays: list[int] = []  # bytes of each constant array
        self.structs: list[str] = []  # each node's parameter struct type

    def dtype(self, tensor: str) -> str:
        return self.graph.tensors[tensor].dtype

    def suffix(self, tensor: str) -> str:
        """The kernel name's suffix for an input of ``tensor``'s dtype (f32, s8, s32)."""
        return _SUFFIX[self.dtype(tensor)]

    def at(self, tensor: str) -> str:
        return f"(({_CTYPES[self.dtype(tensor)]} *)(arena + {self.offsets[tensor]}))"

    def shape(self, tensor: str) -> tuple[int, ...]:
        return self.graph.tensors[tensor].shape

    def size(self, tensor: str) -> int:
        """Elements of one sample of ``tensor``."""
        return _size(self.shape(tensor))

    def nbytes(self, tensor: str) -> int:
        """Bytes of one sample of ``tensor``."""
        return _ITEMSIZE[self.dtype(tensor)] * self.size(tensor)

    def const(self, name: str, values: np.ndarray, ctype: str = "float") -> str:
        self.decls.append(f"static const {ctype} {name}[{max(np.size(values), 1)}] = "
                          f"{{{_literals(values, ctype) or '0'}}};")
        self.arrays.append(C_BYTES[ctype] * max(np.size(values), 1))
        self.const_bytes += self.arrays[-1]
        return name

    def float_literal(self, value: float) -> str:
        """``value`` as float32 in a hexadecimal C literal (exact)."""
        return f"{float(np.float32(value)).hex()}f"

    def struct(self, ctype: str, i: int, fields: dict[str, object]) -> str:
        """Declare node i's parameter struct; its address."""
        self.decls.append(_struct(ctype, f"p{i}", fields))
        self.structs.append(ctype)
        return f"&p{i}"

    def weights(self, name: str, values: np.ndarray) -> str:
        return self.const(name, values, "int8_t" if self.int8 else "float")

    def bias(self, i: int, node: Node, n: int) -> str:
        values = (self.graph.params[node.inputs[2]] if len(node.inputs) > 2 else np.zeros(n))
        return self.const(f"b{i}", values, "int32_t" if self.int8 else "float")

    def membrane(self, i: int, n: int, v_init: np.ndarray, ctype: str) -> str:
        """Node i's membrane: a static array of ``n`` values, reset to ``v_init`` at the start
        of every inference."""
        self.decls.append(f"static {ctype} v{i}[{n}];")
        self.resets.append(f"    memcpy(v{i}, {self.const(f'vi{i}', v_init, ctype)}, "
                           f"sizeof v{i});")
        return f"v{i}"

    def event_input(self, i: int, node: Node) -> tuple[str, str]:
        """The event kernel's suffix for node i's input and its arguments: an int8 input less
        its zero point where the runtime centres it (the time-invariant first layer)."""
        x = node.inputs[0]
        if self.suffix(x) != "s8":
            return self.suffix(x), self.at(x)
        zp = int(self.graph.tensors[x].quant.zero_point[0]) if self.plan.first_layer[i] else 0
        return "s8", f"{self.at(x)}, {zp}"

    def pool_fields(self, node: Node, count_include_pad: int) -> dict[str, int]:
        """``ek_pool_t``'s fields for a pooling node (no dilation, zero point 0)."""
        a, xs, ys = node.attrs, self.shape(node.inputs[0]), self.shape(node.outputs[0])
        return dict(c=xs[1], h=xs[2], w=xs[3], oh=ys[2], ow=ys[3], kh=a["kernel"][0],
                    kw=a["kernel"][1], sh=a["stride"][0], sw=a["stride"][1],
                    pt=a["padding"][0], pl=a["padding"][1], dh=1, dw=1,
                    count_include_pad=count_include_pad, zp=0)

    def no_activation(self, node: Node) -> None:
        if node.attrs.get("activation", "none") != "none":
            raise EdgekitError(f"{node.op} {node.name or node.outputs[0]}: activation "
                               f"{node.attrs['activation']!r} in a spiking Graph (the neurons "
                               "are the nonlinearity): convert with converters.snn.to_snn")


def check_supported(graph: Graph) -> None:
    """Raise unless the firmware can run ``graph``: a float32 spiking Graph, or an int8 one
    (``edgekit.quantize`` of one; validation checks its kind)."""
    graph.validate()
    if not is_spiking(graph):
        raise EdgekitError("not a spiking Graph: convert with converters.snn.to_snn first")
    if graph.metadata.get("encoding", "direct") != "direct":
        raise EdgekitError("the firmware runs direct-encoded spiking Graphs only (rate encoding "
                           "draws random numbers the board cannot reproduce): convert with "
                           "encoding='direct'")
    lacking = sorted({n.op for n in graph.nodes if implementation(n.op, "c_spiking") is None})
    if lacking:
        why = "; ".join(f"{op}: {OPS[op].reasons.get('c_spiking')}" for op in lacking)
        raise EdgekitError(f"the firmware has no spiking kernel for {lacking} ({why}); it has "
                           f"{sorted(implementations('c_spiking'))}")
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise EdgekitError("the firmware's spiking path runs one input and one output")


def _layout(graph: Graph, plan: Schedule) -> tuple[dict[str, int], int, int]:
    """Arena offsets of the activations, the arena's size (the output sum, four bytes an
    element, at its end) and the membranes' bytes (float32 or int32)."""
    arena, offsets = memory_plan(graph, lambda name: _ITEMSIZE[graph.tensors[name].dtype],
                                 held=sorted(plan.held))
    size = arena.size + 4 * _size(graph.tensors[graph.outputs[0]].shape)
    membranes = 4 * sum(_size(graph.tensors[n.outputs[0]].shape) for n in graph.nodes
                        if OPS[n.op].neuron)
    return offsets, size, membranes


def ram_bytes(graph: Graph) -> int:
    """Static RAM the model takes on the board: its arena and the membranes."""
    check_supported(graph)
    _, arena, membranes = _layout(graph, schedule(graph))
    return arena + membranes


def _io_bytes(graph: Graph) -> tuple[int, int]:
    """Bytes of the input the board receives and of the output sum it returns."""
    name = graph.inputs[0]
    return (_ITEMSIZE[graph.tensors[name].dtype] * _size(graph.tensors[name].shape),
            4 * _size(graph.tensors[graph.outputs[0]].shape))


def max_payload(graph: Graph) -> int:
    """The firmware's frame payload for ``graph`` (``to_c.frame_payload``): whole, the input,
    the INFER reply (ticks + output sum) or the output; at least STATS and the INFER reply's
    ticks with a CRC-32."""
    in_bytes, out_bytes = _io_bytes(graph)
    return frame_payload(max(2 + in_bytes, 8 + out_bytes), max(4 * (1 + len(graph.nodes)), 12))


def _walk(graph: Graph, board: str = DEFAULT_BOARD
          ) -> tuple[SpikingWriter, int, list[str], list[str], Footprint]:
    """The writer after every node's call, the arena's size, the calls run once and those of
    each time step, and the footprint they add up to on ``board``: the arena and the
    membranes, the link buffers and the STATS counters, the constants, the firmware."""
    check_supported(graph)
    payload = max_payload(graph)
    plan = schedule(graph)  # which nodes run once, and whose SOPs count
    offsets, arena_bytes, membranes = _layout(graph, plan)
    w = SpikingWriter(graph, offsets, plan)
    once, calls = [], []
    for i, node in enumerate(graph.nodes):
        call = implementation(node.op, "c_spiking").fn(w, i, node)
        call = f"{'ops += ' if plan.event_driven[i] else ''}{call}"
        (once if plan.static[i] else calls).append(
            f"{'    ' if plan.static[i] else '        '}{call}; stats[{1 + i}] += lap();")
    counters = 4 * (1 + len(graph.nodes))
    fp = Footprint(arena_bytes + membranes, 0, link_bytes(payload, 1) + counters, w.const_bytes)
    body = "\n".join([*once, *calls, *w.resets])
    return w, arena_bytes, once, calls, with_firmware(
        fp, board, body, w.structs, w.arrays, 3,
        LOOP_BYTES + LAP_BYTES * len(graph.nodes))


def footprint(graph: Graph, board: str = DEFAULT_BOARD) -> Footprint:
    """What the image of ``generate(graph)`` takes on ``board`` (a core of
    ``firmware_bridge.ports``), without writing it: what the fit check of a microcontroller
    profile counts."""
    return _walk(graph, board)[4]


def generate(graph: Graph) -> tuple[str, str, str]:
    """``(model.c, model.h, hash)`` for a float32 or int8 spiking Graph."""
    w, arena_bytes, once, calls, _ = _walk(graph)
    timesteps, nodes, offsets = graph.metadata["timesteps"], graph.nodes, w.offsets
    in_name, out_name = graph.inputs[0], graph.outputs[0]
    in_bytes, out_bytes = _io_bytes(graph)
    n_y = out_bytes // 4
    sum_at = arena_bytes - out_bytes
    produced_by = next(i for i, node in enumerate(nodes) if out_name in node.outputs)
    if w.int8:  # the int32 sums over the steps (modulo 2^32, as numpy's), undivided
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
    source = body + "\n".join([
        "const ek_model_t ek_model = {",
        f'    .hash = "{digest}", .arena_bytes = {arena_bytes},',
        "    .n_inputs = 1, .n_outputs = 1, .n_steps = 1,",
        "    .inputs = inputs, .outputs = outputs, .steps = steps,",
        "    .arena = arena, .run_step = run_step,",
        f"    .stats = stats, .n_stats = {1 + len(nodes)},", "};", "",
    ])
    header = model_header("to_c_snn", digest, arena_bytes, 1, max_payload(graph))
    return "/* Generated by edgekit.converters.to_c_snn: do not edit. */\n" + source, header, digest


def to_c_snn(graph: Graph, outdir: str | Path) -> Path:
    """Write ``model.c`` and ``model.h`` for the spiking ``graph`` into ``outdir``."""
    return write_model(generate(graph), outdir)
