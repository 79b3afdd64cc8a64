"""Nine real networks through every stage, in one table (issue 19, "Real networks go through").

    python benchmarks/real_networks.py [--only NAME ...] [--steps 300] [--samples 32]
                                       [--board-samples 2] [--json out.json]

The networks are ``edgekit.zoo``'s: torchvision's mobilenet_v2, mobilenet_v3_small, resnet18,
squeezenet1_1 and shufflenet_v2_x0_5 at 64x64, and the four MLPerf Tiny reference models.
Nothing is downloaded: each is trained for ``--steps`` Adam steps on ``zoo.task``, a small
labelled task it learns on a CPU (classes marked by fixed smooth templates on smooth random
backgrounds; points near an 8-D subspace for the autoencoder), so the ``task`` column gives
what int8 costs: accuracy (or reconstruction error) of torch's float model and of edgekit's
int8 runtime on 256 held-out examples. ``--steps 0`` keeps the seeded random weights, where
int8 drifts layer after layer as trained weights do not let it. ``int8`` compares the int8
outputs with torch's float ones: top-1 agreement (``classes``: over how many classes torch's
top-1 spreads), SNR and the rms difference in output steps.

Each network goes through the public API as a user would: ``edgekit.from_torch`` of the stock
``torch.export`` program, the float Graph against torch, ``edgekit.quantize`` (min/max over
64 calibration inputs), the int8 Graph on every CPU backend against the edgekit runtime (raw
int8 outputs: ``=`` is bit-exact, else the largest difference in output steps, the share of
outputs that differ and the rms difference), the three writers, ``edgekit.profile`` against
every device profile (the fit, or the limit and its overshoot), and the emulated Cortex-M3
(``mcu:qemu``) against the runtime where it fits, or the does-not-fit error: its outputs, the
instructions of one inference and the image's flash and RAM beside the fit's (``fit``: the
``cortex-m3-qemu`` profile's, the firmware's own code, state and stack included). A stage that
cannot run says why (an unsupported op names the op); later stages show ``-``.

``--steps 0 --samples 2`` is the light run for the fit and board columns: they count shapes
and instructions, which training does not change.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch

import edgekit
from edgekit import zoo
from edgekit.converters.to_c import to_c
from edgekit.converters.to_onnx import to_onnx
from edgekit.converters.to_tflite import to_tflite
from edgekit.errors import EdgekitError, UnsupportedOpsError
from edgekit.profile import check_fit, profile_names
from edgekit.quant import quantize_array
from edgekit.targets import get_target

BACKENDS = {"cpu:onnxruntime": "ort", "cpu:litert": "litert", "cpu:tflite-micro": "tfm"}
CALIBRATION = 64


def gist(err: Exception, chars: int = 90) -> str:
    """An error in one short cell: the ops an import lacks, a fit's overshoot, else the
    message's first line."""
    if isinstance(err, UnsupportedOpsError):
        return "missing " + ", ".join(sorted({op for op, _ in err.ops}))
    text = str(err).splitlines()[0]
    over = re.findall(r"(flash|sram): .*? exceeds it by ([\d,]+) B", text)
    if over:
        return "does not fit: " + ", ".join(f"{lim} +{mb(int(b.replace(',', '')))}"
                                            for lim, b in over)
    return text if len(text) <= chars else text[:chars] + "..."


def mb(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def snr_db(ref: np.ndarray, got: np.ndarray) -> float:
    noise = float(np.sum((ref - got) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(float(np.sum(ref**2)) / noise)


def agreement(ref: np.ndarray, got: np.ndarray, task: str) -> str:
    """Top-1 agreement (classifiers) and output SNR against ``ref``."""
    snr = f"SNR {snr_db(ref, got):.1f} dB"
    if task != "classify":
        return snr
    same = int(np.sum(ref.argmax(1) == got.argmax(1)))
    return f"top-1 {same}/{len(ref)}, {snr}"


def rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(values, dtype=np.float64))))


def steps(ref: np.ndarray, got: np.ndarray) -> str:
    """Raw int8 outputs against the runtime's: '=' when identical, else the largest difference
    in output steps, the share of outputs that differ and the rms difference."""
    diff = ref.astype(np.int32) - got.astype(np.int32)
    if not diff.any():
        return "="
    return f"≤{np.abs(diff).max()} ({100 * np.mean(diff != 0):.0f}%, rms {rms(diff):.2f})"


def run_network(name: str, train_steps: int, samples: int, board_samples: int,
                out: Path) -> dict[str, Any]:
    net = zoo.NETWORKS[name]
    row: dict[str, Any] = {"network": name, "source": net.source}
    start = time.perf_counter()
    model = zoo.trained(name, train_steps) if train_steps else zoo.network(name)
    inputs = (lambda n, seed: zoo.task(name, n, seed)[0]) if train_steps else \
        (lambda n, seed: zoo.sample_inputs(name, n, seed))
    x_cal, x = inputs(CALIBRATION, seed=2), inputs(samples, seed=3)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    program = torch.export.export(model, (torch.from_numpy(x[:1]),))
    try:
        graph = edgekit.from_torch(program)
    except EdgekitError as err:
        row["import"] = gist(err)
        return row
    row["import"] = f"ok ({len(graph.nodes)} nodes)"
    if net.task == "classify":  # how many classes torch's top-1 spreads over: agreement on one
        row["classes"] = len(np.unique(ref.argmax(1)))  # class says less than on many
    row["float"] = agreement(ref, edgekit.deploy(graph, "cpu").run(x), net.task)
    try:
        q = edgekit.quantize(graph, x_cal)
    except EdgekitError as err:
        row["int8"] = gist(err)
        return row
    runtime = edgekit.deploy(q, "cpu")
    if train_steps:
        row["task"] = task_cost(name, model, runtime)
    got = runtime.run(x)
    row["int8"] = (f"{agreement(ref, got, net.task)}, "
                   f"rms {rms((got - ref) / q.tensors[q.outputs[0]].quant.scale[0]):.2f} steps")
    xq = quantize_array(x, q.tensors[q.inputs[0]].quant)
    raw = runtime.run(xq, raw=True)
    cells = []
    for target, short in BACKENDS.items():
        ok, why = get_target(target).available()
        if not ok:
            cells.append(f"{short} n/a ({why})")
            continue
        try:
            with edgekit.deploy(q, target) as session:
                cells.append(f"{short} {steps(raw, session.run(xq, raw=True))}")
        except EdgekitError as err:
            cells.append(f"{short} {gist(err)}")
    row["backends"] = ", ".join(cells)
    writers = []
    for short, write, path in [("tflite", to_tflite, out / f"{name}.tflite"),
                               ("onnx", to_onnx, out / f"{name}.onnx"),
                               ("c", to_c, out / f"{name}_c")]:
        try:
            written = write(q, path)
            size = sum(f.stat().st_size for f in written.rglob("*")) if written.is_dir() \
                else written.stat().st_size
            writers.append(f"{short} {mb(size)}")
        except EdgekitError as err:
            writers.append(f"{short}: {gist(err)}")
    row["writers"] = ", ".join(writers)
    for device in profile_names():
        try:
            report = edgekit.profile(q, "cpu", x[:1], runs=3, warmup=1, device=device,
                                     per_layer=False)
        except EdgekitError as err:
            row[device] = gist(err)
            continue
        over = [f"{f['limit']} +{mb(f['overshoot_bytes'])}" for f in report["fits"].values()
                if not f["fits"]]
        row[device] = "✗ " + ", ".join(over) if over else "fits"
    fit = {f.name: f.needed_bytes for f in check_fit(q, "cortex-m3-qemu")}
    row["fit"] = f"{mb(fit['flash'])} / {mb(fit['sram'])}"
    row["board"] = board(q, xq[:board_samples], raw[:board_samples], fit)
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row


def task_cost(name: str, model, runtime, n: int = 256) -> str:
    """Float torch against edgekit int8 on ``n`` held-out task examples."""
    x, y = zoo.task(name, n, seed=9)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    got = runtime.run(x)
    if zoo.NETWORKS[name].task == "reconstruct":
        return f"mse {np.mean((ref - x) ** 2):.3f} → {np.mean((got - x) ** 2):.3f}"
    acc = [100 * np.mean(out.argmax(1) == y) for out in (ref, got)]
    return f"{acc[0]:.1f}% → {acc[1]:.1f}% ({acc[1] - acc[0]:+.1f})"


def board(q, xq: np.ndarray, raw: np.ndarray, fit: dict[str, int]) -> str:
    """The board's outputs against the runtime's, the instructions of one inference, the
    built image's flash / RAM and how many bytes the fit (``fit``) counts above them."""
    ok, why = get_target("mcu:qemu").available()
    if not ok:
        return f"n/a ({why})"
    try:
        with edgekit.deploy(q, "mcu:qemu", timeout=120.0) as session:
            got = np.concatenate([session.run(xq[i:i + 1], raw=True) for i in range(len(xq))])
            run = session.device_profile(xq[:1])
    except EdgekitError as err:
        return gist(err)
    result = steps(raw, got)
    image = (f"{run['instructions'] / 1e6:.1f} M instructions, image "
             f"{mb(run['flash_bytes'])} / {mb(run['ram_bytes'])} (fit +"
             f"{fit['flash'] - run['flash_bytes']:,} / +{fit['sram'] - run['ram_bytes']:,} B)")
    return (f"bit-exact ({len(xq)}/{len(xq)})" if result == "=" else result) + f", {image}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=list(zoo.NETWORKS), metavar="NAME")
    parser.add_argument("--steps", type=int, default=300, help="training steps (0: random)")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--board-samples", type=int, default=2)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the figures are per network, not a race for cores

    try:
        zoo.torchvision_models()
        print(f"torch {torch.__version__}, torchvision {version('torchvision')}")
    except ImportError as err:
        print(f"torchvision not installed ({err}): its five networks will say so")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or zoo.NETWORKS:
            try:
                row = run_network(name, args.steps, args.samples, args.board_samples,
                                  Path(tmp))
            except ImportError as err:
                row = {"network": name, "import": f"needs {err.name}"}
            rows.append(row)
            print(json.dumps(row, ensure_ascii=False), flush=True)
    columns = ["network", "import", "task", "classes", "float", "int8", "backends", "writers",
               *profile_names(), "fit", "board"]
    print()
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row.get(c, "-")) for c in columns) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
