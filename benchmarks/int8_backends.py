"""int8 on every CPU backend, in one run: accuracy (float vs int8) and batch-1 latency of the
edgekit runtime against ONNX Runtime, LiteRT and tflite-micro, printed as ratios.

    python benchmarks/int8_backends.py [--runs 300] [--json out.json]

Each model is trained on the bundled digits, imported, quantized once, and the same int8 Graph
runs on every backend; latency is the median of ``--runs`` single-sample calls after warm-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

import edgekit
from edgekit import data, metrics, models
from edgekit.console import table
from edgekit.fileio import atomic_write_bytes
from edgekit.targets import get_target

BACKENDS = ["cpu", "cpu:onnxruntime", "cpu:litert", "cpu:tflite-micro"]
MODELS = {
    "digits_cnn": lambda: models.digits_cnn(16),
    "mlp": lambda: models.mlp(256),
    "ds_cnn": lambda: models.ds_cnn(16),
}


def median_ms(session, x: np.ndarray, runs: int) -> float:
    for i in range(10):
        session.run(x[i % len(x): i % len(x) + 1])
    times = []
    for i in range(runs):
        sample = x[i % len(x): i % len(x) + 1]
        start = time.perf_counter()
        session.run(sample)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--json")
    args = parser.parse_args()

    ds = data.digits(16)
    backends = [b for b in BACKENDS if get_target(b).available()[0]]
    results = []
    for name, build in MODELS.items():
        net = models.train(build(), ds.x_train, ds.y_train, epochs=args.epochs)
        graph = edgekit.from_torch(net, (torch.from_numpy(ds.x_test[:1]),))
        qgraph = edgekit.quantize(graph, ds.x_train[:500])
        macs = sum(graph.node_macs(n) for n in graph.nodes)
        row = {"model": name, "macs": macs,
               "float_accuracy": metrics.accuracy(edgekit.deploy(graph).run(ds.x_test),
                                                  ds.y_test)}
        for backend in backends:
            with edgekit.deploy(qgraph, backend) as session:
                logits = np.concatenate([session.run(ds.x_test[i:i + 64])
                                         for i in range(0, len(ds.x_test), 64)])
                row[f"{backend} int8 acc"] = metrics.accuracy(logits, ds.y_test)
                row[f"{backend} int8 ms"] = median_ms(session, ds.x_test, args.runs)
        for backend in ("cpu", "cpu:onnxruntime", "cpu:litert"):
            if backend in backends:
                with edgekit.deploy(graph, backend) as session:
                    row[f"{backend} float ms"] = median_ms(session, ds.x_test, args.runs)
        results.append(row)

    print(table(["model", "MACs", "float acc", *[f"{b} int8" for b in backends]],
                [(r["model"], r["macs"], f"{r['float_accuracy']:.2%}",
                  *[f"{r[f'{b} int8 acc']:.2%}" for b in backends]) for r in results]))
    print("\nbatch-1 latency, median ms (ratio = peer / edgekit int8; > 1 means edgekit faster)")
    print(table(["model", *[f"{b} int8" for b in backends], "fastest peer / edgekit"],
                [(r["model"], *[r[f"{b} int8 ms"] for b in backends],
                  min(r[f"{b} int8 ms"] for b in backends if b != "cpu") / r["cpu int8 ms"])
                 for r in results]))
    print(table(["model", *[f"{b} float ms" for b in ("cpu", "cpu:onnxruntime", "cpu:litert")
                            if b in backends]],
                [(r["model"], *[r[f"{b} float ms"] for b in ("cpu", "cpu:onnxruntime",
                                                              "cpu:litert") if b in backends])
                 for r in results]))
    if args.json:
        atomic_write_bytes(args.json, json.dumps(results, indent=1).encode())


if __name__ == "__main__":
    main()
