"""Spiking CNNs on the emulated Cortex-M3, float32 against int8: the digits CNN (average
pooling) and ds_cnn, each trained 15 epochs, converted at T = 8 with p99.9 balancing and FAS
calibration, and quantized (``edgekit.quantize``) from the same calibration images.

Run: ``NUMBA_CACHE_DIR=.numba_cache .venv/bin/python benchmarks/mcu_snn.py [--epochs 15]
[--calibration 256] [--images 359]``. Every test image runs on the board (``mcu:qemu``) one
at a time; "= runtime" counts the images whose board outputs equal ``SpikingExecutor``'s (the
float32 outputs bit for bit, the int8 Graph's int32 sums over the steps); instructions are QEMU
``-icount`` emulated instruction counts per inference (mean, min-max over the images), SOPs the
board's count over STATS (mean), equal to the runtime's on every image or the row says so.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import edgekit
from edgekit import data, models
from edgekit.console import table
from edgekit.converters.from_torch import from_torch
from edgekit.converters.snn import to_snn
from edgekit.converters.to_c_snn import ram_bytes
from edgekit.quant import quantize_array
from edgekit.runtime import Executor, SpikingExecutor

BUILDERS = {"digits_cnn": lambda: models.digits_cnn(16, pool="avg"),
            "ds_cnn": lambda: models.ds_cnn(16)}


def _on_board(graph: edgekit.Graph, x: np.ndarray, y: np.ndarray) -> list[str]:
    int8 = graph.metadata.get("quantized") == "int8"
    feeds = quantize_array(x, graph.tensors[graph.inputs[0]].quant) if int8 else x
    ex = SpikingExecutor(graph)
    outs, instructions, sops, same, sops_equal = [], [], [], 0, True
    with edgekit.deploy(graph, "mcu:qemu") as session:
        for sample in feeds:
            got = session.run(sample[None], raw=int8)
            want = ex.run(sample[None], raw=int8)
            same += int(np.array_equal(got, want))
            outs.append(got[0])
            instructions.append(session.instructions(session.last_ticks[0]))
            sops.append(session.stats()["synaptic_ops"])
            sops_equal &= sops[-1] == sum(ex.record(sample[None], raw=int8)[1])
        profile = session.device_profile(x[:1])
    accuracy = 100 * float((np.stack(outs).argmax(1) == y).mean())
    return [f"{same} / {len(x)}", f"{accuracy:.2f}",
            f"{np.mean(sops) / 1e3:.1f} k" + ("" if sops_equal else " (differ)"),
            f"{np.mean(instructions) / 1e6:.2f} M ({min(instructions) / 1e6:.2f}-"
            f"{max(instructions) / 1e6:.2f} M)",
            f"{profile['flash_bytes']:,} / {profile['ram_bytes']:,}", f"{ram_bytes(graph):,}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--calibration", type=int, default=256)
    ap.add_argument("--images", type=int, default=359)
    ap.add_argument("--models", default="digits_cnn,ds_cnn")
    args = ap.parse_args()
    ds = data.digits(16)
    calib, x, y = ds.x_train[:args.calibration], ds.x_test[:args.images], ds.y_test[:args.images]
    rows = []
    for name in args.models.split(","):
        torch.manual_seed(0)
        net = models.train(BUILDERS[name](), ds.x_train, ds.y_train, epochs=args.epochs)
        ann = from_torch(net, torch.zeros(1, 1, 16, 16))
        ann_accuracy = 100 * float((Executor(ann).run(x).argmax(1) == y).mean())
        snn = to_snn(ann, calib, 8, balancing="p99.9", calibrate="fas")
        for weights, graph in (("float32", snn), ("int8", edgekit.quantize(snn, calib))):
            rows.append([f"{name} ({ann_accuracy:.2f})", weights, *_on_board(graph, x, y)])
            print(rows[-1], flush=True)
    print(table(["model (ANN %)", "weights", "= runtime", "accuracy %", "SOPs",
                 "instructions per inference", "flash / RAM B", "model RAM B"], rows))


if __name__ == "__main__":
    main()
