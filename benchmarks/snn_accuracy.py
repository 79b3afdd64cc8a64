"""SNN accuracy against T: the digits CNN (average pooling) and the depthwise-separable residual
CNN, converted with max and 99.9 % threshold balancing and with the thresholds learned by QCFS
fine-tuning (FAS stage 1, balancing "qcfs"), each with and without FAS-style calibration (stage 2).

Run: ``python benchmarks/snn_accuracy.py [--epochs 15] [--qcfs-epochs 3] [--calibration 256]``.
Each ANN is trained once (torch), imported, and converted for every T from the same calibration
images (the first of the training split); the QCFS rows convert a copy fine-tuned from it (their
ANN % is that copy's, with its QCFS activations, in torch). Accuracies are on the held-out test
split, in percent.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from edgekit import data, models
from edgekit.console import table
from edgekit.converters.from_torch import from_torch
from edgekit.converters.qcfs import qcfs_finetune, qcfs_graph
from edgekit.converters.snn import to_snn
from edgekit.profile.devices import load_profile
from edgekit.profile.spiking import spiking_counts
from edgekit.runtime import Executor, SpikingExecutor

STEPS = (1, 2, 4, 8, 16, 32)
MODELS = {"digits_cnn": lambda: models.digits_cnn(16, pool="avg"), "ds_cnn": models.ds_cnn}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--qcfs-epochs", type=int, default=3)
    ap.add_argument("--calibration", type=int, default=256)
    args = ap.parse_args()
    ds = data.digits(16)
    calib = ds.x_train[:args.calibration]
    rows, energy = [], []
    for name, build in MODELS.items():
        torch.manual_seed(0)  # the same initial weights whichever models run before
        net = models.train(build(), ds.x_train, ds.y_train, epochs=args.epochs)
        ann = from_torch(net, torch.zeros(1, 1, 16, 16))
        ann_acc = 100 * (Executor(ann).run(ds.x_test).argmax(1) == ds.y_test).mean()
        tuned = qcfs_finetune(copy.deepcopy(net), ds.x_train, ds.y_train,
                              epochs=args.qcfs_epochs)
        qcfs_acc = 100 * (models.predict(tuned, ds.x_test).argmax(1) == ds.y_test).mean()
        qcfs_ann = qcfs_graph(tuned, torch.zeros(1, 1, 16, 16))
        for balancing in ("max", "p99.9", "qcfs"):
            graph, options = ((qcfs_ann, {"balancing": "trained", "v_init": 0.5})
                              if balancing == "qcfs" else (ann, {"balancing": balancing}))
            for calibrate in (None, "fas"):
                acc = qcfs_acc if balancing == "qcfs" else ann_acc
                row = [name, f"{acc:.2f}", balancing, calibrate or "-"]
                start = time.perf_counter()
                for steps in STEPS:
                    snn = to_snn(graph, calib, steps, calibrate=calibrate, **options)
                    scores = SpikingExecutor(snn).run(ds.x_test)
                    row.append(f"{100 * (scores.argmax(1) == ds.y_test).mean():.2f}")
                rows.append([*row, f"{time.perf_counter() - start:.1f}"])
                print(table(["model", "ANN %", "balancing", "calibration",
                             *[f"T={t}" for t in STEPS], "s"], rows[-1:]), flush=True)
                if balancing == "p99.9" and calibrate == "fas":
                    snn = to_snn(ann, calib, 8, balancing=balancing, calibrate=calibrate)
                    c = spiking_counts(snn, ds.x_test, load_profile("host"))
                    rates = ", ".join(f"{n['firing_rate']:.3f}" for n in c["neurons"])
                    energy.append([name, c["ann_macs"], c["first_layer_macs"],
                                   round(c["synaptic_ops"]), rates, f"{c['e_ann_uj']:.3f}",
                                   f"{c['e_snn_uj']:.3f}",
                                   f"{c['energy_ratio_ann_over_snn']:.2f}"])
    print()
    print(table(["model", "ANN %", "balancing", "calibration", *[f"T={t}" for t in STEPS],
                 "s"], rows))
    print("\nenergy model at T = 8 (p99.9 + FAS), per test inference, Horowitz 45 nm:")
    print(table(["model", "ANN MACs", "first-layer MACs", "SOPs", "firing rates", "E_ANN uJ",
                 "E_SNN uJ", "E_ANN/E_SNN"], energy))


if __name__ == "__main__":
    main()
