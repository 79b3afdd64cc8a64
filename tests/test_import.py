"""The importers: every supported layer lowers to the expected Graph ops (BN folded, ReLU
fused), every unsupported op is named at once, torch and ONNX imports of one model agree, and
bad files fail as EdgekitError."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

import edgekit
from edgekit.errors import EdgekitError, UnsupportedOpsError


def _torch():
    return pytest.importorskip("torch")


def _onnx():
    return pytest.importorskip("onnx")


def _execute(graph, x):
    """Run a Graph on edgekit's numba runtime (any batch size, NCHW numpy in and out)."""
    from edgekit.runtime import execute

    return execute(graph, x)


def _fn(torch, forward, **children):
    """An nn.Module whose forward is ``forward(self, *inputs)``, with ``children`` as
    submodules (so functional calls get checked alongside layers)."""

    class Fn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            for name, child in children.items():
                setattr(self, name, child)

        def forward(self, *xs):
            return forward(self, *xs)

    return Fn()


def _randomize_bn(torch, model):
    """Non-trivial running statistics, so BN folding changes the weights measurably."""
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=gen))
            m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            m.weight.data.copy_(torch.randn(c, generator=gen))
            m.bias.data.copy_(torch.randn(c, generator=gen))
    return model.eval()


def _import_torch(model, *shapes):
    torch = _torch()
    torch.manual_seed(0)
    return edgekit.from_torch(model, tuple(torch.randn(*s) for s in shapes))


# (id, build(torch) -> module, input shapes, [(op, attrs that must match), ...])
LAYERS = [
    ("conv_stride_pad", lambda t: t.nn.Conv2d(3, 4, 3, stride=2, padding=(1, 2)),
     [(2, 3, 9, 9)], [("conv2d", {"stride": [2, 2], "padding": [1, 2, 1, 2]})]),
    ("conv_depthwise_dilated", lambda t: t.nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=4),
     [(2, 4, 8, 8)], [("conv2d", {"groups": 4, "dilation": [2, 2], "padding": [2, 2, 2, 2]})]),
    ("conv_same_even_kernel", lambda t: t.nn.Conv2d(3, 4, 4, padding="same"),
     [(2, 3, 8, 8)], [("conv2d", {"padding": [1, 1, 2, 2]})]),
    ("conv_valid", lambda t: t.nn.Conv2d(3, 4, 3, padding="valid", bias=False),
     [(2, 3, 8, 8)], [("conv2d", {"padding": [0, 0, 0, 0]})]),
    ("conv1d", lambda t: t.nn.Conv1d(3, 4, 5, stride=2, padding=2),
     [(2, 3, 16)], [("conv1d", {"stride": [2], "padding": [2, 2]})]),
    ("conv_bn_relu", lambda t: t.nn.Sequential(t.nn.Conv2d(3, 4, 3, bias=False),
                                               t.nn.BatchNorm2d(4), t.nn.ReLU()),
     [(2, 3, 8, 8)], [("conv2d", {"activation": "relu"})]),
    ("conv1d_bn_relu6", lambda t: t.nn.Sequential(t.nn.Conv1d(3, 4, 3), t.nn.BatchNorm1d(4),
                                                  t.nn.ReLU6()),
     [(2, 3, 10)], [("conv1d", {"activation": "relu6"})]),
    ("linear_bn_relu", lambda t: t.nn.Sequential(t.nn.Linear(6, 5), t.nn.BatchNorm1d(5),
                                                 t.nn.ReLU()),
     [(2, 6)], [("linear", {"activation": "relu"})]),
    ("relu", lambda t: t.nn.ReLU(), [(2, 5)], [("relu", {})]),
    ("relu6", lambda t: t.nn.ReLU6(), [(2, 5)], [("relu6", {})]),
    ("leaky_relu", lambda t: t.nn.LeakyReLU(0.2), [(2, 5)], [("leaky_relu", {"alpha": 0.2})]),
    ("avgpool", lambda t: t.nn.AvgPool2d(3, 2, 1, count_include_pad=False), [(2, 3, 8, 8)],
     [("avgpool2d", {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1, 1, 1],
                     "count_include_pad": False})]),
    ("avgpool_ceil_same_size", lambda t: t.nn.AvgPool2d(2, ceil_mode=True), [(2, 3, 8, 8)],
     [("avgpool2d", {"kernel": [2, 2], "stride": [2, 2]})]),
    ("maxpool", lambda t: t.nn.MaxPool2d(3, 2, 1), [(2, 3, 8, 8)],
     [("maxpool2d", {"kernel": [3, 3], "stride": [2, 2], "padding": [1, 1, 1, 1]})]),
    ("adaptive_avgpool_1", lambda t: t.nn.AdaptiveAvgPool2d(1), [(2, 3, 8, 8)],
     [("global_avgpool", {})]),
    ("adaptive_avgpool_even", lambda t: t.nn.AdaptiveAvgPool2d(2), [(2, 3, 8, 8)],
     [("avgpool2d", {"kernel": [4, 4], "stride": [4, 4]})]),
    ("flatten", lambda t: t.nn.Flatten(), [(2, 3, 4, 4)], [("reshape", {"shape": [48]})]),
    ("view", lambda t: _fn(t, lambda m, x: x.view(x.size(0), -1, 8)), [(2, 3, 4, 4)],
     [("reshape", {"shape": [6, 8]})]),
    ("mean_hw", lambda t: _fn(t, lambda m, x: x.mean((2, 3))), [(2, 3, 4, 4)],
     [("global_avgpool", {}), ("reshape", {"shape": [3]})]),
    ("add_tensors", lambda t: _fn(t, lambda m, x, y: x + y), [(2, 3, 4), (2, 3, 4)],
     [("add", {})]),
    ("add_scalar", lambda t: _fn(t, lambda m, x: x + 1.5), [(2, 3)], [("add", {})]),
    ("mul_broadcast", lambda t: _fn(t, lambda m, x, y: y * x), [(2, 3, 4, 4), (2, 3, 1, 1)],
     [("mul", {})]),
    ("sub_div_scalars", lambda t: _fn(t, lambda m, x: (x - 2.0) / 4.0), [(2, 3)],
     [("add", {}), ("mul", {})]),
    ("cat", lambda t: _fn(t, lambda m, x, y: t.cat([x, y], dim=-1)), [(2, 3, 4), (2, 3, 2)],
     [("concat", {"axis": 2})]),
    ("softmax", lambda t: t.nn.Softmax(dim=1), [(2, 5)], [("softmax", {"axis": 1})]),
    ("layernorm", lambda t: t.nn.LayerNorm([4, 6]), [(2, 3, 4, 6)],
     [("layernorm", {"normalized_ndim": 2})]),
    ("layernorm_no_affine", lambda t: t.nn.LayerNorm(6, elementwise_affine=False), [(2, 6)],
     [("layernorm", {"normalized_ndim": 1})]),
    ("dropout_identity", lambda t: t.nn.Sequential(t.nn.Dropout(), t.nn.Identity(),
                                                   t.nn.Linear(4, 3)),
     [(2, 4)], [("linear", {})]),
    ("contiguous_clone_detach",
     lambda t: _fn(t, lambda m, x: m.fc(x.contiguous().clone().detach()), fc=t.nn.Linear(4, 3)),
     [(2, 4)], [("linear", {})]),
]


@pytest.mark.parametrize("build, shapes, expected", [c[1:] for c in LAYERS],
                         ids=[c[0] for c in LAYERS])
def test_torch_layer_lowers_to_expected_ops(build, shapes, expected):
    torch = _torch()
    model = _randomize_bn(torch, build(torch))
    graph = _import_torch(model, *shapes)
    assert [n.op for n in graph.nodes] == [op for op, _ in expected]
    for node, (_, attrs) in zip(graph.nodes, expected, strict=True):
        assert {k: node.attrs[k] for k in attrs} == attrs
    assert [graph.tensors[i].shape for i in graph.inputs] == [(1, *s[1:]) for s in shapes]
    xs = [_rand(3, *s[1:], seed=i) for i, s in enumerate(shapes)]  # another batch size
    with torch.no_grad():
        expected_out = model(*map(torch.from_numpy, xs)).numpy()
    np.testing.assert_allclose(_execute(graph, xs), expected_out, rtol=1e-4, atol=1e-5)


def test_torch_bn_folding_matches_torch_fusion():
    torch = _torch()
    model = _randomize_bn(torch, torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3),
                                                     torch.nn.BatchNorm2d(4), torch.nn.ReLU()))
    graph = _import_torch(model.train(), (2, 3, 8, 8))  # exported in eval mode regardless
    assert model.training and model[1].training  # and the caller's mode is left as it was
    fused = torch.nn.utils.fusion.fuse_conv_bn_eval(model[0].eval(), model[1].eval())
    (node,) = graph.nodes
    assert node.name == "0"
    np.testing.assert_allclose(graph.params[node.inputs[1]], fused.weight.detach().numpy(),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(graph.params[node.inputs[2]], fused.bias.detach().numpy(),
                               rtol=1e-5, atol=1e-6)


def test_torch_constants_become_params():
    torch = _torch()
    model = _fn(torch, lambda m, x: x * m.scale + 0.5)
    model.register_buffer("scale", torch.arange(3.0).reshape(3, 1, 1))
    graph = _import_torch(model, (2, 3, 4, 4))
    mul, add = graph.nodes
    np.testing.assert_array_equal(graph.params[mul.inputs[1]], np.arange(3.0).reshape(3, 1, 1))
    np.testing.assert_array_equal(graph.params[add.inputs[1]], [0.5])


def test_torch_unsupported_ops_are_all_named_at_once():
    torch = _torch()
    nn = torch.nn
    model = _fn(torch, lambda m, x: torch.sin(m.head(m.act(m.conv(x)))),
                conv=nn.Conv2d(3, 4, 3), act=nn.Mish(),
                head=nn.Sequential(nn.AvgPool2d(3, 2, ceil_mode=True), nn.Hardshrink()))
    with pytest.raises(UnsupportedOpsError) as info:
        _import_torch(model, (2, 3, 8, 8))
    assert info.value.ops == [("mish", "act"), ("avg_pool2d(ceil_mode=True)", "head.0"),
                              ("hardshrink", "head.1"), ("sin", "sin")]
    message = str(info.value)
    for text in ("mish at act", "hardshrink at head.1", "sin at sin", "PyTorch"):
        assert text in message


def test_torch_export_failure_is_an_edgekit_error():
    torch = _torch()

    def forward(m, x):
        if x.sum() > 0:  # data-dependent control flow: torch.export cannot capture it
            return x
        return -x

    with pytest.raises(EdgekitError, match="torch.export could not capture Fn"):
        _import_torch(_fn(torch, forward), (2, 3))


def test_torch_rejects_bad_arguments():
    torch = _torch()
    with pytest.raises(EdgekitError, match="example_inputs"):
        edgekit.from_torch(torch.nn.ReLU())
    with pytest.raises(EdgekitError, match="nn.Module"):
        edgekit.from_torch("model.pt")


def test_importers_do_not_import_frameworks():
    code = ("import sys, edgekit.converters.from_torch, edgekit.converters.from_onnx; "
            "assert not {'torch', 'onnx'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- torch vs ONNX


def _pipeline_model(torch):
    """conv, depthwise conv, BN, ReLU, ReLU6, max pool, residual add, flatten, linear."""
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                nn.MaxPool2d(2))
            self.dw = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False),
                                    nn.BatchNorm2d(8), nn.ReLU6())
            self.pw = nn.Sequential(nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8))
            self.pool = nn.AvgPool2d(2)
            self.fc = nn.Linear(8 * 2 * 2, 5)

        def forward(self, x):
            x = self.features(x)
            x = torch.relu(x + self.pw(self.dw(x)))
            return self.fc(torch.flatten(self.pool(x), 1))

    torch.manual_seed(0)
    return _randomize_bn(torch, Net())


@pytest.fixture(scope="module", params=["bn_folded_by_exporter", "bn_kept"])
def torch_and_onnx(request, tmp_path_factory):
    """One model imported both ways; exported with BN folded by torch.onnx (its default) and
    with BatchNormalization kept, so both ONNX forms are covered."""
    torch, _ = _torch(), _onnx()

    model = _pipeline_model(torch)
    example = torch.randn(2, 3, 8, 8)
    path = tmp_path_factory.mktemp("onnx") / "net.onnx"
    mode = (torch.onnx.TrainingMode.PRESERVE if request.param == "bn_kept"
            else torch.onnx.TrainingMode.EVAL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (example,), str(path), dynamo=False, training=mode,
                          input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    return model, edgekit.from_torch(model, (example,)), edgekit.from_onnx(path)


def test_torch_and_onnx_imports_agree(torch_and_onnx):
    _, from_torch_graph, from_onnx_graph = torch_and_onnx
    ops = [n.op for n in from_torch_graph.nodes]
    assert ops == ["conv2d", "maxpool2d", "conv2d", "conv2d", "add", "avgpool2d", "reshape",
                   "linear"]
    assert [n.op for n in from_onnx_graph.nodes] == ops
    assert [n.name for n in from_torch_graph.nodes][:4] == ["features.0", "features.3", "dw.0",
                                                           "pw.0"]
    for a, b in zip(from_torch_graph.nodes, from_onnx_graph.nodes, strict=True):
        assert a.attrs == b.attrs, (a.name, b.name)
        pa = [from_torch_graph.params[i] for i in a.inputs if i in from_torch_graph.params]
        pb = [from_onnx_graph.params[i] for i in b.inputs if i in from_onnx_graph.params]
        assert len(pa) == len(pb)
        for x, y in zip(pa, pb, strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=a.name)


def test_torch_and_onnx_imports_compute_the_same(torch_and_onnx):
    torch = _torch()
    model, from_torch_graph, from_onnx_graph = torch_and_onnx
    x = np.random.default_rng(1).standard_normal((3, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    for graph in (from_torch_graph, from_onnx_graph):
        np.testing.assert_allclose(_execute(graph, x), expected, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------- .pt2 and IR forms


def test_pt2_round_trip_and_decomposed_programs_import_alike(tmp_path):
    torch = _torch()

    model = _pipeline_model(torch)
    example = (torch.randn(2, 3, 8, 8),)
    program = torch.export.export(model, example)
    torch.export.save(program, str(tmp_path / "net.pt2"))
    reference = edgekit.from_torch(program)
    batch = torch.export.Dim("batch")
    others = [
        edgekit.from_torch(torch.export.load(str(tmp_path / "net.pt2"))),
        edgekit.from_torch(program.run_decompositions()),
        edgekit.from_torch(torch.export.export(model, example, dynamic_shapes=({0: batch},))),
    ]
    for graph in others:
        assert [n.op for n in graph.nodes] == [n.op for n in reference.nodes]
        assert [n.attrs for n in graph.nodes] == [n.attrs for n in reference.nodes]
        # module paths are stable; names of calls in forward() itself are fx's and may differ
        assert [n.name for n in graph.nodes if n.op != "reshape"] == [
            n.name for n in reference.nodes if n.op != "reshape"]
        for a, b in zip(graph.nodes, reference.nodes, strict=True):
            pa = [graph.params[i] for i in a.inputs if i in graph.params]
            pb = [reference.params[i] for i in b.inputs if i in reference.params]
            assert len(pa) == len(pb)
            for x, y in zip(pa, pb, strict=True):
                np.testing.assert_allclose(x, y, atol=1e-6)


# --------------------------------------------------------------------------- ONNX


def _onnx_model(nodes, inputs, outputs, initializers=(), opset=17):
    """A small ONNX model; ``inputs``/``outputs`` are (name, shape) with None for the batch."""
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    def info(name, shape):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)

    graph = helper.make_graph(
        nodes, "test", [info(*i) for i in inputs], [info(*o) for o in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in dict(initializers).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 8)
    onnx.checker.check_model(model)
    return model


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _agrees_with_onnxruntime(model, graph, shape):
    """The imported Graph computes what onnxruntime computes for the ONNX model."""
    ort = pytest.importorskip("onnxruntime")
    x = _rand(*shape, seed=1)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"x": x})
    np.testing.assert_allclose(_execute(graph, x), expected, rtol=1e-4, atol=1e-5)


def test_onnx_layers_lower_to_expected_ops():
    _onnx()
    from onnx import helper

    n = helper.make_node
    model = _onnx_model(
        [n("Conv", ["x", "w1"], ["c1"], name="conv_same", auto_pad="SAME_UPPER", strides=[2, 2]),
         n("Conv", ["c1", "w2", "b2"], ["c2"], name="conv_lower", auto_pad="SAME_LOWER",
           group=4),
         n("BatchNormalization", ["c2", "g", "beta", "mean", "var"], ["bn"], epsilon=1e-3),
         n("Clip", ["bn", "zero", "six"], ["r6"]),
         n("AveragePool", ["r6"], ["ap"], kernel_shape=[3, 3], strides=[1, 1],
           pads=[1, 1, 1, 1]),
         n("MaxPool", ["ap"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
         n("LeakyRelu", ["mp"], ["lr"], alpha=0.3),
         n("Dropout", ["lr"], ["dr"]),
         n("Identity", ["dr"], ["id"]),
         n("Shape", ["id"], ["shape"]),
         n("Gather", ["shape", "zero_i"], ["batch"], axis=0),
         n("Unsqueeze", ["batch", "zero_i1"], ["batch_i"]),
         n("Cast", ["batch_i"], ["batch1"], to=7),
         n("Concat", ["batch1", "minus1"], ["target"], axis=0),
         n("Reshape", ["id", "target"], ["flat"]),
         n("MatMul", ["flat", "wm"], ["mm"]),
         n("Add", ["mm", "bm"], ["lin"]),
         n("Relu", ["lin"], ["relu"]),
         n("Gemm", ["relu", "wg", "cg"], ["gemm"], alpha=2.0, beta=0.5),
         n("Sub", ["gemm", "one"], ["sub"]),
         n("Div", ["sub", "two"], ["div"]),
         n("Concat", ["div", "div"], ["cat"], axis=-1),
         n("LayerNormalization", ["cat", "lg"], ["ln"], epsilon=1e-4),
         n("Softmax", ["ln"], ["y"])],
        [("x", ["N", 3, 8, 8])], [("y", ["N", 10])],
        {"w1": _rand(4, 3, 3, 3), "w2": _rand(4, 1, 3, 3), "b2": _rand(4), "g": _rand(4) + 2,
         "beta": _rand(4), "mean": _rand(4), "var": np.abs(_rand(4)) + 1,
         "zero": np.float32(0), "six": np.float32(6), "zero_i": np.int64(0),
         "zero_i1": np.array([0], np.int64), "minus1": np.array([-1], np.int64),
         "wm": _rand(16, 6), "bm": _rand(6), "wg": _rand(6, 5), "cg": _rand(5),
         "one": np.float32(1), "two": np.float32(2), "lg": _rand(10)})
    graph = edgekit.from_onnx(model)
    ops = [(node.op, node.name) for node in graph.nodes]
    assert ops == [("conv2d", "conv_same"), ("conv2d", "conv_lower"),
                   ("avgpool2d", "AveragePool_4"), ("maxpool2d", "MaxPool_5"),
                   ("leaky_relu", "LeakyRelu_6"),
                   ("reshape", "Reshape_14"), ("linear", "MatMul_15"), ("linear", "Gemm_18"),
                   ("concat", "Concat_21"), ("layernorm", "LayerNormalization_22"),
                   ("softmax", "Softmax_23")]
    conv1, conv2, ap, mp, lr, rs, mm, gemm, cat, ln, sm = graph.nodes
    assert conv1.attrs["padding"] == [0, 0, 1, 1] and conv1.attrs["stride"] == [2, 2]
    assert conv2.attrs["padding"] == [1, 1, 1, 1] and conv2.attrs["activation"] == "relu6"
    assert ap.attrs["count_include_pad"] is False and ap.attrs["padding"] == [1, 1, 1, 1]
    assert lr.attrs["alpha"] == pytest.approx(0.3) and rs.attrs["shape"] == [16]
    assert mm.attrs["activation"] == "relu"
    np.testing.assert_allclose(graph.params[mm.inputs[2]], _rand(6), atol=0)
    np.testing.assert_allclose(graph.params[gemm.inputs[1]], 2 * _rand(6, 5).T / 2, rtol=1e-6)
    np.testing.assert_allclose(graph.params[gemm.inputs[2]], (0.5 * _rand(5) - 1) / 2, rtol=1e-6)
    assert cat.attrs["axis"] == 1 and sm.attrs["axis"] == 1
    assert ln.attrs["eps"] == pytest.approx(1e-4)
    np.testing.assert_array_equal(graph.params[ln.inputs[2]], np.zeros(10, np.float32))
    assert graph.tensors[graph.inputs[0]].shape == (1, 3, 8, 8)
    _agrees_with_onnxruntime(model, graph, (3, 3, 8, 8))


def test_onnx_conv1d_gemm_transb_and_reshape_zero():
    _onnx()
    from onnx import helper

    n = helper.make_node
    model = _onnx_model(
        [n("Conv", ["x", "w"], ["c"], pads=[1, 2], kernel_shape=[4]),
         n("Reshape", ["c", "shape"], ["r"]),
         n("Flatten", ["r"], ["f"]),
         n("Gemm", ["f", "wg"], ["y"], transB=1)],
        [("x", [2, 3, 10])], [("y", [2, 4])],
        {"w": _rand(5, 3, 4), "shape": np.array([0, 0, -1], np.int64), "wg": _rand(4, 50)})
    graph = edgekit.from_onnx(model)
    assert [node.op for node in graph.nodes] == ["conv1d", "reshape", "linear"]
    assert graph.nodes[0].attrs["padding"] == [1, 2] and graph.nodes[1].attrs["shape"] == [50]
    np.testing.assert_array_equal(graph.params[graph.nodes[2].inputs[1]], _rand(4, 50))
    _agrees_with_onnxruntime(model, graph, (2, 3, 10))


def test_onnx_unsupported_ops_are_all_named_at_once():
    _onnx()
    from onnx import helper

    n = helper.make_node
    model = _onnx_model(
        [n("Sin", ["x"], ["s"], name="gate"),
         n("Relu", ["s"], ["r"]),
         n("Cos", ["r"], ["t"]),
         n("Shape", ["t"], ["shape"]),  # the exporters' reshape-target chain after a failure
         n("Gather", ["shape", "zero"], ["batch"], axis=0),
         n("Unsqueeze", ["batch", "axes"], ["batch1"]),
         n("Concat", ["batch1", "minus1"], ["target"], axis=0),
         n("Reshape", ["t", "target"], ["flat"]),
         n("Clip", ["flat", "flat", "hi"], ["y"], name="clamp")],
        [("x", ["N", 2, 2])], [("y", ["N", 4])],
        {"lo": np.float32(-1), "hi": np.float32(1), "zero": np.int64(0),
         "axes": np.array([0], np.int64), "minus1": np.array([-1], np.int64)})
    with pytest.raises(UnsupportedOpsError) as info:
        edgekit.from_onnx(model)
    assert info.value.ops == [("Sin", "gate"), ("Cos", "Cos_2"),
                              ("Clip with computed bounds", "clamp")]
    for text in ("ONNX", "Sin at gate", "Cos at Cos_2", "Clip with computed bounds at clamp"):
        assert text in str(info.value)


@pytest.mark.parametrize("content", [b"", b"\x08\x07garbage\xff\xfe not onnx", b"hello"],
                         ids=["empty", "garbage", "text"])
def test_onnx_unreadable_file_is_an_edgekit_error(tmp_path, content):
    _onnx()

    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    with pytest.raises(EdgekitError, match="model.onnx"):
        edgekit.from_onnx(path)


def test_onnx_missing_file_and_symbolic_dims_are_edgekit_errors(tmp_path):
    _onnx()
    from onnx import helper

    with pytest.raises(EdgekitError, match="no such file"):
        edgekit.from_onnx(tmp_path / "missing.onnx")
    model = _onnx_model([helper.make_node("Relu", ["x"], ["y"])], [("x", ["N", "C"])],
                        [("y", ["N", "C"])])
    with pytest.raises(EdgekitError, match="dimension 1 is symbolic"):
        edgekit.from_onnx(model)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_onnx_exported_gelu_is_fused_back(approximate, tmp_path):
    """torch.onnx.export below opset 20 writes GELU as arithmetic around Erf or Tanh; the
    importer finds it and lowers one gelu, computing what onnxruntime computes."""
    torch = _torch()
    model = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.GELU(approximate=approximate))
    path = tmp_path / "gelu.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 8),), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    exported = _onnx().load(str(path))
    assert {"Erf": approximate == "none", "Tanh": approximate == "tanh"}.items() <= {
        op: op in [n.op_type for n in exported.graph.node] for op in ("Erf", "Tanh")}.items()
    graph = edgekit.from_onnx(path)
    assert [(n.op, n.attrs) for n in graph.nodes][1:] == [("gelu", {"approximate": approximate})]
    _agrees_with_onnxruntime(exported, graph, (5, 8))


def _erf_region(divisor, extra_output=False):
    """x * 0.5 * (1 + erf(x / divisor)), written in another order than torch's exporter."""
    from onnx import helper

    nodes = [helper.make_node("Mul", ["x", "half"], ["h"]),
             helper.make_node("Div", ["x", "d"], ["s"]),
             helper.make_node("Erf", ["s"], ["e"]),
             helper.make_node("Add", ["one", "e"], ["p"]),
             helper.make_node("Mul", ["p", "h"], ["y"])]
    outputs = [("y", [None, 4])] + ([("e", [None, 4])] if extra_output else [])
    return _onnx_model(nodes, [("x", [None, 4])], outputs,
                       {"half": np.float32(0.5), "d": np.float32(divisor), "one": np.float32(1)})


def test_onnx_gelu_fusion_takes_any_order_and_only_gelu():
    graph = edgekit.from_onnx(_erf_region(np.sqrt(2)))
    assert [n.op for n in graph.nodes] == ["gelu"]
    _agrees_with_onnxruntime(_erf_region(np.sqrt(2)), graph, (3, 4))
    with pytest.raises(UnsupportedOpsError, match="Erf"):  # x / 1.5: not GELU, left as is
        edgekit.from_onnx(_erf_region(1.5))
    with pytest.raises(UnsupportedOpsError, match="Erf"):  # erf's value is read outside
        edgekit.from_onnx(_erf_region(np.sqrt(2), extra_output=True))
