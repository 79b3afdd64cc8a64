"""Hardware-abstraction layer: targets by name, from edgekit itself and from the
``edgekit.targets`` entry-point group (a third party registers ``name = "pkg.mod:TargetClass"``).
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError
from edgekit.graph import Graph, load
from edgekit.targets.base import Session, Target

_BUILTIN: dict[str, str] = {
    "cpu": "edgekit.targets.cpu:CpuTarget",
    "cpu:onnxruntime": "edgekit.targets.onnxruntime:OnnxRuntimeTarget",
    "cpu:litert": "edgekit.targets.litert:LiteRtTarget",
    "cpu:tflite-micro": "edgekit.targets.tflite_micro:TfliteMicroTarget",
    "gpu": "edgekit.targets.gpu:GpuTarget",
    "mcu:qemu": "edgekit.targets.mcu:McuTarget",
}

__all__ = ["Session", "Target", "deploy", "get_target", "target_names"]


def _factories() -> dict[str, str]:
    """Target name -> "module:Class"; built-ins win over entry points of the same name."""
    found = dict(_BUILTIN)
    for ep in entry_points(group="edgekit.targets"):
        found.setdefault(ep.name, ep.value)
    return found


def target_names() -> list[str]:
    return sorted(_factories())


def get_target(name: str) -> Target:
    """The target called ``name``; unknown names list the known ones."""
    factories = _factories()
    if name.startswith("mcu:") and name not in factories:  # mcu:<port>, e.g. mcu:/dev/ttyACM0
        from edgekit.targets.mcu import McuTarget

        return McuTarget(name[4:])
    if name not in factories:
        known = ", ".join(sorted(factories))
        raise EdgekitError(f"unknown target {name!r}; known targets: {known}")
    module, _, cls = factories[name].partition(":")
    return getattr(importlib.import_module(module), cls)()


def deploy(graph: Graph | str | Path, target: str = "cpu", **options: Any) -> Session:
    """Compile ``graph`` (a Graph or an ``.ekm`` path) for ``target`` and return its Session.
    An option given as None is left out: the target's default (``timeout=None``)."""
    options = {k: v for k, v in options.items() if v is not None}
    if not isinstance(graph, Graph):
        graph = load(graph)
    tgt = get_target(target)
    ok, why = tgt.available()
    if not ok:
        raise EdgekitError(f"target {target!r} is not available here: {why}")
    return tgt.compile(graph, **options)
