"""Hedge backpropagation: its gradients against torch autograd of the alpha-weighted exits'
loss, the hedge step on alpha, learning online, and the Graph cut at the chosen exit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import edgekit
from edgekit import data, models
from edgekit.learn import hedge
from edgekit.learn.blocks import from_graph, zero_grads
from edgekit.runtime import Executor


def _graph(net, shape) -> edgekit.Graph:
    return edgekit.from_torch(net.eval(), (torch.zeros(shape),))


def test_hedge_gradients_equal_autograd_and_alpha_follows_the_hedge_step():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 12),
                        nn.ReLU(), nn.Linear(12, 10))
    blocks = from_graph(_graph(net, (1, 1, 8, 8)))
    rng = np.random.default_rng(0)
    state = hedge.setup(blocks, 10, rng)
    for value in state.params.values():
        value[...] = 0.1 * rng.standard_normal(value.shape)
    alpha0 = np.array([0.5, 0.2, 0.3], np.float32)
    state.buffers["hedge.alpha"][...] = alpha0
    ds = data.digits(8)
    x, y = ds.x_train[:8], ds.y_train[:8]
    for b in blocks:
        zero_grads(b)
    state.zero_grads()
    loss, _ = hedge.step(blocks, state, x.copy(), y, 0.0, rng)

    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    h1 = net[2](net[1](net[0](xt))).flatten(1)
    h2 = net[5](net[4](h1))
    logits = net[8](net[7](net[6](h2)))
    params = [torch.from_numpy(v).requires_grad_() for k, v in state.params.items()]
    heads = [h1 @ params[0].T + params[1], h2 @ params[2].T + params[3]]
    losses = [F.cross_entropy(z, yt) for z in (*heads, logits)]
    total = sum(float(a) * ell for a, ell in zip(alpha0, losses))
    total.backward()
    assert loss == pytest.approx(total.item(), rel=1e-5)
    grads = {k: v for b in blocks for k, v in b.grads.items()}
    for name, p in net.named_parameters():
        np.testing.assert_allclose(grads[name], p.grad.numpy(), atol=1e-5, err_msg=name)
    for (name, _), p in zip(state.params.items(), params):
        np.testing.assert_allclose(state.grads[name], p.grad.numpy(), atol=1e-5, err_msg=name)
    want = alpha0 * 0.99 ** np.array([ell.item() for ell in losses])
    want = np.maximum(want, 0.2 / 3)
    np.testing.assert_allclose(state.buffers["hedge.alpha"], want / want.sum(), rtol=1e-5)


@pytest.mark.slow
def test_hedge_learns_a_deep_net_online_and_deploys_the_chosen_exit():
    """A stream of digits, one sample at a time, into an 8-layer MLP: backprop through all
    eight layers barely learns in one pass; hedge leans on a shallow exit and deploys it."""
    ds = data.digits(8)
    torch.manual_seed(0)
    graph = _graph(models.mlp(64, (32,) * 8), (1, 1, 8, 8))
    run = dict(epochs=1, online=True, lr=1e-3, schedule="constant")
    x, y = ds.x_train[:800], ds.y_train[:800]
    plain, bp_history = edgekit.finetune(graph, x, y, rule="bp", **run)
    cut, history = edgekit.finetune(graph, x, y, rule="hedge", **run)
    found = history["hedge"]
    assert len(found["alpha"]) == 8 and sum(found["alpha"]) == pytest.approx(1.0)
    assert history["epochs"][0]["accuracy"] > bp_history["epochs"][0]["accuracy"] + 0.15
    assert found["exit"] != graph.outputs[0]  # a shallow exit won
    assert cut.outputs == ["hedge.logits"] and len(cut.nodes) < len(graph.nodes)
    test = {name: (Executor(g).run(ds.x_test).argmax(1) == ds.y_test).mean()
            for name, g in (("bp", plain), ("hedge", cut))}
    assert test["hedge"] > test["bp"] + 0.2
    q = edgekit.quantize(cut, ds.x_train[:200])  # the cut Graph deploys like any other
    with edgekit.deploy(q, target="cpu") as session:
        assert session.run(ds.x_test[:5]).shape == (5, 10)
