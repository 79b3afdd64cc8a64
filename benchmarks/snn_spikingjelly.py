"""edgekit's ANN→SNN conversion and event-driven runtime beside SpikingJelly's ``ann2snn``, on
the same trained ANN and the same calibration images, in one run: accuracy per T and time per
inference at batch 1.

Install SpikingJelly for this benchmark only (its declared torchvision/torchaudio pins do not
import beside this torch, and ``ann2snn`` needs none of them)::

    pip install --no-deps spikingjelly && pip install loguru requests tqdm

Run: ``python benchmarks/snn_spikingjelly.py [--epochs 15] [--calibration 256]``. The ANN is the
digits CNN with average pooling and ``nn.ReLU`` modules (SpikingJelly converts only those).
SpikingJelly: ``Converter(RateCodingRecipe(loader, mode))`` with mode "Max" and "99.9%", its
IF neurons run in torch for T steps, the output averaged. edgekit: ``to_snn`` with max and
99.9th-percentile balancing, and with FAS-style calibration, on ``SpikingExecutor``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from edgekit import data, models
from edgekit.console import table
from edgekit.converters.from_torch import from_torch
from edgekit.converters.snn import to_snn
from edgekit.runtime import Executor, SpikingExecutor

STEPS = (1, 2, 4, 8, 16, 32)
TIMED_STEPS = 8


def spikingjelly_snn(net: torch.nn.Module, calib: np.ndarray, mode: str) -> torch.nn.Module:
    import copy

    from spikingjelly.activation_based.ann2snn import Converter
    from spikingjelly.activation_based.ann2snn.recipes import RateCodingRecipe

    loader = [(torch.from_numpy(calib[i:i + 64]), None) for i in range(0, len(calib), 64)]
    return Converter(RateCodingRecipe(loader, mode=mode)).convert(copy.deepcopy(net)).eval()


@torch.no_grad()
def spikingjelly_run(snn: torch.nn.Module, x: np.ndarray, steps: int) -> np.ndarray:
    from spikingjelly.activation_based import functional

    functional.reset_net(snn)
    xt = torch.from_numpy(x)
    total = sum(snn(xt) for _ in range(steps))
    return (total / steps).numpy()


def per_inference_ms(call, x: np.ndarray, n: int) -> float:
    call(x[:1])
    start = time.perf_counter()
    for i in range(n):
        call(x[i:i + 1])
    return (time.perf_counter() - start) / n * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--calibration", type=int, default=256)
    ap.add_argument("--timed", type=int, default=200, help="inferences timed at batch 1")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ds = data.digits(16)
    calib = ds.x_train[:args.calibration]
    torch.manual_seed(0)
    net = models.train(models.digits_cnn(16, pool="avg"), ds.x_train, ds.y_train,
                       epochs=args.epochs)
    ann = from_torch(net, torch.zeros(1, 1, 16, 16))
    ann_acc = 100 * (Executor(ann).run(ds.x_test).argmax(1) == ds.y_test).mean()

    def accuracy(scores: np.ndarray) -> str:
        return f"{100 * (scores.argmax(1) == ds.y_test).mean():.2f}"

    rows = []
    for label, mode in (("max", "Max"), ("p99.9", "99.9%")):
        sj = spikingjelly_snn(net, calib, mode)
        ms = per_inference_ms(lambda x, sj=sj: spikingjelly_run(sj, x, TIMED_STEPS), ds.x_test,
                              args.timed)
        rows.append([f"SpikingJelly {mode}",
                     *[accuracy(spikingjelly_run(sj, ds.x_test, t)) for t in STEPS],
                     f"{ms:.3f}"])
        for calibrate in (None, "fas"):
            accs, ms = [], None
            for steps in STEPS:
                snn = to_snn(ann, calib, steps, balancing=label, calibrate=calibrate)
                ex = SpikingExecutor(snn)
                accs.append(accuracy(ex.run(ds.x_test)))
                if steps == TIMED_STEPS:
                    ms = per_inference_ms(ex.run, ds.x_test, args.timed)
            rows.append([f"edgekit {label}{' + FAS' if calibrate else ''}", *accs, f"{ms:.3f}"])
        print(table(["converter", *[f"T={t}" for t in STEPS], f"ms/inf T={TIMED_STEPS}"],
                    rows[-3:]), flush=True)
    torch_ms = per_inference_ms(lambda x: net(torch.from_numpy(x)), ds.x_test, args.timed)
    print(f"\nANN accuracy {ann_acc:.2f} %; ANN in torch {torch_ms:.3f} ms per inference "
          f"(batch 1, one thread)\n")
    print(table(["converter", *[f"T={t}" for t in STEPS], f"ms/inf T={TIMED_STEPS}"], rows))


if __name__ == "__main__":
    main()
