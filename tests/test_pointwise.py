"""The pointwise ops (``edgekit.ops.pointwise``) beyond their conformance cells: the int8 table's
rounding and its NaN entries, the forms the conformance case of an op does not pick (gelu's tanh
form, ELU's builtin, ONNX's own Softplus and Gelu), what torch.export records (in-place ATen
names, selu decomposed into elu), sources with other parameters refused by name, and the
gradients on-device learning takes through them against torch autograd."""

from __future__ import annotations

import numpy as np
import pytest
from test_conformance import CHECKS, Case

from edgekit.errors import EdgekitError, UnsupportedOpsError
from edgekit.graph import QuantParams
from edgekit.numerics.params import lut_params

torch = pytest.importorskip("torch")
F = torch.nn.functional
nn = torch.nn


def test_table_rounds_half_away_from_zero_within_half_a_step():
    """Identity onto a scale twice the input's puts every odd input on a tie: the table rounds
    it away from zero, as edgekit's quantizer does; elsewhere it is f within half a step."""
    table = lut_params(QuantParams([0.5], [3]), QuantParams([1.0], [-1]), lambda v: v).table
    x = np.arange(-128, 128)
    halves = (x - 3) / 2
    np.testing.assert_array_equal(table, np.clip(np.sign(halves) * np.floor(np.abs(halves) + 0.5)
                                                 - 1, -128, 127))
    q_in, q_out = QuantParams([0.04], [-7]), QuantParams([0.003], [-128])
    table = lut_params(q_in, q_out, np.tanh).table.astype(float)
    want = np.clip(np.tanh((x + 7) * np.float32(0.04)) / np.float32(0.003) - 128, -128, 127)
    assert np.abs(table - want).max() <= 0.5 + 1e-9
    with pytest.raises(ValueError):
        lut_params(q_in, q_out, np.tanh).table[0] = 1  # read-only: shared by every consumer


def test_log_and_sqrt_tables_hold_the_lowest_value_outside_their_domain():
    q_in, q_out = QuantParams([0.1], [0]), QuantParams([0.05], [0])
    x = np.arange(-128, 128)
    for fn in (np.log, np.sqrt):
        table = lut_params(q_in, q_out, fn).table
        assert (table[x < 0] == -128).all() and (table[x > 20] > -128).all()
    assert lut_params(q_in, q_out, np.log).table[128] == -128  # log(0) = -inf


@pytest.mark.parametrize(("op", "attrs", "torch_fn"), [
    ("gelu", {"approximate": "tanh"}, lambda x: F.gelu(x, approximate="tanh")),
    ("elu", {"alpha": 1.0}, lambda x: F.elu(x)),  # TFLite's own ELU
    ("softplus", {}, lambda x: F.softplus(x)),  # beta 1, threshold 20
])
@pytest.mark.parametrize("backend", ["float32", "int8", "onnx", "tflite", "gpu", "torch",
                                     "onnx_import"])
def test_other_forms(op, attrs, torch_fn, backend):
    CHECKS[backend](op, Case([(2, 3, 5, 5)], attrs=attrs, torch_fn=torch_fn))


def _imported(module, x, decompose=False):
    import edgekit

    program = torch.export.export(module.eval(), (x,))
    return edgekit.from_torch(program.run_decompositions() if decompose else program)


_STOCK = [(nn.Hardswish(inplace=True), "hardswish"), (nn.Hardsigmoid(inplace=True), "hardsigmoid"),
          (nn.SiLU(inplace=True), "silu"), (nn.ELU(0.3, inplace=True), "elu"),
          (nn.SELU(inplace=True), "selu"), (nn.GELU("tanh"), "gelu")]


# core ATen spells hardswish, hardsigmoid and silu out in clamps and a product: only the stock
# export holds them whole
@pytest.mark.parametrize(("act", "op", "decompose"), [
    *((act, op, False) for act, op in _STOCK),
    *((act, op, True) for act, op in _STOCK if op in ("elu", "selu", "gelu"))])
def test_torch_export_in_place_and_decomposed(act, op, decompose):
    """torch.export keeps in-place calls (hardswish_, silu_, ...) as users save it; core ATen
    keeps selu as elu with SELU's scale, which imports as selu again."""
    from edgekit.runtime import Executor

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), act)
    x = torch.randn(4, 6)
    graph = _imported(model, x[:1], decompose)
    assert [n.op for n in graph.nodes] == ["linear", op]
    with torch.no_grad():
        want = model(x.clone()).numpy()
    np.testing.assert_allclose(Executor(graph).run(x.numpy()), want, rtol=1e-5, atol=1e-6)


def test_x_squared_imports_as_square_and_other_powers_are_named():
    import edgekit

    class Power(nn.Module):
        def __init__(self, p):
            super().__init__()
            self.p = p

        def forward(self, x):
            return x ** self.p

    x = torch.randn(1, 5)
    assert [n.op for n in _imported(Power(2), x).nodes] == ["square"]
    with pytest.raises(UnsupportedOpsError, match="exponent other than a constant 2"):
        edgekit.from_torch(Power(3), (x,))


def _onnx_model(node, opset=17):
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])],
        [helper.make_tensor("two", TensorProto.FLOAT, [], [3.0])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_onnx_builtins_import_with_their_meaning():
    """ONNX's Softplus (no beta, no threshold) and opset 20's Gelu read as the ops, and
    compute what ONNX Runtime computes."""
    ort = pytest.importorskip("onnxruntime")
    from onnx import helper

    import edgekit
    from edgekit.runtime import Executor

    x = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32) * 4
    x[0, 0] = 30.0  # beyond torch's threshold
    for node, opset, op in [(helper.make_node("Softplus", ["x"], ["y"]), 17, "softplus"),
                            (helper.make_node("Gelu", ["x"], ["y"], approximate="tanh"), 20,
                             "gelu")]:
        model = _onnx_model(node, opset)
        graph = edgekit.from_onnx(model)
        assert [(n.op, n.attrs) for n in graph.nodes] == [(op, graph.nodes[0].attrs)]
        want = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
        np.testing.assert_allclose(Executor(graph).run(x), want, rtol=1e-5, atol=1e-6)
    assert graph.nodes[0].attrs == {"approximate": "tanh"}


@pytest.mark.parametrize(("node", "message"), [
    (("HardSigmoid", {}), "HardSigmoid(alpha=0.2"),  # ONNX's default is not torch's
    (("Selu", {"alpha": 2.0}), "Selu(alpha=2.0"),
    (("Pow", {}), "exponent other than a constant 2")])
def test_onnx_variants_the_op_is_not_are_named(node, message):
    pytest.importorskip("onnx")
    from onnx import helper

    import edgekit

    op_type, attrs = node
    inputs = ["x", "two"] if op_type == "Pow" else ["x"]
    model = _onnx_model(helper.make_node(op_type, inputs, ["y"], **attrs))
    with pytest.raises(UnsupportedOpsError, match=message.replace("(", r"\(")):
        edgekit.from_onnx(model)


class _Fn(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


LEARNED = {"sigmoid": nn.Sigmoid(), "tanh": nn.Tanh(), "hardsigmoid": nn.Hardsigmoid(),
           "elu": nn.ELU(0.5), "selu": nn.SELU(), "exp": _Fn(torch.exp), "log": _Fn(torch.log),
           "sqrt": _Fn(torch.sqrt),
           # their output does not give their input: the derivative reads the kept input
           "gelu": nn.GELU(), "hardswish": nn.Hardswish(), "silu": nn.SiLU(),
           "softplus": nn.Softplus(), "square": _Fn(torch.square)}


@pytest.mark.parametrize("op", sorted(LEARNED))
def test_learning_gradients_equal_torch_autograd(op):
    """Through the op after a conv (behind a max pool) and after a linear: every weight and bias
    gradient within 1e-5 of autograd's. log and sqrt get positive inputs and weights."""
    from test_learn import assert_bp_matches_autograd

    import edgekit
    from edgekit.learn.blocks import from_graph

    torch.manual_seed(3)
    act = LEARNED[op]
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), act, nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(12, 8), act, nn.Linear(8, 4))
    x = torch.randn(5, 1, 4, 4)
    if op in ("log", "sqrt"):
        with torch.no_grad():
            for m in net:
                if isinstance(m, nn.Conv2d | nn.Linear):
                    m.weight.abs_()
                    m.bias.uniform_(0.5, 1.0)
        x = x.abs() + 0.1
    y = torch.tensor([0, 3, 1, 3, 2])
    blocks = from_graph(edgekit.from_torch(net.eval(), (x[:1],)))
    assert len(blocks) == 3 and all(b.pointwise for b in blocks[:2])
    assert_bp_matches_autograd(net, blocks, x, y, 4)


def test_learning_keeps_the_input_only_where_the_output_does_not_give_the_derivative():
    import edgekit
    from edgekit.learn.blocks import from_graph

    for act, from_input in [(nn.SiLU(), True), (nn.Sigmoid(), False)]:
        net = nn.Sequential(nn.Linear(4, 4), act, nn.Linear(4, 2))
        blocks = from_graph(edgekit.from_torch(net.eval(), (torch.randn(1, 4),)))
        assert blocks[0].pointwise.from_input is from_input


def test_spiking_conversion_refuses_them():
    """to_snn turns ReLUs into neurons; a pointwise nonlinearity is refused when converting, as
    its declared reason says, not when the spiking Graph later fails to deploy."""
    from edgekit.converters.builder import GraphBuilder
    from edgekit.converters.snn import to_snn

    b = GraphBuilder()
    x = b.input("x", (1, 4))
    h = b.node("linear", [x, b.param(np.eye(4), "w"), b.param(np.zeros(4), "b")],
               {"activation": "relu"})
    y = b.node("tanh", [h], name="squash")
    b.output(b.node("linear", [y, b.param(np.ones((2, 4)), "w2"), b.param(np.zeros(2), "b2")]))
    with pytest.raises(EdgekitError, match=r"tanh \(squash\) has no rate-coded spiking"):
        to_snn(b.build(), np.random.default_rng(0).random((8, 4), np.float32), 4)
