"""edgekit: take PyTorch models onto edge devices and keep them learning there.

``import edgekit`` loads numpy only; torch, onnx and numba are imported by the parts that
use them, when they are first used.
"""

from __future__ import annotations

import importlib
from typing import Any

from edgekit.errors import EdgekitError
from edgekit.graph import Graph, load
from edgekit.limits import Limits

__version__ = "0.1.0"

_LAZY = {
    "from_torch": ("edgekit.converters.from_torch", "from_torch"),
    "from_onnx": ("edgekit.converters.from_onnx", "from_onnx"),
    "deploy": ("edgekit.targets", "deploy"),
    "quantize": ("edgekit.quant", "quantize"),
    "quant": ("edgekit.quant", None),
    "finetune": ("edgekit.learn", "finetune"),
    "profile": ("edgekit.profile", None),  # a callable package: edgekit.profile(graph)
    "runtime": ("edgekit.runtime", None),
    "data": ("edgekit.data", None),
    "models": ("edgekit.models", None),
}

__all__ = ["EdgekitError", "Graph", "Limits", "load", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'edgekit' has no attribute {name!r}")
    module, attr = _LAZY[name]
    value = importlib.import_module(module)
    return getattr(value, attr) if attr else value
