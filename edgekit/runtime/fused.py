"""One compiled function per Program: the whole schedule, and the edge, in one numba call.

A Program runs its steps from Python: every step is a call into a numba kernel whose arguments
are unboxed again each time (0.2-0.6 µs a step), and ``Executor.run`` around it checks, copies
and converts the input and output with a few numpy calls (about 7 µs). At batch 1 on small
networks that was a third of the time. ``Fused`` writes the Program out as the source of one
``@njit`` function that makes the same kernel calls with the same arguments, in the same order
(so its results are the Program's, bit for bit), and does the edge in the same function:

- the arrays every call reads or writes (arena views, weights, the tables prepare built) are
  rebuilt inside from their addresses, held in one int64 array: one argument to unbox, not one
  per array. Nothing is copied, so a weight changed in place (``edgekit.learn``) is seen;
- scalars and tuples of the calls are written into the source as literals;
- the input is checked finite and copied in (or quantized, with ``quant.edge``'s own kernel),
  the output copied out (or dequantized) and checked finite; anything unusual (a NaN, another
  dtype or shape, several inputs or outputs) goes back to ``Executor.run``'s ordinary path, which
  raises its usual errors.

The source holds no addresses, only offsets into that table, so it is written once per Graph and
batch size under the cache folder (``$EDGEKIT_CACHE/fused``, else ``~/.cache/edgekit/fused``),
named by its hash, atomically (safe with parallel processes), and numba caches the compiled
function next to it. Where that folder cannot be written, it compiles without a disk cache;
where anything cannot be fused (a step that is not a bound numba kernel call, a non-contiguous
view), the Program keeps running step by step. Compiling takes seconds, so a Program is
fused only once it has run ``Executor.fuse_after`` times.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.core.dispatcher import Dispatcher
from numba.extending import intrinsic

from edgekit.errors import EdgekitError
from edgekit.fileio import atomic_write_bytes
from edgekit.quant.edge import require_finite_outputs


@intrinsic
def _pointer(typingctx, address):
    """An int64 address as a void pointer, for ``numba.carray``."""
    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return types.voidptr(types.int64), codegen


class Unfusable(Exception):
    """A Program that cannot be written as one function (its steps keep running from Python)."""


def cache_dir() -> Path | None:
    """Where fused sources and numba's compiled copies go; None if no folder can be written."""
    root = os.environ.get("EDGEKIT_CACHE") or Path.home() / ".cache" / "edgekit"
    for path in (Path(root) / "fused", Path(tempfile.gettempdir()) / "edgekit-fused"):
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(path, os.W_OK):
            return path
    return None


def _literal(value) -> str:
    """A scalar or tuple argument as numba source with the same type."""
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        return repr(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, np.bool_):
        return f"np.bool_({bool(value)})"
    if isinstance(value, np.integer):
        return f"np.{type(value).__name__}({int(value)})"
    if isinstance(value, np.floating):
        return f"np.{type(value).__name__}({_float(float(value))})"
    if isinstance(value, tuple):
        return "(" + "".join(f"{_literal(v)}, " for v in value) + ")"
    raise Unfusable(f"argument of type {type(value).__name__}")


def _float(v: float) -> str:
    if math.isnan(v):
        return "np.nan"
    if math.isinf(v):
        return "np.inf" if v > 0 else "-np.inf"
    return repr(v)


def _kernel_name(kernel: Dispatcher) -> tuple[str, str]:
    """The module and name a kernel is imported by; only module-level kernels can be."""
    module, name = kernel.py_func.__module__, kernel.py_func.__name__
    if getattr(sys.modules.get(module), name, None) is not kernel:
        raise Unfusable(f"kernel {module}.{name} is not importable by name")
    return module, name


class _Source:
    """The generated function's text: the views it rebuilds, then its statements."""

    def __init__(self):
        self.views: list[str] = []
        self.body: list[str] = []
        self.arrays: list[np.ndarray] = []  # the distinct arrays, in the order of their names
        self._names: dict[tuple, str] = {}
        self.imports: dict[tuple[str, str], str] = {}

    def kernel(self, kernel) -> str:
        if not isinstance(kernel, Dispatcher):
            raise Unfusable("a step calls a Python function")
        return self.imports.setdefault(_kernel_name(kernel), f"k{len(self.imports)}")

    def array(self, a: np.ndarray) -> str:
        """The name of a view rebuilt from its address (C-contiguous views only)."""
        if not a.flags.c_contiguous:
            raise Unfusable("a non-contiguous view")
        key = (a.ctypes.data, a.shape, a.dtype.str)
        if key not in self._names:
            name = self._names[key] = f"a{len(self.arrays)}"
            self.views.append(f"    {name} = carray(_pointer(ptrs[{len(self.arrays)}]), "
                              f"{_literal(tuple(a.shape))}, np.{a.dtype.name})")
            self.arrays.append(a)
        return self._names[key]

    def call(self, kernel, *args) -> None:
        parts = [self.array(a) if isinstance(a, np.ndarray) else _literal(a) for a in args]
        if kernel is np.copyto and len(args) == 2 and args[0].size == args[1].size:
            self.body.append(f"    {parts[0]}.reshape(-1)[:] = {parts[1]}.reshape(-1)")
            return
        self.body.append(f"    {self.kernel(kernel)}({', '.join(parts)})")

    def text(self) -> str:
        imports = [f"from {m} import {n} as {alias}" for (m, n), alias in self.imports.items()]
        return "\n".join([
            "# Generated by edgekit.runtime.fused: one Program as one function.",
            f"# kernels: {_kernels_digest(tuple(sorted({m for m, _ in self.imports})))}",
            "import numpy as np", "from numba import carray, njit",
            "from edgekit.runtime.fused import _pointer, all_finite", *imports, "", "",
            "@njit(cache=True)", "def run(ptrs, x, out):", *self.views, *self.body, ""])


@functools.cache
def _kernels_digest(modules: tuple[str, ...]) -> str:
    """A hash of the kernels' source files, in the generated source: numba's cache of the
    fused function would not see a change to a kernel it calls, a new name does."""
    digest = hashlib.sha256()
    for module in (*modules, __name__):
        digest.update(Path(sys.modules[module].__file__).read_bytes())
    return digest.hexdigest()[:16]


@njit(cache=True)
def all_finite(x):
    """No NaN or inf in float32 ``x`` (flat): an exponent of all ones, found with integer ops
    that vectorize (an ``isfinite`` loop with an early exit cost 8 µs on 8k values, numpy's
    ``vdot`` screen 1)."""
    bits, bad = x.view(np.uint32), np.uint32(0)
    for i in range(bits.size):
        bad |= ((bits[np.uint64(i)] & np.uint32(0x7F800000)) + np.uint32(0x00800000)) \
            & np.uint32(0x80000000)
    return bad == 0


def _check_finite(src: _Source, flat: str, status: int) -> None:
    src.body += [f"    if not all_finite({flat}):", f"        return {status}"]


def write(graph, program, raw: bool) -> _Source:
    """The source of ``run(ptrs, x, out) -> status`` for ``program`` fed as ``Executor.run``
    feeds it one input: ``x`` C-contiguous in the edge's dtype (float32 for an int8 Graph
    unless ``raw``), ``out`` the new output array. Status 0: done; 1: a NaN or inf input
    (nothing ran); 2: a NaN or inf output."""
    from edgekit.runtime.kernels.int8_elementwise import dequantize, quantize

    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise Unfusable("more than one input or output")
    calls = [getattr(step, "calls", None) for step in program.steps]
    if any(c is None for c in calls):
        raise Unfusable("a step that is not bound kernel calls")
    src = _Source()
    x_info, y_info = graph.tensors[graph.inputs[0]], graph.tensors[graph.outputs[0]]
    x = src.array(program.arrays[graph.inputs[0]]) + ".reshape(-1)"
    y = src.array(program.arrays[graph.outputs[0]]) + ".reshape(-1)"
    if x_info.dtype == "float32" or x_info.dtype == "int8" and not raw:
        _check_finite(src, "x.reshape(-1)", 1)
    if x_info.dtype == "int8" and not raw:
        q = x_info.quant
        src.body.append(f"    {src.kernel(quantize)}(x.reshape(-1), {_float(float(q.scale[0]))}, "
                        f"{int(q.zero_point[0])}, {x})")
    else:
        src.body.append(f"    {x}[:] = x.reshape(-1)")
    for step_calls in calls:
        for kernel, *args in step_calls:
            src.call(kernel, *args)
    if y_info.dtype == "int8" and not raw:
        q = y_info.quant
        src.body.append(f"    {src.kernel(dequantize)}({y}, {int(q.zero_point[0])}, "
                        f"{_float(float(q.scale[0]))}, out.reshape(-1))")
    else:
        src.body.append(f"    out.reshape(-1)[:] = {y}")
        if y_info.dtype == "float32":
            _check_finite(src, "out.reshape(-1)", 2)
    src.body.append("    return 0")
    return src


def compile_source(text: str):
    """The ``run`` of a generated source: loaded from the cache folder (written there once,
    atomically, under its hash; numba keeps the compiled code beside it), or from a
    temporary file where no cache folder can be written."""
    digest = hashlib.sha256(text.encode()).hexdigest()[:20]
    folder = cache_dir()
    if folder is None:
        folder = Path(tempfile.mkdtemp(prefix="edgekit-fused-"))
    path = folder / f"fused_{digest}.py"
    if not path.exists():
        atomic_write_bytes(path, text.encode())
    name = f"edgekit_fused_{digest}"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return module.run


class Fused:
    """The compiled twin of one Program for one kind of call (raw or not)."""

    def __init__(self, graph, program, raw: bool):
        src = write(graph, program, raw)
        self.run_fn = compile_source(src.text())
        self.arrays = src.arrays  # keeps every view's memory alive as long as the function
        self.ptrs = np.array([a.ctypes.data for a in src.arrays], np.int64)
        out = program.arrays[graph.outputs[0]]
        self.out_shape = out.shape
        self.out_dtype = np.float32 if out.dtype == np.int8 and not raw else out.dtype

    def __call__(self, x: np.ndarray) -> tuple[int, np.ndarray]:
        out = np.empty(self.out_shape, self.out_dtype)
        return self.run_fn(self.ptrs, x, out), out


def fuse_after_default() -> int | None:
    """``$EDGEKIT_FUSE_AFTER``: ``run`` calls before a Program is fused (default 50; ``off``:
    never, every Program runs step by step)."""
    value = os.environ.get("EDGEKIT_FUSE_AFTER", "50").strip().lower()
    if value in ("off", "never", "none"):
        return None
    try:
        return max(int(value), 0)
    except ValueError:
        raise EdgekitError(f"EDGEKIT_FUSE_AFTER must be a number of calls or 'off', "
                           f"got {value!r}") from None


class Fuser:
    """An Executor's fused functions, one per batch size and kind of call, each built once its
    Program has run ``executor.fuse_after`` times that way (never if that is None)."""

    def __init__(self, executor):
        self.executor = executor
        self.counts: dict[tuple[int, bool], int] = {}
        self.fused: dict[tuple[int, bool], Fused | None] = {}  # None: cannot be fused
        self.why_not: dict[tuple[int, bool], str] = {}

    def clear(self) -> None:
        self.counts.clear()
        self.fused.clear()
        self.why_not.clear()

    def run(self, x: np.ndarray, raw: bool) -> np.ndarray | None:
        """``Executor.run(x, raw)`` for one input array, or None where the ordinary path must
        answer: another dtype, shape or layout, not fused (yet), or a NaN or inf input."""
        edge = self.executor._edge
        single = edge.single
        if (single is None or len(edge.outputs) != 1 or x.ndim != len(single[1].shape)
                or x.shape[0] < 1):
            return None
        _, info, quantize = single
        if (x.dtype != (np.float32 if quantize and not raw else info.dtype)
                or x.shape[1:] != info.shape[1:] or not x.flags.c_contiguous):
            return None
        key = (x.shape[0], raw)
        fused = self.fused.get(key, False)
        if fused is False:
            count = self.counts[key] = self.counts.get(key, 0) + 1
            limit = self.executor.fuse_after
            if limit is None or count <= limit:
                return None
            fused = self.fused[key] = self._build(*key)
        if fused is None:
            return None
        status, out = fused(x)
        if status == 1:
            return None
        if status == 2:
            require_finite_outputs(self.executor.graph.outputs, out, False)
        return out

    def _build(self, batch: int, raw: bool) -> Fused | None:
        """The fused function, or None, with the reason kept in ``why_not`` (a Program that
        cannot be written as one function, or numba failing to compile it: the steps run)."""
        try:
            return Fused(self.executor.graph, self.executor.program(batch), raw)
        except Exception as err:  # noqa: BLE001 - any failure leaves the ordinary path
            self.why_not[(batch, raw)] = f"{type(err).__name__}: {err}"
            return None
