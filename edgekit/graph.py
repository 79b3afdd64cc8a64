"""The Graph: edgekit's one hand-off between importers, quantizer, runtimes, writers and profiler.

Nodes are kept in topological order over named tensors. A tensor is either an activation
(produced by a node or fed as a graph input; its leading dimension is the batch, recorded as 1)
or a param (a numpy array in ``Graph.params``). ``save``/``load`` use one versioned ``.ekm``
file: a zip holding ``graph.json`` and ``params.npz``, read without pickle and validated in full.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.fileio import atomic_write
from edgekit.limits import DEFAULT_LIMITS, Limits, inflate, zip_members
from edgekit.numerics import formats
from edgekit.ops import OPS, resolve_attrs
from edgekit.ops.elementwise import broadcast
from edgekit.spiking import check_kind

FORMAT = "edgekit-model"
VERSION = 1
DTYPES = ("float32", "int8", "int32")
MAX_ELEMENTS = 1 << 31  # per tensor; guards against absurd shapes in files
_F32_TINY, _F32_MAX = float(np.finfo(np.float32).tiny), float(np.finfo(np.float32).max)


@dataclass
class QuantParams:
    """real = (q - zero_point) * scale; per tensor (axis None) or per channel along ``axis``."""

    scale: list[float]
    zero_point: list[int]
    axis: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"scale": list(self.scale), "zero_point": list(self.zero_point), "axis": self.axis}


@dataclass
class TensorInfo:
    shape: tuple[int, ...]
    dtype: str = "float32"
    quant: QuantParams | None = None

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of the values; a low-bit weight's packed storage and its float32 scales
        (``numerics.formats``), all of which a device stores."""
        if formats.weight_dtype(self.dtype):
            dtype, shape = formats.storage(self.dtype, self.shape)
            return math.prod(shape) * dtype.itemsize + 4 * len(self.quant.scale if self.quant
                                                               else ())
        return self.size * np.dtype(self.dtype).itemsize


@dataclass
class Node:
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    name: str = ""  # where it came from: module path or source node name, for messages/reports


@dataclass
class Graph:
    inputs: list[str]
    outputs: list[str]
    tensors: dict[str, TensorInfo]
    nodes: list[Node]
    params: dict[str, np.ndarray] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> Graph:
        """Check the whole Graph (ops, attrs, shapes, dtypes, order); fill default attrs."""
        _validate(self)
        return self

    def producers(self) -> dict[str, Node]:
        return {out: node for node in self.nodes for out in node.outputs}

    def consumers(self) -> dict[str, list[Node]]:
        users: dict[str, list[Node]] = {}
        for node in self.nodes:
            for name in node.inputs:
                users.setdefault(name, []).append(node)
        return users

    def node_macs(self, node: Node) -> int:
        spec = OPS[node.op]
        shapes = [self.tensors[n].shape for n in node.inputs]
        return int(spec.macs(shapes, self.tensors[node.outputs[0]].shape, node.attrs))

    def save(self, path: str | Path) -> Path:
        """Write the Graph to one ``.ekm`` file, atomically (``edgekit.fileio``): a crash or a
        full disk leaves the previous file, and concurrent saves each write a whole file."""
        self.validate()
        path = Path(path)
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "tensors": {
                name: {"shape": list(t.shape), "dtype": t.dtype,
                       "quant": t.quant.to_json() if t.quant else None}
                for name, t in self.tensors.items()
            },
            "nodes": [{"op": n.op, "name": n.name, "inputs": n.inputs, "outputs": n.outputs,
                       "attrs": n.attrs} for n in self.nodes],
            "params": sorted(self.params),
            "metadata": self.metadata,
        }
        arrays = io.BytesIO()
        np.savez(arrays, **{f"p{i}": self.params[k] for i, k in enumerate(doc["params"])})
        with atomic_write(path) as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("graph.json", json.dumps(doc, indent=1))
            zf.writestr("params.npz", arrays.getvalue())
        return path


def load(path: str | Path, limits: Limits = DEFAULT_LIMITS) -> Graph:
    """Read and fully validate an ``.ekm`` file; any defect raises ``EdgekitError``.

    The file is untrusted: what it may ask for (inflated bytes, tensor sizes, activation
    memory, spiking time steps) is bounded by ``limits`` (``edgekit.limits.Limits``)."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            members = zip_members(zf, limits, "the file")
            for needed in ("graph.json", "params.npz"):
                _expect(needed in members, f"not an edgekit model (no {needed} inside)")
            doc = json.loads(inflate(zf, members["graph.json"], "the file"),
                             object_pairs_hook=_unique_keys, parse_constant=_no_nan)
            arrays = _read_npz(inflate(zf, members["params.npz"], "the file"), limits)
    except FileNotFoundError:
        raise EdgekitError(f"{path}: no such file") from None
    except EdgekitError as err:
        raise EdgekitError(f"{path}: {err}") from None
    except Exception as err:  # zip, json and npy decoders raise many types on corrupt bytes
        raise EdgekitError(
            f"{path}: malformed edgekit model file ({type(err).__name__}: {err}); "
            "re-create it with `edgekit convert` or Graph.save"
        ) from None
    try:
        graph = _from_doc(doc, arrays)
        _check_limits(graph, limits)
        return graph.validate()
    except EdgekitError as err:
        raise EdgekitError(f"{path}: {err}") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object; a key given twice is refused (``json`` would keep the last silently)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        key = next(k for i, (k, _) in enumerate(pairs) if k in dict(pairs[:i]))
        raise EdgekitError(f"graph.json gives the key {key!r} twice in one object")
    return obj


def _no_nan(literal: str) -> float:
    if literal == "NaN":
        raise EdgekitError("graph.json holds a NaN; no field of a model may be NaN")
    return float(literal)


def _read_npz(blob: bytearray, limits: Limits) -> dict[str, np.ndarray]:
    """The arrays of ``params.npz`` (a zip of ``.npy`` members), inflated within ``limits``
    and each checked against its header before it is built (numpy's own reader allocates
    what the header declares first)."""
    arrays = {}
    with zipfile.ZipFile(io.BytesIO(blob)) as npz:
        for name, info in zip_members(npz, limits, "params.npz").items():
            _expect(name.endswith(".npy"), f"params.npz member {name!r} is not an .npy array")
            arrays[name[:-4]] = _read_npy(name, inflate(npz, info, "params.npz"), limits)
    return arrays


def _read_npy(name: str, data: bytearray, limits: Limits) -> np.ndarray:
    f = io.BytesIO(data)
    version = np.lib.format.read_magic(f)
    _expect(version in ((1, 0), (2, 0)), f"{name}: .npy format version {version} not read")
    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                   else np.lib.format.read_array_header_2_0)
    shape, fortran, dtype = read_header(f)
    _expect(not dtype.hasobject, f"{name}: holds Python objects (a pickle), refused")
    count = math.prod(shape)
    if count > limits.max_tensor_elements:
        raise limits.exceeded(f"params.npz array {name!r} has {count:,} elements",
                              "max_tensor_elements")
    _expect(count * dtype.itemsize == len(data) - f.tell(),
            f"{name}: {len(data) - f.tell()} bytes of data for {count} x {dtype}")
    array = np.frombuffer(data, dtype, count, f.tell())  # a view: no second copy in memory
    array = array if array.flags.aligned else array.copy()  # (savez aligns; a crafted file may not)
    return array.reshape(shape, order="F" if fortran else "C")


def _expect(cond: bool, msg: str) -> None:
    if not cond:
        raise EdgekitError(msg)


def _are_names(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


def _from_doc(doc: Any, arrays: dict[str, np.ndarray]) -> Graph:
    _expect(isinstance(doc, dict) and doc.get("format") == FORMAT, "not an edgekit model file")
    _expect(doc.get("version") == VERSION,
            f"model file version {doc.get('version')!r} is not supported by this edgekit "
            f"(reads version {VERSION}); upgrade edgekit or re-convert the model")
    for key, kind in (("inputs", list), ("outputs", list), ("tensors", dict), ("nodes", list),
                      ("params", list), ("metadata", dict)):
        _expect(isinstance(doc.get(key), kind), f"field {key!r} missing or not a {kind.__name__}")
    for key in ("inputs", "outputs", "params"):
        _expect(_are_names(doc[key]), f"field {key!r} must be a list of tensor names")
    tensors = {}
    for name, t in doc["tensors"].items():
        _expect(isinstance(t, dict), f"tensor {name!r} is not an object")
        shape = t.get("shape")
        _expect(isinstance(shape, list) and all(type(d) is int and d >= 1 for d in shape),
                f"tensor {name!r} has invalid shape {shape!r}")
        q = t.get("quant")
        quant = None
        if q is not None:
            _expect(isinstance(q, dict) and isinstance(q.get("scale"), list)
                    and isinstance(q.get("zero_point"), list),
                    f"tensor {name!r} has malformed quantization parameters")
            quant = QuantParams(q["scale"], q["zero_point"], q.get("axis"))
        _expect(isinstance(t.get("dtype"), str), f"tensor {name!r} has no dtype")
        tensors[name] = TensorInfo(tuple(shape), t["dtype"], quant)
    nodes = []
    for i, n in enumerate(doc["nodes"]):
        _expect(isinstance(n, dict) and isinstance(n.get("op"), str)
                and isinstance(n.get("inputs"), list) and isinstance(n.get("outputs"), list)
                and isinstance(n.get("attrs", {}), dict),
                f"node {i} is malformed")
        _expect(_are_names(n["inputs"]) and _are_names(n["outputs"]),
                f"node {i}: inputs and outputs must be lists of tensor names")
        nodes.append(Node(n["op"], n["inputs"], n["outputs"], n.get("attrs", {}),
                          str(n.get("name", ""))))
    _expect(len(set(doc["params"])) == len(doc["params"]), "field 'params' names a param twice")
    _expect(len(arrays) == len(doc["params"]),
            f"params.npz holds {len(arrays)} arrays, graph.json lists {len(doc['params'])}")
    params = {}
    for i, name in enumerate(doc["params"]):
        _expect(isinstance(name, str) and f"p{i}" in arrays,
                f"param {name!r} is missing from params.npz")
        params[name] = arrays[f"p{i}"]
    return Graph(doc["inputs"], doc["outputs"], tensors, nodes, params, doc["metadata"])


def _validate(g: Graph) -> None:
    _expect(bool(g.inputs) and bool(g.outputs), "a graph needs at least one input and output")
    for name, t in g.tensors.items():
        _expect(isinstance(name, str) and name != "", "tensor names must be non-empty strings")
        low_bit = formats.weight_dtype(t.dtype) is not None  # a packed weight, params only
        _expect(t.dtype in DTYPES or low_bit and name in g.params and len(t.shape) >= 1,
                f"tensor {name!r}: dtype {t.dtype!r} not one of {DTYPES}"
                + (" (low-bit dtypes are for weights, which are params with an output-channel "
                   "axis)" if low_bit else ""))
        _expect(all(type(d) is int and d >= 1 for d in t.shape) and t.size < MAX_ELEMENTS,
                f"tensor {name!r} has invalid shape {t.shape}")
        if t.quant is not None:
            _check_quant(name, t)
        else:  # int32 without them: a graph input of indices (into embedding's table)
            _expect(t.dtype in ("float32", "float16") or (t.dtype == "int32"
                                                           and name in g.inputs),
                    f"tensor {name!r} is {t.dtype} without quantization parameters (scale, "
                    "zero point), so its values mean nothing")
    for name, value in g.params.items():
        _expect(name in g.tensors, f"param {name!r} has no tensor entry")
        info = g.tensors[name]
        dtype, shape = (formats.storage(info.dtype, info.shape) if formats.weight_dtype(info.dtype)
                        else (np.dtype(info.dtype), info.shape))
        _expect(isinstance(value, np.ndarray) and value.dtype == dtype,
                f"param {name!r} is {getattr(value, 'dtype', type(value))}, "
                f"its tensor entry says {info.dtype} (stored as {dtype})")
        _expect(value.shape == shape,
                f"param {name!r} has shape {value.shape}, its tensor entry says {info.dtype} "
                f"{info.shape} (stored as {shape})")
        if value.dtype.kind == "f":
            bad = value.size - int(np.isfinite(value).sum())
            _expect(bad == 0, f"param {name!r} holds {bad} NaN or infinite value(s)")
    available = set(g.params)
    for name in g.inputs:
        _expect(name in g.tensors and name not in g.params,
                f"graph input {name!r} is not a declared activation tensor")
        _expect(g.tensors[name].shape[:1] == (1,), f"input {name!r}: batch dimension must be 1")
        available.add(name)
    for i, node in enumerate(g.nodes):
        where = f"node {i} ({node.op}{' ' + node.name if node.name else ''})"
        try:
            node.attrs = resolve_attrs(node.op, node.attrs)
            spec = OPS[node.op]
            lo, hi = spec.n_inputs
            _expect(lo <= len(node.inputs) <= hi and len(node.outputs) == 1,
                    f"takes {lo}..{hi} inputs and 1 output, has {len(node.inputs)} and "
                    f"{len(node.outputs)}")
            for slot, name in enumerate(node.inputs):
                _expect(name in available, f"input {name!r} is not defined before this node")
                t = g.tensors[name]
                _expect((t.dtype == "int32" and t.quant is None) == (spec.indexed and slot == 0),
                        f"input {slot} ({name!r}) is {t.dtype}: int32 indices go to the first "
                        "input of an indexed op (embedding), and nothing else does")
                _expect(not formats.weight_dtype(t.dtype) or spec.int8_weights and slot == 1,
                        f"input {slot} ({name!r}) is {t.dtype}: low-bit formats hold the weight "
                        "(input 1) of a conv or linear layer, nothing else")
                if slot in spec.weight_inputs:
                    _expect(name in g.params, f"input {slot} ({name!r}) must be a param")
                    for z in g.tensors[name].quant.zero_point if g.tensors[name].quant else ():
                        _expect(z == 0, f"weight {name!r} has zero point {z}; weights are "
                                "quantized symmetrically (zero point 0), runtimes differ on "
                                "any other")
            out = node.outputs[0]
            _expect(isinstance(out, str) and out in g.tensors,
                    f"output {out!r} has no tensor entry")
            _expect(out not in available, f"output {out!r} is produced twice")
            shape = spec.infer([g.tensors[n].shape for n in node.inputs], node.attrs)
            if spec.infer is broadcast:
                _expect(all(len(g.tensors[n].shape) == len(shape) for n in node.inputs
                            if n not in g.params),
                        "an activation operand needs the output's rank, so that the batch "
                        "axes line up (a constant may have a lower rank)")
            _expect(tuple(shape) == g.tensors[out].shape,
                    f"output {out!r} declared {g.tensors[out].shape}, op gives {tuple(shape)}")
            _check_accumulator(g, node)
        except EdgekitError as err:
            raise EdgekitError(f"{where}: {err}") from None
        available.add(out)
    for name in g.outputs:
        _expect(name not in g.params, f"graph output {name!r} is a param, not computed from "
                "the inputs")
        _expect(name in available, f"graph output {name!r} is never produced")
    check_kind(g)  # spiking or not, float32 or int8: edgekit.spiking


def _check_accumulator(g: Graph, node: Node) -> None:
    """An int8 weighted op (int8 weights, int32 bias, one row of weights per output channel)
    sums into an int32 accumulator: its bias plus the largest sum its weights can give (inputs
    minus their zero point span at most 255) must fit, or the backends part ways (C wraps,
    numpy widens, some saturate) and none is right. No calibrated bias comes near."""
    w, b = (g.params.get(name) for name in (node.inputs + ["", ""])[1:3])
    if (w is None or b is None or w.dtype != np.int8 or b.dtype != np.int32
            or b.shape != w.shape[:1]):
        return
    worst = np.abs(w.reshape(len(w), -1).astype(np.int64)).sum(1) * 255 + np.abs(b.astype(np.int64))
    channel = int(worst.argmax())
    _expect(worst[channel] <= np.iinfo(np.int32).max,
            f"bias {node.inputs[2]!r} is {int(b[channel])} at channel {channel}: with its "
            f"weights the int32 accumulator can reach {int(worst[channel]):,}, past 2^31 - 1")


def _check_limits(g: Graph, limits: Limits) -> None:
    """What a Graph read from a file asks for, against ``limits``: before validation runs shape
    inference on it, and long before a runtime allocates its arena or loops over time steps."""
    for name, t in g.tensors.items():
        if t.size > limits.max_tensor_elements:
            raise limits.exceeded(f"tensor {name!r} has {t.size:,} elements",
                                  "max_tensor_elements")
    acts = {name: t.size for name, t in g.tensors.items() if name not in g.params}
    total = sum(acts.values())
    if total > limits.max_activation_elements:
        largest = max(acts, key=acts.__getitem__)
        raise limits.exceeded(f"the activations need {total:,} elements per sample (the "
                              f"largest, tensor {largest!r}, {acts[largest]:,})",
                              "max_activation_elements")
    steps = g.metadata.get("timesteps")
    if type(steps) is int and steps > limits.max_timesteps:
        raise limits.exceeded(f"the spiking Graph runs {steps:,} time steps", "max_timesteps")


def _check_quant(name: str, t: TensorInfo) -> None:
    q = t.quant
    n = len(q.scale)
    _expect(n >= 1 and len(q.zero_point) == n, f"tensor {name!r}: scale/zero_point lengths differ")
    for s in q.scale:
        _expect(not isinstance(s, bool) and isinstance(s, (int, float))
                and _F32_TINY <= s <= _F32_MAX,
                f"tensor {name!r}: quantization scales must be positive and finite in float32 "
                f"([{_F32_TINY:.3g}, {_F32_MAX:.3g}], else they round to 0 or inf), got {s!r}")
    _expect(all(type(z) is int for z in q.zero_point), f"tensor {name!r}: zero points must be ints")
    if formats.weight_dtype(t.dtype):
        _check_low_bit_quant(name, t)
        return
    lo, hi = (-128, 127) if t.dtype == "int8" else (-(1 << 31), (1 << 31) - 1)
    for z in q.zero_point:
        _expect(lo <= z <= hi,
                f"tensor {name!r}: {t.dtype} zero points must lie in [{lo}, {hi}], got {z}")
    if q.axis is None:
        _expect(n == 1, f"tensor {name!r}: per-tensor quantization needs one scale")
    else:
        _expect(type(q.axis) is int and 0 <= q.axis < len(t.shape) and t.shape[q.axis] == n,
                f"tensor {name!r}: per-channel axis {q.axis} does not match {n} scales")


def _check_low_bit_quant(name: str, t: TensorInfo) -> None:
    """A low-bit weight's scales: ``orders x channels x groups`` of them, the groups dividing
    each channel's row (``numerics.formats``), zero points 0, axis 0."""
    q, (_, orders) = t.quant, formats.weight_dtype(t.dtype)
    row = math.prod(t.shape[1:])
    per_row, rest = divmod(len(q.scale), orders * t.shape[0])
    _expect(q.axis == 0 and rest == 0 and 1 <= per_row <= row,
            f"tensor {name!r}: a {t.dtype} weight has {orders} x {t.shape[0]} x G scales (G "
            f"groups of its {row} weights per channel) along axis 0, got {len(q.scale)} "
            f"along axis {q.axis}")
    _expect(set(q.zero_point) == {0}, f"tensor {name!r}: low-bit weights have zero point 0")
