"""``scheme="mixed"``: a weight format per layer, chosen by a sensitivity search under a budget
of model bytes (``size_bytes=``) or of modelled energy per inference (``energy_uj=``).

Sensitivity (as HAWQ-style searches measure it, here by running rather than by Hessian): for
each layer and each candidate format, the float Graph is run on the calibration data with only
that layer's weight replaced by what the format stores, and the error is the mean squared
difference of the outputs from the float ones, relative to their mean square. The search
starts with every layer in float16 and, while over budget, moves one layer to a cheaper
candidate: the move that adds the least error per byte (or pJ) saved; then, while a layer's
more precise candidate still fits, it takes the one that removes the most error per byte. Errors are
taken as adding up over layers, which holds for small ones.

The energy is ``edgekit.profile``'s model on ``device`` (``targets/profiles``): the weight
formats multiply in float32 either way, so a layer's format changes only the bytes fetched
from the weight memory, and the budget is the rest of the model's energy plus those fetches.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.graph import Graph
from edgekit.numerics import formats
from edgekit.quant.lowbit import FORMAT, pack_weights, weight_names

# cheapest first: ternary, int4, FP8, REx int4 x 2 (as many bits as FP8, and more scales), fp16
CANDIDATES = (("ternary", 1), ("int4", 1), ("fp8_e4m3", 1), ("int4", 2), ("float16", 1))
SAMPLES = 64  # calibration inputs the sensitivity runs on


def quantize_mixed(graph: Graph, feeds: dict[str, np.ndarray], size_bytes: Any = None,
                   energy_uj: Any = None, chosen: Any = None, device: str = "cortex-m4",
                   per_channel: bool = True) -> Graph:
    """``graph`` with each conv/linear weight in the candidate format the search picked, or
    in the scheme ``chosen`` names for it (the weights it does not name stay float32)."""
    if sum(v is not None for v in (size_bytes, energy_uj, chosen)) != 1:
        raise EdgekitError("scheme 'mixed' takes one of size_bytes= (model bytes), energy_uj= "
                           "(modelled energy per inference) or formats= (weight name -> "
                           "scheme)")
    if chosen is not None:
        return _as_chosen(graph, chosen, per_channel)
    budget = size_bytes if energy_uj is None else energy_uj
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget > 0:
        raise EdgekitError(f"the mixed scheme's budget must be a positive number, got {budget!r}")
    names = weight_names(graph)
    nbytes = {(n, c): _bytes(graph, n, c, per_channel) for n in names for c in CANDIDATES}
    cost, fixed, unit = _costs(graph, names, nbytes, energy_uj is None, device)
    errors = _sensitivity(graph, names, feeds, per_channel)
    choice = {n: CANDIDATES[-1] for n in names}

    def total() -> float:
        return fixed + sum(cost[(n, choice[n])] for n in names)

    while total() > budget:
        moves = [((errors[(n, c)] - errors[(n, choice[n])])
                  / (cost[(n, choice[n])] - cost[(n, c)]), i, n, c)
                 for i, n in enumerate(names) for c in CANDIDATES
                 if cost[(n, c)] < cost[(n, choice[n])]]
        if not moves:
            raise EdgekitError(f"no mix of {', '.join(formats.dtype_name(*c) for c in CANDIDATES)}"
                               f" fits {budget:,} {unit}: the smallest takes {total():,.6g}")
        _, _, name, candidate = min(moves)
        choice[name] = candidate
    while True:  # then spend what is left: the upgrade that removes most error per byte
        spare = budget - total()
        moves = [((errors[(n, c)] - errors[(n, choice[n])])
                  / (cost[(n, c)] - cost[(n, choice[n])]), i, n, c)
                 for i, n in enumerate(names) for c in CANDIDATES
                 if 0 < cost[(n, c)] - cost[(n, choice[n])] <= spare
                 and errors[(n, c)] < errors[(n, choice[n])]]
        if not moves:
            break
        _, _, name, candidate = min(moves)
        choice[name] = candidate
    return pack_weights(graph, choice, "mixed", None, per_channel,
                        {"budget": {"size_bytes" if energy_uj is None else "energy_uj": budget},
                         "device": device, "modelled": total(), "unit": unit,
                         "sensitivity": {n: errors[(n, choice[n])] for n in names}})


def _as_chosen(graph: Graph, chosen: Any, per_channel: bool) -> Graph:
    names = weight_names(graph)
    if not isinstance(chosen, dict) or not chosen:
        raise EdgekitError(f"formats= maps weight names to schemes, got {chosen!r}")
    for name, scheme in chosen.items():
        if name not in names or scheme not in FORMAT:
            raise EdgekitError(f"formats={{{name!r}: {scheme!r}}}: the weights are "
                               f"{', '.join(names)}; the schemes {', '.join(FORMAT)}")
    choice = {name: (FORMAT[scheme], 1) for name, scheme in chosen.items()}
    return pack_weights(graph, choice, "mixed", None, per_channel, {"chosen": dict(chosen)})


def _bytes(graph: Graph, name: str, candidate: tuple[str, int], per_channel: bool) -> int:
    """A weight's stored bytes in a candidate format: packed storage and float32 scales."""
    storage, scales = formats.quantize_weight(graph.params[name], candidate[0], None,
                                              candidate[1], per_channel)
    return storage.nbytes + (0 if candidate[0] == "float16" else 4 * scales.size)


def _costs(graph: Graph, names: list[str], nbytes: dict, by_size: bool,
           device: str) -> tuple[dict, float, str]:
    """Each (weight, candidate)'s share of the budget, what the rest of the model costs
    whatever the formats, and the budget's unit."""
    others = sum(graph.tensors[p].nbytes for p in graph.params if p not in names)
    if by_size:
        return nbytes, float(others), "bytes"
    from edgekit.profile.counts import describe
    from edgekit.profile.devices import load_profile
    from edgekit.profile.energy import layer_energy_pj

    dev = load_profile(device)
    per_byte_uj = dev.energy_pj[f"access_{dev.weight_memory}"] / 8 / 1e6
    whole = sum(sum(layer_energy_pj(la, dev).values()) for la in describe(graph, dev)["layers"])
    fixed = whole / 1e6 - per_byte_uj * sum(graph.tensors[n].nbytes for n in names)
    return {k: v * per_byte_uj for k, v in nbytes.items()}, fixed, "uJ"


def _sensitivity(graph: Graph, names: list[str], feeds: dict[str, np.ndarray],
                 per_channel: bool) -> dict[tuple[str, tuple[str, int]], float]:
    """Relative output error of the float Graph with one weight in one candidate format."""
    from edgekit.runtime.executor import Executor

    feeds = {k: v[:SAMPLES] for k, v in feeds.items()}
    reference = _outputs(Executor(graph).run(feeds))
    power = max(float(np.mean([np.mean(r.astype(np.float64) ** 2) for r in reference])), 1e-30)
    errors = {}
    for name in names:
        for candidate in CANDIDATES:
            g = copy.copy(graph)
            g.params = dict(graph.params)
            w = graph.params[name]
            g.params[name] = formats.dequantize(*formats.quantize_weight(
                w, candidate[0], orders=candidate[1], per_channel=per_channel),
                candidate[0], w.shape)
            out = _outputs(Executor(g).run(feeds))
            errors[(name, candidate)] = float(np.mean([np.mean((o.astype(np.float64) - r) ** 2)
                                                       for o, r in zip(out, reference,
                                                                       strict=True)])) / power
    return errors


def _outputs(y: Any) -> list[np.ndarray]:
    return y if isinstance(y, list) else [y]
