"""The executor on whole graphs: parity with the reference at several batch sizes, input checks,
and memory: the reported peak is the arena it really allocates."""

import numpy as np
import pytest

from edgekit import EdgekitError
from edgekit.converters.builder import GraphBuilder
from edgekit.graph import Graph, Node, QuantParams, TensorInfo
from edgekit.runtime import Executor, GreedyPlanner, NaivePlanner, execute, reference


def residual_cnn(seed: int = 0) -> Graph:
    """conv -> relu -> conv, + residual add of the first conv, maxpool, flatten, linear."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder()
    x = b.input("x", (1, 3, 12, 12))
    c1 = b.node("conv2d", [x, b.param(rng.normal(size=(8, 3, 3, 3)), "c1.w"),
                           b.param(rng.normal(size=8), "c1.b")], {"padding": [1, 1, 1, 1]},
                name="c1")
    r = b.node("relu", [c1], name="act")  # c1 also feeds the add, so relu stays a node
    c2 = b.node("conv2d", [r, b.param(rng.normal(size=(8, 8, 3, 3)) * 0.3, "c2.w")],
                {"padding": [1, 1, 1, 1]}, name="c2")
    y = b.node("add", [c2, c1], {"activation": "relu"}, name="res")
    y = b.node("maxpool2d", [y], {"kernel": [2, 2], "stride": [2, 2]}, name="pool")
    y = b.node("reshape", [y], {"shape": [8 * 6 * 6]}, name="flat")
    b.output(b.node("linear", [y, b.param(rng.normal(size=(10, 288)) * 0.1, "fc.w"),
                               b.param(rng.normal(size=10), "fc.b")], name="fc"))
    return b.build()


def assert_close(got, want):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.fixture(scope="module")
def graph():
    g = residual_cnn()
    assert [n.op for n in g.nodes] == ["conv2d", "relu", "conv2d", "add", "maxpool2d",
                                       "reshape", "linear"]
    return g


@pytest.mark.parametrize("batch", [1, 5])
def test_matches_reference_whole_and_per_layer(graph, batch):
    x = np.random.default_rng(batch).normal(size=(batch, 3, 12, 12)).astype(np.float32)
    want = reference.evaluate(graph, {"x": x})
    ex = Executor(graph)
    assert_close(ex.run(x), want[graph.outputs[0]])
    layers = ex.run_layers(x)
    assert set(layers) == {n.outputs[0] for n in graph.nodes}
    for name, got in layers.items():
        assert_close(got, want[name])
    assert_close(execute(graph, x.astype(np.float64)), want[graph.outputs[0]])


def test_rejects_inputs_that_do_not_fit(graph):
    ex = Executor(graph)
    with pytest.raises(EdgekitError,
                       match=r"'x': expected shape \(N, 3, 12, 12\), got \(1, 3, 12, 11\)"):
        ex.run(np.zeros((1, 3, 12, 11), np.float32))
    with pytest.raises(EdgekitError, match=r"expected shape .* got \(3, 12, 12\)"):
        ex.run(np.zeros((3, 12, 12), np.float32))
    with pytest.raises(EdgekitError, match=r"got complex64 data \(complex numbers\)"):
        ex.run(np.zeros((1, 3, 12, 12), np.complex64))
    with pytest.raises(EdgekitError, match=r"got inputs \['y'\], the graph takes \['x'\]"):
        ex.run({"y": np.zeros((1, 3, 12, 12), np.float32)})


def test_peak_is_the_arena_allocated(graph):
    ex = Executor(graph)
    for batch in (1, 5):
        program = ex.program(batch)
        assert ex.peak_activation_bytes(batch) == program.arena.nbytes == program.plan.size
        assert program.arena.dtype == np.uint8
        for name in (n for n in graph.tensors if n not in graph.params):
            assert np.shares_memory(program.arrays[name], program.arena), name
        assert ex.program(batch) is program
    assert ex.peak_activation_bytes(5) > ex.peak_activation_bytes(1)
    assert ex.peak_activation_bytes(1) < ex.program(1, NaivePlanner()).arena.nbytes


def test_peak_counts_input_output_and_scratch():
    """One conv: input, output and its scratch (the channels-last copy and the window rows)
    are all live in its one step."""
    b = GraphBuilder()
    x = b.input("x", (1, 4, 6, 6))
    b.output(b.node("conv2d", [x, b.param(np.ones((5, 4, 3, 3)), "w")]))
    pixels = 4 * 4
    sizes = (4 * 36 * 4, 5 * pixels * 4, (36 * 4 + pixels * 4 * 9) * 4)  # input, output, scratch
    assert Executor(b.build()).peak_activation_bytes() == sum(-(-s // 16) * 16 for s in sizes)


def test_outputs_are_copies(graph):
    ex = Executor(graph)
    x = np.ones((2, 3, 12, 12), np.float32)
    first = ex.run(x)
    kept = first.copy()
    ex.run(-x)
    np.testing.assert_array_equal(first, kept)
    assert not np.shares_memory(first, ex.program(2).arena)


def test_several_inputs_and_outputs():
    b = GraphBuilder()
    u, v = b.input("u", (1, 2, 3)), b.input("v", (1, 4, 3))
    cat = b.node("concat", [u, v], {"axis": 1})
    b.output(cat)
    b.output(b.node("softmax", [cat], {"axis": 1}))
    ex = Executor(b.build(), GreedyPlanner())
    a, c = np.ones((3, 2, 3), np.float32), np.zeros((3, 4, 3), np.float32)
    by_name, by_order = ex.run({"v": c, "u": a}), ex.run([a, c])
    for got in (by_name, by_order):
        assert isinstance(got, list) and len(got) == 2
        assert_close(got[0], np.concatenate([a, c], axis=1))
    with pytest.raises(EdgekitError, match="takes 2 inputs"):
        ex.run(a)
    with pytest.raises(EdgekitError, match="different batch sizes"):
        ex.run([a, c[:2]])


def test_missing_kernels_are_listed():
    q = QuantParams([1.0], [0])
    g = Graph(["x"], ["y"],
              {"x": TensorInfo((1, 4), "int32", q), "y": TensorInfo((1, 4), "int32", q)},
              [Node("relu", ["x"], ["y"], name="act")])
    with pytest.raises(EdgekitError, match=r"no kernel for relu on int32 \(node 0 'act'\).*"
                                           r"relu/float32"):
        Executor(g)
    g.nodes[0].op = "mish"
    with pytest.raises(EdgekitError, match="unknown op 'mish'"):
        Executor(g)
