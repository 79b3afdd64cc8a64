"""``edgekit demo``: the whole pipeline on built-in data, no arguments, no downloads.

Trains the digits CNN in torch, exports it, imports it into a Graph, runs it on edgekit's
runtime and prints how the two agree; then quantizes it to int8 and deploys the same int8
Graph on every CPU backend this machine has, with accuracy and agreement per backend; profiles
it on every target, fine-tunes it on the device, runs it as firmware on the emulated Cortex-M3,
and converts an average-pooling twin into a spiking network. Each feature joins here as it
lands, so the demo shows everything edgekit does; the early-exit speech stage, which
synthesizes its own corpus and trains, runs as ``edgekit demo --asr`` (``edgekit.speech.demo``;
``make demo`` runs both).
"""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

import edgekit
from edgekit import metrics
from edgekit.cli import describe
from edgekit.console import progress, table
from edgekit.fileio import atomic_write, atomic_write_bytes


def run_demo(out: Path = Path("edgekit-demo"), size: int = 16, epochs: int = 15) -> dict[str, Any]:
    import torch

    from edgekit import data, models

    out.mkdir(parents=True, exist_ok=True)
    ds = data.digits(size)
    ds.save(out / "digits_test.npz")
    print(f"digits {size}x{size}: {len(ds.y_train)} train / {len(ds.y_test)} test images")

    net = models.train(models.digits_cnn(size), ds.x_train, ds.y_train, epochs=epochs,
                       progress=partial(progress, desc="train digits CNN (torch)"))
    example = (torch.from_numpy(ds.x_test[:1]),)
    program = torch.export.export(net, example)
    with atomic_write(out / "digits_cnn.pt2") as f:
        torch.export.save(program, f)

    graph = edgekit.from_torch(program)
    graph.save(out / "digits_cnn.ekm")
    session = edgekit.deploy(out / "digits_cnn.ekm", target="cpu")
    torch_logits = models.predict(net, ds.x_test)
    start = time.perf_counter()
    ek_logits = session.run(ds.x_test)
    ms_per_image = (time.perf_counter() - start) * 1e3 / len(ds.y_test)
    info = describe(graph)

    report = {
        "model": "digits_cnn",
        "torch_accuracy": metrics.accuracy(torch_logits, ds.y_test),
        "edgekit_accuracy": metrics.accuracy(ek_logits, ds.y_test),
        "top1_agreement": metrics.top1_agreement(torch_logits, ek_logits),
        "max_abs_diff": metrics.max_abs_error(torch_logits, ek_logits),
        "macs": info["totals"]["macs"],
        "params": info["totals"]["params"],
        "peak_activation_bytes": info["totals"]["peak_activation_bytes"],
        "edgekit_ms_per_image_batched": ms_per_image,
    }
    print()
    print(table(["model", "torch acc", "edgekit acc", "top-1 agree", "max |diff|", "MACs",
                 "peak act. B"],
                [("digits CNN", f"{report['torch_accuracy']:.2%}",
                  f"{report['edgekit_accuracy']:.2%}", f"{report['top1_agreement']:.2%}",
                  f"{report['max_abs_diff']:.2e}", report["macs"],
                  report["peak_activation_bytes"])]))
    if not np.array_equal(torch_logits.argmax(-1), ek_logits.argmax(-1)):
        print("warning: edgekit and torch disagree on some predictions (see max |diff|)")

    report["int8"] = int8_on_every_backend(graph, ds, out)
    report["profile"] = profile_on_every_target(out, ds.x_test[:1])
    report["finetune"] = finetune_on_device(graph, ds, out)
    report["mcu"] = on_the_microcontroller(out, ds)
    report["spiking"] = spiking_network(out, ds, epochs)
    atomic_write_bytes(out / "report.json", json.dumps(report, indent=1).encode())
    print(f"\nartefacts in {out}/: digits_cnn.pt2, digits_cnn.ekm, digits_cnn.int8.ekm, "
          "digits_cnn.int8.tflite, digits_cnn.int8.onnx, digits_snn.ekm, digits_snn.int8.ekm, "
          "digits_test.npz, report.json")
    return report


def int8_on_every_backend(graph, ds, out: Path) -> list[dict[str, Any]]:
    """Quantize with 500 training images, write every format, validate on each CPU backend."""
    from edgekit.converters.to_onnx import to_onnx
    from edgekit.converters.to_tflite import to_tflite
    from edgekit.targets import get_target
    from edgekit.validate import validate

    qgraph = edgekit.quantize(graph, ds.x_train[:500])
    qgraph.save(out / "digits_cnn.int8.ekm")
    to_tflite(qgraph, out / "digits_cnn.int8.tflite")
    to_onnx(qgraph, out / "digits_cnn.int8.onnx")
    rows = []
    for name in ("cpu", "cpu:onnxruntime", "cpu:litert", "cpu:tflite-micro"):
        ok, why = get_target(name).available()
        if not ok:
            rows.append({"target": name, "skipped": why})
            continue
        r = validate(qgraph, name, ds.x_test, ds.y_test, float_graph=graph, per_layer=False)
        rows.append({"target": name, "accuracy": r["accuracy"],
                     "float_accuracy": r["float_accuracy"],
                     "top1_vs_float": r["vs_float"]["top1_agreement"],
                     "top1_vs_edgekit": r["vs_edgekit_runtime"]["top1_agreement"],
                     "max_abs_vs_edgekit": r["vs_edgekit_runtime"]["max_abs_error"]})
    print("\nint8 (per-channel weights, min/max calibration) on every CPU backend:")
    print(table(["target", "float acc", "int8 acc", "top-1 vs float", "top-1 vs edgekit",
                 "max |diff| vs edgekit"],
                [(r["target"], "-", "skipped: " + r["skipped"], "", "", "") if "skipped" in r
                 else (r["target"], f"{r['float_accuracy']:.2%}", f"{r['accuracy']:.2%}",
                       f"{r['top1_vs_float']:.2%}", f"{r['top1_vs_edgekit']:.2%}",
                       f"{r['max_abs_vs_edgekit']:.3g}") for r in rows]))
    return rows


def profile_on_every_target(out: Path, x: np.ndarray, runs: int = 50) -> list[dict[str, Any]]:
    """The float and int8 models profiled on every target here (50 timed runs each), plus the
    Cortex-M4 profile as an absent device (estimated latency), in one table."""
    from edgekit.profile import profile
    from edgekit.targets import get_target, target_names

    rows = []
    for target in [*target_names(), "cpu (as cortex-m4)"]:
        name, device = (("cpu", "cortex-m4") if target.endswith("(as cortex-m4)")
                        else (target, None))
        ok, why = get_target(name).available()
        for model in ("digits_cnn", "digits_cnn.int8"):
            row: dict[str, Any] = {"model": model, "target": target}
            rows.append(row)
            if not ok:
                row["skipped"] = why
                continue
            try:
                r = profile(out / f"{model}.ekm", name, x, runs, 5, device=device,
                            per_layer=False)
            except edgekit.EdgekitError as err:
                row["skipped"] = str(err).splitlines()[0]
                continue
            lat, e = r["latency_ms"], r["energy"]
            row.update(latency_source=lat["source"],
                       p50_ms=lat["p50"] if lat["p50"] is not None else lat["estimate_ms"],
                       p99_ms=lat["p99"], energy_model_uj=e["model_uj_per_inference"],
                       energy_measured_uj=e["measured_uj_per_inference"],
                       measured_unavailable_reason=e["measured_unavailable_reason"],
                       weight_bytes=r["totals"]["weight_bytes"],
                       peak_activation_bytes=r["totals"]["peak_activation_bytes"],
                       fits=all(f["fits"] for f in r["fits"].values()))
    print(f"\nprofile, float vs int8 on every target ({runs} timed runs; energy: model = "
          "Horowitz 45 nm counts, measured = RAPL/NVML where readable):")
    print(table(["model", "target", "latency", "p50 ms", "p99 ms", "µJ (model)", "µJ (measured)",
                 "weight B", "peak act. B", "fits"],
                [(r["model"], r["target"], r["latency_source"], r["p50_ms"],
                  "-" if r["p99_ms"] is None else r["p99_ms"], r["energy_model_uj"],
                  "n/a" if r["energy_measured_uj"] is None else r["energy_measured_uj"],
                  r["weight_bytes"], r["peak_activation_bytes"], "yes" if r["fits"] else "NO")
                 for r in rows if "skipped" not in r]))
    for r in rows:
        if "skipped" in r:
            print(f"skipped {r['model']} on {r['target']}: {r['skipped']}")
    reasons: dict[str, list[str]] = {}
    for r in rows:
        if r.get("measured_unavailable_reason") and r["target"] not in reasons.get(
                r["measured_unavailable_reason"], []):
            reasons.setdefault(r["measured_unavailable_reason"], []).append(r["target"])
    for why, targets in reasons.items():
        print(f"no measured energy on {', '.join(targets)}: {why}")
    return rows


def finetune_on_device(graph, ds, out: Path, epochs: int = 5) -> list[dict[str, Any]]:
    """Transfer on the device side: the clean-digits model meets digits rotated by 90 degrees
    (a sensor mounted sideways) and learns them with each rule on numpy and numba alone; then
    the tuned Graph is re-quantized to int8. Shows accuracy before and after, and the training
    memory each rule needs (batch 32)."""
    from edgekit.learn import RULES
    from edgekit.runtime import Executor

    def rotate(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.rot90(x, 1, axes=(2, 3)))

    x_train, x_test = rotate(ds.x_train), rotate(ds.x_test)
    before = metrics.accuracy(Executor(graph).run(x_test), ds.y_test)
    rows = []
    for rule in progress(RULES, desc="fine-tune on rotated digits (numba)"):
        start = time.perf_counter()
        tuned, history = edgekit.finetune(graph, x_train, ds.y_train, rule=rule, epochs=epochs)
        seconds = time.perf_counter() - start
        with edgekit.deploy(edgekit.quantize(tuned, x_train[:500]), target="cpu") as session:
            int8_acc = metrics.accuracy(session.run(x_test), ds.y_test)
        if rule == "lls":
            tuned.save(out / "digits_cnn.rotated-lls.ekm")
        mem = history["memory"]
        rows.append({"rule": rule, "accuracy_before": before,
                     "accuracy_after": metrics.accuracy(Executor(tuned).run(x_test), ds.y_test),
                     "int8_accuracy_after": int8_acc, "seconds": seconds,
                     "training_bytes": mem["total"], "activation_bytes": mem["activations"]})
    bp_bytes = rows[0]["activation_bytes"] if rows[0]["rule"] == "bp" else None
    print(f"\non-device fine-tuning on rotated digits ({epochs} epochs, batch 32, all layers):")
    print(table(["rule", "acc before", "acc after", "int8 after", "train memory B",
                 "activations B", "vs bp", "seconds"],
                [(r["rule"], f"{r['accuracy_before']:.2%}", f"{r['accuracy_after']:.2%}",
                  f"{r['int8_accuracy_after']:.2%}", r["training_bytes"], r["activation_bytes"],
                  f"{r['activation_bytes'] / bp_bytes:.2f}" if bp_bytes else "-",
                  f"{r['seconds']:.1f}") for r in rows]))
    return rows


def on_the_microcontroller(out: Path, ds) -> dict[str, Any]:
    """The int8 model as C firmware on the emulated Cortex-M3 (QEMU mps2-an385): validated on
    every test image against edgekit's runtime, with the image's flash/RAM and the emulated
    instruction count per inference. The ELF is kept for flashing a real board."""
    import shutil

    from edgekit.targets import get_target
    from edgekit.validate import validate

    ok, why = get_target("mcu:qemu").available()
    if not ok:
        print(f"\nmicrocontroller stage skipped: {why}")
        return {"skipped": why}
    qgraph = edgekit.load(out / "digits_cnn.int8.ekm")
    start = time.perf_counter()
    r = validate(qgraph, "mcu:qemu", ds.x_test, ds.y_test, per_layer=False)
    with edgekit.deploy(qgraph, target="mcu:qemu") as session:
        dev = session.device_profile(ds.x_test[:1])
        shutil.copy(session.firmware.elf, out / "digits_cnn.int8.elf")
    seconds = time.perf_counter() - start
    macs = describe(qgraph)["totals"]["macs"]
    row = {"accuracy": r["accuracy"], "top1_vs_edgekit": r["vs_edgekit_runtime"]["top1_agreement"],
           "max_abs_vs_edgekit": r["vs_edgekit_runtime"]["max_abs_error"],
           "samples": r["samples"], "seconds": seconds, **dev,
           "instructions_per_mac": dev["instructions"] / macs}
    print(f"\nint8 digits CNN as C firmware on the emulated Cortex-M3 (mcu:qemu, {r['samples']} "
          f"test images over the serial link, {seconds:.1f} s):")
    print(table(["accuracy", "top-1 vs edgekit", "max |diff| vs edgekit", "flash B", "RAM B",
                 "instructions", "instr/MAC"],
                [(f"{row['accuracy']:.2%}", f"{row['top1_vs_edgekit']:.2%}",
                  f"{row['max_abs_vs_edgekit']:.3g}", row["flash_bytes"], row["ram_bytes"],
                  row["instructions"], f"{row['instructions_per_mac']:.2f}")]))
    print(f"instructions: {dev['source']}; firmware image {out}/digits_cnn.int8.elf "
          "(flash a real board: README, 'Microcontrollers')")
    return row


def spiking_network(out: Path, ds, epochs: int, timesteps: int = 8,
                    board_images: int = 20) -> dict[str, Any]:
    """The digits CNN with average pooling as a spiking network at T = 8: converted with
    FAS-style calibration, run event-driven with float32 and int8 weights, checked against its
    unrolled ONNX graph in ONNX Runtime and on the emulated Cortex-M3; then its
    synaptic operations and modelled energy against the ANN's."""
    import torch

    from edgekit import models
    from edgekit.converters.snn import to_snn
    from edgekit.profile.devices import load_profile
    from edgekit.profile.spiking import spiking_counts
    from edgekit.targets import get_target
    from edgekit.validate import validate

    net = models.train(models.digits_cnn(ds.x_train.shape[-1], pool="avg"), ds.x_train,
                       ds.y_train, epochs=epochs,
                       progress=partial(progress, desc="train avg-pool digits CNN (torch)"))
    ann = edgekit.from_torch(torch.export.export(net, (torch.from_numpy(ds.x_test[:1]),)))
    calib = ds.x_train[:256]
    start = time.perf_counter()
    snn = to_snn(ann, calib, timesteps, balancing="p99.9", calibrate="fas")
    qsnn = edgekit.quantize(snn, calib)
    seconds = time.perf_counter() - start
    snn.save(out / "digits_snn.ekm")
    qsnn.save(out / "digits_snn.int8.ekm")
    runs = [("float32", snn, "cpu", len(ds.y_test)), ("int8", qsnn, "cpu", len(ds.y_test)),
            ("float32", snn, "cpu:onnxruntime", len(ds.y_test)),
            ("int8", qsnn, "cpu:onnxruntime", len(ds.y_test)),
            ("float32", snn, "mcu:qemu", board_images),
            ("int8", qsnn, "mcu:qemu", board_images)]
    rows = []
    for weights, graph, target, n in runs:
        ok, why = get_target(target).available()
        if not ok:
            print(f"spiking network on {target} skipped: {why}")
            continue
        r = validate(graph, target, ds.x_test[:n], ds.y_test[:n], float_graph=ann,
                     per_layer=False)
        rows.append({"weights": weights, "target": target, "samples": r["samples"],
                     "accuracy": r["accuracy"],
                     "top1_vs_edgekit": r["vs_edgekit_runtime"]["top1_agreement"],
                     "max_abs_vs_edgekit": r["vs_edgekit_runtime"]["max_abs_error"]})
    ann_accuracy = metrics.accuracy(edgekit.deploy(ann).run(ds.x_test), ds.y_test)
    print(f"\nspiking digits CNN, T = {timesteps}, p99.9 thresholds + FAS calibration "
          f"({seconds:.1f} s to convert and quantize; ANN {ann_accuracy:.2%}):")
    print(table(["weights", "target", "images", "accuracy", "top-1 vs edgekit",
                 "max |diff| vs edgekit"],
                [(r["weights"], r["target"], r["samples"], f"{r['accuracy']:.2%}",
                  f"{r['top1_vs_edgekit']:.2%}", f"{r['max_abs_vs_edgekit']:.3g}")
                 for r in rows]))
    device = load_profile("cortex-m4")
    costs = [(weights, spiking_counts(graph, ds.x_test[:64], device))
             for weights, graph in (("float32", snn), ("int8", qsnn))]
    print(table(["weights", "firing rates", "SOPs", "first-layer MACs", "ANN MACs",
                 "E_ANN / E_SNN (cortex-m4 table)"],
                [(weights, ", ".join(f"{n['firing_rate']:.3f}" for n in c["neurons"]),
                  f"{c['synaptic_ops']:,.0f}", c["first_layer_macs"], c["ann_macs"],
                  f"{c['energy_ratio_ann_over_snn']:.2f}") for weights, c in costs]))
    return {"timesteps": timesteps, "ann_accuracy": ann_accuracy, "convert_seconds": seconds,
            "runs": rows, "energy": {w: {k: c[k] for k in ("synaptic_ops", "first_layer_macs",
                                                           "e_snn_uj", "e_ann_uj",
                                                           "energy_ratio_ann_over_snn")}
                                     for w, c in costs}}
