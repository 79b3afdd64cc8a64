"""The fleet's ServerApp (Flower Message API): sends the model and the global weights, lets a
Flower strategy aggregate, evaluates the global model on held-out data after every round, and
writes what happened to the run folder (``result.json`` and ``global.ekm``), since Flower keeps
a run's results only inside the ServerApp.

The run folder comes from the run config (``run-dir``, deployment engine) or from
``EDGEKIT_FLEET_RUN`` (simulation engine, where the run config stays empty); its ``run.json``
holds the settings (``edgekit.fleet.runs.settings``).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

import edgekit
from edgekit.fileio import atomic_write_bytes
from edgekit.fleet.strategy import STRATEGIES
from edgekit.graph import Graph
from edgekit.limits import check_npz
from edgekit.runtime import Executor

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    run = Path(str(context.run_config.get("run-dir") or os.environ["EDGEKIT_FLEET_RUN"]))
    cfg = json.loads((run / "run.json").read_text())
    graph = edgekit.load(cfg["model"])
    check_npz(cfg["test"])
    with np.load(cfg["test"], allow_pickle=False) as z:
        x_test, y_test = z["x"], z["y"]
    extra = {"fedavg": {}, "fedprox": {"proximal_mu": cfg["proximal_mu"]},
             "fedadam": {"eta": cfg["server_lr"], "eta_l": cfg["lr"]}}[cfg["strategy"]]
    strategy = STRATEGIES[cfg["strategy"]](
        fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=cfg["nodes"],
        min_available_nodes=cfg["nodes"], lr=cfg["lr"], rounds=cfg["rounds"],
        quorum=cfg["quorum"], **extra)
    initial: dict[str, Any] = {}

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        acc, loss = score(with_arrays(graph, arrays), x_test, y_test)
        if server_round == 0:
            initial.update(accuracy=acc, loss=loss)
        else:
            record = strategy.rounds[-1]
            record.update(accuracy=acc, loss=loss,
                          seconds=time.perf_counter() - record.pop("start"))
        return MetricRecord({"accuracy": acc, "loss": loss})

    train_config = ConfigRecord({
        "model": (run / "model.ekm").read_bytes(), "rule": cfg["rule"],
        "epochs": cfg["epochs"], "batch-size": cfg["batch_size"], "seed": cfg["seed"],
        "profiles": cfg["profiles"], "shards": cfg["shards"]})
    result = strategy.start(
        grid=grid, initial_arrays=ArrayRecord({k: Array(v) for k, v in graph.params.items()}),
        num_rounds=cfg["rounds"], timeout=cfg["timeout"], train_config=train_config,
        evaluate_fn=evaluate)
    with_arrays(graph, result.arrays).save(run / "global.ekm")
    report = {"initial": initial, "rounds": strategy.rounds,
              "clients": sorted(strategy.clients.values(), key=lambda c: c["id"])}
    atomic_write_bytes(run / "result.json", json.dumps(report, indent=1).encode())


def with_arrays(graph: Graph, arrays: ArrayRecord) -> Graph:
    """A copy of ``graph`` holding ``arrays`` as its float weights (in the graph's dtypes:
    FedAdam's step computes in float64)."""
    return replace(graph, params={**graph.params, **{
        k: a.numpy().astype(graph.params[k].dtype, copy=False) for k, a in arrays.items()}})


def score(graph: Graph, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Top-1 accuracy and mean cross-entropy of the model's outputs taken as logits."""
    logits = Executor(graph).run(np.ascontiguousarray(x, np.float32)).astype(np.float64)
    shifted = logits - logits.max(1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    return float((logits.argmax(1) == y).mean()), float(-logp[np.arange(len(y)), y].mean())
