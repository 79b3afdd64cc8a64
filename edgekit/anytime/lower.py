"""Lowering a trained supernet (torch side) to one anytime Graph: the full path through
``from_torch``, with the sub-network table (``table``) in its metadata."""

from __future__ import annotations

from typing import Any

from edgekit.anytime.supernet import AnytimeNet, all_paths
from edgekit.anytime.table import path_macs
from edgekit.errors import EdgekitError
from edgekit.graph import Graph


def to_graph(net: AnytimeNet) -> Graph:
    """The full path as a Graph, and per block the tensors of its branches and adds, found by
    the module names ``torch.export`` keeps on every node (``blocks.<i>.a.*``, ``blocks.<i>``)."""
    import torch

    from edgekit.converters.from_torch import from_torch

    cfg = net.config
    net.eval()
    net.path = "2" * cfg["blocks"]
    graph = from_torch(net, (torch.zeros(1, cfg["in_channels"], cfg["size"], cfg["size"]),))
    producers = graph.producers()
    blocks: list[dict[str, Any]] = []
    for i in range(cfg["blocks"]):
        branches = [[n.outputs[0] for n in graph.nodes if n.name.startswith(f"blocks.{i}.{b}.")]
                    for b in "ab"]
        adds = [n.outputs[0] for n in graph.nodes if n.name == f"blocks.{i}" and n.op == "add"]
        if len(adds) != 2 or not all(branches):
            raise EdgekitError(f"block {i} did not import as two branches and two adds")
        first = producers[branches[0][0]]
        blocks.append({"input": first.inputs[0], "branches": branches, "adds": adds})
    graph.metadata["anytime"] = {"blocks": blocks, "config": cfg,
                                 "paths": {p: {} for p in all_paths(cfg["blocks"])}}
    meta = graph.metadata["anytime"]
    for path in meta["paths"]:
        meta["paths"][path]["macs"] = path_macs(graph, path)
    meta["full_macs"] = meta["paths"]["2" * cfg["blocks"]]["macs"]
    # one int8 quantization for the residual stream: a path reads a block's input where the
    # full network reads the block's adds, so they must hold values on one grid
    graph.metadata["quant_groups"] = [[blocks[0]["input"], *(a for b in blocks for a in b["adds"])]]
    return graph.validate()
