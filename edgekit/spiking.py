"""What makes a Graph spiking, said once: the predicate every module asks (``is_spiking``), the
kind that validation checks (``check_kind``), and the schedule that the runtime, the C writer,
the ONNX writer and the profiler all follow (``schedule``).

A spiking Graph (``converters.snn.to_snn``) is a Graph with ``metadata["timesteps"]`` (T),
``["encoding"]`` ("direct": the analog input at every step, or "rate": Bernoulli spikes) and
``["snn_output"]`` ("membrane" or "spike_count"); its neurons keep membranes across the T steps.
It is float32 throughout, or int8 (``metadata["quantized"] == "int8"``, made by
``edgekit.quantize`` from the float one): int8 weights and spikes, int32 currents and
membranes, pooling and residual adds as the integer ops of ``edgekit.ops.spiking``.

Its schedule, per node: ``static``, the output is the same at every step (under direct
encoding, what reads only the inputs, params and such outputs, and is no neuron: it runs once
per inference, at the first step); ``event_driven``, a synapse layer (an op whose spiking kernel
is registered ``event=True``) fed by spikes, which adds weights per input event and counts
those synaptic operations; ``first_layer``, a synapse layer that runs once on the analog input
(its MACs are what an SNN still multiplies). ``held`` names the tensors made once and read at
every step, whose buffers must live through the whole inference.

This module imports ``edgekit.ops`` only: ``edgekit.graph`` validates with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgekit.errors import EdgekitError
from edgekit.ops import OPS

if TYPE_CHECKING:
    from edgekit.graph import Graph

ENCODINGS = ("direct", "rate")
OUTPUTS = ("membrane", "spike_count")
_SUPPORTED = ("edgekit runs float32 spiking Graphs and int8 ones made from them by "
              "edgekit.quantize (int8 weights and spikes, int32 currents)")


def is_spiking(graph: Graph) -> bool:
    """Whether ``graph`` is a spiking Graph (it runs T time steps per inference)."""
    return "timesteps" in graph.metadata


def is_int8(graph: Graph) -> bool:
    """Whether ``graph`` holds int8 quantized values (``edgekit.quantize`` made it)."""
    return graph.metadata.get("quantized") == "int8"


def check_kind(g: Graph) -> None:
    """Raise unless ``g`` is what it says it is: neurons and the integer spiking ops only in
    spiking Graphs, a valid encoding and output, float32 or int8 throughout. An int8 spiking
    Graph saved before the integer ops existed is upgraded in place (``_upgrade``)."""
    if not is_spiking(g):
        stray = sorted({n.op for n in g.nodes if OPS[n.op].neuron or OPS[n.op].int8_spiking})
        if stray:
            raise EdgekitError(f"{', '.join(stray)} belong(s) to spiking Graphs (metadata "
                               "timesteps): convert with converters.snn.to_snn")
        return
    steps = g.metadata["timesteps"]
    if type(steps) is not int or steps < 1:
        raise EdgekitError(f"a spiking Graph's metadata timesteps must be a positive int, got "
                           f"{steps!r}")
    encoding = g.metadata.get("encoding", "direct")
    output = g.metadata.get("snn_output", "membrane")
    if encoding not in ENCODINGS or output not in OUTPUTS:
        raise EdgekitError(f"a spiking Graph's encoding must be one of {ENCODINGS} and its "
                           f"snn_output one of {OUTPUTS}, got {encoding!r}, {output!r}")
    int8 = is_int8(g)
    allowed = ("int8", "int32") if int8 else ("float32",)
    for name, t in g.tensors.items():
        if t.dtype not in allowed:
            raise EdgekitError(f"tensor {name!r} is {t.dtype} in a"
                               f"{'n int8' if int8 else ' float32'} spiking Graph; "
                               f"{_SUPPORTED}")
    if int8 and any(n.op in _LEGACY for n in g.nodes):
        _upgrade(g)
        g.validate()
    elif not int8:
        wrong = sorted({n.op for n in g.nodes if OPS[n.op].int8_spiking})
        if wrong:
            raise EdgekitError(f"{', '.join(wrong)}: integer op(s) of int8 spiking Graphs in a "
                               f"float32 one; {_SUPPORTED}")


# What int8 spiking Graphs saved before the integer ops held instead (edgekit.quant.spiking
# then kept avgpool2d, global_avgpool and add, meaning window sums and the scaled add).
_LEGACY = {"avgpool2d": "sum_pool2d", "global_avgpool": "global_sum", "add": "scaled_add"}


def _upgrade(g: Graph) -> None:
    """Rewrite an old int8 spiking Graph's pools and adds as the integer ops they computed:
    the same integers on every backend. The add's operands are put in ``scaled_add``'s order
    (spikes, current) and its multiplier derived from their scales as it was then."""
    from edgekit.numerics.params import scaled_add_params

    for node in g.nodes:
        if node.op not in _LEGACY:
            continue
        if node.op == "add":
            spikes, current = sorted(node.inputs, key=lambda n: g.tensors[n].dtype != "int8")
            m = scaled_add_params(g.tensors[spikes].quant, g.tensors[current].quant).multiplier
            node.inputs, node.attrs = [spikes, current], {"multiplier": m}
        elif node.op == "avgpool2d":
            node.attrs = {k: node.attrs[k] for k in ("kernel", "stride", "padding")}
        node.op = _LEGACY[node.op]


@dataclass(frozen=True)
class Schedule:
    """How a spiking Graph runs, per node (see the module's docstring)."""

    static: tuple[bool, ...]
    event_driven: tuple[bool, ...]
    first_layer: tuple[bool, ...]
    held: frozenset[str]


def schedule(graph: Graph) -> Schedule:
    """The schedule of the spiking ``graph``: a pure function of its nodes, its encoding and
    the event-driven kernels registered for its kind (``spiking`` or ``spiking_int8``)."""
    backend = "spiking_int8" if is_int8(graph) else "spiking"
    if graph.metadata.get("encoding", "direct") == "direct":
        static = _time_invariant(graph)
    else:  # rate encoding draws new input spikes at every step
        static = [False] * len(graph.nodes)
    synapse = [_event_driven(node.op, backend) for node in graph.nodes]
    once = set(graph.inputs) | {node.outputs[0] for node, s
                                in zip(graph.nodes, static, strict=True) if s}
    held = frozenset(x for node, s in zip(graph.nodes, static, strict=True) if not s
                     for x in node.inputs if x in once)
    return Schedule(tuple(static),
                    tuple(e and not s for e, s in zip(synapse, static, strict=True)),
                    tuple(e and s for e, s in zip(synapse, static, strict=True)), held)


def _event_driven(op: str, backend: str) -> bool:
    impl = OPS[op].impls.get(backend)
    return bool(impl and impl.options.get("event"))


def _time_invariant(graph: Graph) -> list[bool]:
    """Per node, whether its output is the same at every step under direct encoding: it reads
    only the inputs, params and such outputs, and is no neuron (a neuron has state)."""
    known = set(graph.inputs) | set(graph.params)
    static = []
    for node in graph.nodes:
        static.append(not OPS[node.op].neuron and all(x in known for x in node.inputs))
        if static[-1]:
            known.add(node.outputs[0])
    return static
