"""Class-incremental learning on the digits: 5 tasks of 2 classes, final average accuracy over
all 10 classes, Weight Aligning with and without its companions, between naive fine-tuning (the
lower bound) and joint training (the upper bound).

Run: ``python benchmarks/learn_incremental.py [--seeds 3] [--epochs 5]``. The 8x8 digits CNN
from torch's default initialisation; every task trains ``--epochs`` epochs with backprop
(``edgekit.learn.incremental``, AdamW 0.01, cosine); joint training sees all classes for
``5 x --epochs`` epochs. Exemplars: 20 random samples per old class.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import edgekit
from edgekit import data, models
from edgekit.console import table
from edgekit.learn.incremental import class_incremental, learn_task
from edgekit.runtime import Executor

TASKS = [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
SETTINGS = {  # name: (exemplars, distill, align)
    "naive fine-tuning": (0, False, False),
    "exemplars": (20, False, False),
    "exemplars + WA": (20, False, True),
    "exemplars + KD": (20, True, False),
    "exemplars + KD + WA": (20, True, True),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    ds = data.digits(8)
    acc: dict[str, list[float]] = {}
    gammas: list[float] = []
    for seed in range(args.seeds):
        torch.manual_seed(seed)
        graph = edgekit.from_torch(models.digits_cnn(8).eval(), (torch.zeros(1, 1, 8, 8),))

        def score(g: edgekit.Graph) -> float:
            return float((Executor(g).run(ds.x_test).argmax(1) == ds.y_test).mean())

        joint = learn_task(graph, ds.x_train, ds.y_train, list(range(10)),
                           epochs=5 * args.epochs, seed=seed)
        acc.setdefault("joint training", []).append(score(joint))
        for name, (exemplars, distill, align) in SETTINGS.items():
            final, history = class_incremental(graph, ds.x_train, ds.y_train, TASKS,
                                               exemplars, distill, align, args.epochs,
                                               seed=seed)
            acc.setdefault(name, []).append(score(final))
            if distill and align:
                gammas += [h["gamma"] for h in history if h["gamma"]]
    print(f"digits 8x8, 5 tasks of 2 classes, 8x8 CNN, {args.epochs} epochs per task, seeds "
          f"0..{args.seeds - 1}: final accuracy % over all 10 classes (mean ± std)")
    print(table(["setting", "final accuracy"],
                [[name, f"{100 * np.mean(v):.1f} ± {100 * np.std(v):.1f}"]
                 for name, v in acc.items()]))
    print(f"WA gamma with KD: {min(gammas):.2f}..{max(gammas):.2f}"
          f" ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
