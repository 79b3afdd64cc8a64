"""Importers (``from_torch``, ``from_onnx``), Graph passes and writers; each loads its
framework (torch, onnx, flatbuffers) only when called."""

import importlib

_PUBLIC = {"from_torch": "from_torch", "from_onnx": "from_onnx"}


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'edgekit.converters' has no attribute {name!r}")
    return getattr(importlib.import_module(f"edgekit.converters.{_PUBLIC[name]}"), name)
