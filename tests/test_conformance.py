"""One conformance suite over every op x backend: each cell runs the op's case on the backend
against the op's numpy reference (or, for int8 backends that must agree bit for bit, against
the edgekit runtime), or finds the reason the op's module declares for not having it.

Adding an op is one module in ``edgekit/ops/`` plus its entry in ``CASES`` below;
``test_every_op_declares_every_backend`` fails until every backend of the new op is implemented
or declared, and ``test_readme_table_matches_declarations`` until the README's table is
regenerated (``python -m edgekit.ops.table --write README.md``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgekit.converters.builder import GraphBuilder
from edgekit.ops import BACKENDS, OPS, implementation
from edgekit.ops.table import CELLS, support_table
from edgekit.runtime import reference


@dataclass
class Case:
    """One op call: activation input shapes (batch first), param shapes (the op's weight slots,
    in order after the inputs), attributes, and the torch function whose export imports as the
    op (``torch_fn(*inputs, *params)``), when torch has one."""

    inputs: list[tuple[int, ...]]
    params: list[tuple[int, ...]] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)
    torch_fn: Any = None
    positive_params: bool = False
    positive_inputs: bool = False  # the op's domain (log, sqrt)
    indices: int = 0  # > 0: the first input holds int32 indices in [0, indices) (embedding)


def _F():
    import torch.nn.functional as F

    return F


def _torch():
    import torch

    return torch


CASES: dict[str, Case] = {
    # one group: TFLite has no grouped convolution (grouped and depthwise forms are checked
    # per backend in test_ops, test_quant, test_writers and, for learn, test_learn_units)
    "conv2d": Case([(2, 4, 9, 9)], [(6, 4, 3, 3), (6,)],
                   {"stride": [2, 1], "padding": [1, 1, 1, 1], "activation": "relu"},
                   lambda x, w, b: _F().relu(_F().conv2d(x, w, b, (2, 1), 1))),
    "conv1d": Case([(2, 3, 12)], [(5, 3, 3), (5,)], {"padding": [1, 1], "dilation": [2]},
                   lambda x, w, b: _F().conv1d(x, w, b, 1, 1, 2)),
    "linear": Case([(3, 10)], [(7, 10), (7,)], {"activation": "relu6"},
                   lambda x, w, b: _F().relu6(_F().linear(x, w, b))),
    "add": Case([(2, 3, 4, 4), (2, 3, 4, 4)], attrs={"activation": "relu"},
                torch_fn=lambda x, y: _F().relu(x + y)),
    "mul": Case([(2, 3, 4, 4), (2, 3, 4, 4)], torch_fn=lambda x, y: x * y),
    "relu": Case([(2, 3, 5, 5)], torch_fn=lambda x: _F().relu(x)),
    "relu6": Case([(2, 3, 5, 5)], torch_fn=lambda x: _F().relu6(x)),
    "leaky_relu": Case([(2, 3, 5, 5)], attrs={"alpha": 0.1},
                       torch_fn=lambda x: _F().leaky_relu(x, 0.1)),
    "maxpool2d": Case([(2, 3, 8, 8)], attrs={"kernel": [3, 3], "stride": [2, 2],
                                             "padding": [1, 1, 1, 1]},
                      torch_fn=lambda x: _F().max_pool2d(x, 3, 2, 1)),
    "avgpool2d": Case([(2, 3, 8, 8)], attrs={"kernel": [2, 2], "stride": [2, 2]},
                      torch_fn=lambda x: _F().avg_pool2d(x, 2, 2)),
    "global_avgpool": Case([(2, 5, 6, 6)], torch_fn=lambda x: _F().adaptive_avg_pool2d(x, 1)),
    "reshape": Case([(2, 3, 4, 4)], attrs={"shape": [48]}, torch_fn=lambda x: x.flatten(1)),
    "concat": Case([(2, 3, 4, 4), (2, 2, 4, 4)], attrs={"axis": 1},
                   torch_fn=lambda x, y: __import__("torch").cat([x, y], 1)),
    "softmax": Case([(3, 10)], attrs={"axis": -1}, torch_fn=lambda x: _F().softmax(x, -1)),
    "layernorm": Case([(2, 6, 8)], [(8,), (8,)], {"normalized_ndim": 1},
                      lambda x, g, b: _F().layer_norm(x, (8,), g, b)),
    "hardswish": Case([(2, 3, 5, 5)], torch_fn=lambda x: _F().hardswish(x)),
    "sigmoid": Case([(2, 3, 5, 5)], torch_fn=lambda x: _torch().sigmoid(x)),
    "tanh": Case([(2, 3, 5, 5)], torch_fn=lambda x: _torch().tanh(x)),
    "hardsigmoid": Case([(2, 3, 5, 5)], torch_fn=lambda x: _F().hardsigmoid(x)),
    "silu": Case([(2, 3, 5, 5)], torch_fn=lambda x: _F().silu(x)),
    "gelu": Case([(2, 3, 5, 5)], torch_fn=lambda x: _F().gelu(x)),
    "elu": Case([(2, 3, 5, 5)], attrs={"alpha": 0.5}, torch_fn=lambda x: _F().elu(x, 0.5)),
    "selu": Case([(2, 3, 5, 5)], torch_fn=lambda x: _F().selu(x)),
    "softplus": Case([(2, 3, 5, 5)], attrs={"beta": 2.0, "threshold": 1.5},
                     torch_fn=lambda x: _F().softplus(x, 2.0, 1.5)),
    "exp": Case([(2, 3, 5, 5)], torch_fn=lambda x: _torch().exp(x)),
    "log": Case([(2, 3, 5, 5)], torch_fn=lambda x: _torch().log(x), positive_inputs=True),
    "sqrt": Case([(2, 3, 5, 5)], torch_fn=lambda x: _torch().sqrt(x), positive_inputs=True),
    "square": Case([(2, 3, 5, 5)], torch_fn=lambda x: _torch().square(x)),
    # -- pad
    "pad": Case([(2, 3, 5, 6)], attrs={"pads": [0, 1, 2, 0, 2, 1], "mode": "reflect"},
                torch_fn=lambda x: _F().pad(x, (2, 1, 1, 2), mode="reflect")),
    # -- layout (transpose, slice, split, pixel shuffle)
    "transpose": Case([(2, 3, 4, 5)], attrs={"perm": [0, 3, 1, 2]},
                      torch_fn=lambda x: x.permute(0, 3, 1, 2)),
    "slice": Case([(2, 6, 7, 5)], attrs={"starts": [1, 0, 2], "stops": [5, 7, 5],
                                         "steps": [2, 3, 1]},
                  torch_fn=lambda x: x[:, 1:5:2, ::3, 2:]),
    # -- binary (sub, div, maximum, minimum), clip, prelu
    "sub": Case([(2, 3, 1, 5), (2, 1, 4, 5)], attrs={"activation": "relu"},
                torch_fn=lambda x, y: _F().relu(x - y)),  # both operands broadcast
    "div": Case([(2, 3, 4), (2, 3, 1)], torch_fn=lambda x, y: x / y, positive_inputs=True),
    "maximum": Case([(2, 3, 1), (2, 1, 4)], torch_fn=lambda x, y: _torch().maximum(x, y)),
    "minimum": Case([(2, 3, 4, 4), (2, 3, 4, 4)], torch_fn=lambda x, y: _torch().minimum(x, y)),
    "clip": Case([(2, 3, 5, 5)], attrs={"min": -0.5, "max": 1.0},
                 torch_fn=lambda x: _torch().clamp(x, -0.5, 1.0)),
    "prelu": Case([(2, 3, 5, 5)], [(3,)], torch_fn=lambda x, w: _F().prelu(x, w)),
    # -- reductions, log_softmax, glu
    "reduce_mean": Case([(2, 3, 4, 5)], attrs={"axes": [1, -1]},
                        torch_fn=lambda x: x.mean((1, -1))),
    "reduce_sum": Case([(2, 3, 4, 5)], attrs={"axes": [-1], "keepdims": True},
                       torch_fn=lambda x: x.sum(-1, keepdim=True)),
    "reduce_max": Case([(2, 4, 6)], attrs={"axes": [1]}, torch_fn=lambda x: x.amax(1)),
    "log_softmax": Case([(3, 4, 10)], attrs={"axis": 1},
                        torch_fn=lambda x: _F().log_softmax(x, 1)),
    # -- matmul, embedding
    "matmul": Case([(2, 3, 4, 5), (2, 1, 5, 6)], torch_fn=lambda x, y: _torch().matmul(x, y)),
    "embedding": Case([(2, 3, 4)], [(11, 6)], torch_fn=lambda i, w: _F().embedding(i, w),
                      indices=11),
    # -- resize (nearest, bilinear)
    "resize": Case([(2, 3, 5, 6)], attrs={"size": [10, 12], "mode": "bilinear",
                                          "half_pixel": True},
                   torch_fn=lambda x: _F().interpolate(x, scale_factor=2, mode="bilinear")),
    # -- transposed convolution, 1-D pooling
    # the Graph's weight is output-channels-first; torch's conv_transpose2d takes (Cin, Cout)
    "conv_transpose2d": Case([(2, 4, 5, 5)], [(6, 4, 3, 3), (6,)],
                             {"stride": [2, 2], "padding": [1, 1, 1, 1],
                              "output_padding": [1, 1]},
                             lambda x, w, b: _F().conv_transpose2d(x, w.transpose(0, 1), b, 2,
                                                                   1, 1)),
    # -- spiking
    "if_neuron": Case([(2, 6)], [(6,)], {"reset": "subtract"}, positive_params=True),
    "lif_neuron": Case([(2, 6)], [(6,)], {"reset": "zero", "leak": 0.8}, positive_params=True),
    # int8 spiking Graphs' integer ops: their spiking backends are checked bit for bit against
    # the references in tests/test_snn_int8.py (test_integer_ops_compute_their_references...)
    "sum_pool2d": Case([(2, 3, 7, 7)], attrs={"kernel": [3, 3], "stride": [2, 2]}),
    "global_sum": Case([(2, 4, 5, 5)]),
    "scaled_add": Case([(2, 3, 4, 4), (2, 3, 4, 4)], attrs={"multiplier": 37}),
}


def _arrays(case: Case, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal(s).astype(np.float32) for s in case.inputs]
    if case.positive_inputs:
        xs = [np.abs(x) + np.float32(0.1) for x in xs]
    if case.indices:
        xs[0] = rng.integers(0, case.indices, case.inputs[0]).astype(np.int32)
    ps = [rng.standard_normal(s).astype(np.float32) * 0.5 for s in case.params]
    if case.positive_params:
        ps = [np.abs(p) + 0.5 for p in ps]
    return xs, ps


def _graph(op: str, case: Case):
    _, ps = _arrays(case)
    b = GraphBuilder()
    names = [b.input(f"x{i}", (1, *s[1:]), "int32" if case.indices and i == 0 else "float32")
             for i, s in enumerate(case.inputs)]
    names += [b.param(p, f"p{i}") for i, p in enumerate(ps)]
    b.output(b.node(op, names, case.attrs, name=op))
    return b.build()


def _expected(graph, xs):
    return reference.evaluate(graph, dict(zip(graph.inputs, xs, strict=True)))[graph.outputs[0]]


def _close(got, want, rtol=1e-4):
    got = np.asarray(got)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(1.0, np.abs(want).max()))


def _target_or_skip(name: str):
    from edgekit.targets import get_target

    target = get_target(name)
    ok, why = target.available()
    if not ok:
        pytest.skip(f"{name}: {why}")
    return target


def _int8(graph, xs):
    """The op quantized with edgekit.quantize on its own inputs."""
    from edgekit import quantize

    return quantize(graph, xs if len(xs) > 1 else xs[0])


def _real(v, quant):
    """A param's real values, per channel along ``quant.axis`` (int8 weights, int32 biases)."""
    shape = [-1 if axis == quant.axis else 1 for axis in range(v.ndim)]
    scale, zp = (np.asarray(a, np.float64).reshape(shape) for a in (quant.scale, quant.zero_point))
    return ((v - zp) * scale).astype(np.float32)


def _quantized_reference(q, xs):
    """The numpy reference on what the int8 Graph really holds: its inputs and params
    dequantized (int8 weights, int32 biases), so only output rounding separates the two."""
    from edgekit.quant import dequantize_array, quantize_array

    node = q.nodes[0]
    values = []
    for slot, name in enumerate(node.inputs):
        t = q.tensors[name]
        if name in q.params:
            v = q.params[name]
            values.append(v if t.quant is None else _real(v, t.quant))
        elif t.quant is None:  # int32 indices
            values.append(xs[slot])
        else:
            values.append(dequantize_array(quantize_array(xs[slot], t.quant), t.quant))
    return OPS[node.op].reference(*values, **node.attrs)


def _edgekit_int8(q, xs):
    from edgekit import deploy
    from edgekit.quant import quantize_array

    raw = [x if q.tensors[n].quant is None else quantize_array(x, q.tensors[n].quant)
           for x, n in zip(xs, q.inputs, strict=True)]
    return raw, deploy(q, "cpu").run(raw if len(raw) > 1 else raw[0], raw=True)


# --- one check per backend ----------------------------------------------------------------

def check_float32(op, case):
    from edgekit.runtime import Executor

    graph = _graph(op, case)
    xs, _ = _arrays(case, 1)
    _close(Executor(graph).run(xs), _expected(graph, xs), rtol=1e-5)


def check_int8(op, case):
    from edgekit.quant import dequantize_array

    graph = _graph(op, case)
    xs, _ = _arrays(case, 1)
    q = _int8(graph, xs)
    _, got = _edgekit_int8(q, xs)
    out = q.tensors[q.outputs[0]].quant
    lo, hi = ((v - out.zero_point[0]) * out.scale[0] for v in (-128, 127))
    want = np.clip(_quantized_reference(q, xs), lo, hi)  # int8 outputs saturate
    err = np.abs(dequantize_array(got, out) - want).max()
    assert err <= 1.01 * out.scale[0], f"int8 {op}: {err / out.scale[0]:.2f} steps off"


def check_onnx(op, case):
    from edgekit import deploy

    _target_or_skip("cpu:onnxruntime")
    graph = _graph(op, case)
    xs, _ = _arrays(case, 1)
    _close(deploy(graph, "cpu:onnxruntime").run(xs), _expected(graph, xs))
    q = _int8(graph, xs)
    raw, ours = _edgekit_int8(q, xs)
    theirs = deploy(q, "cpu:onnxruntime").run(raw if len(raw) > 1 else raw[0], raw=True)
    assert np.abs(theirs.astype(int) - ours).max() <= 1  # QDQ: one step, docs/README


def check_tflite(op, case):
    from edgekit import deploy

    graph = _graph(op, case)
    xs, _ = _arrays(case, 1)
    _target_or_skip("cpu:litert")
    _close(deploy(graph, "cpu:litert").run(xs), _expected(graph, xs))
    _target_or_skip("cpu:tflite-micro")
    q = _int8(graph, xs)
    no_int8 = OPS[op].impls["tflite"].options.get("no_int8")
    if no_int8:  # a float32-only TFLite form: the writer refuses int8 with the declared reason
        from edgekit.converters.to_tflite import tflite_model
        from edgekit.errors import EdgekitError

        with pytest.raises(EdgekitError, match=re.escape(no_int8)):
            tflite_model(q)
        return
    raw, ours = _edgekit_int8(q, xs)
    theirs = deploy(q, "cpu:tflite-micro").run(raw if len(raw) > 1 else raw[0], raw=True)
    if op == "softmax":  # TFLM's LUT softmax: declared within a step (README)
        assert np.abs(theirs.astype(int) - ours).max() <= 1
    else:
        np.testing.assert_array_equal(theirs, ours)


def check_c(op, case):
    from edgekit import deploy

    _target_or_skip("mcu:qemu")
    graph = _graph(op, case)
    xs, _ = _arrays(case, 1)
    q = _int8(graph, xs)
    raw, ours = _edgekit_int8(q, xs)
    with deploy(q, "mcu:qemu") as board:
        theirs = board.run(raw if len(raw) > 1 else raw[0], raw=True)
    if op in ("softmax", "layernorm"):  # float inside on the board: within a step (README)
        assert np.abs(theirs.astype(int) - ours).max() <= 1
    else:
        np.testing.assert_array_equal(theirs, ours)


def check_gpu(op, case):
    """The gpu target's torch backend, on torch's CPU device (same code as on CUDA)."""
    pytest.importorskip("torch")
    from edgekit.targets.gpu import TorchSession

    graph = _graph(op, case)
    xs, _ = _arrays(case, 1)
    _close(TorchSession(graph, device="cpu").run(xs), _expected(graph, xs), rtol=1e-5)


def check_torch(op, case):
    torch = pytest.importorskip("torch")
    import edgekit
    from edgekit.runtime import Executor

    assert case.torch_fn is not None, f"CASES[{op!r}] needs a torch_fn for its torch import"
    xs, ps = _arrays(case)

    class Call(torch.nn.Module):
        def __init__(self):
            super().__init__()
            for i, p in enumerate(ps):
                self.register_buffer(f"p{i}", torch.from_numpy(p))

        def forward(self, *inputs):
            return case.torch_fn(*inputs, *self.buffers())

    graph = edgekit.from_torch(Call(), tuple(torch.from_numpy(x[:1]) for x in xs))
    assert op in {n.op for n in graph.nodes}, [n.op for n in graph.nodes]
    _close(Executor(graph).run(xs), _expected(_graph(op, case), xs))


def check_onnx_import(op, case):
    """What edgekit writes for the op, read back by the ONNX importer."""
    pytest.importorskip("onnx")
    import edgekit
    from edgekit.converters.to_onnx import onnx_model
    from edgekit.runtime import Executor

    graph = _graph(op, case)
    xs, _ = _arrays(case, 1)
    back = edgekit.from_onnx(onnx_model(graph))
    assert op in {n.op for n in back.nodes}, [n.op for n in back.nodes]
    _close(Executor(back).run(xs), _expected(graph, xs))


def check_learn(op, case):
    """The op inside a trainable chain: the learning forward pass equals the reference."""
    from edgekit.learn import blocks as L

    if op == "softmax":
        return _check_learn_as_output(op, case)
    xs, _ = _arrays(case, 1)
    rng = np.random.default_rng(2)
    b = GraphBuilder()
    x = b.input("x", (1, *case.inputs[0][1:]))
    if op not in ("conv2d", "linear"):  # a first trainable layer the op joins
        c = case.inputs[0][1]
        first = "conv2d" if len(case.inputs[0]) == 4 else "linear"
        w = rng.standard_normal((c, c, 1, 1) if first == "conv2d" else (c, c)) * 0.5
        w = np.abs(w) if case.positive_inputs else w  # keeps the op's input in its domain
        x = b.node(first, [x, b.param(w, "w0"), b.param(np.zeros(c), "b0")])
    _, ps = _arrays(case)
    y = b.node(op, [x, *(b.param(p, f"p{i}") for i, p in enumerate(ps))], case.attrs)
    flat = b.node("reshape", [y], {"shape": [int(np.prod(b.shape(y)[1:]))]})
    head = rng.standard_normal((4, b.shape(flat)[1])).astype(np.float32)
    b.output(b.node("linear", [flat, b.param(head, "wh"), b.param(np.zeros(4), "bh")]))
    graph = b.build()
    h = xs[0]
    for block in L.from_graph(graph):
        h, _ = L.forward(block, h, keep=False)
    _close(h, _expected(graph, xs[:1]))


def _check_learn_as_output(op, case):
    """An op trained only as the graph's output, where training reads the logits before it:
    there the chain's forward pass gives the logits; anywhere else the chain is refused."""
    from edgekit.errors import EdgekitError
    from edgekit.learn import blocks as L

    xs, _ = _arrays(case, 1)
    c = case.inputs[0][1]
    w = np.random.default_rng(2).standard_normal((c, c)).astype(np.float32)

    def chain(head: bool):
        b = GraphBuilder()
        x = b.input("x", (1, c))
        logits = b.node("linear", [x, b.param(w, "w"), b.param(np.zeros(c), "b")])
        y = b.node(op, [logits], case.attrs)
        b.output(b.node("linear", [y, b.param(w, "wh"), b.param(np.zeros(c), "bh")]) if head else y)
        return b.build(), logits

    graph, logits = chain(head=False)
    h = xs[0]
    for block in L.from_graph(graph):
        h, _ = L.forward(block, h, keep=False)
    _close(h, reference.evaluate(graph, {"x": xs[0]})[logits])
    with pytest.raises(EdgekitError, match="graph's output"):
        L.from_graph(chain(head=True)[0])


CHECKS = {"float32": check_float32, "int8": check_int8, "onnx": check_onnx,
          "tflite": check_tflite, "c": check_c, "gpu": check_gpu, "torch": check_torch,
          "onnx_import": check_onnx_import, "learn": check_learn}
SLOW = {"c"}


def _cells():
    for op in sorted(OPS):
        for backend in CELLS:
            marks = [pytest.mark.slow] if backend in SLOW else []
            yield pytest.param(op, backend, id=f"{op}-{backend}", marks=marks)


@pytest.mark.parametrize(("op", "backend"), list(_cells()))
def test_cell(op, backend):
    spec = OPS[op]
    if spec.implementation(backend) is None:
        assert spec.reasons.get(backend), f"{op} on {backend}: neither implemented nor declared"
        return
    if backend not in CHECKS:
        pytest.skip(f"{backend}: checked by the spiking suites (tests/test_snn*.py)")
    if spec.neuron:
        pytest.skip("neurons run over time steps: checked by the spiking suites")
    CHECKS[backend](op, CASES[op])


def test_every_op_has_a_case():
    assert sorted(CASES) == sorted(OPS)


def test_every_op_declares_every_backend():
    undeclared = [f"{op}/{backend}" for op, spec in OPS.items() for backend in BACKENDS
                  if backend not in spec.impls and backend not in spec.reasons]
    assert not undeclared, f"neither implemented nor declared: {undeclared}"


def test_readme_table_matches_declarations():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert support_table() in readme, \
        "README's op table is stale: python -m edgekit.ops.table --write README.md"


def test_implementation_lookup_names_reasons():
    from edgekit.errors import EdgekitError
    from edgekit.ops import missing

    declared = [(op, b) for op, s in OPS.items() for b in s.reasons]
    if not declared:
        pytest.skip("no backend declares a missing op yet")
    op, backend = declared[0]
    assert implementation(op, backend) is None
    with pytest.raises(EdgekitError, match=OPS[op].reasons[backend].split(":")[0][:30]):
        missing([op], backend, backend)
