"""C sources for a float32 spiking Graph on the microcontroller firmware (``converters.snn``'s
output, direct encoding): the same ``ek_model_t`` interface as ``converters.to_c``, so the
firmware's protocol, build and boards run it unchanged.

The whole inference is one step of the schedule: reset every membrane to its initial value,
then T times run the layers in order (``ek_event_linear_f32`` adds a weight row per non-zero
input, ``ek_neuron_step_f32`` charges, fires and resets) and add the output tensor into its
sum, then divide by T. That is ``SpikingExecutor.run``'s float32 operation order, so the
board's outputs equal the runtime's bit for bit. Inputs and outputs are little-endian float32
in the arena; membranes and layer outputs are static arrays. Weights are written as hexadecimal
float literals, exact. Supported ops: linear, if_neuron, lif_neuron, reshape/flatten.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from edgekit.converters.to_c import LINK_PAYLOAD_LIMIT, model_header, write_model
from edgekit.errors import EdgekitError
from edgekit.graph import Graph

OPS = ("linear", "if_neuron", "lif_neuron", "reshape", "flatten")


def _size(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _hex(values: np.ndarray) -> str:
    return ", ".join(float(v).hex() + "f" for v in np.asarray(values, np.float32).reshape(-1))


def check_supported(graph: Graph) -> None:
    """Raise unless the firmware can run ``graph`` as a float32 spiking Graph."""
    meta = graph.metadata
    if not isinstance(meta.get("timesteps"), int) or meta["timesteps"] < 1:
        raise EdgekitError("not a spiking Graph: convert with converters.snn.to_snn first")
    if meta.get("encoding", "direct") != "direct":
        raise EdgekitError("the firmware runs direct-encoded spiking Graphs only (rate encoding "
                           "draws random numbers the board cannot reproduce)")
    if any(t.dtype != "float32" for t in graph.tensors.values()):
        raise EdgekitError("spiking Graphs run on float32 weights; convert before quantizing")
    missing = sorted({n.op for n in graph.nodes if n.op not in OPS})
    if missing:
        raise EdgekitError(f"the firmware has no spiking kernel for {missing}; it has {OPS}")
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise EdgekitError("the firmware's spiking path runs one input and one output")
    if graph.tensors[graph.inputs[0]].shape[0] != 1:
        raise EdgekitError("the firmware runs batch 1")


def generate(graph: Graph) -> tuple[str, str, str]:
    """``(model.c, model.h, hash)`` for a float32 spiking Graph."""
    check_supported(graph)
    timesteps = graph.metadata["timesteps"]
    in_name, out_name = graph.inputs[0], graph.outputs[0]
    in_bytes = 4 * _size(graph.tensors[in_name].shape)
    out_bytes = 4 * _size(graph.tensors[out_name].shape)
    arena_bytes = in_bytes + out_bytes
    decls = [f"static int8_t arena[{arena_bytes}] __attribute__((aligned(16)));",
             f"static float *const sum_out = (float *)(arena + {in_bytes});"]
    where = {in_name: "((float *)arena)"}
    calls: list[str] = []
    resets: list[str] = []
    for i, node in enumerate(graph.nodes):
        x = where[node.inputs[0]]
        y = node.outputs[0]
        n_out = _size(graph.tensors[y].shape)
        if node.op in ("reshape", "flatten"):
            where[y] = x  # same float32 data, another shape
            continue
        decls.append(f"static float t{i}[{n_out}];")
        where[y] = f"t{i}"
        if node.op == "linear":
            w = graph.params[node.inputs[1]].astype(np.float32)
            bias = (graph.params[node.inputs[2]] if len(node.inputs) > 2
                    else np.zeros(w.shape[0], np.float32))
            if node.attrs.get("activation", "none") != "none":
                raise EdgekitError(f"linear {i}: activation {node.attrs['activation']!r} in a "
                                   "spiking Graph (the neurons are the nonlinearity)")
            decls.append(f"static const float w{i}[{w.size}] = {{{_hex(w.T)}}};")
            decls.append(f"static const float b{i}[{bias.size}] = {{{_hex(bias)}}};")
            calls.append(f"        ops += ek_event_linear_f32({w.shape[1]}, {w.shape[0]}, w{i}, "
                         f"b{i}, {x}, t{i});")
        else:
            threshold = np.broadcast_to(graph.params[node.inputs[1]], (n_out,))
            v_init = (np.broadcast_to(graph.params[node.inputs[2]], (n_out,))
                      if len(node.inputs) > 2 else np.zeros(n_out, np.float32))
            leak = float(np.float32(node.attrs.get("leak", 1.0))) if node.op == "lif_neuron" \
                else 1.0
            subtract = int(node.attrs.get("reset", "subtract") == "subtract")
            decls += [f"static const float th{i}[{n_out}] = {{{_hex(threshold)}}};",
                      f"static const float vi{i}[{n_out}] = {{{_hex(v_init)}}};",
                      f"static float v{i}[{n_out}];"]
            resets.append(f"    memcpy(v{i}, vi{i}, sizeof v{i});")
            calls.append(f"        ek_neuron_step_f32({n_out}, {x}, th{i}, v{i}, "
                         f"{float(np.float32(leak)).hex()}f, {subtract}, t{i});")
    n_y = out_bytes // 4
    y = where[out_name]
    body = "\n".join([
        '#include <string.h>', '#include "model.h"', '#include "ek_kernels.h"', "",
        *decls, f"static const ek_span_t inputs[1] = {{{{0, {in_bytes}}}}};",
        f"static const ek_span_t outputs[1] = {{{{{in_bytes}, {out_bytes}}}}};",
        f"static const ek_span_t steps[1] = {{{{{in_bytes}, {out_bytes}}}}};",
        "uint32_t ek_snn_sops;  /* synaptic operations of the last inference */", "",
        "static void run_step(uint16_t step) {", "    if (step != 0) return;",
        "    int32_t ops = 0;", *resets,
        f"    for (int32_t k = 0; k < {n_y}; k++) sum_out[k] = 0.0f;",
        f"    for (int32_t t = 0; t < {timesteps}; t++) {{", *calls,
        f"        for (int32_t k = 0; k < {n_y}; k++) sum_out[k] += {y}[k];", "    }",
        f"    for (int32_t k = 0; k < {n_y}; k++) sum_out[k] = sum_out[k] / {timesteps}.0f;",
        "    ek_snn_sops = (uint32_t)ops;", "}", "",
    ])
    digest = hashlib.sha256(body.encode()).hexdigest()[:16]
    max_payload = max(2 + in_bytes, 8 + out_bytes, 2 + out_bytes, 64)
    if max_payload > LINK_PAYLOAD_LIMIT:
        raise EdgekitError(f"the model exchanges {max_payload:,} B in one frame, more than the "
                           f"protocol's {LINK_PAYLOAD_LIMIT:,} B")
    source = body + "\n".join([
        "const ek_model_t ek_model = {",
        f'    .hash = "{digest}", .arena_bytes = {arena_bytes},',
        "    .n_inputs = 1, .n_outputs = 1, .n_steps = 1,",
        "    .inputs = inputs, .outputs = outputs, .steps = steps,",
        "    .arena = arena, .run_step = run_step,", "};", "",
    ])
    header = model_header("to_c_snn", digest, arena_bytes, 1, max_payload)
    return "/* Generated by edgekit.converters.to_c_snn: do not edit. */\n" + source, header, digest


def to_c_snn(graph: Graph, outdir: str | Path) -> Path:
    """Write ``model.c`` and ``model.h`` for the spiking ``graph`` into ``outdir``."""
    return write_model(generate(graph), outdir)
