"""What an op is: its declaration (``OpDef``), attribute checking, and the shape helpers that
op modules share.

An ``OpDef`` holds everything about one op: inputs, attributes with defaults, the shape rule,
the MAC count, the numpy reference, how int8 quantization treats its output, and the
implementation each backend registers for it (``op.implements(backend)``) or the reason a
backend does not have one (``op.unsupported(backend, reason)``). Op modules in this package
create the declarations; ``edgekit.ops.registry`` collects them. This module imports numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgekit.errors import EdgekitError

Shape = tuple[int, ...]
ACTIVATIONS = ("none", "relu", "relu6")
REQUIRED = object()
# How the int8 quantizer picks an op's output quantization: calibrated from data, or kept from
# its first input (ops that move values without rescaling), or from all inputs (concat).
QUANT_RULES = ("calibrated", "first_input", "all_inputs")


@dataclass(frozen=True)
class Impl:
    """A backend's implementation of an op: the function and the options it registered with
    (a runtime kernel's ``scratch`` size function, an importer's source op names, ...)."""

    fn: Callable[..., Any]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(eq=False)
class OpDef:
    """One op of the Graph. ``reference(*inputs, **attrs)`` computes it in plain numpy (float64
    inside, float32 out); every kernel is tested against it."""

    name: str
    n_inputs: tuple[int, int]
    attrs: dict[str, Any]
    infer: Callable[[list[Shape], dict[str, Any]], Shape]
    macs: Callable[[list[Shape], Shape, dict[str, Any]], int] = lambda i, o, a: 0
    weight_inputs: tuple[int, ...] = ()  # input slots that must be params
    doc: str = ""
    reference: Callable[..., Any] | None = None
    quant: str | tuple[float, int] = "calibrated"  # a QUANT_RULES entry or a fixed (scale, zp)
    # a weight (slot 1) with one row per output channel on axis 0 and a bias (slot 2): int8
    # quantization makes them int8 per channel and int32, and a per-channel affine after the op
    # folds into them (conv, linear; layernorm's gamma and beta stay float32: it computes in
    # float inside its int8 kernel)
    int8_weights: bool = False
    neuron: bool = False  # a spiking neuron: keeps a membrane across the Graph's time steps
    # its first input holds int32 indices into the rows of its second (embedding's table): a
    # graph input without quantization; the runtime picks its kernel by the second's dtype
    indexed: bool = False
    int8_spiking: bool = False  # an integer op of int8 spiking Graphs only (ops/spiking.py)
    impls: dict[str, Impl] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)

    def implements(self, backend: str, **options: Any) -> Callable[[Callable], Callable]:
        """Decorator: ``fn`` implements this op on ``backend`` (a name in ``BACKENDS``)."""

        def register(fn: Callable) -> Callable:
            self._claim(backend)
            self.impls[backend] = Impl(fn, options)
            return fn

        return register

    def unsupported(self, backend: str, reason: str) -> None:
        """Declare that ``backend`` does not implement this op, and why."""
        self._claim(backend)
        self.reasons[backend] = reason

    def implementation(self, backend: str) -> Impl | None:
        return self.impls.get(backend)

    def _claim(self, backend: str) -> None:
        from edgekit.ops.backends import BACKENDS

        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; the backends are {sorted(BACKENDS)}")
        if backend in self.impls or backend in self.reasons:
            raise ValueError(f"op {self.name!r} already declares backend {backend!r}")


def fail(msg: str):
    raise EdgekitError(msg)


def prod(shape) -> int:
    return math.prod(int(d) for d in shape)


def same_shape(s: list[Shape], a: dict[str, Any]) -> Shape:
    return tuple(s[0])


def elementwise_macs(i, o, a) -> int:
    return prod(o)


def window_out(size: int, k: int, stride: int, pad: int, dil: int) -> int:
    """Output length of a sliding window (conv or pool) over ``size`` positions."""
    out = (size + pad - dil * (k - 1) - 1) // stride + 1
    if out < 1:
        fail(f"window of {k} (dilation {dil}) does not fit input size {size} with padding {pad}")
    return out


def check_window(op: str, a: dict[str, Any]) -> None:
    """A 2-D pool's ``kernel`` and ``stride`` are [h, w] pairs (required attributes, so
    ``resolve_attrs`` has no default to measure them by; a file may give one number)."""
    for key in ("kernel", "stride"):
        if len(a[key]) != 2:
            fail(f"{op}: attribute {key!r} must be [h, w], got {a[key]!r}")


def check_axis(axis: int, rank: int) -> int:
    """``axis`` made non-negative; the batch axis is refused (kernels run per sample)."""
    if not -rank <= axis < rank:
        fail(f"axis {axis} out of range for rank {rank}")
    axis %= rank
    if axis == 0:
        fail("operating along the batch axis is not supported")
    return axis


def resolve_attrs(spec: OpDef, attrs: dict[str, Any]) -> dict[str, Any]:
    """Attributes with defaults filled in; unknown or missing attributes are an error."""
    op = spec.name
    unknown = set(attrs) - set(spec.attrs)
    if unknown:
        fail(f"op {op!r} has no attribute(s) {sorted(unknown)}; it takes {sorted(spec.attrs)}")
    out = {}
    for key, default in spec.attrs.items():
        if key in attrs:
            out[key] = attrs[key]
        elif default is REQUIRED:
            fail(f"op {op!r} needs attribute {key!r}")
        else:
            out[key] = default
        _check_attr_type(op, key, out[key], default)
    if out.get("activation", "none") not in ACTIVATIONS:
        fail(f"op {op!r}: activation must be one of {ACTIVATIONS}, got {out['activation']!r}")
    return out


def _check_attr_type(op, key, value, default):
    """Attributes come from files too: list attributes must be int lists of the right length."""
    if isinstance(default, list) or (default is REQUIRED and key in ("kernel", "stride", "shape")):
        ok = isinstance(value, list) and all(type(v) is int for v in value)
        if ok and isinstance(default, list):
            ok = len(value) == len(default)
        if ok and key in ("stride", "dilation", "kernel"):
            ok = all(v >= 1 for v in value) and len(value) in (1, 2)
        if ok and key == "padding":
            ok = all(v >= 0 for v in value)
        if not ok:
            fail(f"op {op!r}: attribute {key!r} must be a list of valid ints, got {value!r}")
    elif isinstance(default, bool):
        if type(value) is not bool:
            fail(f"op {op!r}: attribute {key!r} must be a bool, got {value!r}")
    elif isinstance(default, int) or key == "axis":
        if type(value) is not int or (key == "groups" and value < 1):
            fail(f"op {op!r}: attribute {key!r} must be an int, got {value!r}")
    elif isinstance(default, float):
        if type(value) not in (int, float) or not math.isfinite(value):
            fail(f"op {op!r}: attribute {key!r} must be a finite number, got {value!r}")
    elif isinstance(default, str) and not isinstance(value, str):
        fail(f"op {op!r}: attribute {key!r} must be a string, got {value!r}")
