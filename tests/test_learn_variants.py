"""The rules' variants: DFA's feedback taken from the pretrained network (its mean Jacobian,
against torch autograd, and fine-tuning against random feedback), and channel-wise
competitive forward-forward (its loss gradient against autograd, training and inference)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import edgekit
from edgekit import data, models
from edgekit.errors import EdgekitError
from edgekit.learn import dfa, ff
from edgekit.learn import kernels as K
from edgekit.learn.blocks import from_graph
from edgekit.runtime import Executor


def _graph(net, shape) -> edgekit.Graph:
    return edgekit.from_torch(net.eval(), (torch.zeros(shape),))


def _accuracy(graph, x, y) -> float:
    return float((Executor(graph).run(x).argmax(1) == y).mean())


def test_dfa_data_feedback_is_the_mean_jacobian_of_the_logits():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(),
                              torch.nn.Linear(32, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
    x = data.digits(8).x_train[:40]
    blocks = from_graph(_graph(net, (1, 1, 8, 8)))
    feedback = dfa.jacobians(blocks, x, 10)
    h1 = torch.relu(net[1](torch.from_numpy(x).flatten(1)))
    h2 = torch.relu(net[3](h1))
    logits = net[5](h2)
    for block, h in zip(blocks[:2], (h1, h2)):
        rows = [torch.autograd.grad(logits[:, k].sum(), h, retain_graph=True)[0].mean(0)
                for k in range(10)]
        np.testing.assert_allclose(feedback[f"dfa.B/{block.name}"],
                                   torch.stack(rows).detach().numpy(), atol=1e-5)


@pytest.mark.slow
def test_dfa_fine_tunes_a_pretrained_mlp_better_with_data_feedback():
    """A four-layer MLP trained in torch meets the digits moved one pixel: random feedback
    pushes its blocks along directions the pretrained layers after them do not read."""
    ds = data.digits(8)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        net = models.train(models.mlp(64, (32, 32, 32, 32)), ds.x_train, ds.y_train,
                           epochs=10, seed=0)
    finally:
        torch.set_num_threads(threads)
    graph = _graph(net, (1, 1, 8, 8))
    shift = np.zeros_like(ds.x_train)
    shift[..., 1:, 1:] = ds.x_train[..., :-1, :-1]
    test = np.zeros_like(ds.x_test)
    test[..., 1:, 1:] = ds.x_test[..., :-1, :-1]
    acc = {fb: _accuracy(edgekit.finetune(graph, shift, ds.y_train, rule="dfa", epochs=5,
                                          feedback=fb)[0], test, ds.y_test)
           for fb in ("data", "random")}
    assert acc["data"] > acc["random"] + 0.04
    with pytest.raises(EdgekitError, match="feedback must be"):
        edgekit.finetune(graph, shift[:50], ds.y_train[:50], rule="dfa", feedback="sign")


def test_group_goodness_loss_gradient_equals_autograd():
    rng = np.random.default_rng(0)
    h = np.maximum(rng.standard_normal((6, 13)), 0).astype(np.float32)
    labels = rng.integers(0, 4, 6)
    group = np.arange(13) % 4
    sizes = np.bincount(group).astype(np.float64)
    dh = np.empty_like(h)
    loss = K.group_goodness_loss(h, labels, group, sizes, dh)
    ht = torch.tensor(h, dtype=torch.float64, requires_grad=True)
    g = torch.stack([(ht[:, group == k] ** 2).mean(1) for k in range(4)], 1)
    ref = torch.nn.functional.cross_entropy(g, torch.from_numpy(labels))
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=1e-6)
    np.testing.assert_allclose(dh, ht.grad.numpy(), atol=1e-6)


@pytest.mark.slow
def test_channel_wise_forward_forward_trains_and_infers_by_class_goodness():
    ds = data.digits(8)
    torch.manual_seed(0)
    graph = _graph(models.digits_cnn(8), (1, 1, 8, 8))
    tuned, history = edgekit.finetune(graph, ds.x_train, ds.y_train, rule="ff", epochs=4,
                                      label="channels")
    assert _accuracy(tuned, ds.x_test, ds.y_test) > 0.5  # 62.7 % measured; chance 10
    scores = ff.predict(from_graph(tuned), ds.x_test, 10, label="channels")
    assert (scores.argmax(1) == ds.y_test).mean() > 0.4
    embedded = edgekit.learn.memory_for(graph, "ff")["activations"]
    assert history["memory"]["activations"] < 0.5 * embedded  # one copy of the batch, not 3
