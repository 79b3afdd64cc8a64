"""int8 against float32 SNNs on the digits CNN (average pooling): accuracy per T, ONNX Runtime's
agreement with the runtime, and batch-1 time per inference.

Run: ``python benchmarks/snn_int8.py [--epochs 15] [--calibration 256] [--runs 200]``. The ANN
is trained once (torch), converted for every T with max balancing, with and without FAS
calibration, then quantized (``edgekit.quantize``) from the same calibration images; accuracy
is on the held-out test split, in percent. "ORT" checks that ONNX Runtime's int32 output sums
on the whole test split equal the runtime's (assert_array_equal: "exact", else the number of
differing values). Times are the median of ``--runs`` single-image inferences (the numba
kernels run on one thread).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import edgekit
from edgekit import data, models
from edgekit.console import table
from edgekit.converters.from_torch import from_torch
from edgekit.converters.snn import to_snn
from edgekit.converters.snn_onnx import snn_onnx_model
from edgekit.quant import quantize_array
from edgekit.runtime import Executor, SpikingExecutor

STEPS = (1, 2, 4, 8, 16, 32)


def _accuracy(scores: np.ndarray, y: np.ndarray) -> str:
    return f"{100 * (scores.argmax(1) == y).mean():.2f}"


def _ort_agreement(q: edgekit.Graph, x: np.ndarray) -> str:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(snn_onnx_model(q).SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    xq = quantize_array(x, q.tensors[q.inputs[0]].quant)
    got, want = session.run(None, {q.inputs[0]: xq})[0], SpikingExecutor(q).run(xq, raw=True)
    differ = int((got != want).sum())
    return "exact" if differ == 0 else f"{differ} differ"


def _ms_per_inference(graph: edgekit.Graph, x: np.ndarray, runs: int) -> float:
    ex = SpikingExecutor(graph)
    one = x[:1]
    for _ in range(10):
        ex.run(one)
    times = []
    for i in range(runs):
        one = x[i % len(x):][:1]
        start = time.perf_counter()
        ex.run(one)
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--calibration", type=int, default=256)
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    ds = data.digits(16)
    calib = ds.x_train[:args.calibration]
    torch.manual_seed(0)
    net = models.train(models.digits_cnn(16, pool="avg"), ds.x_train, ds.y_train,
                       epochs=args.epochs)
    ann = from_torch(net, torch.zeros(1, 1, 16, 16))
    print(f"digits CNN ANN: {_accuracy(Executor(ann).run(ds.x_test), ds.y_test)} %")
    rows, timing = [], []
    for calibrate in (None, "fas"):
        accuracy = {"float32": [], "int8": []}
        agreement = []
        for steps in STEPS:
            snn = to_snn(ann, calib, steps, calibrate=calibrate)
            q = edgekit.quantize(snn, calib)
            accuracy["float32"].append(_accuracy(SpikingExecutor(snn).run(ds.x_test), ds.y_test))
            accuracy["int8"].append(_accuracy(SpikingExecutor(q).run(ds.x_test), ds.y_test))
            agreement.append(_ort_agreement(q, ds.x_test))
            if steps == 8:
                timing.append([f"max{'+FAS' if calibrate else ''}", steps,
                               f"{_ms_per_inference(snn, ds.x_test, args.runs):.3f}",
                               f"{_ms_per_inference(q, ds.x_test, args.runs):.3f}"])
        label = "max+FAS" if calibrate else "max"
        rows += [[label, weights, *accuracy[weights]] for weights in ("float32", "int8")]
        rows.append([label, "ORT = runtime", *agreement])
    print(table(["thresholds", "weights", *[f"T={t}" for t in STEPS]], rows))
    print()
    print(table(["thresholds", "T", "float32 ms", "int8 ms"], timing))


if __name__ == "__main__":
    main()
