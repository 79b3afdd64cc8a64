"""Hedge backpropagation against plain backprop, learning online (one sample at a time, each
predicted before it is learned) from scratch.

Run: ``python benchmarks/learn_hedge.py [--depths 2,4,8] [--seeds 3] [--lr 0.001]``. The
digits (8x8) training set is the stream, one pass in its given order; MLPs of ``depth`` hidden
layers of 32 units from torch's default initialisation; AdamW at a constant ``--lr``. "online"
is the prequential accuracy over the stream (every prediction made before its update: hedge
predicts with its alpha-weighted mixture of exits); "test" is the deployed Graph's accuracy on
the test set (hedge: cut at the exit alpha weighs most; "exit" is which hidden layer, L the
deepest).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import edgekit
from edgekit import data, models
from edgekit.console import table
from edgekit.runtime import Executor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depths", default="2,4,8")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    ds = data.digits(8)
    rows = []
    for depth in map(int, args.depths.split(",")):
        acc: dict[tuple[str, str], list[float]] = {}
        exits = []
        for seed in range(args.seeds):
            torch.manual_seed(seed)
            net = models.mlp(64, (32,) * depth).eval()
            graph = edgekit.from_torch(net, (torch.zeros(1, 1, 8, 8),))
            for rule in ("bp", "hedge"):
                tuned, history = edgekit.finetune(graph, ds.x_train, ds.y_train, rule=rule,
                                                  epochs=1, online=True, lr=args.lr,
                                                  schedule="constant", seed=seed)
                test = (Executor(tuned).run(ds.x_test).argmax(1) == ds.y_test).mean()
                acc.setdefault((rule, "online"), []).append(history["epochs"][0]["accuracy"])
                acc.setdefault((rule, "test"), []).append(float(test))
                if rule == "hedge":
                    found = history["hedge"]
                    at = found["exits"].index(found["exit"])
                    exits.append("L" if at == depth - 1 else str(at + 1))
        rows.append([str(depth), *(_cell(acc[r, k]) for r in ("bp", "hedge")
                                   for k in ("online", "test")), " ".join(exits)])
    print(f"digits 8x8 as a stream (one pass, {len(ds.y_train)} samples), MLP 64-32xdepth-10, "
          f"AdamW lr {args.lr:g}, seeds 0..{args.seeds - 1}; accuracy % mean ± std")
    print(table(["depth", "bp online", "bp test", "hedge online", "hedge test", "hedge exit"],
                rows))
    print(f"({time.perf_counter() - start:.0f} s)")


def _cell(values: list[float]) -> str:
    return f"{100 * np.mean(values):.1f} ± {100 * np.std(values):.1f}"


if __name__ == "__main__":
    main()
