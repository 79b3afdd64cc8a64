"""``to_c``: an int8 Graph as C for edgekit's microcontroller firmware (``firmware_bridge``).

The model becomes ``model.c``/``model.h``: weights as const arrays (they stay in flash), one
const parameter struct per node, a static schedule of kernel calls (``run_step``, a switch: no
interpreter) and one static arena whose offsets come from edgekit's memory planner (without
the runtime's im2col scratch: the firmware's convolution keeps two columns); ``footprint``
says what the sources declare without writing them, for the fit check. Every multiplier, shift,
activation bound and folded bias comes from the builders the int8 runtime reads too
(``edgekit.numerics.params``), so the firmware computes what the runtime computes, bit for bit.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.fileio import atomic_write_bytes, check_folder
from edgekit.firmware_bridge.ports import DEFAULT as DEFAULT_BOARD
from edgekit.graph import Graph, Node
from edgekit.ops import implementation, implementations
from edgekit.runtime.planner import Buffer, GreedyPlanner, Plan

from . import lowbit_writers, to_c_lowbit

MAX_DIMS = 6  # EK_MAX_DIMS in ek_kernels.h
LINK_PAYLOAD_LIMIT = 65535  # the frame's u16 length field
LINK_CHUNK_BYTES = 4096  # the firmware's frame buffers hold at most this; longer tensors stream
# sizeof each constant's type
C_BYTES = {"int8_t": 1, "uint8_t": 1, "int16_t": 2, "int32_t": 4, "float": 4}


def _size(shape) -> int:
    """Elements of one sample (the board runs batch 1)."""
    return math.prod(shape[1:])


def _itemsize(graph: Graph) -> Callable[[str], int]:
    """Bytes per element of each tensor: 1 (int8), 4 for a graph input of int32 indices."""
    return lambda name: np.dtype(graph.tensors[name].dtype).itemsize


@dataclass(frozen=True)
class Footprint:
    """What a generated model's image takes on the board, from its writer's own plan (the
    numbers its sources declare; no file written) and the firmware's measured sizes on the
    board (``firmware_bridge.sizes``). SRAM: ``activation_bytes`` (the arena; a spiking model's
    membranes too), ``scratch_bytes`` (the convolution's column buffer), ``link_bytes`` (the
    protocol server's frame buffers and per-step counters, sized by the model) and
    ``firmware_ram_bytes`` (the firmware's own state, its stack, what its kernels keep, and
    alignment); flash: ``const_bytes``, the constant arrays as written (weights, folded biases,
    multipliers and shifts, tables), and ``code_bytes``, the rest of the image (the firmware's
    code, the kernels the model calls, its schedule, parameter structs and array padding)."""

    activation_bytes: int
    scratch_bytes: int
    link_bytes: int
    const_bytes: int
    code_bytes: int = 0
    firmware_ram_bytes: int = 0

    @property
    def sram_bytes(self) -> int:
        """RAM of the image: ``.data`` + ``.bss`` + the stack."""
        return (self.activation_bytes + self.scratch_bytes + self.link_bytes
                + self.firmware_ram_bytes)

    @property
    def flash_bytes(self) -> int:
        """Flash of the image: code, read-only data and ``.data``'s initialisers."""
        return self.const_bytes + self.code_bytes


def with_firmware(fp: Footprint, board: str, calls: str, structs: list[str],
                  arrays: list[int], n_spans: int, more_code: int = 0) -> Footprint:
    """``fp`` with the firmware's code and own RAM on ``board`` (a core of
    ``firmware_bridge.ports``), from its measured sizes, for a model whose ``run_step`` body is
    ``calls`` (plus ``more_code`` bytes of its own) with parameter structs ``structs``,
    constant arrays of ``arrays`` bytes and ``n_spans`` spans."""
    from edgekit.firmware_bridge.sizes import board_sizes

    sizes = board_sizes(board)
    flash = sizes.flash_bytes(calls, structs, arrays, n_spans) + more_code
    ram = sizes.ram_bytes(calls, fp.activation_bytes + fp.scratch_bytes + fp.link_bytes)
    return replace(fp, code_bytes=flash - fp.const_bytes,
                   firmware_ram_bytes=ram - fp.sram_bytes)


def link_bytes(max_payload_bytes: int, n_steps: int) -> int:
    """Static RAM of the protocol server (``ek_protocol.c``): its receive frame (7 header bytes,
    the payload, the CRC-32), its reply payload and one u32 tick count per step."""
    return 7 + max_payload_bytes + 4 + max_payload_bytes + 4 * n_steps


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
        self.const_bytes = 0
        self.arrays: list[int] = []  # bytes of each constant array
        self.structs: list[str] = []  # each step's parameter struct type
        self._arrays = 0

    def array(self, ctype: str, values: np.ndarray) -> str:
        name = f"k{self._arrays}"
        self._arrays += 1
        self.decls.append(_c_array(ctype, name, values))
        self.arrays.append(C_BYTES[ctype] * max(np.size(values), 1))
        self.const_bytes += self.arrays[-1]
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
        self.structs.append(ctype)
        return f"&p{i}"


def _visitor(op: str) -> Callable[[_Writer, int, Node], str] | None:
    impl = implementation(op, "c")
    return impl.fn if impl else None


def check_supported(graph: Graph) -> None:
    """Raise unless the firmware can run ``graph``: int8 and every op in the kernel set."""
    lowbit_writers.require(graph, "c")
    if graph.metadata.get("quantized") != "int8":
        raise EdgekitError("the microcontroller firmware runs int8 Graphs and spiking Graphs, "
                           "not float32 ones: quantize first (edgekit.quantize, or `edgekit "
                           "convert --quantize int8`)")
    missing = sorted({n.op for n in graph.nodes if _visitor(n.op) is None})
    if missing:
        have = sorted(implementations("c"))
        raise EdgekitError(f"the firmware has no kernel for {missing}; it supports {have}")


def frame_payload(whole: int, least: int) -> int:
    """The firmware's frame payload (its link buffers' size): ``whole``, the longest payload
    that carries every tensor in one frame, up to ``LINK_CHUNK_BYTES`` (a longer tensor streams
    in chunks: LOAD, READ); at least ``least``, what cannot stream (the ticks of every step and
    a CRC-32, STATS), and HELLO's 64 B."""
    payload = max(min(whole, LINK_CHUNK_BYTES), least, 64)
    if payload > LINK_PAYLOAD_LIMIT:
        raise EdgekitError(f"the model's per-step counters take {payload:,} B in one frame over "
                           f"the serial link, more than the protocol's {LINK_PAYLOAD_LIMIT:,} B: "
                           "it has too many steps")
    return payload


def max_payload(graph: Graph) -> int:
    """The firmware's frame payload for ``graph`` (``frame_payload``): whole, the INFER_LAYERS
    request with the inputs, the INFER reply with the ticks per step and the outputs, or a
    layer's output; at least the ticks per step and a CRC-32."""
    inputs = sum(_itemsize(graph)(n) * _size(graph.tensors[n].shape) for n in graph.inputs)
    outputs = sum(_size(graph.tensors[n].shape) for n in graph.outputs)
    layer = max(_size(graph.tensors[n.outputs[0]].shape) for n in graph.nodes)
    ticks = 4 + 4 * len(graph.nodes)
    return frame_payload(max(2 + inputs, ticks + outputs, 2 + layer), ticks + 4)


def memory_plan(graph: Graph, itemsize: int | Callable[[str], int] = 1,
                held: Sequence[str] = (), reads: dict[str, int] | None = None
                ) -> tuple[Plan, dict[str, int]]:
    """Arena offsets of every activation at batch 1 (GreedyPlanner; no kernel needs scratch in
    the arena: the convolution's column buffer is a separate static array). ``itemsize``: bytes
    per element (4 for a float32 spiking Graph), or a function of the tensor's name (an int8
    spiking Graph's int8 spikes and int32 currents); ``held``: tensors that live through the
    whole schedule (in a spiking Graph, what the time loop reads again at every step);
    ``reads``: per tensor, the last step that reads it beyond the Graph's own reads (an anytime
    path reads a block's input where the full network reads a left-out add: ``to_c_anytime``)."""
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
    for t, i in (reads or {}).items():
        last_use[t] = max(last_use[t], i)
    names = list(first_use)
    buffers = [Buffer(n, size_of(n) * _size(graph.tensors[n].shape), first_use[n], last_use[n])
               for n in names]
    plan = GreedyPlanner().plan(buffers)
    return plan, dict(zip(names, plan.offsets, strict=True))


def _walk(graph: Graph, board: str = DEFAULT_BOARD) -> tuple[_Writer, Footprint]:
    """Every step's call and declarations, and the footprint they add up to on ``board``."""
    check_supported(graph)
    payload = max_payload(graph)
    if "anytime" in graph.metadata:  # one image for every path: converters.to_c_anytime
        from edgekit.converters.to_c_anytime import writer

        w = writer(graph)
    else:
        w = _Writer(graph, *memory_plan(graph, _itemsize(graph)))
    plan = w.plan
    for i, node in enumerate(graph.nodes):
        call = to_c_lowbit.call(w, i, node) or _visitor(node.op)(w, i, node)  # rows: ek_lowbit
        w.calls.append(f"    case {i}: {call} break;")
    fp = Footprint(max(plan.size, 4), max(w.col_bytes, 4),
                   link_bytes(payload, len(graph.nodes)), w.const_bytes)
    spans = len(graph.inputs) + len(graph.outputs) + len(graph.nodes)
    return w, with_firmware(fp, board, "\n".join(w.calls), w.structs, w.arrays, spans)


def footprint(graph: Graph, board: str = DEFAULT_BOARD) -> Footprint:
    """What the image of ``generate(graph)`` takes on ``board`` (a core of
    ``firmware_bridge.ports``), without writing it: what the fit check of a microcontroller
    profile counts."""
    return _walk(graph, board)[1]


def generate(graph: Graph) -> tuple[str, str, str]:
    """``(model.c, model.h, hash)``: the C sources and their content hash (16 hex digits)."""
    return assemble(graph, *_walk(graph))


def assemble(graph: Graph, w: _Writer, fp: Footprint, spans: dict[str, list] | None = None,
             more: Sequence[str] = (), head: str = "", arena_bytes: int | None = None
             ) -> tuple[str, str, str]:
    """The sources of a walked Graph (``_walk``). A writer that adds to the model's code
    (``to_c_exits``) passes ``spans``, the (offset, size) spans of what the host sends
    (``inputs``) or INFER returns (``outputs``) in place of the graph's (declared writable: its
    code may move them), ``more`` declarations after the spans, ``head``, C run first in
    ``run_step``, and ``arena_bytes`` past the plan's."""
    plan, offsets = w.plan, w.offsets
    arena = arena_bytes or plan.size
    own = spans or {}
    spans = {
        "inputs": [(offsets[n], _itemsize(graph)(n) * _size(graph.tensors[n].shape))
                   for n in graph.inputs],
        "outputs": [(offsets[n], _size(graph.tensors[n].shape)) for n in graph.outputs],
        "steps": [(offsets[n.outputs[0]], _size(graph.tensors[n.outputs[0]].shape))
                  for n in graph.nodes],
    } | own
    span_decls = [f"static {'' if k in own else 'const '}ek_span_t "
                  f"{k}[{len(v)}] = {{" + ", ".join(f"{{{o}, {s}}}" for o, s in v) + "};"
                  for k, v in spans.items()]
    body = "\n".join([
        '#include "model.h"', '#include "ek_kernels.h"', "",
        f"static int8_t arena[{max(arena, 4)}] __attribute__((aligned(16)));",
        f"static int8_t col[{fp.scratch_bytes}];", *w.decls, *span_decls, *more, "",
        "static void run_step(uint16_t step) {", *([head] if head else []),
        "    switch (step) {", *w.calls, "    default: break;", "    }", "}", "",
    ])
    digest = hashlib.sha256(body.encode()).hexdigest()[:16]
    source = body + "\n".join([
        "const ek_model_t ek_model = {",
        f'    .hash = "{digest}", .arena_bytes = {arena},',
        f"    .n_inputs = {len(spans['inputs'])}, .n_outputs = {len(spans['outputs'])}, "
        f".n_steps = {len(graph.nodes)},",
        "    .inputs = inputs, .outputs = outputs, .steps = steps,",
        "    .arena = arena, .run_step = run_step,", "};", "",
    ])
    header = model_header("to_c", digest, arena, len(graph.nodes), max_payload(graph))
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
