"""Float <-> int8 at a Session's edge, one rule for every backend.

Every int8 Session (edgekit's runtime, ONNX Runtime, LiteRT, tflite-micro, the firmware)
converts a float input and an int8 output with these two functions, so any difference between
backends comes from inside the model, never from how the edges were rounded. Rounding is half
away from zero (as TFLite's ``std::round``), not numpy's half to even. ``graph_feeds`` and
``graph_results`` apply them, with the checks every Session shares, to its inputs and outputs.

Those checks are the edge of every Session: real numbers only (no bool, complex, strings or
objects), the Graph's per-sample shape, and finite values. A NaN or inf reaching an int8 model
is worst of all: the quantizer clamps it to an ordinary int8 value and the model answers with
confidence; a float32 model propagates it. So both refuse non-finite inputs by default, and a
float32 Graph runs them only when the caller says ``allow_nonfinite=True``. The same holds
for outputs (``require_finite_outputs``): a NaN or inf computed from finite inputs (weights
too large for float32, log of a negative) is refused, not handed on as an answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.graph import Graph, QuantParams
from edgekit.spiking import is_spiking


def quantize_array(x: np.ndarray, quant: QuantParams) -> np.ndarray:
    """float -> int8 with the tensor's per-tensor ``scale`` and ``zero_point`` (one numba pass:
    at batch 1 the numpy version cost more than the int8 model it feeds)."""
    x = np.asarray(x)
    out = np.empty(x.shape, np.int8)
    quantizer(quant)(np.ascontiguousarray(x).reshape(-1), out.reshape(-1))
    return out


def quantizer(quant: QuantParams) -> Callable[[np.ndarray, np.ndarray], None]:
    """``quantize_array`` bound once to a tensor's parameters, writing a flat contiguous float
    array into a flat int8 one: the edgekit runtime quantizes straight into its arena, with one
    numba call and no per-call lookups."""
    from edgekit.runtime.kernels.int8_elementwise import quantize

    scale, zero_point = float(quant.scale[0]), int(quant.zero_point[0])
    return lambda x, out: quantize(x, scale, zero_point, out)


def dequantize_array(q: np.ndarray, quant: QuantParams) -> np.ndarray:
    """int8 -> float: ``(q - zero_point) * scale`` in float64, rounded once to float32."""
    q = np.asarray(q)
    return dequantizer(quant)(q if q.dtype == np.int8 else q.astype(np.int32))


def dequantizer(quant: QuantParams) -> Callable[[np.ndarray], np.ndarray]:
    """``dequantize_array`` bound once to a tensor's parameters (one numba pass, as
    ``quantizer``); the result is a new array."""
    from edgekit.runtime.kernels.int8_elementwise import dequantize

    scale, zero_point = float(quant.scale[0]), int(quant.zero_point[0])

    def run(q: np.ndarray) -> np.ndarray:
        out = np.empty(q.shape, np.float32)
        dequantize(np.ascontiguousarray(q).reshape(-1), zero_point, scale, out.reshape(-1))
        return out

    return run


def graph_feeds(graph: Graph, inputs: Any, raw: bool = False,
                allow_nonfinite: bool = False) -> dict[str, np.ndarray]:
    """A Session's inputs (one array, a list in input order, or a dict by name) checked against
    the Graph — real numbers, shapes with any batch size, the same for all, finite values unless
    ``allow_nonfinite`` (float32 inputs only: an int8 one cannot hold NaN or inf) — and in the
    Graph's dtypes: float data for an int8 input is quantized; with ``raw=True`` int8 inputs
    must already be int8."""
    names = graph.inputs
    if isinstance(inputs, dict):
        if set(inputs) != set(names):
            raise EdgekitError(f"got inputs {sorted(inputs)}, the graph takes {names}")
        values = [inputs[name] for name in names]
    elif isinstance(inputs, (list, tuple)):
        if len(inputs) != len(names):
            raise EdgekitError(f"got {len(inputs)} inputs, the graph takes {names}")
        values = list(inputs)
    elif len(names) == 1:
        values = [inputs]
    else:
        raise EdgekitError(f"the graph takes {len(names)} inputs {names}: pass a dict or list")
    feeds = {name: _feed(graph, name, _array(name, value), raw, allow_nonfinite)
             for name, value in zip(names, values, strict=True)}
    batches = {x.shape[0] for x in feeds.values()}
    if len(batches) > 1:
        raise EdgekitError(f"inputs have different batch sizes {sorted(batches)}")
    return feeds


def _array(name: str, value: Any) -> np.ndarray:
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as err:  # ragged nested lists
        raise EdgekitError(f"input {name!r}: not an array of numbers ({err})") from None


# dtype kinds a Session refuses, named for the user; everything else is a real number
_NOT_REAL = {"b": "booleans", "c": "complex numbers", "O": "Python objects", "U": "strings",
             "S": "bytes", "V": "structured records", "M": "dates", "m": "time spans"}


def _feed(graph: Graph, name: str, x: np.ndarray, raw: bool,
          allow_nonfinite: bool) -> np.ndarray:
    info = graph.tensors[name]
    if x.dtype.kind in _NOT_REAL:
        takes = info.dtype if raw or info.dtype != "int8" else "floats, quantized to int8"
        raise EdgekitError(f"input {name!r}: got {x.dtype} data ({_NOT_REAL[x.dtype.kind]}); "
                           f"the model takes real numbers ({takes})")
    if x.ndim != len(info.shape) or x.shape[1:] != info.shape[1:] or x.shape[0] < 1:
        expected = "(" + ", ".join(["N", *map(str, info.shape[1:])]) + ")"
        hint = "; one sample needs a batch axis: x[None]" if x.shape == info.shape[1:] else ""
        raise EdgekitError(f"input {name!r}: expected shape {expected}, got {x.shape}{hint}")
    if info.dtype == "int8" and not raw:
        _require_finite(name, x, False, "an int8 model cannot represent them: quantized, they "
                                       "would become ordinary values and give a confident output")
        return quantize_array(x, info.quant)
    if info.dtype == "int8" and x.dtype != np.int8:
        raise EdgekitError(f"input {name!r}: raw=True takes int8 data, got {x.dtype}")
    if not np.can_cast(x.dtype, info.dtype, "same_kind"):
        raise EdgekitError(f"input {name!r}: expected {info.dtype} data, got {x.dtype}")
    if info.dtype == "int32" and info.quant is None:  # indices (an int8 SNN's currents have it)
        _require_indices(graph, name, x)
    given = x.dtype
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf: refused below
        x = np.ascontiguousarray(x, dtype=info.dtype)
    _require_finite(name, x, allow_nonfinite, ("" if given == x.dtype else
                                               f"as {info.dtype}, from {given}; ")
                    + "pass allow_nonfinite=True to run them anyway")
    return x


def index_rows(graph: Graph, name: str) -> int:
    """How many rows the int32 indices of graph input ``name`` may pick: the fewest of the
    tables it indexes (``OpDef.indexed`` ops read them as their first input); an input no
    table reads may hold any int32."""
    from edgekit.ops import OPS

    return min((graph.tensors[n.inputs[1]].shape[0] for n in graph.nodes
                if OPS[n.op].indexed and n.inputs[0] == name), default=2**31)


def _require_indices(graph: Graph, name: str, x: np.ndarray) -> None:
    """Raise, naming input ``name``, unless every index in ``x`` lies in [0, rows): no backend
    may read outside its table (the kernels clamp, so a wrong row is all one could get)."""
    rows = index_rows(graph, name)
    bad = (x < 0) | (x >= rows)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise EdgekitError(f"input {name!r} holds {int(bad.sum())} index(es) outside [0, {rows})"
                           f" (the first, {x[first]}, at index {first}): an index picks a row "
                           "of its table")


def _require_finite(name: str, x: np.ndarray, allow: bool, advice: str) -> None:
    """Raise, naming input ``name``, if float ``x`` holds a NaN or inf (unless ``allow``): one
    ``np.isfinite`` pass, a few µs at batch 1."""
    if allow or x.dtype.kind != "f":
        return
    finite = np.isfinite(x)
    if not finite.all():
        first = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise EdgekitError(f"input {name!r} holds {x.size - int(finite.sum())} NaN or inf "
                           f"value(s) (the first at index {first}); {advice}")


def require_finite_outputs(names: list[str], results: Any, allow: bool) -> Any:
    """``results`` (one output or the list, as a Session returns them), once no float output
    holds a NaN or inf, unless ``allow``. From finite inputs one means the model overflowed
    float32 (a weight or attribute too large for it) or left a function's domain (log or sqrt
    of a negative): no answer, though argmax and accuracies would read one from it."""
    if allow:
        return results
    for name, y in zip(names, results if isinstance(results, list) else [results], strict=True):
        finite = np.isfinite(y) if y.dtype.kind == "f" else None
        if finite is not None and not finite.all():
            first = tuple(int(i) for i in np.argwhere(~finite)[0])
            raise EdgekitError(
                f"output {name!r} holds {y.size - int(finite.sum())} NaN or inf value(s) "
                f"(the first at index {first}) computed from finite inputs: the model "
                "overflows float32 or leaves a function's domain there (a weight or "
                "attribute too large, log or sqrt of a negative); pass allow_nonfinite=True "
                "to get them anyway")
    return results


def graph_results(graph: Graph, outs: list[np.ndarray], raw: bool = False) -> Any:
    """A Session's outputs (in the Graph's output order) for the caller: int8 outputs
    dequantized unless ``raw`` (an int8 spiking Graph's are int32 sums over its time steps:
    ``time_average``); one array for a one-output Graph, else the list."""
    if is_spiking(graph) and graph.metadata.get("quantized") and not raw:
        outs = [time_average(y, graph.tensors[name].quant, graph.metadata["timesteps"])
                for name, y in zip(graph.outputs, outs, strict=True)]
    elif not raw:
        outs = [y if graph.tensors[name].dtype != "int8"
                else dequantize_array(y, graph.tensors[name].quant)
                for name, y in zip(graph.outputs, outs, strict=True)]
    return outs[0] if len(outs) == 1 else outs


def time_average(total: np.ndarray, quant: QuantParams, steps: int) -> np.ndarray:
    """An int8 SNN's output: the integer sum over its ``steps`` time steps (per tensor, or per
    channel along axis 1) times ``scale / steps``, that factor rounded once to float32 and the
    product made in float32."""
    factor = (np.asarray(quant.scale, np.float64) / steps).astype(np.float32)
    if quant.axis is not None:
        factor = factor.reshape(-1, *[1] * (total.ndim - 2))
    return np.asarray(total, np.float32) * factor


def dequantize_layers(graph: Graph, layers: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-layer outputs (by tensor name) in real units: int8 tensors dequantized."""
    return {name: y if graph.tensors[name].dtype != "int8"
            else dequantize_array(y, graph.tensors[name].quant) for name, y in layers.items()}
