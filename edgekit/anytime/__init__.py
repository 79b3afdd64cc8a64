"""Anytime networks: one weight-sharing supernet whose sub-networks (paths) answer at any
compute budget, trained with uniform or TIPS path sampling, deployed as one Graph that runs any
path per call (``session.run(x, budget="50%")``). The guide is ``docs/anytime.md``.

Device side (numpy): ``table`` (the sub-network table, plans, extraction, budgets),
``runtime`` (``AnytimeRunner``), ``select`` (accuracy per path, Pareto front), ``tips`` (path
sampling). torch side: ``supernet`` (``AnytimeNet``), ``train``, ``lower``. Names load on
first use, so ``edgekit anytime --help`` stays quick.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "AnytimeRunner": "edgekit.anytime.runtime", "choose": "edgekit.anytime.table",
    "extract": "edgekit.anytime.table", "plan": "edgekit.anytime.table",
    "front": "edgekit.anytime.select", "measure": "edgekit.anytime.select",
    "select": "edgekit.anytime.select", "AnytimeNet": "edgekit.anytime.supernet",
    "train_supernet": "edgekit.anytime.train", "to_graph": "edgekit.anytime.lower",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'edgekit.anytime' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
