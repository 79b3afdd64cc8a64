"""The fuzzing suite of issue 11: for every bad input the outcome is one ``EdgekitError`` (one
line and exit 2 from the CLI) or a correct result; never a traceback, a hang, a crash, a
silently wrong output or a lost file.

Five strategies, each a hypothesis test whose examples start from valid artefacts and break them:

- ``.ekm`` files (float, int8 and spiking Graphs): the zip (members dropped, duplicated,
  renamed, truncated, bytes flipped), ``graph.json`` (keys removed, added, retyped; values
  replaced by NaN, huge, negative numbers, strings, other ops and dtypes) and ``params.npz``
  (shapes, dtypes, NaN/inf, sizes). A file that still loads must run on the cpu target and
  agree with the plain-numpy reference (float), with tflite-micro bit for bit (int8), or give
  finite outputs (spiking), or refuse to run with an ``EdgekitError``.
- ONNX files (the float CNN written by ``to_onnx``, and one made with ``onnx.helper`` for
  attributes of every kind): attributes, shapes, initializers, op types, external-data paths,
  opsets and raw bytes; what ``from_onnx`` imports must run as above and agree with ONNX
  Runtime running the same file, wherever ONNX Runtime runs it.
- CLI arguments: the subcommands and flags of ``build_parser`` (read from the parser itself)
  with mutated values, run in this process (many examples) and as the console script (fewer:
  crashes and hangs show only there); exit 0 or 2, one stderr line for 2, every input file
  unchanged, every ``.ekm`` written loadable.
- Concurrent writers of one path, one killed at a random moment: the file is always a whole
  model, old or new.
- A corrupting serial proxy between host and the emulated board (``test_mcu.FaultyProxy``):
  every reply is the right result or an ``EdgekitError``.

Every in-process example runs under a time limit (a hang fails the test); subprocesses have
timeouts. Outcomes are counted per strategy and printed when the module ends (run with ``-s``;
docs/reliability.md's table quotes them). Under CI (``CI`` set) the examples are the same on
every run (conftest's profile). The last part holds each defect the fuzzers found as its
smallest reproduction."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import re
import signal
import warnings
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import edgekit
from edgekit import EdgekitError
from edgekit.converters.builder import GraphBuilder
from edgekit.graph import DTYPES
from edgekit.ops import OPS

OUTCOMES: dict[str, Counter] = {}


def fuzz(examples: int):
    """Hypothesis settings for one strategy: ``examples`` examples, no per-example deadline
    (the time limit below and subprocess timeouts catch hangs), fixtures shared by examples."""
    return settings(max_examples=examples, deadline=None, suppress_health_check=[
        HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture,
        HealthCheck.filter_too_much])


@pytest.fixture(scope="module", autouse=True)
def outcome_table():
    """Print the examples each strategy ran and how they ended, once the module is done."""
    yield
    for strategy, counts in OUTCOMES.items():
        print(f"\nfuzz {strategy}: {sum(counts.values())} examples, "
              + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


def record(strategy: str, outcome: str) -> None:
    OUTCOMES.setdefault(strategy, Counter())[outcome] += 1


class Hang(Exception):
    """An example ran past its time limit."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Fail an in-process example that runs past ``seconds`` (SIGALRM in the main thread)."""
    def expire(signum, frame):
        raise Hang(f"ran past {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def one_line(err: EdgekitError) -> str:
    message = str(err)
    assert message and "\n" not in message, message
    return message


# ---- the valid artefacts every strategy starts from -----------------------------------------

def small_cnn(seed: int = 0) -> edgekit.Graph:
    """conv-relu, average pool, flatten, linear-relu, linear: 2x6x6 in, 3 classes (average
    pooling, so that it converts to a spiking Graph too)."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder({"source": "fuzz"})
    x = b.input("x", (1, 2, 6, 6))
    y = b.node("conv2d", [x, b.param(rng.normal(size=(4, 2, 3, 3)) * 0.4, "c1.w"),
                          b.param(rng.normal(size=4) * 0.1, "c1.b")],
               {"padding": [1, 1, 1, 1], "activation": "relu"}, name="c1")
    y = b.node("avgpool2d", [y], {"kernel": [2, 2], "stride": [2, 2]}, name="pool")
    y = b.node("reshape", [y], {"shape": [36]}, name="flat")
    y = b.node("linear", [y, b.param(rng.normal(size=(8, 36)) * 0.3, "fc1.w"),
                          b.param(rng.normal(size=8) * 0.1, "fc1.b")], {"activation": "relu"},
               name="fc1")
    b.output(b.node("linear", [y, b.param(rng.normal(size=(3, 8)) * 0.3, "fc2.w"),
                               b.param(np.zeros(3), "fc2.b")], name="fc2"))
    return b.build()


def calibration(n: int = 64) -> np.ndarray:
    return np.random.default_rng(1).normal(size=(n, 2, 6, 6)).astype(np.float32)


@pytest.fixture(scope="module")
def graphs() -> dict[str, edgekit.Graph]:
    from edgekit.converters.snn import to_snn

    float_graph = small_cnn()
    return {"float": float_graph, "int8": edgekit.quantize(float_graph, calibration()),
            "spiking": to_snn(float_graph, calibration(), 4)}


class Files(dict):
    """Valid files by kind, shown by their kinds in hypothesis's reports (not their bytes)."""

    def __repr__(self) -> str:
        return f"<files {sorted(self)}>"


class Mutant:
    """A broken file: the seed it came from, what was done to it (shown in reports), bytes."""

    def __init__(self, kind: str, how: list[str], blob: bytes):
        self.kind, self.how, self.blob = kind, how, blob

    def __repr__(self) -> str:
        return f"<{self.kind}: {'; '.join(self.how)} ({len(self.blob)} B)>"


@pytest.fixture(scope="module")
def ekm_files(graphs, tmp_path_factory) -> Files:
    folder = tmp_path_factory.mktemp("seeds")
    return Files({kind: g.save(folder / f"{kind}.ekm").read_bytes()
                  for kind, g in graphs.items()})


# ---- .ekm files ------------------------------------------------------------------------------

def zip_members(blob: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        return [(info.filename, zf.read(info)) for info in zf.infolist()]


def zip_of(members: list[tuple[str, bytes]], deflate: bool = True) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(
            buf, "w", zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED) as zf:
        warnings.simplefilter("ignore")  # "Duplicate name": duplicates are one of the faults
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def flip_bytes(draw, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 8))):
        if out:
            out[draw(st.integers(0, len(out) - 1))] ^= draw(st.integers(1, 255))
    return bytes(out)


# values that replace a JSON value: wrong types, NaN/inf, huge, negative, empty
BAD_JSON = [float("nan"), float("inf"), -float("inf"), 0, -1, 1, 2, 2.5, 1e-300, 1e308, -1e308,
            10**30, 2**31, -(2**31) - 1, 2**63, "", "x", "relu", "int8", "float32", None, True,
            False, [], [1], [0, 0], [1, 2, 3, 4], {}, {"scale": [1.0]}]
STRINGS = sorted(OPS) + list(DTYPES) + ["none", "relu", "bool", "float64", "x", "p0", ""]


def json_paths(value, path=()) -> list[tuple]:
    """Every location in a JSON document (as a key path), the root excluded."""
    paths = []
    items = (value.items() if isinstance(value, dict)
             else enumerate(value) if isinstance(value, list) else ())
    for key, child in items:
        paths.append((*path, key))
        paths.extend(json_paths(child, (*path, key)))
    return paths


def mutate_json(draw, doc: dict) -> str:
    """One change at a random location of ``doc``, in place; says what it did."""
    path = draw(st.sampled_from(json_paths(doc)))
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    key, value = path[-1], parent[path[-1]]
    how = draw(st.sampled_from(["delete", "replace", "nudge", "retype", "add", "name"]))
    if how == "delete":
        del parent[key]
    elif how == "replace":
        parent[key] = copy.deepcopy(draw(st.sampled_from(BAD_JSON)))
    elif how == "nudge" and isinstance(value, (int, float)) and not isinstance(value, bool):
        parent[key] = draw(st.sampled_from([-value, value + 1, value - 1, value * 2,
                                            value * 1000, value / 3, 0]))
    elif how == "retype":
        parent[key] = (str(value) if not isinstance(value, str)
                       else draw(st.sampled_from([[value], 0, {value: value}])))
    elif how == "add" and isinstance(value, dict):
        value[draw(st.sampled_from(["extra", "axis", "quant", "stride", "timesteps"]))] = \
            copy.deepcopy(draw(st.sampled_from(BAD_JSON)))
    elif how == "add" and isinstance(value, list) and value:
        value.append(value[draw(st.integers(0, len(value) - 1))])
    elif how == "name" and isinstance(value, str):  # another op, dtype or tensor name
        parent[key] = draw(st.sampled_from(STRINGS))
    new = parent.get(key, "<deleted>") if isinstance(parent, dict) else (
        parent[key] if key < len(parent) else "<deleted>")
    return f"json {how} {'/'.join(map(str, path))}: {str(value)[:40]} -> {str(new)[:60]}"


def mutate_array(draw, a: np.ndarray) -> tuple[str, np.ndarray]:
    how = draw(st.sampled_from(["shape", "dtype", "nonfinite", "size", "scalar", "values",
                                "huge", "fortran"]))
    if how == "shape":
        b = draw(st.sampled_from([a.reshape(-1), a.reshape(1, *a.shape), a.T,
                                  a.reshape(*a.shape, 1)]))
    elif how == "dtype":
        b = a.astype(draw(st.sampled_from(["float64", "float16", "int8", "int32", "int64",
                                           "uint8", "bool", "complex64"])))
    elif how == "nonfinite":
        b = a.astype(np.float32 if a.dtype.kind != "f" else a.dtype)
        b.reshape(-1)[draw(st.integers(0, max(0, b.size - 1)))] = draw(
            st.sampled_from([np.nan, np.inf, -np.inf]))
    elif how == "size":
        flat = a.reshape(-1)
        b = draw(st.sampled_from([flat[:-1], np.concatenate([flat, flat[:1]]), flat[:0]]))
    elif how == "scalar":
        b = np.asarray(a.reshape(-1)[0])
    elif how == "values":  # a valid file with other weights: must load and run right
        b = -a if a.dtype.kind == "f" else np.flip(a).copy()
    elif how == "huge":
        info = np.finfo(a.dtype) if a.dtype.kind == "f" else np.iinfo(a.dtype)
        b = np.full_like(a, draw(st.sampled_from([info.max, info.min])))
    else:
        b = np.asfortranarray(a)
    return f"{how}: {a.dtype}{list(a.shape)} -> {b.dtype}{list(b.shape)}", b


@st.composite
def broken_ekm(draw, files: Files) -> Mutant:
    kind = draw(st.sampled_from(sorted(files)))
    members = zip_members(files[kind])
    layer = draw(st.sampled_from(["zip", "json", "json", "npz", "npz"]))
    if layer == "zip":
        how = draw(st.sampled_from(["truncate", "flip", "drop", "duplicate", "rename", "extra",
                                    "stored", "flip member"]))
        blob = zip_of(members)
        if how == "truncate":
            return Mutant(kind, [how], blob[:draw(st.integers(0, len(blob) - 1))])
        if how == "flip":
            return Mutant(kind, [how], flip_bytes(draw, blob))
        i = draw(st.integers(0, len(members) - 1))
        what = f"zip {how} {members[i][0]}"
        if how == "drop":
            del members[i]
        elif how == "duplicate":
            members.insert(draw(st.integers(0, len(members))), members[i])
        elif how == "rename":
            members[i] = (draw(st.sampled_from(["graph.json", "params.npz", "Graph.json",
                                                "params.npy", " graph.json", "../graph.json"])),
                          members[i][1])
            what += f" -> {members[i][0]!r}"
        elif how == "extra":
            members.append(("notes.txt", b"not part of the model"))
        elif how == "flip member":
            members[i] = (members[i][0], flip_bytes(draw, members[i][1]))
        return Mutant(kind, [what], zip_of(members, deflate=how != "stored"))
    index = {name: i for i, (name, _) in enumerate(members)}
    if layer == "json":
        doc, how = json.loads(members[index["graph.json"]][1]), []
        for _ in range(draw(st.integers(1, 3))):
            if json_paths(doc):
                how.append(mutate_json(draw, doc))
        members[index["graph.json"]] = ("graph.json", json.dumps(doc).encode())
        return Mutant(kind, how, zip_of(members))
    with np.load(io.BytesIO(members[index["params.npz"]][1])) as npz:
        arrays = {k: npz[k] for k in npz.files}
    key = draw(st.sampled_from(sorted(arrays)))
    how = draw(st.sampled_from(["array", "array", "array", "drop", "extra", "rename"]))
    what = f"npz {how} {key}"
    if how == "array":
        change, arrays[key] = mutate_array(draw, arrays[key])
        what += f" {change}"
    elif how == "drop":
        del arrays[key]
    elif how == "extra":
        arrays[f"p{len(arrays)}"] = np.zeros(3, np.float32)
    else:
        arrays["q" + key[1:]] = arrays.pop(key)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    members[index["params.npz"]] = ("params.npz", buf.getvalue())
    return Mutant(kind, [what], zip_of(members))


def sample_inputs(graph: edgekit.Graph, batch: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(2)
    return [rng.normal(size=(batch, *graph.tensors[name].shape[1:])).astype(np.float32)
            for name in graph.inputs]


def outputs_of(session, xs: list[np.ndarray]) -> list[np.ndarray]:
    y = session.run(xs)
    return y if isinstance(y, list) else [y]


def runs_right(graph: edgekit.Graph) -> str:
    """How a Graph that loaded ends when run on the cpu target: refused ("error") or outputs
    checked against an independent computation ("correct"); anything else fails the test."""
    from edgekit.runtime.reference import evaluate
    from edgekit.spiking import is_spiking

    xs = sample_inputs(graph)
    try:
        with edgekit.deploy(graph, "cpu") as session:
            ys = outputs_of(session, xs)
    except EdgekitError as err:
        one_line(err)
        return "error"
    for name, y in zip(graph.outputs, ys, strict=True):
        assert np.isfinite(y).all(), f"output {name} is not finite: {y}"
    if is_spiking(graph):
        return "correct"
    if any(t.dtype == "int8" for t in graph.tensors.values()):
        try:
            with edgekit.deploy(graph, "cpu:tflite-micro") as tflm:
                other = outputs_of(tflm, xs)
        except EdgekitError:  # an op tflite-micro lacks, or no tflite-micro here
            return "correct"
        for name, y, z in zip(graph.outputs, ys, other, strict=True):
            np.testing.assert_array_equal(y, z, err_msg=f"output {name}: cpu vs tflite-micro")
        return "correct"
    values = evaluate(graph, dict(zip(graph.inputs, xs, strict=True)))
    for name, y in zip(graph.outputs, ys, strict=True):
        np.testing.assert_allclose(y, values[name], rtol=1e-3,
                                   atol=1e-4 * max(1.0, float(np.abs(values[name]).max())),
                                   err_msg=f"output {name}: cpu vs the numpy reference")
    return "correct"


@fuzz(500)
@given(data=st.data())
def test_mutated_ekm_files_load_right_or_refuse(ekm_files, tmp_path, data):
    """``edgekit.load`` on a broken ``.ekm``: one line of EdgekitError, or a Graph that runs
    right (``runs_right``); the file itself is left as it was."""
    mutant = data.draw(broken_ekm(ekm_files))
    path = tmp_path / "fuzzed.ekm"
    path.write_bytes(mutant.blob)
    with time_limit(60):
        try:
            graph = edgekit.load(path)
        except EdgekitError as err:
            one_line(err)
            outcome = "error"
        else:
            outcome = runs_right(graph)
    assert path.read_bytes() == mutant.blob, "load changed the file"
    record(f"ekm ({mutant.kind})", outcome)


# ---- ONNX files ------------------------------------------------------------------------------

def handmade_onnx():
    """Conv (stride 2, pads, 2 groups, dilation) -> MaxPool -> LeakyRelu -> Flatten -> MatMul ->
    Add -> Softmax, built with onnx.helper: attributes of every kind to break."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in {
        "w": rng.normal(size=(4, 1, 3, 3)) * 0.5, "b": rng.normal(size=4) * 0.1,
        "fc": rng.normal(size=(16, 5)) * 0.3, "fb": rng.normal(size=5) * 0.1}.items()]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1],
                         group=2, dilations=[1, 1], kernel_shape=[3, 3], name="conv"),
        helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[2, 2], strides=[2, 2],
                         name="pool"),
        helper.make_node("LeakyRelu", ["p"], ["r"], alpha=0.1, name="leaky"),
        helper.make_node("Flatten", ["r"], ["f"], axis=1, name="flat"),
        helper.make_node("MatMul", ["f", "fc"], ["m"], name="fc"),
        helper.make_node("Add", ["m", "fb"], ["a"], name="bias"),
        helper.make_node("Softmax", ["a"], ["y"], axis=-1, name="softmax")]
    graph = helper.make_graph(
        nodes, "handmade",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def onnx_files(graphs, tmp_path_factory) -> Files:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from edgekit.converters.to_onnx import to_onnx

    folder = tmp_path_factory.mktemp("onnx")
    return Files({"to_onnx": to_onnx(graphs["float"], folder / "cnn.onnx").read_bytes(),
                  "helper": handmade_onnx().SerializeToString()})


BAD_INTS = [-(2**31), -2, -1, 0, 1, 2, 3, 7, 100, 2**31 - 1, 2**62]
BAD_FLOATS = [float("nan"), float("inf"), -float("inf"), -1.0, 0.0, 1e-45, 1e30, 3.5e38]
OP_TYPES = ["Relu", "Sigmoid", "Conv", "Gemm", "MatMul", "Add", "Mul", "Softmax", "Identity",
            "Flatten", "Reshape", "MaxPool", "AveragePool", "LeakyRelu", "Clip", "Exp", "Log",
            "Sqrt", "Concat", "LSTM", "Loop", "If", "Foo", ""]


def array_of(init) -> np.ndarray:
    """An initializer's values, or none where an earlier mutation already broke it."""
    from onnx import numpy_helper

    try:
        return numpy_helper.to_array(init)
    except Exception:  # onnx raises many types on a broken tensor
        return np.zeros(0, np.float32)


def mutate_onnx(draw, model, folder: Path) -> str:
    """One change to ``model`` (an onnx ModelProto) in place; says what it did."""
    from onnx import TensorProto, helper

    graph = model.graph
    how = draw(st.sampled_from(["attribute", "attribute", "shape", "initializer",
                                "initializer", "op type", "external", "opset"]))
    if how == "attribute":
        node = draw(st.sampled_from([n for n in graph.node if n.attribute] or list(graph.node)))
        if not node.attribute or draw(st.booleans()) and draw(st.booleans()):
            name = draw(st.sampled_from(["group", "axis", "alpha", "auto_pad", "ceil_mode",
                                         "storage_order", "extra"]))
            value = draw(st.sampled_from([*BAD_INTS, *BAD_FLOATS, "SAME_UPPER", "x", [0, 0]]))
            node.attribute.append(helper.make_attribute(name, value))
            return f"attribute {node.name}: added {name}={value}"
        attr = draw(st.sampled_from(list(node.attribute)))
        old = helper.get_attribute_value(attr)
        change = draw(st.sampled_from(["value", "value", "drop", "retype"]))
        if change == "drop":
            node.attribute.remove(attr)
            return f"attribute {node.name}.{attr.name} dropped"
        if change == "retype":
            new = draw(st.sampled_from([1.5, 2, "2", [2.0, 2.0]]))
        elif isinstance(old, list) and old:
            new = list(old)
            new[draw(st.integers(0, len(new) - 1))] = draw(st.sampled_from(BAD_INTS))
            new = draw(st.sampled_from([new, new[:-1], [*new, 1]]))
        elif isinstance(old, float):
            new = draw(st.sampled_from(BAD_FLOATS))
        elif isinstance(old, bytes):
            new = draw(st.sampled_from(["SAME_LOWER", "VALID", "NOTSET", "BOGUS"]))
        else:
            new = draw(st.sampled_from(BAD_INTS))
        index = list(node.attribute).index(attr)
        node.attribute.remove(attr)
        node.attribute.insert(index, helper.make_attribute(attr.name, new))
        return f"attribute {node.name}.{attr.name}: {old} -> {new}"
    if how == "shape":
        value = draw(st.sampled_from([*graph.input, *graph.output]))
        dims = value.type.tensor_type.shape.dim
        if not dims or draw(st.integers(0, 5)) == 0:
            value.type.tensor_type.ClearField("shape")
            return f"shape of {value.name} removed"
        dim = dims[draw(st.integers(0, len(dims) - 1))]
        new = draw(st.sampled_from([0, -1, 1, 2, 5, 10**9, "N", "elem"]))
        if new == "elem":
            value.type.tensor_type.elem_type = draw(st.sampled_from(
                [TensorProto.DOUBLE, TensorProto.INT8, TensorProto.STRING, 0]))
        elif isinstance(new, str):
            dim.dim_param = new
        else:
            dim.dim_value = new
        return f"shape of {value.name}: a dim -> {new}"
    if how == "initializer":
        init = draw(st.sampled_from(list(graph.initializer)))
        change = draw(st.sampled_from(["dims", "dtype", "values", "nonfinite", "bytes", "drop",
                                       "duplicate"]))
        from onnx import numpy_helper

        array = array_of(init)
        if change == "dims":
            init.dims[:] = draw(st.sampled_from([[*init.dims, 1], list(init.dims)[1:],
                                                 list(reversed(init.dims)), [0], [10**9]]))
        elif change == "dtype":
            init.data_type = draw(st.sampled_from([TensorProto.DOUBLE, TensorProto.INT64,
                                                   TensorProto.INT8, TensorProto.FLOAT16,
                                                   TensorProto.STRING, 0]))
        elif change in ("values", "nonfinite") and array.dtype.kind == "f" and array.size:
            flat = array.reshape(-1).copy()
            flat[draw(st.integers(0, flat.size - 1))] = draw(st.sampled_from(
                [np.nan, np.inf, -np.inf] if change == "nonfinite" else [0.0, -5.0, 1e30]))
            init.CopyFrom(numpy_helper.from_array(flat.reshape(array.shape), init.name))
        elif change == "bytes" and init.raw_data:
            cut = draw(st.integers(0, len(init.raw_data)))
            init.raw_data = init.raw_data[:cut] + draw(st.sampled_from([b"", b"\x00" * 4]))
        elif change == "drop":
            graph.initializer.remove(init)
        elif change == "duplicate":
            graph.initializer.append(numpy_helper.from_array(np.zeros(2, np.float32),
                                                             init.name))
        return f"initializer {init.name}: {change}"
    if how == "op type":
        node = draw(st.sampled_from(list(graph.node)))
        old = node.op_type
        if draw(st.integers(0, 4)) == 0:
            node.domain = draw(st.sampled_from(["com.microsoft", "ai.onnx.ml", "x"]))
            return f"op {node.name}: domain {node.domain}"
        node.op_type = draw(st.sampled_from(OP_TYPES))
        return f"op {node.name}: {old} -> {node.op_type}"
    if how == "external":
        init = draw(st.sampled_from(list(graph.initializer)))
        data = array_of(init).tobytes()
        (folder / "weights.bin").write_bytes(data)
        location = draw(st.sampled_from(["weights.bin", "../weights.bin", "/etc/passwd",
                                         "../../../../etc/hostname", "missing.bin", "",
                                         str(folder / "weights.bin")]))
        offset, length = draw(st.sampled_from([(0, len(data)), (0, len(data) + 4),
                                               (len(data), 4), (2**40, 4), (0, 2**40)]))
        init.ClearField("raw_data")
        init.ClearField("float_data")
        init.data_location = TensorProto.EXTERNAL
        del init.external_data[:]
        for key, value in (("location", location), ("offset", str(offset)),
                           ("length", str(length))):
            entry = init.external_data.add()
            entry.key, entry.value = key, value
        return f"initializer {init.name}: external {location!r} at {offset}+{length}"
    version = draw(st.sampled_from([1, 6, 9, 13, 21, 99]))
    model.opset_import[0].version = version
    return f"opset {version}"


@st.composite
def broken_onnx(draw, files: Files, folder: Path) -> Mutant:
    import onnx

    kind = draw(st.sampled_from(sorted(files)))
    if draw(st.integers(0, 5)) == 0:  # the bytes themselves
        blob = files[kind]
        if draw(st.booleans()):
            return Mutant(kind, ["truncated"], blob[:draw(st.integers(0, len(blob) - 1))])
        return Mutant(kind, ["bytes flipped"], flip_bytes(draw, blob))
    model = onnx.load_from_string(files[kind])
    how = [mutate_onnx(draw, model, folder) for _ in range(draw(st.integers(1, 2)))]
    return Mutant(kind, how, model.SerializeToString())


def onnxruntime_outputs(path: Path, xs: list[np.ndarray]) -> list[np.ndarray] | None:
    """What ONNX Runtime computes for the file, or None where it refuses the file."""
    import onnxruntime as ort

    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3  # its warnings about the broken file are expected
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return session.run(None, {i.name: x for i, x in zip(session.get_inputs(), xs,
                                                            strict=True)})
    except Exception:  # ONNX Runtime's many error types; it refusing is no verdict
        return None


@fuzz(300)
@given(data=st.data())
def test_mutated_onnx_files_import_right_or_refuse(onnx_files, tmp_path, data):
    """``from_onnx`` on a broken file: an EdgekitError (one line, or the unsupported-op list),
    or a Graph whose cpu outputs equal ONNX Runtime's on the same file (where ONNX Runtime
    runs it; a Graph from a file ONNX Runtime refuses must still run finite or refuse)."""
    from edgekit.errors import UnsupportedOpsError

    mutant = data.draw(broken_onnx(onnx_files, tmp_path))
    path = tmp_path / "fuzzed.onnx"
    path.write_bytes(mutant.blob)
    with time_limit(60):
        try:
            graph = edgekit.from_onnx(path)
        except UnsupportedOpsError as err:
            assert str(err).startswith("ONNX model uses"), err
            outcome = "error"
        except EdgekitError as err:
            one_line(err)
            outcome = "error"
        else:
            outcome = runs_right(graph)
            if outcome == "correct":
                xs = sample_inputs(graph)
                expected = onnxruntime_outputs(path, xs)
                if expected is not None:
                    with edgekit.deploy(graph, "cpu") as session:
                        ys = outputs_of(session, xs)
                    for y, z in zip(ys, expected, strict=True):
                        np.testing.assert_allclose(y, z, rtol=1e-4, atol=1e-5,
                                                   err_msg="cpu vs ONNX Runtime")
    assert path.read_bytes() == mutant.blob
    record(f"onnx ({mutant.kind})", outcome)


# ---- CLI arguments ---------------------------------------------------------------------------

def subcommands() -> dict[str, list]:
    """Each subcommand of ``edgekit.cli.build_parser`` with its arguments (argparse actions)."""
    import argparse

    from edgekit.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {name: [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]
            for name, parser in sub.choices.items()}


# value pools per argument (by its dest): (valid values, bad ones); {work} is the folder of
# valid and broken inputs, {out} a fresh folder per example. Numbers stay small where a large
# one only means a long legitimate run (epochs, runs, warmup): those are not bad inputs.
MODELS = (["{work}/float.ekm", "{work}/int8.ekm", "{work}/spiking.ekm", "{work}/cnn.onnx"],
          ["{work}/cut.ekm", "{work}/empty.ekm", "{work}/d.npz", "{work}/missing.ekm",
           "{work}/folder", "{work}/float.ekm/inside.ekm", ""])
DATA = (["{work}/d.npz", "{work}/x.npy"],
        ["{work}/unlabelled.npz", "{work}/badlabels.npz", "{work}/nan.npz",
         "{work}/wrongshape.npz", "{work}/pickle.npy", "{work}/float.ekm", "{work}/missing.npz",
         "{work}/folder", ""])
OUTPUTS = (["{out}/new.ekm", "{out}/new", "{out}/y.npy", "{out}/y.npz", "{out}/r.json",
            "{out}/p.png", "{out}/existing.ekm", "{out}"],
           ["{out}/no/such/folder/x.ekm", "{work}/float.ekm", "{work}/d.npz", "{work}",
            "{work}/float.ekm/x.ekm", "{out}/y.txt", ""])
POOLS = {
    "model": MODELS, "reference": MODELS, "compare": MODELS,
    "input": DATA, "data": DATA, "validate": DATA, "calibration_data": DATA, "labels": DATA,
    "output": OUTPUTS, "out": OUTPUTS, "plot": OUTPUTS, "checkpoint": OUTPUTS,
    "json": OUTPUTS,  # profile --json OUT.json (elsewhere a flag)
    "target": (["cpu", "cpu:onnxruntime", "cpu:tflite-micro", "cpu:litert", "mcu:qemu"],
               ["gpu", "mcu:/dev/null", "cpu:nothing", ""]),
    "profile": (["cortex-m4", "host", "{work}/device.toml"],
                ["nope", "{work}/zero_clock.toml", "{work}/float.ekm", "{work}/missing.toml",
                 ""]),
    "to": (["ekm", "onnx", "tflite", "ekm,onnx", "ekm,tflite,onnx"], ["", ",", "pdf", "EKM"]),
    "balancing": (["max", "p99.9", "trained", "0.5"], ["nan", "-1", "0", "2", "x"]),
    "layers": (["all", "head", "1", "2"], ["0", "-1", "99", "x", ""]),
    "timesteps": (["1", "2", "8"], ["-1", "0", "10001", "1000000000000"]),
    "runs": (["1", "2"], ["-1", "0"]), "warmup": (["0", "1"], ["-1"]),
    "epochs": (["1", "2"], ["-1", "0"]),
    "batch_size": (["1", "7"], ["-1", "0", "1000000000000"]),
    "seed": (["0", "1"], ["-1", "1099511627776", "1180591620717411303424"]),
    "lr": (["0.001", "0.01"], ["nan", "inf", "-1", "0", "1e308", "-inf"]),
    "v_init": (["0", "0.5"], ["nan", "inf", "-1", "1e300", "-1e300"]),
}
NOT_NUMBERS = ["x", "", "1.5", "nan", "0x10"]


def argument_values(draw, action, bad: bool, work: Path, out: Path) -> list[str]:
    """Values for one argument: a valid one, or a bad one from its pool (for a number also a
    non-number; for choices one that is none)."""
    good, wrong = POOLS.get(action.dest, (["x"], [""]))
    if action.choices:
        good, wrong = list(action.choices), ["bogus"]
    elif action.type in (int, float):
        wrong = [*wrong, *NOT_NUMBERS]
    values = [draw(st.sampled_from(wrong if bad else good))]
    if action.nargs == "+" and draw(st.booleans()):
        values.append(draw(st.sampled_from(good)))
    return [v.format(work=work, out=out) for v in values]


WRITES = {"output", "out", "plot", "checkpoint", "json"}  # the dests naming what a command writes
# Commands that serve until they are stopped (tests/test_fleet.py starts and stops them).
SERVE_UNTIL_STOPPED = {("fleet", "serve"), ("fleet", "join")}


class CommandLine(list):
    """argv, and the files it names to read (``inputs``), which it must leave unchanged."""

    inputs: set[str]


@st.composite
def command_lines(draw, work: Path, out: Path) -> CommandLine:
    """One command line: a subcommand, its positionals and a random subset of its options,
    with valid values but for one or two bad ones (or none); now and then an argument the
    command needs is left out."""
    commands = subcommands()
    name = draw(st.sampled_from(sorted(set(commands) - {"demo"})))
    present = []
    for action in commands[name]:
        needed = action.required or not action.option_strings and action.nargs != "?"
        if draw(st.integers(0, 19)) != 0 if needed else draw(st.integers(0, 2)) == 0:
            present.append(action)
    valued = [a for a in present if a.nargs != 0]
    broken = set(draw(st.lists(st.sampled_from(valued), max_size=2)) if valued else [])
    argv = CommandLine([name])
    argv.inputs = set()
    for action in present:
        values = ([] if action.nargs == 0 else
                  argument_values(draw, action, action in broken, work, out))
        argv += [*action.option_strings[-1:], *values]
        if action.dest not in WRITES:
            argv.inputs.update(values)
    assume(tuple(argv[:2]) not in SERVE_UNTIL_STOPPED)
    return argv


def demo_lines(work: Path) -> list[CommandLine]:
    """``demo`` runs for minutes when it can: only outputs it must refuse at once."""
    lines = [CommandLine(["demo", "--out", str(work / "float.ekm")]),
             CommandLine(["demo", "--out", str(work / "float.ekm" / "inside")])]
    for line in lines:
        line.inputs = set()
    return lines


@pytest.fixture(scope="module")
def work(graphs, tmp_path_factory) -> Path:
    """The valid and broken inputs the command lines name (never to be changed by them)."""
    from edgekit.converters.to_onnx import to_onnx

    folder = tmp_path_factory.mktemp("work")
    for kind, graph in graphs.items():
        graph.save(folder / f"{kind}.ekm")
    to_onnx(graphs["float"], folder / "cnn.onnx")
    (folder / "cut.ekm").write_bytes((folder / "float.ekm").read_bytes()[:500])
    (folder / "empty.ekm").write_bytes(b"")
    (folder / "folder").mkdir()
    x = calibration(24)
    y = np.arange(24) % 3
    np.savez(folder / "d.npz", x=x, y=y)
    np.save(folder / "x.npy", x)
    np.savez(folder / "unlabelled.npz", x=x)
    np.savez(folder / "badlabels.npz", x=x, y=y + 5)
    np.savez(folder / "nan.npz", x=np.where(x > 2, np.nan, x), y=y)
    np.savez(folder / "wrongshape.npz", x=x.reshape(24, -1), y=y)
    np.save(folder / "pickle.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    from edgekit import targets

    device = (Path(targets.__file__).parent / "profiles" / "cortex-m4.toml").read_text()
    (folder / "device.toml").write_text(device)
    (folder / "zero_clock.toml").write_text(re.sub(r"(?m)^clock_hz = .*$", "clock_hz = 0",
                                                   device))
    return folder


def snapshot(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def check_outcome(argv: CommandLine, code: int, stderr: str, out: Path, work: Path,
                  before: dict[Path, bytes]) -> str:
    """The property for one command line: exit 0 with the models and arrays it wrote
    readable, or exit 2 with one error line; every file it read unchanged. (Then the inputs
    folder is put back as it was: a command may legitimately replace a file there that it did
    not read, and later examples must see the same inputs.)"""
    after = snapshot(work)
    for path, data in before.items():
        if after.get(path) != data:
            path.write_bytes(data)
    for path in set(after) - set(before):
        path.unlink()
    assert "Traceback" not in stderr, stderr[-3000:]
    assert code in (0, 2), (code, stderr[-3000:])
    changed = [str(p) for p in before if after.get(p) != before[p] and str(p) in argv.inputs]
    assert not changed, f"inputs changed: {changed}"
    if code == 2:
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("edgekit"), stderr[-3000:]
        return "error"
    for path in out.rglob("*"):
        if not path.is_file() or path.name == "existing.ekm":
            continue
        if path.suffix == ".ekm" and argv[0] in ("convert", "finetune"):
            with time_limit(120):
                edgekit.load(path)
        elif path.suffix == ".onnx" and argv[0] == "convert":
            import onnx

            onnx.checker.check_model(onnx.load(str(path)))
        elif path.suffix in (".npy", ".npz") and argv[0] == "run":
            np.load(path, allow_pickle=False)
    return "correct"


def fresh_out(tmp_path: Path) -> Path:
    import shutil

    out = tmp_path / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    (out / "existing.ekm").write_bytes(b"an existing file")
    return out


@fuzz(300)
@given(data=st.data())
def test_command_lines_in_process(work, tmp_path, data):
    """Many command lines through ``edgekit.cli.main`` in this process."""
    from edgekit.cli import main

    out = fresh_out(tmp_path)
    argv = data.draw(command_lines(work, out) | st.sampled_from(demo_lines(work)))
    before = snapshot(work)
    stdout, stderr = io.StringIO(), io.StringIO()
    with time_limit(120), contextlib.chdir(tmp_path), contextlib.redirect_stdout(stdout), \
            contextlib.redirect_stderr(stderr):
        try:
            code = main(argv)
        except SystemExit as exit:  # argparse's own refusals
            code = exit.code
    record("cli (in process)", check_outcome(argv, code, stderr.getvalue(), out, work, before))


@pytest.mark.slow
@fuzz(40)
@given(data=st.data())
def test_command_lines_as_the_console_script(work, tmp_path, data):
    """Fewer command lines as a real process (``python -m edgekit.cli``): a crash (a signal)
    or a hang (past the timeout) shows only here."""
    import os
    import subprocess
    import sys

    out = fresh_out(tmp_path)
    argv = data.draw(command_lines(work, out))
    before = snapshot(work)
    proc = subprocess.run([sys.executable, "-m", "edgekit.cli", *argv], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode >= 0, f"killed by signal {-proc.returncode}: {proc.stderr[-3000:]}"
    record("cli (console script)",
           check_outcome(argv, proc.returncode, proc.stderr, out, work, before))


# ---- concurrent writers and kills during writes ----------------------------------------------

@pytest.mark.slow
@fuzz(8)
@given(savers=st.integers(2, 3), victim=st.integers(0, 2),
       kill_after=st.floats(0.0, 1.5), saves=st.integers(5, 40))
def test_writers_killed_at_random_moments_leave_a_whole_model(tmp_path, savers, victim,
                                                              kill_after, saves):
    """A lighter repeat of test_reliability_writes' property under random timing: several
    processes save their own model to one path while one more loads it, and one saver is
    killed (SIGKILL) at a random moment. Every load sees a whole model, the file ends as one
    of the savers' models, and the next save leaves no temporary behind."""
    import os
    import subprocess
    import sys
    import time

    from test_reliability_writes import WORKER, leftovers, mlp, same_model

    folder = tmp_path / f"run{time.monotonic_ns()}"  # tmp_path is shared by the examples
    folder.mkdir()
    models = [mlp(seed, hidden=256) for seed in range(savers)]
    for i, graph in enumerate(models):
        graph.save(folder / f"src{i}.ekm")
    dst, sync = folder / "out" / "m.ekm", folder / "sync"
    dst.parent.mkdir()
    sync.mkdir()
    models[0].save(dst)
    roles = [("save", folder / f"src{i}.ekm", saves) for i in range(savers)]
    roles.append(("load", dst, 3 * saves))
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, role, str(src), str(dst),
                               str(sync / f"{i}.ready"), str(n), str(len(roles))],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for i, (role, src, n) in enumerate(roles)]
    killed = procs[victim % savers]
    try:
        deadline = time.monotonic() + 120
        while len(list(sync.glob("*.ready"))) < len(roles) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(kill_after)
        killed.kill()
        results = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, results, strict=True):
        if p is not killed:
            assert p.returncode == 0, err[-3000:]
    assert results[-1][0].strip() == "0", f"loads saw a broken file: {results[-1][1][-3000:]}"
    assert any(same_model(edgekit.load(dst), g) for g in models)
    models[0].save(dst)  # removes what the killed writer left
    assert leftovers(dst.parent, "m.ekm") == []
    record("writers killed at random", "correct")


# ---- a corrupting serial link to the emulated board ------------------------------------------

@pytest.fixture(scope="module")
def board_link():
    """test_mcu's tiny int8 model on the emulated board, reached through one
    ``test_mcu.FaultyProxy`` that each example sets its own faults on (QEMU takes one client
    at a time), and the model on the cpu target, whose results the board must reproduce."""
    from edgekit.firmware_bridge.board import QemuBoard, qemu_missing
    from edgekit.firmware_bridge.build import toolchain_missing

    missing = toolchain_missing() or qemu_missing()
    if missing:
        pytest.skip(f"MCU target unavailable: {missing}")
    import time

    import serial
    from test_mcu import FaultyProxy, tiny_graph

    from edgekit.converters.to_c import generate
    from edgekit.firmware_bridge.build import build
    from edgekit.firmware_bridge.link import Link
    from edgekit.firmware_bridge.protocol import Cmd

    graph = tiny_graph()
    board = QemuBoard(build(*generate(graph)).elf)
    proxy = link = None
    try:
        start = time.monotonic()
        for _ in range(10):
            board.link.request(Cmd.INFER, bytes(8))
        round_trip = (time.monotonic() - start) / 10  # timeouts scale with this machine
        port = int(board.link.port.portstr.rsplit(":", 1)[1])
        board.link.close()  # QEMU's socket server takes the proxy as its next client
        board.link = None
        proxy = FaultyProxy(port, rate=0.0)
        link = Link(serial.serial_for_url(f"socket://127.0.0.1:{proxy.port}", timeout=0.05),
                    timeout=max(0.25, 10 * round_trip), retries=10)
        with edgekit.deploy(graph, "cpu") as cpu:
            yield cpu, link, proxy, board.hello.steps
    finally:
        for part in (link, proxy):
            if part is not None:
                part.close()
        board.stop()


@pytest.mark.slow
@fuzz(10)
@given(rate=st.sampled_from([0.0, 0.002, 0.01, 0.02]), seed=st.integers(0, 2**32 - 1),
       reset_at=st.sampled_from([None, 0, 5, 13]),
       inputs=st.lists(st.binary(min_size=8, max_size=8), min_size=20, max_size=20))
def test_a_corrupting_link_gives_right_results_or_errors(board_link, rate, seed, reset_at,
                                                         inputs):
    """Every INFER through the proxy (bytes dropped, flipped and duplicated at ``rate``,
    chunks delayed, a RESET slipped in at request ``reset_at``): the reply is the cpu target's
    result bit for bit, or an EdgekitError once the link's retries are spent."""
    import random

    from edgekit.firmware_bridge.protocol import Cmd, parse_infer

    cpu, link, proxy, steps = board_link
    proxy.rate, proxy.rng = rate, random.Random(seed)
    xq = np.frombuffer(b"".join(inputs), np.int8).reshape(len(inputs), 8)
    expected = cpu.run(xq, raw=True)
    for i, x in enumerate(xq):
        proxy.reset_next = i == reset_at
        with time_limit(60):
            try:
                reply = link.request(Cmd.INFER, x.tobytes())
            except EdgekitError as err:
                one_line(err)
                record("board link (requests)", "error")
                continue
        out = np.frombuffer(parse_infer(reply, steps)[2], np.int8)
        np.testing.assert_array_equal(out, expected[i], err_msg=f"request {i}: {proxy.counts}")
        record("board link (requests)", "correct")


# ---- what the fuzzers found, each as its smallest reproduction --------------------------------

def refused_by_main(capsys, argv: list, *words: str) -> str:
    """``edgekit.cli.main`` exits 2 (argparse's refusals raise SystemExit) with one line."""
    from edgekit.cli import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit:
        code = exit.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("edgekit"), (code, err)
    for word in words:
        assert word in err, err
    return err


@pytest.mark.parametrize("argv, words", [
    (["run", "--json"], ["required: model, --input"]),
    (["profile", "m.ekm", "--runs", "x"], ["--runs: invalid int value: 'x'"]),
    (["finetune", "m.ekm", "--data", "d.npz", "--out", "o.ekm", "--rule", "sgd"],
     ["--rule: invalid choice"]),
    (["bogus"], ["invalid choice: 'bogus'"]),
])
def test_argparse_refusals_are_one_line(capsys, argv, words):
    """argparse printed its usage block before the error: several lines."""
    refused_by_main(capsys, argv, *words, "--help")


def test_an_empty_argument_is_refused_not_read_as_the_current_folder(work, tmp_path, capsys):
    """``convert m.ekm --to ekm,onnx -o ""`` wrote m.ekm and m.onnx into the current folder."""
    with contextlib.chdir(tmp_path):
        refused_by_main(capsys, ["convert", work / "float.ekm", "--to", "ekm,onnx", "-o", ""],
                        "argument output: empty")
        refused_by_main(capsys, ["run", "", "--input", work / "x.npy"], "argument model: empty")
    assert list(tmp_path.iterdir()) == []


def test_report_without_quantize_is_refused_for_a_single_ekm(work, tmp_path, capsys):
    """``convert m.ekm -o out.ekm --report`` ignored --report and exited 0."""
    refused_by_main(capsys, ["convert", work / "float.ekm", "-o", tmp_path / "o.ekm",
                             "--report"], "--report", "--quantize int8")
    assert not (tmp_path / "o.ekm").exists()


def test_a_negative_seed_is_one_error(graphs, work, tmp_path, capsys):
    """``finetune --seed -1`` ended in numpy's ValueError traceback."""
    with pytest.raises(EdgekitError, match="seed must be an int >= 0"):
        edgekit.finetune(graphs["float"], calibration(8), np.arange(8) % 3, epochs=1, seed=-1)
    refused_by_main(capsys, ["finetune", work / "float.ekm", "--data", work / "d.npz",
                             "--out", tmp_path / "t.ekm", "--seed", "-1"], "seed")


def test_an_snn_of_more_time_steps_than_load_reads_is_refused(work, tmp_path, capsys):
    """``convert --to-snn --timesteps 100000000000`` wrote a model that load refuses."""
    from edgekit.converters.snn import to_snn

    with pytest.raises(EdgekitError, match="max_timesteps"):
        to_snn(small_cnn(), calibration(8), 10_001)
    refused_by_main(capsys, ["convert", work / "float.ekm", "--to-snn", "--calibration-data",
                             work / "d.npz", "--timesteps", 10**11, "-o", tmp_path / "s.ekm"],
                    "max_timesteps")
    assert not (tmp_path / "s.ekm").exists()
    assert to_snn(small_cnn(), calibration(8), 10_000).metadata["timesteps"] == 10_000


def with_param(graph: edgekit.Graph, name: str, value: np.ndarray) -> edgekit.Graph:
    import dataclasses

    return dataclasses.replace(graph, params={**graph.params, name: value})


@pytest.mark.parametrize("kind, target", [("float", "cpu"), ("float", "cpu:onnxruntime"),
                                          ("spiking", "cpu")])
def test_outputs_that_overflow_float32_are_refused(graphs, kind, target):
    """A file whose weights are float32's largest value loaded and ran to NaN/inf outputs
    from finite inputs, which argmax and accuracies read as answers."""
    graph = graphs[kind]
    huge = with_param(graph, "fc2.w", np.full_like(graph.params["fc2.w"],
                                                   np.finfo(np.float32).max))
    x = calibration(4)
    with edgekit.deploy(huge, target) as session:
        with pytest.raises(EdgekitError, match="output 'fc2' holds .* NaN or inf"):
            session.run(x)
        assert not np.isfinite(session.run(x, allow_nonfinite=True)).all()
    with edgekit.deploy(graph, target) as session:
        assert np.isfinite(session.run(x)).all()


def test_an_int8_bias_that_overflows_the_accumulator_is_refused(graphs, tmp_path):
    """An int32 bias at 2^31 - 1 loaded, and cpu and tflite-micro gave different outputs."""
    graph = graphs["int8"]
    bias = np.full_like(graph.params["fc1.b"], np.iinfo(np.int32).max)
    path = tmp_path / "bias.ekm"  # written by hand: Graph.save validates, and refuses it
    members = dict(zip_members(graph.save(tmp_path / "ok.ekm").read_bytes()))
    doc = json.loads(members["graph.json"])
    with np.load(io.BytesIO(members["params.npz"])) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays[f"p{doc['params'].index('fc1.b')}"] = bias
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(zip_of([("graph.json", members["graph.json"]),
                             ("params.npz", buf.getvalue())]))
    with pytest.raises(EdgekitError, match=r"bias 'fc1.b' .* int32 accumulator .* past 2\^31"):
        edgekit.load(path)
    assert edgekit.load(tmp_path / "ok.ekm").params["fc1.b"].dtype == np.int32


def test_a_pool_stride_of_one_number_is_refused(graphs, tmp_path):
    """``"stride": [2]`` on avgpool2d ended in an IndexError from shape inference."""
    members = dict(zip_members(graphs["float"].save(tmp_path / "ok.ekm").read_bytes()))
    doc = json.loads(members["graph.json"])
    next(n for n in doc["nodes"] if n["op"] == "avgpool2d")["attrs"]["stride"] = [2]
    path = tmp_path / "pool.ekm"
    path.write_bytes(zip_of([("graph.json", json.dumps(doc).encode()),
                             ("params.npz", members["params.npz"])]))
    with pytest.raises(EdgekitError, match=r"attribute 'stride' must be \[h, w\], got \[2\]"):
        edgekit.load(path)


def onnx_refused(model, tmp_path: Path, *words: str) -> str:
    import onnx

    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    with pytest.raises(EdgekitError) as info:
        edgekit.from_onnx(path)
    message = str(info.value)
    assert "\n" not in message, message
    for word in words:
        assert word in message, message
    return message


def handmade_node(model, op_type: str):
    return next(n for n in model.graph.node if n.op_type == op_type)


def set_attribute(node, name: str, value) -> None:
    from onnx import helper

    for attr in list(node.attribute):
        if attr.name == name:
            node.attribute.remove(attr)
    if value is not None:
        node.attribute.append(helper.make_attribute(name, value))


def test_onnx_axes_out_of_range_are_refused_not_wrapped(tmp_path):
    """Softmax(axis=5) on a rank-2 tensor imported as axis 5 % 2 = 1."""
    pytest.importorskip("onnx")
    model = handmade_onnx()
    set_attribute(handmade_node(model, "Softmax"), "axis", 5)
    onnx_refused(model, tmp_path, "axis=5 is out of range for rank 2")


def test_onnx_initializer_bytes_that_do_not_fill_its_shape(tmp_path):
    """The checker passes an initializer of 4 floats' bytes declared of shape (2,) (too many
    bytes, unlike too few): numpy's reshape error came out as a traceback."""
    pytest.importorskip("onnx")
    model = handmade_onnx()
    init = next(i for i in model.graph.initializer if i.name == "b")
    init.dims[:] = [2]
    onnx_refused(model, tmp_path, "initializer 'b' is malformed")


def test_onnx_clip_bounds_of_several_numbers(tmp_path):
    """Clip with a two-element max: float() of the array was a TypeError traceback."""
    pytest.importorskip("onnx")
    from onnx import numpy_helper

    model = handmade_onnx()
    node = handmade_node(model, "LeakyRelu")
    node.op_type = "Clip"
    set_attribute(node, "alpha", None)
    node.input.extend(["lo", "hi"])
    model.graph.initializer.extend([
        numpy_helper.from_array(np.zeros(1, np.float32), "lo"),
        numpy_helper.from_array(np.array([6, 6], np.float32), "hi")])
    onnx_refused(model, tmp_path, "Clip bound of shape [2] is not one number")


def test_onnx_pool_after_flatten_and_pads_with_auto_pad(tmp_path):
    """MaxPool on a flattened (2-D) tensor ended in zip()'s ValueError; pads and auto_pad
    together (which ONNX forbids) imported with auto_pad silently winning."""
    pytest.importorskip("onnx")
    model = handmade_onnx()
    flat, pool = handmade_node(model, "Flatten"), handmade_node(model, "MaxPool")
    flat.op_type, pool.op_type = "MaxPool", "Flatten"
    for node, attrs in ((flat, {"kernel_shape": [2, 2], "strides": [2, 2]}),
                        (pool, {"axis": 1})):
        del node.attribute[:]
        for name, value in attrs.items():
            set_attribute(node, name, value)
    import onnx

    from edgekit.errors import UnsupportedOpsError

    onnx.save(model, str(tmp_path / "m.onnx"))
    with pytest.raises(UnsupportedOpsError, match="MaxPool over 0-D input"):
        edgekit.from_onnx(tmp_path / "m.onnx")
    model = handmade_onnx()
    set_attribute(handmade_node(model, "Conv"), "auto_pad", "SAME_UPPER")
    onnx_refused(model, tmp_path, "auto_pad=SAME_UPPER and explicit pads")


def test_onnx_reshape_to_a_float_or_2d_shape(tmp_path, graphs):
    """Reshape's shape as floats (NaN) or 2-D: int() of them was a traceback."""
    pytest.importorskip("onnx")
    import onnx
    from onnx import numpy_helper

    from edgekit.converters.to_onnx import to_onnx

    for bad in (np.array([np.nan, 36], np.float32), np.array([[1, 36]], np.int64)):
        model = onnx.load(str(to_onnx(graphs["float"], tmp_path / "cnn.onnx")))
        reshape = handmade_node(model, "Reshape")
        init = next(i for i in model.graph.initializer if i.name == reshape.input[1])
        init.CopyFrom(numpy_helper.from_array(bad, init.name))
        onnx_refused(model, tmp_path, "Reshape's shape must be a 1-D int tensor")


def test_onnx_opset_newer_than_onnx_knows_is_refused(tmp_path):
    pytest.importorskip("onnx")
    model = handmade_onnx()
    model.opset_import[0].version = 99
    onnx_refused(model, tmp_path, "opset 99 is newer than")


def test_an_onnx_node_name_that_is_not_utf8_imports(tmp_path):
    """protobuf hands an invalid UTF-8 name over as bytes: re.sub on it was a TypeError."""
    pytest.importorskip("onnx")
    model = handmade_onnx()
    blob = model.SerializeToString().replace(b"\x1a\x07softmax", b"\x1a\x07softm\xffx")
    path = tmp_path / "m.onnx"
    path.write_bytes(blob)
    graph = edgekit.from_onnx(path)
    assert graph.nodes[-1].op == "softmax"
