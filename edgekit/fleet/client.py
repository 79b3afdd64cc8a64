"""The fleet's ClientApp (Flower Message API): one device fine-tunes the global weights on its
own shard with an ``edgekit.learn`` rule and sends back the arrays it trained.

Everything a round needs comes in the message: the model's structure (its ``.ekm`` bytes), the
global weights, the rule and its settings. What is the device's own comes from its SuperNode's
``--node-config``: ``data`` (its shard, ``.npz`` with ``x`` and ``y``) and ``profile``; in the
simulation, where all clients share one machine, ``partition-id`` picks a shard file from the
``shards`` folder and a profile from the ``profiles`` list the server sends. Numpy and numba
only: no torch on this side.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

import edgekit
from edgekit.errors import EdgekitError
from edgekit.fleet.devices import plan
from edgekit.fleet.runs import rule_options
from edgekit.graph import Graph
from edgekit.learn import finetune
from edgekit.limits import check_npz

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    config = msg.content["config"]
    node = context.node_config
    pid = int(node.get("partition-id", 0))
    graph = model(bytes(config["model"]), msg.content["arrays"])
    x, y = shard(node, config, pid)
    profiles = str(config.get("profiles", "host")).split(",")
    device = plan(graph, str(config["rule"]), str(node.get("profile") or
                                                  profiles[pid % len(profiles)]),
                  int(config["batch-size"]))
    tuned, history = finetune(
        graph, x, y, rule=str(config["rule"]), epochs=int(config["epochs"]),
        lr=float(config["lr"]), batch_size=int(config["batch-size"]),
        layers="all" if device.layers == device.total else device.layers,
        seed=int(config["seed"]), schedule="constant",
        proximal_mu=float(config.get("proximal-mu", 0.0)), **rule_options(str(config["rule"])))
    last = history["epochs"][-1]
    arrays = ArrayRecord({name: Array(tuned.params[name]) for name in device.names})
    metrics = MetricRecord({"loss": last["loss"], "accuracy": last["accuracy"],
                            "layers-trained": device.layers, "layers-total": device.total,
                            "num-examples": len(y)})
    about = ConfigRecord({"id": int(node.get("id", pid)), "profile": device.profile})
    return Message(RecordDict({"arrays": arrays, "metrics": metrics, "client": about}),
                   reply_to=msg)


def model(ekm: bytes, arrays: ArrayRecord) -> Graph:
    """The Graph of ``ekm`` (checked in full as any untrusted file) with the global weights."""
    fd, name = tempfile.mkstemp(suffix=".ekm")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(ekm)
        graph = edgekit.load(name)
    finally:
        os.unlink(name)
    for key, array in arrays.items():
        value = array.numpy()
        if key not in graph.params or graph.params[key].shape != value.shape:
            raise EdgekitError(f"the server sent array {key!r} {value.shape}, which the model "
                               "does not have")
        graph.params[key] = value.astype(np.float32)
    return graph


def shard(node: dict, config: dict, pid: int) -> tuple[np.ndarray, np.ndarray]:
    """This device's examples: its ``data`` file, or shard ``pid`` of the simulation."""
    path = Path(str(node["data"])) if node.get("data") else \
        Path(str(config["shards"])) / f"{pid}.npz"
    try:
        check_npz(path)
        with np.load(path, allow_pickle=False) as z:
            return z["x"], z["y"]
    except (OSError, KeyError, ValueError) as err:
        raise EdgekitError(f"{path}: not a data file with 'x' and 'y' ({err})") from None
