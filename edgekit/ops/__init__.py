"""The closed operator set of the Graph: one module per op family in this package.

Each module declares its ops (``OpDef``: inputs, attributes, shape rule, MACs, numpy reference)
and registers, per backend, the implementation or the reason there is none. Importing the
package imports every module in it, so a new op is one new module here (and one conformance
case in ``tests/test_conformance.py``). Op modules import numpy only at import time; runtime
kernels, writers' helpers and torch are imported inside the functions that use them.
Shapes include the leading batch dimension; weights are in torch layout (conv: OIHW), output
channels first (conv_transpose2d moves torch's (Cin, Cout / groups, kh, kw) there at import).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from edgekit.errors import EdgekitError
from edgekit.ops.backends import BACKENDS
from edgekit.ops.schema import ACTIVATIONS, QUANT_RULES, REQUIRED, Impl, OpDef, Shape
from edgekit.ops.schema import resolve_attrs as _resolve

OPS: dict[str, OpDef] = {}
_INFRASTRUCTURE = {"backends", "pointwise", "schema", "table", "util"}


def declare(spec: OpDef) -> OpDef:
    """Add ``spec`` to the op set (called by op modules at import)."""
    if spec.name in OPS:
        raise ValueError(f"op {spec.name!r} is declared twice")
    if spec.quant not in QUANT_RULES and not isinstance(spec.quant, tuple):
        raise ValueError(f"op {spec.name!r}: quant must be one of {QUANT_RULES} or (scale, zp)")
    OPS[spec.name] = spec
    return spec


def resolve_attrs(op: str, attrs: dict[str, Any]) -> dict[str, Any]:
    """Attributes of ``op`` with defaults filled in; unknown ops and attributes are an error."""
    spec = OPS.get(op)
    if spec is None:
        raise EdgekitError(f"unknown op {op!r}; the op set is: {', '.join(sorted(OPS))}")
    return _resolve(spec, attrs)


def implementation(op: str, backend: str) -> Impl | None:
    """``op``'s implementation on ``backend``, or None."""
    spec = OPS.get(op)
    return spec.implementation(backend) if spec else None


def implementations(backend: str) -> dict[str, Impl]:
    """Every op's implementation on ``backend``, by op name."""
    return {name: spec.impls[backend] for name, spec in OPS.items() if backend in spec.impls}


def missing(ops, backend: str, what: str) -> None:
    """Raise one EdgekitError naming every op of ``ops`` that ``backend`` lacks, with the
    declared reasons; ``what`` names the backend for the user."""
    lacking = sorted({op for op in ops if implementation(op, backend) is None})
    if lacking:
        why = [f"{op} ({OPS[op].reasons[backend]})" if op in OPS and backend in OPS[op].reasons
               else op for op in lacking]
        have = sorted(implementations(backend))
        raise EdgekitError(f"{what} has no implementation of {', '.join(why)}; "
                           f"it implements: {', '.join(have)}")


def _load_all() -> None:
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        if module not in _INFRASTRUCTURE:
            importlib.import_module(f"{__name__}.{module}")


_load_all()
NEURON_OPS = tuple(name for name, spec in OPS.items() if spec.neuron)

__all__ = ["ACTIVATIONS", "BACKENDS", "NEURON_OPS", "OPS", "REQUIRED", "Impl", "OpDef", "Shape",
           "declare", "implementation", "implementations", "missing", "resolve_attrs"]
