"""The ONNX and TFLite writers: every written model computes the Graph.

Float Graphs are checked against edgekit's runtime in ONNX Runtime, LiteRT and tflite-micro.
int8 Graphs are built by hand here (weights per channel, int32 biases, per-tensor activations, as
``docs/quantized-graph.md`` says): one conv is checked bit for bit against the TFLite formulas
written out in numpy, and a small CNN across the three runtimes.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

import edgekit
from edgekit import EdgekitError
from edgekit.converters.builder import GraphBuilder
from edgekit.graph import Graph, QuantParams, TensorInfo
from edgekit.numerics.arith import quantize_multipliers
from edgekit.quant.edge import quantize_array
from edgekit.runtime.reference import evaluate

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
litert = pytest.importorskip("ai_edge_litert.interpreter")
tflm = pytest.importorskip("tflite_micro.python.tflite_micro.runtime")

from edgekit.converters.to_onnx import onnx_model, to_onnx  # noqa: E402
from edgekit.converters.to_tflite import tflite_model, to_tflite  # noqa: E402


def _p(b: GraphBuilder, shape: tuple[int, ...], hint: str) -> str:
    """A random weight seeded by its name, so every model is the same whichever tests run."""
    rng = np.random.default_rng(zlib.crc32(hint.encode()))
    return b.param(rng.normal(size=shape) / math.sqrt(math.prod(shape[1:]) or 1), hint)


# --- float Graphs, one feature each ---------------------------------------------------------

def conv_relu() -> Graph:
    """stride 2 with SAME-expressible padding, then padding TFLite needs a PAD for, dilation."""
    b = GraphBuilder()
    x = b.input("x", (1, 3, 9, 9))
    y = b.node("conv2d", [x, _p(b, (8, 3, 3, 3), "c1.w"), _p(b, (8,), "c1.b")],
               {"stride": [2, 2], "padding": [1, 1, 1, 1], "activation": "relu"}, name="c1")
    y = b.node("conv2d", [y, _p(b, (6, 8, 3, 3), "c2.w")],
               {"padding": [2, 0, 1, 2], "activation": "relu6"}, name="c2")
    b.output(b.node("conv2d", [y, _p(b, (4, 6, 3, 3), "c3.w")],
                    {"padding": [2, 2, 2, 2], "dilation": [2, 2]}, name="c3"))
    return b.build()


def depthwise() -> Graph:
    b = GraphBuilder()
    x = b.input("x", (1, 4, 8, 8))
    y = b.node("conv2d", [x, _p(b, (4, 1, 3, 3), "dw1.w"), _p(b, (4,), "dw1.b")],
               {"padding": [1, 1, 1, 1], "groups": 4, "activation": "relu"}, name="dw1")
    b.output(b.node("conv2d", [y, _p(b, (8, 1, 3, 3), "dw2.w")],
                    {"stride": [2, 2], "groups": 4}, name="dw2"))
    return b.build()


def pools() -> Graph:
    """max pool with a PADV2-only padding, SAME average pool, plain pool, global pool."""
    b = GraphBuilder()
    x = b.input("x", (1, 3, 8, 8))
    y = b.node("maxpool2d", [x], {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1, 1, 1]},
               name="mp")
    y = b.node("avgpool2d", [y], {"kernel": [3, 3], "stride": [1, 1], "padding": [1, 1, 1, 1],
                                  "count_include_pad": False}, name="ap_same")
    y = b.node("avgpool2d", [y], {"kernel": [2, 2], "stride": [2, 2]}, name="ap")
    b.output(b.node("global_avgpool", [y], name="gap"))
    return b.build()


def flatten_linear() -> Graph:
    """reshape of a channels-first tensor: TFLite must read NCHW order, not NHWC."""
    b = GraphBuilder()
    x = b.input("x", (1, 2, 4, 4))
    y = b.node("conv2d", [x, _p(b, (3, 2, 3, 3), "c.w")], {"padding": [1, 1, 1, 1]}, name="c")
    y = b.node("reshape", [y], {"shape": [48]}, name="flat")
    y = b.node("linear", [y, _p(b, (10, 48), "fc.w"), _p(b, (10,), "fc.b")],
               {"activation": "relu"}, name="fc")
    b.output(b.node("softmax", [y], name="prob"))
    return b.build()


def add_mul_concat() -> Graph:
    """residual add, broadcast param add/mul, leaky ReLU, channel concat, channel softmax."""
    b = GraphBuilder()
    x = b.input("x", (1, 4, 6, 6))
    y = b.node("conv2d", [x, _p(b, (4, 4, 1, 1), "c.w")], name="c")
    y = b.node("add", [y, x], {"activation": "relu"}, name="res")
    rng = np.random.default_rng(1)
    y = b.node("mul", [y, b.param(rng.uniform(0.5, 2, (4, 1, 1)), "gain")], name="gain")
    z = b.node("add", [y, b.param(rng.normal(size=(6,)), "bias_w")], name="bias_w")
    z = b.node("leaky_relu", [z], {"alpha": 0.1}, name="lrelu")
    y = b.node("concat", [y, z], {"axis": 1}, name="cat")
    y = b.node("relu6", [y], name="r6")
    b.output(b.node("softmax", [y], {"axis": 1}, name="chan_softmax"))
    return b.build()


def sequence_model() -> Graph:
    """1-D convs (plain and depthwise), then layer norm and linear over channels."""
    b = GraphBuilder()
    x = b.input("x", (1, 4, 20))
    y = b.node("conv1d", [x, _p(b, (8, 4, 5), "c1.w"), _p(b, (8,), "c1.b")],
               {"stride": [2], "padding": [2, 2], "activation": "relu"}, name="c1")
    y = b.node("conv1d", [y, _p(b, (8, 1, 3), "dw.w")],
               {"padding": [2, 0], "dilation": [1], "groups": 8}, name="dw")
    y = b.node("reshape", [y], {"shape": [8, 10]}, name="same")
    rng = np.random.default_rng(2)
    y = b.node("layernorm", [y, b.param(rng.uniform(0.5, 2, 10), "ln.g"),
                             b.param(rng.normal(size=10), "ln.b")], name="ln")
    y = b.node("linear", [y, _p(b, (5, 10), "fc.w"), _p(b, (5,), "fc.b")], name="fc")
    b.output(b.node("softmax", [y], name="prob"))
    return b.build()


def two_in_two_out() -> Graph:
    b = GraphBuilder()
    x = b.input("x", (1, 2, 5, 5))
    v = b.input("v", (1, 6))
    y = b.node("conv2d", [x, _p(b, (3, 2, 3, 3), "c.w")], name="c")
    b.output(b.node("global_avgpool", [y], name="gap"))
    b.output(b.node("linear", [v, _p(b, (4, 6), "fc.w")], name="fc"))
    return b.build()


FLOAT_GRAPHS = [conv_relu, depthwise, pools, flatten_linear, add_mul_concat, sequence_model,
                two_in_two_out]


def feeds_for(graph: Graph, batch: int, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: rng.normal(size=(batch, *graph.tensors[n].shape[1:])).astype(np.float32)
            for n in graph.inputs}


def as_dict(graph: Graph, out) -> dict[str, np.ndarray]:
    """A Session's result (one array, or a list in output order) by output name."""
    return dict(zip(graph.outputs, out if isinstance(out, list) else [out], strict=True))


# --- running written models directly in each runtime ----------------------------------------

def run_onnx(graph: Graph, feeds: dict[str, np.ndarray], optimize: bool = True):
    opts = ort.SessionOptions()
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(onnx_model(graph).SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    return dict(zip(graph.outputs, sess.run(graph.outputs, feeds), strict=True))


def run_litert(graph: Graph, feeds: dict[str, np.ndarray], xnnpack: bool = True):
    model = tflite_model(graph)
    kwargs = {} if xnnpack else {"experimental_op_resolver_type":
                                 litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    it = litert.Interpreter(model_content=model.data, **kwargs)
    for name, x in feeds.items():
        it.resize_tensor_input(model.tensors[name][0], list(x.transpose(model.layout(name)).shape))
    it.allocate_tensors()
    for name, x in feeds.items():
        it.set_tensor(model.tensors[name][0], np.ascontiguousarray(x.transpose(model.layout(name))))
    it.invoke()
    return {n: it.get_tensor(model.tensors[n][0]).transpose(np.argsort(model.layout(n)))
            for n in graph.outputs}


def run_tflm(graph: Graph, feeds: dict[str, np.ndarray]):
    model = tflite_model(graph)
    it = tflm.Interpreter.from_bytes(model.data, arena_size=1 << 20)
    batch = next(iter(feeds.values())).shape[0]
    outs = {n: [] for n in graph.outputs}
    for b in range(batch):
        for i, name in enumerate(graph.inputs):
            sample = feeds[name][b:b + 1].transpose(model.layout(name))
            it.set_input(np.ascontiguousarray(sample), i)
        it.invoke()
        for i, name in enumerate(graph.outputs):
            outs[name].append(it.get_output(i).transpose(np.argsort(model.layout(name))))
    return {n: np.concatenate(v) for n, v in outs.items()}


RUNTIMES = {"onnxruntime": run_onnx, "litert": run_litert, "tflite-micro": run_tflm}


@pytest.mark.parametrize("build", FLOAT_GRAPHS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_float_models_agree_with_edgekit(build, runtime):
    graph = build()
    feeds = feeds_for(graph, batch=3)
    expected = as_dict(graph, edgekit.runtime.execute(graph, feeds))
    got = RUNTIMES[runtime](graph, feeds)
    for name, ref in expected.items():
        assert got[name].shape == ref.shape
        scale = max(1.0, float(np.abs(ref).max()))
        np.testing.assert_allclose(got[name], ref, rtol=1e-5, atol=1e-5 * scale,
                                   err_msg=f"{runtime}: output {name}")


@pytest.mark.parametrize("build", FLOAT_GRAPHS, ids=lambda f: f.__name__)
def test_onnx_files_pass_the_full_checker(build, tmp_path):
    graph = build()
    path = to_onnx(graph, tmp_path / "m.onnx")
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert [i.type.tensor_type.shape.dim[0].dim_param for i in model.graph.input] == \
        ["batch"] * len(graph.inputs)


def test_tflite_file_and_op_map(tmp_path):
    """The op map names the Graph node of every TFLite operator, in order."""
    graph = flatten_linear()
    path = to_tflite(graph, tmp_path / "m.tflite")
    model = tflite_model(graph)
    assert path.read_bytes() == model.data
    assert model.data[4:8] == b"TFL3"
    # c (conv), flat (TRANSPOSE to NCHW + RESHAPE), fc, prob
    assert model.op_nodes == ["c", "flat", "flat", "fc", "prob"]
    assert model.layout("x") == (0, 2, 3, 1) and model.layout("prob") == (0, 1)


def _opcodes(model) -> list[str]:
    from edgekit.converters.to_tflite import schema

    s = schema()
    names = {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}
    m = s.ModelT.InitFromPackedBuf(model.data, 0)
    return [names[m.operatorCodes[op.opcodeIndex].builtinCode] for op in m.subgraphs[0].operators]


def test_tflite_flatten_transposes_only_when_memory_order_differs():
    """Flatten after a conv needs TRANSPOSE to NCHW; after a global pool a RESHAPE is enough."""
    assert _opcodes(tflite_model(flatten_linear())) == [
        "CONV_2D", "TRANSPOSE", "RESHAPE", "FULLY_CONNECTED", "SOFTMAX"]
    b = GraphBuilder()
    y = b.node("global_avgpool", [b.input("x", (1, 4, 3, 3))])
    y = b.node("reshape", [y], {"shape": [4]})
    b.output(b.node("linear", [y, _p(b, (2, 4), "fc.w")]))
    assert _opcodes(tflite_model(b.build())) == [
        "AVERAGE_POOL_2D", "RESHAPE", "RESHAPE", "FULLY_CONNECTED"]


def test_tflite_padding_modes():
    """SAME/VALID where TFLite computes the Graph's padding; PAD/PADV2 otherwise."""
    ops = _opcodes(tflite_model(conv_relu()))
    assert ops == ["CONV_2D", "PAD", "CONV_2D", "CONV_2D"]  # c3: dilated SAME
    assert _opcodes(tflite_model(pools()))[:2] == ["PADV2", "MAX_POOL_2D"]


def _single(op: str, attrs: dict, shape=(1, 4, 6, 6), weight=None) -> Graph:
    b = GraphBuilder()
    ins = [b.input("x", shape)] + ([_p(b, weight, "w")] if weight else [])
    b.output(b.node(op, ins, attrs, name="the_node"))
    return b.build()


@pytest.mark.parametrize("graph, message", [
    (lambda: _single("avgpool2d", {"kernel": [3, 3], "stride": [1, 1],
                                    "padding": [1, 1, 1, 1]}), "count_include_pad"),
    (lambda: _single("avgpool2d", {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1, 1, 1],
                                    "count_include_pad": False}), "SAME"),
    (lambda: _single("conv2d", {"groups": 2}, weight=(4, 2, 3, 3)), "grouped"),
    (lambda: _single("maxpool2d", {"kernel": [2, 2], "stride": [1, 1], "dilation": [2, 2]}),
     "dilation"),
], ids=["avgpool-count-pad", "avgpool-not-same", "grouped-conv", "maxpool-dilation"])
def test_tflite_unwritable_combinations_name_the_node(graph, message):
    with pytest.raises(EdgekitError, match=message) as err:
        tflite_model(graph())
    assert "the_node" in str(err.value)


@pytest.mark.parametrize("module", ["to_onnx", "to_tflite"])
def test_writers_name_every_node_without_a_mapping(module, monkeypatch):
    """Ops the Graph gains before a writer learns them are all listed in one error."""
    from edgekit.ops import OPS

    monkeypatch.delitem(OPS["relu"].impls, "onnx" if module == "to_onnx" else "tflite")
    b = GraphBuilder()
    y = b.node("relu", [b.input("x", (1, 3))], name="first")
    b.output(b.node("relu", [b.node("relu6", [y])], name="second"))
    write = onnx_model if module == "to_onnx" else tflite_model
    with pytest.raises(EdgekitError, match=r"relu \(first\), relu \(second\)"):
        write(b.build())


# --- int8 Graphs, quantized by hand as docs/quantized-graph.md says -------------------------

_KEEPS_QUANT = {"maxpool2d", "avgpool2d", "global_avgpool", "reshape", "relu", "relu6", "concat"}


def _activation_quant(v: np.ndarray) -> QuantParams:
    """Asymmetric per-tensor min/max quantization (the range always holds 0)."""
    lo, hi = min(0.0, float(v.min())), max(0.0, float(v.max()))
    scale = (hi - lo) / 255 or 1.0
    return QuantParams([scale], [int(np.clip(round(-128 - lo / scale), -128, 127))])


def _set(g: Graph, name: str, value: np.ndarray, quant: QuantParams) -> None:
    g.params[name] = value
    g.tensors[name].dtype, g.tensors[name].quant = str(value.dtype), quant


def _quantize_weights(g: Graph, node, s_in: float) -> None:
    """int8 weight per output channel (zero point 0, [-127, 127]), int32 bias."""
    w = g.params[node.inputs[1]].astype(np.float64)
    s_w = np.maximum(np.abs(w).reshape(len(w), -1).max(axis=1), 1e-8) / 127
    q = np.round(w / s_w.reshape(-1, *[1] * (w.ndim - 1))).astype(np.int8)
    _set(g, node.inputs[1], q, QuantParams(list(s_w), [0] * len(w), 0))
    if len(node.inputs) == 2:
        node.inputs.append(f"{node.inputs[1]}.bias")
        g.tensors[node.inputs[2]] = TensorInfo((len(w),))
        g.params[node.inputs[2]] = np.zeros(len(w), np.float32)
    bias = np.round(g.params[node.inputs[2]] / (s_in * s_w)).astype(np.int32)
    _set(g, node.inputs[2], bias, QuantParams(list(s_in * s_w), [0] * len(w), 0))


def hand_quantize(graph: Graph, calibration: dict[str, np.ndarray]) -> Graph:
    """A small stand-in for ``edgekit.quantize``: min/max calibration, the contract's layout."""
    import copy

    g = copy.deepcopy(graph)
    values = evaluate(graph, calibration)
    for name in g.inputs:
        g.tensors[name].dtype, g.tensors[name].quant = "int8", _activation_quant(values[name])
    for node in g.nodes:
        s_in = g.tensors[node.inputs[0]].quant.scale[0]
        if node.op in ("conv2d", "conv1d", "linear"):
            _quantize_weights(g, node, s_in)
        elif node.op in ("add", "mul") and node.inputs[1] in g.params:
            p = g.params[node.inputs[1]]
            s = max(float(np.abs(p).max()), 1e-8) / 127
            _set(g, node.inputs[1], np.round(p / s).astype(np.int8), QuantParams([s], [0]))
        out = g.tensors[node.outputs[0]]
        out.dtype = "int8"
        out.quant = (copy.deepcopy(g.tensors[node.inputs[0]].quant) if node.op in _KEEPS_QUANT
                     else QuantParams([1 / 256], [-128]) if node.op == "softmax"
                     else _activation_quant(values[node.outputs[0]]))
    g.metadata["quantized"] = "int8"
    return g.validate()


def int8_cnn() -> Graph:
    """conv, depthwise, residual add, param mul, leaky ReLU, pools, concat, linear, softmax."""
    b = GraphBuilder()
    x = b.input("x", (1, 3, 10, 10))
    y = b.node("conv2d", [x, _p(b, (8, 3, 3, 3), "c1.w"), _p(b, (8,), "c1.b")],
               {"padding": [1, 1, 1, 1], "activation": "relu"}, name="c1")
    z = b.node("conv2d", [y, _p(b, (8, 1, 3, 3), "dw.w")],
               {"padding": [1, 1, 1, 1], "groups": 8, "activation": "relu6"}, name="dw")
    y = b.node("add", [y, z], name="res")
    gain = np.random.default_rng(3).uniform(0.5, 1.5, (8, 1, 1))
    y = b.node("mul", [y, b.param(gain, "gain")], name="gain")
    y = b.node("leaky_relu", [y], {"alpha": 0.1}, name="lrelu")
    y = b.node("maxpool2d", [y], {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1, 1, 1]},
               name="mp")
    y = b.node("concat", [y, b.node("relu", [y], name="r")], {"axis": 1}, name="cat")
    y = b.node("conv2d", [y, _p(b, (6, 16, 1, 1), "pw.w")], {"stride": [2, 2]}, name="pw")
    y = b.node("avgpool2d", [y], {"kernel": [2, 2], "stride": [1, 1]}, name="ap")
    y = b.node("reshape", [y], {"shape": [24]}, name="flat")
    y = b.node("linear", [y, _p(b, (10, 24), "fc.w")], name="fc")
    b.output(b.node("softmax", [y], name="prob"))
    return b.build()


def int8_sequence() -> Graph:
    """1-D convs (plain, strided; depthwise, causal padding), linear over the last axis."""
    b = GraphBuilder()
    x = b.input("x", (1, 4, 20))
    y = b.node("conv1d", [x, _p(b, (8, 4, 5), "c1.w"), _p(b, (8,), "c1.b")],
               {"stride": [2], "padding": [2, 2], "activation": "relu"}, name="c1")
    y = b.node("conv1d", [y, _p(b, (8, 1, 3), "dw.w")], {"padding": [2, 0], "groups": 8},
               name="dw")
    y = b.node("reshape", [y], {"shape": [8, 10]}, name="same")
    y = b.node("linear", [y, _p(b, (5, 10), "fc.w"), _p(b, (5,), "fc.b")], name="fc")
    b.output(b.node("softmax", [y], name="prob"))
    return b.build()


def int8_conv() -> tuple[Graph, dict[str, np.ndarray]]:
    """One strided, padded conv with ReLU; returns the int8 Graph and int8 inputs."""
    b = GraphBuilder()
    x = b.input("x", (1, 3, 7, 7))
    b.output(b.node("conv2d", [x, _p(b, (5, 3, 3, 3), "w"), _p(b, (5,), "b")],
                    {"stride": [2, 2], "padding": [0, 1, 2, 1], "activation": "relu"}))
    calib = feeds_for(b.graph, batch=8)
    g = hand_quantize(b.build(), calib)
    return g, {"x": quantize_array(calib["x"], g.tensors["x"].quant)}


def tflite_int8_conv(g: Graph, x: np.ndarray) -> np.ndarray:
    """The TFLite int8 conv written out: int32 accumulation, fixed-point requantization."""
    node = g.nodes[0]
    w, bias = g.params[node.inputs[1]].astype(np.int64), g.params[node.inputs[2]]
    (s_in,), (zp_in,) = g.tensors["x"].quant.scale, g.tensors["x"].quant.zero_point
    out_q = g.tensors[node.outputs[0]].quant
    t, left, bottom, right = node.attrs["padding"]
    xp = np.pad(x.astype(np.int64) - zp_in, ((0, 0), (0, 0), (t, bottom), (left, right)))
    (sh, sw), oh, ow = node.attrs["stride"], *g.tensors[node.outputs[0]].shape[2:]
    acc = bias.astype(np.int64)[None, :, None, None] + sum(
        np.einsum("nchw,oc->nohw", xp[:, :, i:i + sh * oh:sh, j:j + sw * ow:sw], w[:, :, i, j])
        for i in range(w.shape[2]) for j in range(w.shape[3]))
    m0, shift = quantize_multipliers(np.array(s_in * np.array(g.tensors[node.inputs[1]].quant.scale)
                                              / out_q.scale[0]))
    m0, shift = (v.astype(np.int64)[None, :, None, None] for v in (m0, shift))
    ab = acc * (1 << np.maximum(shift, 0)) * m0
    num = ab + np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    high = np.where(num >= 0, num >> 31, -((-num) >> 31))  # C division truncates toward zero
    right_shift = np.maximum(-shift, 0)
    mask = (1 << right_shift) - 1
    rounded = (high >> right_shift) + ((high & mask) > (mask >> 1) + (high < 0))
    return np.clip(rounded + out_q.zero_point[0], max(-128, out_q.zero_point[0]), 127)


def _differing(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """(values that differ, largest difference in steps) between two int8 arrays."""
    diff = np.abs(a.astype(np.int32) - b.astype(np.int32))
    return int((diff > 0).sum()), int(diff.max())


def test_int8_conv_matches_tflite_formulas():
    """tflite-micro and LiteRT's builtin kernels are bit-exact; XNNPACK and ONNX Runtime (one
    float rounding) are within one step."""
    g, x = int8_conv()
    expected = tflite_int8_conv(g, x["x"])
    out = g.outputs[0]
    assert run_tflm(g, x)[out].dtype == np.int8
    assert _differing(run_tflm(g, x)[out], expected) == (0, 0)
    assert _differing(run_litert(g, x, xnnpack=False)[out], expected) == (0, 0)
    for got in (run_litert(g, x)[out], run_onnx(g, x)[out], run_onnx(g, x, optimize=False)[out]):
        assert got.shape == expected.shape and _differing(got, expected)[1] <= 1


def test_int8_onnx_is_a_qdq_model_with_int8_edges():
    g = hand_quantize(int8_cnn(), feeds_for(int8_cnn(), batch=4))
    model = onnx_model(g)
    onnx.checker.check_model(model, full_check=True)
    int8 = onnx.TensorProto.INT8
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [int8]
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [int8]
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") == len(g.nodes)
    axes = {n.input[0]: [a.i for a in n.attribute] for n in model.graph.node
            if n.op_type == "DequantizeLinear"}
    assert axes["c1.w"] == [0] and axes["c1.b"] == [0]
    stored = {t.name: t.data_type for t in model.graph.initializer}
    assert stored["c1.w"] == int8 and stored["c1.b"] == onnx.TensorProto.INT32


def isolate(g: Graph, node) -> Graph:
    """One node of ``g`` as a Graph of its own: its activation inputs become graph inputs."""
    import copy

    inputs = [n for n in dict.fromkeys(node.inputs) if n not in g.params]
    names = [*inputs, *(n for n in node.inputs if n in g.params), node.outputs[0]]
    return Graph(inputs, [node.outputs[0]], {n: copy.deepcopy(g.tensors[n]) for n in names},
                 [copy.deepcopy(node)], {n: g.params[n] for n in node.inputs if n in g.params},
                 dict(g.metadata)).validate()


INT8_RUNTIMES = {
    "litert builtin": lambda g, x: run_litert(g, x, xnnpack=False),
    "litert xnnpack": run_litert,
    "onnxruntime": run_onnx,
    "onnxruntime unoptimized": lambda g, x: run_onnx(g, x, optimize=False),
}


def edgekit_quantize(graph: Graph, calibration: dict[str, np.ndarray]) -> Graph:
    quantize = getattr(edgekit, "quantize", None)
    if quantize is None:
        pytest.skip("edgekit.quantize is not there yet")
    return quantize(graph, calibration)


@pytest.fixture(scope="module", ids=lambda p: f"{p[0].__name__}-{p[1].__name__}", params=[
    (model, quantizer) for model in (int8_cnn, int8_sequence)
    for quantizer in (hand_quantize, edgekit_quantize)])
def int8_case(request):
    """An int8 model (quantized by hand or by edgekit.quantize), its int8 test inputs and
    tflite-micro's outputs of every layer."""
    from edgekit.targets import deploy

    build, quantizer = request.param
    graph = build()
    g = quantizer(graph, feeds_for(graph, batch=16, seed=2))
    x = quantize_array(feeds_for(graph, batch=16, seed=3)["x"], g.tensors["x"].quant)
    return g, x, deploy(g, "cpu:tflite-micro").run_layers(x, raw=True)


@pytest.mark.parametrize("runtime", INT8_RUNTIMES)
def test_int8_ops_within_one_step_of_tflite_micro(runtime, int8_case):
    """Each layer on identical int8 inputs (tflite-micro's, as on the device): every value is
    within one quantization step of tflite-micro's; the counts of differing values print."""
    g, x, layers = int8_case
    values = {"x": x, **layers}
    report = []
    for node in g.nodes:
        sub = isolate(g, node)
        got = INT8_RUNTIMES[runtime](sub, {n: values[n] for n in sub.inputs})[node.outputs[0]]
        count, worst = _differing(got, layers[node.outputs[0]])
        report.append(f"{node.name}:{count}/{got.size}")
        assert worst <= 1, f"{runtime} {node.op} {node.name}: {worst} steps"
    print(f"\n{runtime} values differing from tflite-micro per layer: {' '.join(report)}")


def test_int8_models_end_to_end(int8_case):
    """Whole-model int8 outputs: one-step differences compound through layers (and a logit one
    step off moves a softmax output by more), so this checks predicted classes and prints how
    many output values differ."""
    g, x, layers = int8_case
    reference = layers["prob"].reshape(len(x), -1)
    for runtime, run in INT8_RUNTIMES.items():
        got = run(g, {"x": x})["prob"].reshape(len(x), -1)
        count, worst = _differing(got, reference)
        print(f"\n{runtime}: {count} of {reference.size} output values differ (max {worst})")
        assert (got.argmax(1) == reference.argmax(1)).mean() >= 0.9, runtime


def test_int8_tflite_rejects_layernorm():
    b = GraphBuilder()
    x = b.input("x", (1, 2, 4))
    b.output(b.node("layernorm", [x, b.param(np.ones(4), "g"), b.param(np.zeros(4), "b")],
                    name="ln"))
    graph = b.build()
    g = hand_quantize(graph, feeds_for(graph, 4))
    with pytest.raises(EdgekitError, match="'ln'.*no int8 TFLite form"):
        tflite_model(g)
