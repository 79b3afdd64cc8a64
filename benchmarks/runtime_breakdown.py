"""Where the batch-1 time of the edgekit runtime goes, per reference model, float and int8.

    python benchmarks/runtime_breakdown.py [--runs 2000] [--epochs 2]

For each model it prints the median of a whole ``Executor.run`` call, of ``Program.run`` (the
steps alone), of every step by itself (op, µs), and the rest: the edge (input checks,
quantization, output copy and dequantization). An empty step (a no-op callable) is timed too,
as the floor of what timing one Python call costs here. Medians of many interleaved runs, since
the CPUs are shared.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

import edgekit
from edgekit import data, models
from edgekit.console import table
from edgekit.runtime import Executor

MODELS = {
    "digits_cnn": lambda: models.digits_cnn(16),
    "mlp": lambda: models.mlp(256),
    "ds_cnn": lambda: models.ds_cnn(16),
}


def _median_us(call, runs: int) -> float:
    for _ in range(20):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def breakdown(graph, x: np.ndarray, runs: int) -> tuple[list[tuple], float, float]:
    """Rows (step, op, µs) and the medians of ``Executor.run`` and ``Program.run``."""
    executor = Executor(graph)
    program = executor.program(1)
    total = _median_us(lambda: executor.run(x), runs)
    steps_only = _median_us(program.run, runs)
    rows = [(i, node.op, _median_us(step, runs))
            for i, (node, step) in enumerate(zip(graph.nodes, program.steps, strict=True))]
    return rows, total, steps_only


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()

    ds = data.digits(16)
    x = ds.x_test[:1]
    floor = _median_us(lambda: None, args.runs)
    print(f"timing floor (an empty callable): {floor:.2f} µs")
    for name, build in MODELS.items():
        net = models.train(build(), ds.x_train, ds.y_train, epochs=args.epochs)
        graph = edgekit.from_torch(net, (torch.from_numpy(x),))
        for kind, g in (("float", graph), ("int8", edgekit.quantize(graph, ds.x_train[:500]))):
            rows, total, steps_only = breakdown(g, x, args.runs)
            summed = sum(r[2] for r in rows)
            print(f"\n{name} {kind}: run {total:.1f} µs = steps {steps_only:.1f} µs "
                  f"(each timed alone: {summed:.1f}) + edge {total - steps_only:.1f} µs")
            print(table(["step", "op", "µs"], [(i, op, f"{us:.2f}") for i, op, us in rows]))


if __name__ == "__main__":
    main()
