"""New classes without training (edgekit.memory) on digits: the numbers in docs/learning.md.

    python benchmarks/memory_digits.py [--seeds 5] [--board] [--json out.json]

The digits CNN (``edgekit.models.digits_cnn``) is trained on 8 classes; 8 and 9 are held out.
The memory gets 20 exemplars of each old class from the training data, then each new class
from 5 or 20 shots (other shots per seed). Reported, in float32 and int8: accuracy on the new
classes' test images, on the old classes' before (the trained head) and after (the k-NN over
all ten). ``--sweep`` adds k and the metric (the defaults' measurement) and the alternative of
keeping the head for the old classes; ``--board`` computes the int8 features on the emulated
board (mcu:qemu) and checks them against the runtime's.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

import edgekit
from edgekit import data, models
from edgekit.console import table
from edgekit.fileio import atomic_write_bytes
from edgekit.memory import Backbone, Memory

NEW = (8, 9)
OLD_EXEMPLARS = 20


def pick(y: np.ndarray, label: int, n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.choice(np.flatnonzero(y == label), n, replace=False)


def run(bb: Backbone, d: data.Dataset, shots: int, seed: int, head: np.ndarray,
        metric: str | None = None, k: int | None = None) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    mem = Memory(bb, max_exemplars=10_000)
    mem.configure(metric=metric, k=k)
    old = [c for c in range(10) if c not in NEW]
    idx = np.concatenate([pick(d.y_train, c, OLD_EXEMPLARS, rng) for c in old])
    mem.add(d.x_train[idx], d.y_train[idx])
    for c in NEW:
        mem.add(d.x_train[pick(d.y_train, c, shots, rng)], c)
    pred = mem.predict(d.x_test)
    new = np.isin(d.y_test, NEW)
    kept = np.where(np.isin(pred, NEW), pred, head)  # the head unless the k-NN says "new"
    return {"new": (pred[new] == d.y_test[new]).mean(),
            "old": (pred[~new] == d.y_test[~new]).mean(),
            "old_head_kept": (kept[~new] == d.y_test[~new]).mean()}


def mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--board", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    d = data.digits(16)
    old = np.isin(d.y_train, NEW, invert=True)
    net = models.train(models.digits_cnn(16, classes=8), d.x_train[old], d.y_train[old], seed=0)
    graph = edgekit.from_torch(net, (torch.from_numpy(d.x_train[:1]),))
    graphs = {"float32": graph, "int8": edgekit.quantize(graph, d.x_train[old][:256])}
    test_old = np.isin(d.y_test, NEW, invert=True)
    rows, report = [], {}
    for dtype, g in graphs.items():
        with edgekit.deploy(g) as s:
            head = s.run(d.x_test).argmax(1)
        before = float((head[test_old] == d.y_test[test_old]).mean())
        with Backbone(g) as bb:
            for shots in (5, 20):
                r = mean([run(bb, d, shots, seed, head) for seed in range(args.seeds)])
                report[f"{dtype}/{shots}"] = {"old_before": before, **r}
                rows.append((dtype, shots, f"{r['new']:.1%}", f"{before:.1%}", f"{r['old']:.1%}",
                             f"{r['old_head_kept']:.1%}"))
                if args.sweep and dtype == "float32":
                    for metric in ("l2", "cosine"):
                        for k in (1, 3, 5, 7):
                            s = mean([run(bb, d, shots, seed, head, metric, k)
                                      for seed in range(args.seeds)])
                            report[f"sweep/{shots}/{metric}/k{k}"] = s
                            print(f"sweep {shots} shots {metric} k={k}: new {s['new']:.1%}, "
                                  f"old {s['old']:.1%}")
    print(table(["features", "shots", "new classes", "old before (head)", "old after (k-NN)",
                 "old after (head kept)"], rows))
    if args.board:
        with Backbone(graphs["int8"]) as host, \
                Backbone(graphs["int8"], target="mcu:qemu") as board:
            x = d.x_test[:64]
            same = bool((host.features(x) == board.features(x)).all())
        report["board_features_equal_runtime"] = same
        print(f"mcu:qemu int8 features of {len(x)} test images equal the runtime's: {same}")
    if args.json:
        atomic_write_bytes(args.json, json.dumps(report, indent=1).encode())


if __name__ == "__main__":
    main()
