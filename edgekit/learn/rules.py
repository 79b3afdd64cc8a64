"""The rule registry: a name maps to a rule's ``setup`` and ``step`` (each rule is a module of
pure functions; the trainer owns everything stateful)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from edgekit.learn import bp, dfa, ff, lls


@dataclass(frozen=True)
class Rule:
    setup: Callable  # (blocks, classes, rng, **options) -> RuleState
    step: Callable  # (blocks, state, x, y, phase, rng) -> (loss, logits)


RULES = {
    "bp": Rule(bp.setup, bp.step),
    "lls": Rule(partial(lls.setup, mode="plain"), lls.step),
    "lls-m": Rule(partial(lls.setup, mode="m"), lls.step),
    "lls-mxm": Rule(partial(lls.setup, mode="mxm"), lls.step),
    "ff": Rule(ff.setup, ff.step),
    "dfa": Rule(dfa.setup, dfa.step),
}
