"""Flower's FedAvg, FedProx and FedAdam with what a fleet of unequal devices needs: each layer
averaged over the clients that trained it (weighted by their examples), a learning rate that
decays over the rounds as centralized training's does over its epochs, and a record of every
round (replies, failures, seconds) and every client (profile, layers trained, examples).

The layer-wise average replaces FedAvg's at the bottom of every class (``LayerwiseFedAvg``),
so a Flower strategy built on FedAvg runs unchanged on top of it: FedProx adds its
``proximal-mu`` to the round's settings, FedAdam takes its server-side Adam step from the
layer-wise average (Reddi et al. 2021; ``flwr.serverapp.strategy.FedAdam``).

A client sends only the arrays it trained; a layer no client trained in a round keeps its
global value. A sampled client that never answers within the round's timeout is dropped by
Flower without a trace, so failures are counted here as sampled minus valid replies.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx


def aggregate_layers(current: ArrayRecord, replies: list[Any],
                     weight_key: str = "num-examples") -> ArrayRecord:
    """Each array: the average of the replies that carry it, weighted by ``weight_key``; an
    array no reply carries keeps its value in ``current``."""
    sums: dict[str, np.ndarray] = {}
    weights: dict[str, float] = {}
    for content in replies:
        w = float(content["metrics"][weight_key])
        for name, array in content["arrays"].items():
            value = array.numpy()
            sums[name] = sums.get(name, 0.0) + w * value.astype(np.float64)
            weights[name] = weights.get(name, 0.0) + w
    out = {}
    for name, array in current.items():
        if name in sums and weights[name] > 0:
            out[name] = Array((sums[name] / weights[name]).astype(np.float32))
        else:
            out[name] = array
    return ArrayRecord(out)


def _malformed(content: Any, current: ArrayRecord, weight_key: str) -> str | None:
    """Why a reply cannot be aggregated (a failure of that client, not of the round)."""
    try:
        metrics, about = content["metrics"], content["client"]
        if not (metrics[weight_key] > 0 and {"id", "profile"} <= set(about.keys())
                and {"layers-trained", "layers-total"} <= set(metrics.keys())):
            return "reply lacks examples, layers or client identity"
        for name, array in content["arrays"].items():
            if name not in current or array.shape != current[name].shape \
                    or not np.isfinite(array.numpy()).all():
                return f"array {name!r} ({array.shape}) is not one of the model's, or not finite"
    except (KeyError, TypeError) as err:
        return f"malformed reply ({err})"
    return None


class FleetMixin:
    """The rounds' record and learning rate; first among a fleet strategy's bases, the Flower
    strategy next, ``LayerwiseFedAvg`` last (``FleetFedAdam`` below)."""

    def __init__(self, *args: Any, lr: float, rounds: int, quorum: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lr, self.num_rounds, self.quorum = lr, rounds, quorum
        self.rounds: list[dict[str, Any]] = []
        self.clients: dict[str, dict[str, Any]] = {}
        self._current: ArrayRecord | None = None

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self._current = arrays
        config["lr"] = self.lr * (1 + math.cos(math.pi * (server_round - 1) / self.num_rounds)) / 2
        start = time.perf_counter()
        messages = list(super().configure_train(server_round, arrays, config, grid))
        self.rounds.append({"round": server_round, "sampled": len(messages), "start": start})
        # the first round waits for the whole fleet; later ones go on with the survivors
        self.min_available_nodes = self.min_train_nodes = self.quorum
        return messages


class LayerwiseFedAvg(FedAvg):
    """FedAvg whose average is ``aggregate_layers`` over the replies that can be aggregated;
    the others are counted in the round's record (``FleetMixin``)."""

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid, errors = self._check_and_log_replies(list(replies), is_train=True,
                                                    validate=False)
        reasons = [m.error.reason for m in errors]
        contents = []
        for m in valid:
            wrong = _malformed(m.content, self._current, self.weighted_by_key)
            if wrong:
                reasons.append(f"node {m.metadata.src_node_id}: {wrong}")
            else:
                contents.append(m.content)
        record = self.rounds[-1]
        record.update(clients=len(contents), failures=record["sampled"] - len(contents),
                      errors=reasons)
        if not contents:
            return None, None
        for content in contents:
            self._note_client(content)
        arrays = aggregate_layers(self._current, contents, self.weighted_by_key)
        metrics = self.train_metrics_aggr_fn(contents, self.weighted_by_key)
        return arrays, metrics

    def _note_client(self, content: Any) -> None:
        about, metrics = content["client"], content["metrics"]
        key = str(about["id"])
        seen = self.clients.setdefault(key, {"id": about["id"], "profile": about["profile"],
                                             "rounds": 0})
        seen.update(layers_trained=int(metrics["layers-trained"]),
                    layers_total=int(metrics["layers-total"]),
                    examples=int(metrics["num-examples"]))
        seen["rounds"] += 1


class FleetFedAvg(FleetMixin, LayerwiseFedAvg):
    """FedAvg, layer by layer over the clients that trained each layer."""


class FleetFedProx(FleetMixin, FedProx, LayerwiseFedAvg):
    """FedProx (clients pulled towards the global weights by ``proximal-mu``), layer by layer."""


class FleetFedAdam(FleetMixin, FedAdam, LayerwiseFedAvg):
    """FedAdam: the global weights move by a server-side Adam step (rate ``eta``) along the
    change the layer-wise average asks for."""


STRATEGIES = {"fedavg": FleetFedAvg, "fedprox": FleetFedProx, "fedadam": FleetFedAdam}
