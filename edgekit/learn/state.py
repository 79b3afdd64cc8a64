"""What a rule carries besides the blocks' weights: its own arrays and settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class RuleState:
    """``params`` train with the weights (LLS-M's m, LLS-MxM's M); ``fixed`` never change
    (LLS's bases, DFA's feedback matrices), so a seed regenerates them on resume; ``buffers``
    the rule updates itself (Hedge's alpha): the checkpoint keeps them."""

    config: dict[str, Any]
    params: dict[str, np.ndarray] = field(default_factory=dict)
    fixed: dict[str, np.ndarray] = field(default_factory=dict)
    grads: dict[str, np.ndarray] = field(default_factory=dict)
    buffers: dict[str, np.ndarray] = field(default_factory=dict)

    def zero_grads(self) -> None:
        for name, value in self.params.items():
            self.grads.setdefault(name, np.zeros_like(value))[...] = 0.0
