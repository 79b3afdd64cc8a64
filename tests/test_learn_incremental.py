"""Class-incremental learning: Weight Aligning's gamma, the distillation loss against torch
autograd, and the exemplar buffer keeping old classes that naive fine-tuning forgets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import edgekit
from edgekit import data, models
from edgekit.errors import EdgekitError
from edgekit.learn import incremental
from edgekit.runtime import Executor


def test_weight_align_gives_new_rows_the_old_rows_mean_norm():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 5)).astype(np.float32)
    w[4:] *= 3
    gamma = incremental.weight_align(w, [0, 1, 2, 3], [4, 5])
    norms = np.linalg.norm(w, axis=1)
    assert gamma < 1 and norms[4:].mean() == pytest.approx(norms[:4].mean(), rel=1e-5)


def test_distillation_loss_gradient_equals_autograd():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((5, 10)).astype(np.float32)
    labels = np.array([0, 3, 4, 1, 4])
    seen, old = np.arange(5), np.arange(3)
    teacher = rng.standard_normal((5, 3)).astype(np.float32)
    loss, grad = incremental._loss(logits, labels, seen, old, teacher, 0.6)
    z = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    t = incremental.TEMPERATURE
    kd = -(F.softmax(torch.tensor(teacher, dtype=torch.float64) / t, 1)
           * F.log_softmax(z[:, :3] / t, 1)).sum(1).mean()
    ref = 0.4 * F.cross_entropy(z[:, :5], torch.from_numpy(labels)) + 0.6 * kd
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=1e-5)
    np.testing.assert_allclose(grad, z.grad.numpy(), atol=1e-6)
    assert not grad[:, 5:].any()  # unseen classes get no gradient


@pytest.mark.slow
def test_exemplars_keep_the_old_classes_that_naive_fine_tuning_forgets():
    ds = data.digits(8)
    torch.manual_seed(0)
    graph = edgekit.from_torch(models.digits_cnn(8).eval(), (torch.zeros(1, 1, 8, 8),))
    tasks = [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    old = ds.y_test < 5
    acc = {}
    for exemplars in (0, 20):
        final, history = incremental.class_incremental(graph, ds.x_train, ds.y_train, tasks,
                                                       exemplars, distill=False, align=False,
                                                       epochs=2)
        pred = Executor(final).run(ds.x_test).argmax(1)
        acc[exemplars] = (pred == ds.y_test)[old].mean()
        assert [h["classes"] for h in history] == tasks
    assert acc[0] < 0.2 and acc[20] > acc[0] + 0.4
    with pytest.raises(EdgekitError, match="distinct"):
        incremental.class_incremental(graph, ds.x_train, ds.y_train, [[0, 1], [1, 2]])
