"""edgekit.memory: classes added and removed from a few examples, no training."""

import pickle

import numpy as np
import pytest
import torch

import edgekit
from edgekit import models
from edgekit.cli import main
from edgekit.errors import EdgekitError
from edgekit.memory import Backbone, Memory, capacity_for, cut, penultimate
from edgekit.targets import get_target

NEW = (8, 9)


@pytest.fixture(scope="module")
def task(digits):
    """An MLP trained on digits 0-7 only, in float32 and int8; 8 and 9 are the new classes."""
    old = np.isin(digits.y_train, NEW, invert=True)
    net = models.train(models.mlp(256, hidden=(64, 32), classes=8), digits.x_train[old],
                       digits.y_train[old], epochs=10, seed=0)
    graph = edgekit.from_torch(net, (torch.from_numpy(digits.x_train[:1]),))
    return graph, edgekit.quantize(graph, digits.x_train[old][:256]), digits


def shots(digits, label, n, seed=0):
    rng = np.random.default_rng(seed)
    return digits.x_train[rng.choice(np.flatnonzero(digits.y_train == label), n, replace=False)]


def test_backbone_is_the_graph_up_to_the_last_linear_layer(task):
    graph, _, digits = task
    feature = penultimate(graph)
    part = cut(graph, feature)
    assert part.outputs == [feature] and len(part.nodes) < len(graph.nodes)
    with edgekit.deploy(graph) as s:
        layers = s.run_layers(digits.x_test[:5])
    with Backbone(graph) as bb:
        np.testing.assert_array_equal(bb.features(digits.x_test[:5]),
                                      layers[feature].reshape(5, -1))
    with pytest.raises(EdgekitError, match="no tensor 'nope'"):
        Backbone(graph, feature="nope")


def test_add_remove_list_round_trip(task, tmp_path):
    _, gq, digits = task
    with Backbone(gq) as bb:
        mem = Memory(bb, max_exemplars=100)
        assert mem.add(shots(digits, 8, 5), 8) == {8: 5}
        assert mem.add(digits.x_train[:7], digits.y_train[:7])[8] >= 5
        assert mem.features.dtype == np.int8  # int8 features stay int8
        mem.save(tmp_path / "mem.npz")
        back = Memory.load(tmp_path / "mem.npz", bb)
        assert back.counts() == mem.counts() and (back.metric, back.k) == (mem.metric, mem.k)
        np.testing.assert_array_equal(back.features, mem.features)
        assert back.remove(8) == mem.counts()[8]
        assert 8 not in back.counts()
        with pytest.raises(EdgekitError, match="no class 8"):
            back.remove(8)


def test_memory_is_bounded_and_keeps_a_new_class(task):
    graph, _, digits = task
    with Backbone(graph) as bb:
        mem = Memory(bb, max_exemplars=40)
        old = np.isin(digits.y_train, NEW, invert=True)
        assert set(mem.add(digits.x_train[old][:200], digits.y_train[old][:200]).values()) == {5}
        # two shots, fewer than a class's share (40 // 9): all kept, the old classes shrink
        assert mem.add(shots(digits, 9, 2), 9)[9] == 2
        assert len(mem.labels) == 40 and max(mem.counts().values()) == 5
        mem.configure(max_exemplars=9)
        assert set(mem.counts().values()) == {1}
        with pytest.raises(EdgekitError, match="at most 3 exemplars, fewer than its 9 classes"):
            mem.configure(max_exemplars=3)
        # from a device profile: a quarter of the flash the weights leave, at 4 B per value
        assert capacity_for("cortex-m4", bb) == int(0.25 * (1_048_576 - sum(
            p.nbytes for p in graph.params.values()))) // (bb.dim * 4 + 4)


def test_kept_exemplars_are_the_most_central():
    """The eviction keeps each class's rows nearest its mean (a backbone of identity)."""
    from edgekit.graph import Graph, Node, TensorInfo

    ident = Graph(inputs=["x"], outputs=["y"], nodes=[Node("relu", ["x"], ["y"])],
                  tensors={"x": TensorInfo((1, 2)), "y": TensorInfo((1, 2))})
    with Backbone(ident, feature="y") as bb:
        mem = Memory(bb, max_exemplars=2)
        mem.add(np.array([[1, 1], [1.5, 1], [9, 9]], np.float32), 0)
        np.testing.assert_array_equal(mem.features, [[1, 1], [1.5, 1]])


def test_new_classes_from_five_shots_beat_chance(task):
    graph, _, digits = task
    rng = np.random.default_rng(0)
    with Backbone(graph) as bb:
        mem = Memory(bb, max_exemplars=1000)
        for label in range(8):  # the backbone's own classes, 20 exemplars each
            mem.add(shots(digits, label, 20, seed=label), label)
        for label in NEW:
            mem.add(shots(digits, label, 5, seed=int(rng.integers(99))), label)
        new = np.isin(digits.y_test, NEW)
        pred = mem.predict(digits.x_test)
    acc_new = (pred[new] == digits.y_test[new]).mean()
    acc_old = (pred[~new] == digits.y_test[~new]).mean()
    assert acc_new > 0.5, acc_new  # chance is 0.1 over ten classes
    assert acc_old > 0.9, acc_old


def test_int8_and_float_features_agree_on_most_predictions(task):
    """int8 features (compared in int32) label at least 95 % of the test set as the float
    features do (measured: 100 % on this MLP; int8 rounding may flip near-ties)."""
    graph, gq, digits = task
    preds = []
    for g in (graph, gq):
        with Backbone(g) as bb:
            mem = Memory(bb, max_exemplars=1000)
            mem.add(digits.x_train[:300], digits.y_train[:300])
            preds.append(mem.predict(digits.x_test))
    assert (preds[0] == preds[1]).mean() >= 0.95


def test_memory_of_another_backbone_is_refused(task, tmp_path):
    graph, gq, digits = task
    with Backbone(graph) as bb:
        mem = Memory(bb, max_exemplars=10)
        mem.add(digits.x_train[:5], digits.y_train[:5])
        mem.save(tmp_path / "mem.npz")
    with Backbone(gq) as bb, pytest.raises(EdgekitError, match="made with another backbone"):
        Memory.load(tmp_path / "mem.npz", bb)


def test_memory_file_is_never_unpickled(task, tmp_path, monkeypatch):
    graph, _, digits = task
    with Backbone(graph) as bb:
        mem = Memory(bb, max_exemplars=10)
        mem.add(digits.x_train[:5], digits.y_train[:5])
        mem.save(tmp_path / "mem.npz")
        evil = tmp_path / "evil.npz"
        np.savez(evil, features=np.array([object()], dtype=object), labels=mem.labels,
                 header=np.zeros(3, np.uint8))

        def refuse(*args, **kwargs):
            raise AssertionError("unpickled")

        monkeypatch.setattr(pickle, "load", refuse)
        monkeypatch.setattr(pickle, "loads", refuse)
        with pytest.raises(EdgekitError, match="holds Python objects"):
            Memory.load(evil, bb)
        assert Memory.load(tmp_path / "mem.npz", bb).counts() == mem.counts()


@pytest.fixture(scope="module")
def files(task, tmp_path_factory):
    graph, _, digits = task
    folder = tmp_path_factory.mktemp("memory")
    graph.save(folder / "model.ekm")
    np.savez(folder / "shots.npz", x=shots(digits, 9, 5))
    nines = digits.y_test == 9
    np.savez(folder / "test.npz", x=digits.x_test[nines], y=digits.y_test[nines])
    old = np.isin(digits.y_train, NEW, invert=True)
    np.savez(folder / "old.npz", x=digits.x_train[old][:80], y=digits.y_train[old][:80])
    return folder


def test_cli_add_list_predict_remove(files, capsys):
    import json

    m, mem = str(files / "model.ekm"), str(files / "cli.npz")
    assert main(["memory", "add", m, "--memory", mem, "--data", str(files / "old.npz"),
                 "--max-exemplars", "200"]) == 0
    assert main(["memory", "add", m, "--memory", mem, "--data", str(files / "shots.npz"),
                 "--label", "9"]) == 0
    capsys.readouterr()
    assert main(["memory", "list", m, "--memory", mem, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["classes"]["9"] == 5 and listed["max_exemplars"] == 200
    predict = ["memory", "predict", m, "--memory", mem, "--data", str(files / "test.npz"),
               "--json"]
    assert main(predict) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] > 0.2  # on 9s; chance 1/9
    assert main(["memory", "remove", m, "--memory", mem, "--label", "9"]) == 0
    assert "9" not in capsys.readouterr().out.split("exemplars")[0]
    assert main(predict) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == 0  # no class 9 any more


@pytest.mark.parametrize("argv, message", [
    (["list", "--memory", "missing.npz"], "no such file (memory add creates it)"),
    (["add", "--memory", "new.npz", "--data", "shots.npz"], "no labels 'y'; give the class"),
    (["add", "--memory", "new.npz"], "needs --data"),
    (["remove", "--memory", "new.npz"], "needs --label"),
    (["add", "--memory", "new.npz", "--data", "shots.npz", "--label", "9", "--feature", "x1"],
     "no tensor 'x1'"),
    (["list", "--memory", "shots.npz"], "not an edgekit memory file (no features"),
    (["add", "--memory", "new.npz", "--data", "shots.npz", "--label", "9", "--k", "0"],
     "k must be a positive integer"),
])
def test_cli_errors_are_one_line_and_exit_2(files, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(files)
    assert main(["memory", argv[0], "model.ekm", *argv[1:]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (files / "new.npz").exists()


@pytest.mark.slow
def test_board_computes_the_features_the_runtime_does(task):
    """mcu:qemu: the board runs the int8 backbone, the host the k-NN, on identical features."""
    ok, why = get_target("mcu:qemu").available()
    if not ok:
        pytest.skip(why)
    _, gq, digits = task
    with Backbone(gq) as host, Backbone(gq, target="mcu:qemu") as board:
        np.testing.assert_array_equal(board.features(digits.x_test[:8]),
                                      host.features(digits.x_test[:8]))
