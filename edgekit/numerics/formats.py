"""Number formats below int8 for weights: FP8 (E4M3, E5M2), fp16, int4 and ternary, and how they
are stored (packed) and read back.

A low-bit weight of logical shape ``(C, ...)`` (output channels first, as every weighted op
lays it out) is stored as ``storage[K, C, row_bytes]``: K residual orders (REx, 1 without it),
then per output channel its flattened row (torch order) of codes packed into bytes — two int4
per byte (low nibble first), five ternary digits per byte (base 3, 3^5 = 243 <= 256), one FP8
code per byte, or one float16 per element. Rows are padded to whole bytes each, so a kernel
unpacks any row on its own. Its scales are ``scales[K, C, G]``: one per residual order, output
channel and group of ``width = ceil(row / G)`` consecutive weights of the row (the last group
may be shorter; G = 1: per channel). The value of weight ``j`` of row ``c`` is
``sum_k decode(code[k, c, j]) * scales[k, c, j // width]``.

Only numpy here: the runtime's kernel reads the same storage through ``decode_table``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Fp8:
    """An 8-bit float: sign, ``exp_bits`` exponent, ``man_bits`` mantissa, ``bias``.
    ``ieee`` formats (E5M2) keep the top exponent for infinities and NaNs; the others (E4M3FN)
    have no infinity and one NaN mantissa (all ones) at the top exponent."""

    name: str
    exp_bits: int
    man_bits: int
    bias: int
    ieee: bool

    @property
    def max(self) -> float:
        return float(decode_fp8(np.array([self.max_code], np.uint8), self)[0])

    @property
    def max_code(self) -> int:
        top = (1 << self.exp_bits) - 1
        if self.ieee:
            return ((top - 1) << self.man_bits) | ((1 << self.man_bits) - 1)
        return (top << self.man_bits) | ((1 << self.man_bits) - 2)

    @property
    def nan_code(self) -> int:
        return 0x7F if not self.ieee else (((1 << self.exp_bits) - 1) << self.man_bits) | 2

    @property
    def inf_code(self) -> int | None:
        return ((1 << self.exp_bits) - 1) << self.man_bits if self.ieee else None


E4M3 = Fp8("fp8_e4m3", 4, 3, 7, False)  # ONNX FLOAT8E4M3FN, ml_dtypes float8_e4m3fn
E5M2 = Fp8("fp8_e5m2", 5, 2, 15, True)  # ONNX FLOAT8E5M2, ml_dtypes float8_e5m2
FP8 = {f.name: f for f in (E4M3, E5M2)}


def decode_fp8(codes: np.ndarray, fmt: Fp8) -> np.ndarray:
    """float32 values of FP8 codes (uint8): subnormals at exponent 0, infinities and NaNs as
    the format has them."""
    c = np.asarray(codes, np.uint8).astype(np.int64)
    sign = np.where(c & 0x80, -1.0, 1.0)
    exp = (c >> fmt.man_bits) & ((1 << fmt.exp_bits) - 1)
    man = c & ((1 << fmt.man_bits) - 1)
    frac = man / float(1 << fmt.man_bits)
    value = np.where(exp == 0, frac * 2.0 ** (1 - fmt.bias),
                     (1 + frac) * np.exp2(exp.astype(np.float64) - fmt.bias))
    top = exp == (1 << fmt.exp_bits) - 1
    if fmt.ieee:
        value = np.where(top, np.where(man == 0, np.inf, np.nan), value)
    else:
        value = np.where(top & (man == (1 << fmt.man_bits) - 1), np.nan, value)
    return np.copysign(value, sign).astype(np.float32)  # a NaN keeps its sign bit too


def _positive_grid(fmt: Fp8) -> tuple[np.ndarray, np.ndarray]:
    """The finite non-negative values in code order (codes 0..max_code) and one more: the value
    a step past the largest, which is where rounding overflows."""
    codes = np.arange(fmt.max_code + 1, dtype=np.uint8)
    values = decode_fp8(codes, fmt).astype(np.float64)
    step = values[-1] - values[-2]
    return np.append(values, values[-1] + step), np.append(codes.astype(np.int64),
                                                           fmt.max_code + 1)


def encode_fp8(x: np.ndarray, fmt: Fp8, saturate: bool = False) -> np.ndarray:
    """FP8 codes (uint8) of ``x``: round to nearest, ties to an even mantissa, as IEEE and
    ``ml_dtypes`` do. A magnitude that rounds past the largest finite value becomes infinity
    (E5M2) or NaN (E4M3, which has no infinity) — ``ml_dtypes``' ``astype`` — unless
    ``saturate``, when it becomes the largest finite value (ONNX's ``saturate=1``; an infinite
    input stays infinite in E5M2 and saturates in E4M3, as ONNX's table says). NaN is NaN."""
    x = np.asarray(x, np.float64)
    grid, codes = _positive_grid(fmt)
    mag = np.abs(x)
    hi = np.clip(np.searchsorted(grid, mag, side="left"), 1, len(grid) - 1)
    lo = hi - 1
    below, above = mag - grid[lo], grid[hi] - mag
    pick_hi = (above < below) | ((above == below) & (codes[hi] % 2 == 0))
    pick_hi |= mag >= grid[-1]
    code = np.where(pick_hi, codes[hi], codes[lo])
    overflow = code > fmt.max_code
    if saturate:
        limit = np.isinf(x) if fmt.ieee else np.zeros(x.shape, bool)
        code = np.where(overflow & ~limit, fmt.max_code, code)
        overflow &= limit
    code = np.where(overflow, fmt.inf_code if fmt.ieee else fmt.nan_code, code)
    code = np.where(np.isnan(x), fmt.nan_code, code)
    negative = np.signbit(x) & ~np.isnan(x)
    return (code | np.where(negative, 0x80, 0)).astype(np.uint8)


# --- integer grids ---------------------------------------------------------------------------

INT4_MAX = 7  # symmetric [-7, 7], zero point 0, as int8 uses [-127, 127]
# BitNet b1.58 divides by gamma + eps; here eps only stands in for a zero gamma (the smallest
# float32), so that scaling a channel (a batch norm folded into it) leaves its codes alone
TERNARY_TINY = float(np.finfo(np.float32).tiny)


@dataclass(frozen=True)
class Format:
    """A weight storage format: ``per_byte`` codes per stored element, its numpy dtype."""

    name: str
    bits: float  # information per weight, as the profile counts it: packed bytes * 8 / n
    per_byte: int
    storage: str

    def row_bytes(self, row: int) -> int:
        return -(-row // self.per_byte)


FORMATS = {f.name: f for f in (
    Format("int4", 4, 2, "uint8"),
    Format("ternary", 1.6, 5, "uint8"),
    Format("fp8_e4m3", 8, 1, "uint8"),
    Format("fp8_e5m2", 8, 1, "uint8"),
    Format("float16", 16, 1, "float16"),
)}


MAX_ORDERS = 3  # REx orders 1-3


def weight_dtype(dtype: str) -> tuple[str, int] | None:
    """``(format, orders)`` of a low-bit weight dtype, else None: the format's name, with
    ``x2``/``x3`` appended for a REx expansion of 2 or 3 orders (``"int4x2"``)."""
    name, _, orders = dtype.partition("x")
    if name not in FORMATS or (orders and orders not in {str(k) for k in
                                                         range(2, MAX_ORDERS + 1)}):
        return None
    return name, int(orders or 1)


def dtype_name(fmt: str, orders: int = 1) -> str:
    return fmt if orders == 1 else f"{fmt}x{orders}"


def storage(dtype: str, shape: tuple[int, ...]) -> tuple[np.dtype, tuple[int, int, int]]:
    """The numpy dtype and shape a low-bit weight of logical ``shape`` is stored in."""
    fmt, orders = weight_dtype(dtype)
    row = int(np.prod(shape[1:], dtype=np.int64))
    return np.dtype(FORMATS[fmt].storage), (orders, shape[0], FORMATS[fmt].row_bytes(row))


def scale_array(scale: list[float] | None, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """A low-bit weight's scales (its QuantParams' list, ``[K, C, G]`` flattened) as float32
    ``[K, C, G]``; float16 weights have none (``None``: ones)."""
    if scale is None:
        return np.ones((1, shape[0], 1), np.float32)
    return np.array(scale, np.float32).reshape(weight_dtype(dtype)[1], shape[0], -1)


def pack(codes: np.ndarray, fmt: str) -> np.ndarray:
    """Pack integer codes ``[..., row]`` (int4: -8..7, ternary: -1..1, FP8: the uint8 code,
    float16: the values) into ``[..., row_bytes]`` of the format's storage dtype."""
    f = FORMATS[fmt]
    if f.per_byte == 1:
        return np.ascontiguousarray(codes, f.storage)
    row = codes.shape[-1]
    padded = np.zeros((*codes.shape[:-1], f.row_bytes(row) * f.per_byte), np.int64)
    padded[..., :row] = codes
    digits = padded.reshape(*codes.shape[:-1], -1, f.per_byte)
    if fmt == "int4":
        return ((digits[..., 0] & 0xF) | ((digits[..., 1] & 0xF) << 4)).astype(np.uint8)
    return ((digits + 1) * 3 ** np.arange(f.per_byte)).sum(-1).astype(np.uint8)


def decode_table(fmt: str) -> np.ndarray:
    """float32 ``[codes, per_byte]``: the values one stored byte (or float16 bit pattern)
    holds, position by position — the one table the kernels and ``unpack`` read."""
    if fmt == "float16":
        return np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)[:, None]
    if fmt in FP8:
        return decode_fp8(np.arange(256, dtype=np.uint8), FP8[fmt])[:, None]
    byte = np.arange(256)[:, None]
    if fmt == "int4":
        nibble = (byte >> np.array([0, 4])) & 0xF
        return np.where(nibble >= 8, nibble - 16, nibble).astype(np.float32)
    digits = (byte // 3 ** np.arange(5)) % 3 - 1
    return np.where(byte < 243, digits, 0).astype(np.float32)  # 243..255 are never written


def unpack(storage: np.ndarray, fmt: str, row: int) -> np.ndarray:
    """The codes' values ``[..., row]`` (float32) of packed ``storage`` ``[..., row_bytes]``."""
    table = decode_table(fmt)
    index = storage.view(np.uint16) if fmt == "float16" else storage
    return table[index.astype(np.int64)].reshape(*storage.shape[:-1], -1)[..., :row]


def dequantize(storage: np.ndarray, scales: np.ndarray, fmt: str,
               shape: tuple[int, ...]) -> np.ndarray:
    """The float32 weight (``shape``) that ``storage`` and ``scales[K, C, G]`` stand for."""
    row = int(np.prod(shape[1:], dtype=np.int64))
    values = unpack(storage, fmt, row).astype(np.float64)
    per_weight = np.repeat(scales.astype(np.float64), group_width(row, scales.shape[2]),
                           axis=2)[..., :row]
    return (values * per_weight).sum(0).reshape(shape).astype(np.float32)


def group_width(row: int, groups: int) -> int:
    """Weights per scale when a row of ``row`` weights has ``groups`` scales (the last group
    takes what is left)."""
    return -(-row // groups)


# --- quantizers ------------------------------------------------------------------------------

def _grouped(w: np.ndarray, group_size: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``w`` as ``[C, G, width]`` float64, zero-padded past the row's end, and the number of
    real weights in each group ``[G]``: G = ceil(row / group_size) groups of equal width but
    the last, so none is wider than ``group_size``."""
    rows = w.reshape(w.shape[0], -1).astype(np.float64)
    row = rows.shape[1]
    groups = 1 if group_size is None else -(-row // group_size)
    width = group_width(row, groups)
    padded = np.zeros((rows.shape[0], groups * width))
    padded[:, :row] = rows
    counts = np.minimum(width, row - width * np.arange(groups))
    return padded.reshape(rows.shape[0], groups, width), counts


def _quantize_once(w: np.ndarray, counts: np.ndarray, fmt: str,
                   per_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Codes ``[C, G, width]`` and float32 scales ``[C, G]`` of one residual order (padding
    is 0 and stays 0)."""
    f32 = np.float32
    if fmt == "ternary":
        gamma = (np.abs(w).sum(axis=2) / counts if per_channel
                 else np.full(w.shape[:2], np.abs(w).sum() / (counts.sum() * w.shape[0])))
        scale = np.maximum(gamma, TERNARY_TINY).astype(f32)
        return np.clip(np.rint(w / scale[..., None]), -1, 1), scale
    amax = np.abs(w).max(axis=2) if per_channel else np.full(w.shape[:2], np.abs(w).max())
    top = INT4_MAX if fmt == "int4" else FP8[fmt].max
    scale = np.where(amax > 0, amax / top, 1.0).astype(f32)
    scaled = w / scale.astype(np.float64)[..., None]
    if fmt == "int4":
        return np.clip(np.rint(scaled), -INT4_MAX, INT4_MAX), scale
    return encode_fp8(scaled, FP8[fmt], saturate=True), scale


def quantize_weight(w: np.ndarray, fmt: str, group_size: int | None = None, orders: int = 1,
                    per_channel: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(storage [K, C, row_bytes], scales [K, C, G] float32)`` of weight ``w`` in ``fmt``.

    int4: symmetric ``[-7, 7]``, scale ``max|w| / 7`` per output channel, or per group of at
    most ``group_size`` consecutive weights. ternary: BitNet b1.58's absmean,
    ``clip(round(w / gamma), -1, 1)`` with ``gamma = mean|w|`` (``TERNARY_TINY`` if 0). FP8:
    the scale maps ``max|w|`` onto the format's largest value, then rounds to nearest even.
    float16: the values themselves (scale 1, which the Graph does not store). ``orders`` > 1 is
    REx residual expansion: order k quantizes what orders 1..k-1 left, ``R_k = Q(w -
    sum_{j<k} R_j)``, each with its own scales. ``per_channel=False`` gives one scale to the
    whole tensor (ternary as BitNet does)."""
    if fmt == "float16":
        rows = w.reshape(w.shape[0], 1, -1).astype(np.float16)
        return rows.reshape(1, w.shape[0], -1), np.ones((1, w.shape[0], 1), np.float32)
    grouped, counts = _grouped(w, group_size)
    residual, storage, scales = grouped, [], []
    row = int(counts.sum())
    for _ in range(orders):
        codes, scale = _quantize_once(residual, counts, fmt, per_channel)
        values = (decode_fp8(codes.astype(np.uint8), FP8[fmt]).astype(np.float64)
                  if fmt in FP8 else codes)
        residual = residual - values * scale.astype(np.float64)[..., None]
        storage.append(pack(codes.reshape(w.shape[0], -1)[:, :row].astype(np.int64), fmt))
        scales.append(scale)
    return np.stack(storage), np.stack(scales)
