"""Weight formats below int8 (``numerics.formats``, ``quant.lowbit``, ``runtime.lowbit``): FP8
codes against ``ml_dtypes``, packing, the quantizers, and low-bit Graphs run by the runtime's
packed kernels against the numpy reference of the float Graph they stand for."""

import numpy as np
import pytest

import edgekit
from edgekit.errors import EdgekitError
from edgekit.graph import Graph, Node, QuantParams, TensorInfo
from edgekit.numerics import formats
from edgekit.quant.lowbit import dequantized
from edgekit.runtime.executor import Executor
from edgekit.runtime.reference import evaluate

ml_dtypes = pytest.importorskip("ml_dtypes")
ML = {"fp8_e4m3": ml_dtypes.float8_e4m3fn, "fp8_e5m2": ml_dtypes.float8_e5m2}
SCHEMES = [("int4", {}), ("int4", {"group_size": 9}), ("int4", {"rex": 2}), ("ternary", {}),
           ("fp8_e4m3", {}), ("fp8_e5m2", {}), ("fp16", {})]


def same_codes(a: np.ndarray, b: np.ndarray, fmt: formats.Fp8) -> bool:
    """Equal codes, any NaN code counting as NaN (ml_dtypes keeps a NaN's sign bit)."""
    nan = np.isnan(formats.decode_fp8(a, fmt)) & np.isnan(formats.decode_fp8(b, fmt))
    return bool(((a == b) | nan).all())


@pytest.mark.parametrize("name", ML)
def test_fp8_decodes_all_256_codes_as_ml_dtypes(name):
    codes = np.arange(256, dtype=np.uint8)
    ours, theirs = formats.decode_fp8(codes, formats.FP8[name]), codes.view(ML[name])
    assert np.array_equal(ours.view(np.uint32), theirs.astype(np.float32).view(np.uint32))
    assert formats.FP8[name].max == float(ml_dtypes.finfo(ML[name]).max)


@pytest.mark.parametrize("name", ML)
def test_fp8_encodes_as_ml_dtypes(name):
    """Every code's value, every midpoint between neighbours (ties to even), values past the
    largest (E4M3 to NaN, E5M2 to infinity), subnormals, signed zeros, infinities, NaN, and
    random float32 and float64 values over 14 decades."""
    fmt, rng = formats.FP8[name], np.random.default_rng(0)
    values = formats.decode_fp8(np.arange(256, dtype=np.uint8), fmt).astype(np.float64)
    finite = np.unique(np.abs(values[np.isfinite(values)]))
    mids = (finite[1:] + finite[:-1]) / 2
    step = finite[-1] - finite[-2]
    edges = finite[-1] + step * np.array([0.25, 0.5, 0.75, 1, 3])
    x = np.concatenate([values, mids, edges, [np.inf, np.nan, 0.0, 2.0**-30]])
    x = np.concatenate([x, -x, rng.standard_normal(20000) * 10.0 ** rng.integers(-8, 6, 20000)])
    for data in (x, x.astype(np.float32)):
        assert same_codes(formats.encode_fp8(data, fmt), data.astype(ML[name]).view(np.uint8),
                          fmt)


@pytest.mark.parametrize("name", ML)
def test_fp8_saturation_clips_finite_overflow_to_the_largest_value(name):
    fmt = formats.FP8[name]
    x = np.array([fmt.max * 1.5, -fmt.max * 7, 1e30, np.inf, -np.inf, np.nan, 1.0])
    got = formats.decode_fp8(formats.encode_fp8(x, fmt, saturate=True), fmt)
    inf = np.inf if fmt.ieee else fmt.max  # ONNX: E5M2 keeps infinities, E4M3 saturates them
    assert np.array_equal(got, [fmt.max, -fmt.max, fmt.max, inf, -inf, np.nan, 1.0],
                          equal_nan=True)


@pytest.mark.parametrize("fmt,lo,hi", [("int4", -8, 7), ("ternary", -1, 1)])
def test_packing_round_trips_every_code(fmt, lo, hi):
    rng = np.random.default_rng(1)
    for row in (1, 2, 5, 7, 13):
        codes = rng.integers(lo, hi + 1, (3, row))
        packed = formats.pack(codes, fmt)
        assert packed.shape == (3, -(-row // formats.FORMATS[fmt].per_byte))
        assert np.array_equal(formats.unpack(packed, fmt, row), codes)


def test_quantizers_follow_their_definitions():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((4, 18)).astype(np.float32)
    storage, scales = formats.quantize_weight(w, "int4", group_size=6)
    assert scales.shape == (1, 4, 3) and storage.shape == (1, 4, 9)  # 18 int4 in 9 bytes
    assert np.allclose(scales[0], np.abs(w.reshape(4, 3, 6)).max(-1) / 7)
    err = np.abs(formats.dequantize(storage, scales, "int4", w.shape) - w).reshape(4, 3, 6)
    assert (err <= scales[0][..., None] / 2 + 1e-6).all()
    storage, scales = formats.quantize_weight(w, "ternary", per_channel=False)
    gamma = np.abs(w).mean()
    assert np.allclose(scales, gamma) and storage.shape == (1, 4, 4)  # 18 digits in 4 bytes
    expect = np.clip(np.rint(w / (gamma + formats.TERNARY_EPS)), -1, 1) * scales[0, 0, 0]
    assert np.allclose(formats.dequantize(storage, scales, "ternary", w.shape), expect)
    errors = [np.abs(formats.dequantize(*formats.quantize_weight(w, "int4", orders=k), "int4",
                                        w.shape) - w).max() for k in (1, 2, 3)]
    assert errors[0] > 4 * errors[1] > 16 * errors[2]  # REx: each order a factor ~7 finer


def small_graph(rng) -> Graph:
    """conv (general, then grouped and strided, then depthwise), conv1d-free linear head."""
    shapes = {"w1": (8, 3, 3, 3), "w2": (8, 4, 3, 3), "w3": (8, 1, 3, 3), "w4": (5, 72)}
    params = {k: rng.standard_normal(s).astype(np.float32) * 0.3 for k, s in shapes.items()}
    params.update(b1=rng.standard_normal(8).astype(np.float32), b4=np.zeros(5, np.float32))
    t = {k: TensorInfo(v.shape) for k, v in params.items()}
    t.update(x=TensorInfo((1, 3, 7, 7)), a=TensorInfo((1, 8, 7, 7)), b=TensorInfo((1, 8, 3, 3)),
             c=TensorInfo((1, 8, 3, 3)), d=TensorInfo((1, 72)), y=TensorInfo((1, 5)))
    nodes = [Node("conv2d", ["x", "w1", "b1"], ["a"], {"padding": [1, 1, 1, 1],
                                                       "activation": "relu"}),
             Node("conv2d", ["a", "w2"], ["b"], {"groups": 2, "stride": [2, 2]}),
             Node("conv2d", ["b", "w3"], ["c"], {"groups": 8, "padding": [1, 1, 1, 1]}),
             Node("reshape", ["c"], ["d"], {"shape": [72]}),
             Node("linear", ["d", "w4", "b4"], ["y"])]
    return Graph(["x"], ["y"], t, nodes, params).validate()


@pytest.mark.parametrize("scheme,options", SCHEMES)
def test_low_bit_graph_runs_packed_as_the_float_graph_it_stands_for(scheme, options, tmp_path):
    rng = np.random.default_rng(3)
    g, x = small_graph(rng), rng.standard_normal((3, 3, 7, 7)).astype(np.float32)
    q = edgekit.quantize(g, x, scheme=scheme, **options)
    fmt, orders = formats.weight_dtype(q.tensors["w1"].dtype)
    assert q.metadata["quantized"] == scheme and orders == options.get("rex", 1)
    assert q.tensors["b1"].dtype == "float32" and q.params["w1"].dtype == formats.FORMATS[
        fmt].storage
    want = evaluate(dequantized(q), {"x": x})["y"]
    assert np.allclose(Executor(q).run(x), want, rtol=1e-5, atol=1e-5)
    back = edgekit.load(q.save(tmp_path / "q.ekm"))
    assert all(np.array_equal(back.params[k], v) and back.params[k].dtype == v.dtype
               for k, v in q.params.items())
    assert back.tensors["w1"].quant == q.tensors["w1"].quant


def test_packed_sizes_shrink_by_the_packing_factor():
    g = small_graph(np.random.default_rng(4))
    x = np.zeros((1, 3, 7, 7), np.float32)
    weights = ["w1", "w2", "w3", "w4"]
    fp32 = sum(g.tensors[w].nbytes for w in weights)
    for scheme, factor in (("fp16", 2), ("fp8_e4m3", 4), ("int4", 8), ("ternary", 20)):
        q = edgekit.quantize(g, x, scheme=scheme)
        packed = sum(q.params[w].nbytes for w in weights)
        assert packed == sum(q.tensors[w].nbytes for w in weights)
        assert fp32 / factor <= packed < fp32 / factor * 1.25, scheme  # rows pad to whole bytes


def test_bad_options_and_files_are_refused():
    rng = np.random.default_rng(5)
    g, x = small_graph(rng), np.zeros((1, 3, 7, 7), np.float32)
    for options, match in (({"scheme": "int2"}, "unknown quantization scheme"),
                           ({"scheme": "int4", "group_size": 5}, "does not divide"),
                           ({"scheme": "fp8_e4m3", "rex": 2}, "rex=2"),
                           ({"scheme": "int8", "group_size": 4}, "group_size=4"),
                           ({"scheme": "int4", "rex": 4}, "rex=4")):
        with pytest.raises(EdgekitError, match=match):
            edgekit.quantize(g, x, **options)
    q = edgekit.quantize(g, x, scheme="int4")
    with pytest.raises(EdgekitError, match="already quantized"):
        edgekit.quantize(q, x, scheme="int4")
    q.tensors["w1"].quant = QuantParams([1.0] * 5, [0] * 5, 0)
    with pytest.raises(EdgekitError, match="G scales"):
        q.validate()
    q = edgekit.quantize(g, x, scheme="int4")
    q.params["w1"] = q.params["w1"][:, :, :-1]
    with pytest.raises(EdgekitError, match="stored as"):
        q.validate()
    q = edgekit.quantize(g, x, scheme="int4")
    q.tensors["a"].dtype = "int4"
    with pytest.raises(EdgekitError, match="low-bit dtypes are for weights"):
        q.validate()
