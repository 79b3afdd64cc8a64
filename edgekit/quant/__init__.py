"""int8 quantization: ``quantize`` (calibrate a float Graph, produce the int8 Graph of
``docs/quantized-graph.md``), the float <-> int8 conversion every Session does at its edge, and
TFLite's fixed-point arithmetic (``arith``) that every int8 kernel shares."""

from edgekit.quant.edge import dequantize_array, quantize_array
from edgekit.quant.quantize import quantize

__all__ = ["dequantize_array", "quantize", "quantize_array"]
