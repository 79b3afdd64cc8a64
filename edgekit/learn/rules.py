"""The rule registry: a name maps to a rule's ``setup`` and ``step`` (each rule is a module of
pure functions; the trainer owns everything stateful)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from edgekit.learn import bp, dfa, ff, hedge, lls


@dataclass(frozen=True)
class Rule:
    setup: Callable  # (blocks, classes, rng, **options) -> RuleState
    step: Callable  # (blocks, state, x, y, phase, rng) -> (loss, logits)
    lr: float  # the default learning rate (benchmarks/learn_defaults.py chose them)
    reads_data: bool = False  # setup takes the training data as ``sample=(x, y)``
    export: Callable | None = None  # (graph, blocks, state) -> (Graph to deploy, history extras)


RULES = {
    "bp": Rule(bp.setup, bp.step, 1e-2),
    "lls": Rule(partial(lls.setup, mode="plain"), lls.step, 1e-2, reads_data=True),
    "lls-m": Rule(partial(lls.setup, mode="m"), lls.step, 1e-2, reads_data=True),
    "lls-mxm": Rule(partial(lls.setup, mode="mxm"), lls.step, 1e-2, reads_data=True),
    "ff": Rule(ff.setup, ff.step, 3e-3),
    "dfa": Rule(dfa.setup, dfa.step, 1e-2, reads_data=True),
    "hedge": Rule(hedge.setup, hedge.step, 1e-2, export=hedge.export),
}
