"""``edgekit anytime train|select``, and the anytime parts of ``run --budget`` and ``profile``
(the command line's own module, ``edgekit.cli``, only routes here)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.anytime import table as tbl
from edgekit.console import table
from edgekit.errors import EdgekitError
from edgekit.fileio import check_file
from edgekit.graph import Graph

VALIDATION_SHARE = 0.15  # of the training data, held out to measure every path after training


def add_parser(sub: Any) -> None:
    a = sub.add_parser("anytime", help="anytime networks: train a supernet, select per budget")
    verbs = a.add_subparsers(dest="verb", required=True)
    t = verbs.add_parser("train", help="train a weight-sharing supernet; write one anytime .ekm")
    t.add_argument("-o", "--output", required=True, help="the anytime model (.ekm)")
    t.add_argument("--data", help=".npz with images 'x' (N, C, H, W) and labels 'y' "
                   "(default: the built-in digits)")
    t.add_argument("--sampling", default="tips", choices=["tips", "uniform"])
    t.add_argument("--sandwich", action="store_true", help="also train the largest and "
                   "smallest path every step")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=cmd_train)
    s = verbs.add_parser("select", help="best path per budget on validation data")
    s.add_argument("model")
    s.add_argument("--budgets", default="25%,50%,75%,100%",
                   help="comma-separated: MACs or shares of the full network (50%%)")
    s.add_argument("--data", help=".npz with 'x' and 'y' (default: the accuracies stored at "
                   "training)")
    s.add_argument("--profile", help="device profile (cortex-m4, ...): per-path modelled "
                   "latency and energy, for budgets such as 2ms or 30uJ")
    s.add_argument("-o", "--output", help="write the model with the table measured here "
                   "(accuracies on --data, costs on --profile)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_select)


def _training_data(path: str | None) -> tuple[np.ndarray, np.ndarray]:
    if path is None:
        from edgekit.data import digits

        d = digits()
        return d.x_train, d.y_train
    from edgekit.cli import load_data

    x, y = load_data(path)
    if y is None:
        raise EdgekitError(f"{path}: training needs labels 'y' beside the inputs 'x'")
    if x.ndim != 4 or x.shape[2] != x.shape[3]:
        raise EdgekitError(f"{path}: anytime training takes square images (N, C, H, W), got "
                           f"'x' of shape {x.shape}")
    if len(y) < 20:
        raise EdgekitError(f"{path}: {len(y)} samples; anytime training needs at least 20")
    return x.astype(np.float32), y.astype(np.int64)


def cmd_train(args: argparse.Namespace) -> None:
    from edgekit.anytime.lower import to_graph
    from edgekit.anytime.select import front, measure
    from edgekit.anytime.train import train_supernet

    check_file(args.output, [args.data])
    if Path(args.output).suffix.lower() != ".ekm":
        raise EdgekitError(f"-o {args.output}: name an .ekm file")
    x, y = _training_data(args.data)
    order = np.random.default_rng(args.seed).permutation(len(y))
    n_val = max(1, int(len(y) * VALIDATION_SHARE))
    val, fit = order[:n_val], order[n_val:]
    start = time.perf_counter()
    net = train_supernet(x[fit], y[fit], args.sampling, args.epochs, args.seed,
                         sandwich=args.sandwich)
    graph = to_graph(net)
    graph.metadata["anytime"]["training"] = {"sampling": args.sampling, "seed": args.seed,
                                             "epochs": args.epochs, "sandwich": args.sandwich,
                                             "samples": int(len(fit))}
    measure(graph, x[val], y[val])
    graph.save(args.output)
    rows = front(graph)
    if args.json:
        print(json.dumps({"model": args.output, "seconds": round(time.perf_counter() - start, 1),
                          "front": rows}, indent=1))
        return
    print(f"trained {args.sampling} supernet ({len(graph.metadata['anytime']['paths'])} paths) "
          f"in {time.perf_counter() - start:.0f} s; wrote {args.output}")
    print(_front_text(graph, rows))


def cmd_select(args: argparse.Namespace) -> None:
    from edgekit.anytime.select import measure, select
    from edgekit.cli import load_data, load_model

    graph = load_model(args.model)
    tbl.table(graph)
    budgets = [b.strip() for b in args.budgets.split(",") if b.strip()]
    if not budgets:
        raise EdgekitError("--budgets: give at least one budget (e.g. 25%,50%)")
    if args.output:
        check_file(args.output, [args.model, args.data, args.profile])
    if args.data:
        x, y = load_data(args.data)
        if y is None:
            raise EdgekitError(f"{args.data}: selection needs labels 'y' beside the inputs 'x'")
        measure(graph, x, y)
    elif any("accuracy" not in e for e in tbl.table(graph)["paths"].values()):
        raise EdgekitError("this model stores no accuracies per path; give --data val.npz")
    if args.profile:
        from edgekit.anytime.costs import annotate

        annotate(graph, args.profile)
    rows = select(graph, budgets)
    if args.output:
        graph.save(args.output)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    costs = ["latency_ms", "energy_uj"] if "device" in tbl.table(graph) else []
    print(table(["budget", "path", "MACs", "share", *costs, "accuracy"],
                [(r["budget"], r["path"], r["macs"], f"{r['share']:.0%}",
                  *(f"{r[c]:.4g}" for c in costs), f"{r['accuracy']:.2%}") for r in rows]))
    if costs:
        print(f"latency and energy: modelled on {tbl.table(graph)['device']}")
    if args.output:
        print(f"wrote {args.output}")


def run_budget(graph: Graph, target: str, x: np.ndarray, budget: str,
               timeout: float | None) -> tuple[Any, str]:
    """``edgekit run --budget``: on ``cpu`` the session runs the path on the shared weights,
    on a board (``mcu:...``) the firmware's one image runs only that path (``board``); on any
    other target the path's plain Graph is deployed (``runtime.PathSessions``)."""
    import edgekit
    from edgekit.anytime.runtime import PathSessions

    path = tbl.choose(graph, budget)
    if target == "cpu" or target.startswith("mcu:"):
        with edgekit.deploy(graph, target=target, timeout=timeout) as session:
            return session.run(x, budget=budget), path
    with PathSessions(graph, target, timeout=timeout) as sessions:
        return sessions.run(x, budget), path


def describe_path(graph: Graph, path: str) -> str:
    meta = tbl.table(graph)
    macs = meta["paths"][path]["macs"]
    return f"path {path}: {macs:,} MACs ({macs / meta['full_macs']:.0%} of the full network)"


def curve(graph: Graph, data: tuple[np.ndarray, Any] | None, runs: int = 50) -> str:
    """``edgekit profile`` on an anytime model: the accuracy-cost front (accuracy measured on
    ``data`` when it has labels, else the stored one) with each path's cpu latency per call."""
    from edgekit.anytime.runtime import AnytimeRunner
    from edgekit.anytime.select import front, measure

    if data is not None and data[1] is not None:
        measure(graph, *data)
    rows = front(graph) if all("accuracy" in e for e in tbl.table(graph)["paths"].values()) \
        else sorted(({"path": p, **e} for p, e in tbl.table(graph)["paths"].items()),
                    key=lambda r: r["macs"])[::9]
    runner = AnytimeRunner(graph)
    x = (data[0][:1] if data is not None else
         np.zeros((1, *graph.tensors[graph.inputs[0]].shape[1:]), np.float32))
    for row in rows:
        runner.run(x, path=row["path"])
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            runner.run(x, path=row["path"])
            times.append(time.perf_counter() - t)
        row["latency_ms"] = float(np.median(times) * 1e3)
    return _front_text(graph, rows)


def _front_text(graph: Graph, rows: list[dict[str, Any]]) -> str:
    full = tbl.table(graph)["full_macs"]
    headers = ["path", "MACs", "share", "accuracy"] + (["cpu ms/call"] if rows and
                                                       "latency_ms" in rows[0] else [])
    body = [(r["path"], r["macs"], f"{r['macs'] / full:.0%}",
             "-" if r.get("accuracy") is None else f"{r['accuracy']:.2%}",
             *([f"{r['latency_ms']:.3f}"] if "latency_ms" in r else [])) for r in rows]
    return "anytime accuracy-cost curve (Pareto front):\n" + table(headers, body)
