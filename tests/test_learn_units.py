"""On-device learning on the networks users deploy: grouped (depthwise) convolutions, residual
blocks as units, the op set's activations (derivatives from the input where the output does
not give them), global pooling; gradients against torch autograd, the MLPerf Tiny DS-CNN and a
depthwise-separable residual net fine-tuned with every rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_learn import assert_bp_matches_autograd
from torch import nn

import edgekit
from edgekit import data, models, zoo
from edgekit.errors import EdgekitError
from edgekit.learn import RULES
from edgekit.learn import kernels as K
from edgekit.learn.blocks import Unit, from_graph, zero_grads
from edgekit.learn.memory import activation_peak
from edgekit.runtime import Executor


def _graph(net: nn.Module, shape) -> edgekit.Graph:
    return edgekit.from_torch(net.eval(), (torch.zeros(shape),))


@pytest.mark.parametrize("groups, cout, stride, padding, dilation",
                         [(6, 6, 1, 1, 1), (6, 12, 2, 1, 1), (2, 4, 1, 2, 2), (3, 6, 2, 0, 1)])
def test_grouped_conv_kernels_equal_torch(groups, cout, stride, padding, dilation):
    """Forward, weight gradient and input gradient of one sample, depthwise (with a channel
    multiplier) and grouped, strided, padded and dilated."""
    rng = np.random.default_rng(groups + cout)
    x = torch.tensor(rng.standard_normal((1, 6, 9, 8)), dtype=torch.float32, requires_grad=True)
    w = torch.tensor(rng.standard_normal((cout, 6 // groups, 3, 3)), dtype=torch.float32,
                     requires_grad=True)
    b = torch.tensor(rng.standard_normal(cout), dtype=torch.float32)
    z = F.conv2d(x, w, b, stride, padding, dilation, groups)
    dz = torch.tensor(rng.standard_normal(z.shape), dtype=torch.float32)
    z.backward(dz)
    geometry = ((stride, stride), (padding, padding), (dilation, dilation))
    out = np.empty(z.shape[1:], np.float32)
    K.grouped_conv(x[0].detach().numpy(), w.detach().numpy(), b.numpy(), *geometry, out)
    np.testing.assert_allclose(out, z[0].detach().numpy(), atol=1e-5)
    dw = np.zeros(w.shape, np.float32)
    K.grouped_conv_dw(x[0].detach().numpy(), dz[0].numpy(), *geometry, dw)
    np.testing.assert_allclose(dw, w.grad.numpy(), atol=1e-4)
    dx = np.empty(x.shape[1:], np.float32)
    K.grouped_conv_dx(dz[0].numpy(), w.detach().numpy(), *geometry, dx)
    np.testing.assert_allclose(dx, x.grad[0].numpy(), atol=1e-5)


class _Residual(nn.Module):
    """Depthwise 3x3, an activation, pointwise 1x1; added to the input (or to a strided 1x1
    conv of it), then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int, act: nn.Module):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cin, 3, stride, 1, groups=cin), act,
                                  nn.Conv2d(cin, cout, 1))
        self.skip = nn.Conv2d(cin, cout, 1, stride) if stride != 1 or cin != cout else None

    def forward(self, x):
        return F.relu((x if self.skip is None else self.skip(x)) + self.body(x))


def test_backprop_through_units_and_the_op_sets_activations_equals_autograd():
    """Grouped convs, hardswish/gelu/silu (derivative from the kept input) and ReLU6, residual
    blocks with identity and conv shortcuts, a depthwise-separable pair, global average pool:
    every gradient within 1e-5 of autograd's."""
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.Hardswish(),
        nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=2), nn.GELU(), nn.MaxPool2d(2),
        _Residual(8, 8, 1, nn.ReLU6()), _Residual(8, 12, 2, nn.SiLU()),
        nn.Conv2d(12, 12, 3, padding=1, groups=12), nn.ReLU6(), nn.Conv2d(12, 16, 1),
        nn.GELU(approximate="tanh"), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    for m in net.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.normal_(m.weight, std=0.5)
    blocks = from_graph(_graph(net, (1, 2, 16, 16)))
    kinds = [(type(b).__name__, None if not isinstance(b, Unit) else b.shortcut is not None)
             for b in blocks]
    assert kinds == [("Block", None), ("Block", None), ("Unit", True), ("Unit", True),
                     ("Unit", False), ("Block", None)]
    assert_bp_matches_autograd(net, blocks, torch.randn(5, 2, 16, 16),
                               torch.tensor([0, 3, 9, 3, 7]), 10)


@pytest.fixture(scope="module")
def pretrained_ds_cnn():
    """models.ds_cnn (depthwise-separable residual blocks, ReLU6, global pool) trained briefly
    in torch on digits, and the digits moved one pixel down-right to fine-tune it on."""
    ds = data.digits(16)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        net = models.train(models.ds_cnn(16), ds.x_train, ds.y_train, epochs=3, seed=0)
    finally:
        torch.set_num_threads(threads)
    shift = np.zeros_like(ds.x_train)
    shift[..., 1:, 1:] = ds.x_train[..., :-1, :-1]
    test = np.zeros_like(ds.x_test)
    test[..., 1:, 1:] = ds.x_test[..., :-1, :-1]
    return _graph(net, (1, 1, 16, 16)), shift, ds.y_train, test, ds.y_test


def _accuracy(graph, x, y) -> float:
    return float((Executor(graph).run(x).argmax(1) == y).mean())


def test_backprop_recovers_a_pretrained_depthwise_residual_net(pretrained_ds_cnn):
    graph, x, y, x_test, y_test = pretrained_ds_cnn
    tuned, history = edgekit.finetune(graph, x[:640], y[:640], rule="bp", epochs=2)
    assert set(tuned.params) == set(graph.params)
    assert _accuracy(tuned, x_test, y_test) > _accuracy(graph, x_test, y_test) + 0.1


def test_lls_trains_a_residual_unit_as_one_block():
    """Each unit's layers get the gradient of the unit's own local loss (on its detached
    input, read at its output after the add, the ReLU and the global pool), as autograd gives
    it for the LLS formula."""
    torch.manual_seed(0)
    net = models.ds_cnn(16).eval()
    blocks = from_graph(_graph(net, (1, 1, 16, 16)))
    state = RULES["lls"].setup(blocks, 10, np.random.default_rng(0))
    x, y = torch.rand(6, 1, 16, 16), torch.tensor([1, 0, 4, 2, 9, 3])
    for b in blocks:
        zero_grads(b)
    RULES["lls"].step(blocks, state, x.numpy(), y.numpy(), 0.0, np.random.default_rng(0))
    grads = {n: v for b in blocks for n, v in b.grads.items()}
    with torch.no_grad():
        h = net[:3](x)
    for unit, module, pool in [(blocks[1], net[3], 4), (blocks[2], nn.Sequential(net[4], net[5]),
                                                          1)]:
        net.zero_grad()
        out = module(h)
        lat = F.normalize(F.adaptive_avg_pool2d(out, pool).flatten(1), dim=1)
        bases = torch.from_numpy(state.fixed[f"lls.B/{unit.name}"])
        F.cross_entropy(lat @ bases.T / 0.5, y).backward()
        convs = [k for k, v in net.named_parameters()
                 if any(v is p for p in module.parameters()) and k in grads]
        assert len(convs) == 2  # the depthwise and pointwise weights (their biases are BN's)
        for name in convs:  # BN at its initial statistics folds to (nearly) the identity
            np.testing.assert_allclose(grads[name], net.get_parameter(name).grad.numpy(),
                                       rtol=1e-4, atol=1e-6, err_msg=name)
        h = out.detach()


def test_lls_keeps_half_of_backprops_memory_on_the_ds_cnn(pretrained_ds_cnn):
    blocks = from_graph(pretrained_ds_cnn[0])
    assert activation_peak(blocks, "lls", 32) < 0.7 * activation_peak(blocks, "bp", 32)


@pytest.mark.parametrize("rule", ["bp", "lls", "lls-mxm", "dfa"])
def test_the_mlperf_tiny_ds_cnn_finetunes(rule):
    """The KWS DS-CNN as deployed (TF 'same' padding, four depthwise-separable units, a 24x5
    average pool, softmax): one epoch of each rule moves every layer and stays finite."""
    graph = _graph(zoo.ds_cnn_kws(4, filters=16), (1, 1, 49, 10))
    assert sum(isinstance(b, Unit) for b in from_graph(graph)) == 4
    x, y = zoo.task("kws_ds_cnn", 48)
    tuned, history = edgekit.finetune(graph, x, y, rule=rule, epochs=1, batch_size=16)
    assert np.isfinite(history["epochs"][0]["loss"])
    for name, value in graph.params.items():
        assert not np.array_equal(tuned.params[name], value), name


def test_what_cannot_train_is_refused_in_one_line():
    class Twice(nn.Module):  # a tensor read by two adds: not one residual block
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(1, 1, 3, padding=1), nn.Linear(64, 10)

        def forward(self, x):
            h = self.conv(x)
            return self.fc((h + x + h).flatten(1))

    with pytest.raises(EdgekitError, match="branches off") as err:
        from_graph(_graph(Twice(), (1, 1, 8, 8)))
    assert "\n" not in str(err.value)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.PReLU(2), nn.Flatten(), nn.Linear(72, 10))
    with pytest.raises(EdgekitError, match="prelu") as err:
        from_graph(_graph(net, (1, 1, 8, 8)))
    assert "\n" not in str(err.value)
