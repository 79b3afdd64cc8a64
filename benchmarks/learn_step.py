"""Training step time: numba LLS and backprop against torch backprop on the CPU, batch 1 and 32.

One step = zero the gradients, forward, loss, backward (or local updates), AdamW update, on
the digits CNN (16x16, BN folded, the Graph every target runs). torch runs the same layers with
the same weights, on one thread like the numba kernels (``--threads`` to change that).
Run: ``python benchmarks/learn_step.py [--repeats 200]``; prints one table with the ratios.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np
import torch
from torch import nn

import edgekit
from edgekit import data, models
from edgekit.console import table
from edgekit.learn.blocks import from_graph
from edgekit.learn.trainer import prepare


def torch_twin(graph: edgekit.Graph) -> nn.Module:
    """The folded digits CNN as plain torch layers carrying the Graph's weights."""
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(256, 10))
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(torch.from_numpy(graph.params[name.replace("3.", "4.").replace(
                "7.", "10.")]))
    return net


def torch_step(net: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
               y: torch.Tensor) -> None:
    opt.zero_grad()
    nn.functional.cross_entropy(net(x), y).backward()
    opt.step()


def edgekit_step(learner, x: np.ndarray, y: np.ndarray) -> None:
    learner.zero_grads()
    learner.rule.step(learner.blocks, learner.state, x, y, 0.0, None)
    learner.apply(1e-3)


def median_ms(step, repeats: int) -> float:
    for _ in range(10):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = data.digits(16)
    torch.manual_seed(0)
    graph = edgekit.from_torch(models.digits_cnn(16).eval(), (torch.from_numpy(ds.x_test[:1]),))
    rows = []
    for batch in (1, 32):
        x, y = ds.x_train[:batch].copy(), ds.y_train[:batch]
        net = torch_twin(graph)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.0)
        step = partial(torch_step, net, opt, torch.from_numpy(x), torch.from_numpy(y))
        times = {"torch bp": median_ms(step, args.repeats)}
        for rule in ("bp", "lls"):
            step = partial(edgekit_step, prepare(from_graph(graph), rule), x, y)
            times[f"numba {rule}"] = median_ms(step, args.repeats)
        base = times["torch bp"]
        rows += [(batch, name, ms, f"{ms / base:.2f}x") for name, ms in times.items()]
    print(f"training step, digits CNN 16x16, median of {args.repeats}, torch threads "
          f"{args.threads} (ratio: time / torch backprop's at the same batch)")
    print(table(["batch", "trainer", "ms per step", "vs torch bp"], rows))


if __name__ == "__main__":
    main()
