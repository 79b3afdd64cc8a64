"""``to_c`` for an anytime Graph (``edgekit.anytime``): one firmware image holds the shared
weights, every step of the full network and the sub-network table; an INFER_PATH request names
a path and the firmware runs only that path's steps (``firmware/ek_anytime.h``).

``to_c`` writes the steps as it writes any int8 Graph (the same kernel calls, so each step
computes what the runtime computes, bit for bit); this module changes two things:

- the memory plan: each tensor lives from the step that writes it to the last step that reads
  it *in any path* (a path reads a block's input, or its first add, where the full network reads
  an add the path leaves out: ``table.Plan.source``), so one arena serves every path;
- the adds' outputs are addressed through ``where[k]``, a pointer per add that the path sets
  before its steps run (``use``): the add's own place when the path runs the add, else the
  place of the tensor standing for it. The runtime copies that tensor
  (``anytime.runtime``); here nothing is copied, so a path runs exactly its own plain model's
  kernel calls plus one pointer store per add, and costs what that plain model costs.

After a path the firmware points every add back at its own place (the full path, ``full``), so
INFER and INFER_LAYERS run the full Graph as ``to_c``'s image would. The residual stream's
tensors share one int8 grid (``metadata["quant_groups"]``), so an add reading the block's input
in place of a left-out add reads values on the grid its parameters expect.
"""

from __future__ import annotations

from edgekit.anytime.table import plan as path_plan
from edgekit.anytime.table import table
from edgekit.converters.to_c import _itemsize, _Writer, memory_plan
from edgekit.graph import Graph


class _AnytimeWriter(_Writer):
    """``to_c``'s writer, with every add of the sub-network table addressed through ``where``."""

    def __init__(self, graph: Graph, slots: dict[str, int], *plan_offsets) -> None:
        super().__init__(graph, *plan_offsets)
        self.slots = slots

    def at(self, tensor: str) -> str:
        k = self.slots.get(tensor)
        return super().at(tensor) if k is None else f"where[{k}]"


def writer(graph: Graph) -> _Writer:
    """The writer ``to_c`` walks an anytime Graph with: its plan, and the table's declarations
    (``where``, each path's steps and places, ``use``, ``ek_paths``) already in ``decls``."""
    meta = table(graph)
    paths = list(meta["paths"])
    plans = [path_plan(graph, p) for p in paths]
    reads: dict[str, int] = {}
    for p in plans:
        for i in p.nodes:
            for t in graph.nodes[i].inputs:
                if t not in graph.params:
                    reads[p.source(t)] = max(reads.get(p.source(t), i), i)
    adds = [a for block in meta["blocks"] for a in block["adds"]]
    w = _AnytimeWriter(graph, {a: k for k, a in enumerate(adds)},
                       *memory_plan(graph, _itemsize(graph), reads=reads))
    places = [[w.offsets[p.source(a)] for a in adds] for p in plans]
    starts = [0]
    for p in plans:
        starts.append(starts[-1] + len(p.nodes))
    steps = [i for p in plans for i in p.nodes]
    full = max(range(len(plans)), key=lambda k: len(plans[k].nodes))
    w.decls += [
        '#include "ek_anytime.h"',
        f"static int8_t *where[{len(adds)}] = {{"
        + ", ".join(f"arena + {w.offsets[a]}" for a in adds) + "};",
        _table("uint32_t", f"path_where[{len(plans)}][{len(adds)}]",
               ", ".join("{" + ", ".join(map(str, row)) + "}" for row in places)),
        _table("uint16_t", f"path_starts[{len(starts)}]", ", ".join(map(str, starts))),
        _table("uint16_t", f"path_steps[{len(steps)}]", ", ".join(map(str, steps))),
        "static void use(uint16_t path) {",
        f"    for (uint16_t k = 0; k < {len(adds)}; k++) where[k] = arena + path_where[path][k];",
        "}",
        f"const ek_paths_t ek_paths = {{{len(plans)}, {full}, path_starts, path_steps, use}};",
    ]
    table_bytes = 4 * len(plans) * len(adds) + 2 * (len(starts) + len(steps))
    w.arrays.append(table_bytes)
    w.const_bytes += table_bytes
    return w


def _table(ctype: str, declarator: str, body: str) -> str:
    return f"static const {ctype} {declarator} = {{{body}}};"
