"""The profile of an early-exit Graph (``metadata["early_exit"]``, made by ``edgekit.speech``):
what stopping at each exit costs, and what a policy is expected to cost over a dataset.

An exit's cost is that of the steps up to the step producing its output, in the Graph's order:
exactly the steps a staged run executes before it returns that exit (``Executor.staged``), the
earlier exits' heads included. MACs and modelled energy add up the report's layers over those
steps; latency is measured on the edgekit runtime (a staged run timed up to each exit), summed
from the board's per-step instruction counts, or summed from the per-layer estimates of a
device that is not attached. A policy's expected cost over a dataset is the share of its inputs
that stop at each exit times that exit's cost: the policy is replayed on every exit's outputs,
the same decision the staged run makes on the same numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekit.graph import Graph
from edgekit.profile import latency

META = "early_exit"


def is_early_exit(graph: Graph) -> bool:
    return isinstance(graph.metadata.get(META), dict)


def add_to(data: dict[str, Any], graph: Graph, x: Any, runs: int, warmup: int,
           inputs: np.ndarray | None = None, policy: str | None = None) -> None:
    """``data["early_exit"]``: per exit its blocks, steps, MACs, modelled energy and latency;
    the policy (``policy``, else the stored one) with its expected cost over ``inputs`` where
    given, else over the validation set it was calibrated on (as recorded at calibration)."""
    from edgekit.speech.exits import exits_of

    exits = exits_of(graph)
    step_of = {node.outputs[0]: i for i, node in enumerate(graph.nodes)}
    layers = data["layers"]
    timed = _exit_times(data, graph, exits, x, runs, warmup)
    rows = []
    for k, ex in enumerate(exits):
        prefix = layers[:step_of[ex.output] + 1]
        rows.append({"exit": k + 1, "output": ex.output, "blocks": ex.blocks,
                     "steps": len(prefix), "macs": sum(la["macs"] for la in prefix),
                     "energy_model_uj": sum(la["energy_model_uj"] for la in prefix),
                     "latency_ms": timed[k]})
    data[META] = {"exits": rows, "latency_source": _source(data) if any(timed) else None,
                  "policy": _policy(graph, rows, inputs, policy)}


def _exit_times(data: dict[str, Any], graph: Graph, exits: list, x: Any, runs: int,
                warmup: int) -> list[dict[str, Any] | None]:
    """Each exit's latency: a staged run timed up to it on ``cpu``; else the layers' board
    instructions or estimates summed over its steps; None where the layers have no times."""
    if data["target"] == "cpu" and data["latency_ms"]["source"] == "measured":
        from edgekit.runtime import executor_for

        executor = executor_for(graph)
        return [latency.stats(latency.time_calls(
            lambda name=ex.output: executor.staged(x).until(name), runs, warmup))
            for ex in exits]
    step_of = {node.outputs[0]: i for i, node in enumerate(graph.nodes)}
    times = [la["time_ms"] for la in data["layers"]]
    if not all(t and "estimate" in t for t in times):
        return [None] * len(exits)
    out = []
    for ex in exits:
        prefix = times[:step_of[ex.output] + 1]
        row = {"estimate": sum(t["estimate"] for t in prefix)}
        if "instructions" in prefix[0]:
            row["instructions"] = sum(t["instructions"] for t in prefix)
        out.append(row)
    return out


def _source(data: dict[str, Any]) -> str:
    if data["target"] == "cpu" and data["latency_ms"]["source"] == "measured":
        return "measured: a staged run on the edgekit runtime up to the exit"
    if "device_run" in data:
        return "the board's emulated instructions summed over the exit's steps (estimate: / clock)"
    return "the per-layer estimates summed over the exit's steps"


def _policy(graph: Graph, rows: list[dict[str, Any]], inputs: np.ndarray | None,
            text: str | None) -> dict[str, Any]:
    """The policy's share of inputs stopping at each exit and its expected cost."""
    from edgekit.speech.exits import EarlyExit, Policy, Replay, stored_policy

    chosen = stored_policy(graph) if text is None else Policy.parse(text, len(rows))
    out: dict[str, Any] = {"policy": str(chosen)}
    if inputs is None and chosen.kind == "exit":  # the same exit for every input
        fixed = rows[chosen.value - 1]
        out.update(basis="every input (a fixed exit)", exit_share=[
            float(r is fixed) for r in rows], mean_blocks=float(fixed["blocks"]),
            mean_macs=float(fixed["macs"]),
            mean_energy_model_uj=fixed["energy_model_uj"])
        return out
    if inputs is None:
        record = graph.metadata[META].get("calibration", {}).get("valid")
        if text is not None or record is None:
            out["basis"] = "no dataset given: pass inputs (--voices, or --labels with features)"
            return out
        out.update(basis="the validation set it was calibrated on (recorded at calibration)",
                   mean_blocks=record["mean_blocks"], mean_macs=record["mean_macs"],
                   wer=record["wer"])
        return out
    runner = EarlyExit(graph)
    replay = Replay.of(runner.exits, runner.all_exits(np.asarray(inputs, np.float32)),
                       [""] * len(inputs))
    share = np.bincount(replay.choose(chosen), minlength=len(rows)) / len(inputs)
    out.update(basis=f"{len(inputs)} inputs given", exit_share=share.tolist(),
               mean_blocks=float(share @ [r["blocks"] for r in rows]),
               mean_macs=float(share @ [r["macs"] for r in rows]),
               mean_energy_model_uj=float(share @ [r["energy_model_uj"] for r in rows]))
    if all(r["latency_ms"] for r in rows):
        per_exit = [r["latency_ms"].get("p50", r["latency_ms"].get("estimate")) for r in rows]
        out["mean_latency_ms"] = float(share @ per_exit)
    return out


def text(data: dict[str, Any]) -> str:
    """The per-exit table and the policy's expected cost, for ``Report.text``."""
    from edgekit.console import table

    ee = data[META]
    total = ee["exits"][-1]["blocks"]
    lat = [r["latency_ms"] for r in ee["exits"]]
    head = ["exit", "blocks", "steps", "MACs", "energy µJ (model)"]
    if all(lat):
        head.append("p50 ms" if "p50" in lat[0] else "ms (estimated)")
        if "instructions" in lat[0]:
            head.append("instructions")
    rows = [(r["exit"], r["blocks"], r["steps"], r["macs"], r["energy_model_uj"],
             *([r["latency_ms"].get("p50", r["latency_ms"].get("estimate"))] if all(lat) else []),
             *([r["latency_ms"]["instructions"]] if all(lat) and "instructions" in lat[0] else []))
            for r in ee["exits"]]
    lines = ["", "early exits (cost of stopping at each; latency: "
             f"{ee['latency_source'] or 'n/a'}):", table(head, rows)]
    p = ee["policy"]
    if "mean_blocks" in p:
        share = (", exits " + " / ".join(f"{s:.0%}" for s in p["exit_share"])
                 if "exit_share" in p else "")
        lines.append(f"policy {p['policy']} over {p['basis']}: {p['mean_blocks']:.2f} of "
                     f"{total} blocks ({p['mean_blocks'] / total:.0%}), "
                     f"{p['mean_macs']:,.0f} MACs{share}")
    else:
        lines.append(f"policy {p['policy']}: {p['basis']}")
    return "\n".join(lines)
