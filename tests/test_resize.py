"""resize (edgekit/ops/resize.py) beyond its conformance case: every coordinate rule against
torch, LiteRT, ONNX Runtime and tflite-micro, at integer and non-integer scales, up and down;
what the importers take and refuse."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit import deploy, quantize
from edgekit.converters.builder import GraphBuilder
from edgekit.errors import EdgekitError
from edgekit.runtime import Executor, reference

# (mode, align_corners, half_pixel): TFLite's rules, all six
RULES = [("nearest", False, False), ("nearest", False, True), ("nearest", True, False),
         ("bilinear", False, False), ("bilinear", False, True), ("bilinear", True, False)]
# (input H, W) -> size: x2, non-integer up, down, to one pixel
SIZES = [((4, 5), [8, 10]), ((5, 7), [7, 9]), ((9, 11), [4, 6]), ((3, 4), [1, 1])]


def _graph(hw, size, mode, align_corners=False, half_pixel=False, channels=3):
    b = GraphBuilder()
    x = b.input("x", (1, channels, *hw))
    b.output(b.node("resize", [x], {"size": size, "mode": mode, "align_corners": align_corners,
                                    "half_pixel": half_pixel}, name="r"))
    return b.build()


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _target_or_skip(name):
    from edgekit.targets import get_target

    ok, why = get_target(name).available()
    if not ok:
        pytest.skip(f"{name}: {why}")


def _same(got, want, mode):
    """Nearest moves values: equal. Bilinear: float32 sums in another order."""
    if mode == "nearest":
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


# --- torch: F.interpolate and nn.Upsample as torch.export records them ------------------------

def _interp(**kw):
    import torch.nn.functional as F

    return lambda x: F.interpolate(x, **kw)


TORCH_CALLS = {
    "nearest x2 (scale_factor)": ((4, 5), dict(scale_factor=2)),
    "nearest 5x7 -> 7x9": ((5, 7), dict(size=(7, 9))),
    "nearest 9x11 -> 4x6": ((9, 11), dict(size=(4, 6))),
    "nearest-exact 5x7 -> 8x3": ((5, 7), dict(size=(8, 3), mode="nearest-exact")),
    "bilinear x2": ((4, 5), dict(scale_factor=2, mode="bilinear")),
    "bilinear 5x7 -> 7x9": ((5, 7), dict(size=(7, 9), mode="bilinear")),
    "bilinear 9x11 -> 4x6": ((9, 11), dict(size=(4, 6), mode="bilinear")),
    "bilinear align_corners x2": ((4, 5), dict(scale_factor=2, mode="bilinear",
                                               align_corners=True)),
    "bilinear align_corners 5x7 -> 7x9": ((5, 7), dict(size=(7, 9), mode="bilinear",
                                                       align_corners=True)),
    "bilinear x1.5 recomputed": ((5, 7), dict(scale_factor=1.5, mode="bilinear",
                                              recompute_scale_factor=True)),
}


def _export(fn, x):
    import torch

    class Call(torch.nn.Module):
        def __init__(self, f):
            super().__init__()
            self.f = f

        def forward(self, v):
            return self.f(v)

    module = fn if isinstance(fn, torch.nn.Module) else Call(fn)
    return module, torch.export.export(module, (torch.from_numpy(x),))


@pytest.mark.parametrize("name", list(TORCH_CALLS))
def test_torch_interpolate_imports_exactly(name):
    """The import is a resize that computes what torch computes: nearest picks the very same
    rows and columns (floor of dst * in / out in float32, as TFLite), bilinear within float32
    rounding; LiteRT's TFLite kernels agree."""
    torch = pytest.importorskip("torch")
    import edgekit

    hw, kw = TORCH_CALLS[name]
    x = _x((2, 3, *hw))
    module, program = _export(_interp(**kw), x[:1])
    graph = edgekit.from_torch(program)
    assert [n.op for n in graph.nodes] == ["resize"]
    want = module(torch.from_numpy(x)).numpy()
    mode = graph.nodes[0].attrs["mode"]
    _same(Executor(graph).run(x), want, mode)
    _target_or_skip("cpu:litert")
    _same(deploy(graph, "cpu:litert").run(x), want, mode)


@pytest.mark.parametrize("layer", ["Upsample", "UpsamplingNearest2d", "UpsamplingBilinear2d"])
def test_torch_upsample_layers(layer):
    torch = pytest.importorskip("torch")
    import edgekit

    module = {"Upsample": lambda: torch.nn.Upsample(scale_factor=2),
              "UpsamplingNearest2d": lambda: torch.nn.UpsamplingNearest2d(size=(7, 9)),
              "UpsamplingBilinear2d": lambda: torch.nn.UpsamplingBilinear2d(scale_factor=3)}
    x = _x((2, 3, 5, 6))
    _, program = _export(module[layer](), x[:1])
    graph = edgekit.from_torch(program)
    node = graph.nodes[0]
    _same(Executor(graph).run(x), module[layer]()(torch.from_numpy(x)).numpy(),
          node.attrs["mode"])
    assert node.attrs["align_corners"] == (layer == "UpsamplingBilinear2d")


@pytest.mark.parametrize("kw", [dict(size=9), dict(scale_factor=2, mode="linear"),
                                dict(size=4, mode="linear", align_corners=True),
                                dict(size=11, mode="nearest-exact")])
def test_torch_1d_is_a_resize_between_reshapes(kw):
    torch = pytest.importorskip("torch")
    import edgekit

    x = _x((2, 3, 6))
    module, program = _export(_interp(**kw), x[:1])
    graph = edgekit.from_torch(program)
    assert [n.op for n in graph.nodes] == ["reshape", "resize", "reshape"]
    _same(Executor(graph).run(x), module(torch.from_numpy(x)).numpy(), graph.nodes[1].attrs["mode"])


def test_torch_1d_nearest_exact_is_refused_where_torch_rounds_otherwise():
    """torch's 1-D nearest-exact reads input 1 for output 20 of 2 -> 41 ((20 + 0.5) * 2 / 41
    is 1 exactly); its 2-D kernel and TFLite compute 0.99999994 in float32 and read 0."""
    torch = pytest.importorskip("torch")
    import edgekit

    _, program = _export(_interp(size=41, mode="nearest-exact"), _x((1, 3, 2)))
    with pytest.raises(EdgekitError, match="_upsample_nearest_exact1d from 2 to 41"):
        edgekit.from_torch(program)
    x = _x((2, 3, 4, 2))
    module, program = _export(_interp(size=(5, 41), mode="nearest-exact"), x[:1])
    np.testing.assert_array_equal(Executor(edgekit.from_torch(program)).run(x),
                                  module(torch.from_numpy(x)).numpy())


@pytest.mark.parametrize("call", ["upsample_nearest2d", "upsample_bilinear2d"])
def test_torch_default_overloads_with_per_axis_scales(call):
    """The non-.vec overloads (output_size, then align_corners for bilinear, then one scale
    per axis), as a saved program may hold them."""
    torch = pytest.importorskip("torch")
    import edgekit

    op = getattr(torch.ops.aten, call).default
    fn = ((lambda v: op(v, [8, 10], 2.0, 2.0)) if call == "upsample_nearest2d" else
          (lambda v: op(v, [7, 9], True, None, None)))
    x = _x((2, 3, 4, 5))
    module, program = _export(fn, x[:1])
    graph = edgekit.from_torch(program)
    assert [n.op for n in graph.nodes] == ["resize"]
    _same(Executor(graph).run(x), module(torch.from_numpy(x)).numpy(), graph.nodes[0].attrs["mode"])


@pytest.mark.parametrize(("kw", "message"), [
    (dict(size=(7, 9), mode="bicubic"), "upsample_bicubic2d: bicubic and antialiased"),
    (dict(size=(7, 9), mode="bilinear", antialias=True), "_upsample_bilinear2d_aa: bicubic"),
    (dict(scale_factor=1.5, mode="bilinear"),
     "upsample_bilinear2d from 5 to 7: torch reads other source positions"),
    (dict(scale_factor=1.3), "upsample_nearest2d from 5 to 6: torch reads other"),  # 3, not 4
])
def test_torch_refuses_what_no_backend_matches(kw, message):
    """One EdgekitError naming the call; a scale factor whose 1/scale differs from in/out
    (F.interpolate without recompute_scale_factor) would read other rows than TFLite."""
    pytest.importorskip("torch")
    import edgekit

    _, program = _export(_interp(**kw), _x((1, 3, 5, 7)))
    with pytest.raises(EdgekitError, match=message):
        edgekit.from_torch(program)


def test_torch_nearest_scale_factor_accepted_where_it_picks_the_same_rows():
    """nearest scale_factor=1.5 from 5x7: floor(dst / 1.5) and floor(dst * 5 / 7) name the
    same rows (and 7 -> 10 columns likewise), so the import is exact."""
    torch = pytest.importorskip("torch")
    import edgekit

    x = _x((2, 3, 5, 7))
    module, program = _export(_interp(scale_factor=1.5), x[:1])
    graph = edgekit.from_torch(program)
    np.testing.assert_array_equal(Executor(graph).run(x), module(torch.from_numpy(x)).numpy())


# --- ONNX: Resize read against ONNX Runtime, and written for it ------------------------------

def _onnx_resize(hw, opset=13, scales=None, sizes=None, **attrs):
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.zeros(0, np.float32), "roi")]
    names = ["x", "roi", "", ""]
    if scales is not None:
        inits.append(numpy_helper.from_array(np.asarray(scales, np.float32), "scales"))
        names[2] = "scales"
    if sizes is not None:
        inits.append(numpy_helper.from_array(np.asarray(sizes, np.int64), "sizes"))
        names[3] = "sizes"
    while not names[-1]:
        names.pop()
    node = helper.make_node("Resize", names, ["y"], **attrs)
    graph = helper.make_graph([node], "r", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["n", 3, *hw])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, ["n", 3, "h", "w"])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


ONNX_RULES = [
    dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
    dict(mode="nearest", coordinate_transformation_mode="align_corners",
         nearest_mode="round_prefer_ceil"),
    dict(mode="nearest", coordinate_transformation_mode="tf_half_pixel_for_nn",
         nearest_mode="floor"),
    dict(mode="linear", coordinate_transformation_mode="asymmetric"),
    dict(mode="linear", coordinate_transformation_mode="half_pixel"),
    dict(mode="linear", coordinate_transformation_mode="pytorch_half_pixel"),
    dict(mode="linear", coordinate_transformation_mode="align_corners"),
]


@pytest.mark.parametrize("attrs", ONNX_RULES, ids=lambda a: "-".join(a.values()))
@pytest.mark.parametrize("given", ["sizes", "scales"])
def test_onnx_resize_imports_as_onnx_runtime_computes_it(attrs, given):
    ort = pytest.importorskip("onnxruntime")
    import edgekit

    hw, size = (4, 6), [8, 9]
    model = (_onnx_resize(hw, sizes=[2, 3, *size], **attrs) if given == "sizes" else
             _onnx_resize(hw, scales=[1, 1, 2, 1.5], **attrs))
    x = _x((2, 3, *hw))
    want = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    graph = edgekit.from_onnx(model)
    assert graph.nodes[0].op == "resize" and graph.nodes[0].attrs["size"] == size
    _same(Executor(graph).run(x), want, graph.nodes[0].attrs["mode"])


@pytest.mark.parametrize(("attrs", "message"), [
    (dict(mode="cubic"), "Resize\\(mode=cubic"),
    (dict(mode="nearest", coordinate_transformation_mode="asymmetric"),
     "nearest_mode=round_prefer_floor"),
    (dict(mode="nearest", coordinate_transformation_mode="half_pixel",
          nearest_mode="round_prefer_ceil"), "half_pixel, nearest_mode=round_prefer_ceil"),
    (dict(mode="linear", coordinate_transformation_mode="tf_crop_and_resize"),
     "coordinate_transformation_mode=tf_crop_and_resize"),
])
def test_onnx_resize_refusals(attrs, message):
    pytest.importorskip("onnx")
    import edgekit

    with pytest.raises(EdgekitError, match=message):
        edgekit.from_onnx(_onnx_resize((4, 6), scales=[1, 1, 2, 2], **attrs))


@pytest.mark.parametrize("scales", [[1, 1, float("nan"), 2], [1, 1, 0, 2], [1, 2, 2, 2]])
def test_onnx_scales_that_are_no_nchw_resize_are_one_error(scales):
    pytest.importorskip("onnx")
    import edgekit

    with pytest.raises(EdgekitError, match="must be \\[1, 1, h, w\\]"):
        edgekit.from_onnx(_onnx_resize((4, 6), scales=scales, mode="nearest",
                                       coordinate_transformation_mode="asymmetric",
                                       nearest_mode="floor"))


def test_onnx_nearest_where_onnx_runtime_picks_other_rows_is_refused():
    """14 -> 2 asymmetric: ONNX Runtime computes 1 / (2 / 14) = 6.9999998 and reads row 6;
    TFLite's 1 * (14 / 2) reads row 7."""
    ort = pytest.importorskip("onnxruntime")
    import edgekit

    model = _onnx_resize((14, 6), sizes=[1, 3, 2, 12], mode="nearest",
                         coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    x = np.arange(14, dtype=np.float32)[None, None, :, None].repeat(3, 1).repeat(6, 3)
    assert ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0][0, 0, 1, 0] \
        == 6
    with pytest.raises(EdgekitError, match=r"Resize\(nearest, asymmetric\) from 14 to 2"):
        edgekit.from_onnx(model)


def test_onnx_scales_that_are_not_in_over_out_are_refused():
    """scales 1.5 on 5 rows: ONNX Runtime reads dst / 1.5, TFLite dst * 5 / 7 (bilinear)."""
    pytest.importorskip("onnx")
    import edgekit

    model = _onnx_resize((5, 6), scales=[1, 1, 1.5, 2], mode="linear",
                         coordinate_transformation_mode="half_pixel")
    with pytest.raises(EdgekitError, match=r"scales=1.5\): 5 -> 7 reads other source positions"):
        edgekit.from_onnx(model)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: "-".join(map(str, r)))
def test_written_onnx_runs_on_onnx_runtime_and_reads_back(rule):
    """Float32 as the reference, int8 (QDQ) within a step of the runtime; a Resize reads back
    as the same op. Nearest is two Gathers where ONNX Runtime's Resize would pick other rows
    (half-pixel always; 14 -> 2 asymmetric reads row 6 for output 1 where TFLite reads 7)."""
    import edgekit
    from edgekit.converters.to_onnx import onnx_model
    from edgekit.quant import quantize_array

    _target_or_skip("cpu:onnxruntime")
    for hw, size in [*SIZES, ((14, 5), [2, 9])]:
        graph = _graph(hw, size, *rule)
        x = _x((2, 3, *hw))
        want = reference.evaluate(graph, {"x": x})["r"]
        _same(deploy(graph, "cpu:onnxruntime").run(x), want, rule[0])
        q = quantize(graph, x)
        raw = quantize_array(x, q.tensors["x"].quant)
        ours = deploy(q, "cpu").run(raw, raw=True)
        theirs = deploy(q, "cpu:onnxruntime").run(raw, raw=True)
        assert np.abs(theirs.astype(int) - ours).max() <= (0 if rule[0] == "nearest" else 1)
        ops = [n.op_type for n in onnx_model(graph).graph.node]
        gathers = rule[0] == "nearest" and (rule[2] or hw[0] == 14 and not rule[1])
        assert ("Gather" in ops) == gathers, ops
        if not gathers:
            assert edgekit.from_onnx(onnx_model(graph)).nodes[0].attrs == graph.nodes[0].attrs


# --- every rule on the runtime, LiteRT, gpu; int8 bit for bit with tflite-micro --------------

@pytest.mark.parametrize("rule", RULES, ids=lambda r: "-".join(map(str, r)))
def test_float_backends_compute_the_reference(rule):
    pytest.importorskip("torch")
    from edgekit.targets.gpu import TorchSession

    for hw, size in SIZES:
        graph = _graph(hw, size, *rule)
        x = _x((2, 3, *hw))
        want = reference.evaluate(graph, {"x": x})["r"]
        _same(Executor(graph).run(x), want, rule[0])
        _same(TorchSession(graph, device="cpu").run(x), want, rule[0])


@pytest.mark.parametrize("rule", RULES, ids=lambda r: "-".join(map(str, r)))
def test_litert_computes_the_reference(rule):
    _target_or_skip("cpu:litert")
    for hw, size in SIZES:
        graph = _graph(hw, size, *rule)
        x = _x((2, 3, *hw))
        _same(deploy(graph, "cpu:litert").run(x), reference.evaluate(graph, {"x": x})["r"],
              rule[0])


@pytest.mark.parametrize("rule", RULES, ids=lambda r: "-".join(map(str, r)))
def test_int8_is_bit_exact_with_tflite_micro(rule):
    """Over the whole int8 range (random raw inputs), every size: nearest moves the very
    values, bilinear is ResizeBilinearInteger's 10-bit arithmetic in both."""
    _target_or_skip("cpu:tflite-micro")
    for hw, size in SIZES:
        graph = _graph(hw, size, *rule)
        q = quantize(graph, _x((8, 3, *hw)))
        raw = np.random.default_rng(1).integers(-128, 128, (3, 3, *hw)).astype(np.int8)
        ours = deploy(q, "cpu").run(raw, raw=True)
        np.testing.assert_array_equal(deploy(q, "cpu:tflite-micro").run(raw, raw=True), ours)


def test_int8_bilinear_rounds_half_away_from_zero_as_tflite_micro():
    """A tie below zero: 2x2 -> 4x4 half-pixel, output (1, 1) weighs the inputs 9:3:3:1 /
    16, so -8 at the far corner gives -0.5, which tflite-micro (built without
    TFLITE_SINGLE_ROUNDING) rounds to -1 and single rounding would make 0."""
    graph = _graph((2, 2), [4, 4], "bilinear", half_pixel=True, channels=1)
    q = quantize(graph, _x((8, 1, 2, 2)))
    raw = np.array([[[[0, 0], [0, -8]]]], np.int8)
    ours = deploy(q, "cpu").run(raw, raw=True)
    assert ours[0, 0, 1, 1] == -1
    _target_or_skip("cpu:tflite-micro")
    np.testing.assert_array_equal(deploy(q, "cpu:tflite-micro").run(raw, raw=True), ours)


def test_int8_bilinear_is_within_a_step_of_float_where_the_scale_is_exact():
    """At x2 the 10-bit scale is exact: only the final rounding separates int8 from float."""
    from edgekit.quant import dequantize_array, quantize_array

    graph = _graph((5, 6), [10, 12], "bilinear", half_pixel=True)
    x = _x((4, 3, 5, 6))
    q = quantize(graph, x)
    quant = q.tensors["x"].quant
    raw = quantize_array(x, quant)
    got = dequantize_array(deploy(q, "cpu").run(raw, raw=True), quant)
    want = reference.evaluate(graph, {"x": dequantize_array(raw, quant)})["r"]
    assert np.abs(got - want).max() <= 0.5 * quant.scale[0] + 1e-6


# --- the op's own refusals ---------------------------------------------------------------------

@pytest.mark.parametrize(("attrs", "message"), [
    (dict(size=[4, 4], mode="bilinear", align_corners=True, half_pixel=True),
     "align_corners and half_pixel exclude each other"),
    (dict(size=[4, 4], mode="bicubic"), "mode must be one of"),
    (dict(size=[4]), "'size' must be \\[height, width\\]"),
    (dict(size=[0, 4]), "'size' must be \\[height, width\\]"),
])
def test_bad_attributes_are_one_error(attrs, message):
    b = GraphBuilder()
    x = b.input("x", (1, 3, 4, 4))
    with pytest.raises(EdgekitError, match=message):
        b.output(b.node("resize", [x], attrs))
        b.build()


def test_int8_bilinear_refuses_a_scale_that_reads_past_the_input():
    from edgekit.numerics.params import resize_taps

    with pytest.raises(EdgekitError, match="reads past its input"):
        resize_taps(3, 4000, "bilinear", True, False, integer=True)
