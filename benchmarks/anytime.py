"""Anytime networks on digits: the numbers in docs/anytime.md.

    python benchmarks/anytime.py [--seeds 0,1,2] [--epochs 30] [--json out.json]
    python benchmarks/anytime.py --combine s0.json s1.json s2.json   # seeds run apart, one table

Per seed, one supernet (``edgekit.anytime``) is trained with TIPS path sampling and one with
uniform sampling, on the digits training split less a 15 % validation share; per budget (3, 15, 25,
50, 75, 100 % of the full path's MACs) the path is chosen on the validation share and scored on
the test split, in float and int8 (one int8 Graph for every path, calibrated on 256 training
images). The independently trained baseline is, per budget, the path TIPS chose, trained alone
from scratch for the same epochs. Latency: per budget, the cpu session's per-call time with
``run(x, budget=...)`` (the budgets taken in turn, switching every call) beside the path's
own extracted plain Graph deployed alone, batch 1, median over interleaved calls.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

import edgekit
from edgekit import data
from edgekit.anytime import table as tbl
from edgekit.anytime.lower import to_graph
from edgekit.anytime.runtime import AnytimeRunner
from edgekit.anytime.select import measure
from edgekit.anytime.train import train_supernet
from edgekit.console import table
from edgekit.fileio import atomic_write_bytes

BUDGETS = ["3%", "15%", "25%", "50%", "75%", "100%"]


def accuracy(graph: edgekit.Graph, path: str, x: np.ndarray, y: np.ndarray) -> float:
    return float((AnytimeRunner(graph).run(x, path=path).argmax(-1) == y).mean())


def latency(graph: edgekit.Graph, x: np.ndarray, calls: int) -> list[dict]:
    """Per budget: µs per call switching budgets every call, and of the plain path alone."""
    session = edgekit.deploy(graph, "cpu")
    paths = {b: tbl.choose(graph, b) for b in BUDGETS}
    plain = {b: edgekit.deploy(tbl.extract(graph, p), "cpu") for b, p in paths.items()}
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(calls):
        for b in BUDGETS:
            t = time.perf_counter()
            session.run(x, budget=b)
            t1 = time.perf_counter()
            plain[b].run(x)
            t2 = time.perf_counter()
            times.setdefault(("anytime", b), []).append(t1 - t)
            times.setdefault(("plain", b), []).append(t2 - t1)
    return [{"budget": b, "path": paths[b], "macs": tbl.path_macs(graph, paths[b]),
             "anytime_us": 1e6 * float(np.median(times["anytime", b])),
             "plain_us": 1e6 * float(np.median(times["plain", b]))} for b in BUDGETS]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--json")
    ap.add_argument("--combine", nargs="+", metavar="JSON", help="report runs made apart")
    args = ap.parse_args()
    if args.combine:
        runs = [json.loads(open(path).read()) for path in args.combine]
        report([r for run in runs for r in run["rows"]],
               next(run["latency"] for run in runs if run["latency"]), args.json)
        return
    torch.set_num_threads(1)
    d = data.digits()
    rows, timing = [], []
    for seed in map(int, args.seeds.split(",")):
        order = np.random.default_rng(seed).permutation(len(d.y_train))
        val, fit = order[:int(0.15 * len(order))], order[int(0.15 * len(order)):]
        chosen = {}
        for sampling in ("tips", "uniform"):
            t = time.perf_counter()
            net = train_supernet(d.x_train[fit], d.y_train[fit], sampling, args.epochs, seed)
            g = measure(to_graph(net), d.x_train[val], d.y_train[val])
            q = measure(edgekit.quantize(g, d.x_train[fit][:256]), d.x_train[val],
                        d.y_train[val])
            seconds = time.perf_counter() - t
            for b in BUDGETS:
                path = tbl.choose(g, b)
                chosen[sampling, b] = path
                rows.append({"seed": seed, "method": sampling, "budget": b, "path": path,
                             "macs": tbl.path_macs(g, path),
                             "float": accuracy(g, path, d.x_test, d.y_test),
                             "int8": accuracy(q, path, d.x_test, d.y_test),
                             "int8_path": tbl.choose(q, b),
                             "int8_selected": accuracy(q, tbl.choose(q, b), d.x_test, d.y_test),
                             "train_s": seconds})
            if not timing and sampling == "tips":
                timing = latency(g, d.x_test[:1], args.calls)
            print(f"seed {seed} {sampling}: {seconds:.0f} s", flush=True)
        alone: dict[str, float] = {}  # path -> test accuracy, trained alone once
        for b in BUDGETS:
            path = chosen["tips", b]
            if path not in alone:
                net = train_supernet(d.x_train[fit], d.y_train[fit], "uniform", args.epochs,
                                     seed, fixed_path=path)
                alone[path] = accuracy(to_graph(net), path, d.x_test, d.y_test)
            rows.append({"seed": seed, "method": "independent", "budget": b, "path": path,
                         "macs": tbl.path_macs(g, path), "float": alone[path]})
        print(f"seed {seed} independent done", flush=True)
    report(rows, timing, args.json)


def report(rows: list[dict], timing: list[dict], out: str | None) -> None:
    summary = []
    for method in ("tips", "uniform", "independent"):
        for b in BUDGETS:
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
