"""Pointwise nonlinearities ``y = f(x)``: everything one of them needs on every backend, made
from its float function, so that each op is a small module of its own (``sigmoid.py``, ...).

``fn`` is f written once in numpy, float64 in and out, with the op's float attributes as
further arguments in declaration order. It is the op's numpy reference; numba compiles the same
code for one element as the edgekit runtime's float32 kernel
(``edgekit.runtime.kernels.pointwise``); and it fills the 256-entry int8 table
(``numerics.params.lut_params``) that the int8 runtime (``lut_i8``), the C firmware
(``ek_lut_i8``) and the TFLite writer (a GATHER) all read as it is, which makes the three equal
bit for bit. ``fn`` may use only what numba compiles for a scalar as numpy does for an array:
arithmetic, numpy ufuncs, and ``where`` and ``erf`` below. An op with a string attribute (gelu's
``approximate``) gives one function per value: ``fn`` is then a dict keyed by the value.

The op's module says the rest, as keywords of ``pointwise`` (each registers one backend) or
with ``op.implements`` for what they do not cover: ATen and ONNX names, the TFLite float builtin
or composition, the ONNX form (a builtin, or a function of the model's own in domain
``ai.edgekit`` when ONNX has none), the torch function of the gpu target, and the derivative
that on-device learning trains through, or why it cannot.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from edgekit.ops import declare
from edgekit.ops.backends import ONNX_DOMAIN
from edgekit.ops.schema import OpDef, fail, same_shape
from edgekit.ops.util import finish

SPIKING = ("rate-coded spikes stand for ReLU-like activations only: conversion turns ReLU and "
           "ReLU6 into neurons and has no spiking form of other nonlinearities")
_SPIKING_BACKENDS = ("spiking", "spiking_int8", "onnx_spiking", "c_spiking", "quant_spiking")
NOT_FROM_OUTPUT = ("edgekit.learn has no derivative for it (its module gives pointwise() neither "
                   "grad nor grad_x)")


def where(cond, a, b):
    """``np.where`` (numba kernels get a scalar twin)."""
    return np.where(cond, a, b)


def erf(x):
    """The error function (numpy has none; numba kernels use ``math.erf``)."""
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def pointwise(name: str, fn: Callable | dict[str, Callable], *, doc: str,
              attrs: dict[str, Any] | None = None, check: Callable[[dict], None] | None = None,
              torch: tuple[str, ...] = (), onnx_import: tuple[str, ...] = (),
              onnx: str | Callable | dict[str, Callable] | None = None,
              tflite: str | Callable | None = None, gpu: Callable | None = None,
              grad: Callable | None = None, grad_x: Callable | None = None,
              learn: str | None = None) -> OpDef:
    """Declare pointwise op ``name`` computing ``fn`` and register it on every backend that
    follows from ``fn`` (reference, float32 and int8 runtime, C, TFLite int8; spiking ones
    declared unsupported) and on those the keywords give:

    - ``torch``: ATen names; positional arguments after the input, then keyword arguments,
      become the op's attributes in declaration order.
    - ``onnx_import``: ONNX op types whose attributes of the op's attribute names become the
      op's (the ``ai.edgekit`` function ``onnx`` writes is added).
    - ``onnx``: an ONNX op type without attributes, or ``body(f, x, **attrs)`` making the
      function the model defines for the op (``f.add``, ``f.const``, ``f.attr``; a dict of
      bodies with a string attribute).
    - ``tflite``: a float builtin's code, or ``build(c, x, **attrs)`` composing builtins
      (``c.op``, ``c.result``, ``c.options``); int8 is always the table.
    - ``gpu``: ``fn(torch, x, **attrs)`` on torch tensors.
    - ``grad``: ``grad(y, dy, *float attrs)``, ``dy`` times the derivative written from the
      output ``y``, in the same numpy as ``fn``; or ``grad_x``: the same written from the input
      ``x``, where the output does not determine it (learning then keeps the pre-activations);
      or ``learn``: why on-device learning cannot train through the op.
    """
    attrs = dict(attrs or {})

    def infer(shapes, a):
        if isinstance(fn, dict) and _variant(a) not in fn:
            fail(f"op {name!r}: {_string_attr(a)!r} must be one of {sorted(fn)}, "
                 f"got {_variant(a)!r}")
        if check is not None:
            check(a)
        return same_shape(shapes, a)

    op = declare(OpDef(name, (1, 1), attrs, infer, doc=doc,
                       reference=lambda x, **a: finish(_float64(fn, a)(x))))
    _runtime(op, fn)
    _writers(op, fn, onnx, tflite)
    _importers(op, torch, onnx_import, onnx)
    if gpu is not None:
        op.implements("gpu")(lambda x, **a: gpu(_torch(), x, **a))
    _learning(op, fn, grad, grad_x, learn)
    for backend in _SPIKING_BACKENDS:
        op.unsupported(backend, SPIKING)
    return op


def _string_attr(attrs: dict) -> str:
    return next(k for k, v in attrs.items() if isinstance(v, str))


def _variant(attrs: dict) -> str:
    return attrs[_string_attr(attrs)]


def _bound(fn, attrs: dict) -> tuple[Callable, tuple[float, ...]]:
    """The function for ``attrs`` (the variant a string attribute picks) and its float
    parameters in declaration order."""
    if isinstance(fn, dict):
        fn = fn[_variant(attrs)]
    return fn, tuple(float(v) for v in attrs.values() if not isinstance(v, str))


def _float64(fn, attrs: dict) -> Callable[[np.ndarray], np.ndarray]:
    """f on float64 arrays (NaN and inf where f has them, without numpy's warnings)."""
    f, params = _bound(fn, attrs)

    def apply(x):
        with np.errstate(all="ignore"):
            return f(np.asarray(x, np.float64), *params)

    return apply


def _torch():
    import torch

    return torch


def _table(fn, node_attrs: dict, quant) -> np.ndarray:
    from edgekit.numerics.params import lut_params

    return lut_params(quant[0], quant[-1], _float64(fn, node_attrs)).table


def _runtime(op: OpDef, fn) -> None:
    @op.implements("float32")
    def _(ins, out, **attrs):
        from functools import partial

        from edgekit.runtime.kernels.pointwise import ufunc

        f, params = _bound(fn, attrs)
        return partial(ufunc(f, len(params)), ins[0].reshape(-1), *map(np.float64, params),
                       out=out.reshape(-1))

    @op.implements("int8")
    def _(ins, out, *, quant, **attrs):
        from edgekit.runtime.kernels.int8_elementwise import lut_i8
        from edgekit.runtime.registry import bind

        return bind(lut_i8, ins[0].reshape(-1), _table(fn, attrs, quant), out.reshape(-1))


def _writers(op: OpDef, fn, onnx, tflite) -> None:
    @op.implements("c")
    def _(w, i, node):
        table = w.array("int8_t", _table(fn, node.attrs, w.quant(node)))
        return (f"ek_lut_i8({w.size(node.outputs[0])}, {table}, {w.at(node.inputs[0])}, "
                f"{w.at(node.outputs[0])});")

    @op.implements("tflite")
    def _(w, node):
        if w.int8:
            w.lut(node, _table(fn, node.attrs, [w.graph.tensors[t].quant
                                                for t in (*node.inputs, *node.outputs)]))
        elif isinstance(tflite, str):
            w.unary(node, tflite)
        else:
            w.composed(node, lambda c, x: tflite(c, x, **node.attrs))

    if isinstance(onnx, str):
        op.implements("onnx")(lambda e, node, ins: e.add(onnx, ins))
    elif onnx is not None:
        @op.implements("onnx")
        def _(e, node, ins):
            body = onnx[_variant(node.attrs)] if isinstance(onnx, dict) else onnx
            return e.function(_function_name(op.name, onnx, node.attrs), ins,
                              lambda f, x: body(f, x, **node.attrs), **node.attrs)


def _function_name(name: str, onnx, attrs: dict) -> str:
    """The op type of the ``ai.edgekit`` function: the op's name, and its variant's."""
    return f"{name}_{_variant(attrs)}" if isinstance(onnx, dict) else name


def _importers(op: OpDef, torch_names, onnx_types, onnx) -> None:
    name, declared = op.name, list(op.attrs)

    if torch_names:
        @op.implements("torch", names=tuple(torch_names))
        def _(c, x, *args, **kwargs):
            values = {**dict(zip(declared, args)), **{k: kwargs[k] for k in declared
                                                      if k in kwargs}}
            return c.emit(name, [x], _typed(op, values))

    if onnx is not None and not isinstance(onnx, str):
        variants = ([{_string_attr(op.attrs): key} for key in onnx] if isinstance(onnx, dict)
                    else [{}])
        onnx_types = (*onnx_types, *(f"{ONNX_DOMAIN}.{_function_name(name, onnx, v)}"
                                     for v in variants))
    if onnx_types:
        @op.implements("onnx_import", names=tuple(onnx_types))
        def _(n, x, *_):
            return n.emit(name, [x], _typed(op, {k: n.get(k) for k in declared
                                                 if n.get(k) is not None}))


def _typed(op: OpDef, values: dict) -> dict:
    """Attribute values read from a source model, as the types the op declares."""
    return {k: type(op.attrs[k])(v) for k, v in values.items()}


def _learning(op: OpDef, fn, grad, grad_x, learn) -> None:
    if grad is None and grad_x is None:
        op.unsupported("learn", learn or NOT_FROM_OUTPUT)
        return

    @op.implements("learn")
    def _(blocks, graph, node, where):
        from edgekit.learn.blocks import Pointwise, add_pointwise
        from edgekit.runtime.kernels.pointwise import ufunc

        f, params = _bound(fn, node.attrs)
        d = grad if grad is not None else _bound(grad_x, node.attrs)[0]
        forward, backward = ufunc(f, len(params)), ufunc(d, 1 + len(params))
        params = tuple(map(np.float64, params))
        add_pointwise(blocks, Pointwise(lambda x, out: forward(x, *params, out=out),
                                        lambda v, dy, out: backward(v, dy, *params, out=out),
                                        from_input=grad is None), where)
