"""``edgekit.profile``: what a model costs on a target — operation counts, memory, latency
percentiles and energy, per model and per layer, each figure labelled for what it is.

``edgekit.profile(graph, target="cpu")`` returns a ``Report``. The package is itself callable,
so ``edgekit.profile`` is both the function and the package holding its parts (``counts``,
``latency``, ``energy``, ``fit``, ``devices``, ``report``, ``plot``, ``compare``).
"""

from __future__ import annotations

import sys
import types
from typing import Any

from edgekit.profile.fit import Limit, check_fit, require_fit

__all__ = ["Limit", "check_fit", "require_fit"]


class _CallableModule(types.ModuleType):
    """Lets ``edgekit.profile(...)`` call the function even after the package is imported."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return profile(*args, **kwargs)  # noqa: F821  (defined below once it lands)


sys.modules[__name__].__class__ = _CallableModule
