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
SCHEMES = [("int4", {}), ("int4", {"group_size": 16}), ("int4", {"rex": 2}), ("ternary", {}),
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
    expect = np.clip(np.rint(w / np.float32(gamma)), -1, 1) * scales[0, 0, 0]
    assert np.allclose(formats.dequantize(storage, scales, "ternary", w.shape), expect)
    storage, scales = formats.quantize_weight(w, "int4", group_size=8)  # groups 6, 6, 6
    assert scales.shape == (1, 4, 3)  # at most 8 weights per scale, as even as they go
    assert np.allclose(scales[0], np.abs(w.reshape(4, 3, 6)).max(-1) / 7)
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
    assert back.tensors["w1"].quant == q.tensors["w1"].quant  # None for float16


def test_packed_sizes_shrink_by_the_packing_factor():
    g = small_graph(np.random.default_rng(4))
    x = np.zeros((1, 3, 7, 7), np.float32)
    weights = ["w1", "w2", "w3", "w4"]
    fp32 = sum(g.tensors[w].nbytes for w in weights)
    for scheme, factor in (("fp16", 2), ("fp8_e4m3", 4), ("int4", 8), ("ternary", 20)):
        q = edgekit.quantize(g, x, scheme=scheme)
        packed = sum(q.params[w].nbytes for w in weights)
        assert fp32 / factor <= packed < fp32 / factor * 1.25, scheme  # rows pad to whole bytes
        scales = sum(len(q.tensors[w].quant.scale) for w in weights if q.tensors[w].quant)
        assert sum(q.tensors[w].nbytes for w in weights) == packed + 4 * scales  # what is stored


def test_bad_options_and_files_are_refused():
    rng = np.random.default_rng(5)
    g, x = small_graph(rng), np.zeros((1, 3, 7, 7), np.float32)
    for options, match in (({"scheme": "int2"}, "unknown quantization scheme"),
                           ({"scheme": "int4", "group_size": 0}, "group_size=0"),
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
    q = edgekit.quantize(g, x, scheme="int4")
    q.tensors["w1"].shape, q.params["w1"] = (), np.zeros((), np.uint8)  # a crafted file's
    with pytest.raises(EdgekitError, match="output-channel axis"):
        q.validate()
    q = edgekit.quantize(g, x, scheme="int4")
    q.nodes[0].inputs[2] = "w4"  # a packed tensor as a bias
    with pytest.raises(EdgekitError, match="low-bit formats hold the weight"):
        q.validate()


def plain_graph(rng) -> Graph:
    """``small_graph`` without its grouped convolution, which TFLite has no kernel for."""
    g = small_graph(rng)
    g.nodes[1].attrs["groups"] = 1
    g.params["w2"] = rng.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.3
    g.tensors["w2"].shape = (8, 8, 3, 3)
    return g.validate()


@pytest.mark.parametrize("scheme,options", [s for s in SCHEMES if s[0] != "ternary"])
def test_onnx_holds_the_packed_weights_and_onnxruntime_runs_them(scheme, options):
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, numpy_helper

    from edgekit.converters.to_onnx import onnx_model

    rng = np.random.default_rng(6)
    g, x = small_graph(rng), rng.standard_normal((2, 3, 7, 7)).astype(np.float32)
    q = edgekit.quantize(g, x, scheme=scheme, **options)
    model = onnx_model(q)
    stored = {t.name: t for t in model.graph.initializer}
    fmt, orders = formats.weight_dtype(q.tensors["w4"].dtype)
    if fmt == "float16":
        assert stored["w4/f16"].data_type == TensorProto.FLOAT16
        assert numpy_helper.to_array(stored["w4/f16"]).tobytes() == q.params["w4"].tobytes()
    else:
        for k in range(orders):  # the same codes, exactly (w4's rows are whole bytes)
            t = stored[f"w4/q{k}"]
            assert t.data_type == getattr(TensorProto, {"int4": "INT4"}.get(
                fmt, fmt.replace("fp8_e", "FLOAT8E").upper().replace("M3", "M3FN")))
            assert t.raw_data == q.params["w4"][k].tobytes() if fmt != "int4" else True
            assert np.array_equal(numpy_helper.to_array(t).astype(np.float32),
                                  formats.unpack(q.params["w4"][k], fmt, 72))
    with edgekit.deploy(q, "cpu:onnxruntime") as session:
        assert np.allclose(session.run(x), Executor(q).run(x), rtol=1e-5, atol=1e-5)


def test_tflite_holds_float16_weights_and_litert_runs_them():
    pytest.importorskip("ai_edge_litert")
    rng = np.random.default_rng(7)
    g, x = plain_graph(rng), rng.standard_normal((2, 3, 7, 7)).astype(np.float32)
    q = edgekit.quantize(g, x, scheme="fp16")
    from ai_edge_litert.interpreter import Interpreter

    from edgekit.converters.to_tflite import tflite_model

    interpreter = Interpreter(model_content=tflite_model(q).data)
    stored = {t["name"]: t for t in interpreter.get_tensor_details()}
    for w in ("w1", "w2", "w3", "w4"):  # the float16 values exactly, in TFLite's layouts
        assert stored[w]["dtype"] == np.float16
        values = interpreter.get_tensor(stored[w]["index"])
        assert np.array_equal(np.sort(values.ravel()), np.sort(q.params[w].ravel()))
    with edgekit.deploy(q, "cpu:litert") as session:
        assert np.allclose(session.run(x), Executor(q).run(x), rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("scheme,writer", [("ternary", "onnx"), ("int4", "tflite"),
                                           ("fp8_e5m2", "tflite"), ("int4", "c")])
def test_writers_without_the_format_name_the_scheme(scheme, writer, tmp_path):
    from edgekit.converters import to_c, to_onnx, to_tflite

    rng = np.random.default_rng(8)
    q = edgekit.quantize(plain_graph(rng), np.zeros((1, 3, 7, 7), np.float32), scheme=scheme)
    write = {"onnx": to_onnx.to_onnx, "tflite": to_tflite.to_tflite, "c": to_c.to_c}[writer]
    with pytest.raises(EdgekitError, match=f"the {writer} writer cannot write the '{scheme}'"):
        write(q, tmp_path / "out")


def test_cli_convert_quantizes_to_each_scheme_name(tmp_path, capsys):
    from edgekit.cli import main

    rng = np.random.default_rng(9)
    model = small_graph(rng).save(tmp_path / "m.ekm")
    np.savez(tmp_path / "calib.npz", x=rng.standard_normal((4, 3, 7, 7)).astype(np.float32))

    def convert(*args: str) -> int:
        return main(["convert", str(model), "-o", str(tmp_path / "out"), "--calibration-data",
                     str(tmp_path / "calib.npz"), *args])

    assert convert("--quantize", "int4", "--group-size", "12", "--rex", "2", "--to",
                   "ekm,onnx") == 0
    q = edgekit.load(tmp_path / "out" / "m.ekm")
    assert q.tensors["w1"].dtype == "int4x2" and len(q.tensors["w1"].quant.scale) == 2 * 8 * 3
    capsys.readouterr()
    assert convert("--quantize", "ternary", "--to", "onnx") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "onnx writer cannot write the 'ternary' scheme" in err


def test_profile_and_the_fit_check_count_packed_bytes():
    from edgekit.profile.counts import describe
    from edgekit.profile.fit import check_fit

    rng = np.random.default_rng(10)
    g = small_graph(rng)
    q = edgekit.quantize(g, np.zeros((1, 3, 7, 7), np.float32), scheme="ternary")
    totals = describe(q)["totals"]
    packed = {w: q.params[w].nbytes + 4 * len(q.tensors[w].quant.scale)
              for w in ("w1", "w2", "w3", "w4")}
    assert totals["weight_bytes_by_dtype"]["ternary"] == sum(packed.values())
    assert totals["weight_bytes_by_dtype"]["float32"] == 4 * (8 + 5)  # the biases
    flash = next(limit for limit in check_fit(q, "cortex-m4") if limit.name == "flash")
    assert flash.needed_bytes == sum(packed.values()) + 4 * 13 and flash.memory == "runtime"


@pytest.mark.parametrize("scheme", ["ternary", "int4"])
def test_qat_codes_survive_batch_norm_folding(scheme):
    """What a fake-quantized torch model computes is what ``edgekit.quantize`` of its import
    computes: per-channel scales absorb the folded batch norm (a negative gamma included)."""
    torch = pytest.importorskip("torch")
    from edgekit.quant import qat

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 6, 3), torch.nn.BatchNorm2d(6),
                                torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(6 * 16, 4))
    bn = model[1]
    bn.weight.data = torch.tensor([1.5, -0.7, 0.3, 2.0, 1.0, -1.2])
    bn.running_mean.data, bn.running_var.data = torch.randn(6) * 0.1, torch.rand(6) + 0.5
    student = qat.fake_quantized(model, scheme).eval()
    x = torch.randn(5, 2, 6, 6)
    with torch.no_grad():
        want = student(x).numpy()
    g = edgekit.from_torch(qat.released(student), x[:1])
    q = edgekit.quantize(g, x.numpy(), scheme=scheme)
    assert np.allclose(Executor(q).run(x.numpy()), want, atol=1e-4)


def test_straight_through_estimator_passes_the_gradient_unchanged():
    torch = pytest.importorskip("torch")
    from edgekit.quant.qat import FakeQuant

    w = torch.randn(4, 9, requires_grad=True)
    upstream = torch.randn(4, 9)
    (FakeQuant("ternary")(w) * upstream).sum().backward()
    assert torch.equal(w.grad, upstream)
    assert set(FakeQuant("ternary")(w).detach().div(w.abs().mean(1, keepdim=True)
                                                    + 1e-8).round().unique().tolist()) <= {
        -1.0, 0.0, 1.0}


def test_mixed_picks_a_format_per_layer_within_the_budget():
    rng = np.random.default_rng(11)
    g, x = small_graph(rng), rng.standard_normal((16, 3, 7, 7)).astype(np.float32)
    size = lambda q: sum(q.tensors[p].nbytes for p in q.params)  # noqa: E731
    loose = edgekit.quantize(g, x, scheme="mixed", size_bytes=10**6)
    assert set(loose.metadata["quantization"]["weights"].values()) == {"float16"}
    budget = size(edgekit.quantize(g, x, scheme="int4")) + 100
    tight = edgekit.quantize(g, x, scheme="mixed", size_bytes=budget)
    assert size(tight) <= budget and tight.metadata["quantized"] == "mixed"
    assert len(set(tight.metadata["quantization"]["weights"].values())) > 1
    assert np.allclose(Executor(tight).run(x), evaluate(dequantized(tight), {"x": x})["y"],
                       atol=1e-5)
    for options, match in (({"size_bytes": 100}, "no mix of .* fits 100 bytes"),
                           ({}, "takes one of"),
                           ({"size_bytes": 1, "energy_uj": 1}, "takes one of"),
                           ({"formats": {"w9": "int4"}}, "the weights are w1, w2, w3, w4"),
                           ({"energy_uj": -1.0}, "positive number")):
        with pytest.raises(EdgekitError, match=match):
            edgekit.quantize(g, x, scheme="mixed", **options)
    with pytest.raises(EdgekitError, match="'mixed' scheme's options"):
        edgekit.quantize(g, x, scheme="int4", size_bytes=1000)
    chosen = edgekit.quantize(g, x, scheme="mixed", formats={"w1": "int4", "w4": "ternary"})
    assert [chosen.tensors[w].dtype for w in ("w1", "w2", "w3", "w4")] == [
        "int4", "float32", "float32", "ternary"]


def test_mixed_under_an_energy_budget_meets_it_in_the_profile_model():
    from edgekit.profile.counts import describe
    from edgekit.profile.devices import load_profile
    from edgekit.profile.energy import layer_energy_pj

    rng = np.random.default_rng(12)
    g, x = small_graph(rng), rng.standard_normal((16, 3, 7, 7)).astype(np.float32)
    device = load_profile("cortex-m4")

    def energy_uj(graph: Graph) -> float:
        return sum(sum(layer_energy_pj(la, device).values())
                   for la in describe(graph, device)["layers"]) / 1e6

    budget = (energy_uj(edgekit.quantize(g, x, scheme="fp16"))
              + energy_uj(edgekit.quantize(g, x, scheme="ternary"))) / 2
    q = edgekit.quantize(g, x, scheme="mixed", energy_uj=budget)
    assert energy_uj(q) <= budget and q.metadata["quantization"]["modelled"] == pytest.approx(
        energy_uj(q))


def test_accumulator_widths_are_proven_and_counted_exactly():
    from edgekit.ops import OPS
    from edgekit.quant import accumulators

    rng = np.random.default_rng(13)
    g, x = small_graph(rng), rng.standard_normal((6, 3, 7, 7)).astype(np.float32)
    q = edgekit.quantize(g, x)
    proven = accumulators.required_bits(q)
    assert set(proven) == {"a", "b", "c", "y"} and all(8 < bits <= 32 for bits in proven.values())
    assert accumulators.input_range(q, "a")[0] == q.tensors["a"].quant.zero_point[0]  # its ReLU
    values = Executor(q).run_layers(x)
    values["x"] = accumulators._quantized_input(q, x)
    for node in [n for n in q.nodes if n.op in ("conv2d", "linear")]:
        sums = accumulators._partial_sums(q, node, values[node.inputs[0]])
        d = values[node.inputs[0]] - float(q.tensors[node.inputs[0]].quant.zero_point[0])
        attrs = dict(node.attrs, activation="none")
        want = OPS[node.op].reference(d, q.params[node.inputs[1]].astype(np.float64),
                                      **attrs)  # the bias joins after the narrow sum
        final = sums[..., -1]
        if node.op == "conv2d":  # [N*P, C] -> [N, C, H, W]
            final = final.reshape(len(x), *want.shape[2:], -1).transpose(0, 3, 1, 2)
        assert np.array_equal(final, want)  # the int32 sums, exactly (all below 2^24)
        bits = proven[node.outputs[0]]
        assert -(2 ** (bits - 1)) <= sums.min() and sums.max() < 2 ** (bits - 1)
    wide = accumulators.overflows(q, x, max(proven.values()))
    assert all(c["saturate"] == c["wrap"] == 0 for c in wide.values())
    narrow = accumulators.overflows(q, x, 8)
    assert sum(c["saturate"] for c in narrow.values()) >= sum(c["wrap"] for c in narrow.values())
    assert sum(c["saturate"] for c in narrow.values()) > 0


def test_fit_width_makes_the_proof_pass_at_any_width():
    """A2Q rows (scale from the row's L1 norm, codes rounded toward zero): the static proof
    passes by construction, and no input overflows, saturating or wrapping."""
    from edgekit.quant import accumulators

    rng = np.random.default_rng(14)
    g, x = small_graph(rng), rng.standard_normal((6, 3, 7, 7)).astype(np.float32)
    q = edgekit.quantize(g, x)
    assert max(accumulators.required_bits(q).values()) > 16
    fitted = accumulators.fit_width(q, g, 16)
    assert max(accumulators.required_bits(fitted).values()) <= 16
    assert all(c["saturate"] == 0 for c in accumulators.overflows(fitted, x, 16).values())
    assert np.corrcoef(Executor(fitted).run(x).ravel(), Executor(g).run(x).ravel())[0, 1] > 0.9
    tight = accumulators.fit_width(q, g, 10)
    rows = np.abs(tight.params["w4"].astype(np.int64)).sum(1)
    assert rows.max() * 255 <= 2 ** 9 - 1 and max(accumulators.required_bits(tight).values()) <= 10
    with pytest.raises(EdgekitError, match="fit_width takes 8..32 bits"):
        accumulators.fit_width(q, g, 40)


def test_accumulator_aware_qat_trains_the_codes_fit_width_stores():
    """``qat.AccumulatorQuant`` forward = the int8 Graph ``fit_width`` makes of the trained
    model (up to the int8 activations' rounding), and its rows fit the width."""
    torch = pytest.importorskip("torch")
    from edgekit.quant import accumulators, qat

    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 6, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(6 * 16, 4))
    student = qat.fake_quantized(model, "int8", accumulator_bits=12).eval()
    x = torch.randn(64, 2, 6, 6)
    with torch.no_grad():
        want = student(x).numpy()
    g = edgekit.from_torch(qat.released(student), x[:1])  # the float master weights
    q = accumulators.fit_width(edgekit.quantize(g, x.numpy()), g, 12)
    for name in ("0.weight", "3.weight"):
        codes = q.params[name].astype(np.float64)
        scales = np.array(q.tensors[name].quant.scale).reshape(-1, *[1] * (codes.ndim - 1))
        with torch.no_grad():
            trained = qat.AccumulatorQuant(12)(torch.from_numpy(
                g.params[name])).numpy()
        assert np.allclose(codes * scales, trained, atol=1e-6)
    assert max(accumulators.required_bits(q).values()) <= 12
    got = Executor(accumulators.narrow(q, 12)).run(x.numpy())
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.99
    with pytest.raises(EdgekitError, match="accumulator_bits= goes with scheme 'int8'"):
        qat.fake_quantized(model, "int4", accumulator_bits=12)
