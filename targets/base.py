"""The hardware-abstraction layer's two protocols: a Target compiles a Graph into a Session."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.graph import Graph


class Session(ABC):
    """A Graph ready to run on one target: numpy in, numpy out, in the Graph's own layout."""

    graph: Graph

    @abstractmethod
    def run(self, inputs: Any) -> Any:
        """One array (or a list/dict for several inputs) in; one array (or a list) out.

        Inputs pass ``edgekit.quant.edge.graph_feeds`` first, the same checks on every target:
        real numbers of the Graph's per-sample shape, and no NaN or inf unless the caller
        passes ``allow_nonfinite=True`` (float32 Graphs only). Outputs holding NaN or inf are
        refused too, unless ``allow_nonfinite`` (``require_finite_outputs``)."""

    def run_layers(self, inputs: Any) -> dict[str, np.ndarray]:
        """Every node's output by tensor name, where the backend exposes intermediates."""
        raise EdgekitError(f"{type(self).__name__} does not expose per-layer outputs")

    def close(self) -> None:
        """Release the backend's resources (processes, devices, ports)."""

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Target(ABC):
    """A place a Graph can run. Constructors only store arguments; work happens in compile."""

    name: str
    # Device profile (``targets/profiles/<name>.toml``) whose flash and SRAM ``compile`` enforces
    # (``edgekit.profile.fit.require_fit`` with the memory its own runtime plans, so ``deploy``
    # refuses a Graph that does not fit); None where the target runs on the host.
    profile: str | None = None

    def available(self) -> tuple[bool, str]:
        """(True, "") when usable here, else (False, why not and what would make it usable)."""
        return True, ""

    @abstractmethod
    def compile(self, graph: Graph, **options: Any) -> Session:
        """Prepare the Graph for this target (convert, plan memory, load) once."""
