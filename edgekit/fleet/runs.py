"""One fleet run's folder and Flower's environment: the settings the ServerApp reads
(``run.json``), the model and held-out data it sends and scores, Flower's home folder (so no
state lands in the user's home), and the results it writes back."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

import edgekit
from edgekit.errors import EdgekitError
from edgekit.fileio import atomic_write, atomic_write_bytes
from edgekit.graph import Graph
from edgekit.learn.trainer import get_rule
from edgekit.profile.devices import load_profile

STRATEGIES = ("fedavg", "fedprox", "fedadam")
# FedAdam's server-side rate (eta): on the digits benchmark under label skew 0.03 ended at
# 95.3 %, 0.01 at 81.9 % (too slow in 20 rounds), 0.1 decayed with the clients' rate at 94.4 %
SERVER_LR = 0.03
# Flower phones home, checks for updates and, on a SuperLink, installs each app's dependencies
# from the package index unless told not to; ray reports usage likewise
QUIET_ENV = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
             "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1", "RAY_USAGE_STATS_ENABLED": "0"}


def flower_env(run: Path) -> dict[str, str]:
    """The variables every Flower process of this run gets: its home inside the run folder."""
    return {**QUIET_ENV, "FLWR_HOME": str(run / "flwr-home"), "EDGEKIT_FLEET_RUN": str(run)}


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in ``os.environ`` for the block (the simulation engine runs in-process)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def require_flower() -> None:
    try:
        import flwr  # noqa: F401
    except ImportError:
        raise EdgekitError("fleet learning runs on Flower: pip install 'edgekit[fleet]'") \
            from None


def settings(*, nodes: int, rounds: int, rule: str, strategy: str = "fedavg",
             profiles: list[str] | tuple[str, ...] = ("host",), epochs: int = 1,
             lr: float | None = None, batch_size: int = 32, seed: int = 0,
             proximal_mu: float = 0.1, server_lr: float | None = None,
             quorum: int | None = None, timeout: float = 3600.0,
             shards: str = "") -> dict[str, Any]:
    """The run's settings, checked: every user error here, before any process starts."""
    def check(ok: bool, msg: str) -> None:
        if not ok:
            raise EdgekitError(msg)

    for name, value in (("clients", nodes), ("rounds", rounds), ("epochs", epochs),
                        ("batch size", batch_size)):
        check(type(value) is int and value >= 1, f"{name} must be a positive int, got {value!r}")
    get_rule(rule)
    check(strategy in STRATEGIES, f"unknown strategy {strategy!r}; strategies: "
          f"{', '.join(STRATEGIES)}")
    check(len(profiles) > 0, "give at least one device profile")
    for p in profiles:
        load_profile(p)
    lr = get_rule(rule).lr if lr is None else lr
    check(lr > 0 and np.isfinite(lr), f"lr must be a positive number, got {lr!r}")
    check(proximal_mu >= 0 and np.isfinite(proximal_mu), "proximal mu must be >= 0")
    server_lr = SERVER_LR if server_lr is None else server_lr
    check(server_lr > 0 and np.isfinite(server_lr),
          f"the server lr must be a positive number, got {server_lr!r}")
    check(timeout > 0, f"the round timeout must be positive, got {timeout!r}")
    quorum = max(1, nodes // 2) if quorum is None else quorum
    check(1 <= quorum <= nodes, f"quorum must be 1..{nodes}, got {quorum}")
    return {"nodes": nodes, "rounds": rounds, "rule": rule, "strategy": strategy,
            "profiles": ",".join(profiles), "epochs": epochs, "lr": lr,
            "batch_size": batch_size, "seed": seed, "proximal_mu": proximal_mu,
            "server_lr": server_lr, "quorum": quorum, "timeout": timeout, "shards": shards}


def rule_options(rule: str) -> dict[str, Any]:
    """What every client, and the centralized baseline, passes to the rule. LLS's default class
    bases come from the data a device trains on (``edgekit.learn.lls``): in a fleet each shard
    would give other bases, and averaging layers trained towards different bases cost 3 points
    under label skew (94.2 against 97.5 %, docs/fleet.md's benchmark settings); the reference's
    square waves are the same on every device."""
    return {"waveform": "square"} if rule in ("lls", "lls-m", "lls-mxm") else {}


def prepare(run: Path, graph: Graph, x_test: np.ndarray, y_test: np.ndarray,
            cfg: dict[str, Any]) -> None:
    """Write what the ServerApp reads into the run folder."""
    (run / "flwr-home").mkdir(parents=True, exist_ok=True)
    graph.save(run / "model.ekm")
    with atomic_write(run / "test.npz") as f:
        np.savez(f, x=x_test, y=y_test)
    cfg = {**cfg, "model": str(run / "model.ekm"), "test": str(run / "test.npz")}
    atomic_write_bytes(run / "run.json", json.dumps(cfg, indent=1).encode())


def results(run: Path) -> tuple[Graph, dict[str, Any]]:
    """The global model and the report the ServerApp wrote; a run that ended without them
    failed on the server side."""
    if not (run / "result.json").exists():
        raise EdgekitError("the fleet run ended without results (the ServerApp failed; run "
                           "without --json to see Flower's log)")
    return edgekit.load(run / "global.ekm"), json.loads((run / "result.json").read_text())


def report(result: dict[str, Any], about: dict[str, Any]) -> dict[str, Any]:
    """The user's report from what the ServerApp wrote: ``about`` the run, the accuracy before
    round 1, per round ``accuracy``, ``loss``, ``clients``, ``failures``, ``seconds`` (and the
    failures' ``errors``), per client ``profile``, ``layers_trained`` (of ``layers_total``),
    ``examples``."""
    rounds = [{k: r[k] for k in ("round", "accuracy", "loss", "clients", "failures", "seconds",
                                 "errors") if k in r} for r in result["rounds"]]
    clients = [{k: c[k] for k in ("profile", "layers_trained", "layers_total", "examples")}
               for c in result["clients"]]
    return {**about, "initial_accuracy": result["initial"]["accuracy"], "rounds": rounds,
            "clients": clients}
