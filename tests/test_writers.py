"""The ONNX and TFLite writers: every written model computes the Graph.

Float Graphs are checked against edgekit's runtime in ONNX Runtime, LiteRT and tflite-micro.
int8 Graphs are built by hand here (weights per channel, int32 biases, per-tensor activations, as
``docs/quantized-graph.md`` says): one conv is checked bit for bit against the TFLite formulas
written out in numpy, and a small CNN across the three runtimes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import edgekit
from edgekit import EdgekitError
from edgekit.converters.builder import GraphBuilder
from edgekit.graph import Graph

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
litert = pytest.importorskip("ai_edge_litert.interpreter")
tflm = pytest.importorskip("tflite_micro.python.tflite_micro.runtime")

from edgekit.converters.to_onnx import onnx_model, to_onnx  # noqa: E402
from edgekit.converters.to_tflite import tflite_model, to_tflite  # noqa: E402

RNG = np.random.default_rng(0)


def _p(b: GraphBuilder, shape: tuple[int, ...], hint: str) -> str:
    return b.param(RNG.normal(size=shape) / math.sqrt(math.prod(shape[1:]) or 1), hint)


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
    y = b.node("mul", [y, b.param(RNG.uniform(0.5, 2, (4, 1, 1)), "gain")], name="gain")
    z = b.node("add", [y, b.param(RNG.normal(size=(6,)), "bias_w")], name="bias_w")
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
    y = b.node("layernorm", [y, b.param(RNG.uniform(0.5, 2, 10), "ln.g"),
                             b.param(RNG.normal(size=10), "ln.b")], name="ln")
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
    import importlib

    writer = importlib.import_module(f"edgekit.converters.{module}")
    monkeypatch.delitem(writer._VISITORS, "relu")
    b = GraphBuilder()
    y = b.node("relu", [b.input("x", (1, 3))], name="first")
    b.output(b.node("relu", [b.node("relu6", [y])], name="second"))
    write = onnx_model if module == "to_onnx" else tflite_model
    with pytest.raises(EdgekitError, match=r"relu \(first\), relu \(second\)"):
        write(b.build())
