"""The integer ops of int8 spiking Graphs, and how op modules declare their spiking forms.

``edgekit.quant.spiking`` turns a float spiking Graph into one where nothing rounds inside the
network, and says so with its own ops where the float ones would mean something else:

- ``sum_pool2d``: a window's integer sum (an average pool's int8 spiking form: int32, in the
  input's scale over the window size, which ``edgekit.quantize`` sets);
- ``global_sum``: the integer sum over H and W (a global average pool's);
- ``scaled_add``: a residual add of spikes and a layer's current, ``spikes * multiplier +
  current`` in int32 (``numerics.params.scaled_add_params``: the quantizer picks the current's
  weight scale so that the two scales differ by this integer).

They exist only in int8 spiking Graphs (``OpDef.int8_spiking``, checked by validation), and
their references compute on the integers themselves (exact in float64). The spiking backends
(``spiking``, ``spiking_int8``, ``quant_spiking``, ``onnx_spiking``, ``c_spiking``, contracts
in ``backends.py``) are registered by each op's own module; the helpers at the end are what
those modules share.
"""

from __future__ import annotations

import numpy as np

from edgekit.ops import declare
from edgekit.ops.schema import REQUIRED, OpDef, check_window, fail, prod, window_out
from edgekit.ops.util import finish, windows

SPIKING_BACKENDS = ("spiking", "spiking_int8", "quant_spiking", "onnx_spiking", "c_spiking")
_OTHER_BACKENDS = ("float32", "int8", "torch", "onnx_import", "tflite", "onnx", "c", "gpu",
                   "learn", "spiking", "quant_spiking")


def _sum_pool_shape(s, a):
    x = s[0]
    if len(x) != 4:
        fail(f"sum_pool2d expects NCHW input, got {x}")
    check_window("sum_pool2d", a)
    pt, pl, pb, pr = a["padding"]
    kh, kw = a["kernel"]
    if max(pt, pb) * 2 > kh or max(pl, pr) * 2 > kw:
        fail(f"pool padding {a['padding']} must be at most half the kernel {a['kernel']}")
    return (x[0], x[1], window_out(x[2], kh, a["stride"][0], pt + pb, 1),
            window_out(x[3], kw, a["stride"][1], pl + pr, 1))


sum_pool2d = declare(OpDef(
    "sum_pool2d", (1, 1), {"kernel": REQUIRED, "stride": REQUIRED, "padding": [0, 0, 0, 0]},
    _sum_pool_shape, lambda i, o, a: prod(o) * prod(a["kernel"]), int8_spiking=True,
    reference=lambda x, *, kernel, stride, padding: finish(
        windows(x, kernel, stride, padding, [1, 1], 0.0).sum(axis=-1)),
    doc="integer sum over each window (zero padding adds nothing); padding is [top, left, "
        "bottom, right]"))


def _global_shape(s, a):
    if len(s[0]) != 4:
        fail(f"global_sum expects NCHW input, got {s[0]}")
    return (s[0][0], s[0][1], 1, 1)


global_sum = declare(OpDef(
    "global_sum", (1, 1), {}, _global_shape, lambda i, o, a: prod(i[0]), int8_spiking=True,
    reference=lambda x: finish(x.astype(np.float64).sum(axis=(2, 3), keepdims=True)),
    doc="integer sum over H and W keeping them as 1"))


def _scaled_add_shape(s, a):
    if tuple(s[0]) != tuple(s[1]):
        fail(f"scaled_add adds spikes and a current of one shape, got {s[0]} and {s[1]}")
    if type(a["multiplier"]) is not int or a["multiplier"] < 1:
        fail(f"scaled_add's multiplier must be a positive int, got {a['multiplier']!r}")
    return tuple(s[0])


scaled_add = declare(OpDef(
    "scaled_add", (2, 2), {"multiplier": REQUIRED}, _scaled_add_shape, int8_spiking=True,
    reference=lambda spikes, current, *, multiplier: finish(
        spikes.astype(np.float64) * multiplier + current),
    doc="spikes * multiplier + current (a residual add of an int8 spiking Graph), int32"))

_INTEGER = ("an integer op of int8 spiking Graphs only: edgekit.quantize makes it from a float "
            "spiking Graph's {source}")
for _op, _source in ((sum_pool2d, "avgpool2d"), (global_sum, "global_avgpool"),
                     (scaled_add, "residual add")):
    for _backend in _OTHER_BACKENDS:
        _op.unsupported(_backend, _INTEGER.format(source=_source))


# --- int8 runtime ------------------------------------------------------------------------------

@sum_pool2d.implements("spiking_int8")
def _sum_pool_int8(ins, out, *, kernel, stride, padding):
    from edgekit.runtime.kernels import int8_pool
    from edgekit.runtime.registry import bind

    return bind(int8_pool.sum_pool2d, ins[0], tuple(kernel), tuple(stride), tuple(padding[:2]),
                out)


@global_sum.implements("spiking_int8")
def _global_sum_int8(ins, out):
    from edgekit.runtime.kernels import int8_pool
    from edgekit.runtime.registry import bind

    x = ins[0]
    return bind(int8_pool.row_sums, x.reshape(x.shape[0] * x.shape[1], -1), out.reshape(-1))


@scaled_add.implements("spiking_int8")
def _scaled_add_int8(ins, out, *, multiplier):
    from edgekit.runtime.kernels import spiking
    from edgekit.runtime.registry import bind

    return bind(spiking.scaled_add, ins[0].reshape(-1), np.int32(multiplier),
                ins[1].reshape(-1), out.reshape(-1))


# --- unrolled ONNX (converters.snn_onnx): integers ONNX Runtime computes exactly ----------------

@sum_pool2d.implements("onnx_spiking")
def _sum_pool_onnx(e, step, node):
    """The window sum as a depthwise float Conv by ones (exact below 2^24, proved here), cast
    to int32."""
    a, x = node.attrs, node.inputs[0]
    channels = e.graph.tensors[x].shape[1]
    e.bounds[node.outputs[0]] = bound = prod(a["kernel"]) * e.bound(x)
    e.exact(node, bound, "its window sum")
    ones = e.once(f"{node.outputs[0]}/ones",
                  lambda: np.ones((channels, 1, *a["kernel"]), np.float32))
    y = e.add("Conv", [e.cast(step.inputs[0], "FLOAT"), ones], strides=a["stride"],
              pads=a["padding"], group=channels)
    e.cast(y, "INT32")


@global_sum.implements("onnx_spiking")
def _global_sum_onnx(e, step, node):
    x = node.inputs[0]
    e.bounds[node.outputs[0]] = prod(e.graph.tensors[x].shape[2:]) * e.bound(x)
    e.add("ReduceSum", [e.cast(step.inputs[0], "INT32"), e.const(np.int64([2, 3]))],
          keepdims=1)


@scaled_add.implements("onnx_spiking")
def _scaled_add_onnx(e, step, node):
    m = e.const(np.int32(node.attrs["multiplier"]))
    e.add("Add", [e.add("Mul", [e.cast(step.inputs[0], "INT32"), m]), step.inputs[1]])


# --- firmware C (converters.to_c_snn) ----------------------------------------------------------

@sum_pool2d.implements("c_spiking")
def _sum_pool_c(w, i, node):
    x, y = node.inputs[0], node.outputs[0]
    struct = w.struct("ek_pool_t", i, w.pool_fields(node, count_include_pad=1))
    return f"ek_sum_pool2d_{w.suffix(x)}({struct}, {w.at(x)}, {w.at(y)})"


@global_sum.implements("c_spiking")
def _global_sum_c(w, i, node):
    x = node.inputs[0]
    channels = w.shape(x)[1]
    return (f"ek_global_sum_{w.suffix(x)}({channels}, {w.size(x) // channels}, {w.at(x)}, "
            f"{w.at(node.outputs[0])})")


@scaled_add.implements("c_spiking")
def _scaled_add_c(w, i, node):
    spikes, current = node.inputs
    return (f"ek_scaled_add_s32({w.size(spikes)}, {w.at(spikes)}, {node.attrs['multiplier']}, "
            f"{w.at(current)}, {w.at(node.outputs[0])})")


# --- what op modules share to declare their spiking forms -------------------------------------

def no_spiking_form(op: OpDef, reason: str, backends=SPIKING_BACKENDS) -> None:
    """Declare that ``op`` has no form on the spiking ``backends``, for ``reason``."""
    for backend in backends:
        op.unsupported(backend, reason)


def same_every_step(op: OpDef, backends=("spiking",)) -> None:
    """``op`` runs in spiking Graphs (of the kinds ``backends`` name) as in float32 ones: it
    keeps no state, gains nothing from events and moves any dtype, so its float32 kernel
    (registered before this call, in its module) is its kernel at every step."""
    impl = op.impls.get("float32")
    if impl is None:
        raise ValueError(f"op {op.name!r}: register its float32 kernel before same_every_step")
    for backend in backends:
        op.implements(backend, **impl.options)(impl.fn)


def synapse(op: OpDef, prepare, scratch=None) -> None:
    """``op`` is a synapse layer (weights between neurons). Fed by spikes it runs ``prepare``'s
    event-driven kernel, in float32 spiking Graphs and in int8 ones alike (numba compiles it for
    int8 and int32 inputs, summing into int32), and the schedule counts its synaptic operations
    (``event=True``); the spiking quantizer gives it int8 weights and an int32 current
    (``edgekit.quant.spiking.quantize_synapse``)."""
    for backend in ("spiking", "spiking_int8"):
        op.implements(backend, scratch=scratch, event=True)(prepare)

    @op.implements("quant_spiking")
    def quantize(g, node, float_params, per_channel, partners):
        from edgekit.quant.spiking import quantize_synapse

        quantize_synapse(g, node, float_params, per_channel, partners)
