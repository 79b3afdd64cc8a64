"""Fleet learning on the digits: accuracy per round of federated fine-tuning on Flower's
simulation engine against the same rule trained centrally on the pooled data for as many epochs
(rounds x local epochs), for IID and label-skewed shards (FedAvg and FedProx), LLS and backprop
clients, and a mixed fleet where every other client is a cortex-m4 that trains the head only.

Run: ``python benchmarks/fleet.py [--task finetune|scratch] [--clients 10] [--rounds 20]
[--epochs 5] [--rules lls,bp] [--alpha 0.3]``. The model is an MLP 64-256-128-10 (on a
cortex-m4's 192 KB of SRAM only its head trains). ``finetune`` (the fleet's use): pretrained in
torch on the digits, fine-tuned by the fleet on the digits moved one pixel down and right (a
moved sensor, as in ``learn_defaults.py``), scored on the moved test set; ``scratch``: torch's
default initialisation, the plain digits. Each row is one federation (ray's start-up included
in its seconds); about a minute a row on 2 busy cores.
"""

from __future__ import annotations

import argparse
import time

import torch
from learn_defaults import shifted

import edgekit
from edgekit import data, models
from edgekit.console import table
from edgekit.fleet import plan, simulate
from edgekit.fleet.server import score


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--task", choices=["finetune", "scratch"], default="finetune")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--rules", default="lls,bp")
    p.add_argument("--alpha", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", help="rows by name, comma-separated: iid|skew-fedavg|fedprox-"
                   "full|mixed (skew-fedprox-mixed, ...)")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    ds = data.digits(8)
    net = models.mlp(64, (256, 128))
    flat = lambda a: a.reshape(len(a), -1)
    x, y, test = flat(ds.x_train), ds.y_train, (flat(ds.x_test), ds.y_test)
    if args.task == "finetune":
        models.train(net, x, y, epochs=10, seed=args.seed)
        x, test = flat(shifted(ds.x_train)), (flat(shifted(ds.x_test)), ds.y_test)
    graph = edgekit.from_torch(net.eval(), (torch.zeros(1, 64),))
    before = score(graph, *test)[0]
    skew = f"label:{args.alpha:g}"
    settings = [("iid", "fedavg", "host"), (skew, "fedavg", "host"), (skew, "fedprox", "host"),
                ("iid", "fedavg", "host,cortex-m4"), (skew, "fedavg", "host,cortex-m4"),
                (skew, "fedprox", "host,cortex-m4")]
    if args.only:
        settings = [s for s in settings if _name(*s) in args.only.split(",")]
    rows = []
    for rule in args.rules.split(","):
        centralized = None
        for partition, strategy, profiles in settings:
            start = time.perf_counter()
            _, report = simulate(graph, x, y, clients=args.clients, rounds=args.rounds,
                                 rule=rule, partition=partition, strategy=strategy,
                                 profiles=profiles.split(","), epochs=args.epochs,
                                 seed=args.seed, test=test, centralized=centralized is None,
                                 quiet=True)
            centralized = report.get("centralized_accuracy", centralized)
            acc = [r["accuracy"] for r in report["rounds"]]
            head_only = sum(c["layers_trained"] == 1 for c in report["clients"])
            rows.append((rule, partition, strategy, profiles, f"{head_only}/{args.clients}",
                         " ".join(f"{a:.0%}" for a in acc), f"{acc[-1]:.2%}",
                         f"{centralized:.2%}", f"{100 * (acc[-1] - centralized):+.1f}",
                         f"{time.perf_counter() - start:.0f}"))
            print(table(["rule", "partition", "strategy", "profiles", "head-only",
                         "accuracy per round", "final", "centralized", "Δ points", "s"],
                        rows[-1:]), flush=True)
    print()
    print(f"{args.task}: {args.clients} clients, {args.rounds} rounds x {args.epochs} local "
          f"epoch(s), digits 8x8 (train {len(y)}, test {len(test[1])}), accuracy before "
          f"{before:.2%}; cortex-m4 trains {plan(graph, 'lls', 'cortex-m4').layers} of "
          f"{len(graph.params) // 2} layers")
    print(table(["rule", "partition", "strategy", "profiles", "head-only", "accuracy per round",
                 "final", "centralized", "Δ points", "s"], rows))


def _name(partition: str, strategy: str, profiles: str) -> str:
    return (f"{'iid' if partition == 'iid' else 'skew'}-{strategy}-"
            f"{'mixed' if ',' in profiles else 'full'}")


if __name__ == "__main__":
    main()
