"""On-device learning: gradients against torch autograd, local losses against their reference
formulas, every rule end to end, exact resume (in process and after SIGKILL), divergence,
memory accounting against tracemalloc, and the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import edgekit
from edgekit import data, models
from edgekit.cli import main
from edgekit.errors import EdgekitError
from edgekit.learn import RULES, bp, ff, lls
from edgekit.learn import kernels as K
from edgekit.learn.blocks import from_graph, zero_grads
from edgekit.learn.memory import activation_peak
from edgekit.learn.norm import chain_grads
from edgekit.learn.trainer import add_norms
from edgekit.runtime import Executor


def _graph(net: nn.Module, shape) -> edgekit.Graph:
    return edgekit.from_torch(net.eval(), (torch.zeros(shape),))


@pytest.fixture(scope="module")
def digits8():
    return data.digits(8)


@pytest.fixture(scope="module")
def cnn8(digits8):
    torch.manual_seed(0)
    return _graph(models.digits_cnn(8), (1, 1, 8, 8))


def _accuracy(graph, ds) -> float:
    return float((Executor(graph).run(ds.x_test).argmax(1) == ds.y_test).mean())


def test_backprop_gradients_equal_torch_autograd_on_every_layer_type():
    """conv (padded, strided, 1x1), fused relu/relu6, standalone leaky relu, max/avg/global
    pools, flatten, linear: every weight and bias gradient within 1e-5 of autograd's."""
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.LeakyReLU(0.1), nn.AvgPool2d(2),
        nn.Conv2d(6, 8, 1), nn.ReLU6(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(8, 12), nn.ReLU(), nn.Linear(12, 10))
    for m in net:
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.normal_(m.weight, std=0.6)
    graph = _graph(net, (1, 1, 16, 16))
    x = torch.randn(5, 1, 16, 16)
    y = torch.tensor([0, 3, 9, 3, 7])
    blocks = from_graph(graph)
    assert [b.pool.kind if b.pool else None for b in blocks] == ["max", "avg", "global", None,
                                                                  None]
    assert_bp_matches_autograd(net, blocks, x, y, 10)


def assert_bp_matches_autograd(net: nn.Module, blocks, x, y, classes: int) -> None:
    """One bp step's loss and every weight's gradient equal torch autograd's on (x, y)."""
    net.zero_grad()
    F.cross_entropy(net(x), y).backward()
    for b in blocks:
        zero_grads(b)
    loss, _ = bp.step(blocks, bp.setup(blocks, classes, None), x.numpy(), y.numpy(), 0.0, None)
    assert loss == pytest.approx(F.cross_entropy(net(x), y).item(), abs=1e-5)
    grads = {n: v for b in blocks for n, v in b.grads.items()}
    torch_grads = dict(net.named_parameters())
    assert set(grads) == set(torch_grads)
    for name, g in grads.items():
        np.testing.assert_allclose(g, torch_grads[name].grad.numpy(), atol=1e-5, err_msg=name)


def test_running_statistics_norm_gradients_equal_torch_autograd():
    """With a norm the kernels run folded weights; the chained gradients of weight, bias, gamma
    and beta equal autograd's through ``gamma * (z - mean) / sqrt(var + eps) + beta``."""
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(48, 10))
    blocks = from_graph(_graph(net, (1, 2, 8, 8)))
    add_norms(blocks)
    rng = np.random.default_rng(0)
    norm = blocks[0].norm
    for value in (norm.mean, norm.beta):
        value[...] = rng.standard_normal(3)
    for value in (norm.var, norm.gamma):
        value[...] = rng.uniform(0.5, 2, 3)
    x, y = torch.randn(4, 2, 8, 8), torch.tensor([1, 2, 3, 4])
    params = {n: p.detach().clone().requires_grad_() for n, p in net.named_parameters()}
    gamma, beta = (torch.tensor(v, requires_grad=True) for v in (norm.gamma, norm.beta))
    z = F.conv2d(x, params["0.weight"], params["0.bias"], padding=1)
    z = (z - torch.tensor(norm.mean)[:, None, None]) / torch.sqrt(
        torch.tensor(norm.var)[:, None, None] + norm.eps) * gamma[:, None, None] + beta[:, None,
                                                                                       None]
    h = F.max_pool2d(F.relu(z), 2).flatten(1)
    F.cross_entropy(h @ params["4.weight"].T + params["4.bias"], y).backward()
    for b in blocks:
        zero_grads(b)
    bp.step(blocks, bp.setup(blocks, 10, None), x.numpy(), y.numpy(), 0.0, None)
    g = blocks[0].grads
    chain_grads(blocks[0].weight, blocks[0].bias, norm, g["0.weight"], g["0.bias"],
                g["norm.gamma/0"], g["norm.beta/0"])
    expected = {"0.weight": params["0.weight"], "0.bias": params["0.bias"],
                "norm.gamma/0": gamma, "norm.beta/0": beta, "4.weight": params["4.weight"]}
    for name, tensor in expected.items():
        got = g.get(name, blocks[1].grads.get(name))
        np.testing.assert_allclose(got, tensor.grad.numpy(), atol=1e-5, err_msg=name)


def _torch_lls(h, y, bases, temperature, pool, modulation):
    lat = F.adaptive_avg_pool2d(h, (pool, pool)).flatten(1)
    scores = F.normalize(lat, dim=1) @ bases.T
    if modulation is not None:
        scores = scores * modulation if modulation.ndim == 1 else scores @ modulation
    return F.cross_entropy(scores / temperature, y)


@pytest.mark.parametrize("mode", lls.MODES)
def test_lls_local_loss_matches_the_reference_formula(mode):
    rng = np.random.default_rng(0)
    h = torch.tensor(rng.random((6, 3, 6, 6), np.float32), requires_grad=True)
    y = torch.tensor([1, 0, 4, 2, 4, 3])
    bases = torch.from_numpy(lls.basis(5, 3 * 4 * 4, "sine"))
    mod = None if mode == "plain" else torch.tensor(
        rng.standard_normal(5 if mode == "m" else (5, 5)).astype(np.float32),
        requires_grad=True)
    ref = _torch_lls(h, y, bases, 0.5, 4, mod)
    ref.backward()
    dmod = None if mod is None else np.zeros(mod.shape, np.float32)
    local = lls.LocalLoss(h.detach().numpy(), y.numpy(), bases.numpy(), (3, 4, 4), 0.5,
                          None if mod is None else mod.detach().numpy(), dmod)
    dh = np.stack([local.error(n).copy() for n in range(6)])
    assert local.loss == pytest.approx(ref.item(), abs=1e-5)
    np.testing.assert_allclose(dh, h.grad.numpy(), atol=1e-6)
    if mod is not None:
        np.testing.assert_allclose(dmod, mod.grad.numpy(), atol=1e-6)


def test_goodness_loss_matches_the_reference_formula():
    h = torch.rand(8, 20, requires_grad=True)
    g = h.pow(2).mean(1)
    ref = (F.softplus(2.0 - g[:4]) + F.softplus(g[4:] - 2.0)).mean()
    ref.backward()
    dh = np.zeros((8, 20), np.float32)
    assert K.goodness_loss(h.detach().numpy(), 2.0, dh) == pytest.approx(ref.item(), abs=1e-6)
    np.testing.assert_allclose(dh, h.grad.numpy(), atol=1e-7)


@pytest.mark.parametrize("rule", list(RULES))
def test_every_rule_learns_digits_from_scratch(rule, cnn8, digits8):
    tuned, history = edgekit.finetune(cnn8, digits8.x_train, digits8.y_train, rule=rule,
                                      epochs=4, lr=1e-2, seed=0)
    assert len(history["epochs"]) == 4 and history["rule"] == rule
    assert history["epochs"][-1]["loss"] < history["epochs"][0]["loss"]
    assert _accuracy(tuned, digits8) > 0.5
    if rule == "hedge":  # deployed at the exit alpha chose: the Graph cut there, with its head
        assert tuned.outputs[0] == (cnn8.outputs[0] if history["hedge"]["exit"] ==
                                    cnn8.outputs[0] else "hedge.logits")
    else:
        assert set(tuned.params) == set(cnn8.params)


def test_lls_trains_an_mlp(digits8):
    torch.manual_seed(0)
    graph = _graph(models.mlp(64, (128, 64)), (1, 1, 8, 8))
    tuned, _ = edgekit.finetune(graph, digits8.x_train, digits8.y_train, rule="lls", epochs=4,
                                lr=1e-2, norm=True)
    assert _accuracy(tuned, digits8) > 0.85


def test_lls_with_its_defaults_stays_within_2_points_of_backprop_on_a_narrow_mlp():
    """The issue-17 network (256 -> 48 leaky ReLU -> 32 ReLU -> 10), from scratch, every rule
    with its defaults, mean over three seeds. Pooling the linear blocks' outputs to 16 features
    (before) left LLS 3.5 points behind here; read whole, as the reference does, 1.6."""
    ds = data.digits(16)
    accs: dict[str, list[float]] = {"bp": [], "lls": []}
    for seed in range(3):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Flatten(), nn.Linear(256, 48), nn.LeakyReLU(0.01),
                            nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 10))
        graph = _graph(net, (1, 1, 16, 16))
        assert [lls.latent_shape(b, 4) for b in from_graph(graph)[:-1]] == [(1, 1, 48),
                                                                            (1, 1, 32)]
        for rule in accs:
            tuned, _ = edgekit.finetune(graph, ds.x_train, ds.y_train, rule=rule, epochs=10,
                                        seed=seed)
            accs[rule].append(_accuracy(tuned, ds))
    assert np.mean(accs["bp"]) > 0.95
    assert np.mean(accs["lls"]) >= np.mean(accs["bp"]) - 0.02


def test_lls_data_bases_are_the_centred_class_means_of_the_normalised_latents():
    """Per block, on the block's current features: the mean normalised latent of each class,
    minus the mean over classes, at the square wave's length sqrt(D); a class the data lacks
    keeps its square wave."""
    torch.manual_seed(0)
    graph = _graph(models.mlp(64, (12, 8)), (1, 1, 8, 8))
    blocks = from_graph(graph)
    rng = np.random.default_rng(0)
    x = rng.random((90, 1, 8, 8), np.float32)
    y = np.arange(90) % 9  # class 9 never seen
    bases = lls.data_bases(blocks, x, y, 10, 4)
    h = x.reshape(90, -1)
    for block in blocks[:-1]:
        h = np.maximum(h @ block.weight.T + block.bias, 0)
        u = h / np.linalg.norm(h, axis=1, keepdims=True)
        means = np.stack([u[y == k].mean(0) for k in range(9)])
        means -= means.mean(0)
        want = means / np.linalg.norm(means, axis=1, keepdims=True) * np.sqrt(h.shape[1])
        np.testing.assert_allclose(bases[block.name][:9], want, atol=1e-4)
        np.testing.assert_array_equal(bases[block.name][9], lls.basis(10, h.shape[1],
                                                                      "square")[9])


def test_lls_fine_tunes_a_pretrained_cnn_within_2_points_of_backprop():
    """The 8x8 digits CNN trained in torch, fine-tuned 5 epochs on the digits moved one pixel
    down-right: with the reference's square-wave bases LLS pulls the pretrained features away
    (89.7 % against backprop's 97.5 when measured); with the data's class directions it keeps
    them."""
    ds = data.digits(8)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small net: threads only contend
    try:
        torch.manual_seed(0)
        net = models.train(models.digits_cnn(8), ds.x_train, ds.y_train, epochs=10, seed=0)
    finally:
        torch.set_num_threads(threads)
    graph = _graph(net, (1, 1, 8, 8))
    shifted = np.zeros_like(ds.x_train)
    shifted[..., 1:, 1:] = ds.x_train[..., :-1, :-1]
    test = data.Dataset(ds.x_train, ds.y_train, np.zeros_like(ds.x_test), ds.y_test)
    test.x_test[..., 1:, 1:] = ds.x_test[..., :-1, :-1]
    acc = {}
    for rule, options in [("bp", {}), ("lls", {}), ("lls", {"waveform": "square"})]:
        tuned, _ = edgekit.finetune(graph, shifted, ds.y_train, rule=rule, epochs=5, **options)
        acc[rule, bool(options)] = _accuracy(tuned, test)
    assert acc["lls", False] >= acc["bp", False] - 0.02
    assert acc["lls", False] > acc["lls", True] + 0.03


def test_forward_forward_infers_over_labels_on_an_mlp(digits8):
    """Goodness inference needs the embedded label to reach every unit: on an MLP it does (on a
    CNN a 3x3 conv sees the label pixels only in one corner; there the classifier head infers)."""
    torch.manual_seed(0)
    graph = _graph(models.mlp(64, (256, 256)), (1, 1, 8, 8))
    tuned, _ = edgekit.finetune(graph, digits8.x_train, digits8.y_train, rule="ff", epochs=4,
                                lr=1e-2, theta=0.5, greedy=True)
    scores = ff.predict(from_graph(tuned), digits8.x_test, 10)
    assert scores.shape == (len(digits8.y_test), 10)
    assert (scores.argmax(1) == digits8.y_test).mean() > 0.7


def test_finetuned_graph_requantizes_and_deploys(cnn8, digits8):
    tuned, _ = edgekit.finetune(cnn8, digits8.x_train, digits8.y_train, rule="lls", epochs=3,
                                lr=1e-2, layers=2)
    assert np.array_equal(tuned.params["0.weight"], cnn8.params["0.weight"])  # frozen
    q = edgekit.quantize(tuned, digits8.x_train[:200])
    with edgekit.deploy(q, target="cpu") as session:
        acc = (session.run(digits8.x_test).argmax(1) == digits8.y_test).mean()
    assert acc > _accuracy(tuned, digits8) - 0.05


def test_norm_trains_from_scratch_and_folds_into_the_exported_weights(cnn8, digits8):
    plain, _ = edgekit.finetune(cnn8, digits8.x_train, digits8.y_train, rule="lls", epochs=3,
                                lr=1e-2)
    normed, _ = edgekit.finetune(cnn8, digits8.x_train, digits8.y_train, rule="lls", epochs=3,
                                 lr=1e-2, norm=True)
    assert set(normed.params) == set(cnn8.params)  # no extra op or tensor in the Graph
    assert _accuracy(normed, digits8) > _accuracy(plain, digits8)
    online, _ = edgekit.finetune(cnn8, digits8.x_train[:200], digits8.y_train[:200],
                                 rule="lls", epochs=1, online=True, norm=True)
    assert all(np.isfinite(v).all() for v in online.params.values())


def test_online_mode_learns_one_sample_at_a_time(cnn8, digits8):
    tuned, history = edgekit.finetune(cnn8, digits8.x_train[:300], digits8.y_train[:300],
                                      rule="lls", epochs=1, lr=1e-3, online=True,
                                      layers="head", optimizer="sgd", schedule="constant")
    assert history["memory"]["batch"] == 1 and history["memory"]["optimizer"] == 0
    changed = {n for n in cnn8.params if not np.array_equal(cnn8.params[n], tuned.params[n])}
    assert changed == {"10.weight", "10.bias"}


@pytest.mark.parametrize("rule, norm", [("lls-mxm", False), ("ff", False), ("bp", True),
                                        ("hedge", False)])
def test_resume_continues_exactly(rule, norm, cnn8, digits8, tmp_path):
    args = dict(rule=rule, epochs=3, lr=1e-2, seed=3, norm=norm)
    whole, whole_history = edgekit.finetune(cnn8, digits8.x_train, digits8.y_train, **args)
    ckpt = tmp_path / "run.ckpt"  # a run stopped after its first epoch (the lr at epoch 1
    edgekit.finetune(cnn8, digits8.x_train, digits8.y_train, checkpoint=ckpt,  # is the same)
                     **{**args, "epochs": 1})
    resumed, history = edgekit.finetune(cnn8, digits8.x_train, digits8.y_train,
                                        checkpoint=ckpt, resume=True, **args)
    assert [r["epoch"] for r in history["epochs"]] == [1, 2, 3]
    assert history.get("hedge") == whole_history.get("hedge")  # hedge's alpha resumes too
    for name in whole.params:
        assert np.array_equal(whole.params[name], resumed.params[name]), name


def test_divergence_raises_and_keeps_the_last_good_checkpoint(cnn8, digits8, tmp_path):
    ckpt = tmp_path / "run.ckpt"
    edgekit.finetune(cnn8, digits8.x_train, digits8.y_train, rule="bp", epochs=1,
                     checkpoint=ckpt)
    good = ckpt.read_bytes()
    with pytest.raises(EdgekitError, match="diverged.*last good checkpoint"):
        edgekit.finetune(cnn8, digits8.x_train, digits8.y_train, rule="bp", epochs=3,
                         lr=1e30, checkpoint=ckpt, resume=True)
    assert ckpt.read_bytes() == good


def test_sigkill_mid_epoch_then_resume_gives_the_uninterrupted_weights(tmp_path):
    ds = data.digits(16)
    torch.manual_seed(0)
    model = _graph(models.digits_cnn(16), (1, 1, 16, 16)).save(tmp_path / "cnn.ekm")
    x, y = np.concatenate([ds.x_train] * 2), np.concatenate([ds.y_train] * 2)
    np.savez(tmp_path / "train.npz", x=x, y=y)
    out, epochs = tmp_path / "tuned.ekm", 4
    cmd = [sys.executable, "-m", "edgekit.cli", "finetune", str(model), "--data",
           str(tmp_path / "train.npz"), "--rule", "lls-m", "--epochs", str(epochs), "--lr",
           "0.01", "--seed", "5", "--out", str(out), "--json"]
    env = {**os.environ, "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", ".numba_cache")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "tuned.ekm.ckpt"
    deadline = time.monotonic() + 120
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(0.05)  # into the second epoch
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    with np.load(ckpt) as z:
        done = len(json.loads(str(z["meta"]))["history"])
    assert 1 <= done < epochs and not out.exists()
    subprocess.run(cmd + ["--resume"], env=env, check=True, stdout=subprocess.DEVNULL)
    reference, _ = edgekit.finetune(edgekit.load(model), x, y, rule="lls-m", epochs=epochs,
                                    lr=0.01, seed=5)
    resumed = edgekit.load(out)
    for name in reference.params:
        assert np.array_equal(reference.params[name], resumed.params[name]), name


def _measured_peak(graph, rule, x, y) -> int:
    """tracemalloc's peak over one step that is handed its batch, as the trainer does."""
    blocks = from_graph(graph)
    state = RULES[rule].setup(blocks, 10, np.random.default_rng(0))
    every = np.arange(len(y))
    for _ in range(2):  # the first call compiles; measure the second
        for b in blocks:
            zero_grads(b)
        state.zero_grads()
        tracemalloc.start()
        RULES[rule].step(blocks, state, x[every], y, 0.0, np.random.default_rng(0))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_memory_accounting_matches_tracemalloc_and_lls_needs_half_of_backprop():
    ds = data.digits(16)
    torch.manual_seed(0)
    graph = _graph(models.digits_cnn(16), (1, 1, 16, 16))
    blocks = from_graph(graph)
    x, y = ds.x_train[:32].copy(), ds.y_train[:32]  # an owned batch, as the trainer has
    measured = {r: _measured_peak(graph, r, x, y) for r in ("bp", "lls", "dfa", "ff")}
    for rule, peak in measured.items():
        assert activation_peak(blocks, rule, 32) == pytest.approx(peak, rel=0.06), rule
    assert measured["lls"] <= 0.5 * measured["bp"]
    assert activation_peak(blocks, "lls", 32) <= 0.5 * activation_peak(blocks, "bp", 32)


class _Gated(nn.Module):
    """A branch joined by mul (a squeeze-excite-like gate): neither a chain nor a residual."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 1, 3, padding=1), nn.Linear(64, 10)

    def forward(self, x):
        return self.fc((x * self.conv(x)).flatten(1))


def test_bad_inputs_are_edgekit_errors(cnn8, digits8):
    x, y = digits8.x_train[:40], digits8.y_train[:40]
    for kwargs, match in [(dict(rule="hebb"), "unknown rule"), (dict(lr=-1.0), "lr"),
                          (dict(layers=7), "layers"), (dict(pool=0, rule="bp"), "rule 'bp'")]:
        with pytest.raises(EdgekitError, match=match):
            edgekit.finetune(cnn8, x, y, **kwargs)
    with pytest.raises(EdgekitError, match="labels"):
        edgekit.finetune(cnn8, x, y + 10)
    with pytest.raises(EdgekitError, match="inputs have shape"):
        edgekit.finetune(cnn8, x[:, :, :4], y)
    with pytest.raises(EdgekitError, match="residual blocks .* joins two branches"):
        edgekit.finetune(_graph(_Gated(), (1, 1, 8, 8)), x, y)
    with pytest.raises(EdgekitError, match="float"):
        edgekit.finetune(edgekit.quantize(cnn8, x), x, y)


def test_cli_finetune_writes_a_model_and_reports_memory(cnn8, digits8, tmp_path, capsys):
    model = cnn8.save(tmp_path / "cnn.ekm")
    digits8.save(tmp_path / "train.npz", split="train")
    out = tmp_path / "tuned.ekm"
    argv = ["finetune", str(model), "--data", str(tmp_path / "train.npz"), "--rule", "dfa",
            "--epochs", "2", "--out", str(out), "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["epochs"]) == 2 and report["memory"]["total"] > 0
    assert edgekit.load(out).params.keys() == cnn8.params.keys()
    np.savez(tmp_path / "nolabels.npz", x=digits8.x_train[:10])
    argv[3] = str(tmp_path / "nolabels.npz")
    assert main(argv) == 2
    assert "labels" in capsys.readouterr().err
    assert main(["profile", str(model), "--runs", "2", "--warmup", "1", "--training", "lls"]) == 0
    assert "training with lls" in capsys.readouterr().out


def test_device_side_never_imports_torch():
    code = ("import sys, edgekit.learn, edgekit.learn.trainer; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
