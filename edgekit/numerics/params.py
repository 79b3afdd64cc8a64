"""Integer parameters of int8 ops, built once from the Graph's quantization parameters.

Each builder returns a frozen dataclass that every consumer reads as it is: the runtime's int8
prepare functions bind its fields to kernels, the C writer emits them as a struct, the ONNX
writer uses them where it spells the arithmetic out. Each multiplier is formed in the precision
(double or float) of the matching tflite-micro kernel, from scales rounded to float32 as a
``.tflite`` file stores them, so that all of them agree with tflite-micro bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.numerics.arith import quantize_multipliers


def zero_point(q) -> int:
    """The (per-tensor) zero point of quantization parameters ``q``."""
    return int(q.zero_point[0])


def f32(x) -> np.ndarray:
    """Scales as float32 values (what a .tflite file holds), in float64 for the arithmetic."""
    return np.asarray(x, np.float32).astype(np.float64)


def _round_half_away(v: np.float32) -> int:
    return int(np.sign(v) * np.floor(np.abs(v) + np.float32(0.5)))


def activation_bounds(activation: str, q_out) -> tuple[int, int]:
    """TFLite's CalculateActivationRangeQuantized: ``zp + round(f / scale)`` in float32."""
    zp, scale = zero_point(q_out), np.float32(q_out.scale[0])
    lo = -128 if activation == "none" else max(-128, zp)
    hi = 127 if activation != "relu6" else min(127, zp + _round_half_away(np.float32(6) / scale))
    return lo, hi


@dataclass(frozen=True, eq=False)
class ConvParams:
    """int8 conv2d, conv1d and linear: the int32 sums of ``(x - in_zp) * w`` plus the bias,
    requantized per output channel by ``(mult[c], shift[c])`` onto ``out_zp`` and clamped to the
    fused activation's ``[lo, hi]``. ``folded`` is the bias with the input zero point folded in,
    ``bias[c] - in_zp * sum(w[c])``, for kernels that sum ``x * w`` directly (int64: exact)."""

    in_zp: int
    out_zp: int
    lo: int
    hi: int
    mult: np.ndarray
    shift: np.ndarray
    folded: np.ndarray

    def folded_int32(self, where: str) -> np.ndarray:
        """``folded`` as the int32 a C kernel adds, or an EdgekitError naming ``where``."""
        if np.abs(self.folded).max(initial=0) >= 2**31:
            raise EdgekitError(f"{where}: folded bias overflows int32; quantize with "
                               "edgekit.quantize (it keeps biases under 2^30)")
        return self.folded.astype(np.int32)


def conv_params(quant, weight: np.ndarray, bias: np.ndarray | None, activation: str, *,
                fully_connected: bool = False) -> ConvParams:
    """From the QuantParams of input, weight (per channel or per tensor) and output, the int8
    weight (output channels first) and its int32 bias. The multipliers are TFLite's
    ``s_in * s_w[c] / s_out`` in double; a per-tensor FULLY_CONNECTED (``fully_connected``)
    multiplies ``s_in * s_w`` in float32 first (GetQuantizedConvolutionMultipler)."""
    if bias is None:
        raise EdgekitError("an int8 conv/linear needs its int32 bias (docs/quantized-graph.md); "
                           "quantize the float Graph with edgekit.quantize")
    channels = weight.shape[0]
    s_in, s_w, s_out = f32(quant[0].scale[0]), f32(quant[1].scale), f32(quant[-1].scale[0])
    if fully_connected and len(quant[1].scale) == 1:
        product = f32(np.float32(s_in) * np.float32(s_w))
    else:
        product = s_in * s_w
    m, s = quantize_multipliers(product / s_out)
    in_zp = zero_point(quant[0])
    folded = bias.astype(np.int64) - in_zp * weight.reshape(channels, -1).astype(np.int64).sum(1)
    return ConvParams(in_zp, zero_point(quant[-1]), *activation_bounds(activation, quant[-1]),
                      np.broadcast_to(m, (channels,)).copy(),
                      np.broadcast_to(s, (channels,)).copy(), folded)


@dataclass(frozen=True)
class LeakyParams:
    """int8 leaky ReLU: ``zo + x' * (m_id, s_id)`` for x' = x - zx >= 0, else with alpha's."""

    zx: int
    zo: int
    m_id: int
    s_id: int
    m_alpha: int
    s_alpha: int


def leaky_params(q_in, q_out, alpha: float) -> LeakyParams:
    """Multipliers ``s_in / s_out`` and ``alpha * s_in / s_out``, formed in float32 as
    tflite-micro's LeakyReluPrepare does."""
    s_in, s_out = np.float32(q_in.scale[0]), np.float32(q_out.scale[0])
    reals = np.array([s_in / s_out, s_in * np.float32(alpha) / s_out], np.float32)
    (m_id, m_alpha), (s_id, s_alpha) = quantize_multipliers(reals.astype(np.float64))
    return LeakyParams(zero_point(q_in), zero_point(q_out), int(m_id), int(s_id), int(m_alpha),
                       int(s_alpha))


# TFLite's headroom for int8 ADD: both operands are shifted up this far before their rescaling
# (the numba kernel reads it from here; the firmware's EK_ADD_LEFT_SHIFT is its twin).
ADD_LEFT_SHIFT = 20


@dataclass(frozen=True)
class AddParams:
    """int8 add (TFLite's ADD): each operand ``(v - z) << ADD_LEFT_SHIFT`` rescaled by its
    multiplier (``mult[0]``, ``mult[1]``) onto twice the larger input scale, the sum by
    ``mult[2]`` onto the output's, plus ``zo``, clamped to the fused activation's ``[lo, hi]``."""

    zx: int
    zy: int
    zo: int
    lo: int
    hi: int
    mult: tuple[int, int, int]
    shift: tuple[int, int, int]


def add_params(quant, activation: str) -> AddParams:
    """From the QuantParams of both inputs then the output; multipliers formed in double as
    tflite-micro's ADD prepare does."""
    s1, s2, s_out = (f32(q.scale[0]) for q in quant)
    twice_max = 2 * max(s1, s2)
    m, shift = quantize_multipliers(np.array([s1 / twice_max, s2 / twice_max,
                                              twice_max / ((1 << ADD_LEFT_SHIFT) * s_out)]))
    return AddParams(zero_point(quant[0]), zero_point(quant[1]), zero_point(quant[2]),
                     *activation_bounds(activation, quant[2]), tuple(int(v) for v in m),
                     tuple(int(v) for v in shift))


@dataclass(frozen=True)
class TwoInputParams:
    """An int8 op of two activations with one output multiplier: the zero points of both
    inputs and the output, the output's int8 range ``[lo, hi]`` (none of these ops fuses an
    activation) and ``(mult, shift)``. MUL requantizes ``(x - zx) * (y - zy)`` by it,
    BATCH_MATMUL the int32 sums of those products, DIV (as tflite-micro computes it) the
    quotient of ``(x - zx)`` over ``(y - zy)`` through a fixed-point reciprocal of the divisor."""

    zx: int
    zy: int
    zo: int
    lo: int
    hi: int
    mult: int
    shift: int


def _two_input_params(quant, real: float) -> TwoInputParams:
    """The zero points of ``quant`` (both inputs then the output) and ``real``'s multiplier."""
    (m,), (shift,) = quantize_multipliers(np.array([real]))
    return TwoInputParams(zero_point(quant[0]), zero_point(quant[1]), zero_point(quant[2]),
                          *activation_bounds("none", quant[2]), int(m), int(shift))


def mul_params(quant) -> TwoInputParams:
    """From the QuantParams of both inputs then the output: ``s1 * s2 / s_out`` in double."""
    s1, s2, s_out = (f32(q.scale[0]) for q in quant)
    return _two_input_params(quant, s1 * s2 / s_out)


def matmul_params(quant) -> TwoInputParams:
    """From the QuantParams of both inputs then the output: ``s_x * s_y`` in float32, then over
    ``s_out`` in double, as tflite-micro's BatchMatMulPrepare (GetQuantizedConvolutionMultipler)
    forms it."""
    s_x, s_y = (np.float32(q.scale[0]) for q in quant[:2])
    return _two_input_params(quant, f32(s_x * s_y) / f32(quant[2].scale[0]))


@dataclass(frozen=True)
class ReduceParams:
    """int8 MEAN and SUM as tflite-micro computes them (QuantizedMeanOrSum): the int32 sum of
    the reduced int8 values less ``offset`` (the input zero point times their count),
    requantized by ``(mult, shift)`` onto ``zo`` and clamped to int8."""

    offset: int
    zo: int
    mult: int
    shift: int


def reduce_params(q_in, q_out, count: int, *, mean: bool) -> ReduceParams:
    """The multiplier of ``s_in / s_out`` (in double, as PrepareMeanOrSumHelper); a mean of
    ``count`` values folds its 1/count in as tflite-micro does: the multiplier shifted up by
    floor(log2(count)) (at most 32, and no further than a shift of -31 allows), divided by
    ``count`` in int64 (truncating), the shift lowered to match."""
    (mult,), (shift,) = quantize_multipliers(np.array([f32(q_in.scale[0]) / f32(q_out.scale[0])]))
    mult, shift = int(mult), int(shift)
    if mean:
        up = min(count.bit_length() - 1, 32, 31 + shift)
        mult, shift = (mult << up) // count, shift - up
    return ReduceParams(zero_point(q_in) * count, zero_point(q_out), mult, shift)


@dataclass(frozen=True)
class LogSoftmaxParams:
    """int8 LOG_SOFTMAX as tflite-micro computes it (``runtime.kernels.log_softmax``): input
    differences to the row's max scaled to Q5.26 by ``(mult, left_shift)``; ``diff_min`` the
    smallest difference whose exp counts; ``(reverse_mult, reverse_shift)`` scale the log of the
    sum back to input steps (the bound under which an output is -128)."""

    mult: int
    left_shift: int
    reverse_mult: int
    reverse_shift: int
    diff_min: int


def log_softmax_params(q_in) -> LogSoftmaxParams:
    """PreprocessLogSoftmaxScalingExp with beta 1 and 5 integer bits, in double from the
    float32 input scale, and CalculateInputRadius for ``diff_min``."""
    real = min(f32(q_in.scale[0]) * (1 << 26), (1 << 31) - 1.0)
    (mult,), (left,) = quantize_multipliers(np.array([real]))
    if left < 1:
        raise EdgekitError(f"int8 log_softmax: input scale {q_in.scale[0]} is below 2^-26")
    (rmult,), (rshift,) = quantize_multipliers(np.array([(1 << (31 - int(left))) / int(mult)]))
    radius = int(np.floor(31.0 * (1 << 26) / (1 << int(left))))
    return LogSoftmaxParams(int(mult), int(left), int(rmult), int(rshift), -radius)


@dataclass(frozen=True)
class FloatEdges:
    """The edges of an int8 op computed in float (softmax, layernorm): the input dequantized
    with ``(zx, sx)``, the float result quantized with ``(so, zo)``; scales as float32 holds
    them."""

    zx: int
    zo: int
    sx: float
    so: float


def float_edges(q_in, q_out) -> FloatEdges:
    return FloatEdges(zero_point(q_in), zero_point(q_out), float(f32(q_in.scale[0])),
                      float(f32(q_out.scale[0])))


@dataclass(frozen=True, eq=False)
class LutParams:
    """An int8 pointwise nonlinearity as TFLite computes its int8 LUT ops: ``y = table[x + 128]``
    (``table``: 256 int8 values, read-only)."""

    table: np.ndarray


def lut_params(q_in, q_out, fn) -> LutParams:
    """The table of ``fn`` (a numpy function, float64 in and out) from the input's and output's
    quantization: ``y_q = clamp(round(fn((x_q - zx) * sx) / so) + zo)`` for every int8 ``x_q``,
    in float64 from the float32 scales, rounding half away from zero. Where ``fn`` is NaN (log or
    sqrt below zero) the entry is -128, as for -inf."""
    x = np.arange(-128, 128, dtype=np.float64)
    with np.errstate(all="ignore"):
        y = np.asarray(fn((x - zero_point(q_in)) * f32(q_in.scale[0])), np.float64)
        y = np.where(np.isnan(y), -np.inf, y / f32(q_out.scale[0]))
        q = np.sign(y) * np.floor(np.abs(y) + 0.5) + zero_point(q_out)
    table = np.clip(q, -128, 127).astype(np.int8)
    table.setflags(write=False)
    return LutParams(table)


def clip_bounds(lo: float | None, hi: float | None, q) -> tuple[int, int]:
    """clip's bounds on the stored int8 values of quantization ``q`` (its input's and its
    output's): ``zp + round(bound / scale)`` in float32, rounding half away from zero as
    ``activation_bounds`` does (so clip(0, 6) clamps where relu6 does), saturated to int8; an
    absent bound is the end of the int8 range."""
    zp, scale = zero_point(q), np.float32(q.scale[0])

    def level(v: float | None, end: int) -> int:
        if v is None:
            return end
        return int(np.clip(zp + _round_half_away(np.float32(v) / scale), -128, 127))

    return level(lo, -128), level(hi, 127)


def div_params(quant) -> TwoInputParams:
    """From the QuantParams of both inputs then the output: ``s1 / (s2 * s_out)`` in double, as
    tflite-micro's DIV prepare forms it."""
    s1, s2, s_out = (f32(q.scale[0]) for q in quant)
    return _two_input_params(quant, s1 / (s2 * s_out))


@dataclass(frozen=True, eq=False)
class PreluParams:
    """int8 PReLU (TFLite's PRELU): ``x' = x - zx`` requantized by ``(m_id, s_id)`` where
    ``x' >= 0``, else ``x' * alpha`` by ``(m_alpha, s_alpha)``; plus ``zo``. ``alpha``: the
    slope as int8 (read-only), symmetric per tensor at ``alpha_scale`` (zero point 0)."""

    zx: int
    zo: int
    m_id: int
    s_id: int
    m_alpha: int
    s_alpha: int
    alpha: np.ndarray
    alpha_scale: float


def prelu_params(q_in, q_out, slope: np.ndarray) -> PreluParams:
    """From the input's and output's QuantParams and the float slope (a weight the int8 Graph
    keeps in float32, as layernorm's): the slope quantized to int8 with one symmetric scale
    ``max|slope| / 127`` (tflite-micro's PRELU takes one), and the multipliers ``s_in / s_out``
    and ``s_in * s_alpha / s_out`` in double, as its PreluPrepare forms them."""
    slope = np.asarray(slope, np.float64)
    s_alpha = float(np.float32(max(np.abs(slope).max(initial=0.0), 1e-30) / 127))
    alpha = np.clip(np.rint(slope / s_alpha), -127, 127).astype(np.int8)
    alpha.setflags(write=False)
    s_in, s_out = f32(q_in.scale[0]), f32(q_out.scale[0])
    (m_id, m_alpha), (s_id, s_a) = quantize_multipliers(
        np.array([s_in / s_out, s_in * s_alpha / s_out]))
    return PreluParams(zero_point(q_in), zero_point(q_out), int(m_id), int(s_id), int(m_alpha),
                       int(s_a), alpha, s_alpha)


# --- int8 spiking Graphs (edgekit.quant.spiking): integer neurons and the scaled add ----------

LEAK_BITS = 15  # LIF's leak is a Q15 multiplier


def leak_multiplier(leak: float) -> int:
    """LIF's leak as a Q15 integer: ``v <- trunc(v * L / 2^15)`` (IF: ``L = 2^15``)."""
    return int(round(leak * (1 << LEAK_BITS)))


def current_scales(quant, sample_shape: tuple[int, ...]) -> np.ndarray:
    """Per element of one sample, the scale of an activation quantized per tensor or per
    channel (axis 1 of the batched tensor)."""
    scale = np.asarray(quant.scale, np.float64)
    if quant.axis is None:
        return np.full(sample_shape, scale[0])
    return np.broadcast_to(scale.reshape(-1, *[1] * (len(sample_shape) - 1)), sample_shape)


def spike_amplitudes(threshold: np.ndarray, current, spikes) -> np.ndarray:
    """Each neuron's int8 spike: its int32 ``threshold`` (in the scale of its input
    ``current``) in the ``spikes`` tensor's scale, at least 1 (a spike is never 0). Derived
    here wherever it is needed, so it is never stored twice."""
    real = threshold.astype(np.float64) * current_scales(current, threshold.shape)
    return np.clip(np.rint(real / spikes.scale[0]), 1, 127).astype(np.int8)


@dataclass(frozen=True, eq=False)
class NeuronParams:
    """An integer IF/LIF layer, per neuron (the per-sample shape): ``v = trunc(v * leak /
    2^15) + x``; where ``v >= threshold`` it emits ``amplitude`` and subtracts its threshold
    (``subtract``) or resets to 0. ``v_init``: the int32 membrane every inference starts from."""

    threshold: np.ndarray
    v_init: np.ndarray
    leak: int
    subtract: bool
    amplitude: np.ndarray


def neuron_params(threshold: np.ndarray, v_init: np.ndarray | None, current, spikes, *,
                  reset: str, leak: float = 1.0) -> NeuronParams:
    """From the int32 threshold and initial membrane params (``v_init`` None: zeros), the
    QuantParams of the input ``current`` and the output ``spikes``, and the neuron's
    attributes (an IF neuron has no leak: ``leak`` 1)."""
    v_init = np.zeros_like(threshold) if v_init is None else v_init
    return NeuronParams(threshold, v_init, leak_multiplier(leak), reset == "subtract",
                        spike_amplitudes(threshold, current, spikes))


@dataclass(frozen=True)
class ScaledAddParams:
    """A residual add of spikes and a layer's current in an int8 spiking Graph: ``spikes *
    multiplier + current``, int32, in the current's scale."""

    multiplier: int


def scaled_add_params(spikes, current) -> ScaledAddParams:
    """The integer ratio of the spike scale to the current's, which the spiking quantizer makes
    an integer when it picks the current's weight scale (up to float32 rounding of the stored
    scales). ``edgekit.quant.spiking`` stores it as ``scaled_add``'s ``multiplier``."""
    return ScaledAddParams(int(round(spikes.scale[0] / current.scale[0])))


# --- resize (edgekit.ops.resize): where each output row and column reads --------------------

@dataclass(frozen=True, eq=False)
class ResizeTaps:
    """One axis of a resize, per output position: the two input positions it reads (``lo``,
    ``hi``; nearest reads ``lo`` only) and the weight of ``hi`` (``frac``; ``lo`` gets ``1 -
    frac``): float32 for float kernels, in 1/1024ths for TFLite's int8 bilinear (``frac`` may
    be negative or reach past 1 where the half-pixel coordinate falls before the first input,
    ``lo == hi`` then). Read-only int32/float32 arrays."""

    lo: np.ndarray
    hi: np.ndarray
    frac: np.ndarray


def resize_taps(n_in: int, n_out: int, mode: str, align_corners: bool, half_pixel: bool,
                integer: bool = False) -> ResizeTaps:
    """TFLite's coordinates (reference_ops resize_nearest_neighbor.h, resize_bilinear.h), which
    torch's float32 ``F.interpolate`` computes alike: nearest is GetNearestNeighbor in float32
    (floor, or round half away from zero under align_corners); bilinear is
    ComputeInterpolationValues in float32, or with ``integer`` ResizeBilinearInteger's 10-bit
    fixed point (the scale rounded to 1/1024ths, C's truncating division)."""
    dst = np.arange(n_out, dtype=np.int64)
    corners = align_corners and n_out > 1
    if mode == "nearest":
        scale = np.float32(n_in - 1 if corners else n_in) / np.float32(n_out - 1 if corners else
                                                                        n_out)
        pos = (dst.astype(np.float32) + np.float32(0.5 if half_pixel else 0.0)) * scale
        idx = np.floor(pos)
        if align_corners:  # TfLiteRound: half away from zero (pos - floor(pos) is exact)
            idx += pos - idx >= np.float32(0.5)
        lo = np.clip(idx.astype(np.int64), 0, n_in - 1)
        frac = np.zeros(n_out, np.float32)
    elif integer:
        num, den = (n_in - 1, n_out - 1) if corners else (n_in, n_out)
        scale = ((1 << 10) * num + den // 2) // den
        pos = dst * scale + (scale // 2 - (1 << 9) if half_pixel else 0)
        lo = np.maximum(np.trunc(pos / 1024).astype(np.int64), 0)
        if lo.max(initial=0) > n_in - 1:
            raise EdgekitError(f"TFLite's int8 bilinear resize from {n_in} to {n_out} reads "
                               "past its input (its 10-bit scale rounds too far); resize less")
        frac = pos - (lo << 10)
        hi = np.minimum(np.trunc((pos + 1023) / 1024).astype(np.int64), n_in - 1)
        return _taps(lo, hi, frac.astype(np.int32))
    else:
        scale = np.float32(n_in - 1 if corners else n_in) / np.float32(n_out - 1 if corners else
                                                                        n_out)
        pos = dst.astype(np.float32)
        pos = (pos + np.float32(0.5)) * scale - np.float32(0.5) if half_pixel else pos * scale
        lo = np.maximum(np.floor(pos).astype(np.int64), 0)
        frac = (pos - lo.astype(np.float32)).astype(np.float32)
        return _taps(lo, np.minimum(np.ceil(pos).astype(np.int64), n_in - 1), frac)
    return _taps(lo, lo, frac)


def _taps(lo, hi, frac) -> ResizeTaps:
    arrays = [np.ascontiguousarray(lo, np.int32), np.ascontiguousarray(hi, np.int32), frac]
    for a in arrays:
        a.setflags(write=False)
    return ResizeTaps(*arrays)
