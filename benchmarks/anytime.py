"""Anytime networks on digits and on event-camera digits: the numbers in docs/anytime.md.

    python benchmarks/anytime.py [--task digits|events] [--seeds 0,1,2] [--epochs 30]
                                 [--json out.json] [--save DIR]
    python benchmarks/anytime.py --combine s0.json s1.json s2.json   # seeds run apart, one table
    python benchmarks/anytime.py --board 200 --model net.ekm [--task digits]  # on mcu:qemu

Tasks: ``digits`` (the bundled 8x8 digits) and ``events`` (``sensor_data.digit_events``: the
digits as 8x8 event-camera frames, ON and OFF counts of a moving digit, 2 channels).

Per seed, one supernet (``edgekit.anytime``) is trained with TIPS path sampling and one with
uniform sampling, on the task's training split less a 15 % validation share; per budget (3, 15,
25, 50, 75, 100 % of the full path's MACs) the path is chosen on the validation share and scored
on the test split, in float and int8 (one int8 Graph for every path, calibrated on 256 training
images). The independently trained baseline is, per budget, the path TIPS chose, trained alone
from scratch for the same epochs. Latency (``--calls``, 0: none): per budget, the cpu session's
per-call time with ``run(x, budget=...)`` (the budgets taken in turn, switching every call)
beside the path's own extracted plain Graph deployed alone, batch 1, median over interleaved
calls. ``--save DIR`` keeps each trained supernet (float, with its validation accuracies).

``--requant DIR``: per supernet kept there (``--save``), per budget the test accuracy in float
and in int8 calibrated two ways: over the paths budgets choose (``anytime.table
.calibration_graphs``, what ``edgekit.quantize`` does) and over the full path alone (as before).

``--board N``: the int8 Graph of ``--model`` (calibrated as above) on the emulated Cortex-M3
(``mcu:qemu``), one firmware image: per budget, N test inputs through ``run(x, budget=...)``
(INFER_PATH), each output compared bit for bit with the edgekit runtime's, and the path's
emulated instruction count beside that of its own plain model built and run alone.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

import edgekit
from edgekit import data, sensor_data
from edgekit.anytime import table as tbl
from edgekit.anytime.lower import to_graph
from edgekit.anytime.runtime import AnytimeRunner
from edgekit.anytime.select import measure
from edgekit.anytime.train import train_supernet
from edgekit.console import table
from edgekit.fileio import atomic_write_bytes

BUDGETS = ["3%", "15%", "25%", "50%", "75%", "100%"]  # the first: the smallest path on digits


def budgets(graph: edgekit.Graph) -> list[str]:
    """``BUDGETS``, the first raised to the smallest path's share in whole percent (a 2-channel
    stem makes the smallest path of the event frames 4 % of the full one)."""
    meta = tbl.table(graph)
    least = -(-100 * min(e["macs"] for e in meta["paths"].values()) // meta["full_macs"])
    return [f"{max(int(BUDGETS[0][:-1]), least)}%", *BUDGETS[1:]]
TASKS = {"digits": data.digits, "events": lambda: sensor_data.digit_events(size=8)}


def accuracy(graph: edgekit.Graph, path: str, x: np.ndarray, y: np.ndarray) -> float:
    return float((AnytimeRunner(graph).run(x, path=path).argmax(-1) == y).mean())


def latency(graph: edgekit.Graph, x: np.ndarray, calls: int) -> list[dict]:
    """Per budget: µs per call switching budgets every call, and of the plain path alone."""
    session = edgekit.deploy(graph, "cpu")
    paths = {b: tbl.choose(graph, b) for b in budgets(graph)}
    plain = {b: edgekit.deploy(tbl.extract(graph, p), "cpu") for b, p in paths.items()}
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(calls):
        for b in paths:
            t = time.perf_counter()
            session.run(x, budget=b)
            t1 = time.perf_counter()
            plain[b].run(x)
            t2 = time.perf_counter()
            times.setdefault(("anytime", b), []).append(t1 - t)
            times.setdefault(("plain", b), []).append(t2 - t1)
    return [{"budget": b, "path": paths[b], "macs": tbl.path_macs(graph, paths[b]),
             "anytime_us": 1e6 * float(np.median(times["anytime", b])),
             "plain_us": 1e6 * float(np.median(times["plain", b]))} for b in paths]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--task", default="digits", choices=sorted(TASKS))
    ap.add_argument("--json")
    ap.add_argument("--save", help="folder to keep each trained supernet in")
    ap.add_argument("--combine", nargs="+", metavar="JSON", help="report runs made apart")
    ap.add_argument("--board", type=int, help="test inputs per budget on mcu:qemu")
    ap.add_argument("--model", help="the anytime .ekm --board runs")
    ap.add_argument("--requant", metavar="DIR", help="int8 of the supernets kept in DIR, "
                    "calibrated over the paths and over the full path alone")
    args = ap.parse_args()
    if args.requant:
        requant(args.requant, TASKS[args.task](), args.json)
        return
    if args.board:
        board(edgekit.load(args.model), TASKS[args.task](), args.board, args.json)
        return
    if args.combine:
        runs = [json.loads(open(path).read()) for path in args.combine]
        report([r for run in runs for r in run["rows"]],
               next((run["latency"] for run in runs if run["latency"]), []), args.json)
        return
    torch.set_num_threads(1)
    d = TASKS[args.task]()
    rows, timing = [], []
    for seed in map(int, args.seeds.split(",")):
        order = np.random.default_rng(seed).permutation(len(d.y_train))
        val, fit = order[:int(0.15 * len(order))], order[int(0.15 * len(order)):]
        chosen = {}
        for sampling in ("tips", "uniform"):
            t = time.perf_counter()
            net = train_supernet(d.x_train[fit], d.y_train[fit], sampling, args.epochs, seed)
            g = measure(to_graph(net), d.x_train[val], d.y_train[val])
            if args.save:
                g.save(f"{args.save}/{args.task}_{sampling}_seed{seed}.ekm")
            q = measure(edgekit.quantize(g, d.x_train[fit][:256]), d.x_train[val],
                        d.y_train[val])
            seconds = time.perf_counter() - t
            for b in budgets(g):
                path = tbl.choose(g, b)
                chosen[sampling, b] = path
                rows.append({"seed": seed, "method": sampling, "budget": b, "path": path,
                             "macs": tbl.path_macs(g, path),
                             "float": accuracy(g, path, d.x_test, d.y_test),
                             "int8": accuracy(q, path, d.x_test, d.y_test),
                             "int8_path": tbl.choose(q, b),
                             "int8_selected": accuracy(q, tbl.choose(q, b), d.x_test, d.y_test),
                             "train_s": seconds})
            if not timing and sampling == "tips" and args.calls:
                timing = latency(g, d.x_test[:1], args.calls)
            print(f"seed {seed} {sampling}: {seconds:.0f} s", flush=True)
        alone: dict[str, float] = {}  # path -> test accuracy, trained alone once
        for b in budgets(g):
            path = chosen["tips", b]
            if path not in alone:
                net = train_supernet(d.x_train[fit], d.y_train[fit], "uniform", args.epochs,
                                     seed, fixed_path=path)
                alone[path] = accuracy(to_graph(net), path, d.x_test, d.y_test)
            rows.append({"seed": seed, "method": "independent", "budget": b, "path": path,
                         "macs": tbl.path_macs(g, path), "float": alone[path]})
        print(f"seed {seed} independent done", flush=True)
    report(rows, timing, args.json)


def requant(folder: str, d: data.Dataset, out: str | None) -> None:
    """Float and int8 test accuracy per budget, int8 calibrated over the paths and over the
    full path alone (the Graph without its table calibrates as a plain one)."""
    from pathlib import Path

    rows = []
    for path in sorted(Path(folder).glob("*.ekm")):
        g = edgekit.load(path)
        plain = edgekit.Graph(g.inputs, g.outputs, g.tensors, g.nodes, g.params,
                              {k: v for k, v in g.metadata.items() if k != "anytime"})
        full_only = edgekit.quantize(plain, d.x_train[:256])
        full_only.metadata["anytime"] = g.metadata["anytime"]
        paths = edgekit.quantize(g, d.x_train[:256])
        for b in budgets(g):
            p = tbl.choose(g, b)
            rows.append({"model": path.stem, "budget": b, "path": p,
                         "float": accuracy(g, p, d.x_test, d.y_test),
                         "int8_paths": accuracy(paths, p, d.x_test, d.y_test),
                         "int8_full_only": accuracy(full_only, p, d.x_test, d.y_test)})
        print(path.stem, "done", flush=True)
    print(table(["model", "budget", "path", "float %", "int8 % (calibrated over paths)",
                 "int8 % (full path only)"],
                [(r["model"], r["budget"], r["path"], f"{100 * r['float']:.2f}",
                  f"{100 * r['int8_paths']:.2f}", f"{100 * r['int8_full_only']:.2f}")
                 for r in rows]))
    for key in ("int8_paths", "int8_full_only"):
        worst = max(abs(r[key] - r["float"]) for r in rows) * 100
        print(f"max |{key} - float| over models and budgets: {worst:.2f} points")
    if out:
        atomic_write_bytes(out, json.dumps({"requant": rows}, indent=1).encode())


def board(graph: edgekit.Graph, d: data.Dataset, n: int, out: str | None) -> None:
    """Per budget: N inputs on the board's one anytime image, bit for bit against the runtime;
    instructions of the path on that image and of its plain model alone."""
    q = edgekit.quantize(graph, d.x_train[:256]) if "quantized" not in graph.metadata else graph
    runner = AnytimeRunner(q)
    x = edgekit.quant.quantize_array(d.x_test[:n], q.tensors[q.inputs[0]].quant)
    rows = []
    with edgekit.deploy(q, "mcu:qemu") as session:
        for b in budgets(q):
            path = tbl.choose(q, b)
            t = time.perf_counter()
            counts, same = [], 0
            for i in range(n):
                y = session.run(x[i:i + 1], raw=True, budget=b)
                counts.append(session.instructions(sum(session.last_ticks)))
                same += int(np.array_equal(y, runner.run(x[i:i + 1], path=path, raw=True)))
            seconds = time.perf_counter() - t
            alone = []  # the same inputs through the path's own plain model, built alone
            with edgekit.deploy(tbl.extract(q, path), "mcu:qemu") as plain:
                for i in range(n):
                    plain.run(x[i:i + 1], raw=True)
                    alone.append(plain.instructions(sum(plain.last_ticks)))
            ratio = np.array(counts) / np.array(alone)
            rows.append({"budget": b, "path": path, "macs": tbl.path_macs(q, path), "inputs": n,
                         "bit_identical": same, "instructions_median": float(np.median(counts)),
                         "plain_median": float(np.median(alone)),
                         "extra_min": int(min(np.subtract(counts, alone))),
                         "extra_max": int(max(np.subtract(counts, alone))),
                         "ratio_max": float(ratio.max()), "board_s": seconds})
            print(rows[-1], flush=True)
    print(table(["budget", "path", "MACs", "bit-identical", "instructions (anytime, median)",
                 "plain path alone (median)", "extra per input", "max ratio"],
                [(r["budget"], r["path"], r["macs"], f"{r['bit_identical']}/{r['inputs']}",
                  f"{r['instructions_median']:,.0f}", f"{r['plain_median']:,.0f}",
                  f"{r['extra_min']}..{r['extra_max']}", f"{r['ratio_max']:.5f}")
                 for r in rows]))
    if out:
        atomic_write_bytes(out, json.dumps({"board": rows}, indent=1).encode())


def report(rows: list[dict], timing: list[dict], out: str | None) -> None:
    summary = []
    for method in ("tips", "uniform", "independent"):
        for b in dict.fromkeys(r["budget"] for r in rows):
            sel = [r for r in rows if r["method"] == method and r["budget"] == b]
            f = np.array([r["float"] for r in sel]) * 100
            entry = {"method": method, "budget": b,
                     "macs_mean": float(np.mean([r["macs"] for r in sel])),
                     "float_mean": float(f.mean()), "float_std": float(f.std()),
                     "float_min": float(f.min()), "float_max": float(f.max())}
            if method != "independent":
                i8 = np.array([r["int8"] for r in sel]) * 100
                entry.update(int8_mean=float(i8.mean()),
                             int8_delta_max=float(np.max(np.abs(i8 - f))))
            summary.append(entry)
    print(table(["method", "budget", "MACs (mean)", "test acc % (mean ± std)", "min", "max",
                 "int8 %", "max |int8-float|"],
                [(s["method"], s["budget"], int(s["macs_mean"]),
                  f"{s['float_mean']:.2f} ± {s['float_std']:.2f}", f"{s['float_min']:.2f}",
                  f"{s['float_max']:.2f}",
                  f"{s['int8_mean']:.2f}" if "int8_mean" in s else "-",
                  f"{s['int8_delta_max']:.2f}" if "int8_delta_max" in s else "-")
                 for s in summary]))
    print(table(["budget", "path", "MACs", "anytime µs/call", "plain µs/call"],
                [(t["budget"], t["path"], t["macs"], f"{t['anytime_us']:.1f}",
                  f"{t['plain_us']:.1f}") for t in timing]))
    if out:
        atomic_write_bytes(out, json.dumps({"rows": rows, "summary": summary,
                                            "latency": timing}, indent=1).encode())


if __name__ == "__main__":
    main()
