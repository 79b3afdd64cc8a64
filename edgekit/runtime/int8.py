"""int8 prepare functions: bind each op's integer kernel to its arrays once per batch size.

Everything derived from quantization parameters (per-channel multipliers and shifts, activation
bounds, zero-point-corrected biases, int16 weight copies) is computed here once; steps only run
kernels. The arithmetic is TFLite's (``docs/quantized-graph.md``) down to how each multiplier is
formed from the float32 scales a ``.tflite`` file stores, so that tflite-micro and this runtime
agree bit for bit: ``f32`` rounds every scale as the file would, and each op builds its real
multipliers in the precision (double or float) its tflite-micro kernel uses
(``edgekit.numerics.params``).

Ops that only move values (reshape, concat) reuse the float32 prepare functions, whose kernels
are exact on int8; softmax and layernorm run their float32 kernels between a dequantize and a
quantize.
"""

from __future__ import annotations

import math

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.graph import QuantParams
from edgekit.numerics.arith import quantize_multipliers
from edgekit.numerics.params import activation_bounds, f32
from edgekit.numerics.params import zero_point as _zp
from edgekit.runtime import float32
from edgekit.runtime.kernels import (
    int8_conv,
    int8_elementwise,
    int8_gemm,
    int8_pool,
    pool,
)
from edgekit.runtime.registry import Step, bind, kernel, register, sequence

ALIGN = 16


def _multipliers(reals: np.ndarray, channels: int) -> tuple[np.ndarray, np.ndarray]:
    m, s = quantize_multipliers(reals)
    return np.broadcast_to(m, (channels,)).copy(), np.broadcast_to(s, (channels,)).copy()


def check_shared(op: str, quant: list[QuantParams]) -> None:
    """Ops that only move values need their inputs and output quantized alike."""
    first = (quant[0].scale, quant[0].zero_point)
    if any((q.scale, q.zero_point) != first for q in quant[1:]):
        raise EdgekitError(f"int8 {op} needs its inputs and output to share one scale and zero "
                           f"point (docs/quantized-graph.md), got {[q.to_json() for q in quant]}")


def _nbytes(shape: tuple[int, ...], dtype: type) -> int:
    return math.prod(shape) * np.dtype(dtype).itemsize


def _aligned(nbytes: int) -> int:
    return -(-nbytes // ALIGN) * ALIGN


def carve(scratch: np.ndarray, *parts: tuple[tuple[int, ...], type]) -> list[np.ndarray]:
    """Consecutive aligned arrays of the given shapes and dtypes in one scratch buffer (an int8
    prepare function's ``scratch``, sized by ``scratch_bytes`` of the same parts)."""
    arrays, offset = [], 0
    for shape, dtype in parts:
        arrays.append(scratch[offset:offset + _nbytes(shape, dtype)].view(dtype).reshape(shape))
        offset += _aligned(_nbytes(shape, dtype))
    return arrays


def scratch_bytes(*parts: tuple[tuple[int, ...], type]) -> int:
    return sum(_aligned(_nbytes(shape, dtype)) for shape, dtype in parts)


# --- convolutions and linear -----------------------------------------------------------------

def _conv_parts(x_shape, w_shape, out_shape, groups, padding, stride, dilation) -> list[tuple]:
    """Per-sample scratch: with one input channel per output channel, the padded plane split
    by stride phase (int16) and its sums at the phase width (int32); for a pointwise
    convolution one plane of int32 sums; else the padded channels-last input less its zero
    point (int16) and one group's window rows (int16)."""
    channels, height, width = x_shape[1:]
    t, left, bottom, right = padding
    if w_shape[1] == 1:
        phases = float32.phases_shape(w_shape, out_shape, stride, dilation)
        return [(phases, np.int16), ((out_shape[2] * phases[2],), np.int32)]
    if float32.pointwise(w_shape, stride, padding, groups):
        return [((height * width,), np.int32)]
    return [((height + t + bottom, width + left + right, channels), np.int16),
            ((math.prod(out_shape[2:]), math.prod(w_shape[1:])), np.int16)]


def _conv_scratch(shapes, out_shape, *, groups, padding, stride, dilation, **_) -> int:
    return scratch_bytes(*_conv_parts(shapes[0], shapes[1], out_shape, groups, padding, stride,
                                       dilation))


def conv_multipliers(quant: list[QuantParams], channels: int, float_product: bool):
    """TFLite's per-channel ``s_in * s_w[c] / s_out`` in double; per-tensor FULLY_CONNECTED
    multiplies ``s_in * s_w`` in float32 first (GetQuantizedConvolutionMultipler). Public
    because ``converters.to_c`` must derive the firmware's multipliers exactly this way."""
    s_in, s_w, s_out = f32(quant[0].scale[0]), f32(quant[1].scale), f32(quant[-1].scale[0])
    product = f32(np.float32(s_in) * np.float32(s_w)) if float_product else s_in * s_w
    return _multipliers(product / s_out, channels)


def _with_bias(ins: list[np.ndarray]) -> list[np.ndarray]:
    if len(ins) < 3:
        raise EdgekitError("an int8 conv/linear needs its int32 bias (docs/quantized-graph.md); "
                           "quantize the float Graph with edgekit.quantize")
    return ins


@register("conv2d", "int8", scratch=_conv_scratch)
def _conv2d(ins, out, *, stride, padding, dilation, groups, activation, quant, scratch) -> Step:
    """Per sample: padded planes when there is one input channel per output channel, one
    product of the planes for a pointwise convolution, else the padded channels-last copy then,
    per group, window rows and GEMM."""
    x, w, bias = _with_bias(ins)
    channels, kernel = w.shape[0], tuple(w.shape[2:])
    m, shift = conv_multipliers(quant, channels, False)
    requant = (_zp(quant[-1]), *activation_bounds(activation, quant[-1]))
    padded, *work = carve(scratch, *_conv_parts(x.shape, w.shape, out.shape, groups, padding,
                                                 stride, dilation))
    geometry = (tuple(stride), tuple(dilation))
    calls: list[tuple] = []
    if w.shape[1] == 1:
        return _depthwise(x, w[:, 0].astype(np.int32), bias, m, shift, requant, quant, padding,
                          geometry, padded, work[0], out)
    if float32.pointwise(w.shape, stride, padding, groups):
        return _pointwise_conv(x, w, bias, m, shift, requant, quant, padded, out)
    per_group, rows = w.shape[1], work[0]
    weights = np.ascontiguousarray(
        w.reshape(groups, -1, *w.shape[1:]).transpose(0, 1, 3, 4, 2), np.int16
    ).reshape(groups, channels // groups, -1)
    biases, ms, shifts = (v.reshape(groups, -1) for v in (bias, m, shift))
    for n in range(x.shape[0]):
        outs = out[n].reshape(groups, -1, rows.shape[0])
        calls.append((int8_conv.pad_channels_last, x[n], _zp(quant[0]), padding[0], padding[1],
                      padded))
        for g in range(groups):
            calls.append((int8_conv.window_rows, padded, kernel, *geometry, g * per_group,
                          per_group, out.shape[3], rows))
            calls.append((int8_gemm.gemm_requant, weights[g], rows, biases[g], True, ms[g],
                          shifts[g], *requant, outs[g]))
    return sequence(calls)


def _depthwise(x, taps, bias, m, shift, requant, quant, padding, geometry, phases, acc,
               out) -> Step:
    """One call per sample on padded planes: ``int8_conv.depthwise_planes`` at stride 1 (one
    phase, the plane itself), else ``strided_depthwise``."""
    if geometry[0] == (1, 1):
        kernel, geometry, plane = int8_conv.depthwise_planes, geometry[1:], phases.reshape(-1)
    else:
        kernel, plane = int8_conv.strided_depthwise, phases
    return sequence([(kernel, x[n], _zp(quant[0]), padding[0], padding[1], taps, bias,
                      *geometry, m, shift, *requant, plane, acc, out[n])
                     for n in range(x.shape[0])])


def _pointwise_conv(x, w, bias, m, shift, requant, quant, acc, out) -> Step:
    """One ``int8_conv.pointwise`` call per sample on its NCHW planes, the input zero point
    folded into the bias as for linear: no padded copy, one kernel call."""
    weights = w.reshape(w.shape[0], w.shape[1])
    folded = (bias.astype(np.int64) - _zp(quant[0]) * weights.astype(np.int64).sum(axis=1)
              ).astype(np.int32)
    return sequence([(int8_conv.pointwise, x[n].reshape(x.shape[1], -1), weights, folded, m,
                      shift, *requant, acc, out[n].reshape(out.shape[1], -1))
                     for n in range(x.shape[0])])


def _conv1d_scratch(shapes, out_shape, *, groups, padding, stride, dilation, **_) -> int:
    as_2d = [(*s[:2], 1, s[2]) for s in (*shapes[:2], out_shape)]
    return _conv_scratch(as_2d[:2], as_2d[2], groups=groups,
                         padding=[0, padding[0], 0, padding[1]], stride=[1, *stride],
                         dilation=[1, *dilation])


@register("conv1d", "int8", scratch=_conv1d_scratch)
def _conv1d(ins, out, *, stride, padding, dilation, groups, activation, quant, scratch) -> Step:
    """A conv2d of height 1."""
    as_2d = [a.reshape(*a.shape[:2], 1, a.shape[2]) for a in (ins[0], ins[1], out)]
    return _conv2d([as_2d[0], as_2d[1], *ins[2:]], as_2d[2], stride=[1, *stride],
                   padding=[0, padding[0], 0, padding[1]], dilation=[1, *dilation],
                   groups=groups, activation=activation, quant=quant, scratch=scratch)


@register("linear", "int8")
def _linear(ins, out, *, activation, quant) -> Step:
    """int8 rows times int8 weights; the input zero point is folded into the bias once:
    ``sum((x - zp) * w) + b = sum(x * w) + (b - zp * sum(w))``."""
    x, w, bias = _with_bias(ins)
    channels = w.shape[0]
    m, shift = conv_multipliers(quant, channels, len(quant[1].scale) == 1)
    folded = bias.astype(np.int64) - _zp(quant[0]) * w.astype(np.int64).sum(axis=1)
    return bind(int8_gemm.gemm_requant, x.reshape(-1, x.shape[-1]), w, folded, False, m,
                shift, _zp(quant[-1]), *activation_bounds(activation, quant[-1]),
                out.reshape(-1, out.shape[-1]))


# --- elementwise -----------------------------------------------------------------------------

def _broadcast(x, y, out) -> tuple[np.ndarray, np.ndarray]:
    if x.shape != out.shape:
        raise EdgekitError(f"first operand {x.shape} must have the output's shape {out.shape} "
                           "(only the second operand broadcasts)")
    return float32.broadcast_layout(out.shape, y.shape)


@register("add", "int8")
def _add(ins, out, *, activation, quant) -> Step:
    """TFLite's ADD: both inputs onto ``2 * max(s1, s2)`` with 20 bits of headroom, then out."""
    x, y = ins
    s1, s2, s_out = (f32(q.scale[0]) for q in quant)
    twice_max = 2 * max(s1, s2)
    m, shift = quantize_multipliers(
        np.array([s1 / twice_max, s2 / twice_max,
                  twice_max / ((1 << int8_elementwise.ADD_LEFT_SHIFT) * s_out)]))
    return bind(int8_elementwise.add, x.reshape(-1), y.reshape(-1), *_broadcast(x, y, out),
                _zp(quant[0]), _zp(quant[1]), _zp(quant[2]), m, shift,
                *activation_bounds(activation, quant[2]), out.reshape(-1))


@register("mul", "int8")
def _mul(ins, out, *, quant) -> Step:
    x, y = ins
    s1, s2, s_out = (f32(q.scale[0]) for q in quant)
    (m,), (shift,) = quantize_multipliers(np.array([s1 * s2 / s_out]))
    return bind(int8_elementwise.mul, x.reshape(-1), y.reshape(-1), *_broadcast(x, y, out),
                _zp(quant[0]), _zp(quant[1]), _zp(quant[2]), int(m), int(shift), -128, 127,
                out.reshape(-1))


# --- pools and data movement -----------------------------------------------------------------

def _value_mover(op: str):
    """The float32 prepare function of an op that only moves values, after checking that its
    inputs and output share one quantization."""
    def prepare(ins, out, *, quant, **attrs) -> Step:
        check_shared(op, quant)
        return kernel(op, "float32").prepare(ins, out, **attrs)

    return prepare


for _op in ("reshape", "concat"):
    register(_op, "int8")(_value_mover(_op))


@register("maxpool2d", "int8")
def _maxpool2d(ins, out, *, kernel, stride, padding, dilation, quant) -> Step:
    check_shared("maxpool2d", quant)
    return bind(pool.max_pool2d, ins[0], tuple(kernel), tuple(stride),
                tuple(padding[:2]), tuple(dilation), np.int8(-128), out)


@register("avgpool2d", "int8")
def _avgpool2d(ins, out, *, kernel, stride, padding, count_include_pad, quant) -> Step:
    check_shared("avgpool2d", quant)
    return bind(int8_pool.avg_pool2d, ins[0], tuple(kernel), tuple(stride),
                tuple(padding[:2]), count_include_pad, _zp(quant[0]), out)


@register("global_avgpool", "int8")
def _global_avgpool(ins, out, *, quant) -> Step:
    check_shared("global_avgpool", quant)
    x = ins[0]
    return bind(int8_pool.global_avg, x.reshape(x.shape[0] * x.shape[1], -1), out.reshape(-1))


# --- float inside ----------------------------------------------------------------------------

def _float_scratch(shapes, out_shape, **_) -> int:
    return scratch_bytes((shapes[0], np.float32), (out_shape, np.float32))


def _in_float(op: str):
    """Dequantize the input, run the float32 kernel, quantize the output (softmax, layernorm:
    declared in docs/quantized-graph.md; tflite-micro's LUT softmax may differ by a step)."""
    def prepare(ins, out, *, quant, scratch, **attrs) -> Step:
        x_f, y_f = carve(scratch, (ins[0].shape, np.float32), (out.shape, np.float32))
        float_step = kernel(op, "float32").prepare([x_f, *ins[1:]], y_f, **attrs)
        (z_in, s_in), (z_out, s_out) = [(int(q.zero_point[0]), float(f32(q.scale[0])))
                                        for q in (quant[0], quant[-1])]
        return sequence([(int8_elementwise.dequantize, ins[0].reshape(-1), z_in, s_in,
                          x_f.reshape(-1)),
                         (float_step,),
                         (int8_elementwise.quantize, y_f.reshape(-1), s_out, z_out,
                          out.reshape(-1))])

    return prepare


for _op in ("softmax", "layernorm"):
    register(_op, "int8", scratch=_float_scratch)(_in_float(_op))
