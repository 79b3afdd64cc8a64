"""The ``edgekit`` command line: one subcommand per verb, each a thin layer over the Python API.

Every ``EdgekitError`` ends as one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import warnings
from pathlib import Path
from typing import NoReturn

import numpy as np

import edgekit
from edgekit.console import table
from edgekit.errors import EdgekitError
from edgekit.fileio import atomic_write, atomic_write_bytes, check_file, check_folder
from edgekit.graph import Graph
from edgekit.limits import check_npz
from edgekit.profile.counts import describe
from edgekit.targets.litert import KERNELS as LITERT_KERNELS


def load_model(path: str | Path) -> Graph:
    """A Graph from ``.ekm``, ``.onnx`` or a ``torch.export`` program saved as ``.pt2``."""
    path = Path(path)
    if not path.exists():
        raise EdgekitError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".ekm":
        return edgekit.load(path)
    if suffix == ".onnx":
        return edgekit.from_onnx(path)
    if suffix == ".pt2":
        from edgekit.converters.pt2 import load_pt2

        return edgekit.from_torch(load_pt2(path))
    raise EdgekitError(f"{path}: unknown model format {suffix!r}; use .ekm, .onnx or .pt2")


def load_data(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Inputs and labels: a ``.npy`` array, or an ``.npz`` data file's ``x`` and ``y`` (if any).
    The labels are class indices, one per input (``metrics.class_labels``: a column (N, 1) or
    one-hot rows are taken as such; any other shape, length or type is refused here)."""
    from edgekit.metrics import class_labels

    x, y = _read_data(Path(path))
    if y is None:
        return x, None
    try:
        return x, class_labels(y, len(x))
    except EdgekitError as err:
        raise EdgekitError(f"{path}: {err}") from None


def load_array(path: str | Path) -> np.ndarray:
    return _read_data(Path(path))[0]


def _read_data(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """``x`` (real numbers with a batch axis) and ``y`` as stored; never unpickles."""
    try:
        check_npz(path)
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                if "x" not in data.files:
                    raise EdgekitError(f"{path}: data files need an 'x' array, found "
                                       f"{data.files}")
                x, y = data["x"], data["y"] if "y" in data.files else None
        else:
            x, y = data, None
    except EdgekitError:
        raise
    except FileNotFoundError:
        raise EdgekitError(f"{path}: no such file") from None
    except ValueError as err:
        if "allow_pickle" in str(err):  # numpy's refusal to build an object array
            raise EdgekitError(f"{path}: holds Python objects (a pickle); edgekit reads only "
                               "numeric arrays") from None
        raise EdgekitError(f"{path}: not a numpy .npy/.npz file ({err})") from None
    except Exception as err:
        raise EdgekitError(f"{path}: not a numpy .npy/.npz file ({err})") from None
    if x.dtype.kind not in "fiu" or x.ndim == 0:
        raise EdgekitError(f"{path}: inputs 'x' must be real numbers with a batch axis, got "
                           f"{x.dtype} of shape {x.shape}")
    return x, y


WRITERS = {"ekm": None, "onnx": "to_onnx", "tflite": "to_tflite"}
TIMEOUT_HELP = ("seconds one inference may take on a board (mcu:* targets; default: from the "
                "model's expected cost on it)")
LITERT_KERNELS_HELP = ("cpu:litert's int8 kernels: xnnpack (default, fast, drifts by single "
                       "steps), builtin, or reference (TFLite's rule, bit-exact or one step off, "
                       "40-200x slower)")


def target_options(args: argparse.Namespace) -> dict[str, object]:
    """The target options a command's flags give (``--timeout``, ``--litert-kernels``), each
    only where its target takes it."""
    kernels = getattr(args, "litert_kernels", None)
    if kernels and args.target != "cpu:litert":
        raise EdgekitError(f"--litert-kernels applies to --target cpu:litert, not "
                           f"{args.target!r}")
    return {"timeout": args.timeout, "kernels": kernels}


def cmd_convert(args: argparse.Namespace) -> None:
    formats = [f.strip() for f in args.to.split(",") if f.strip()]
    unknown = set(formats) - set(WRITERS)
    if unknown or not formats:
        raise EdgekitError(f"--to takes a comma-separated list of {', '.join(WRITERS)}; "
                           f"got {args.to!r}")
    if args.report and not args.quantize:
        raise EdgekitError("--report compares float and int8 layers: add --quantize int8")
    if args.to_snn and args.quantize not in (None, "int8"):
        raise EdgekitError(f"--quantize {args.quantize} is for float Graphs; a spiking Graph "
                           "(--to-snn) quantizes to int8")
    out = Path(args.output)
    single = formats == ["ekm"] and not args.quantize and out.suffix == ".ekm"
    paths = _convert_outputs(args, formats, out, single)
    graph = load_model(args.model)
    if args.to_snn:
        graph = _to_snn(graph, args)
    if single:
        print(f"wrote {graph.save(out)} ({len(graph.nodes)} nodes, {len(graph.params)} params)")
        return
    if args.quantize and not args.calibration_data:
        raise EdgekitError("--quantize needs --calibration-data data.npz (inputs in 'x')")
    out.mkdir(parents=True, exist_ok=True)
    float_graph = graph
    if args.quantize:
        calib = load_array(args.calibration_data)
        graph = edgekit.quantize(graph, calib, scheme=args.quantize,
                                 calibration=args.calibration, group_size=args.group_size,
                                 rex=args.rex)
        print(f"wrote {float_graph.save(paths['float'])} (float reference)")
    for fmt in formats:
        path = paths[fmt]
        if fmt == "ekm":
            graph.save(path)
        elif args.to_snn and fmt == "onnx":
            from edgekit.converters.snn_onnx import snn_to_onnx

            snn_to_onnx(graph, path)
        else:
            getattr(importlib.import_module(f"edgekit.converters.{WRITERS[fmt]}"),
                    WRITERS[fmt])(graph, path)
        print(f"wrote {path}")
    if args.report:
        from edgekit.validate import quantization_report

        rows = quantization_report(float_graph, graph, load_array(args.calibration_data))
        print(table(["layer", "op", "SQNR dB", "drop dB", ""],
                    [(r["layer"], r["op"], r["sqnr_db"], r["drop_db"],
                      "<- costs the most" if r["worst"] else "") for r in rows]))


def _convert_outputs(args: argparse.Namespace, formats: list[str], out: Path,
                     single: bool) -> dict[str, Path]:
    """The file ``convert`` writes per format (and ``float``, the float reference beside an
    int8 model), each checked before any work: writable, and none an input of the command."""
    if single:
        paths = {"ekm": out}
    else:
        if out.exists() and not out.is_dir():
            raise EdgekitError(f"{out}: is a file; -o names a folder when quantizing or writing "
                               "more than one .ekm")
        check_folder(out, create=True)
        stem = Path(args.model).stem
        paths = {fmt: out / f"{stem}.{fmt}" for fmt in formats}
        if args.quantize:
            paths["float"] = out / f"{stem}.float.ekm"
    for path in paths.values():
        check_file(path, (args.model, args.calibration_data), create_folder=not single)
    return paths


def _to_snn(graph: edgekit.Graph, args: argparse.Namespace) -> edgekit.Graph:
    """``convert --to-snn``: the spiking Graph, thresholds from the calibration data."""
    from edgekit.console import progress
    from edgekit.converters.snn import (
        BALANCINGS,
        CHECK_SAMPLES,
        SpikingConversionWarning,
        check_summary,
        to_snn,
    )

    if not args.calibration_data or args.report:
        raise EdgekitError("--to-snn needs --calibration-data data.npz (inputs in 'x') and "
                           "takes no --report (--quantize int8 then makes an int8 SNN)")
    balancing = args.balancing
    if balancing not in BALANCINGS:
        try:
            balancing = float(balancing)
        except ValueError:
            raise EdgekitError(f"--balancing is one of {', '.join(BALANCINGS)} or a fraction "
                               f"of the max such as 0.5, got {balancing!r}") from None
    if not args.memory_budget > 0:
        raise EdgekitError(f"--memory-budget is in MiB and must be positive, got "
                           f"{args.memory_budget:g}")
    # QCFS's shift of half a level is an initial membrane of half the threshold
    v_init = args.v_init if args.v_init is not None else 0.5 * (balancing == "trained")
    x, y = load_data(args.calibration_data)
    # the default: FAS, then surrogate-gradient fine-tuning where the data has labels
    calibrate = args.calibrate or ("finetune" if y is not None else "fas")
    if calibrate == "finetune" and y is None:
        raise EdgekitError("--calibrate finetune trains on labels: the calibration data needs "
                           "'y' beside 'x'")
    tune = calibrate == "finetune"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SpikingConversionWarning)
        snn = to_snn(graph, x, args.timesteps, balancing=balancing, v_init=v_init,
                     calibrate=None if calibrate == "none" else "fas", labels=y,
                     memory_budget=int(args.memory_budget * 2**20),
                     check=0 if tune else CHECK_SAMPLES,
                     progress=lambda units: progress(units, desc="to-snn"))
        if tune:
            from edgekit.converters.snn_finetune import finetune_and_check

            snn = finetune_and_check(graph, snn, x, y,
                                     progress=lambda units: progress(units, desc="finetune"))
    print(f"converted to an SNN: T = {args.timesteps}, {args.balancing} balancing, "
          f"calibration {calibrate}")
    print(check_summary(snn.metadata["conversion_check"]))
    for warning in caught:  # one line each, as errors are
        if issubclass(warning.category, SpikingConversionWarning):
            print(f"edgekit: warning: {warning.message}", file=sys.stderr)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename,
                                 warning.lineno)
    return snn


def cmd_deploy(args: argparse.Namespace) -> None:
    from edgekit.validate import validate

    graph = load_model(args.model)
    if not args.validate:
        with edgekit.deploy(graph, target=args.target, **target_options(args)) as session:
            print(f"{args.target}: compiled {args.model} ({type(session).__name__})")
        return
    x, y = load_data(args.validate)
    reference = load_model(args.reference) if args.reference else None
    report = validate(graph, args.target, x, y, float_graph=reference, **target_options(args))
    if args.json:
        print(json.dumps(report, indent=1))
        return
    print(f"validated {report['samples']} samples on {args.target}")
    rows = [("vs edgekit runtime", report["vs_edgekit_runtime"])]
    if "vs_float" in report:
        rows.append(("vs float model", report["vs_float"]))
    print(table(["comparison", "top-1 agree", "max |err|", "cosine", "SNR dB"],
                [(k, f"{v['top1_agreement']:.2%}", v["max_abs_error"], v["cosine"],
                  v["snr_db"]) for k, v in rows]))
    if "int8_vs_edgekit_runtime" in report:
        print(f"int8 outputs vs edgekit runtime: {_steps(report['int8_vs_edgekit_runtime'])}")
    for key in ("accuracy", "edgekit_runtime_accuracy", "float_accuracy"):
        if key in report:
            print(f"{key.replace('_', ' ')}: {report[key]:.2%}")
    if report.get("layers"):
        print(table(["layer tensor", "max |err|", "cosine", "SNR dB", "int8 vs runtime"],
                    [(r["tensor"], r["max_abs_error"], r["cosine"], r["snr_db"],
                      _steps(r) if "max_steps" in r else "-") for r in report["layers"]]))
    for note in report.get("notes", []):
        print(f"note: {note}")


def _steps(figures: dict) -> str:
    """``metrics.int8_steps`` in a few words."""
    if not figures["differing"]:
        return f"bit-exact ({figures['values']} values)"
    return (f"{figures['differing_share']:.1%} of {figures['values']} values differ, "
            f"by up to {figures['max_steps']} step(s)")


def cmd_inspect(args: argparse.Namespace) -> None:
    if args.ops:
        return _list_ops(args)
    if not args.model:
        raise EdgekitError("give a MODEL to inspect, or --ops for the operators edgekit supports")
    info = describe(load_model(args.model))
    if args.json:
        print(json.dumps(info, indent=1))
        return
    print(table(["#", "layer", "op", "output", "params", "MACs"],
                [(i, la["name"], la["op"] + ("+" + la["activation"]
                                              if la["activation"] != "none" else ""),
                  "x".join(map(str, la["output_shape"])), la["params"], la["macs"])
                 for i, la in enumerate(info["layers"])]))
    t = info["totals"]
    print(f"\n{t['nodes']} nodes, {t['params']:,} params ({t['weight_bytes']:,} B), "
          f"{t['macs']:,} MACs per sample, peak activations {t['peak_activation_bytes']:,} B")


def _list_ops(args: argparse.Namespace) -> None:
    """``inspect --ops``: the Graph's op set (``edgekit.ops.OPS``), what an unsupported-op error
    points to; which backend runs each op is the README's op table."""
    from edgekit.ops import OPS, REQUIRED

    if args.model:
        raise EdgekitError("inspect --ops lists the op set and takes no MODEL")
    ops = [{"op": name, "inputs": list(spec.n_inputs),
            "attrs": {k: "required" if v is REQUIRED else v for k, v in spec.attrs.items()},
            "doc": spec.doc} for name, spec in sorted(OPS.items())]
    if args.json:
        print(json.dumps(ops, indent=1))
        return
    print(table(["op", "inputs", "attributes (default)", "computes"],
                [(o["op"], "-".join(map(str, sorted(set(o["inputs"])))),
                  ", ".join(f"{k}={v}" for k, v in o["attrs"].items()), o["doc"])
                 for o in ops]))
    print(f"\n{len(ops)} ops; which backend runs each: README, 'What runs where'")


def cmd_run(args: argparse.Namespace) -> None:
    if args.output:
        if Path(args.output).suffix.lower() not in (".npy", ".npz"):
            raise EdgekitError(f"--output {args.output}: name a .npy file, or a .npz file (the "
                               "outputs stored as 'y')")
        check_file(args.output, (args.model, args.input))
    graph = load_model(args.model)
    npz = bool(args.output) and Path(args.output).suffix.lower() == ".npz"
    if args.output and len(graph.outputs) > 1 and not npz:
        raise EdgekitError(f"--output {args.output}: this model has {len(graph.outputs)} outputs "
                           f"({', '.join(graph.outputs)}); a .npy file holds one: name a .npz")
    x = load_array(args.input)
    if args.budget:  # an anytime network: its best path within the budget
        from edgekit.anytime.cli import describe_path, run_budget

        y, path = run_budget(graph, args.target, x, args.budget, args.timeout)
    else:
        with edgekit.deploy(graph, target=args.target, **target_options(args)) as session:
            y = session.run(x)
    outputs = dict(zip(graph.outputs, y if len(graph.outputs) > 1 else [y], strict=True))
    if args.output:
        with atomic_write(args.output) as f:
            if npz:  # one output as 'y'; several by their names in the Graph
                np.savez(f, **(outputs if len(outputs) > 1 else {"y": y}))
            else:
                np.save(f, y)
    # per output: its shape and the argmax per sample (none for one value per sample)
    summaries = [{"name": name, "shape": list(v.shape),
                  "argmax": v.argmax(-1).tolist() if v.ndim > 1 else None}
                 for name, v in outputs.items()]
    if args.json:  # one output as it always was; several as a list, by name
        print(json.dumps(({k: summaries[0][k] for k in ("shape", "argmax")}
                          if len(summaries) == 1 else {"outputs": summaries})
                         | ({"path": path} if args.budget else {})))
        return
    if args.budget:
        print(describe_path(graph, path))
    for out in summaries:
        argmax = out["argmax"]
        print(f"output {out['name']} {tuple(out['shape'])} {outputs[out['name']].dtype}"
              + ("" if argmax is None else f"; argmax per sample: {argmax[:20]}"
                 + (" ..." if len(argmax) > 20 else "")))
    if args.output:
        print(f"saved to {args.output}")


def cmd_targets(args: argparse.Namespace) -> None:
    from edgekit.firmware_bridge.ports import DEFAULT, PORTS
    from edgekit.targets import get_target, target_names

    rows = []
    # the emulated boards per core too (not in target_names(): every-target loops such as the
    # demo's profile would build and run four boards)
    boards = [f"mcu:qemu:{core}" for core in PORTS if core != DEFAULT]
    for name in sorted([*target_names(), *boards]):
        try:
            ok, why = get_target(name).available()
        except Exception as err:  # a broken third-party plugin must not hide the others
            ok, why = False, f"failed to load: {err}"
        rows.append({"target": name, "available": ok, "reason": why})
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print(table(["target", "available", "why not"],
                    [(r["target"], "yes" if r["available"] else "no", r["reason"]) for r in rows]))


def cmd_demo(args: argparse.Namespace) -> None:
    from edgekit.demo import run_demo

    check_folder(args.out, create=True)
    if args.asr:  # the speech stage alone (make demo runs it after the main demo)
        from edgekit.speech.demo import run

        report = run(Path(args.out))
    else:
        report = run_demo(Path(args.out))
    if args.json:
        print(json.dumps(report, indent=1))


def cmd_profile(args: argparse.Namespace) -> None:
    from edgekit.profile import profile
    from edgekit.profile.compare import compare
    from edgekit.profile.plot import plot_format, plot_pareto
    from edgekit.speech.cli import exit_options

    for out in (args.json, args.plot):
        if out:
            check_file(out, [args.model, *(args.compare or []), args.labels, args.profile])
    if args.plot:
        plot_format(args.plot)
    data = load_data(args.labels) if args.labels else None
    models = [args.model] * bool(args.model) + (args.compare or [])
    if not models:
        raise EdgekitError("give a MODEL to profile, or --compare a.ekm b.ekm ...")
    if args.compare:
        rows = compare({Path(m).stem: load_model(m) for m in models}, args.target, data,
                       args.runs, args.warmup, args.profile, timeout=args.timeout)
        print(table(["model", "accuracy", f"latency ms ({rows[0]['latency_source']})",
                     "p99 ms", "energy µJ (model)", "energy µJ (measured)", "MACs",
                     "weight B", "peak act. B", "fits", "Pareto"],
                    [(r["model"], "-" if r["accuracy"] is None else f"{r['accuracy']:.2%}",
                      r["latency_ms"], "-" if r["latency_p99_ms"] is None else r["latency_p99_ms"],
                      r["energy_model_uj"], "n/a" if r["energy_measured_uj"] is None
                      else r["energy_measured_uj"], r["macs"], r["weight_bytes"],
                      r["peak_activation_bytes"], "yes" if r["fits"] else "NO",
                      ",".join(k[7:] for k in ("pareto_energy", "pareto_latency") if r.get(k))
                      or "-") for r in rows]))
        if args.plot:
            print(f"wrote {plot_pareto(rows, args.plot)}")
        if args.json:
            atomic_write_bytes(args.json, json.dumps(rows, indent=1).encode())
            print(f"wrote {args.json}")
        return
    graph = load_model(args.model)
    x = data[0][:1] if data else None
    report = profile(graph, args.target, x, args.runs, args.warmup, device=args.profile,
                     per_layer=args.per_layer, name=Path(args.model).stem,
                     **exit_options(args, graph, data), **target_options(args))
    print(report.text(per_layer=args.per_layer))
    if "anytime" in graph.metadata:
        from edgekit.anytime.cli import curve

        print(curve(graph, data))
    if args.json:
        print(f"wrote {report.save_json(args.json)}")
    if args.plot:
        print(f"wrote {report.plot(args.plot)}")
    if args.training:
        from edgekit.learn import memory_for

        mem = memory_for(graph, args.training)
        print(f"training with {args.training} (batch {mem['batch']}, AdamW): "
              + ", ".join(f"{k} {mem[k]:,} B" for k in ("weights", "rule_arrays", "gradients",
                                                         "optimizer", "activations", "total")))


def cmd_finetune(args: argparse.Namespace) -> None:
    from edgekit.console import progress
    from edgekit.learn import finetune

    checkpoint = args.checkpoint or f"{args.out}.ckpt"
    check_file(args.out, (args.model, args.data, checkpoint))
    check_file(checkpoint, (args.model, args.data))
    graph = load_model(args.model)
    x, y = load_data(args.data)
    if y is None:
        raise EdgekitError(f"{args.data}: fine-tuning needs labels ('y') beside the inputs")
    layers = int(args.layers) if args.layers.isdigit() else args.layers

    def report(r: dict) -> None:
        if not args.json:
            print(f"epoch {r['epoch']}: loss {r['loss']:.4f}, train accuracy {r['accuracy']:.2%}"
                  f", lr {r['lr']:.3g}" + (f", {r['seconds']:.1f}s" if "seconds" in r else
                                           f", {r['head_instructions']:,.0f} instructions per "
                                           "sample in the head"), flush=True)

    if args.target:
        return finetune_board(args, graph, x, y, report)
    tuned, history = finetune(
        graph, x, y, rule=args.rule, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
        layers=layers, seed=args.seed, online=args.online, norm=args.norm,
        dual_precision=args.dual_precision, checkpoint=checkpoint, resume=args.resume,
        progress=lambda epochs: progress(epochs, desc=f"finetune ({args.rule})"),
        on_epoch=report)
    tuned.save(args.out)
    if args.json:
        print(json.dumps({"out": str(args.out), **history}, indent=1))
        return
    mem = history["memory"]
    print(f"wrote {args.out}; training memory ({args.rule}, batch {mem['batch']}): "
          f"{mem['total']:,} B, of which activations {mem['activations']:,} B")


def finetune_board(args: argparse.Namespace, graph, x, y, report) -> None:
    """``edgekit finetune --target mcu:...``: the head trains on the board
    (``edgekit.learn.board``): backprop, the frozen backbone int8, the head in float."""
    from edgekit.console import progress
    from edgekit.learn.board import finetune_on_board

    if args.rule != "bp" or args.norm or args.resume:
        raise EdgekitError("on the board the head trains with backprop (--rule bp), without "
                           "--norm or --resume")
    tuned, history = finetune_on_board(
        graph, x, y, args.target, layers="head" if args.layers == "all" else
        (int(args.layers) if args.layers.isdigit() else args.layers),
        epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
        online=args.online, timeout=args.timeout,
        progress=lambda epochs: progress(epochs, desc="finetune (bp, on the board)"),
        on_epoch=report)
    tuned.save(args.out)
    if args.json:
        print(json.dumps({"out": str(args.out), **history}, indent=1, default=float))
        return
    mem, image = history["memory"], history["image"]
    print(f"wrote {args.out}; trained on {args.target}: image {image['flash_bytes']:,} B flash, "
          f"{image['ram_bytes']:,} B RAM, of which training buffers {mem['training']:,} B")


def cmd_memory(args: argparse.Namespace) -> None:
    """``edgekit memory add|remove|list|predict``: the k-NN head of ``edgekit.memory``."""
    from edgekit.memory import Backbone, Memory

    if args.action in ("add", "remove"):
        check_file(args.memory, (args.model, args.data))
    if args.action in ("add", "predict") and not args.data:
        raise EdgekitError(f"memory {args.action} needs --data examples.npz (inputs in 'x')")
    if args.action == "remove" and args.label is None:
        raise EdgekitError("memory remove needs --label L, the class to forget")
    graph = load_model(args.model)
    with Backbone(graph, feature=args.feature, target=args.target,
                  timeout=args.timeout) as backbone:
        if Path(args.memory).exists():
            mem = Memory.load(args.memory, backbone)
            mem.configure(max_exemplars=args.max_exemplars, metric=args.metric, k=args.k)
        elif args.action == "add":
            mem = Memory(backbone, max_exemplars=args.max_exemplars, profile=args.profile)
            mem.configure(metric=args.metric, k=args.k)
        else:
            raise EdgekitError(f"{args.memory}: no such file (memory add creates it)")
        report: dict = {"memory": str(args.memory), "feature": backbone.feature,
                        "dtype": backbone.dtype, "metric": mem.metric, "k": mem.k,
                        "max_exemplars": mem.max_exemplars}
        if args.action == "add":
            x, y = load_data(args.data)
            if args.label is None and y is None:
                raise EdgekitError(f"{args.data}: no labels 'y'; give the class with --label L")
            mem.add(x, args.label if args.label is not None else y)
            report["added"] = len(x)
        elif args.action == "remove":
            report["removed"] = mem.remove(args.label)
        elif args.action == "predict":
            x, y = load_data(args.data)
            pred = mem.predict(x)
            report["predictions"] = pred.tolist()
            if y is not None:
                report["accuracy"] = float((pred == y).mean())
        if args.action in ("add", "remove"):
            mem.save(args.memory)
        report["classes"] = mem.counts()
    if args.json:
        print(json.dumps(report, indent=1))
        return
    if "predictions" in report:
        pred = report["predictions"]
        print(f"predicted classes: {pred[:20]}" + (" ..." if len(pred) > 20 else ""))
        if "accuracy" in report:
            print(f"accuracy {report['accuracy']:.2%} on {len(pred)} examples")
        return
    counts = report["classes"]
    print(table(["class", "exemplars"], [(c, n) for c, n in counts.items()]))
    print(f"{sum(counts.values())} of at most {mem.max_exemplars:,} exemplars; features "
          f"{backbone.feature!r} ({backbone.dtype}), {mem.metric}, k={mem.k}"
          + ("" if args.action == "list" else f"; wrote {args.memory}"))


class _Parser(argparse.ArgumentParser):
    """argparse's refusals (a missing argument, ``--runs x``) as every other user error: one
    line and exit 2, not the usage block first; ``--help`` still shows the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="edgekit", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"edgekit {edgekit.__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("convert", help="import a .pt2/.onnx model; quantize; write formats")
    c.add_argument("model")
    c.add_argument("-o", "--output", required=True,
                   help="an .ekm path, or a folder when quantizing or writing several formats")
    c.add_argument("--to", default="ekm", help="comma-separated formats: ekm,tflite,onnx")
    from edgekit.quant.quantize import SCHEMES

    c.add_argument("--quantize", choices=SCHEMES,
                   help="int8, or a weight format below it (docs/low-bit.md)")
    c.add_argument("--group-size", type=int, help="low-bit weights: one scale per this many")
    c.add_argument("--rex", type=int, default=1, help="int4: REx residual orders (1-3)")
    c.add_argument("--calibration-data", help=".npz with calibration inputs in 'x'")
    c.add_argument("--calibration", default="minmax", choices=["minmax", "percentile", "mse"])
    c.add_argument("--report", action="store_true", help="per-layer SQNR, float vs int8")
    c.add_argument("--to-snn", action="store_true", help="convert to a spiking network")
    c.add_argument("--timesteps", type=int, default=8, help="SNN time steps T")
    c.add_argument("--balancing", default="p99.9",
                   help="SNN thresholds: max, p99.9, a fraction of the max (0.5), or "
                        "trained (QCFS thresholds in the model, converters.qcfs)")
    c.add_argument("--v-init", type=float, help="SNN initial membrane, a fraction of the "
                   "threshold (default 0, or 0.5 with --balancing trained)")
    c.add_argument("--calibrate", choices=["none", "fas", "finetune"],
                   help="SNN calibration: none (plain conversion), fas (per-neuron thresholds), "
                        "finetune (fas, then surrogate-gradient training on the labels 'y'; "
                        "the default when the calibration data has labels, else fas)")
    c.add_argument("--memory-budget", type=float, default=2048, metavar="MIB",
                   help="SNN conversion's working memory in MiB (default 2048): sets the "
                        "calibration batch")
    c.set_defaults(func=cmd_convert)

    dp = sub.add_parser("deploy", help="compile for a target; --validate on real data")
    dp.add_argument("model")
    dp.add_argument("--target", default="cpu")
    dp.add_argument("--validate", help=".npz with 'x' (and labels 'y')")
    dp.add_argument("--reference", help="the float model, to report agreement with it")
    dp.add_argument("--json", action="store_true")
    dp.add_argument("--timeout", type=float, help=TIMEOUT_HELP)
    dp.add_argument("--litert-kernels", choices=LITERT_KERNELS, help=LITERT_KERNELS_HELP)
    dp.set_defaults(func=cmd_deploy)

    i = sub.add_parser("inspect", help="ops, shapes, parameters and MACs per layer")
    i.add_argument("model", nargs="?")
    i.add_argument("--ops", action="store_true", help="list the operators edgekit supports")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_inspect)

    r = sub.add_parser("run", help="run a model on inputs from .npy or .npz (x)")
    r.add_argument("model")
    r.add_argument("--input", required=True)
    r.add_argument("--output")
    r.add_argument("--target", default="cpu")
    r.add_argument("--json", action="store_true")
    r.add_argument("--timeout", type=float, help=TIMEOUT_HELP)
    r.add_argument("--litert-kernels", choices=LITERT_KERNELS, help=LITERT_KERNELS_HELP)
    r.add_argument("--budget", help="anytime models: MACs or a share (50%%) to run within")
    r.set_defaults(func=cmd_run)

    t = sub.add_parser("targets", help="targets on this machine, and why any is unavailable")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=cmd_targets)

    d = sub.add_parser("demo", help="train, convert and run the digits CNN end to end")
    d.add_argument("--out", default="edgekit-demo")
    d.add_argument("--json", action="store_true")
    d.add_argument("--asr", action="store_true", help="the early-exit speech stage alone: a "
                   "small recognizer trained briefly, its exits, int8 and the board")
    d.set_defaults(func=cmd_demo)

    pr = sub.add_parser("profile", help="latency percentiles, MACs, memory, energy, fit check")
    pr.add_argument("model", nargs="?")
    pr.add_argument("--target", default="cpu")
    pr.add_argument("--runs", type=int, default=100)
    pr.add_argument("--warmup", type=int, default=10)
    pr.add_argument("--per-layer", action="store_true", help="table and timing per layer")
    pr.add_argument("--json", metavar="OUT.json", help="write the report (docs/profiling.md)")
    pr.add_argument("--plot", metavar="OUT.png", help="per-layer plot, or Pareto with --compare")
    pr.add_argument("--compare", nargs="+", metavar="MODEL", help="models to compare")
    pr.add_argument("--labels", help=".npz with 'x' and 'y': accuracy in --compare")
    pr.add_argument("--profile", help="device profile (cortex-m4, ...) or a .toml; not "
                    "attached: latency estimated")
    pr.add_argument("--training", choices=["lls", "lls-m", "lls-mxm", "ff", "dfa", "bp"],
                    help="also the memory fine-tuning with this rule needs")
    pr.add_argument("--timeout", type=float, help=TIMEOUT_HELP)
    pr.add_argument("--litert-kernels", choices=LITERT_KERNELS, help=LITERT_KERNELS_HELP)
    pr.add_argument("--policy", help="early-exit model: the policy whose expected compute to "
                    "report (entropy:T, posterior:P, exit:K; default: the stored one)")
    pr.add_argument("--voices", choices=["held-out", "valid", "train"], help="early-exit "
                    "speech model: the policy's expected compute over 300 utterances of these "
                    "voices (or over --labels' inputs)")
    pr.set_defaults(func=cmd_profile)

    ft = sub.add_parser("finetune", help="train on device with a local rule or backprop")
    ft.add_argument("model")
    ft.add_argument("--data", required=True, help=".npz with inputs 'x' and labels 'y'")
    ft.add_argument("--rule", default="lls",
                    choices=["lls", "lls-m", "lls-mxm", "ff", "dfa", "bp", "hedge"])
    ft.add_argument("--epochs", type=int, default=5)
    ft.add_argument("--lr", type=float, help="learning rate (default: the rule's own)")
    ft.add_argument("--batch-size", type=int, default=32)
    ft.add_argument("--layers", default="all",
                    help="all, head, or the last N layers (on a board: head unless N)")
    ft.add_argument("--target", help="mcu:qemu[:core] or mcu:PORT: train the head on the board "
                                     "over its frozen int8 backbone (--rule bp)")
    ft.add_argument("--timeout", type=float, help=TIMEOUT_HELP)
    ft.add_argument("--seed", type=int, default=0)
    ft.add_argument("--online", action="store_true", help="one sample at a time, in order")
    ft.add_argument("--norm", action="store_true",
                    help="running-statistics norm in hidden layers (training from scratch)")
    ft.add_argument("--dual-precision", action="store_true",
                    help="keep the activations the backward pass reads as 8-bit copies")
    ft.add_argument("--out", required=True, help="the fine-tuned model (.ekm)")
    ft.add_argument("--checkpoint", help="per-epoch checkpoint (default: OUT.ckpt)")
    ft.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    ft.add_argument("--json", action="store_true")
    ft.set_defaults(func=cmd_finetune)

    mm = sub.add_parser("memory", help="add, remove or list classes of a k-NN head; predict")
    mm.add_argument("action", choices=["add", "remove", "list", "predict"])
    mm.add_argument("model")
    mm.add_argument("--memory", required=True, help="the memory file (.npz; add creates it)")
    mm.add_argument("--data", help=".npz with inputs 'x' (and labels 'y')")
    mm.add_argument("--label", type=int, help="the class of every input in --data")
    mm.add_argument("--feature", help="feature tensor (default: the last linear layer's input)")
    mm.add_argument("--target", default="cpu", help="where the backbone runs (mcu:qemu too)")
    mm.add_argument("--max-exemplars", type=int, help="bound on the memory (default: a "
                    "quarter of the profile's free flash)")
    mm.add_argument("--profile", help="device profile sizing a new memory (default: the "
                    "target's)")
    mm.add_argument("--metric", choices=["l2", "cosine"])
    mm.add_argument("--k", type=int, help="neighbours that vote (default 1)")
    mm.add_argument("--json", action="store_true")
    mm.add_argument("--timeout", type=float, help=TIMEOUT_HELP)
    mm.set_defaults(func=cmd_memory)

    from edgekit.fleet.cli import add_parser as add_fleet_parser

    add_fleet_parser(sub)

    from edgekit.speech.cli import add_parser as add_asr_parser

    add_asr_parser(sub)

    from edgekit.anytime.cli import add_parser as add_anytime_parser

    add_anytime_parser(sub)

    from edgekit.insensor import add_parser as add_insensor_parser

    add_insensor_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # no argument takes an empty string; as a path it would mean the current folder
    for name, value in vars(args).items():
        if value == "" or isinstance(value, list) and "" in value:
            parser.error(f"argument {name.replace('_', '-')}: empty")
    try:
        args.func(args)
    except EdgekitError as err:
        print(f"edgekit: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader left (`edgekit inspect --ops | head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
