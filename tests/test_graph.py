"""The Graph and its .ekm file: round trips are exact, and every corruption is an EdgekitError."""

import io
import json
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edgekit
from edgekit import EdgekitError
from edgekit.converters.builder import GraphBuilder
from edgekit.graph import Graph


def small_graph(seed: int = 0) -> Graph:
    """conv+BN+relu, depthwise conv, residual add, pool, concat, reshape, linear, softmax."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder({"source": "test"})
    x = b.input("x", (1, 2, 8, 8))
    y = b.node("conv2d", [x, b.param(rng.normal(size=(4, 2, 3, 3)), "c1.w")],
               {"padding": [1, 1, 1, 1]}, name="c1")
    y = b.batchnorm(y, rng.normal(size=4), rng.uniform(0.5, 2, 4), rng.normal(size=4),
                    rng.normal(size=4), 1e-5, "bn1")
    y = b.node("relu", [y], name="act1")
    z = b.node("conv2d", [y, b.param(rng.normal(size=(4, 1, 3, 3)), "dw.w")],
               {"padding": [1, 1, 1, 1], "groups": 4}, name="dw")
    y = b.node("add", [y, z], name="res")
    y = b.node("maxpool2d", [y], {"kernel": [2, 2], "stride": [2, 2]}, name="pool")
    y = b.node("concat", [y, y], {"axis": 1}, name="cat")
    y = b.node("reshape", [y], {"shape": [128]}, name="flat")
    y = b.node("linear", [y, b.param(rng.normal(size=(10, 128)), "fc.w"),
                          b.param(rng.normal(size=10), "fc.b")], name="fc")
    b.output(b.node("softmax", [y], name="prob"))
    return b.build()


def test_builder_folds_batchnorm_and_fuses_relu():
    g = small_graph()
    assert [n.op for n in g.nodes] == ["conv2d", "conv2d", "add", "maxpool2d", "concat",
                                       "reshape", "linear", "softmax"]
    assert g.nodes[0].attrs["activation"] == "relu"
    assert len(g.nodes[0].inputs) == 3  # folded BN gave the bias-less conv a bias


def test_batchnorm_fold_is_exact():
    """conv then BN equals the folded conv, checked with the numpy reference on one pixel."""
    rng = np.random.default_rng(1)
    w = rng.normal(size=(3, 2, 1, 1))
    mean, var, gamma, beta = (rng.normal(size=3), rng.uniform(0.5, 2, 3),
                              rng.normal(size=3), rng.normal(size=3))
    b = GraphBuilder()
    x = b.input("x", (1, 2, 1, 1))
    y = b.node("conv2d", [x, b.param(w, "w")])
    b.output(b.batchnorm(y, mean, var, gamma, beta, 1e-5, "bn"))
    g = b.build()
    assert [n.op for n in g.nodes] == ["conv2d"]
    v = rng.normal(size=2)
    expected = (w[:, :, 0, 0] @ v - mean) / np.sqrt(var + 1e-5) * gamma + beta
    got = g.params[g.nodes[0].inputs[1]][:, :, 0, 0] @ v + g.params[g.nodes[0].inputs[2]]
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_save_load_round_trip_is_identical(tmp_path):
    g = small_graph()
    g.save(tmp_path / "m.ekm")
    h = edgekit.load(tmp_path / "m.ekm")
    assert (h.inputs, h.outputs, h.metadata) == (g.inputs, g.outputs, g.metadata)
    assert h.tensors == g.tensors and h.nodes == g.nodes
    assert h.params.keys() == g.params.keys()
    for k in g.params:
        assert h.params[k].dtype == g.params[k].dtype
        np.testing.assert_array_equal(h.params[k], g.params[k])


def test_unknown_op_lists_the_op_set():
    b = GraphBuilder()
    x = b.input("x", (1, 4))
    with pytest.raises(EdgekitError, match="op set is: .*conv2d"):
        b.node("mish", [x])


def test_shape_mismatch_is_an_error():
    b = GraphBuilder()
    x = b.input("x", (1, 4))
    with pytest.raises(EdgekitError, match="does not match"):
        b.node("linear", [x, b.param(np.zeros((3, 5)), "w")])


# ---- corrupted files -------------------------------------------------------------------------

class _Blob(bytes):
    """The saved model's bytes, shown by name in failure reports instead of in full."""

    def __repr__(self) -> str:
        return f"<.ekm file, {len(self)} bytes>"


@pytest.fixture(scope="module")
def ekm_bytes(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("ekm") / "m.ekm"
    small_graph().save(path)
    return _Blob(path.read_bytes())


def _parts(blob: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        doc = json.loads(zf.read("graph.json"))
        with np.load(io.BytesIO(zf.read("params.npz"))) as npz:
            arrays = {k: npz[k] for k in npz.files}
    return doc, arrays


def _pack(doc, arrays: dict[str, np.ndarray], json_text: str | None = None) -> bytes:
    buf, npz = io.BytesIO(), io.BytesIO()
    np.savez(npz, **arrays)
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("graph.json", json_text if json_text is not None else json.dumps(doc))
        zf.writestr("params.npz", npz.getvalue())
    return buf.getvalue()


def _load_bytes(tmp_path, blob: bytes):
    path = tmp_path / "corrupt.ekm"
    path.write_bytes(blob)
    return edgekit.load(path)


def _loads_or_clear_error(tmp_path, blob: bytes) -> None:
    """A corruption either still describes a Graph the runtime can run, or raises EdgekitError."""
    try:
        graph = _load_bytes(tmp_path, blob)
        x = np.zeros(graph.tensors[graph.inputs[0]].shape, np.float32)
        if len(graph.inputs) == 1:
            assert np.all(np.isfinite(edgekit.runtime.execute(graph, x)))
    except EdgekitError as err:
        assert str(err)


FUZZ = settings(max_examples=60, deadline=2000,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(cut=st.floats(0, 0.999))
def test_truncated_file(tmp_path, ekm_bytes, cut):
    with pytest.raises(EdgekitError):
        _load_bytes(tmp_path, ekm_bytes[: int(len(ekm_bytes) * cut)])


@FUZZ
@given(flips=st.lists(st.tuples(st.floats(0, 0.999), st.integers(1, 255)), min_size=1,
                      max_size=8))
def test_flipped_bytes(tmp_path, ekm_bytes, flips):
    blob = bytearray(ekm_bytes)
    for where, xor in flips:
        blob[int(where * len(blob))] ^= xor
    _loads_or_clear_error(tmp_path, bytes(blob))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10**12) | st.floats(allow_nan=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                 max_size=4),
    max_leaves=8)


def _paths(doc, prefix=()):
    yield prefix
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) \
        else ()
    for key, value in items:
        yield from _paths(value, (*prefix, key))


@FUZZ
@given(data=st.data())
def test_mutated_json_field(tmp_path, ekm_bytes, data):
    """Replace any one field of graph.json (version, shapes, dtypes, attrs...) by any JSON."""
    doc, arrays = _parts(ekm_bytes)
    path = data.draw(st.sampled_from(list(_paths(doc))[1:]))
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = data.draw(json_values)
    _loads_or_clear_error(tmp_path, _pack(doc, arrays))


@pytest.mark.parametrize("corrupt, message", [
    (lambda d, a: d.update(version=99), "version 99"),
    (lambda d, a: d["tensors"]["c1.w"].update(shape=[4, 2, 3, -3]), "invalid shape"),
    (lambda d, a: d["tensors"]["fc.w"].update(shape=[10, 127]), "shape"),
    (lambda d, a: a.pop("p0"), "params.npz holds"),
    (lambda d, a: a.update(p0=a["p0"].astype(np.float64)), "float64"),
    (lambda d, a: d["tensors"]["x"].update(dtype="complex64"), "dtype"),
    (lambda d, a: d["nodes"][0].update(op="mish"), "unknown op 'mish'"),
    (lambda d, a: d["nodes"].reverse(), "not defined before"),
    (lambda d, a: d["nodes"][0]["attrs"].update(stride=[0, 1]), "stride"),
])
def test_specific_corruptions_name_the_problem(tmp_path, ekm_bytes, corrupt, message):
    doc, arrays = _parts(ekm_bytes)
    corrupt(doc, arrays)
    with pytest.raises(EdgekitError, match=message):
        _load_bytes(tmp_path, _pack(doc, arrays))


def test_not_json_and_not_zip(tmp_path, ekm_bytes):
    doc, arrays = _parts(ekm_bytes)
    with pytest.raises(EdgekitError, match="malformed"):
        _load_bytes(tmp_path, _pack(doc, arrays, json_text="{not json"))
    with pytest.raises(EdgekitError, match="malformed"):
        _load_bytes(tmp_path, b"PK\x03\x04 definitely not a zip")
    with pytest.raises(EdgekitError, match="no such file"):
        edgekit.load(tmp_path / "missing.ekm")


def test_pickled_params_are_refused(tmp_path, ekm_bytes):
    doc, arrays = _parts(ekm_bytes)
    arrays["p0"] = np.array([{"evil": 1}], dtype=object)
    with pytest.raises(EdgekitError):
        _load_bytes(tmp_path, _pack(doc, arrays))
