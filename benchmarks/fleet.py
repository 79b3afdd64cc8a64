"""Fleet learning: accuracy per round of federated fine-tuning on Flower's simulation engine
against the same rule trained centrally on the pooled data for as many epochs (rounds x local
epochs), for IID and label-skewed shards (FedAvg, FedProx, FedAdam), LLS and backprop clients,
and a mixed fleet where every other client is a small device that trains fewer layers.

Run: ``python benchmarks/fleet.py [--task finetune|scratch|photos] [--clients 10]
[--rounds 20] [--epochs 5] [--rules lls,bp] [--alpha 0.3] [--server-lr 0.01]``.

- ``finetune`` (the fleet's use): an MLP 64-256-128-10 pretrained in torch on the digits,
  fine-tuned by the fleet on the digits moved one pixel down and right (a moved sensor, as in
  ``learn_defaults.py``), scored on the moved test set; the small device is a cortex-m4, on
  whose 192 KB of SRAM only the head trains. ``scratch``: the same MLP from torch's default
  initialisation, the plain digits.
- ``photos``: a CNN (two conv-BN-ReLU-maxpool blocks, 8 and 16 channels, and a linear head)
  pretrained in torch on RGB patches of two photos (``edgekit.sensor_data.photo_patches``, 4
  classes: which photo, which half), fine-tuned by the fleet on the patches as a second camera
  sees them (colour gains 0.8/1.0/1.25 and gamma 1.3); the small device is an nrf52840 (256
  KB), which trains the last conv block and the head.

Each row is one federation (ray's start-up included in its seconds): one to three minutes a
row on 2 busy cores.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from learn_defaults import shifted
from torch import nn

import edgekit
from edgekit import data, models
from edgekit.console import table
from edgekit.fleet import plan, simulate
from edgekit.fleet.server import score
from edgekit.sensor_data import photo_patches

SMALL = {"finetune": "cortex-m4", "scratch": "cortex-m4", "photos": "nrf52840"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--task", choices=list(SMALL), default="finetune")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--rules", default="lls,bp")
    p.add_argument("--alpha", type=float, default=0.3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--server-lr", type=float, help="FedAdam's server rate (default: the "
                   "fleet's)")
    p.add_argument("--only", help="rows by name, comma-separated: iid|skew-fedavg|fedprox|"
                   "fedadam-full|mixed (skew-fedadam-mixed, ...)")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    graph, x, y, test, about = task(args.task, args.seed)
    before = score(graph, *test)[0]
    skew, mixed = f"label:{args.alpha:g}", f"host,{SMALL[args.task]}"
    settings = [("iid", "fedavg", "host"), (skew, "fedavg", "host"), (skew, "fedprox", "host"),
                (skew, "fedadam", "host"), ("iid", "fedavg", mixed), (skew, "fedavg", mixed),
                (skew, "fedprox", mixed), (skew, "fedadam", mixed)]
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
                                 seed=args.seed, server_lr=args.server_lr, test=test,
                                 centralized=centralized is None, quiet=True)
            centralized = report.get("centralized_accuracy", centralized)
            acc = [r["accuracy"] for r in report["rounds"]]
            fewer = sum(c["layers_trained"] < c["layers_total"] for c in report["clients"])
            rows.append((rule, partition, strategy, profiles, f"{fewer}/{args.clients}",
                         " ".join(f"{a:.0%}" for a in acc), f"{acc[-1]:.2%}",
                         f"{centralized:.2%}", f"{100 * (acc[-1] - centralized):+.1f}",
                         f"{time.perf_counter() - start:.0f}"))
            print(table(["rule", "partition", "strategy", "profiles", "fewer layers",
                         "accuracy per round", "final", "centralized", "Δ points", "s"],
                        rows[-1:]), flush=True)
    print()
    small = plan(graph, "lls", SMALL[args.task])
    print(f"{args.task}: {args.clients} clients, {args.rounds} rounds x {args.epochs} local "
          f"epoch(s), {about} (train {len(y)}, test {len(test[1])}), accuracy before "
          f"{before:.2%}; {small.profile} trains {small.layers} of {small.total} layers")
    print(table(["rule", "partition", "strategy", "profiles", "fewer layers", "accuracy per round",
                 "final", "centralized", "Δ points", "s"], rows))


def task(name: str, seed: int) -> tuple[edgekit.Graph, np.ndarray, np.ndarray,
                                        tuple[np.ndarray, np.ndarray], str]:
    """The model the fleet starts from, its training data, test data, and a description."""
    torch.manual_seed(seed)
    if name == "photos":
        ds = photo_patches(16, 300, seed=seed)
        net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(16 * 4 * 4, 4))
        models.train(net, ds.x_train, ds.y_train, epochs=10, seed=seed)
        gains = np.array([0.8, 1.0, 1.25], np.float32)[None, :, None, None]

        def camera(a: np.ndarray) -> np.ndarray:
            return np.clip(a * gains, 0, 1) ** np.float32(1.3)

        graph = edgekit.from_torch(net.eval(), (torch.zeros(1, 3, 16, 16),))
        return (graph, camera(ds.x_train), ds.y_train, (camera(ds.x_test), ds.y_test),
                "photo patches 3x16x16, 4 classes")
    ds = data.digits(8)
    net = models.mlp(64, (256, 128))
    flat = lambda a: a.reshape(len(a), -1)  # noqa: E731
    x, y, test = flat(ds.x_train), ds.y_train, (flat(ds.x_test), ds.y_test)
    if name == "finetune":
        models.train(net, x, y, epochs=10, seed=seed)
        x, test = flat(shifted(ds.x_train)), (flat(shifted(ds.x_test)), ds.y_test)
    return edgekit.from_torch(net.eval(), (torch.zeros(1, 64),)), x, y, test, "digits 8x8"


def _name(partition: str, strategy: str, profiles: str) -> str:
    return (f"{'iid' if partition == 'iid' else 'skew'}-{strategy}-"
            f"{'mixed' if ',' in profiles else 'full'}")


if __name__ == "__main__":
    main()
