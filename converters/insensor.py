"""In-sensor SNN front-ends (Datta et al., ICASSP 2023): a spiking Graph split after its first
layer into a sensor Graph (the convolution and its neurons, computed in the pixel array) and a
processor Graph (the rest), with the spikes between them sent as 1 bit per neuron per step, or
as address events when that costs fewer bits.

The processor receives spike trains, but every spiking target (runtime, unrolled ONNX, the
firmware's time loop) feeds a Graph the same input at every step. So the processor Graph starts
with a *replay neuron*, a copy of the cut neuron (same threshold, initial membrane, leak and
reset), and its input is a constant current decoded from the received train: any current in
the interval that makes that neuron fire exactly that train (cumulative spike counts are
monotone in a constant current, so two bisections find the interval, run on the runtime's own
neuron kernel; the decoded current is checked to give the train back). The first layer's
current is constant under direct encoding, so such a current always exists, and the processor
sees the spikes of the unsplit Graph, step for step: the split pipeline's outputs equal the
unsplit Graph's exactly. A deeper cut (k > 1) feeds its neuron a current that changes from step
to step, which no constant replays; it is refused.

Bandwidth and energy per frame are in ``edgekit.insensor`` (measured spikes against a b-bit
ADC readout; every energy coefficient from the device profile's ``[insensor]`` table).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.graph import Graph, Node, TensorInfo
from edgekit.runtime.spiking import SpikingExecutor
from edgekit.spiking import is_int8, is_spiking, schedule

from .snn import _subgraph

_NEURONS = ("if_neuron", "lif_neuron")
_BISECTIONS = 48  # float32 has 24 bits of mantissa; the interval starts 2-3 thresholds wide


@dataclass
class Split:
    """A spiking Graph cut after neuron layer ``k``: ``sensor`` computes ``cut`` (the spikes
    times thresholds of that layer), ``processor`` takes ``current`` (the replay neuron's
    constant input) and computes the Graph's outputs."""

    sensor: Graph
    processor: Graph
    cut: str
    current: str

    @property
    def neurons(self) -> int:
        """Neurons at the cut: the bits one time step sends bit-packed."""
        return math.prod(self.sensor.tensors[self.cut].shape[1:])


def split(snn: Graph, k: int = 1) -> Split:
    """Cut ``snn`` (float32, direct encoding) after its ``k``-th neuron layer."""
    if not is_spiking(snn) or is_int8(snn) or snn.metadata.get("encoding", "direct") != "direct":
        raise EdgekitError("the in-sensor split takes a float32, direct-encoded spiking Graph "
                           "(convert --to-snn)")
    neurons = [i for i, n in enumerate(snn.nodes) if n.op in _NEURONS]
    if type(k) is not int or not 1 <= k <= len(neurons) - (snn.nodes[-1].op in _NEURONS):
        raise EdgekitError(f"--split is a neuron layer in 1..{len(neurons)} with layers after "
                           f"it, got {k!r}")
    at = neurons[k - 1]
    node = snn.nodes[at]
    plan = schedule(snn)
    producer = next(i for i, n in enumerate(snn.nodes) if node.inputs[0] in n.outputs)
    if not plan.static[producer]:
        raise EdgekitError(
            f"the neuron layer {k} ({node.name}) integrates a current that changes from step to "
            "step; only a cut after the first layer (--split 1), whose current is the same at "
            "every step, reaches the processor as spikes the spiking targets can replay")
    cut = node.outputs[0]
    sensor = _subgraph(snn, cut)
    rest = snn.nodes[at + 1:]
    current = f"{cut}.current"
    made = {cut} | {o for n in rest for o in n.outputs}
    crossing = sorted({i for n in rest for i in n.inputs} - made - set(snn.params))
    if crossing:
        raise EdgekitError(f"the layers after the cut also read {crossing} from before it; "
                           "cut where only the spikes cross")
    replay = Node(node.op, [current, *node.inputs[1:]], [cut], dict(node.attrs), node.name)
    nodes = [replay, *rest]
    names = {t for n in nodes for t in (*n.inputs, *n.outputs)}
    tensors = {t: snn.tensors[t] for t in names if t != current}
    tensors[current] = TensorInfo(snn.tensors[node.inputs[0]].shape)
    processor = Graph([current], list(snn.outputs), tensors, nodes,
                      {t: snn.params[t] for t in names if t in snn.params},
                      {**snn.metadata, "insensor": {"role": "processor", "cut": cut}})
    sensor.metadata = {**sensor.metadata, "insensor": {"role": "sensor", "cut": cut}}
    return Split(sensor.validate(), processor.validate(), cut, current)


# --------------------------------------------------------------------------- the link


def spike_trains(s: Split, x: np.ndarray) -> np.ndarray:
    """The sensor's spikes for frames ``x``: bool (T, N, *neuron shape)."""
    return SpikingExecutor(s.sensor).trace(np.asarray(x, np.float32)) != 0


def frame_bits(train: np.ndarray) -> tuple[int, int]:
    """(bit-packed, address-event) bits of one frame's train (T, *neurons): T x neurons, and
    per step a spike count of ceil(log2(K + 1)) bits then ceil(log2 K) bits per spike."""
    steps, k = train.shape[0], train[0].size
    address, count = max(1, math.ceil(math.log2(k))), math.ceil(math.log2(k + 1))
    return steps * k, steps * count + int(train.sum()) * address


def encode(train: np.ndarray) -> tuple[str, bytes]:
    """One frame's train (T, *neurons) as the sensor sends it: ("bits", 1 bit per neuron per
    step, packed) or ("events", per step a count and the addresses that fired), whichever is
    shorter."""
    steps, k = train.shape[0], train[0].size
    flat = train.reshape(steps, k).astype(bool)
    packed, events = frame_bits(flat)
    if packed <= events:
        return "bits", np.packbits(flat.reshape(-1)).tobytes()
    address, count = max(1, math.ceil(math.log2(k))), math.ceil(math.log2(k + 1))
    fields = []
    for row in flat:
        where = np.flatnonzero(row)
        fields += [(len(where), count), *((int(a), address) for a in where)]
    values = np.array([v for v, _ in fields], np.int64)
    widths = np.array([w for _, w in fields], np.int64)
    bits = (values.repeat(widths) >> (np.concatenate([np.arange(w)[::-1] for w in widths])
                                      if len(widths) else np.zeros(0, np.int64))) & 1
    return "events", np.packbits(bits.astype(np.uint8)).tobytes()


def decode(kind: str, data: bytes, steps: int, shape: tuple[int, ...]) -> np.ndarray:
    """``encode``'s inverse: the bool train (T, *shape)."""
    k = math.prod(shape)
    bits = np.unpackbits(np.frombuffer(data, np.uint8))
    if kind == "bits":
        return bits[:steps * k].astype(bool).reshape(steps, *shape)
    address, count = max(1, math.ceil(math.log2(k))), math.ceil(math.log2(k + 1))
    train, at = np.zeros((steps, k), bool), 0

    def read(width: int) -> int:
        nonlocal at
        value = int(bits[at:at + width].dot(1 << np.arange(width)[::-1])) if width else 0
        at += width
        return value

    for t in range(steps):
        for _ in range(read(count)):
            train[t, read(address)] = True
    return train.reshape(steps, *shape)


# --------------------------------------------------------------------------- the replay


def replay_currents(s: Split, trains: np.ndarray) -> np.ndarray:
    """Per frame and neuron, a constant current that makes the processor's replay neuron fire
    ``trains`` (bool (T, N, *shape)) exactly; ``EdgekitError`` if none does."""
    neuron = _neuron_graph(s)
    ex = SpikingExecutor(neuron)
    steps, batch = trains.shape[:2]
    want = np.cumsum(trains.reshape(steps, batch, -1), axis=0)
    threshold = s.processor.params[s.processor.nodes[0].inputs[1]].reshape(-1)
    v_init = s.processor.params[s.processor.nodes[0].inputs[2]].reshape(-1)
    span = 2.0 * threshold.astype(np.float64) + np.abs(v_init) + 1.0

    def counts(z: np.ndarray) -> np.ndarray:
        z32 = z.astype(np.float32).reshape(batch, *s.processor.tensors[s.current].shape[1:])
        return np.cumsum(ex.trace(z32).reshape(steps, batch, -1) != 0, axis=0)

    def least(pred) -> np.ndarray:  # the least float32 current where pred (monotone) holds
        lo, hi = np.broadcast_to(-span, want.shape[1:]).copy(), np.broadcast_to(
            span, want.shape[1:]).copy()
        for _ in range(_BISECTIONS):
            mid = ((lo + hi) / 2).astype(np.float32).astype(np.float64)
            ok = pred(counts(mid))
            hi, lo = np.where(ok, mid, hi), np.where(ok, lo, mid)
        return hi

    low = least(lambda c: (c >= want).all(axis=0))
    high = least(lambda c: (c > want).any(axis=0))
    z = ((low + high) / 2).astype(np.float32)
    bad = (counts(z.astype(np.float64)) != want).any(axis=0)
    z[bad] = low[bad].astype(np.float32)
    if (counts(z.astype(np.float64)) != want).any():
        raise EdgekitError("no constant current replays these spike trains on the processor's "
                           "neuron: they were not made by the sensor's first layer")
    return z.reshape(batch, *s.processor.tensors[s.current].shape[1:])


def _neuron_graph(s: Split) -> Graph:
    """The replay neuron alone, as a spiking Graph: what ``replay_currents`` bisects on."""
    node = s.processor.nodes[0]
    return Graph([s.current], [s.cut], {t: s.processor.tensors[t] for t in
                                        (*node.inputs, *node.outputs)}, [node],
                 {t: s.processor.params[t] for t in node.inputs[1:]},
                 {k: s.processor.metadata[k] for k in ("timesteps", "encoding", "snn_output")
                  if k in s.processor.metadata})


@dataclass
class Transfer:
    """What crossed the link for a batch of frames: the decoded currents the processor takes,
    and per frame the encoding chosen and its bits."""

    currents: np.ndarray
    kinds: list[str]
    bits: np.ndarray  # per frame, the bits sent
    event_bits: np.ndarray  # per frame, the bits address events take
    packed_bits: int  # T x neurons, the bit-packed size of every frame


def transfer(s: Split, x: np.ndarray) -> Transfer:
    """Frames ``x`` through the sensor and the link: each frame's train encoded, decoded on
    the processor's side, and replayed as currents."""
    trains = spike_trains(s, x)
    steps, shape = trains.shape[0], trains.shape[2:]
    decoded, kinds, bits, events = np.empty_like(trains), [], [], []
    for i in range(trains.shape[1]):
        kind, data = encode(trains[:, i])
        decoded[:, i] = decode(kind, data, steps, shape)
        kinds.append(kind)
        bits.append(8 * len(data))
        events.append(frame_bits(trains[:, i])[1])
    return Transfer(replay_currents(s, decoded), kinds, np.array(bits), np.array(events),
                    steps * math.prod(shape))


def run_split(s: Split, x: np.ndarray, target: str = "cpu") -> np.ndarray:
    """The split pipeline's outputs for frames ``x``: the sensor on the runtime, the link, the
    processor on ``target`` (any target that runs spiking Graphs)."""
    import edgekit

    currents = transfer(s, x).currents
    with edgekit.deploy(s.processor, target=target) as session:
        return session.run(currents)
