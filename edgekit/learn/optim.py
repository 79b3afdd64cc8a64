"""Optimizers over named float32 arrays: AdamW (the rules' reference setting) and plain SGD."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgekit.learn import kernels as K


@dataclass
class Optimizer:
    kind: str = "adam"  # "adam" or "sgd"
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    steps: int = 0
    state: dict[str, np.ndarray] = field(default_factory=dict)  # "m/<name>", "v/<name>"

    def update(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray],
               lr: float) -> None:
        self.steps += 1
        for name, p in params.items():
            g = grads[name].reshape(-1)
            if self.kind == "sgd":
                K.sgd(p.reshape(-1), g, lr, self.weight_decay)
                continue
            m = self.state.setdefault(f"m/{name}", np.zeros(p.size, np.float32))
            v = self.state.setdefault(f"v/{name}", np.zeros(p.size, np.float32))
            K.adam(p.reshape(-1), g, m, v, lr, *self.betas, self.eps, self.weight_decay,
                   self.steps)

    def state_shapes(self, params: dict[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
        """The float32 arrays ``update`` keeps once it has stepped: a checkpoint's optimizer
        state must be exactly these before it is handed to the kernels."""
        if self.kind == "sgd" or self.steps == 0:
            return {}
        return {f"{moment}/{name}": (p.size,) for name, p in params.items() for moment in "mv"}

    def state_bytes(self, params: dict[str, np.ndarray]) -> int:
        """What the optimizer keeps between steps (two moments per weight for Adam)."""
        return 0 if self.kind == "sgd" else 2 * sum(p.nbytes for p in params.values())
