"""BP vs LLS vs LLS-M vs LLS-MxM vs FF vs DFA: test accuracy of the same digits CNN trained from
the same random initialisation with the same epoch budget, over several seeds (mean ± spread).

Run: ``python benchmarks/learn_rules.py [--epochs 10] [--seeds 3] [--lr 0.01] [--no-norm]``. torch
only builds the initial Graph (its default initialisation, BN folded); every rule then trains on
numpy and numba, with the running-statistics norm in the hidden layers (the paper's blocks have
BN) unless ``--no-norm``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import edgekit
from edgekit import data, models
from edgekit.console import table
from edgekit.learn import RULES
from edgekit.learn.blocks import from_graph
from edgekit.learn.ff import predict
from edgekit.runtime import Executor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--no-norm", dest="norm", action="store_false")
    args = ap.parse_args()
    ds = data.digits(args.size)
    results: dict[str, list[float]] = {rule: [] for rule in RULES}
    results["ff (goodness)"] = []
    memory, seconds = {}, {rule: 0.0 for rule in RULES}
    for seed in range(args.seeds):
        torch.manual_seed(seed)
        graph = edgekit.from_torch(models.digits_cnn(args.size).eval(),
                                   (torch.from_numpy(ds.x_test[:1]),))
        for rule in RULES:
            start = time.perf_counter()
            tuned, history = edgekit.finetune(graph, ds.x_train, ds.y_train, rule=rule,
                                              epochs=args.epochs, lr=args.lr, seed=seed,
                                              norm=args.norm)
            seconds[rule] += time.perf_counter() - start
            logits = Executor(tuned).run(ds.x_test)
            results[rule].append(float((logits.argmax(1) == ds.y_test).mean()))
            memory[rule] = history["memory"]
            if rule == "ff":
                scores = predict(from_graph(tuned), ds.x_test, 10)
                results["ff (goodness)"].append(float((scores.argmax(1) == ds.y_test).mean()))
    bp = np.mean(results["bp"])
    rows = []
    for name, accs in results.items():
        rule = name.split()[0]
        mem = memory[rule]
        rows.append((name, f"{100 * np.mean(accs):.2f} ± {100 * np.std(accs):.2f}",
                     f"{100 * (np.mean(accs) - bp):+.2f}",
                     " ".join(f"{100 * a:.1f}" for a in accs), mem["activations"],
                     f"{mem['activations'] / memory['bp']['activations']:.2f}",
                     f"{seconds[rule] / args.seeds:.1f}"))
    print(f"digits {args.size}x{args.size} CNN, {args.epochs} epochs, AdamW lr {args.lr}, "
          f"batch 32, norm {'on' if args.norm else 'off'}, seeds 0..{args.seeds - 1} "
          "(test accuracy mean ± std over seeds; activation bytes from the accounting)")
    print(table(["rule", "test acc %", "vs BP", "per seed", "act. bytes", "vs BP",
                 "s per run"], rows))


if __name__ == "__main__":
    main()
