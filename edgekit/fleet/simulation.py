"""A fleet on one machine, on Flower's simulation engine (ray): the data split into client
shards, every client an edgekit.learn fine-tuning, the same rule trained centrally on the
pooled data for as many epochs as a client saw its shard, to compare against.

The engine runs the ServerApp in this process and the clients in ray workers; Flower's home
and the run's files live in a temporary folder removed at the end.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.fileio import atomic_write
from edgekit.fleet import runs
from edgekit.fleet.partition import partition as split
from edgekit.fleet.server import score
from edgekit.graph import Graph
from edgekit.learn import finetune


def simulate(graph: Graph, x: np.ndarray, y: np.ndarray, *, clients: int = 10,
             rounds: int = 5, rule: str = "lls", partition: str = "iid",
             strategy: str = "fedavg", profiles: list[str] | tuple[str, ...] = ("host",),
             epochs: int = 1, lr: float | None = None, batch_size: int = 32, seed: int = 0,
             proximal_mu: float = 0.1, server_lr: float | None = None,
             test: tuple[np.ndarray, np.ndarray] | None = None,
             centralized: bool = True, quiet: bool = False) -> tuple[Graph, dict[str, Any]]:
    """Federated fine-tuning of ``graph`` on (x, y) split over ``clients``; returns the global
    Graph and the report: per round the global model's held-out ``accuracy`` and ``loss``,
    the ``clients`` that answered, the ``failures``, the ``seconds``; per client its
    ``profile``, ``layers_trained`` and ``examples``; and ``centralized_accuracy``.

    ``test`` is the held-out data (default: a seeded fifth of (x, y), kept out of training).
    Client ``i`` runs on ``profiles[i % len(profiles)]`` and trains what fits its SRAM.
    """
    runs.require_flower()
    cfg = runs.settings(nodes=clients, rounds=rounds, rule=rule, strategy=strategy,
                        profiles=profiles, epochs=epochs, lr=lr, batch_size=batch_size,
                        seed=seed, proximal_mu=proximal_mu, server_lr=server_lr,
                        quorum=clients)
    x, y = np.asarray(x), np.asarray(y)
    if test is None:
        order = np.random.default_rng([seed, 1]).permutation(len(y))
        cut = len(y) // 5
        test, x, y = (x[order[:cut]], y[order[:cut]]), x[order[cut:]], y[order[cut:]]
    shards = split(y, clients, partition, seed)
    report: dict[str, Any] = {"fleet_size": clients, "partition": partition,
                              "strategy": strategy, "rule": rule}
    if centralized:  # first: it checks the data against the model with finetune's messages
        pooled, _ = finetune(graph, x, y, rule=rule, epochs=rounds * epochs, lr=cfg["lr"],
                             batch_size=batch_size, seed=seed, **runs.rule_options(rule))
        report["centralized_accuracy"] = score(pooled, *test)[0]
    run = Path(tempfile.mkdtemp(prefix="edgekit-fleet-"))
    try:
        for i, idx in enumerate(shards):
            (run / "shards").mkdir(exist_ok=True)
            with atomic_write(run / "shards" / f"{i}.npz") as f:
                np.savez(f, x=x[idx], y=y[idx])
        cfg["shards"] = str(run / "shards")
        runs.prepare(run, graph, *test, cfg)
        with runs.environment(runs.flower_env(run)), _quiet(quiet):
            _run_engine(clients)
        tuned, result = runs.results(run)
    finally:
        shutil.rmtree(run, ignore_errors=True)
    return tuned, runs.report(result, report)


def _run_engine(clients: int) -> None:
    """Flower's simulation engine: one ray worker per core, a client per worker at a time."""
    from flwr.simulation import run_simulation

    from edgekit.fleet.client import app as client_app
    from edgekit.fleet.server import app as server_app

    cores = max(1, min(len(os.sched_getaffinity(0)), clients))
    quiet = logging.getLogger("flwr").level >= logging.ERROR
    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=clients,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": cores, "log_to_driver": not quiet,
                                                 "logging_level": "error"}})


@contextmanager
def _quiet(on: bool) -> Iterator[None]:
    """Flower's and ray's progress off (``--json``): only the report goes out."""
    logger = logging.getLogger("flwr")
    level = logger.level
    if on:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            if on:
                warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
