"""Dual activation precision: training memory and accuracy with and without 8-bit tapes.

Run: ``python benchmarks/learn_dual.py [--archs mlp-narrow,mlp-deep,cnn8,ds-cnn] [--rules
bp,dfa,lls,ff] [--seeds 1] [--batch 32]``. For each architecture of
``benchmarks/learn_defaults.py``: the activation peak of one training step at ``--batch``
(counted by ``edgekit.learn.memory`` and measured by tracemalloc over a real step), then the
test accuracy of fine-tuning the backprop-pretrained network for 5 epochs on the digits shifted
one pixel (as the defaults table does), with ``dual_precision`` off and on.
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch
from learn_defaults import ARCHS, accuracy, shifted

import edgekit
from edgekit import models
from edgekit.console import table
from edgekit.learn.blocks import from_graph
from edgekit.learn.memory import activation_peak, measured_peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default="mlp-narrow,mlp-deep,cnn8,ds-cnn")
    ap.add_argument("--rules", default="bp,dfa,lls,ff")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    rows = []
    for arch in args.archs.split(","):
        build, dataset = ARCHS[arch]
        ds = dataset()
        x_shift, x_test = shifted(ds.x_train), shifted(ds.x_test)
        batch = ds.x_train[:args.batch].copy()
        acc = {}
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            net = models.train(build().eval(), ds.x_train, ds.y_train, epochs=10, seed=seed)
            graph = edgekit.from_torch(copy.deepcopy(net), (torch.from_numpy(ds.x_test[:1]),))
            for rule in args.rules.split(","):
                for dual in (False, True):
                    tuned, _ = edgekit.finetune(graph, x_shift, ds.y_train, rule=rule,
                                                epochs=args.epochs, seed=seed,
                                                dual_precision=dual)
                    acc.setdefault((rule, dual), []).append(accuracy(tuned, x_test, ds.y_test))
        for rule in args.rules.split(","):
            blocks = from_graph(graph)
            counted = [activation_peak(blocks, rule, args.batch, d) for d in (False, True)]
            measured = [measured_peak(from_graph(graph), rule, batch, ds.y_train[:args.batch],
                                      d)[0] for d in (False, True)]
            off, on = (100 * np.mean(acc[rule, d]) for d in (False, True))
            rows.append([arch, rule, f"{counted[0]:,}", f"{counted[1]:,}",
                         f"{counted[1] / counted[0]:.2f}", f"{measured[0]:,}",
                         f"{measured[1]:,}", f"{measured[1] / measured[0]:.2f}",
                         f"{off:.1f}", f"{on:.1f}", f"{on - off:+.1f}"])
    print(f"activation peak of one step at batch {args.batch} (bytes, counted and measured), "
          f"and test accuracy % after {args.epochs} epochs fine-tuning on shifted digits "
          f"(seeds 0..{args.seeds - 1}), dual precision off and on")
    print(table(["arch", "rule", "counted", "dual", "ratio", "measured", "dual", "ratio",
                 "acc", "dual", "cost"], rows))
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
