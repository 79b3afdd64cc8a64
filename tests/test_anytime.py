"""Anytime networks: TIPS scores, the sub-network table, running any path per call on one set of
weights (float and int8), extraction to plain models, selection and the command line."""

import copy
import json

import numpy as np
import pytest

import edgekit
from edgekit.anytime import table as tbl
from edgekit.anytime.runtime import PLANNER, AnytimeRunner, PathSessions
from edgekit.anytime.select import front, measure, select
from edgekit.anytime.tips import PathSampler, dag, importance, tas
from edgekit.errors import EdgekitError

torch = pytest.importorskip("torch")


def test_tas_under_uniform_sampling_is_the_share_of_signal_through_each_node():
    names, mats = dag(2)
    q = np.full(len(mats), 1 / len(mats))
    score = dict(zip(names, tas(mats, q, names.index("v2")), strict=True))
    # every walk crosses the residual stream; branch a is in 2/3 of the paths, b in 1/3, and
    # the signal entering v_{i+1} splits as H: identity 1, a 2/3, b 1/3 (of 2)
    assert score["v0"] == pytest.approx(1) and score["v1"] == pytest.approx(1)
    assert score["h0a"] == pytest.approx(1 / 3) and score["h1b"] == pytest.approx(1 / 6)


def test_tips_samples_the_paths_carrying_most_signal_more_and_every_path_some():
    q = importance(3, mix=0.5)
    assert q.sum() == pytest.approx(1)
    assert q.argmax() == len(q) - 1 and q.argmin() == 0  # "222" most, "000" least
    assert q.min() > 0.5 / len(q)
    assert np.allclose(importance(3, mix=0.0), 1 / len(q))
    drawn = PathSampler(3, "uniform", sandwich=True, seed=1).draw(2)
    assert drawn[:2] == ["222", "000"] and len(drawn) == 4  # the sandwich rule's ends, then 2


@pytest.fixture(scope="module")
def tiny():
    """An untrained two-block supernet (9 paths) lowered to its anytime Graph."""
    from edgekit.anytime.lower import to_graph
    from edgekit.anytime.supernet import AnytimeNet

    torch.manual_seed(0)
    net = AnytimeNet(blocks=2, channels=4, hidden=6).eval()
    with torch.no_grad():  # branches far from zero, so a wrong path shows in the outputs
        for block in net.blocks:
            for branch in (block.a, block.b):
                branch[-1].weight.mul_(4)
                branch[-1].bias.normal_()
    x = np.random.default_rng(0).random((5, 1, 8, 8), np.float32)
    return net, to_graph(net), x


def test_every_path_runs_as_torch_and_as_its_extracted_plain_graph(tiny):
    net, graph, x = tiny
    runner = AnytimeRunner(graph)
    for path in graph.metadata["anytime"]["paths"]:
        y = runner.run(x, path=path)
        want = net(torch.from_numpy(x), path).detach().numpy()
        np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)
        plain = tbl.extract(graph, path)
        assert "anytime" not in plain.metadata
        assert plain.nodes.__len__() == len(tbl.plan(graph, path).nodes)
        assert all(plain.params[k] is graph.params[k] for k in plain.params)  # not copies
        np.testing.assert_array_equal(edgekit.runtime.execute(plain, x), y)
        macs = sum(plain.node_macs(n) for n in plain.nodes)
        assert macs == graph.metadata["anytime"]["paths"][path]["macs"]


def test_switching_paths_reuses_the_full_programs_steps(tiny):
    _, graph, x = tiny
    runner = AnytimeRunner(graph)
    runner.run(x[:1], path="22")
    program = runner.executor.program(1, PLANNER)
    full = {id(s) for s in program.steps}
    for path in ("00", "10", "21"):
        steps = runner.steps(path, 1)
        reused = [s for s in steps if id(s) in full]
        assert len(reused) == len(tbl.plan(graph, path).nodes)  # only copies are new
        assert len(steps) - len(reused) <= 2  # at most one copy per block
    assert runner.executor.program(1, PLANNER) is program and len(runner.executor._programs) == 1


def test_session_budget_picks_the_best_path_that_fits(tiny):
    _, graph, x = tiny
    g = measure(graph, x, np.arange(5) % 3)
    session = edgekit.deploy(g, "cpu")
    for budget in ("100%", "50%", 1_000_000, str(g.metadata["anytime"]["full_macs"])):
        path = tbl.choose(g, budget)
        assert tbl.parse_budget(g, budget)[0] == "macs"
        assert tbl.path_macs(g, path) <= tbl.parse_budget(g, budget)[1]
        np.testing.assert_array_equal(session.run(x, budget=budget),
                                      AnytimeRunner(g).run(x, path=path))
    np.testing.assert_array_equal(session.run(x), AnytimeRunner(g).run(x, path="22"))
    smallest = min(e["macs"] for e in g.metadata["anytime"]["paths"].values())
    with pytest.raises(EdgekitError, match="below the smallest"):
        session.run(x, budget=smallest - 1)
    for bad in ("half", "-5%", "0", "nan%", "inf", True):
        with pytest.raises(EdgekitError, match="budget"):
            session.run(x, budget=bad)
    plain = tbl.extract(g, "11")
    with pytest.raises(EdgekitError, match="not an anytime network"):
        edgekit.deploy(plain, "cpu").run(x, budget="50%")


def test_front_and_selection(tiny):
    _, graph, x = tiny
    g = measure(graph, x, np.array([0, 1, 2, 0, 1]))
    rows = front(g)
    assert [r["macs"] for r in rows] == sorted(r["macs"] for r in rows)
    assert all(a["accuracy"] < b["accuracy"] for a, b in zip(rows, rows[1:]))
    for row in select(g, ["25%", "60%", "100%"]):
        assert row["macs"] <= row["limit"]["macs"]
        best = max(e["accuracy"] for e in g.metadata["anytime"]["paths"].values()
                   if e["macs"] <= row["limit"]["macs"])
        assert row["accuracy"] == best
    with pytest.raises(EdgekitError, match="no per-path latency_ms"):
        select(g, ["2ms"])


def test_latency_and_energy_budgets_on_a_device_profile(tiny):
    from edgekit.anytime.costs import annotate

    _, graph, x = tiny
    g = annotate(measure(graph, x, np.array([0, 1, 2, 0, 1])), "cortex-m4")
    paths = g.metadata["anytime"]["paths"]
    by_macs = sorted(paths.values(), key=lambda e: e["macs"])
    assert [e["latency_ms"] for e in by_macs] == sorted(e["latency_ms"] for e in by_macs)
    assert all(e["energy_uj"] > 0 for e in by_macs)
    mid = by_macs[len(by_macs) // 2]
    for budget, key, limit in [(f"{mid['latency_ms']}ms", "latency_ms", mid["latency_ms"]),
                               (f"{mid['latency_ms'] * 1e3}us", "latency_ms", mid["latency_ms"]),
                               (f"{mid['energy_uj']}uJ", "energy_uj", mid["energy_uj"])]:
        row = select(g, [budget])[0]
        assert row["limit"] == {key: pytest.approx(limit)} and row[key] <= limit * (1 + 1e-9)
        best = max(e["accuracy"] for e in paths.values() if e[key] <= limit * (1 + 1e-9))
        assert row["accuracy"] == best
    with pytest.raises(EdgekitError, match="below the smallest"):
        tbl.choose(g, f"{by_macs[0]['energy_uj'] / 2}uJ")


def test_int8_runs_every_path_on_one_int8_graph_as_its_extracted_graph(tiny):
    _, graph, x = tiny
    calib = np.random.default_rng(1).random((32, 1, 8, 8), np.float32)
    q = edgekit.quantize(graph, calib)
    runner = AnytimeRunner(q)
    session = edgekit.deploy(q, "cpu")
    xq = edgekit.quant.quantize_array(x, q.tensors[q.inputs[0]].quant)
    for path in ("00", "12", "21", "22"):
        raw = runner.run(xq, path=path, raw=True)
        assert raw.dtype == np.int8
        np.testing.assert_array_equal(raw, edgekit.deploy(tbl.extract(q, path)).run(xq, raw=True))
    np.testing.assert_array_equal(session.run(x, budget="100%"), runner.run(x, path=tbl.choose(
        q, "100%")))


def test_int8_calibration_observes_the_paths_budgets_choose(tiny):
    """Calibrated on the full path alone, most of the tiny net's paths clipped their logits
    (errors of 100-450 output steps); over the paths, each path is within a few steps."""
    _, measured, x = tiny
    graph = copy.deepcopy(measured)  # no accuracies (other tests measure the fixture): all paths
    for entry in graph.metadata["anytime"]["paths"].values():
        entry.pop("accuracy", None)
    q = edgekit.quantize(graph, np.random.default_rng(1).random((32, 1, 8, 8), np.float32))
    step = float(np.max(q.tensors[q.outputs[0]].quant.scale))
    fl, i8 = AnytimeRunner(graph), AnytimeRunner(q)
    for path in graph.metadata["anytime"]["paths"]:
        assert np.abs(i8.run(x, path=path) - fl.run(x, path=path)).max() <= 3 * step, path
    g = measure(graph, x, np.arange(5) % 3)  # measured: the front's paths, and the full path
    chosen = [p.metadata["anytime_path"] for p in tbl.calibration_graphs(g)]
    assert chosen == list(dict.fromkeys(["22", *(r["path"] for r in front(g))]))


def test_a_path_exports_as_a_plain_model(tiny, tmp_path):
    _, graph, x = tiny
    plain = tbl.extract(graph, "21")
    from edgekit.converters.to_c import to_c
    from edgekit.converters.to_tflite import to_tflite

    assert to_tflite(plain, tmp_path / "p.tflite").stat().st_size > 0
    assert (to_c(edgekit.quantize(plain, x), tmp_path / "c")).exists()
    pytest.importorskip("onnxruntime")
    from edgekit.converters.to_onnx import to_onnx

    to_onnx(plain, tmp_path / "p.onnx")
    y = edgekit.deploy(edgekit.from_onnx(tmp_path / "p.onnx"), "cpu:onnxruntime").run(x)
    np.testing.assert_allclose(y, AnytimeRunner(graph).run(x, path="21"), rtol=1e-4, atol=1e-5)
    with PathSessions(graph, "cpu:onnxruntime") as sessions:  # a budget on another runtime
        for path in ("00", "21"):
            np.testing.assert_allclose(sessions.run(x, path=path), AnytimeRunner(graph).run(
                x, path=path), rtol=1e-4, atol=1e-5)
        assert sessions.run(x, budget="100%").shape == (5, 10)


def test_training_is_deterministic_and_fixed_path_training_trains_that_path():
    from edgekit.anytime.supernet import AnytimeNet
    from edgekit.anytime.train import train_supernet

    rng = np.random.default_rng(0)
    x, y = rng.random((40, 1, 8, 8), np.float32), rng.integers(0, 3, 40)

    def run(**kw):
        torch.manual_seed(0)
        net = AnytimeNet(blocks=2, channels=4, hidden=4, classes=3)
        before = {k: v.clone() for k, v in net.state_dict().items()}
        train_supernet(x, y, epochs=1, seed=3, net=net, **kw)
        return before, net.state_dict()

    (_, a), (_, b) = run(sampling="tips"), run(sampling="tips")
    assert all(torch.equal(a[k], b[k]) for k in a)
    before, after = run(sampling="uniform", fixed_path="10")
    assert torch.equal(before["blocks.0.b.0.weight"], after["blocks.0.b.0.weight"])
    assert not torch.equal(before["blocks.0.a.0.weight"], after["blocks.0.a.0.weight"])
    with pytest.raises(EdgekitError, match="sampling"):
        train_supernet(x, y, sampling="greedy")


def test_cli_train_select_run_profile(tmp_path, capsys):
    from edgekit.cli import main

    rng = np.random.default_rng(0)
    x = rng.random((60, 1, 8, 8), np.float32)
    y = (x.mean((1, 2, 3)) > 0.5).astype(np.int64)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    np.save(tmp_path / "x.npy", x[:4])
    net = str(tmp_path / "net.ekm")

    def cli(*args: str) -> str:
        assert main(list(args)) == 0
        return capsys.readouterr().out

    assert "wrote" in cli("anytime", "train", "-o", net, "--data", str(tmp_path / "d.npz"),
                          "--epochs", "1", "--sampling", "uniform", "--seed", "2")
    assert edgekit.load(net).metadata["anytime"]["training"]["sampling"] == "uniform"

    rows = json.loads(cli("anytime", "select", net, "--budgets", "25%,50%,75%,100%", "--data",
                          str(tmp_path / "d.npz"), "--json"))
    assert [r["budget"] for r in rows] == ["25%", "50%", "75%", "100%"]
    assert all({"budget", "macs", "accuracy", "path"} <= set(r) for r in rows)
    out = json.loads(cli("run", net, "--input", str(tmp_path / "x.npy"), "--budget", "50%",
                         "--json"))
    assert out["path"] == tbl.choose(edgekit.load(net), "50%") and out["shape"] == [4, 2]
    assert "accuracy-cost curve" in cli("profile", net, "--runs", "2", "--warmup", "1")
    for args, message in [
        (("anytime", "select", str(tmp_path / "x.npy")), "unknown model format"),
        (("run", net, "--input", str(tmp_path / "x.npy"), "--budget", "1"), "below the smallest"),
        (("anytime", "select", net, "--budgets", "lots"), "budget 'lots'"),
        (("anytime", "train", "-o", str(tmp_path / "b.ekm"), "--data", str(tmp_path / "x.npy")),
         "needs labels"),
    ]:
        assert main(list(args)) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def _board_missing() -> str | None:
    from edgekit.firmware_bridge.board import qemu_missing
    from edgekit.firmware_bridge.build import toolchain_missing

    return toolchain_missing() or qemu_missing()


@pytest.fixture(scope="module")
def tiny_on_board(tiny):
    """The tiny supernet's int8 Graph, its int8 test inputs and one board running its one
    anytime image (every path's steps, the shared weights, the sub-network table)."""
    if _board_missing():
        pytest.skip(f"MCU target unavailable: {_board_missing()}")
    _, graph, x = tiny
    q = edgekit.quantize(graph, np.random.default_rng(1).random((32, 1, 8, 8), np.float32))
    xq = edgekit.quant.quantize_array(x, q.tensors[q.inputs[0]].quant)
    session = edgekit.deploy(q, "mcu:qemu")
    try:
        yield q, xq, session
    finally:
        session.close()


def test_the_board_runs_only_the_requested_path_bit_exact(tiny_on_board, monkeypatch):
    from edgekit.firmware_bridge import stream
    from edgekit.firmware_bridge.protocol import Cmd

    q, xq, board = tiny_on_board
    runner = AnytimeRunner(q)
    for path in q.metadata["anytime"]["paths"]:
        np.testing.assert_array_equal(board.run(xq[:2], raw=True, path=path),
                                      runner.run(xq[:2], path=path, raw=True))
        assert board.last_path == path and len(board.last_ticks) == len(tbl.plan(q, path).nodes)
    for budget in ("30%", "100%"):
        np.testing.assert_array_equal(board.run(xq[2:3], raw=True, budget=budget),
                                      runner.run(xq[2:3], budget, raw=True))
    np.testing.assert_array_equal(board.run(xq, raw=True), runner.run(xq, path="22", raw=True))
    assert board.last_path is None and len(board.last_ticks) == len(q.nodes)  # INFER: all
    with pytest.raises(EdgekitError, match="not in this model's table"):
        board.run(xq[:1], path="33")

    class Before:  # a firmware built before INFER_PATH: it answers any other code "unknown"
        INFER, LOAD, READ, INFER_PATH = Cmd.INFER, Cmd.LOAD, Cmd.READ, Cmd.ACK

    monkeypatch.setattr(stream, "Cmd", Before)
    with pytest.raises(EdgekitError, match="does not run anytime paths") as err:
        board.run(xq[:1], path="10")
    assert len(str(err.value).splitlines()) == 1
    np.testing.assert_array_equal(board.run(xq[:1], raw=True), runner.run(xq[:1], raw=True,
                                                                          path="22"))


@pytest.mark.slow
def test_a_path_costs_on_the_board_what_its_plain_model_costs(tiny_on_board):
    q, xq, board = tiny_on_board
    for path in ("00", "12", "22"):
        y = board.run(xq[:1], raw=True, path=path)
        anytime = board.instructions(sum(board.last_ticks))
        with edgekit.deploy(tbl.extract(q, path), "mcu:qemu") as plain:
            np.testing.assert_array_equal(plain.run(xq[:1], raw=True), y)
            alone = plain.instructions(sum(plain.last_ticks))
        assert 0 <= anytime - alone <= 0.01 * alone, (path, anytime, alone)
